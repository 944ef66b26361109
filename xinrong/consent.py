"""Consents: how an enterprise signs one, and the checks every party repeats.

The node and each agent run the same ``verify_signed_consent`` and
``check_consent_use`` before reading any data. Authenticity failures (bad
signature, unknown or mismatched enterprise, binding not from the CA) all
raise the single uniform ``ACCESS_DENIED``; failures the grantee could read
off its own consent file (expired, wrong grantee, out of scope) get precise
reasons, since they reveal nothing about the enterprise.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from xinrong import uscc as uscc_mod
from xinrong.catalog import Catalog, Form
from xinrong.errors import ConsentError, Reason, SignatureError, ValidationError, invalid
from xinrong.keys.binding import verify_binding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.signing import SigningKey
from xinrong.limits import (
    MAX_CONSENT_BYTES,
    MAX_NONCE_BYTES,
    MAX_REVOCATION_BYTES,
    MAX_SCOPE_ITEMS,
    MAX_SIGNED_CONSENT_BYTES,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
)
from xinrong.serde import FORM_TO_PROTO, PROTO_TO_FORM, PROTO_TO_PURPOSE, PURPOSE_TO_PROTO
from xinrong.v1 import common_pb2

CONSENT_CONTEXT = "xinrong.v1.Consent"
REVOCATION_CONTEXT = "xinrong.v1.ConsentRevocation"

PURPOSES = PURPOSE_TO_PROTO
FETCH_TYPES = {"one_time": common_pb2.FETCH_TYPE_ONE_TIME, "periodic": common_pb2.FETCH_TYPE_PERIODIC}
# The purposes under which an institution may ask for values (Verify, GetIndicators):
# deciding a loan, and watching it afterwards. A consent given for matching, scoring
# or joint modeling opens only that service: a matching consent's id reaches the bank
# with every application, and must not let it ask the fields it covers one by one.
VALUE_QUERY_PURPOSES: frozenset[int] = frozenset(
    {common_pb2.CONSENT_PURPOSE_LOAN_APPLICATION, common_pb2.CONSENT_PURPOSE_POST_LOAN_MONITORING}
)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date(text: str, what: str) -> dt.date:
    """Strictly YYYY-MM-DD (``fromisoformat`` also takes YYYYMMDD and weeks): data periods
    are compared as text, which orders dates only in this one spelling."""
    try:
        if _ISO_DATE.fullmatch(text) is None:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{what} {text[:32]!r} is not a YYYY-MM-DD date", public=f"{what} is not a YYYY-MM-DD date"
        ) from None


def _refuse(why: str) -> ValidationError:
    """INVALID_ARGUMENT whose public message names the limit: it is about the
    caller's own bytes, so it reveals nothing about anyone else."""
    return invalid(why)


def check_timestamp(value: int, what: str) -> None:
    """A wire timestamp (Unix seconds) inside the sane window, else INVALID_ARGUMENT."""
    if not MIN_TIMESTAMP <= value <= MAX_TIMESTAMP:
        raise _refuse(f"{what} must be a Unix time between {MIN_TIMESTAMP} (2000) and {MAX_TIMESTAMP} (2100)")


def check_signed_consent_size(signed: common_pb2.SignedConsent) -> None:
    """Size limits checked before any signature work (``xinrong.limits``)."""
    if len(signed.consent) > MAX_CONSENT_BYTES:
        raise _refuse(f"consent is larger than {MAX_CONSENT_BYTES} bytes")
    if signed.ByteSize() > MAX_SIGNED_CONSENT_BYTES:
        raise _refuse(f"signed consent is larger than {MAX_SIGNED_CONSENT_BYTES} bytes")


