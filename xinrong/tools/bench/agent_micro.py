"""Agent micro-benchmarks; each prints one JSON line.

    python -m xinrong.tools.bench.agent_micro evaluate [--requests 2000] [--claims 3]
    python -m xinrong.tools.bench.agent_micro import [--rows 1000000]

``evaluate`` times the domain function alone (no gRPC): per-request thread
CPU time and wall time, median and p99, for EvaluateClaims on a warm agent
(consent and audience binding cached, as under steady load), for the cold
first use of a consent, and the crypto floor (one session seal plus one
Ed25519 signature per claim; and, as a baseline, with one single-shot HPKE
per box instead) in the same run, so a noisy machine still gives a ratio.

``import`` generates a synthetic tax CSV of the given size and times
``import_csv`` on it, with peak memory.

Everything runs in a throwaway directory with a throwaway CA.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from xinrong import uscc
from xinrong.catalog import default_catalog
from xinrong.claims import parse_claim
from xinrong.consent import build_consent, parse_scope, sign_consent
from xinrong.keys.ca import CertificateAuthority
from xinrong.keys.layout import create_ca, load_party, party_dir, provision_party
from xinrong.keys.sealing import SessionSealer, seal
from xinrong.provider_agent.evaluate import ClaimsRequest, ProviderAgent
from xinrong.provider_agent.importer import import_csv
from xinrong.provider_agent.store import DataStore, StateStore

_ORG = uscc.CHARSET
TAX_COLUMNS = [
    "credit_grade",
    "abnormal_taxpayer",
    "in_arrears",
    "arrears_amount",
    "vat_paid_last_year",
    "cit_paid_last_year",
    "consecutive_normal_months",
    "last_normal_payment_date",
    "grade_a_taxpayer",
]


def write_tax_csv(path: Path, rows: int, *, seed: int = 7, as_of: str = "2026-09-30") -> list[str]:
    """A synthetic tax export with unique valid USCCs; returns the first 1000 codes."""
    rng = random.Random(seed)
    first: list[str] = []
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["uscc", "as_of", *TAX_COLUMNS])
        for i in range(rows):
            # Distinct organization-code bodies: the 8 base-31 digits of i.
            digits = []
            n = i
            for _ in range(8):
                n, d = divmod(n, 31)
                digits.append(_ORG[d])
            body = "".join(reversed(digits))
            code = uscc.make("9", "1", "130100", body)
            if len(first) < 1000:
                first.append(code)
            arrears = rng.random() < 0.1
            grade = rng.choice("ABMCD")
            w.writerow(
                [
                    code,
                    as_of,
                    grade,
                    "true" if rng.random() < 0.05 else "false",
                    "true" if arrears else "false",
                    f"{rng.uniform(0, 500000):.2f}" if arrears else "0",
                    f"{rng.uniform(0, 2e7):.2f}",
                    "" if rng.random() < 0.1 else f"{rng.uniform(0, 6e6):.2f}",
                    rng.randint(0, 60),
                    "2026-09-15",
                    "true" if grade == "A" else "false",
                ]
            )
    return first


def _pki(root: Path) -> CertificateAuthority:
    ca = create_ca(root)
    provision_party(ca, root, role="provider", party_id="tax", provider="tax")
    provision_party(ca, root, role="institution", party_id="bank-a")
    return ca


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_evaluate(requests: int, n_claims: int) -> dict[str, object]:
    catalog = default_catalog()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keys = root / "keys"
        ca = _pki(keys)
        codes = write_tax_csv(root / "tax.csv", 5000)
        data = DataStore(root / "tax.db", "tax")
        state = StateStore(root / "tax.state.db", "tax", background_checkpoint=True)
        import_csv(data, catalog, "tax", root / "tax.csv")
        stop = threading.Event()

        def checkpointer() -> None:  # what the serving agent's watcher does
            while not stop.wait(1.0):
                state.checkpoint()

        background = threading.Thread(target=checkpointer, daemon=True)
        background.start()
        agent = ProviderAgent(
            catalog=catalog,
            provider="tax",
            credentials=load_party(party_dir(keys, "provider", "tax")),
            data=data,
            state=state,
        )
        bank = load_party(party_dir(keys, "institution", "bank-a"))
        consents = []
        for code in codes[:50]:
            provision_party(ca, keys, role="enterprise", party_id=code, with_sealing=False)
            ent = load_party(party_dir(keys, "enterprise", code))
            now = int(time.time())
            consent = build_consent(
                enterprise_uscc=code,
                enterprise_key_id=ent.signing_key.key_id,
                grantee_id="bank-a",
                purpose="loan_application",
                scope=parse_scope(catalog, ["tax.*"]),
                data_period_from="2026-01-01",
                data_period_to="2026-12-31",
                valid_from=now - 60,
                valid_until=now + 86400,
                max_uses=1_000_000,
            )
            consents.append((code, sign_consent(consent, ent.signing_key, ent.binding.signed)))
        texts = [
            "tax.credit_grade in A,B",
            "tax.in_arrears == false",
            "tax.vat_paid_last_year >= 1000000",
            "tax.consecutive_normal_months >= 12",
            "tax.cit_paid_last_year in [200000,1000000)",
        ]
        claims = tuple(parse_claim(t) for t in texts[:n_claims])

        def request(i: int) -> ClaimsRequest:
            code, signed = consents[i % len(consents)]
            return ClaimsRequest(
                request_id=f"bench-{uuid.uuid4()}",
                requested_at=int(time.time()),
                enterprise_uscc=code,
                consent=signed,
                audience_binding=bank.binding.signed,
                claims=claims,
            )

        cold_cpu, cold_wall = [], []
        for i in range(len(consents)):  # first use of each consent: signatures verified
            req = request(i)
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            agent.evaluate_claims(req)
            cold_cpu.append((time.thread_time_ns() - c0) / 1e3)
            cold_wall.append((time.perf_counter_ns() - w0) / 1e3)
        cpu, wall = [], []
        for i in range(requests):
            req = request(i)
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            agent.evaluate_claims(req)
            cpu.append((time.thread_time_ns() - c0) / 1e3)
            wall.append((time.perf_counter_ns() - w0) / 1e3)
        # The floor no implementation can go below: one seal of a bundle (a
        # session box, as the agent seals) and one Ed25519 signature per
        # claim, measured in the same run; and, for comparison, the same with
        # one single-shot HPKE per box (what agents did before sessions).
        sealing_raw = bank.binding.sealing_public_raw
        signer = load_party(party_dir(keys, "provider", "tax")).signing_key
        payload = bytes(200 * n_claims)
        sealer = SessionSealer()
        floor: list[float] = []
        hpke_floor: list[float] = []
        for i in range(2 * requests):
            c0 = time.thread_time_ns()
            for _ in range(n_claims):
                signer.sign("xinrong.v1.Verdict", payload[:200])
            if i % 2:
                seal(
                    payload,
                    recipient_id="bank-a",
                    recipient_public_raw=sealing_raw,
                    content_type="xinrong.v1.AnswerBundle",
                    context="bench",
                )
                hpke_floor.append((time.thread_time_ns() - c0) / 1e3)
            else:
                sealer.seal(
                    payload,
                    recipient_id="bank-a",
                    recipient_public_raw=sealing_raw,
                    content_type="xinrong.v1.AnswerBundle",
                    context="bench",
                )
                floor.append((time.thread_time_ns() - c0) / 1e3)
        stop.set()
        background.join()
        data.close()
        state.close()
    return {
        "bench": "agent.evaluate_claims",
        "claims_per_request": n_claims,
        "requests": requests,
        "cpu_us_median": round(statistics.median(cpu), 1),
        "cpu_us_p99": round(_percentile(cpu, 0.99), 1),
        "wall_us_median": round(statistics.median(wall), 1),
        "wall_us_p99": round(_percentile(wall, 0.99), 1),
        "crypto_floor_cpu_us_median": round(statistics.median(floor), 1),
        "hpke_per_box_floor_cpu_us_median": round(statistics.median(hpke_floor), 1),
        "cold_cpu_us_median": round(statistics.median(cold_cpu), 1),
        "cold_wall_us_median": round(statistics.median(cold_wall), 1),
    }


def bench_import(rows: int) -> dict[str, object]:
    catalog = default_catalog()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_tax_csv(root / "tax.csv", rows)
        generate_s = time.perf_counter() - t0
        size = (root / "tax.csv").stat().st_size
        store = DataStore(root / "tax.db", "tax")
        first = import_csv(store, catalog, "tax", root / "tax.csv")
        second = import_csv(store, catalog, "tax", root / "tax.csv")  # replace the period
        store.close()
        db_bytes = (root / "tax.db").stat().st_size
    return {
        "bench": "agent.import_csv",
        "rows": rows,
        "csv_bytes": size,
        "generate_s": round(generate_s, 1),
        "import_s": round(first.seconds, 1),
        "replace_s": round(second.seconds, 1),
        "rows_per_s": round(rows / first.seconds),
        "db_bytes": db_bytes,
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xinrong.tools.bench.agent_micro")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("evaluate")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--claims", type=int, default=3, choices=range(1, 6))
    p = sub.add_parser("import")
    p.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    if args.what == "evaluate":
        doc = bench_evaluate(args.requests, args.claims)
    else:
        doc = bench_import(args.rows)
    print(json.dumps(doc, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
