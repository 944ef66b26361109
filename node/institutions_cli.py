"""``xinrong node institutions``: onboard, list, suspend, resume and assess access institutions.

    xinrong node institutions add     --config node.toml --keys KEYS --id bank-c --name "Bank C" --type bank [--out DIR]
    xinrong node institutions list    --config node.toml
    xinrong node institutions show    --config node.toml --id bank-c
    xinrong node institutions suspend --config node.toml --id bank-c --reason "..."
    xinrong node institutions resume  --config node.toml --id bank-c
    xinrong node institutions assess  --config node.toml --id bank-c --result pass --valid-until 2027-06-30 --assessor "..."
    xinrong node institutions due     --config node.toml --days 30
    xinrong node institutions quota   --config node.toml --id bank-c --method Verify --rate 5 --burst 10
    xinrong node institutions usage   --config node.toml --id bank-a [--since 2026-12-01]

Every command talks to the running node (``InstitutionAdminService``) with
the node's own credentials, named by the node config: the service admits
only the node's own identity (see ``xinrong.node.institutions_servicer``).
A command that wrote the database directly would not work beside a running
node on SQLite (the node holds its write lock; see ``xinrong.node.db``), and
on PostgreSQL a direct write would skip the checks and the audit entry the
node makes. ``--address`` names the node (default: the config's ``bind``;
several, comma-separated, for replicas).

``add`` runs where the CA is: it issues the institution's TLS certificate,
signing and sealing keys and the CA-signed binding with ``xinrong.keys``
(exactly as ``xinrong keys issue`` does; the CA key stays in ``KEYS/ca``),
registers the binding at the node, and leaves the credentials directory
``KEYS/institutions/<id>`` (or a copy in ``--out``) to hand over.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from xinrong import ids
from xinrong.config import ConfigError
from xinrong.keys.layout import load_ca, load_party, party_dir, provision_party
from xinrong.node.config import INSTITUTION_TYPES, load_config
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import RemoteError, decode_rpc_error
from xinrong.v1 import institutions_pb2 as pb
from xinrong.v1 import institutions_pb2_grpc

TIMEOUT = 15.0


def _when(text: str) -> int:
    """Unix seconds from YYYY-MM-DD (UTC midnight), an ISO time, or digits."""
    seconds = ids.decimal(text)
    if seconds is not None:
        return seconds
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{text!r}: give a date YYYY-MM-DD, an ISO time or Unix seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp())


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stub(args: argparse.Namespace) -> tuple[Any, Any]:
    config = load_config(args.config)
    creds = load_party(config.credentials, ca_cert=config.ca_cert)
    address = args.address or config.bind
    if address.endswith(":0"):
        raise ConfigError("the config binds port 0: name the running node with --address HOST:PORT")
    channel = secure_channel(address, creds, server_role="node", server_id=creds.party_id)
    return channel, institutions_pb2_grpc.InstitutionAdminServiceStub(channel)


def institution_json(inst: pb.Institution) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": inst.institution_id,
        "name": inst.name,
        "type": pb.InstitutionType.Name(inst.type).removeprefix("INSTITUTION_TYPE_").lower(),
        "status": pb.InstitutionStatus.Name(inst.status).removeprefix("INSTITUTION_STATUS_").lower(),
        "since": _iso(inst.status_since_ms / 1000),
        "source": inst.source,
    }
    if inst.status == pb.INSTITUTION_STATUS_SUSPENDED:
        out.update(reason=inst.status_reason, suspended_by=inst.suspended_by)
    if inst.HasField("assessment"):
        a = inst.assessment
        out["assessment"] = {
            "assessed_at": _iso(a.assessed_at),
            "result": pb.AssessmentResult.Name(a.result).removeprefix("ASSESSMENT_RESULT_").lower(),
            "valid_until": _iso(a.valid_until),
            "assessor": a.assessor,
        }
    if inst.quota_overrides:
        out["quota_overrides"] = {q.method: {"rate": q.rate, "burst": q.burst} for q in inst.quota_overrides}
    return out


def _print(insts: list[pb.Institution], as_json: bool) -> None:
    for inst in insts:
        data = institution_json(inst)
        if as_json:
            print(json.dumps(data, ensure_ascii=False))
            continue
        assessed = data.get("assessment")
        note = f"{assessed['result']} until {assessed['valid_until'][:10]}" if assessed else "no assessment"
        why = f"  ({data['suspended_by']}: {data['reason']})" if "reason" in data else ""
        print(f"{data['id']:20s} {data['type']:14s} {data['status']:10s} {note:28s} {data['name']}{why}")


def _call(args: argparse.Namespace, method: str, request: Any) -> Any:
    channel, stub = _stub(args)
    try:
        return getattr(stub, method)(request, timeout=TIMEOUT)
    except Exception as exc:
        import grpc

        if isinstance(exc, grpc.RpcError):
            raise decode_rpc_error(exc) from None
        raise
    finally:
        channel.close()


def _add(args: argparse.Namespace) -> int:
    keys = Path(args.keys)
    ca = load_ca(keys)
    directory = party_dir(keys, "institution", args.id)
    if (directory / "binding.pb").exists() and not args.force:
        print(f"{directory} already holds credentials; --force replaces them", file=sys.stderr)
        return 2
    provision_party(ca, keys, role="institution", party_id=args.id, overwrite=args.force)
    creds = load_party(directory)
    type_value = pb.InstitutionType.Name(pb.InstitutionType.Value(f"INSTITUTION_TYPE_{args.type.upper()}"))
    got = _call(
        args,
        "RegisterInstitution",
        pb.RegisterInstitutionRequest(binding=creds.binding.signed, name=args.name, type=type_value),
    )
    handed = directory
    if args.out:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()) and not args.force:
            print(f"{out} is not empty; --force replaces it", file=sys.stderr)
            return 2
        shutil.copytree(directory, out, dirs_exist_ok=True)
        handed = out
    data = institution_json(got.institution)
    data["credentials"] = str(handed)
    print(json.dumps(data, ensure_ascii=False))
    return 0


def _list(args: argparse.Namespace) -> int:
    _print(list(_call(args, "ListInstitutions", pb.ListInstitutionsRequest()).institutions), args.json)
    return 0


def _show(args: argparse.Namespace) -> int:
    got = _call(args, "GetInstitution", pb.GetInstitutionRequest(institution_id=args.id))
    print(json.dumps(institution_json(got.institution), ensure_ascii=False, indent=None if args.json else 2))
    return 0


def _suspend(args: argparse.Namespace) -> int:
    got = _call(args, "SuspendInstitution", pb.SuspendInstitutionRequest(institution_id=args.id, reason=args.reason))
    print(json.dumps(institution_json(got.institution), ensure_ascii=False))
    return 0


def _resume(args: argparse.Namespace) -> int:
    got = _call(args, "ResumeInstitution", pb.ResumeInstitutionRequest(institution_id=args.id))
    print(json.dumps(institution_json(got.institution), ensure_ascii=False))
    return 0


def _assess(args: argparse.Namespace) -> int:
    assessment = pb.SecurityAssessment(
        assessed_at=_when(args.date) if args.date else 0,
        result=pb.ASSESSMENT_RESULT_PASS if args.result == "pass" else pb.ASSESSMENT_RESULT_FAIL,
        valid_until=_when(args.valid_until),
        assessor=args.assessor,
    )
    got = _call(args, "RecordAssessment", pb.RecordAssessmentRequest(institution_id=args.id, assessment=assessment))
    print(json.dumps(institution_json(got.institution), ensure_ascii=False))
    return 0


def _due(args: argparse.Namespace) -> int:
    got = _call(args, "ListDueAssessments", pb.ListDueAssessmentsRequest(within_days=args.days))
    _print(list(got.institutions), args.json)
    return 0


def _quota(args: argparse.Namespace) -> int:
    quota = pb.QuotaOverride(method=args.method, rate=0.0 if args.clear else args.rate, burst=args.burst)
    got = _call(args, "SetQuota", pb.SetQuotaRequest(institution_id=args.id, quota=quota))
    print(json.dumps(institution_json(got.institution), ensure_ascii=False))
    return 0


def _usage(args: argparse.Namespace) -> int:
    since = _when(args.since) if args.since else 0
    got = _call(args, "GetInstitutionUsage", pb.GetInstitutionUsageRequest(institution_id=args.id, since=since))
    by: dict[str, Counter[str]] = {"purpose": Counter(), "provider": Counter(), "decision": Counter(), "day": Counter()}
    for c in got.counts:
        by["purpose"][c.purpose] += c.count
        by["provider"][c.provider or "-"] += c.count
        by["decision"][c.decision] += c.count
        by["day"][c.day] += c.count
    # Provider counts are per provider consulted: a request to two providers counts under each.
    summary = {"id": args.id, "since": _iso(since) if since else "7 days", "rows": got.total}
    summary.update({k: dict(sorted(v.items())) for k, v in by.items()})
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    print(f"{args.id}: {got.total} audited rows since {summary['since']}")
    for key in ("purpose", "provider", "decision", "day"):
        print(f"  by {key}: " + ", ".join(f"{k}={v}" for k, v in by[key].items()))
    return 0


def _run(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except RemoteError as exc:
            print(f"node refused: {exc}", file=sys.stderr)
            return 1

    return wrapped


def register_cli(sub: Any) -> None:
    """``institutions`` under ``xinrong node``."""
    p = sub.add_parser("institutions", help="access institutions: onboard, suspend, assess, quotas, usage")
    verbs = p.add_subparsers(dest="institutions_verb", metavar="COMMAND")
    verbs.required = True

    def verb(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        v: argparse.ArgumentParser = verbs.add_parser(name, help=help_text)
        v.add_argument("--config", required=True, help="node TOML config (the node's credentials and CA certificate)")
        v.add_argument("--address", default="", help="the running node, HOST:PORT[,HOST:PORT] (default: [node].bind)")
        v.add_argument("--json", action="store_true", help="JSON lines")
        v.set_defaults(func=_run(func))
        return v

    v = verb("add", "issue credentials with the CA and register a new institution at the running node", _add)
    v.add_argument("--keys", required=True, help="keys directory holding the platform CA (ca/ca.key)")
    v.add_argument("--id", required=True, help="institution id, e.g. bank-c")
    v.add_argument("--name", default="", help="display name")
    v.add_argument("--type", required=True, choices=INSTITUTION_TYPES, help="kind of institution")
    v.add_argument("--out", default="", help="also copy the credentials directory here, to hand over")
    v.add_argument("--force", action="store_true", help="replace existing credentials of this id")
    verb("list", "every institution with its status and assessment", _list)
    v = verb("show", "one institution", _show)
    v.add_argument("--id", required=True, help="institution id")
    v = verb("suspend", "refuse every call of the institution on every replica; close its streams", _suspend)
    v.add_argument("--id", required=True, help="institution id")
    v.add_argument("--reason", required=True, help="why (kept in the registry and the audit log, not told to the bank)")
    v = verb("resume", "lift a suspension", _resume)
    v.add_argument("--id", required=True, help="institution id")
    v = verb("assess", "record the latest security assessment (fail or expired: suspended)", _assess)
    v.add_argument("--id", required=True, help="institution id")
    v.add_argument("--result", required=True, choices=("pass", "fail"), help="the assessment's result")
    v.add_argument("--valid-until", required=True, help="YYYY-MM-DD (UTC) the assessment holds until")
    v.add_argument("--assessor", required=True, help="who assessed")
    v.add_argument("--date", default="", help="assessment date (default: now)")
    v = verb("due", "institutions whose assessment expires within --days (or never was)", _due)
    v.add_argument("--days", type=int, default=30, help="horizon in days (default 30)")
    v = verb("quota", "set (or --clear) one per-institution rate limit override", _quota)
    v.add_argument("--id", required=True, help="institution id")
    v.add_argument("--method", required=True, help="RPC name, e.g. Verify, or '*'")
    v.add_argument("--rate", type=float, default=1.0, help="calls per second")
    v.add_argument("--burst", type=float, default=1.0, help="calls at once")
    v.add_argument("--clear", action="store_true", help="remove this override")
    v = verb("usage", "counts by purpose, provider, decision and day, from the audit log", _usage)
    v.add_argument("--id", required=True, help="institution id")
    v.add_argument("--since", default="", help="YYYY-MM-DD or ISO time (default: 7 days ago)")


__all__ = ["institution_json", "register_cli"]
