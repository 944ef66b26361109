"""``xinrong enterprise products`` (browse, with this enterprise's own match) and ``xinrong enterprise apply``."""

from __future__ import annotations

import argparse
import json

from xinrong.enterprise.products import EnterpriseProducts
from xinrong.keys.layout import load_party

DEMAND_KEYS = ("amount", "term_months", "purpose", "region")


def parse_demand(text: str) -> dict[str, str]:
    """``amount=800000,term_months=12,purpose=working capital,region=130100`` (any subset)."""
    out: dict[str, str] = {}
    for item in (i for i in text.split(",") if i.strip()):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in DEMAND_KEYS:
            raise ValueError(f"--demand: {item!r} is not one of {', '.join(k + '=...' for k in DEMAND_KEYS)}")
        out[key] = value.strip()
    return out


def _client(args: argparse.Namespace) -> EnterpriseProducts:
    return EnterpriseProducts(args.node, load_party(args.credentials), node_id=args.node_id)


def cmd_products(args: argparse.Namespace) -> int:
    with _client(args) as client:
        listed = client.products(args.bank)
        mine = {m["product_id"]: m for m in client.matches()}
    for doc in listed:
        m = mine.get(str(doc["product_id"]))
        doc["my_match"] = (
            None if m is None else {k: m[k] for k in ("eligible", "failed_rules", "match_id", "data_as_of", "verified")}
        )
        print(json.dumps(doc, ensure_ascii=False))
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    demand = parse_demand(args.demand)
    for key in DEMAND_KEYS:
        value = getattr(args, key)
        if value not in (None, ""):
            demand[key] = str(value)
    if "amount" not in demand or "term_months" not in demand:
        raise ValueError("the demand needs amount and term_months (--demand amount=...,term_months=...)")
    with _client(args) as client:
        application_id = client.apply(
            args.product,
            amount=int(demand["amount"]),
            term_months=int(demand["term_months"]),
            purpose=demand.get("purpose", ""),
            region=demand.get("region", ""),
        )
    print(
        json.dumps({"application_id": application_id, "product_id": args.product, "demand": demand}, ensure_ascii=False)
    )
    return 0


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("products", help="loan products of every bank, with this enterprise's own match result")
    p.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
    p.add_argument("--node", required=True, help="node address host:port")
    p.add_argument("--node-id", default="node", help="the node's party id (default node)")
    p.add_argument("--bank", default="", help="only this bank's products")
    p.set_defaults(func=cmd_products)
    p = sub.add_parser("apply", help="apply to a product in one step (the bank sees its eligibility, verified)")
    p.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
    p.add_argument("--node", required=True, help="node address host:port")
    p.add_argument("--node-id", default="node", help="the node's party id (default node)")
    p.add_argument("--product", required=True, help="product id")
    p.add_argument(
        "--demand", default="", help="the demand given to the bank: amount=CNY,term_months=N,purpose=TEXT,region=CODE"
    )
    p.add_argument("--amount", type=int, help="CNY (instead of amount= in --demand)")
    p.add_argument("--term-months", dest="term_months", type=int, help="months (instead of term_months= in --demand)")
    p.add_argument("--purpose", default="", help="what the loan is for")
    p.add_argument("--region", default="", help="region code")
    p.set_defaults(func=cmd_apply)
