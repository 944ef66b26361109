"""Subject rights on the ground floor: what an enterprise signs, and the padding of what it reads.

Node and agents run the same checks on the same signed bytes, as with
consents (``xinrong.consent``): a subject query (every self-service
request), a case filing (objection or repair application) and a consent
state change (pause / resume). Each is signed with the enterprise's
CA-bound Ed25519 key under its own context; a failed check is the uniform
``ACCESS_DENIED``.

Padding: everything non-public an enterprise reads, and every case it files,
is sealed with the one padding rule of ``xinrong.keys.sealing`` (``pad_to``),
to a length that depends only on what the relaying node knows:

* a provider's report (``seal_report``): the provider's field count (the
  public catalog) and the number of cases on the enterprise at that provider
  (each went through the node as a FileCase), so ``report_pad_to`` per-field
  and per-case budgets, never the values;
* a case filing (``seal_filing``): one fixed size that holds the largest
  statement and evidence admitted (``FILING_PAD_TO``), so a relay cannot tell
  a one-line objection from one with a scanned page attached.

A report larger than its budget (a case with a long history) pads to the next
multiple of it: the length then says "over budget", never by how much within
a step.
"""

from __future__ import annotations

import os
import time
import uuid

from xinrong import ids
from xinrong.errors import ConsentError, Reason, ValidationError
from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.sealing import seal
from xinrong.keys.signing import SigningKey
from xinrong.v1 import common_pb2, subject_pb2

QUERY_CONTEXT = "xinrong.v1.SubjectQuery"
FILING_CONTEXT = "xinrong.v1.CaseFiling"
STATE_CHANGE_CONTEXT = "xinrong.v1.ConsentStateChange"
REPORT_CONTEXT = "xinrong.v1.SubjectReport"
REPORT_CONTENT_TYPE = "xinrong.v1.SignedSubjectReport"
FILING_CONTENT_TYPE = "xinrong.v1.SignedCaseFiling"

# What one case may carry: a statement of a few paragraphs, evidence of a scanned page or two.
MAX_STATEMENT_CHARS = 2000
MAX_EVIDENCE_BYTES = 256 * 1024

# Budgets of ``report_pad_to``: the report's envelope (ids, dates, signature),
# one field (key, value text, status) and one case (statement of up to
# MAX_STATEMENT_CHARS in any script, reason, a few history steps).
REPORT_BASE_BYTES = 1024
REPORT_FIELD_BYTES = 256
REPORT_CASE_BYTES = 4 * MAX_STATEMENT_CHARS + 4096
# A filing: the largest evidence, the largest statement and name in 4-byte
# UTF-8, ids, signature and framing.
FILING_PAD_TO = MAX_EVIDENCE_BYTES + 4 * MAX_STATEMENT_CHARS + 8192


def report_pad_to(fields: int, cases: int) -> int:
    """The sealed size of a report with ``fields`` fields and ``cases`` cases (see the module docstring)."""
    return REPORT_BASE_BYTES + REPORT_FIELD_BYTES * fields + REPORT_CASE_BYTES * cases


def seal_report(
    signed: subject_pb2.SignedSubjectReport,
    *,
    enterprise: str,
    sealing_public_raw: bytes,
    request_id: str,
    fields: int,
    cases: int,
) -> common_pb2.SealedBox:
    """A provider's signed report, padded to ``report_pad_to`` and sealed to the enterprise."""
    return seal(
        signed.SerializeToString(deterministic=True),
        recipient_id=enterprise,
        recipient_public_raw=sealing_public_raw,
        content_type=REPORT_CONTENT_TYPE,
        context=request_id,
        pad_to=report_pad_to(fields, cases),
    )


def seal_filing(
    signed: subject_pb2.SignedCaseFiling, *, provider: str, sealing_public_raw: bytes, case_id: str
) -> common_pb2.SealedBox:
    """An enterprise's signed filing, padded to ``FILING_PAD_TO`` and sealed to the owning provider."""
    return seal(
        signed.SerializeToString(deterministic=True),
        recipient_id=provider,
        recipient_public_raw=sealing_public_raw,
        content_type=FILING_CONTENT_TYPE,
        context=case_id,
        pad_to=FILING_PAD_TO,
    )


# -- subject queries -----------------------------------------------------------


def sign_query(
    enterprise_uscc: str, key: SigningKey, *, request_id: str | None = None, now: int | None = None
) -> subject_pb2.SignedSubjectQuery:
    query = subject_pb2.SubjectQuery(
        request_id=request_id or str(uuid.uuid4()),
        enterprise_uscc=enterprise_uscc,
        requested_at=int(time.time()) if now is None else now,
        nonce=os.urandom(16),
    )
    raw = query.SerializeToString(deterministic=True)
    return subject_pb2.SignedSubjectQuery(query=raw, signature=key.sign(QUERY_CONTEXT, raw))


def verify_enterprise(ca: CaVerifier, binding: common_pb2.SignedPartyBinding, *, now: float) -> VerifiedBinding:
    """The enterprise's CA-signed binding; any failure is the uniform denial."""
    try:
        return verify_binding(ca, binding, expect_role="enterprise", now=now)
    except Exception:
        raise ConsentError("enterprise binding not authentic") from None


