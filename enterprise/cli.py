"""``xinrong enterprise``: keys, consents and revocations of a data subject."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from xinrong import uscc
from xinrong.consent import parse_consent, read_consent, write_consent
from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, grant
from xinrong.keys.layout import load_ca, load_party, party_dir, provision_party
from xinrong.serde import PROTO_TO_FORM, purpose_name
from xinrong.v1 import common_pb2


def consent_summary(signed: common_pb2.SignedConsent) -> dict[str, object]:
    c = parse_consent(signed)
    return {
        "consent_id": c.consent_id,
        "enterprise": c.enterprise_uscc,
        "grantee": c.grantee_id,
        "purpose": purpose_name(c.purpose),
        "scope": {i.field: sorted(str(PROTO_TO_FORM[f]) for f in i.forms if f in PROTO_TO_FORM) for i in c.scope},
        "data_period": [c.data_period_from, c.data_period_to],
        "valid_from": dt.datetime.fromtimestamp(c.valid_from, dt.UTC).isoformat(),
        "valid_until": dt.datetime.fromtimestamp(c.valid_until, dt.UTC).isoformat(),
        "max_uses": c.max_uses,
        "max_uses_per_day": c.max_uses_per_day,
        "retention_days": c.retention_days,
        "enterprise_key_id": c.enterprise_key_id,
    }


def cmd_keygen(args: argparse.Namespace) -> int:
    code = uscc.parse(args.uscc)
    ca = load_ca(args.keys_dir)
    directory = party_dir(args.keys_dir, "enterprise", code)
    if (directory / "signing.key").exists() and not args.force:
        print(f"{directory} already holds keys; use --force to replace them", file=sys.stderr)
        return 2
    provision_party(ca, args.keys_dir, role="enterprise", party_id=code, with_sealing=False, overwrite=args.force)
    creds = load_party(directory)
    print(f"enterprise {code}: signing key {creds.signing_key.key_id} in {directory}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from xinrong.enterprise.evaluation import own_evaluation

    print(json.dumps(own_evaluation(args.node, load_party(args.credentials), period=args.period), ensure_ascii=False))
    return 0


def _default_period() -> tuple[str, str]:
    today = dt.date.today()
    return f"{today.year - 1}-01-01", f"{today.year}-12-31"


def cmd_grant(args: argparse.Namespace) -> int:
    creds = load_party(args.credentials)
    period_from, period_to = _default_period()
    request = ConsentRequest(
        grantee=args.grantee,
        purpose=args.purpose,
        scope=tuple(args.scope),
        data_period_from=args.period_from or period_from,
        data_period_to=args.period_to or period_to,
        valid_days=args.valid_days,
        max_uses=args.max_uses,
        max_uses_per_day=args.max_uses_per_day,
        retention_days=args.retention_days,
        fetch_type=args.fetch_type,
    )
    signed = grant(creds, request)
    write_consent(args.out, signed)
    summary = consent_summary(signed)
    if args.node:
        with EnterpriseClient(args.node, creds) as client:
            resp = client.register(signed)
            summary["registered"] = common_pb2.ConsentState.Name(resp.state)
    print(json.dumps(summary, ensure_ascii=False, indent=None if args.json else 2))
    return 0


def _consent_id(args: argparse.Namespace) -> str:
    if args.consent:
        return parse_consent(read_consent(args.consent)).consent_id
    if args.consent_id:
        return str(args.consent_id)
    raise ValueError("give --consent FILE or --consent-id ID")


def cmd_revoke(args: argparse.Namespace) -> int:
    creds = load_party(args.credentials)
    with EnterpriseClient(args.node, creds) as client:
        resp = client.revoke(_consent_id(args))
    print(
        json.dumps(
            {
                "consent_id": resp.consent_id,
                "state": common_pb2.ConsentState.Name(resp.state),
                "providers_notified": list(resp.providers_notified),
            }
        )
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    creds = load_party(args.credentials)
    with EnterpriseClient(args.node, creds) as client:
        resp = client.status(_consent_id(args))
    print(
        json.dumps(
            {
                "consent_id": resp.consent_id,
                "state": common_pb2.ConsentState.Name(resp.state),
                "uses": resp.uses,
                "max_uses": resp.max_uses,
            }
        )
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    print(json.dumps(consent_summary(read_consent(args.file)), ensure_ascii=False, indent=2))
    return 0


def register_cli(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="enterprise_cmd", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("score", help="this enterprise's own evaluation: score, grade and breakdown")
    p.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
    p.add_argument("--node", required=True, help="node address host:port")
    p.add_argument("--period", default="", help="an evaluated period (default: the latest)")
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("keygen", help="create the enterprise's signing key and have the CA bind it")
    p.add_argument("--uscc", required=True, help="the enterprise's 18-character unified social credit code")
    p.add_argument("--keys-dir", required=True, help="keys directory holding the platform CA")
    p.add_argument("--force", action="store_true", help="replace the enterprise's existing key")
    p.set_defaults(func=cmd_keygen)

    consent = sub.add_parser("consent", help="grant, revoke, inspect consents")
    csub = consent.add_subparsers(dest="consent_cmd", metavar="COMMAND")
    csub.required = True
    p = csub.add_parser("grant", help="sign a consent for an institution")
    p.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
    p.add_argument("--grantee", required=True, help="institution party id")
    p.add_argument(
        "--purpose",
        default="loan_application",
        choices=["loan_application", "post_loan_monitoring", "credit_scoring", "joint_modeling"],
        help="what the grantee may use the data for (default loan_application)",
    )
    p.add_argument(
        "--scope",
        action="append",
        required=True,
        help="catalog field, 'field:form[+form]' or 'provider.*'; repeatable",
    )
    p.add_argument("--period-from", default="", help="first data as-of date covered (YYYY-MM-DD)")
    p.add_argument("--period-to", default="", help="last data as-of date covered (YYYY-MM-DD)")
    p.add_argument("--valid-days", type=float, default=30.0, help="days the consent stays valid (default 30)")
    p.add_argument("--max-uses", type=int, default=10, help="total uses the grantee may make (default 10)")
    p.add_argument("--max-uses-per-day", type=int, default=0, help="uses per UTC day; 0 = no daily limit")
    p.add_argument("--retention-days", type=int, default=90, help="days the grantee may keep the answers")
    p.add_argument(
        "--fetch-type", default="one_time", choices=["one_time", "periodic"], help="one-time or periodic fetches"
    )
    p.add_argument("--out", required=True, type=Path, help="where to write the signed consent")
    p.add_argument("--node", default="", help="node address: also register the consent there")
    p.add_argument("--json", action="store_true", help="one-line JSON output")
    p.set_defaults(func=cmd_grant)
    for name, func, help_text in (
        ("revoke", cmd_revoke, "revoke a consent (signed by the enterprise, pushed to every provider)"),
        ("status", cmd_status, "lifecycle state and uses of a consent"),
    ):
        p = csub.add_parser(name, help=help_text)
        p.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
        p.add_argument("--node", required=True, help="node address host:port")
        p.add_argument("--consent", type=Path, help="signed consent file")
        p.add_argument("--consent-id", help="the consent id, instead of --consent FILE")
        p.set_defaults(func=func)
    p = csub.add_parser("show", help="print a signed consent file")
    p.add_argument("file", type=Path, help="a signed consent file (.pb)")
    p.set_defaults(func=cmd_show)
