"""``xinrong enterprise``: keys, consents and revocations of a data subject."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from xinrong import subject as subj
from xinrong import uscc
from xinrong.consent import parse_consent, read_consent, write_consent
from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, SubjectClient, case_json, grant
from xinrong.enterprise.portal.cli import register_portal
from xinrong.errors import ValidationError
from xinrong.keys.layout import load_ca, load_party, party_dir, provision_party
from xinrong.serde import PROTO_TO_FORM, PURPOSE_TO_PROTO, purpose_name
from xinrong.v1 import common_pb2, subject_pb2


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
    provision_party(ca, args.keys_dir, role="enterprise", party_id=code, overwrite=args.force)
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


# -- subject rights ------------------------------------------------------------------


def _print(doc: object, as_json: bool) -> None:
    print(json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=None if as_json else 2))


def cmd_data(args: argparse.Namespace) -> int:
    """Everything held on us: every provider's report (checked against its signature) and the node's public records."""
    with SubjectClient(args.node, load_party(args.credentials)) as client:
        data = client.own_data()
    _print(data.to_json(), args.json)
    return 0


def _cases(args: argparse.Namespace, kind: int) -> int:
    with SubjectClient(args.node, load_party(args.credentials)) as client:
        cases = client.cases(kind)
    _print({"cases": [case_json(c) for c in cases]}, args.json)
    return 0


def _file(args: argparse.Namespace, kind: int) -> int:
    evidence = b""
    name = ""
    if args.evidence:
        path = Path(args.evidence)
        if path.stat().st_size > subj.MAX_EVIDENCE_BYTES:
            raise ValidationError(f"{path} is larger than {subj.MAX_EVIDENCE_BYTES} bytes")
        evidence, name = path.read_bytes(), path.name
    with SubjectClient(args.node, load_party(args.credentials)) as client:
        resp = client.file_case(
            kind=kind, field=args.field, statement=args.statement, evidence=evidence, evidence_name=name
        )
    _print(
        {"id": resp.case_id, "state": subject_pb2.CaseState.Name(resp.state).removeprefix("CASE_STATE_").lower()},
        args.json,
    )
    return 0


def cmd_consents_list(args: argparse.Namespace) -> int:
    with SubjectClient(args.node, load_party(args.credentials)) as client:
        consents = client.list_consents()
    _print(
        {
            "consents": [
                {
                    "consent_id": c.consent_id,
                    "grantee": c.grantee_id,
                    "purpose": purpose_name(c.purpose),
                    "state": common_pb2.ConsentState.Name(c.state).removeprefix("CONSENT_STATE_").lower(),
                    "uses": c.uses,
                    "max_uses": c.max_uses,
                    "valid_until": c.valid_until,
                    "fields": list(c.fields),
                }
                for c in consents
            ]
        },
        args.json,
    )
    return 0


def _change(args: argparse.Namespace, *, pause: bool) -> int:
    with SubjectClient(args.node, load_party(args.credentials)) as client:
        resp = client.change_state(_consent_id(args), pause=pause)
    _print(
        {
            "consent_id": resp.consent_id,
            "state": common_pb2.ConsentState.Name(resp.state),
            "providers_notified": list(resp.providers_notified),
        },
        True,
    )
    return 0


def _subject_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
    p.add_argument("--node", required=True, help="node address host:port")
    p.add_argument("--json", action="store_true", help="one-line JSON output")


def _register_subject(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "data",
        help="all data held on this enterprise: every provider's report (sealed to it) and the node's public records (free)",
    )
    _subject_args(p)
    p.set_defaults(func=cmd_data)
    for noun, kind, verb, what in (
        ("objections", subject_pb2.CASE_KIND_OBJECTION, "file", "object to a field (异议申诉)"),
        ("repairs", subject_pb2.CASE_KIND_REPAIR, "apply", "apply for credit repair of a negative record (信用修复)"),
    ):
        group = sub.add_parser(noun, help=f"{noun}: {verb}, list")
        gsub = group.add_subparsers(dest=f"{noun}_cmd", metavar="COMMAND")
        gsub.required = True
        p = gsub.add_parser("list", help=f"this enterprise's {noun} with status and history")
        _subject_args(p)
        p.set_defaults(func=lambda a, k=kind: _cases(a, k))
        p = gsub.add_parser(verb, help=what)
        _subject_args(p)
        p.add_argument("--field", required=True, help="catalog field, e.g. tax.in_arrears")
        p.add_argument("--statement", required=True, help=f"why (up to {subj.MAX_STATEMENT_CHARS} characters)")
        p.add_argument("--evidence", help=f"evidence file (up to {subj.MAX_EVIDENCE_BYTES} bytes)")
        p.set_defaults(func=lambda a, k=kind: _file(a, k))
    group = sub.add_parser("consents", help="list, pause, resume, revoke this enterprise's consents")
    gsub = group.add_subparsers(dest="consents_cmd", metavar="COMMAND")
    gsub.required = True
    p = gsub.add_parser("list", help="consents with state and uses")
    _subject_args(p)
    p.set_defaults(func=cmd_consents_list)
    for name, func, help_text in (
        ("pause", lambda a: _change(a, pause=True), "pause a consent (enterprise-signed; node and agents refuse it)"),
        ("resume", lambda a: _change(a, pause=False), "resume a paused consent"),
        ("revoke", cmd_revoke, "revoke a consent for good"),
    ):
        p = gsub.add_parser(name, help=help_text)
        p.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
        p.add_argument("--node", required=True, help="node address host:port")
        p.add_argument("--consent", type=Path, help="signed consent file")
        p.add_argument("--consent-id", help="the consent id, instead of --consent FILE")
        p.set_defaults(func=func)


def _witness_path(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or args.credentials) / "witness.json"


def cmd_accesses(args: argparse.Namespace) -> int:
    """Who accessed my data: each entry shown only once its inclusion proof verified."""
    from xinrong.tlog.witness import Witness

    creds = load_party(args.credentials)
    with EnterpriseClient(args.node, creds, node_id=args.node_id, witness=Witness(_witness_path(args))) as client:
        entries = client.accesses()
    for entry in entries:
        doc = {
            "leaf_index": entry.leaf_index,
            "proof_verified": True,
            "tree_size": entry.tree_size,
            "time": dt.datetime.fromtimestamp(entry.ts_ms / 1000, dt.UTC).isoformat(),
            "institution": entry.caller_id,
            "caller_role": entry.caller_role,
            "method": entry.method,
            "request_id": entry.request_id,
            "consent_id": entry.consent_id,
            "providers": list(entry.providers),
            "fields": list(entry.fields),
            "claims_sha256": entry.claims_sha256,
            "decision": entry.decision,
            "reason": entry.reason,
        }
        print(json.dumps(doc, ensure_ascii=False))
    return 0


def cmd_audit_witness(args: argparse.Namespace) -> int:
    from xinrong.tlog.witness import SplitView, Witness, held_summary

    if args.gossip_from:
        if not args.node:
            raise SystemExit("--gossip-from needs --node (the log gives the consistency proof)")
        peer = Path(args.gossip_from).read_text()
        creds = load_party(args.credentials)
        with EnterpriseClient(args.node, creds, node_id=args.node_id, witness=Witness(_witness_path(args))) as client:
            try:
                print(json.dumps(client.node_log().gossip(peer), sort_keys=True))
            except SplitView as alarm:
                print(json.dumps({"split_view": alarm.evidence()}, sort_keys=True))
                return 2
        return 0
    print(json.dumps(held_summary(_witness_path(args)), indent=2))
    return 0


def register_cli(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="enterprise_cmd", metavar="COMMAND")
    sub.required = True
    from xinrong.enterprise.public_cli import register_public

    register_public(sub)
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
        choices=sorted(PURPOSE_TO_PROTO),
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
    _register_subject(sub)
    register_portal(sub)
    from xinrong.enterprise.demand_cli import register_cli as register_demand

    register_demand(sub)

    p = sub.add_parser("accesses", help="who accessed my data: every access decision, each proven in the node's log")
    p.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
    p.add_argument("--node", required=True, help="node address host:port")
    p.add_argument("--node-id", default="node", help="the node's party id (default node)")
    p.add_argument("--state-dir", default="", help="where the witness state lives (default: the credentials dir)")
    p.set_defaults(func=cmd_accesses)
    audit = sub.add_parser("audit", help="the node's transparency log as this enterprise sees it")
    asub = audit.add_subparsers(dest="audit_cmd", metavar="COMMAND")
    asub.required = True
    p = asub.add_parser("witness", help="the newest checkpoint of each log this enterprise holds")
    p.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
    p.add_argument("--state-dir", default="", help="where the witness state lives (default: the credentials dir)")
    p.add_argument(
        "--gossip-from",
        default="",
        help="another party's witness file or signed note: checked for consistency (exit 2 on a split view)",
    )
    p.add_argument("--node", default="", help="node address host:port (with --gossip-from)")
    p.add_argument("--node-id", default="node", help="the node's party id (default node)")
    p.set_defaults(func=cmd_audit_witness)

    from xinrong.enterprise.products_cli import register_cli as register_products

    register_products(sub)
