"""Micro-benchmark: CPU the node process spends per Verify request.

    python -m xinrong.tools.bench.node_micro [--seconds 5] [--concurrency 8] [--claims 1]

Deploys a real platform on 127.0.0.1 (``xinrong.tools.localnet``: keys, the tax
agent with imported synthetic data, the node; separate processes over
mTLS), drives Verify calls from this process with plain stubs (no client
verification, so the load generator stays light), and reads the node's and
the agent's CPU time (user + system, all threads) from ``/proc`` before and
after. Prints one JSON line. Per-request CPU is what bounds throughput on a
small machine: at 2 cores, a node spending ``c`` ms per request cannot
exceed ``2000 / c`` requests per second however the rest performs.

Linux only (``/proc/<pid>/stat``).

``--admission`` instead times the node's own work per Verify in-process, on
the node's event loop: ``NodeCore.verify`` (claim checks, consent, budgets,
replay, the four SQLite writes and the hash-chained audit entry) with the
agent fan-out replaced by a canned answer, in loop-thread CPU microseconds
per call; once with the group COMMIT left to the end (as when a batch of
calls shares one) and once with one COMMIT per call. No gRPC is involved,
so the figure is steady on a noisy machine and shows what a change to the
admission buys.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from xinrong.claims import parse_claim
from xinrong.tools import placement as cpus
from xinrong.tools.bench.procstat import cpu_seconds
from xinrong.v1 import node_pb2, node_pb2_grpc

CLAIMS = [
    "tax.credit_grade in A,B",
    "tax.in_arrears == false",
    "tax.consecutive_normal_months >= 12",
    "tax.vat_paid_last_year >= 500000",
]


def _drive(stub: Any, make: Any, *, seconds: float, concurrency: int) -> tuple[int, int]:
    stop = threading.Event()
    counts = [0] * concurrency
    errors = [0] * concurrency

    def worker(i: int) -> None:
        while not stop.is_set():
            try:
                stub.Verify(make(), timeout=10)
                counts[i] += 1
            except Exception:
                errors[i] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    return sum(counts), sum(errors)


def run(
    *, seconds: float, concurrency: int, claims: int, enterprises: int = 200, placement: str = "shared"
) -> dict[str, object]:
    from xinrong.rpc.channel import secure_channel
    from xinrong.tools.bench.fixture import one_provider_platform
    from xinrong.tools.procs import ProcessGroup

    with tempfile.TemporaryDirectory(prefix="xinrong-node-microbench-") as tmp:
        workdir = Path(tmp)
        with ProcessGroup(workdir) as group:
            bench = one_provider_platform(workdir, group, enterprises=enterprises, seed=7)
            platform, enterprise, bank, consent = bench.platform, bench.enterprise, bench.bank, bench.consent
            consent_id = bench.consent_id
            asked = [parse_claim(c) for c in CLAIMS[: max(1, min(claims, len(CLAIMS)))]]

            def make() -> node_pb2.VerifyRequest:
                return node_pb2.VerifyRequest(
                    request_id=str(uuid.uuid4()),
                    requested_at=int(time.time()),
                    enterprise_uscc=enterprise,
                    consent_id=consent_id,
                    claims=asked,
                )

            node_pid = group.parties["node"].proc.pid
            agent_pid = group.parties["agent-tax"].proc.pid
            plan = cpus.split() if placement == "pinned" else None
            if plan is not None:  # as `xinrong bench verify` deploys: the node alone on the first CPU
                cpus.pin(node_pid, plan.server)
                cpus.pin(agent_pid, plan.rest)
                cpus.pin(os.getpid(), plan.rest)
            with secure_channel(platform.node_address, bank, server_role="node", server_id="node") as channel:
                stub = node_pb2_grpc.NodeServiceStub(channel)
                stub.RegisterConsent(node_pb2.RegisterConsentRequest(consent=consent), timeout=10)
                _drive(stub, make, seconds=1.0, concurrency=concurrency)  # warm-up
                node0, agent0, self0 = (
                    cpu_seconds(node_pid),
                    cpu_seconds(agent_pid),
                    time.process_time(),
                )
                wall0 = time.perf_counter()
                done, errors = _drive(stub, make, seconds=seconds, concurrency=concurrency)
                wall = time.perf_counter() - wall0
                node1, agent1, self1 = (
                    cpu_seconds(node_pid),
                    cpu_seconds(agent_pid),
                    time.process_time(),
                )
            if plan is not None:
                cpus.pin(os.getpid(), plan.all)
    if done == 0:
        raise RuntimeError(f"no request succeeded ({errors} errors)")
    return {
        "bench": "node_cpu",
        "requests": done,
        "errors": errors,
        "qps": round(done / wall, 1),
        "node_cpu_ms_per_request": round(1000 * (node1 - node0) / done, 3),
        "agent_cpu_ms_per_request": round(1000 * (agent1 - agent0) / done, 3),
        "client_cpu_ms_per_request": round(1000 * (self1 - self0) / done, 3),
        "concurrency": concurrency,
        "claims_per_call": len(asked),
        "seconds": seconds,
        "cores": os.cpu_count(),
        "placement": "pinned" if plan is not None else "shared",
    }


def run_admission(*, calls: int, enterprises: int = 1) -> dict[str, object]:
    """NodeCore.verify in-process with a stubbed fan-out; loop-thread CPU per call."""
    from xinrong import uscc
    from xinrong.consent import parse_consent
    from xinrong.enterprise.client import ConsentRequest, grant
    from xinrong.keys.layout import create_ca, load_party, party_dir, provision_party
    from xinrong.node.config import load_config, render_config
    from xinrong.node.serde import verify_input_from_proto
    from xinrong.node.server import start_node
    from xinrong.node.service import Answers
    from xinrong.rpc.auth import Peer
    from xinrong.v1 import common_pb2

    enterprise = uscc.make("9", "1", "130100", "12345678")
    with tempfile.TemporaryDirectory(prefix="xinrong-admission-bench-") as tmp:
        root = Path(tmp)
        keys = root / "keys"
        ca = create_ca(keys)
        provision_party(ca, keys, role="node", party_id="node")
        provision_party(ca, keys, role="provider", party_id="tax", provider="tax")
        provision_party(ca, keys, role="institution", party_id="bank-a")
        provision_party(ca, keys, role="enterprise", party_id=enterprise, with_sealing=False)
        config = root / "node.toml"
        config.write_text(
            render_config(
                bind="127.0.0.1:0",
                credentials=party_dir(keys, "node", "node"),
                ca_cert=keys / "ca" / "ca.crt",
                db=root / "node.db",
                providers=[("tax", "127.0.0.1:9", party_dir(keys, "provider", "tax") / "binding.pb")],
                institutions=[("bank-a", party_dir(keys, "institution", "bank-a") / "binding.pb")],
                enterprise_daily_budget=1_000_000_000,
            )
        )
        node = start_node(load_config(config))
        try:
            core = node.core
            ent = load_party(party_dir(keys, "enterprise", enterprise))
            consent = grant(
                ent,
                ConsentRequest(
                    "bank-a", "loan_application", ("tax.*",), "2025-01-01", "2026-12-31", max_uses=4_000_000_000
                ),
            )
            core.register_consent(Peer("institution", "bank-a"), consent)
            consent_id = parse_consent(consent).consent_id
            box = common_pb2.SealedBox(recipient_id="bank-a", ciphertext=bytes(300))
            commit_each = [False]
            last_token = [0]

            async def fan_out(requests: Any, *, recipient_id: str, durable_token: int) -> list[Any]:
                last_token[0] = durable_token
                if commit_each[0]:
                    core.db.wait_durable(durable_token)
                return [(provider, box) for provider in requests]

            core.agents.evaluate_claims = fan_out  # type: ignore[method-assign]
            bank = Peer("institution", "bank-a")
            asked = [parse_claim(CLAIMS[0])]
            inputs = [
                verify_input_from_proto(
                    node_pb2.VerifyRequest(
                        request_id=str(uuid.uuid4()),
                        requested_at=int(time.time()),
                        enterprise_uscc=enterprise,
                        consent_id=consent_id,
                        claims=asked,
                    )
                )
                for _ in range(3 * calls)
            ]

            async def drive(batch: list[Any]) -> float:
                t0 = time.thread_time()
                for item in batch:
                    answers: Answers = await core.verify(bank, item)
                    assert answers.answers
                elapsed = time.thread_time() - t0
                core.db.wait_durable(last_token[0])  # the group's COMMIT, outside the timing
                return 1e6 * elapsed / len(batch)

            server: Any = node.server
            server.run(drive(inputs[:calls]))  # warm-up
            grouped = server.run(drive(inputs[calls : 2 * calls]))
            commit_each[0] = True
            each = server.run(drive(inputs[2 * calls :]))
        finally:
            node.stop(0.5)
    return {
        "bench": "node_admission",
        "calls": calls,
        "cpu_us_per_call_group_commit": round(grouped, 1),
        "cpu_us_per_call_commit_each": round(each, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xinrong.tools.bench.node_micro", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--claims", type=int, default=1, help="claims per call (1-4, all at the tax agent)")
    parser.add_argument(
        "--placement",
        choices=("shared", "pinned"),
        default="shared",
        help="pinned: node alone on the first CPU, agent and this load generator on the others",
    )
    parser.add_argument("--admission", action="store_true", help="time NodeCore.verify in-process instead")
    parser.add_argument("--calls", type=int, default=5000, help="--admission: calls per measurement")
    args = parser.parse_args(argv)
    if args.admission:
        print(json.dumps(run_admission(calls=args.calls)))
        return 0
    print(
        json.dumps(
            run(seconds=args.seconds, concurrency=args.concurrency, claims=args.claims, placement=args.placement)
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
