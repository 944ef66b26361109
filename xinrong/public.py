"""Wire forms of public-record batches and voluntary filings, shared by signer and verifier.

A provider pushes its aggregate-mode fields to the node as *batches*; an
enterprise files self-reported items as a *filing* and may withdraw it. Each
is canonical JSON (sorted keys, no whitespace, UTF-8) signed with Ed25519
under its own domain-separation context (``xinrong.keys.signing``). The
signed bytes travel as they are and the receiver re-encodes the parsed value
and refuses any difference, so there is exactly one byte string per batch:
that is what makes a re-sent batch recognisable (idempotent publish) and a
signature meaningful to a third party later.

``parse_batch`` is the node's gate for "non-aggregate fields never reach the
node": a batch naming any field that is not an aggregate-mode field of the
signing provider is refused whole.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from xinrong import uscc
from xinrong.catalog import Catalog, FieldSpec, FieldType, SelfReportedSpec, SelfReportedType, SharingMode
from xinrong.errors import ValidationError
from xinrong.keys.signing import SigningKey, VerifyKey

BATCH_FORMAT = "xinrong.public_batch.v1"
FILING_FORMAT = "xinrong.filing.v1"
WITHDRAWAL_FORMAT = "xinrong.filing_withdrawal.v1"
BATCH_CONTEXT = "xinrong.v1.PublicBatch"
FILING_CONTEXT = "xinrong.v1.SelfReportFiling"
WITHDRAWAL_CONTEXT = "xinrong.v1.FilingWithdrawal"

# Bounds of what a batch or filing may carry (the node refuses more before
# touching its store). A batch of 1,000 market records is ~400 KB.
MAX_BATCH_RECORDS = 2000
MAX_BATCH_BYTES = 2 * 1024 * 1024
MAX_FILING_BYTES = 32 * 1024
MAX_SIGNATURE_BYTES = 64
MAX_BINDING_BYTES = 8 * 1024
MAX_FILING_ITEMS = 64

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_DECIMAL = re.compile(r"\d{1,15}(\.\d{1,4})?\Z")
_FILING_ID = re.compile(r"[0-9a-f]{32}\Z")

Value = bool | int | str | list[str]


def canonical_json(doc: Any) -> bytes:
    """The one encoding every signed document here uses."""
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _loads(raw: bytes, what: str, limit: int) -> dict[str, Any]:
    if len(raw) > limit:
        raise ValidationError(f"{what} is {len(raw)} bytes, over {limit}", public=f"the {what} is too large")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValidationError(f"{what} is not UTF-8 JSON", public=f"the {what} is not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise ValidationError(f"{what} is not a JSON object", public=f"the {what} is not a JSON object")
    if canonical_json(doc) != raw:
        raise ValidationError(f"{what} is not in canonical form", public=f"the {what} is not canonical JSON")
    return doc


def _keys(doc: dict[str, Any], expected: set[str], what: str) -> None:
    if set(doc) != expected:
        raise ValidationError(f"{what} keys {sorted(doc)} != {sorted(expected)}", public=f"the {what} is malformed")


def _bad(what: str, detail: str) -> ValidationError:
    return ValidationError(f"{what}: {detail}", public=f"{what}: {detail}")


def _check_uscc(code: object, what: str) -> str:
    if not isinstance(code, str) or not uscc.is_valid(code):
        raise _bad(what, "not a valid USCC")
    return code


# ------------------------------------------------------------------ batches


@dataclass(frozen=True)
class PublicRecord:
    """One enterprise's public fields at one provider; ``values`` None: the enterprise left the list."""

    uscc: str
    values: dict[str, Value] | None


@dataclass(frozen=True)
class PublicBatch:
    """One version of a provider's public records.

    ``base_version`` is the version this batch is incremental on (the
    provider's last version acknowledged by the node); ``replace`` True means
    the node drops every record of the provider before applying (a full
    resend, when the provider lost its publish state).
    """

    provider: str
    period: str
    version: int
    base_version: int
    records: tuple[PublicRecord, ...]
    replace: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BATCH_FORMAT,
            "provider": self.provider,
            "period": self.period,
            "version": self.version,
            "base_version": self.base_version,
            "replace": self.replace,
            "records": [{"uscc": r.uscc, "values": r.values} for r in self.records],
        }


def batch_bytes(batch: PublicBatch) -> bytes:
    """Canonical bytes of a batch; records must already be in USCC order."""
    return canonical_json(batch.to_json())


def sign_batch(key: SigningKey, batch: PublicBatch) -> tuple[bytes, bytes]:
    raw = batch_bytes(batch)
    return raw, key.sign(BATCH_CONTEXT, raw)


def field_value(spec: FieldSpec, value: object) -> Value:
    """A field's value in a batch, as the agent store holds it; ValidationError if it does not fit."""
    where = f"field {spec.key}"
    if spec.type is FieldType.BOOL:
        if not isinstance(value, bool):
            raise _bad(where, "expected true or false")
        return value
    if spec.type is FieldType.ENUM:
        if not isinstance(value, str) or value not in spec.values:
            raise _bad(where, "not one of the catalog's values")
        return value
    if spec.type is FieldType.INT:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**15:
            raise _bad(where, "expected a whole number")
        return value
    if spec.type is FieldType.DECIMAL:
        if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
            raise _bad(where, "expected a decimal string")
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise _bad(where, "expected a YYYY-MM-DD date")
    return value


