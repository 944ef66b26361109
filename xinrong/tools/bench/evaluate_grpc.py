"""``xinrong bench evaluate --mode grpc``: the real service, agents as processes over mTLS.

Generated data for N enterprises, one agent process per catalog provider
(9) with its period imported, the node deployed as for the demo, then
``xinrong node evaluate`` (the node's coordinator) run in this process:
universe from the register agent, two rounds of masked CKKS parts over
gRPC, sums decrypted, scores and grades stored. ``correct`` compares every
stored score with the plaintext sum of the agents' own parts.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from xinrong.catalog import default_catalog
from xinrong.index import default_index, provider_points
from xinrong.keys.layout import load_party
from xinrong.node.config import load_config
from xinrong.node.evaluation import EvaluationAgents, EvaluationCoordinator, EvaluationStore
from xinrong.provider_agent.evaluation import read_own_data
from xinrong.tools.localnet import deploy, generate_data
from xinrong.tools.procs import ProcessGroup


def run_grpc(enterprises: int, providers: int, *, seed: int) -> dict[str, Any]:
    catalog = default_catalog()
    names = sorted(catalog.providers)[:providers] if providers < len(catalog.providers) else sorted(catalog.providers)
    if "market" not in names:
        names = sorted({*names[:-1], "market"})
    with tempfile.TemporaryDirectory(prefix="xinrong-bench-eval-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        data = generate_data(root / "data", enterprises=enterprises, seed=seed % (1 << 31))
        with ProcessGroup(root) as group:
            platform = deploy(root, providers=names, institutions=["bank"], data_dir=data, group=group)
            setup_seconds = time.perf_counter() - t
            assert platform.node_config is not None
            config = load_config(platform.node_config)
            creds = load_party(config.credentials, ca_cert=config.ca_cert)
            agents = EvaluationAgents(config, creds)
            try:
                t = time.perf_counter()
                summary = EvaluationCoordinator(
                    agents, EvaluationStore(config.evaluation_path()), timeout=config.evaluation_timeout_seconds
                ).run("bench")
                seconds = time.perf_counter() - t
            finally:
                agents.close()
            index = default_index()
            store = EvaluationStore(config.evaluation_path())
            counts: dict[str, int] = {}
            totals: dict[str, int] = {}
            for name in names:
                own = read_own_data(root / "state" / f"agent-{name}.db", catalog, index, name)
                for u, p in zip(own.ids, provider_points(index, name, own.columns, len(own.ids)).tolist()):
                    counts[u] = counts.get(u, 0) + 1
                    totals[u] = totals.get(u, 0) + int(p)
            correct = True
            for u in sorted(counts):
                record = store.lookup(u, "bench")
                ok = record is not None and record.scored == (counts[u] >= index.min_providers)
                if ok and record is not None and record.scored:
                    ok = record.score == index.score(totals[u])
                correct = correct and ok
    return {
        "bench": "evaluate",
        "mode": "grpc",
        "enterprises": summary.enterprises,
        "providers": len(names),
        "evaluated": summary.evaluated,
        "withheld": summary.withheld,
        "seconds": round(seconds, 2),
        "phases": {k: round(v, 2) for k, v in summary.phases.items()},
        "setup_seconds": round(setup_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "correct": correct,
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
    }