def check_consent_fields(consent: common_pb2.Consent) -> None:
    """Field limits, enum values, dates and timestamp windows of a parsed consent.

    The same rules ``build_consent`` applies, checked again wherever a signed
    consent is verified: the enterprise's signature makes a consent authentic,
    not well formed (an unknown purpose, or a data period "0".."z" that text
    comparison would read as every date, must be refused, not interpreted).
    """
    if len(consent.nonce) > MAX_NONCE_BYTES:
        raise _refuse(f"consent nonce is longer than {MAX_NONCE_BYTES} bytes")
    if len(consent.scope) > MAX_SCOPE_ITEMS:
        raise _refuse(f"consent scope has more than {MAX_SCOPE_ITEMS} items")
    check_timestamp(consent.valid_from, "consent valid_from")
    check_timestamp(consent.valid_until, "consent valid_until")
    if consent.issued_at:
        check_timestamp(consent.issued_at, "consent issued_at")
    if consent.purpose not in PROTO_TO_PURPOSE:
        raise _refuse("consent purpose is not one of " + ", ".join(sorted(PURPOSES)))
    if consent.fetch_type not in FETCH_TYPES.values():
        raise _refuse("consent fetch type is not one of " + ", ".join(sorted(FETCH_TYPES)))
    if _date(consent.data_period_to, "consent data period end") < _date(
        consent.data_period_from, "consent data period start"
    ):
        raise _refuse("consent data period ends before it starts")
    if consent.max_uses < 1:
        raise _refuse("consent max_uses must be at least 1")
    if consent.valid_until <= consent.valid_from:
        raise _refuse("consent validity ends before it starts")


def parse_scope(catalog: Catalog, specs: Iterable[str]) -> list[common_pb2.ConsentScopeItem]:
    """Scope from text items: 'tax.credit_grade', 'tax.credit_grade:grade', 'tax.*',
    'tax.vat_paid_last_year:bracket+ladder'. A bare field grants all its catalog forms."""
    items: dict[str, set[Form]] = {}
    for spec in specs:
        field_part, _, forms_part = spec.partition(":")
        if field_part.endswith(".*"):
            provider = field_part[:-2]
            keys = [f.key for f in catalog.provider_fields(provider) if f.forms]
        else:
            keys = [catalog.field(field_part).key]
        for key in keys:
            allowed = catalog.fields[key].forms
            if forms_part:
                try:
                    wanted = {Form(f) for f in forms_part.split("+")}
                except ValueError:
                    raise ValidationError(f"unknown form in scope item {spec!r}") from None
                if not wanted <= allowed:
                    raise ValidationError(f"{key} allows only {sorted(allowed)}, not {sorted(wanted)}")
            else:
                wanted = set(allowed)
            if not wanted:
                raise ValidationError(f"{key} has no disclosure form an institution may get")
            items.setdefault(key, set()).update(wanted)
    if not items:
        raise ValidationError("a consent needs a non-empty scope")
    return [
        common_pb2.ConsentScopeItem(field=k, forms=sorted(FORM_TO_PROTO[f] for f in v))
        for k, v in sorted(items.items())
    ]


def build_consent(
    *,
    enterprise_uscc: str,
    enterprise_key_id: str,
    grantee_id: str,
    purpose: str,
    scope: list[common_pb2.ConsentScopeItem],
    data_period_from: str,
    data_period_to: str,
    valid_from: int,
    valid_until: int,
    max_uses: int,
    retention_days: int = 90,
    fetch_type: str = "one_time",
    max_uses_per_day: int = 0,
    consent_id: str | None = None,
    now: int | None = None,
) -> common_pb2.Consent:
    code = uscc_mod.parse(enterprise_uscc)
    if purpose not in PURPOSES:
        raise ValidationError(f"purpose must be one of {sorted(PURPOSES)}")
    if fetch_type not in FETCH_TYPES:
        raise ValidationError(f"fetch type must be one of {sorted(FETCH_TYPES)}")
    if _date(data_period_to, "data period end") < _date(data_period_from, "data period start"):
        raise ValidationError("data period ends before it starts")
    if valid_until <= valid_from:
        raise ValidationError("consent validity ends before it starts")
    check_timestamp(valid_from, "consent valid_from")
    check_timestamp(valid_until, "consent valid_until")
    if max_uses < 1:
        raise ValidationError("max uses must be at least 1")
    return common_pb2.Consent(
        consent_id=consent_id or str(uuid.uuid4()),
        enterprise_uscc=code,
        grantee_id=grantee_id,
        purpose=PURPOSES[purpose],
        scope=scope,
        data_period_from=data_period_from,
        data_period_to=data_period_to,
        fetch_type=FETCH_TYPES[fetch_type],
        max_uses_per_day=max_uses_per_day,
        valid_from=valid_from,
        valid_until=valid_until,
        max_uses=max_uses,
        retention_days=retention_days,
        nonce=os.urandom(16),
        enterprise_key_id=enterprise_key_id,
        issued_at=int(time.time()) if now is None else now,
    )


