"""The ``xinrong`` command: one verb per party.

    xinrong keys ...        platform CA, certificates, signing and sealing keys
    xinrong data ...        synthetic provider CSVs and a bank loan book
    xinrong agent ...       provider agent: import CSVs, serve
    xinrong node ...        central node: serve, audit
    xinrong enterprise ...  keygen, consent grant / revoke
    xinrong bank ...        verify claims, indicators, scoring
    xinrong model ...       joint modeling jobs
    xinrong bench ...       benchmarks that print one JSON line
    xinrong demo            the scripted end-to-end demo

Each party package contributes its verbs through ``register_cli(subparsers)``
so the command stays thin and every party's CLI sits beside its code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

# (verb, module with register_cli, help)
VERBS: list[tuple[str, str, str]] = [
    ("keys", "xinrong.keys.cli", "platform CA, TLS certificates, signing and sealing keys"),
    ("data", "xinrong.tools.datagen_cli", "synthetic data for providers and a bank"),
    ("agent", "xinrong.provider_agent.cli", "provider agent: import data, serve"),
    ("node", "xinrong.node.cli", "central node: serve, audit"),
    ("enterprise", "xinrong.enterprise.cli", "enterprise keys and consents"),
    ("bank", "xinrong.bank.cli", "institution client: verify, indicators, score"),
    ("model", "xinrong.bank.model_cli", "joint modeling jobs"),
    ("bench", "xinrong.tools.bench.cli", "benchmarks"),
    ("demo", "xinrong.tools.demo", "scripted end-to-end demo"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xinrong", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb, module_name, help_text in VERBS:
        p = sub.add_parser(verb, help=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                p.set_defaults(func=_missing(verb))
                continue
            raise
        register: Callable[[argparse.ArgumentParser], None] = module.register_cli
        register(p)
    return parser


def _missing(verb: str) -> Callable[[argparse.Namespace], int]:
    def run(_args: argparse.Namespace) -> int:
        print(f"xinrong {verb}: not available in this build", file=sys.stderr)
        return 2

    return run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
