"""``xinrong bank products publish / list / withdraw`` and ``xinrong bank applications``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xinrong.bank.products import BankProducts, key_path
from xinrong.keys.layout import load_party
from xinrong.modeling.matching import CATEGORIES, DEFAULT_KEY_BITS


def _range(text: str, what: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        low = int(lo)
        high = int(hi) if sep else low
    except ValueError:
        raise ValueError(f"{what}: give MIN-MAX in whole numbers, e.g. 100000-3000000") from None
    return low, high


def _products(args: argparse.Namespace) -> BankProducts:
    from xinrong.bank.cli import node_connection

    node, creds = node_connection(args)
    key_file = Path(args.key_file) if getattr(args, "key_file", "") else key_path(creds)
    return BankProducts(
        node,
        load_party(creds),
        key_file=key_file,
        key_bits=getattr(args, "key_bits", DEFAULT_KEY_BITS),
        timeout=args.timeout,
    )


def cmd_publish(args: argparse.Namespace) -> int:
    with _products(args) as bank:
        summary = bank.publish(
            product_id=args.id,
            name=args.name,
            category=args.category,
            amount=_range(args.amount, "--amount"),
            term_months=_range(args.term_months, "--term-months"),
            rate_bps=_range(args.rate_bps, "--rate-bps"),
            regions=[r for item in args.region for r in item.split(",") if r],
            rules=args.rule,
        )
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _products(args) as bank:
        for doc in bank.products(args.bank, include_withdrawn=args.all):
            print(json.dumps(doc, ensure_ascii=False))
    return 0


def cmd_withdraw(args: argparse.Namespace) -> int:
    with _products(args) as bank:
        at = bank.withdraw(args.id)
    print(json.dumps({"product_id": args.id, "withdrawn_at": at}))
    return 0


def cmd_applications(args: argparse.Namespace) -> int:
    with _products(args) as bank:
        for doc in bank.applications(args.product):
            print(json.dumps(doc, ensure_ascii=False))
    return 0


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from xinrong.bank.cli import add_connection_args

    products = sub.add_parser("products", help="publish, list and withdraw loan products (产品展示)")
    psub = products.add_subparsers(dest="products_cmd", metavar="COMMAND")
    psub.required = True
    p = psub.add_parser("publish", help="publish (or replace) a signed product with eligibility rules")
    add_connection_args(p)
    p.add_argument("--id", required=True, help="product id, unique for this bank (A-Z a-z 0-9 . _ -)")
    p.add_argument("--name", required=True, help="product name shown to enterprises")
    p.add_argument("--category", required=True, choices=sorted(CATEGORIES), help="policy §8 category")
    p.add_argument("--amount", required=True, help="CNY range MIN-MAX, e.g. 100000-3000000")
    p.add_argument("--term-months", required=True, help="term range MIN-MAX in months, e.g. 6-36")
    p.add_argument("--rate-bps", required=True, help="annual rate range MIN-MAX in basis points, e.g. 350-600")
    p.add_argument("--region", action="append", default=[], help="region code(s) served; repeatable; none = all")
    p.add_argument(
        "--rule", action="append", required=True, help="eligibility claim, e.g. 'tax.credit_grade in A,B'; repeatable"
    )
    p.add_argument(
        "--key-file", default="", help="the bank's Paillier key (default: matching_paillier.json in credentials)"
    )
    p.add_argument("--key-bits", type=int, default=DEFAULT_KEY_BITS, help="size of a new Paillier key (default 2048)")
    p.set_defaults(func=cmd_publish)
    p = psub.add_parser("list", help="published products of every bank (signatures checked), JSON lines")
    add_connection_args(p)
    p.add_argument("--bank", default="", help="only this bank's products")
    p.add_argument("--all", action="store_true", help="include withdrawn products")
    p.set_defaults(func=cmd_list)
    p = psub.add_parser("withdraw", help="withdraw one of this bank's products (its match results are dropped)")
    add_connection_args(p)
    p.add_argument("--id", required=True, help="product id")
    p.set_defaults(func=cmd_withdraw)
    p = sub.add_parser("applications", help="applications to this bank's products, eligibility verified offline")
    add_connection_args(p)
    p.add_argument("--product", default="", help="only this product")
    p.add_argument(
        "--key-file", default="", help="the bank's Paillier key (default: matching_paillier.json in credentials)"
    )
    p.set_defaults(func=cmd_applications)
