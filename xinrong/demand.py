"""Financing demands: how an enterprise signs one, and the checks the node repeats.

A demand (``xinrong.v1.FinancingDemand``) is signed by the enterprise's
CA-bound key like a consent, so whoever holds it can tell the enterprise
asked; it names the consents of purpose ``matching`` (one grantee each)
that say which institutions may receive it, and whether its index grade
may be shown. Authenticity failures are the uniform ACCESS_DENIED; limits
are INVALID_ARGUMENT naming the limit (they concern the caller's own bytes).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from xinrong import uscc as uscc_mod
from xinrong.errors import ConsentError, SignatureError, ValidationError
from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.signing import SigningKey
from xinrong.v1 import common_pb2, demand_pb2

DEMAND_CONTEXT = "xinrong.v1.FinancingDemand"

MAX_DEMAND_BYTES = 8 * 1024
MAX_SIGNED_DEMAND_BYTES = 16 * 1024
MAX_AMOUNT_YUAN = 10**12
MAX_TERM_MONTHS = 360
MAX_PURPOSE_CHARS = 200
MAX_CONSENTS = 32
# A demand is valid for at most two years from its issue.
MAX_VALIDITY_SECONDS = 2 * 366 * 86400
DEMAND_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REGION_RE = re.compile(r"^\d{6}$")
INDUSTRY_RE = re.compile(r"^([A-T]\d{0,4})?$")


def _refuse(why: str) -> ValidationError:
    return ValidationError(why, public=why)


def build_demand(
    *,
    enterprise_uscc: str,
    enterprise_key_id: str,
    amount_yuan: int,
    term_months: int,
    purpose: str,
    region: str,
    consent_ids: Sequence[str],
    industry: str = "",
    show_grade: bool = True,
    valid_until: int | None = None,
    demand_id: str | None = None,
    now: int | None = None,
) -> demand_pb2.FinancingDemand:
    issued = int(time.time()) if now is None else now
    demand = demand_pb2.FinancingDemand(
        demand_id=demand_id or str(uuid.uuid4()),
        enterprise_uscc=uscc_mod.parse(enterprise_uscc),
        amount_yuan=amount_yuan,
        term_months=term_months,
        purpose=purpose,
        region=region,
        industry=industry,
        consent_ids=list(consent_ids),
        show_grade=show_grade,
        valid_until=valid_until if valid_until is not None else issued + 90 * 86400,
        issued_at=issued,
        nonce=os.urandom(16),
        enterprise_key_id=enterprise_key_id,
    )
    check_demand_fields(demand, now=issued)
    return demand


def sign_demand(
    demand: demand_pb2.FinancingDemand, key: SigningKey, binding: common_pb2.SignedPartyBinding
) -> demand_pb2.SignedDemand:
    raw = demand.SerializeToString(deterministic=True)
    return demand_pb2.SignedDemand(demand=raw, signature=key.sign(DEMAND_CONTEXT, raw), enterprise_binding=binding)


def check_demand_fields(demand: demand_pb2.FinancingDemand, *, now: float | None) -> None:
    """Every field inside its limits (INVALID_ARGUMENT naming the first one that is not);
    ``now`` None (a stored demand re-read) skips the freshness of ``issued_at``."""
    if not DEMAND_ID_RE.fullmatch(demand.demand_id):
        raise _refuse("demand_id: 1-64 of A-Z a-z 0-9 . _ -")
    if not 1 <= demand.amount_yuan <= MAX_AMOUNT_YUAN:
        raise _refuse(f"amount_yuan must be between 1 and {MAX_AMOUNT_YUAN}")
    if not 1 <= demand.term_months <= MAX_TERM_MONTHS:
        raise _refuse(f"term_months must be between 1 and {MAX_TERM_MONTHS}")
    if not demand.purpose.strip() or len(demand.purpose) > MAX_PURPOSE_CHARS:
        raise _refuse(f"purpose: 1 to {MAX_PURPOSE_CHARS} characters")
    if any(ord(c) < 0x20 for c in demand.purpose):
        raise _refuse("purpose must not hold control characters")
    if not REGION_RE.fullmatch(demand.region):
        raise _refuse("region must be a 6-digit administrative division code")
    if not INDUSTRY_RE.fullmatch(demand.industry):
        raise _refuse("industry must be a GB/T 4754 section letter and up to 4 digits, or empty")
    if not 1 <= len(demand.consent_ids) <= MAX_CONSENTS or len(set(demand.consent_ids)) != len(demand.consent_ids):
        raise _refuse(f"consent_ids: 1 to {MAX_CONSENTS} distinct consent ids")
    if any(not DEMAND_ID_RE.fullmatch(c) for c in demand.consent_ids):
        raise _refuse("consent_ids: malformed consent id")
    if not demand.issued_at or (now is not None and abs(demand.issued_at - now) > 86400):
        raise _refuse("issued_at must be within a day of the node's clock")
    if not demand.issued_at < demand.valid_until <= demand.issued_at + MAX_VALIDITY_SECONDS:
        raise _refuse("valid_until must be after issued_at and at most two years later")
    if len(demand.nonce) > 64:
        raise _refuse("nonce is longer than 64 bytes")


@dataclass(frozen=True)
class VerifiedDemand:
    demand: demand_pb2.FinancingDemand
    signed: demand_pb2.SignedDemand
    binding: VerifiedBinding

    @property
    def demand_id(self) -> str:
        return self.demand.demand_id

    @property
    def enterprise(self) -> str:
        return self.demand.enterprise_uscc


def verify_signed_demand(ca: CaVerifier, signed: demand_pb2.SignedDemand, *, now: float | None) -> VerifiedDemand:
    """Authentic (the enterprise's CA-bound key signed it) and inside every limit."""
    if len(signed.demand) > MAX_DEMAND_BYTES or signed.ByteSize() > MAX_SIGNED_DEMAND_BYTES:
        raise _refuse(f"signed demand is larger than {MAX_SIGNED_DEMAND_BYTES} bytes")
    try:
        binding = verify_binding(ca, signed.enterprise_binding, expect_role="enterprise")
        binding.verify_key.verify(DEMAND_CONTEXT, signed.demand, signed.signature)
        demand = demand_pb2.FinancingDemand.FromString(signed.demand)
    except SignatureError as exc:
        raise ConsentError(f"demand not authentic: {exc.detail}") from None
    except DecodeError:
        raise ConsentError("demand does not parse") from None
    if demand.enterprise_uscc != binding.party_id or demand.enterprise_key_id != binding.key_id:
        raise ConsentError("demand not signed by the enterprise it names")
    check_demand_fields(demand, now=now)
    return VerifiedDemand(demand, signed, binding)


__all__ = [
    "DEMAND_CONTEXT",
    "MAX_CONSENTS",
    "VerifiedDemand",
    "build_demand",
    "check_demand_fields",
    "sign_demand",
    "verify_signed_demand",
]
