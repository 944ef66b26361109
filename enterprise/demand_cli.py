"""``xinrong enterprise demand``: register, withdraw and list financing demands."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from xinrong.consent import read_consent
from xinrong.enterprise.demand_client import DemandClient
from xinrong.keys.layout import load_party
from xinrong.v1 import demand_pb2


def _status(status: demand_pb2.DemandStatus) -> dict[str, Any]:
    d = demand_pb2.FinancingDemand.FromString(status.demand.demand)
    return {
        "demand_id": d.demand_id,
        "state": demand_pb2.DemandState.Name(status.state).removeprefix("DEMAND_STATE_").lower(),
        "amount_yuan": d.amount_yuan,
        "term_months": d.term_months,
        "purpose": d.purpose,
        "region": d.region,
        "show_grade": d.show_grade,
        "valid_until": d.valid_until,
        "whitelisted": status.whitelisted,
        "pushed_to": list(status.pushed_to),
    }


def cmd_register(args: argparse.Namespace) -> int:
    creds = load_party(args.credentials)
    consents = [read_consent(Path(p)) for p in args.consent]
    with DemandClient(args.node, creds) as client:
        signed = client.sign(
            amount_yuan=args.amount,
            term_months=args.term_months,
            purpose=args.purpose,
            region=args.region or creds.party_id[2:8],
            industry=args.industry,
            consents=consents,
            show_grade=not args.hide_grade,
            valid_until=int(time.time() + args.valid_days * 86400),
        )
        resp = client.register(signed, consents)
    print(
        json.dumps(
            {"demand_id": resp.demand_id, "whitelisted": resp.whitelisted, "pushed_to": list(resp.pushed_to)},
            ensure_ascii=False,
        )
    )
    return 0


def cmd_withdraw(args: argparse.Namespace) -> int:
    with DemandClient(args.node, load_party(args.credentials)) as client:
        resp = client.withdraw(args.demand_id)
    print(json.dumps({"demand_id": resp.demand_id, "state": demand_pb2.DemandState.Name(resp.state)}))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with DemandClient(args.node, load_party(args.credentials)) as client:
        for status in client.list():
            print(json.dumps(_status(status), ensure_ascii=False))
    return 0


def register_cli(sub: Any) -> None:
    group = sub.add_parser("demand", help="financing demands pushed to the banks your matching consents name")
    gsub = group.add_subparsers(dest="demand_cmd", metavar="COMMAND")
    gsub.required = True
    p = gsub.add_parser("register", help="sign and register a financing demand")
    p.add_argument("--amount", type=int, required=True, help="amount asked for, whole yuan")
    p.add_argument("--term-months", type=int, required=True, help="term in months")
    p.add_argument("--purpose", required=True, help="what the funds are for (at most 200 characters)")
    p.add_argument("--region", default="", help="6-digit division code where the funds are used (default: the USCC's)")
    p.add_argument("--industry", default="", help="GB/T 4754 section letter and class digits, e.g. C3011")
    p.add_argument(
        "--consent", action="append", required=True, help="a signed consent file of purpose matching; repeatable"
    )
    p.add_argument("--hide-grade", action="store_true", help="do not let the banks see the index grade")
    p.add_argument("--valid-days", type=float, default=90.0, help="days the demand stays valid (default 90)")
    p.set_defaults(func=cmd_register)
    p = gsub.add_parser("withdraw", help="withdraw a demand: every bank it reached gets a removal")
    p.add_argument("--demand-id", required=True, help="the demand's id")
    p.set_defaults(func=cmd_withdraw)
    p = gsub.add_parser("list", help="this enterprise's demands, their state and where they are pushed")
    p.set_defaults(func=cmd_list)
    for name in ("register", "withdraw", "list"):
        parser = gsub.choices[name]
        parser.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
        parser.add_argument("--node", required=True, help="node address host:port")


__all__ = ["register_cli"]