def sign_consent(
    consent: common_pb2.Consent, key: SigningKey, binding: common_pb2.SignedPartyBinding
) -> common_pb2.SignedConsent:
    raw = consent.SerializeToString(deterministic=True)
    return common_pb2.SignedConsent(consent=raw, signature=key.sign(CONSENT_CONTEXT, raw), enterprise_binding=binding)


def sign_revocation(
    consent_id: str, enterprise_uscc: str, key: SigningKey, *, now: int | None = None
) -> common_pb2.SignedConsentRevocation:
    revocation = common_pb2.ConsentRevocation(
        consent_id=consent_id,
        enterprise_uscc=enterprise_uscc,
        revoked_at=int(time.time()) if now is None else now,
        nonce=os.urandom(16),
    )
    raw = revocation.SerializeToString(deterministic=True)
    return common_pb2.SignedConsentRevocation(revocation=raw, signature=key.sign(REVOCATION_CONTEXT, raw))


@dataclass(frozen=True)
class VerifiedConsent:
    """An authentic consent (CA-bound enterprise key, valid signature), not yet checked for use."""

    consent: common_pb2.Consent
    signed: common_pb2.SignedConsent
    digest: str  # hex SHA-256 of the signed consent bytes
    scope: dict[str, frozenset[Form]]

    @property
    def consent_id(self) -> str:
        return self.consent.consent_id

    @property
    def enterprise(self) -> str:
        return self.consent.enterprise_uscc

    def covers(self, field: str, form: Form) -> bool:
        return form in self.scope.get(field, frozenset())


def verify_signed_consent(ca: CaVerifier, signed: common_pb2.SignedConsent) -> VerifiedConsent:
    """Authenticity, plus size and timestamp limits. Every authenticity
    failure is the uniform ACCESS_DENIED; a limit is INVALID_ARGUMENT naming
    it (sizes before any signature work, timestamps once parsed)."""
    check_signed_consent_size(signed)
    try:
        binding = verify_binding(ca, signed.enterprise_binding, expect_role="enterprise")
        binding.verify_key.verify(CONSENT_CONTEXT, signed.consent, signed.signature)
        consent = common_pb2.Consent()
        consent.ParseFromString(signed.consent)
    except SignatureError as exc:
        raise ConsentError(f"consent not authentic: {exc.detail}") from None
    except Exception:
        raise ConsentError("consent does not parse") from None
    if consent.enterprise_uscc != binding.party_id or consent.enterprise_key_id != binding.key_id:
        raise ConsentError("consent not signed by the enterprise it names")
    if not consent.consent_id or not consent.grantee_id:
        raise ConsentError("consent lacks an id or grantee")
    check_consent_fields(consent)
    scope: dict[str, frozenset[Form]] = {}
    for item in consent.scope:
        forms = frozenset(PROTO_TO_FORM[f] for f in item.forms if f in PROTO_TO_FORM)
        scope[item.field] = scope.get(item.field, frozenset()) | forms
    return VerifiedConsent(
        consent=consent, signed=signed, digest=hashlib.sha256(signed.consent).hexdigest(), scope=scope
    )


def verify_revocation(
    ca: CaVerifier, signed: common_pb2.SignedConsentRevocation, enterprise_binding: common_pb2.SignedPartyBinding
) -> common_pb2.ConsentRevocation:
    """A revocation is authentic if the enterprise's CA-bound key signed it."""
    if signed.ByteSize() > MAX_REVOCATION_BYTES:
        raise _refuse(f"signed revocation is larger than {MAX_REVOCATION_BYTES} bytes")
    try:
        binding = verify_binding(ca, enterprise_binding, expect_role="enterprise")
        binding.verify_key.verify(REVOCATION_CONTEXT, signed.revocation, signed.signature)
        revocation = common_pb2.ConsentRevocation()
        revocation.ParseFromString(signed.revocation)
    except SignatureError as exc:
        raise ConsentError(f"revocation not authentic: {exc.detail}") from None
    except Exception:
        raise ConsentError("revocation does not parse") from None
    if revocation.enterprise_uscc != binding.party_id:
        raise ConsentError("revocation not signed by the enterprise it names")
    if len(revocation.nonce) > MAX_NONCE_BYTES:
        raise _refuse(f"revocation nonce is longer than {MAX_NONCE_BYTES} bytes")
    check_timestamp(revocation.revoked_at, "revocation revoked_at")
    return revocation


