# ruff: noqa: RUF001  (Chinese labels use full-width punctuation)
"""The standardized credit report (标准化信用报告): model, canonical bytes, signature, offline check.

The node builds the report from two inputs only - the public records
providers pushed (aggregate-mode fields) and the enterprise's non-withdrawn
voluntary filings - and signs it with its Ed25519 key. The envelope is

    {"report": {...}, "signature": {"algorithm": "ed25519",
                                    "context": "xinrong.v1.CreditReport",
                                    "key_fingerprint": "sha256:<hex of the raw public key>",
                                    "value": "<base64>"}}

in the shape the renderers rely on (docs: the credit report schema). The
signature covers ``REPORT_CONTEXT || 0x00 || canonical_bytes(report)``: the
project's domain separation (``xinrong.keys.signing``), so a report
signature can never pass for a signature over another message type.

Offline verification needs two files the bank already holds or fetched once:
the platform CA certificate and the node's CA-signed binding. ``verify_envelope``
checks the binding against the CA, the fingerprint against the binding's key,
then the signature; it returns the report or raises ``SignatureError``.

Nothing here imports a party: the node builds, ``xinrong bank report verify``
checks, the renderer (``bank.report_render``) only reads the dict.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xinrong.catalog import Catalog
from xinrong.errors import SignatureError
from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.signing import SigningKey, VerifyKey
from xinrong.v1 import common_pb2

REPORT_FORMAT = "xinrong.credit_report.v1"
REPORT_CONTEXT = "xinrong.v1.CreditReport"
ALGORITHM = "ed25519"

DISCLAIMER_ZH = (
    "本报告仅依据公开信息及企业自主填报信息生成，不含任何需经企业授权方可查询的数据；"
    "自主填报信息由企业自行提供并作出信用承诺，平台未核实其真实性。"
)
DISCLAIMER_EN = (
    "Built only from public records and the enterprise's voluntary filings; it holds no data that needs the "
    "enterprise's consent. Self-reported items are the enterprise's own statements under its credit "
    "commitment; the platform has not verified them."
)

# (key, title_zh, title_en), in report order.
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("registration", "身份与登记信息", "Identity and registration"),
    ("judicial", "司法信息", "Judicial records"),
    ("administrative", "行政许可与行政处罚", "Administrative licences and penalties"),
    ("environmental", "环境信用", "Environmental credit"),
    ("certifications", "资质认定", "Certifications"),
    ("ip", "知识产权", "Intellectual property"),
    ("tax", "纳税信用", "Tax"),
    ("self_reported", "企业自主填报信息", "Voluntary filings (self-reported)"),
)
EMPTY_ZH = "无记录"
EMPTY_EN = "No records"

# Public fields shown in the report: field -> (section, label_zh, label_en).
# Any other aggregate field lands in its provider's natural section with the
# catalog description as its label (see _layout).
FIELD_LAYOUT: dict[str, tuple[str, str, str]] = {
    "market.status": ("registration", "登记状态", "Registration status"),
    "market.founded_on": ("registration", "成立日期", "Founded on"),
    "market.years_in_operation": ("registration", "经营年限", "Years in operation"),
    "market.region_code": ("registration", "登记机关行政区划", "Administrative division"),
    "market.industry_class": ("registration", "国民经济行业分类", "Industry class (GB/T 4754)"),
    "judicial.dishonest_debtor": ("judicial", "失信被执行人", "Dishonest judgment debtor"),
    "market.admin_licences": ("administrative", "有效行政许可", "Administrative licences in force"),
    "market.admin_penalties": ("administrative", "近三年行政处罚", "Administrative penalties, last 3 years"),
    "market.env_credit_rating": ("environmental", "环境信用评价等级", "Environmental credit rating"),
    "market.high_tech_enterprise": ("certifications", "高新技术企业", "High-and-new-technology enterprise"),
    "market.tech_sme": ("certifications", "科技型中小企业", "Technology-based SME"),
    "market.specialized_sme": ("certifications", "专精特新中小企业", "Specialised and innovative SME"),
    "market.software_copyrights": ("ip", "软件著作权登记", "Software copyright registrations"),
    "tax.grade_a_taxpayer": ("tax", "A级纳税人", "Grade-A taxpayer"),
}
_PROVIDER_SECTION = {"market": "registration", "judicial": "judicial", "tax": "tax"}

_DISPLAY: dict[str, dict[str, tuple[str, str]]] = {
    "market.status": {
        "in_business": ("存续（在营）", "In business"),
        "moved_out": ("迁出", "Moved out"),
        "revoked": ("吊销", "Licence revoked"),
        "cancelled": ("注销", "Deregistered"),
    },
    "market.env_credit_rating": {
        "green": ("绿牌（环保诚信）", "Green (trustworthy)"),
        "blue": ("蓝牌（良好）", "Blue (good)"),
        "yellow": ("黄牌（警示）", "Yellow (warning)"),
        "red": ("红牌（不良）", "Red (poor)"),
        "black": ("黑牌（严重失信）", "Black (seriously dishonest)"),
    },
}


@dataclass(frozen=True)
class SourcedValue:
    """One public record as the report reads it: value, source provider and data-as-of."""

    provider: str
    field: str
    value: Any
    as_of: str


@dataclass(frozen=True)
class FiledItems:
    """One non-withdrawn filing: its items, when it was signed, and the commitment it pinned."""

    filing_id: str
    items: Mapping[str, Any]
    signed_at: int
    commitment_sha256: str


def canonical_bytes(report: Mapping[str, Any]) -> bytes:
    """The signed bytes of a report: sorted keys, no whitespace, UTF-8."""
    return json.dumps(report, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def key_fingerprint(public_raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(public_raw).hexdigest()


def new_report_id() -> str:
    return "cr-" + uuid.uuid4().hex


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(int(ts), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _layout(catalog: Catalog, key: str) -> tuple[str, str, str]:
    known = FIELD_LAYOUT.get(key)
    if known is not None:
        return known
    spec = catalog.fields.get(key)
    provider = key.split(".")[0]
    label = spec.description if spec is not None else key
    return _PROVIDER_SECTION.get(provider, "registration"), label, label


def _display(key: str, value: Any, unit: str) -> tuple[str, str] | None:
    table = _DISPLAY.get(key)
    if table is not None and isinstance(value, str) and value in table:
        return table[value]
    if isinstance(value, bool):
        return ("是", "Yes") if value else ("否", "No")
    if isinstance(value, list):
        return ("、".join(value) or "无", ", ".join(value) or "none")
    if unit == "CNY" and isinstance(value, str):
        return (f"{value} 元", f"CNY {value}")
    return None


def _order(catalog: Catalog) -> dict[str, int]:
    keys = list(FIELD_LAYOUT) + [k for k in catalog.fields if k not in FIELD_LAYOUT]
    keys += list(catalog.self_reported)
    return {k: i for i, k in enumerate(keys)}


def build_report(
    *,
    catalog: Catalog,
    enterprise: str,
    name: str,
    records: Iterable[SourcedValue],
    filings: Sequence[FiledItems],
    issued_at: float,
    report_id: str,
    audit_leaf_index: int | None,
) -> dict[str, Any]:
    """The report dict (unsigned). Only aggregate-mode fields and self-reported items may appear."""
    order = _order(catalog)
    sections: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in SECTIONS}
    for rec in sorted(records, key=lambda r: (order.get(r.field, 1 << 30), r.field)):
        spec = catalog.fields.get(rec.field)
        if spec is None or spec.mode.value != "aggregate":
            raise ValueError(f"{rec.field} is not a public field: it cannot appear in a credit report")
        section, label_zh, label_en = _layout(catalog, rec.field)
        provider = catalog.providers[rec.provider]
        item: dict[str, Any] = {
            "field": rec.field,
            "label_zh": label_zh,
            "label_en": label_en,
            "value": rec.value,
            "source": rec.provider,
            "source_name_zh": provider.display_name_zh,
            "source_name_en": provider.display_name,
            "as_of": rec.as_of,
            "self_reported": False,
        }
        shown = _display(rec.field, rec.value, spec.unit)
        if shown is not None:
            item["display_zh"], item["display_en"] = shown
        sections[section].append(item)
    # Newest filing first wins per item; every item is marked self-reported.
    seen: set[str] = set()
    newest = sorted(filings, key=lambda f: (-f.signed_at, f.filing_id))
    for filing in newest:
        for key in sorted(filing.items, key=lambda k: order.get(k, 1 << 30)):
            if key in seen:
                continue
            seen.add(key)
            sr = catalog.self_reported[key]
            value = filing.items[key]
            entry: dict[str, Any] = {
                "field": key,
                "label_zh": sr.label_zh,
                "label_en": sr.label_en,
                "value": value,
                "source": "enterprise",
                "source_name_zh": "企业自主填报",
                "source_name_en": "Filed by the enterprise",
                "as_of": _iso(filing.signed_at)[:10],
                "self_reported": True,
            }
            shown = _display(key, value, sr.unit)
            if shown is not None:
                entry["display_zh"], entry["display_en"] = shown
            sections["self_reported"].append(entry)
    sections["self_reported"].sort(key=lambda e: order.get(e["field"], 1 << 30))
    commitment = None
    if newest:
        commitment = {"text_sha256": newest[0].commitment_sha256, "signed_at": _iso(newest[0].signed_at)}
    return {
        "format": REPORT_FORMAT,
        "report_id": report_id,
        "issued_at": _iso(issued_at),
        "issuer": "node",
        "enterprise": {"uscc": enterprise, "name": name},
        "audit_leaf_index": audit_leaf_index,
        "sections": [
            {
                "key": key,
                "title_zh": title_zh,
                "title_en": title_en,
                "items": sections[key],
                "empty_note_zh": EMPTY_ZH,
                "empty_note_en": EMPTY_EN,
            }
            for key, title_zh, title_en in SECTIONS
        ],
        "commitment": commitment,
        "disclaimer_zh": DISCLAIMER_ZH,
        "disclaimer_en": DISCLAIMER_EN,
    }


def sign_report(report: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """The signed envelope of a report."""
    signature = key.sign(REPORT_CONTEXT, canonical_bytes(report))
    return {
        "report": dict(report),
        "signature": {
            "algorithm": ALGORITHM,
            # What the Ed25519 signature covers: context || 0x00 || canonical_bytes(report).
            "context": REPORT_CONTEXT,
            "key_fingerprint": key_fingerprint(key.public_raw),
            "value": base64.b64encode(signature).decode("ascii"),
        },
    }


def verify_with_key(envelope: Mapping[str, Any], key: VerifyKey) -> dict[str, Any]:
    """Check an envelope against a known node key; the report dict, or SignatureError."""
    report, signature = envelope.get("report"), envelope.get("signature")
    if not isinstance(report, dict) or not isinstance(signature, dict):
        raise SignatureError("not a signed credit report envelope")
    if (
        report.get("format") != REPORT_FORMAT
        or signature.get("algorithm") != ALGORITHM
        or signature.get("context", REPORT_CONTEXT) != REPORT_CONTEXT
    ):
        raise SignatureError("unknown report format or signature algorithm")
    if signature.get("key_fingerprint") != key_fingerprint(key.raw):
        raise SignatureError("the report was signed by another key than the node's")
    try:
        value = base64.b64decode(str(signature.get("value", "")), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature value is not base64") from None
    key.verify(REPORT_CONTEXT, canonical_bytes(report), value)
    return report


def verify_envelope(
    envelope: Mapping[str, Any],
    *,
    ca_cert_pem: bytes,
    node_binding: common_pb2.SignedPartyBinding,
    node_id: str = "node",
    now: float | None = None,
) -> dict[str, Any]:
    """Offline check: the node's binding against the CA, then the signature. SignatureError on any failure."""
    binding: VerifiedBinding = verify_binding(
        CaVerifier(ca_cert_pem), node_binding, expect_role="node", expect_party_id=node_id, now=now
    )
    return verify_with_key(envelope, binding.verify_key)


def self_reported_items(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Items of the self_reported section (what the demo and tests count)."""
    for section in report.get("sections", []):
        if section.get("key") == "self_reported":
            return list(section.get("items", []))
    return []


__all__ = [
    "REPORT_CONTEXT",
    "REPORT_FORMAT",
    "SECTIONS",
    "FiledItems",
    "SourcedValue",
    "build_report",
    "canonical_bytes",
    "key_fingerprint",
    "new_report_id",
    "self_reported_items",
    "sign_report",
    "verify_envelope",
    "verify_with_key",
]