def verify_query(
    signed: subject_pb2.SignedSubjectQuery, enterprise: VerifiedBinding, *, now: float, max_skew: float
) -> subject_pb2.SubjectQuery:
    """The enterprise's own signature over a fresh, well-formed query about itself."""
    try:
        enterprise.verify_key.verify(QUERY_CONTEXT, signed.query, signed.signature)
        query = subject_pb2.SubjectQuery.FromString(signed.query)
    except Exception:
        raise ConsentError("subject query not authentic") from None
    if query.enterprise_uscc != enterprise.party_id:
        raise ConsentError("subject query names another enterprise")
    if not ids.is_request_id(query.request_id):
        raise ValidationError("request id missing or malformed", public=ids.REQUEST_ID_RULE)
    if abs(now - query.requested_at) > max_skew:
        raise ValidationError(f"requested_at off by {now - query.requested_at:.0f}s", reason=Reason.REQUEST_STALE)
    return query


# -- case filings ----------------------------------------------------------------


def sign_filing(filing: subject_pb2.CaseFiling, key: SigningKey) -> subject_pb2.SignedCaseFiling:
    raw = filing.SerializeToString(deterministic=True)
    return subject_pb2.SignedCaseFiling(filing=raw, signature=key.sign(FILING_CONTEXT, raw))


def build_filing(
    *,
    kind: int,
    enterprise_uscc: str,
    provider: str,
    field: str,
    statement: str,
    evidence: bytes = b"",
    evidence_name: str = "",
    now: int | None = None,
) -> subject_pb2.CaseFiling:
    check_case_text(statement, evidence)
    return subject_pb2.CaseFiling(
        case_id=str(uuid.uuid4()),
        kind=kind,  # type: ignore[arg-type]
        enterprise_uscc=enterprise_uscc,
        provider=provider,
        field=field,
        statement=statement,
        evidence=evidence,
        evidence_name=evidence_name[:200],
        filed_at=int(time.time()) if now is None else now,
        nonce=os.urandom(16),
    )


def check_case_text(statement: str, evidence: bytes) -> None:
    if not statement.strip():
        raise ValidationError("a case needs a statement")
    if len(statement) > MAX_STATEMENT_CHARS:
        raise ValidationError(f"statement longer than {MAX_STATEMENT_CHARS} characters")
    if len(evidence) > MAX_EVIDENCE_BYTES:
        raise ValidationError(f"evidence larger than {MAX_EVIDENCE_BYTES} bytes")


def verify_filing(signed: subject_pb2.SignedCaseFiling, enterprise: VerifiedBinding) -> subject_pb2.CaseFiling:
    try:
        enterprise.verify_key.verify(FILING_CONTEXT, signed.filing, signed.signature)
        filing = subject_pb2.CaseFiling.FromString(signed.filing)
    except Exception:
        raise ConsentError("case filing not authentic") from None
    if filing.enterprise_uscc != enterprise.party_id:
        raise ConsentError("case filing names another enterprise")
    if not ids.is_request_id(filing.case_id):
        raise ValidationError("case id missing or malformed")
    if filing.kind not in (subject_pb2.CASE_KIND_OBJECTION, subject_pb2.CASE_KIND_REPAIR):
        raise ValidationError("case kind missing")
    check_case_text(filing.statement, filing.evidence)
    return filing


# -- consent pause / resume ---------------------------------------------------------


def sign_state_change(
    consent_id: str, enterprise_uscc: str, action: int, key: SigningKey, *, now: int | None = None
) -> subject_pb2.SignedConsentStateChange:
    change = subject_pb2.ConsentStateChange(
        change_id=str(uuid.uuid4()),
        consent_id=consent_id,
        enterprise_uscc=enterprise_uscc,
        action=action,  # type: ignore[arg-type]
        signed_at_ms=int(time.time() * 1000) if now is None else now * 1000,
        nonce=os.urandom(16),
    )
    raw = change.SerializeToString(deterministic=True)
    return subject_pb2.SignedConsentStateChange(change=raw, signature=key.sign(STATE_CHANGE_CONTEXT, raw))


def verify_state_change(
    ca: CaVerifier, signed: subject_pb2.SignedConsentStateChange, enterprise_binding: common_pb2.SignedPartyBinding
) -> subject_pb2.ConsentStateChange:
    """Authentic if the enterprise's CA-bound key signed it (like a revocation)."""
    try:
        binding = verify_binding(ca, enterprise_binding, expect_role="enterprise")
        binding.verify_key.verify(STATE_CHANGE_CONTEXT, signed.change, signed.signature)
        change = subject_pb2.ConsentStateChange.FromString(signed.change)
    except Exception:
        raise ConsentError("consent state change not authentic") from None
    if change.enterprise_uscc != binding.party_id:
        raise ConsentError("consent state change not signed by the enterprise it names")
    if change.action not in (subject_pb2.CONSENT_ACTION_PAUSE, subject_pb2.CONSENT_ACTION_RESUME):
        raise ValidationError("consent state change names no action")
    if not ids.is_consent_id(change.consent_id) or not ids.is_request_id(change.change_id):
        raise ValidationError("consent or change id malformed")
    return change


__all__ = [
    "FILING_CONTENT_TYPE",
    "FILING_PAD_TO",
    "MAX_EVIDENCE_BYTES",
    "MAX_STATEMENT_CHARS",
    "REPORT_CONTENT_TYPE",
    "REPORT_CONTEXT",
    "build_filing",
    "report_pad_to",
    "seal_filing",
    "seal_report",
    "sign_filing",
    "sign_query",
    "sign_state_change",
    "verify_enterprise",
    "verify_filing",
    "verify_query",
    "verify_state_change",
]
