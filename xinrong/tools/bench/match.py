"""``xinrong bench match``: product matching time per (enterprise, product), real processes.

Two agents (tax, social insurance) and the node as processes on 127.0.0.1,
N enterprises with a matching consent to one bank, one product with rules at
both providers, the bank's Paillier key of ``--key-bits``. After the
background run that publishing starts, ``xinrong node matching run``'s RPC
is timed: admission (consents, uses, one audit entry per enterprise), the
agents' calls (each: consent checks, one record read, Enc_bank(r * failed),
two signatures, one HPKE seal per enterprise) and storing the ciphertexts.
A sample of enterprises then opens its own results; ``correct`` says every
one equals the ground truth from the CSVs. Also the primitives alone: one
encryption, one homomorphic addition and one decryption at that key size.

One JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from xinrong.bank.products import BankProducts
from xinrong.catalog import default_catalog
from xinrong.claims import check_claim, evaluate, parse_claim
from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, grant
from xinrong.enterprise.products import EnterpriseProducts
from xinrong.keys.layout import party_dir
from xinrong.modeling import matching as mt
from xinrong.rpc.channel import secure_channel
from xinrong.tools.localnet import deploy, generate_data
from xinrong.tools.procs import ProcessGroup
from xinrong.v1 import products_pb2, products_pb2_grpc

AS_OF = "2026-09-30"
PROVIDERS = ["tax", "social_insurance"]
RULES = [
    "tax.credit_grade in A,B",
    "tax.consecutive_normal_months >= 12",
    "social_insurance.in_arrears == false",
    "social_insurance.avg_insured_headcount >= 10",
]


def _primitives(bits: int, reps: int = 20) -> dict[str, float]:
    key = mt.MatchingKey.generate(bits)
    enc, add, dec = [], [], []
    for i in range(reps):
        t = time.perf_counter()
        a = mt.encrypt_failed(key.n, i % 3)
        enc.append(time.perf_counter() - t)
        b = mt.encrypt_failed(key.n, 0)
        t = time.perf_counter()
        s = mt.add_ciphertexts(key.n, [a, b])
        add.append(time.perf_counter() - t)
        t = time.perf_counter()
        key.decrypt(s)
        dec.append(time.perf_counter() - t)
    return {
        "encrypt_ms": round(statistics.median(enc) * 1000, 2),
        "add_ms": round(statistics.median(add) * 1000, 3),
        "decrypt_ms": round(statistics.median(dec) * 1000, 2),
    }


def main(args: argparse.Namespace) -> int:
    catalog = default_catalog()
    with tempfile.TemporaryDirectory(prefix="xinrong-bench-match-") as tmp:
        workdir = Path(tmp)
        data = workdir / "data"
        generate_data(data, enterprises=args.enterprises, seed=args.seed, as_of=AS_OF)
        with ProcessGroup(workdir) as group:
            platform = deploy(workdir, providers=PROVIDERS, institutions=["bank-a"], data_dir=data, group=group)
            from xinrong.tools.demo import GroundTruth

            truth = GroundTruth(data, catalog, PROVIDERS)
            chosen = sorted(truth.rows["tax"])[: args.enterprises]
            for code in chosen:
                creds = platform.enterprise(code)
                signed = grant(
                    creds,
                    ConsentRequest("bank-a", "matching", ("tax.*", "social_insurance.*"), "2026-01-01", "2026-12-31"),
                )
                with EnterpriseClient(platform.node_address, creds) as client:
                    client.register(signed)
            bank_dir = party_dir(platform.keys_dir, "institution", "bank-a")
            with BankProducts(
                platform.node_address,
                platform.party("institution", "bank-a"),
                key_file=workdir / "bank-key.json",
                key_bits=args.key_bits,
            ) as bank:
                bank.publish(
                    product_id="bench",
                    name="bench product",
                    category="working_capital",
                    amount=(1, 10_000_000),
                    term_months=(1, 60),
                    rate_bps=(100, 1000),
                    rules=RULES,
                )
            node = platform.party("node", "node")
            with secure_channel(platform.node_address, node, server_role="node", server_id="node") as channel:
                stub = products_pb2_grpc.ProductServiceStub(channel)
                t = time.perf_counter()
                resp = stub.RunMatching(products_pb2.RunMatchingRequest(product_id="bench"), timeout=3600)
                wall = time.perf_counter() - t
            correct = 0
            sample = chosen[: args.check]
            for code in sample:
                with EnterpriseProducts(platform.node_address, platform.enterprise(code)) as ent:
                    (m,) = ent.matches()
                expected = all(
                    evaluate(c, truth.value(c.spec.key, code)) is True
                    for c in (check_claim(catalog, parse_claim(r)) for r in RULES)
                )
                correct += m["eligible"] == expected
            del bank_dir
    pairs = max(resp.pairs, 1)
    print(
        json.dumps(
            {
                "bench": "match",
                "enterprises": len(chosen),
                "rules": len(RULES),
                "providers": len(PROVIDERS),
                "key_bits": args.key_bits,
                "pairs": resp.pairs,
                "refused": resp.refused,
                "seconds": round(resp.seconds, 3),
                "rpc_wall_seconds": round(wall, 3),
                "ms_per_pair": round(resp.seconds / pairs * 1000, 2),
                "phases_ms_per_pair": {
                    "admission": round(resp.admission_seconds / pairs * 1000, 2),
                    "agents": round(resp.agents_seconds / pairs * 1000, 2),
                    "store": round(resp.store_seconds / pairs * 1000, 2),
                },
                "primitives": _primitives(args.key_bits),
                "checked": len(sample),
                "correct": correct == len(sample),
            }
        ),
        flush=True,
    )
    return 0 if correct == len(sample) else 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--enterprises", type=int, default=200, help="enterprises with a matching consent (default 200)")
    p.add_argument("--key-bits", type=int, default=mt.DEFAULT_KEY_BITS, help="the bank's Paillier key (default 2048)")
    p.add_argument("--check", type=int, default=20, help="enterprises whose results are checked vs the CSVs")
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic data")
    p.add_argument("--json", action="store_true", help="one JSON line (the only output)")
