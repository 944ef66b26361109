"""``xinrong bench``: benchmarks that print one JSON line each."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any


def _verify(args: argparse.Namespace) -> int:
    from xinrong.tools.bench import verify

    return verify.main(args)


def _lazy(module: str, func: str = "main") -> Any:
    def run(args: argparse.Namespace) -> int:
        result: int = getattr(importlib.import_module(module), func)(args)
        return result

    return run


def _print(result: dict[str, Any]) -> int:
    print(json.dumps(result))
    return 0


def register_cli(parser: argparse.ArgumentParser) -> None:
    from xinrong.tools.bench import verify

    sub = parser.add_subparsers(dest="bench_cmd", metavar="BENCH")
    sub.required = True
    p = sub.add_parser("verify", help="end-to-end verify qps and latency vs the one-hop gRPC ceiling")
    verify.add_arguments(p)
    p.set_defaults(func=_verify)
    from xinrong.tools.bench import train

    p = sub.add_parser(
        "train",
        help="federated LR on real hetero data vs scikit-learn (node + agent processes)",
        description=(train.__doc__ or "").split("\n\n")[0].replace("``", ""),
    )
    train.add_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.train"))
    from xinrong.tools.bench import tlog

    p = sub.add_parser("tlog", help="Merkle audit log: inclusion proof time at N leaves, append throughput")
    tlog.add_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.tlog"))
    from xinrong.tools.bench import sequencer

    p = sub.add_parser(
        "sequencer", help="PostgreSQL: audit sequencer and Merkle tree CPU per entry, tree every round vs once a second"
    )
    sequencer.add_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.sequencer"))
    from xinrong.tools.bench import report

    p = sub.add_parser("report", help="credit report build + sign time (p50 / p99), and as GetCreditReport serves it")
    report.add_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.report"))
    from xinrong.tools.bench import evaluate

    p = sub.add_parser(
        "evaluate",
        help="full-coverage evaluation: N enterprises x P providers, two masked CKKS rounds",
        description=(evaluate.__doc__ or "").split("\n\n")[0].replace("``", ""),
    )
    evaluate.add_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.evaluate"))
    from xinrong.tools.bench import fuzz

    p = sub.add_parser("fuzz", help="hypothesis fuzzing of every RPC of every service against real servers over mTLS")
    fuzz.add_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.fuzz"))
    from xinrong.tools.bench import soak

    p = sub.add_parser("soak", help="steady verify load at half the measured capacity; errors, latency, RSS per minute")
    soak.add_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.soak"))
    from xinrong.tools.bench import push

    p = sub.add_parser(
        "push",
        help="push events/s to one subscriber (pre-filled log + live appends) and append-to-delivery latency",
    )
    push.add_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.push"))
    p = sub.add_parser("push-node", description="internal: the node process of bench push")
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "push-node"]
    push.add_node_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.push", "node_main"))
    from xinrong.tools.bench import match

    p = sub.add_parser("match", help="loan-product matching: time per (enterprise, product), real processes")
    match.add_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.match"))
    from xinrong.tools.bench import alerts

    p = sub.add_parser("alerts", help="post-loan watches: N watches, a new period -> every bank holds every alert")
    alerts.add_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.alerts"))
    # The one-hop ceiling's server, which bench verify starts as a process of
    # its own: an internal entry point, so it is left out of the listing
    # (argparse prints "==SUPPRESS==" for a sub-command whose help is SUPPRESS).
    p = sub.add_parser("ceiling-server", description="internal: the one-hop ceiling server of bench verify")
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "ceiling-server"]
    p.add_argument("--credentials", required=True, help="the credentials the ceiling server presents")
    p.add_argument("--port-file", required=True, type=Path, help="write the bound port here")
    p.set_defaults(func=verify.ceiling_server)
    from xinrong.tools.bench import report_render

    p = sub.add_parser("report-render", help="printable credit report: A4 PDF and HTML render time (median of N)")
    report_render.add_arguments(p)
    p.set_defaults(func=_lazy("xinrong.tools.bench.report_render"))
