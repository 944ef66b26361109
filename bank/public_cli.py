"""``xinrong bank report``: the standardized credit report, fetched and checked, or checked offline.

    xinrong bank report --enterprise USCC --credentials DIR --node ADDR [--json] [--html F] [--pdf F] [--lang zh|en]
    xinrong bank report verify --in report.json [--credentials DIR | --ca-cert F --node-binding F]

Fetching also fetches the node's binding, checks it against the platform CA
and keeps it in the credentials directory (``node_binding.pb``): from then
on a report verifies offline with two files the bank holds, the CA
certificate and that binding. Every fetched report is verified before it is
printed or rendered. Rendering (``--html``, ``--pdf``) is
``xinrong.bank.report_render``'s, imported only when asked for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import grpc

from xinrong.errors import SignatureError, ValidationError
from xinrong.keys.binding import verify_binding
from xinrong.keys.layout import load_party, read_binding_file
from xinrong.report import verify_envelope
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import common_pb2, node_pb2, node_pb2_grpc, public_pb2, public_pb2_grpc

NODE_BINDING_FILE = "node_binding.pb"


def fetch_report(
    node: str, credentials_dir: Path, enterprise: str, *, timeout: float = 10.0, node_id: str = "node"
) -> dict[str, Any]:
    """GetCreditReport, the node's CA-checked binding kept beside the credentials, the envelope verified."""
    creds = load_party(credentials_dir)
    channel = secure_channel(node, creds, server_role="node", server_id=node_id)
    try:
        try:
            resp = public_pb2_grpc.PublicServiceStub(channel).GetCreditReport(
                public_pb2.GetCreditReportRequest(enterprise_uscc=enterprise), timeout=timeout
            )
            parties = node_pb2_grpc.NodeServiceStub(channel).ListParties(
                node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_NODE), timeout=timeout
            )
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None
    finally:
        channel.close()
    envelope: dict[str, Any] = json.loads(bytes(resp.envelope_json).decode("utf-8"))
    binding = None
    for signed in parties.bindings:
        try:
            verify_binding(creds.ca, signed, expect_role="node", expect_party_id=node_id)
        except SignatureError:
            continue
        binding = signed
        break
    if binding is None:
        raise SignatureError(f"the node returned no CA-verified binding for {node_id!r}")
    verify_envelope(envelope, ca_cert_pem=creds.ca_cert_pem, node_binding=binding, node_id=node_id)
    (credentials_dir / NODE_BINDING_FILE).write_bytes(binding.SerializeToString(deterministic=True))
    return envelope


def verify_file(path: Path, *, ca_cert: Path, node_binding: Path, node_id: str = "node") -> dict[str, Any]:
    """Offline: the report of a saved envelope, or SignatureError."""
    try:
        envelope = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationError(f"cannot read {path}: {exc}") from None
    if not isinstance(envelope, dict):
        raise SignatureError(f"{path} is not a signed credit report")
    return verify_envelope(
        envelope, ca_cert_pem=ca_cert.read_bytes(), node_binding=read_binding_file(node_binding), node_id=node_id
    )


def summary_lines(envelope: dict[str, Any], lang: str) -> list[str]:
    report = envelope["report"]
    zh = lang == "zh"
    lines = [f"{report['report_id']}  {report['enterprise']['uscc']}  issued {report['issued_at']}"]
    for section in report["sections"]:
        lines.append(f"[{section['title_zh'] if zh else section['title_en']}]")
        if not section["items"]:
            lines.append("  " + (section["empty_note_zh"] if zh else section["empty_note_en"]))
        for item in section["items"]:
            label = item["label_zh"] if zh else item["label_en"]
            shown = item.get("display_zh" if zh else "display_en", item["value"])
            mark = " (self-reported)" if item["self_reported"] else ""
            lines.append(f"  {label}: {shown}{mark}   [{item['source']}, as of {item['as_of']}]")
    fp = envelope["signature"]["key_fingerprint"]
    lines.append(f"signature ok (node key {fp}); audit leaf {report['audit_leaf_index']}")
    return lines


def write_outputs(envelope: dict[str, Any], args: argparse.Namespace) -> None:
    """--json, --html, --pdf, or a plain summary."""
    if args.html or args.pdf:
        from xinrong.bank.report_render import render_html, render_pdf  # type: ignore[import-not-found,unused-ignore]

        if args.html:
            Path(args.html).write_text(render_html(envelope, lang=args.lang), encoding="utf-8")
        if args.pdf:
            render_pdf(envelope, Path(args.pdf), lang=args.lang)
    if args.json:
        print(json.dumps(envelope, ensure_ascii=False, sort_keys=True))
    elif not (args.html or args.pdf):
        print("\n".join(summary_lines(envelope, args.lang)))


def cmd_report(args: argparse.Namespace) -> int:
    from xinrong.bank.cli import node_connection

    if not args.enterprise:
        raise ValidationError("give --enterprise USCC (or the verify command)")
    node, creds = node_connection(args)
    write_outputs(fetch_report(node, creds, args.enterprise, timeout=args.timeout), args)
    return 0


def cmd_report_verify(args: argparse.Namespace) -> int:
    creds = Path(args.credentials) if args.credentials else None
    ca_cert = Path(args.ca_cert) if args.ca_cert else (creds / "ca.crt" if creds else None)
    binding = Path(args.node_binding) if args.node_binding else (creds / NODE_BINDING_FILE if creds else None)
    if ca_cert is None or binding is None:
        raise ValidationError("give --credentials DIR, or --ca-cert and --node-binding")
    report = verify_file(Path(args.input), ca_cert=ca_cert, node_binding=binding)
    print(
        json.dumps(
            {
                "verified": True,
                "report_id": report["report_id"],
                "enterprise": report["enterprise"]["uscc"],
                "issued_at": report["issued_at"],
                "audit_leaf_index": report["audit_leaf_index"],
            }
        )
    )
    return 0


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the signed envelope as one JSON line")
    p.add_argument("--html", default="", help="write a printable HTML report here")
    p.add_argument("--pdf", default="", help="write an A4 PDF report here")
    p.add_argument("--lang", choices=("zh", "en"), default="zh", help="labels of the printable forms (default zh)")


def register_report(sub: argparse._SubParsersAction, add_connection_args: Any) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="the standardized credit report (public records + filings), node-signed")
    add_connection_args(p)
    p.add_argument("--enterprise", default="", help="the enterprise's USCC")
    add_output_args(p)
    p.set_defaults(func=cmd_report)
    rsub = p.add_subparsers(dest="report_cmd", metavar="COMMAND")
    v = rsub.add_parser("verify", help="check a saved report offline: node binding against the CA, then the signature")
    v.add_argument("--in", dest="input", required=True, help="the report JSON (the output of --json)")
    v.add_argument("--credentials", default="", help="credentials dir holding ca.crt and node_binding.pb")
    v.add_argument("--ca-cert", default="", help="the platform CA certificate (instead of --credentials)")
    v.add_argument("--node-binding", default="", help="the node's binding.pb (instead of --credentials)")
    v.set_defaults(func=cmd_report_verify)


__all__ = ["NODE_BINDING_FILE", "fetch_report", "register_report", "summary_lines", "verify_file", "write_outputs"]