def parse_batch(raw: bytes, catalog: Catalog) -> PublicBatch:
    """Validate a batch strictly: only aggregate fields of its provider, valid USCCs in order, canonical bytes."""
    doc = _loads(raw, "batch", MAX_BATCH_BYTES)
    _keys(doc, {"format", "provider", "period", "version", "base_version", "replace", "records"}, "batch")
    if doc["format"] != BATCH_FORMAT:
        raise _bad("batch", f"format must be {BATCH_FORMAT}")
    provider = doc["provider"]
    if not isinstance(provider, str) or provider not in catalog.providers:
        raise _bad("batch", "provider is not in the catalog")
    public = {s.key: s for s in catalog.provider_fields(provider) if s.mode is SharingMode.AGGREGATE}
    if not public:
        raise _bad("batch", f"provider {provider} holds no aggregate-mode field")
    period = doc["period"]
    if not isinstance(period, str) or not _DATE.fullmatch(period):
        raise _bad("batch", "period must be a YYYY-MM-DD date")
    version, base = doc["version"], doc["base_version"]
    for name, v in (("version", version), ("base_version", base)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**62:
            raise _bad("batch", f"{name} must be a non-negative whole number")
    if version <= base:
        raise _bad("batch", "version must be greater than base_version")
    if not isinstance(doc["replace"], bool):
        raise _bad("batch", "replace must be true or false")
    records_raw = doc["records"]
    if not isinstance(records_raw, list) or len(records_raw) > MAX_BATCH_RECORDS:
        raise _bad("batch", f"records must be a list of at most {MAX_BATCH_RECORDS}")
    records: list[PublicRecord] = []
    previous = ""
    for item in records_raw:
        if not isinstance(item, dict) or set(item) != {"uscc", "values"}:
            raise _bad("batch", "every record is {uscc, values}")
        code = _check_uscc(item["uscc"], "batch record")
        if code <= previous:
            raise _bad("batch", "records must be in strictly ascending USCC order")
        previous = code
        values_raw = item["values"]
        if values_raw is None:
            records.append(PublicRecord(code, None))
            continue
        if not isinstance(values_raw, dict):
            raise _bad("batch", "record values must be an object or null")
        values: dict[str, Value] = {}
        for key, value in values_raw.items():
            spec = public.get(key)
            if spec is None:
                # The gate: a non-aggregate (or foreign) field is never stored.
                raise _bad("batch", f"{key} is not an aggregate-mode field of {provider}")
            values[key] = field_value(spec, value)
        records.append(PublicRecord(code, values))
    return PublicBatch(
        provider=provider,
        period=period,
        version=version,
        base_version=base,
        records=tuple(records),
        replace=doc["replace"],
    )


def verify_batch(raw: bytes, signature: bytes, key: VerifyKey, catalog: Catalog) -> PublicBatch:
    """The provider's signature first (SignatureError), then the content (ValidationError)."""
    key.verify(BATCH_CONTEXT, raw, signature)
    return parse_batch(raw, catalog)


# ------------------------------------------------------------------ filings


@dataclass(frozen=True)
class Filing:
    """An enterprise's voluntary filing (自主填报) with its credit commitment (信用承诺)."""

    filing_id: str
    enterprise: str
    items: dict[str, Value]
    commitment_version: str
    commitment_sha256: str
    signed_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FILING_FORMAT,
            "filing_id": self.filing_id,
            "enterprise": self.enterprise,
            "items": self.items,
            "commitment": {"version": self.commitment_version, "text_sha256": self.commitment_sha256},
            "signed_at": self.signed_at,
        }


@dataclass(frozen=True)
class Withdrawal:
    filing_id: str
    enterprise: str
    withdrawn_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": WITHDRAWAL_FORMAT,
            "filing_id": self.filing_id,
            "enterprise": self.enterprise,
            "withdrawn_at": self.withdrawn_at,
        }


def new_filing_id() -> str:
    return uuid.uuid4().hex


def self_reported_value(spec: SelfReportedSpec, value: object) -> Value:
    where = f"item {spec.key}"
    if spec.type is SelfReportedType.BOOL:
        if not isinstance(value, bool):
            raise _bad(where, "expected true or false")
        return value
    if spec.type is SelfReportedType.INT:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**15:
            raise _bad(where, "expected a non-negative whole number")
        return value
    if spec.type is SelfReportedType.DECIMAL:
        if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
            raise _bad(where, "expected a non-negative decimal string")
        return value
    if spec.type is SelfReportedType.TEXT:
        if not isinstance(value, str) or not value.strip() or len(value) > spec.max_length:
            raise _bad(where, f"expected a text of 1 to {spec.max_length} characters")
        return value
    if (
        not isinstance(value, list)
        or len(value) > spec.max_items
        or not all(isinstance(v, str) and v.strip() and len(v) <= spec.max_length for v in value)
    ):
        raise _bad(where, f"expected at most {spec.max_items} texts of 1 to {spec.max_length} characters")
    return list(value)


