"""``xinrong data ...``: synthetic provider CSVs and a bank loan book.

    xinrong data generate --enterprises N --out DIR [--seed S] [--as-of YYYY-MM-DD]
                          [--borrower-share F]

Arguments are checked by argparse itself, so a bad value fails before any
file is touched, with the usual ``error: argument --x: ...`` message and exit
status 2.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
import time
from pathlib import Path

from xinrong.tools import datagen


def _enterprises(text: str) -> int:
    try:
        value = int(text.replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not datagen.MIN_ENTERPRISES <= value <= datagen.MAX_ENTERPRISES:
        raise argparse.ArgumentTypeError(
            f"must be between {datagen.MIN_ENTERPRISES:,} and {datagen.MAX_ENTERPRISES:,}, got {value:,}"
        )
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError("must be in [0, 2^63)")
    return value


def _date(text: str) -> dt.date:
    try:
        value = dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date in YYYY-MM-DD form: {text!r}") from None
    if len(text) != 10:
        raise argparse.ArgumentTypeError(f"not a date in YYYY-MM-DD form: {text!r}")
    if not dt.date(2000, 1, 1) <= value <= dt.date(2100, 12, 31):
        raise argparse.ArgumentTypeError("must be between 2000-01-01 and 2100-12-31")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 1.0:  # also false for NaN
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _generate(args: argparse.Namespace) -> int:
    cfg = datagen.GenerateConfig(
        enterprises=args.enterprises, seed=args.seed, as_of=args.as_of, borrower_share=args.borrower_share
    )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"xinrong data generate: {out} exists and is not a directory", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        manifest = datagen.generate(out, cfg)
    except OSError as exc:
        print(f"xinrong data generate: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    for name, info in sorted(manifest.files.items()):
        print(f"  {name:<24} {info.rows:>9,} rows  {info.bytes / 1e6:8.1f} MB")
    print(
        f"wrote {len(manifest.files)} files and {datagen.MANIFEST_FILE} for {cfg.enterprises:,} enterprises "
        f"(seed {cfg.seed}, as of {cfg.as_of.isoformat()}) to {out} in {seconds:.1f} s"
    )
    return 0


def _enterprises_at(args: argparse.Namespace) -> int:
    """USCCs every named provider's CSV holds: enterprises a walk-through can ask about."""
    data = Path(args.data)
    providers = [p for p in args.at.split(",") if p]
    if not providers:
        raise ValueError("--at needs at least one provider")
    common: set[str] | None = None
    for provider in providers:
        path = data / f"{provider}.csv"
        try:
            with path.open(newline="") as fh:
                codes = {row["uscc"] for row in csv.DictReader(fh)}
        except FileNotFoundError:
            raise ValueError(f"{path} does not exist (run xinrong data generate --out {data})") from None
        common = codes if common is None else common & codes
    chosen = sorted(common or ())[: args.count]
    if not chosen:
        raise ValueError(f"no enterprise is known to all of {providers}")
    print("\n".join(chosen))
    return 0


def register_cli(parser: argparse.ArgumentParser) -> None:
    """Add ``xinrong data`` sub-commands."""
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND")
    gen = sub.add_parser(
        "generate",
        help="write one CSV per catalog provider, a bank loan book and manifest.json",
        description="Write synthetic provider CSVs (one per catalog provider), a bank's loan book and a "
        "manifest with row counts and SHA-256 digests. Deterministic for a given seed.",
    )
    gen.add_argument(
        "--enterprises",
        type=_enterprises,
        required=True,
        metavar="N",
        help=f"number of enterprises ({datagen.MIN_ENTERPRISES:,} to {datagen.MAX_ENTERPRISES:,})",
    )
    gen.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    gen.add_argument("--seed", type=_seed, default=datagen.DEFAULT_SEED, help="random seed (default %(default)s)")
    gen.add_argument(
        "--as-of",
        type=_date,
        default=datagen.DEFAULT_AS_OF,
        metavar="YYYY-MM-DD",
        help="data-as-of date written in every provider file (default %(default)s)",
    )
    gen.add_argument(
        "--borrower-share",
        type=_share,
        default=datagen.DEFAULT_BORROWER_SHARE,
        metavar="F",
        help="share of enterprises in the bank's loan book, in (0, 1] (default %(default)s)",
    )
    gen.set_defaults(func=_generate)

    pick = sub.add_parser("enterprises", help="print USCCs known to every named provider (for trying queries)")
    pick.add_argument("--data", required=True, metavar="DIR", help="a folder written by xinrong data generate")
    pick.add_argument("--at", required=True, metavar="P1,P2", help="comma-separated providers that must know them")
    pick.add_argument("--count", type=int, default=1, help="how many to print (default 1)")
    pick.set_defaults(func=_enterprises_at)

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=usage)
