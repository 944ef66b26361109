"""Self-query latency: an enterprise reads all its data from every provider (issue 11, goal p99 <= 100 ms).

    python -m xinrong.tools.bench.subject [--enterprises 500] [--requests 200] [--warmup 20]

Deploys the demo's nine agents and the node as real processes on 127.0.0.1,
then times ``SubjectClient.my_data`` end to end (sign, node admission,
fan-out to every agent, each agent's read, sign, pad and seal, and the
client's opening and signature checks), sequentially. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

from xinrong.enterprise.client import SubjectClient
from xinrong.tools.demo import DEFAULT_PROVIDERS
from xinrong.tools.localnet import deploy, generate_data
from xinrong.tools.procs import ProcessGroup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--enterprises", type=int, default=500)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xinrong-bench-subject-") as tmp:
        workdir = Path(tmp)
        data = workdir / "data"
        generate_data(data, enterprises=args.enterprises, seed=3, as_of="2026-09-30")
        with open(data / "tax.csv", newline="") as fh:
            codes = [row["uscc"] for row in csv.DictReader(fh)]
        with ProcessGroup(workdir) as group:
            plat = deploy(
                workdir, providers=list(DEFAULT_PROVIDERS), institutions=["bank-a"], data_dir=data, group=group
            )
            clients = [SubjectClient(plat.node_address, plat.enterprise(c)) for c in codes[:10]]
            try:
                for i in range(args.warmup):
                    clients[i % len(clients)].my_data()
                times: list[float] = []
                for i in range(args.requests):
                    started = time.perf_counter()
                    reports, unavailable = clients[i % len(clients)].my_data()
                    times.append((time.perf_counter() - started) * 1000)
                    assert len(reports) == len(DEFAULT_PROVIDERS) and not unavailable
            finally:
                for client in clients:
                    client.close()
    times.sort()
    print(
        json.dumps(
            {
                "bench": "self_query",
                "providers": len(DEFAULT_PROVIDERS),
                "requests": len(times),
                "p50_ms": round(statistics.median(times), 2),
                "p99_ms": round(times[max(0, int(len(times) * 0.99) - 1)], 2),
                "max_ms": round(times[-1], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