def coerce_item(spec: SelfReportedSpec, text: str) -> Value:
    """A CLI ``key=value`` text as the item's type (lists: comma-separated)."""
    try:
        if spec.type is SelfReportedType.BOOL:
            return self_reported_value(spec, {"true": True, "false": False}.get(text.lower(), text))
        if spec.type is SelfReportedType.INT:
            return self_reported_value(spec, int(text))
        if spec.type is SelfReportedType.DECIMAL:
            return self_reported_value(spec, str(Decimal(text)) if _DECIMAL.fullmatch(text) else text)
    except (ValueError, InvalidOperation):
        raise _bad(f"item {spec.key}", "does not parse") from None
    if spec.type is SelfReportedType.TEXT_LIST:
        return self_reported_value(spec, [t.strip() for t in text.split(",") if t.strip()])
    return self_reported_value(spec, text)


def filing_bytes(filing: Filing) -> bytes:
    return canonical_json(filing.to_json())


def withdrawal_bytes(withdrawal: Withdrawal) -> bytes:
    return canonical_json(withdrawal.to_json())


def sign_filing(key: SigningKey, filing: Filing) -> tuple[bytes, bytes]:
    raw = filing_bytes(filing)
    return raw, key.sign(FILING_CONTEXT, raw)


def sign_withdrawal(key: SigningKey, withdrawal: Withdrawal) -> tuple[bytes, bytes]:
    raw = withdrawal_bytes(withdrawal)
    return raw, key.sign(WITHDRAWAL_CONTEXT, raw)


def _timestamp(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 946_684_800 <= value <= 4_102_444_800:
        raise _bad(what, "timestamp out of range")
    return value


def parse_filing(raw: bytes, catalog: Catalog) -> Filing:
    """Validate a filing: known self-reported items of the right type, the catalog's commitment pinned."""
    doc = _loads(raw, "filing", MAX_FILING_BYTES)
    _keys(doc, {"format", "filing_id", "enterprise", "items", "commitment", "signed_at"}, "filing")
    if doc["format"] != FILING_FORMAT:
        raise _bad("filing", f"format must be {FILING_FORMAT}")
    filing_id = doc["filing_id"]
    if not isinstance(filing_id, str) or not _FILING_ID.fullmatch(filing_id):
        raise _bad("filing", "filing_id must be 32 lower-case hex digits")
    enterprise = _check_uscc(doc["enterprise"], "filing")
    items_raw = doc["items"]
    if not isinstance(items_raw, dict) or not items_raw or len(items_raw) > MAX_FILING_ITEMS:
        raise _bad("filing", "items must be a non-empty object")
    items: dict[str, Value] = {}
    for key, value in items_raw.items():
        spec = catalog.self_reported.get(key)
        if spec is None:
            raise _bad("filing", f"{key} is not a self-reported item of the catalog")
        items[key] = self_reported_value(spec, value)
    commitment = doc["commitment"]
    if not isinstance(commitment, dict) or set(commitment) != {"version", "text_sha256"}:
        raise _bad("filing", "commitment must be {version, text_sha256}")
    pinned = catalog.commitment
    if pinned is None or commitment["version"] != pinned.version or commitment["text_sha256"] != pinned.sha256:
        raise _bad("filing", "the credit commitment is not the catalog's current text")
    return Filing(
        filing_id=filing_id,
        enterprise=enterprise,
        items=items,
        commitment_version=pinned.version,
        commitment_sha256=pinned.sha256,
        signed_at=_timestamp(doc["signed_at"], "filing"),
    )


def parse_withdrawal(raw: bytes) -> Withdrawal:
    doc = _loads(raw, "withdrawal", MAX_FILING_BYTES)
    _keys(doc, {"format", "filing_id", "enterprise", "withdrawn_at"}, "withdrawal")
    if doc["format"] != WITHDRAWAL_FORMAT:
        raise _bad("withdrawal", f"format must be {WITHDRAWAL_FORMAT}")
    filing_id = doc["filing_id"]
    if not isinstance(filing_id, str) or not _FILING_ID.fullmatch(filing_id):
        raise _bad("withdrawal", "filing_id must be 32 lower-case hex digits")
    return Withdrawal(
        filing_id=filing_id,
        enterprise=_check_uscc(doc["enterprise"], "withdrawal"),
        withdrawn_at=_timestamp(doc["withdrawn_at"], "withdrawal"),
    )


__all__ = [
    "BATCH_CONTEXT",
    "FILING_CONTEXT",
    "MAX_BATCH_RECORDS",
    "WITHDRAWAL_CONTEXT",
    "Filing",
    "PublicBatch",
    "PublicRecord",
    "Withdrawal",
    "batch_bytes",
    "canonical_json",
    "coerce_item",
    "field_value",
    "filing_bytes",
    "new_filing_id",
    "parse_batch",
    "parse_filing",
    "parse_withdrawal",
    "sign_batch",
    "sign_filing",
    "sign_withdrawal",
    "verify_batch",
    "withdrawal_bytes",
]