def check_consent_use(
    verified: VerifiedConsent,
    *,
    enterprise_uscc: str,
    audience_id: str,
    needs: Iterable[tuple[str, Form]],
    now: float,
    state: int = common_pb2.CONSENT_STATE_ACTIVE,
) -> None:
    """Checks that hold for every use, in a fixed order so the answer is deterministic."""
    c = verified.consent
    if c.enterprise_uscc != enterprise_uscc:
        # Consent for another enterprise: indistinguishable from no consent.
        raise ConsentError("consent is for another enterprise")
    if c.grantee_id != audience_id:
        # Another institution's consent: to this caller, as if there were none. A
        # reason of its own would confirm that the id exists, and trying USCCs
        # would then find whose it is (the consent-status call already answers so).
        raise ConsentError("grantee mismatch")
    if state == common_pb2.CONSENT_STATE_REVOKED:
        raise ConsentError("revoked", reason=Reason.CONSENT_REVOKED)
    if state == common_pb2.CONSENT_STATE_PAUSED:
        raise ConsentError("paused", reason=Reason.CONSENT_PAUSED)
    if now < c.valid_from:
        raise ConsentError("not yet valid", reason=Reason.CONSENT_NOT_YET_VALID)
    if now >= c.valid_until or state == common_pb2.CONSENT_STATE_EXPIRED:
        raise ConsentError("expired", reason=Reason.CONSENT_EXPIRED)
    for field, form in needs:
        if not verified.covers(field, form):
            raise ConsentError(f"{field}:{form} not in scope", reason=Reason.CLAIM_OUT_OF_SCOPE)


def check_purpose(verified: VerifiedConsent, purposes: frozenset[int]) -> None:
    """CLAIM_OUT_OF_SCOPE naming ``purposes`` unless the consent was given for one of them.

    Checked after ``check_consent_use``, so only the grantee, who holds the consent, learns it."""
    if verified.consent.purpose not in purposes:
        wanted = " or ".join(sorted(PROTO_TO_PURPOSE.get(int(p), "unspecified") for p in purposes))
        raise ConsentError(
            f"purpose is not {wanted}",
            reason=Reason.CLAIM_OUT_OF_SCOPE,
            public=f"the consent's purpose is not {wanted}",
        )


def check_data_period(verified: VerifiedConsent, data_as_of: str) -> None:
    c = verified.consent
    if data_as_of and not (c.data_period_from <= data_as_of <= c.data_period_to):
        raise ConsentError("data period outside consent", reason=Reason.CONSENT_PERIOD_MISMATCH)


# -- consent files ----------------------------------------------------------
# A signed consent travels between enterprise and institution as a file of
# its deterministic serialization. Reading one is a ground-floor concern:
# the enterprise writes it, the bank and the tools read it.


def write_consent(path: str | Path, signed: common_pb2.SignedConsent) -> None:
    Path(path).write_bytes(signed.SerializeToString(deterministic=True))


def read_consent(path: str | Path) -> common_pb2.SignedConsent:
    """Read a consent file; a missing, unreadable or corrupt file is one clear ValidationError."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValidationError(f"consent file {path}: {exc.strerror or exc}") from None
    signed = common_pb2.SignedConsent()
    try:
        signed.ParseFromString(data)
        consent = parse_consent(signed)
    except (DecodeError, ValidationError):
        raise ValidationError(
            f"consent file {path} is not a signed consent (corrupt or another kind of file)"
        ) from None
    if not consent.consent_id or not signed.signature:
        raise ValidationError(f"consent file {path} is not a signed consent (no consent id or signature)")
    return signed


def parse_consent(signed: common_pb2.SignedConsent) -> common_pb2.Consent:
    """The consent inside a signed envelope, unverified: for display and ids, never for decisions."""
    consent = common_pb2.Consent()
    try:
        consent.ParseFromString(signed.consent)
    except DecodeError:
        raise ValidationError("signed consent does not carry a parsable consent") from None
    return consent
