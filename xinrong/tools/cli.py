"""The xinrong command: one verb per party.

    xinrong keys ...        platform CA, certificates, signing and sealing keys
    xinrong data ...        synthetic provider CSVs and a bank loan book
    xinrong agent ...       provider agent: init, import CSVs, serve
    xinrong node ...        central node: init, serve, audit
    xinrong enterprise ...  keygen, consent grant / revoke
    xinrong bank ...        verify claims, indicators, scoring
    xinrong model ...       joint modeling jobs
    xinrong bench ...       benchmarks that print one JSON line
    xinrong demo            the scripted end-to-end demo

Each party package contributes its verbs through ``register_cli(subparsers)``
so the command stays thin and every party's CLI sits beside its code. This
module is the one place that turns an error into the one line a user reads
and an exit status: 2 for a bad config or usage, 1 for a refusal or a failed
command, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from importlib import metadata

from xinrong.config import ConfigError
from xinrong.errors import ImportRejected, XinrongError
from xinrong.rpc.errors import RemoteError

# (verb, module with register_cli, help)
VERBS: list[tuple[str, str, str]] = [
    ("keys", "xinrong.keys.cli", "platform CA, TLS certificates, signing and sealing keys"),
    ("data", "xinrong.tools.datagen_cli", "synthetic data for providers and a bank"),
    ("agent", "xinrong.provider_agent.cli", "provider agent: init, import data, serve"),
    ("node", "xinrong.node.cli", "central node: init, serve, audit"),
    ("enterprise", "xinrong.enterprise.cli", "enterprise keys and consents"),
    ("bank", "xinrong.bank.cli", "institution client: verify, indicators, score"),
    ("model", "xinrong.bank.model_cli", "joint modeling jobs"),
    ("bench", "xinrong.tools.bench.cli", "benchmarks"),
    ("demo", "xinrong.tools.demo", "scripted end-to-end demo (--keep leaves the network up to try)"),
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Loggers that flood a -vv session with their own internals.
_CHATTY = ("grpc", "asyncio", "matplotlib", "PIL", "urllib3", "filelock")


def _version() -> str:
    try:
        return metadata.version("xinrong")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xinrong",
        description="xinrong 信融: usable-but-not-visible credit data for SME lending. One verb per party.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv debug, -vvv with grpc)")
    parser.add_argument("--version", action="version", version=f"xinrong {_version()}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb, module_name, help_text in VERBS:
        p = sub.add_parser(verb, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                p.set_defaults(func=_missing(verb))
                continue
            raise
        register: Callable[[argparse.ArgumentParser], None] = module.register_cli
        register(p)
    for leaf in _leaves(parser):
        if leaf is not parser:
            # -v after the verb too (``xinrong node serve -v``); added to the count before it.
            leaf.add_argument("-v", "--verbose", dest="verbose_after", action="count", default=0, help="more logging")
    return parser


def _leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser that runs a command: those without sub-commands of their own."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
        return
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaves(child)


def _missing(verb: str) -> Callable[[argparse.Namespace], int]:
    def run(_args: argparse.Namespace) -> int:
        print(f"xinrong {verb}: not available in this build", file=sys.stderr)
        return EXIT_USAGE

    return run


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbosity < 3:
        for name in _CHATTY:
            logging.getLogger(name).setLevel(max(level, logging.INFO))


def _command(argv: list[str]) -> str:
    """The words of the command line up to its first option: 'node audit tail'."""
    words: list[str] = []
    for word in argv:
        if word.startswith("-"):
            if words:
                break
            continue
        words.append(word)
    return " ".join(["xinrong", *words[:3]])


def _say(command: str, text: str) -> None:
    print(f"{command}: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose + getattr(args, "verbose_after", 0))
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    command = _command(argv)
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``xinrong node audit tail | head``): not an
        # error. Point stdout at /dev/null so the interpreter's final flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except ConfigError as exc:
        _say(command, exc.detail or exc.public_message)
        return EXIT_USAGE
    except ImportRejected as exc:
        _say(command, f"import rejected, nothing was imported ({len(exc.problems)} problems):")
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_FAILED
    except RemoteError as exc:
        _say(command, f"refused: {exc.code.name} {exc.reason}: {exc.message}")
        return EXIT_FAILED
    except XinrongError as exc:
        _say(command, exc.detail or exc.public_message)
        return EXIT_FAILED
    except (OSError, sqlite3.Error, ValueError) as exc:
        _say(command, str(exc) or type(exc).__name__)
        return EXIT_FAILED
    except Exception as exc:
        from xinrong.tlog.witness import SplitView  # loaded only when something went wrong

        if not isinstance(exc, SplitView):
            raise
        # The log showed two histories: the evidence (both signed notes) is printed and kept in the state file.
        import json

        _say(command, f"ALARM: {exc}")
        print(json.dumps(exc.evidence(), indent=1), file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
