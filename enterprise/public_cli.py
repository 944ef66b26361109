"""``xinrong enterprise report`` and ``xinrong enterprise filing``: the enterprise's own credit
report (free, through its own role) and its voluntary filings (自主填报) with the credit commitment.

    xinrong enterprise report --credentials DIR --node ADDR [--json] [--out F]
    xinrong enterprise filing submit --credentials DIR --node ADDR --item self.patents_held=4 [--item ...] --accept-commitment
    xinrong enterprise filing withdraw --credentials DIR --node ADDR --id FILING_ID
    xinrong enterprise filing list --credentials DIR --node ADDR

A filing is signed with the enterprise's own key and pins the catalog's
credit commitment text by its SHA-256; ``--accept-commitment`` is required
after the text is shown, so nobody files it by accident.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import grpc

from xinrong.catalog import default_catalog
from xinrong.errors import SignatureError, ValidationError
from xinrong.keys.binding import verify_binding
from xinrong.keys.layout import PartyCredentials, load_party
from xinrong.public import Filing, Withdrawal, coerce_item, new_filing_id, sign_filing, sign_withdrawal
from xinrong.report import verify_envelope
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import common_pb2, node_pb2, node_pb2_grpc, public_pb2, public_pb2_grpc


class _Public:
    """PublicService as this enterprise (its certificate is its identity)."""

    def __init__(self, node: str, creds: PartyCredentials, timeout: float = 10.0) -> None:
        self.creds = creds
        self.timeout = timeout
        self.channel = secure_channel(node, creds, server_role="node", server_id="node")
        self.stub = public_pb2_grpc.PublicServiceStub(self.channel)

    def call(self, method: str, request: Any, *, stub: Any = None) -> Any:
        try:
            return getattr(stub or self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None

    def __enter__(self) -> _Public:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()


def own_report(node: str, creds: PartyCredentials) -> dict[str, Any]:
    """The enterprise's own report, verified against the node's CA-checked binding."""
    with _Public(node, creds) as client:
        resp = client.call("GetCreditReport", public_pb2.GetCreditReportRequest(enterprise_uscc=creds.party_id))
        parties = client.call(
            "ListParties",
            node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_NODE),
            stub=node_pb2_grpc.NodeServiceStub(client.channel),
        )
    envelope: dict[str, Any] = json.loads(bytes(resp.envelope_json).decode("utf-8"))
    for signed in parties.bindings:
        try:
            verify_binding(creds.ca, signed, expect_role="node", expect_party_id="node")
        except SignatureError:
            continue
        verify_envelope(envelope, ca_cert_pem=creds.ca_cert_pem, node_binding=signed)
        return envelope
    raise SignatureError("the node returned no CA-verified binding of itself")


def submit_filing(node: str, creds: PartyCredentials, items: dict[str, Any]) -> dict[str, Any]:
    catalog = default_catalog()
    if catalog.commitment is None:
        raise ValidationError("the catalog has no credit commitment text")
    filing = Filing(
        filing_id=new_filing_id(),
        enterprise=creds.party_id,
        items=items,
        commitment_version=catalog.commitment.version,
        commitment_sha256=catalog.commitment.sha256,
        signed_at=int(time.time()),
    )
    raw, sig = sign_filing(creds.signing_key, filing)
    binding = creds.binding.signed.SerializeToString(deterministic=True)
    with _Public(node, creds) as client:
        resp = client.call(
            "FileSelfReport", public_pb2.FileSelfReportRequest(filing=raw, signature=sig, enterprise_binding=binding)
        )
    return {
        "filing_id": resp.filing_id,
        "already_filed": resp.already_filed,
        "items": sorted(items),
        "commitment_sha256": filing.commitment_sha256,
        "audit_leaf_index": resp.audit_leaf_index if resp.HasField("audit_leaf_index") else None,
    }


def withdraw_filing(node: str, creds: PartyCredentials, filing_id: str) -> dict[str, Any]:
    raw, sig = sign_withdrawal(creds.signing_key, Withdrawal(filing_id, creds.party_id, int(time.time())))
    binding = creds.binding.signed.SerializeToString(deterministic=True)
    with _Public(node, creds) as client:
        resp = client.call(
            "WithdrawFiling",
            public_pb2.WithdrawFilingRequest(withdrawal=raw, signature=sig, enterprise_binding=binding),
        )
    return {"filing_id": resp.filing_id, "already_withdrawn": resp.already_withdrawn}


def _parse_items(texts: list[str]) -> dict[str, Any]:
    catalog = default_catalog()
    items: dict[str, Any] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        spec = catalog.self_reported.get(key.strip())
        if not sep or spec is None:
            known = ", ".join(sorted(catalog.self_reported))
            raise ValidationError(f"--item {text!r}: expected KEY=VALUE with KEY one of {known}")
        items[spec.key] = coerce_item(spec, value.strip())
    return items


def cmd_own_report(args: argparse.Namespace) -> int:
    envelope = own_report(args.node, load_party(args.credentials))
    _write(envelope, args)
    return 0


def _write(envelope: dict[str, Any], args: argparse.Namespace) -> None:
    # Printable forms are the bank's renderer (bank.report_render), which a
    # party may not import: the enterprise saves the JSON and renders it there.
    text = json.dumps(envelope, ensure_ascii=False, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)


def cmd_filing_submit(args: argparse.Namespace) -> int:
    catalog = default_catalog()
    assert catalog.commitment is not None
    if not args.accept_commitment:
        print(
            f"credit commitment {catalog.commitment.version}:\n  {catalog.commitment.text_zh}\n  {catalog.commitment.text_en}"
        )
        raise ValidationError("re-run with --accept-commitment to sign the filing with this commitment")
    print(
        json.dumps(submit_filing(args.node, load_party(args.credentials), _parse_items(args.item)), ensure_ascii=False)
    )
    return 0


def cmd_filing_withdraw(args: argparse.Namespace) -> int:
    print(json.dumps(withdraw_filing(args.node, load_party(args.credentials), args.id)))
    return 0


def cmd_filing_list(args: argparse.Namespace) -> int:
    creds = load_party(args.credentials)
    with _Public(args.node, creds) as client:
        resp = client.call("ListFilings", public_pb2.ListFilingsRequest())
    out = []
    for f in resp.filings:
        doc = json.loads(bytes(f.filing).decode("utf-8"))
        out.append(
            {
                "filing_id": f.filing_id,
                "items": doc["items"],
                "filed_ms": f.filed_ms,
                "withdrawn": f.withdrawn_ms > 0,
            }
        )
    print(json.dumps(out, ensure_ascii=False))
    return 0


def register_public(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def conn(p: argparse.ArgumentParser) -> None:
        p.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
        p.add_argument("--node", required=True, help="node address host:port")

    p = sub.add_parser("report", help="this enterprise's own standardized credit report (free), node-signed")
    conn(p)
    p.add_argument("--json", action="store_true", help="print the signed envelope as one JSON line (the default)")
    p.add_argument("--out", default="", help="write the signed envelope to this file instead")
    p.set_defaults(func=cmd_own_report)
    group = sub.add_parser(
        "filing", help="voluntary filings (自主填报) with the credit commitment: submit, withdraw, list"
    )
    gsub = group.add_subparsers(dest="filing_cmd", metavar="COMMAND")
    gsub.required = True
    p = gsub.add_parser("submit", help="sign and file self-reported items with the credit commitment")
    conn(p)
    p.add_argument("--item", action="append", required=True, help="KEY=VALUE, e.g. self.patents_held=4; repeatable")
    p.add_argument("--accept-commitment", action="store_true", help="sign the catalog's credit commitment text")
    p.set_defaults(func=cmd_filing_submit)
    p = gsub.add_parser("withdraw", help="withdraw a filing (logged; later reports omit it)")
    conn(p)
    p.add_argument("--id", required=True, help="the filing id")
    p.set_defaults(func=cmd_filing_withdraw)
    p = gsub.add_parser("list", help="this enterprise's filings, withdrawn ones included")
    conn(p)
    p.set_defaults(func=cmd_filing_list)


__all__ = ["own_report", "register_public", "submit_filing", "withdraw_filing"]
