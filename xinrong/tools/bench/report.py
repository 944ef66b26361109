"""Credit report build + sign time at the node (Issue 12 §2 numbers).

Two figures, over ``--reports`` reports of distinct enterprises, each with
every public field of the market, judicial and tax providers and one
voluntary filing:

* ``build_sign``: ``xinrong.report.build_report`` + ``sign_report`` on
  in-memory records (the report's own cost);
* ``served``: ``PublicStore.credit_report`` as GetCreditReport runs it - one
  SQLite transaction reading the records and filings and appending the audit
  entry, then build, sign and JSON-encode the envelope (no gRPC).

Prints one JSON line with p50 / p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from xinrong import uscc
from xinrong.catalog import FieldType, default_catalog
from xinrong.keys.ca import CaVerifier, CertificateAuthority
from xinrong.keys.signing import SigningKey
from xinrong.node.audit import open_audit_log
from xinrong.node.db import Database
from xinrong.node.public import PublicStore
from xinrong.node.registry import PartyRegistry
from xinrong.public import canonical_json
from xinrong.report import FiledItems, SourcedValue, build_report, new_report_id, sign_report
from xinrong.rpc.auth import Peer


def _value(spec: Any, rng: random.Random) -> Any:
    if spec.type is FieldType.BOOL:
        return rng.random() < 0.2
    if spec.type is FieldType.ENUM:
        return rng.choice(spec.values)
    if spec.type is FieldType.INT:
        return rng.randint(0, 12)
    if spec.type is FieldType.DATE:
        return f"20{rng.randint(0, 25):02d}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
    return f"{rng.uniform(0, 1e7):.2f}"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def run(reports: int, seed: int = 1) -> dict[str, Any]:
    catalog = default_catalog()
    assert catalog.commitment is not None
    rng = random.Random(seed)
    key = SigningKey.generate()
    specs = [s for p in catalog.public_providers() for s in catalog.aggregate_fields(p)]
    codes = [uscc.make("9", "1", "130100", f"MA{i:06d}") for i in range(reports)]
    records = {c: [SourcedValue(s.provider, s.key, _value(s, rng), "2026-09-30") for s in specs] for c in codes}
    filing_items = {"self.patents_held": 4, "self.rd_spend_last_year": "1250000.00"}
    filed = [FiledItems("a" * 32, filing_items, 1_790_000_000, catalog.commitment.sha256)]
    build: list[float] = []
    size = 0
    for code in codes:
        t0 = time.perf_counter()
        envelope = sign_report(
            build_report(
                catalog=catalog,
                enterprise=code,
                name="",
                records=records[code],
                filings=filed,
                issued_at=time.time(),
                report_id=new_report_id(),
                audit_leaf_index=1,
            ),
            key,
        )
        build.append(time.perf_counter() - t0)
        size = len(json.dumps(envelope, ensure_ascii=False).encode())
    served: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "node.db")
        try:
            ca = CertificateAuthority.create()
            store = PublicStore(
                db=db,
                audit=open_audit_log(db),
                catalog=catalog,
                registry=PartyRegistry(db, CaVerifier(ca.cert_pem), clock=time.time),
                ca=CaVerifier(ca.cert_pem),
                signing_key=key,
            )
            with db.transaction() as tx:
                tx.executemany(
                    "INSERT INTO public_records (uscc, field, provider, value, as_of, version) VALUES (?,?,?,?,?,1)",
                    [(c, r.field, r.provider, json.dumps(r.value), r.as_of) for c in codes for r in records[c]],
                )
                for provider in catalog.public_providers():
                    tx.execute(
                        "INSERT INTO public_batches (provider, version, base_version, period, sha256, batch, "
                        "signature, key_id, records, changed, received_ms) VALUES (?,1,0,'2026-09-30','',x'',x'','',0,0,0)",
                        (provider,),
                    )
                tx.executemany(
                    "INSERT INTO filings (filing_id, enterprise, filing, signature, commitment_sha256, signed_at, "
                    "filed_ms) VALUES (?,?,?,x'',?,1790000000,0)",
                    [
                        (
                            f"{i:032x}",
                            c,
                            canonical_json(
                                {
                                    "items": filing_items,
                                    "signed_at": 1_790_000_000,
                                    "commitment": {"text_sha256": catalog.commitment.sha256},
                                }
                            ),
                            catalog.commitment.sha256,
                        )
                        for i, c in enumerate(codes)
                    ],
                )
            for code in codes:
                t0 = time.perf_counter()
                json.dumps(store.credit_report(Peer("enterprise", code), code), ensure_ascii=False)
                served.append(time.perf_counter() - t0)
        finally:
            db.close()
    b50, b99 = _percentiles(build)
    s50, s99 = _percentiles(served)
    return {
        "bench": "report",
        "reports": reports,
        "public_fields": len(specs),
        "build_sign_p50_ms": round(b50, 3),
        "build_sign_p99_ms": round(b99, 3),
        "served_p50_ms": round(s50, 3),
        "served_p99_ms": round(s99, 3),
        "served_mean_ms": round(statistics.fmean(served) * 1000, 3),
        "envelope_bytes": size,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reports", type=int, default=2000, help="reports to build (distinct enterprises)")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic field values")
    p.add_argument("--json", action="store_true", help="one JSON line (the only output form)")


def main(args: argparse.Namespace) -> int:
    print(json.dumps(run(args.reports, args.seed)))
    return 0


__all__ = ["add_arguments", "main", "run"]
