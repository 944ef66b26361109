"""Claims: predicates on one catalog field, their text form, and the probing policy.

Text grammar (one claim):

    <field> == true|false            flag fields
    <field> in V1,V2,...             grade fields (also "<field> == V")
    <field> >= T   /   <field> < T   T on the field's published ladder
    <field> in [L,U)                 L, U published bracket edges; "[L,)" unbounded

``check_claim`` enforces the probing policy shared by node and agent: only
published ladder thresholds and bracket edges, only forms the catalog allows.
Because every ladder threshold is a bracket edge (checked when the catalog
loads), any set of answers is a union of published brackets: nothing finer.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from xinrong.catalog import Catalog, FieldSpec, FieldType, Form
from xinrong.errors import ClaimError, PolicyError, Reason
from xinrong.v1 import common_pb2

OP_EQ = common_pb2.CLAIM_OPERATOR_EQ
OP_IN = common_pb2.CLAIM_OPERATOR_IN
OP_GE = common_pb2.CLAIM_OPERATOR_GE
OP_LT = common_pb2.CLAIM_OPERATOR_LT
OP_IN_BRACKET = common_pb2.CLAIM_OPERATOR_IN_BRACKET


_CLAIM_RE = re.compile(r"^\s*(?P<field>[a-z_]+\.[a-z0-9_]+)\s*(?P<op>==|>=|<|\bin\b)\s*(?P<rhs>.+?)\s*$")
_BRACKET_RE = re.compile(r"^\[\s*(?P<lo>[^,\]\)]+)\s*,\s*(?P<hi>[^,\]\)]*)\s*\)$")


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ClaimError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ClaimError(f"{text!r} is not a finite number")
    return value


def _fmt(value: Decimal) -> str:
    """Canonical decimal text: no exponent, no trailing zeros."""
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def parse_claim(text: str) -> common_pb2.Claim:
    """Parse the text form into a Claim; syntax only (see check_claim for policy)."""
    m = _CLAIM_RE.match(text)
    if not m:
        raise ClaimError(f"cannot parse claim {text!r}; expected '<field> ==|in|>=|< <value>'")
    field, op, rhs = m.group("field"), m.group("op"), m.group("rhs")
    if op == "==":
        return common_pb2.Claim(field=field, op=OP_EQ, values=[rhs.strip()])
    if op == ">=":
        return common_pb2.Claim(field=field, op=OP_GE, values=[rhs.strip()])
    if op == "<":
        return common_pb2.Claim(field=field, op=OP_LT, values=[rhs.strip()])
    bm = _BRACKET_RE.match(rhs.strip())
    if bm:
        return common_pb2.Claim(field=field, op=OP_IN_BRACKET, values=[bm.group("lo").strip(), bm.group("hi").strip()])
    values = [v.strip() for v in rhs.strip().strip("{}").split(",")]
    if not all(values):
        raise ClaimError(f"empty value in claim {text!r}")
    return common_pb2.Claim(field=field, op=OP_IN, values=values)


def claim_text(claim: common_pb2.Claim) -> str:
    """Canonical text of a claim (stable: used in signed verdicts and audit hashes)."""
    vals = list(claim.values)
    if claim.op == OP_EQ:
        return f"{claim.field} == {vals[0] if vals else ''}"
    if claim.op == OP_IN:
        return f"{claim.field} in {','.join(vals)}"
    if claim.op == OP_GE:
        return f"{claim.field} >= {vals[0] if vals else ''}"
    if claim.op == OP_LT:
        return f"{claim.field} < {vals[0] if vals else ''}"
    if claim.op == OP_IN_BRACKET:
        lo = vals[0] if vals else ""
        hi = vals[1] if len(vals) > 1 else ""
        return f"{claim.field} in [{lo},{hi})"
    return f"{claim.field} ?"


@dataclass(frozen=True)
class CheckedClaim:
    """A claim that passed the probing policy, in canonical form."""

    claim: common_pb2.Claim
    spec: FieldSpec
    form: Form
    text: str


# Bytes any party spends caching checked claims (xinrong.cache weighs entries).
CLAIM_CACHE_BYTES = 4 * 1024 * 1024


def checked_claim_weight(key: bytes, checked: CheckedClaim) -> int:
    """What a cached checked claim holds: its key and its canonical claim and text."""
    return len(key) + checked.claim.ByteSize() + len(checked.text.encode())


# How much of a caller's own value a refusal quotes: enough to recognise it, never
# the whole of a 64 KiB string (a refusal's trailers have a 16 KiB limit at stock
# clients, which would then see RESOURCE_EXHAUSTED instead of the refusal).
SHOWN_CHARS = 40


def _shown(value: str) -> str:
    return value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "..."


def check_claim(catalog: Catalog, claim: common_pb2.Claim) -> CheckedClaim:
    """Enforce catalog and probing policy; return the canonical claim.

    Raises ClaimError / PolicyError with a precise reason; none of these
    depend on the enterprise, so they are no oracle.
    """
    spec = catalog.fields.get(claim.field)
    if spec is None:
        raise ClaimError(f"unknown field {claim.field!r}", reason=Reason.UNKNOWN_FIELD)
    values = list(claim.values)
    op = claim.op
    if spec.type is FieldType.BOOL:
        if op != OP_EQ or len(values) != 1 or values[0].lower() not in ("true", "false"):
            raise ClaimError(f"{spec.key} is a flag: use '== true' or '== false'")
        form = Form.FLAG
        canonical = common_pb2.Claim(field=spec.key, op=OP_EQ, values=[values[0].lower()])
    elif spec.type is FieldType.ENUM:
        if op not in (OP_EQ, OP_IN) or not values or (op == OP_EQ and len(values) != 1):
            raise ClaimError(f"{spec.key} is a grade: use 'in V1,V2' or '== V'")
        unknown = [v for v in values if v not in spec.values]
        if unknown:
            raise ClaimError(f"{spec.key}: {unknown} are not published values {list(spec.values)}")
        ordered = [v for v in spec.values if v in set(values)]  # canonical order, no duplicates
        form = Form.GRADE
        canonical = common_pb2.Claim(field=spec.key, op=OP_IN, values=ordered)
    elif spec.numeric:
        if op in (OP_GE, OP_LT):
            if len(values) != 1:
                raise ClaimError(f"{spec.key}: a threshold claim has one value")
            t = _decimal(values[0])
            if t not in spec.ladder:
                text = (
                    f"{spec.key}: threshold {_shown(values[0])} is not on the published ladder "
                    f"{[_fmt(x) for x in spec.ladder]}"
                )
                raise PolicyError(text, reason=Reason.THRESHOLD_NOT_PUBLISHED, public=text)
            form = Form.LADDER
            canonical = common_pb2.Claim(field=spec.key, op=op, values=[_fmt(t)])
        elif op == OP_IN_BRACKET:
            if len(values) != 2:
                raise ClaimError(f"{spec.key}: a bracket claim is 'in [lower,upper)'")
            lo = _decimal(values[0])
            hi = _decimal(values[1]) if values[1] else None
            if lo not in spec.edges or (hi is not None and (hi not in spec.edges or hi <= lo)):
                text = (
                    f"{spec.key}: bracket [{_shown(values[0])},{_shown(values[1])}) does not use published edges "
                    f"{[_fmt(x) for x in spec.edges]}"
                )
                raise PolicyError(text, reason=Reason.THRESHOLD_NOT_PUBLISHED, public=text)
            form = Form.BRACKET
            canonical = common_pb2.Claim(
                field=spec.key, op=OP_IN_BRACKET, values=[_fmt(lo), _fmt(hi) if hi is not None else ""]
            )
        else:
            raise ClaimError(f"{spec.key} is numeric: use '>= T', '< T' or 'in [L,U)'")
    else:
        raise form_not_allowed(spec, None)
    if form not in spec.forms:
        raise form_not_allowed(spec, form)
    return CheckedClaim(claim=canonical, spec=spec, form=form, text=claim_text(canonical))


FieldValue = bool | str | Decimal | dt.date | None


def evaluate(checked: CheckedClaim, value: FieldValue) -> bool | None:
    """Truth of a checked claim on a typed value; None when there is no value."""
    if value is None:
        return None
    claim = checked.claim
    if claim.op == OP_EQ:
        return bool(value) == (claim.values[0] == "true")
    if claim.op == OP_IN:
        return value in set(claim.values)
    if not isinstance(value, Decimal):
        raise TypeError(f"{checked.spec.key}: numeric claim on a non-numeric value")
    if claim.op == OP_GE:
        return value >= Decimal(claim.values[0])
    if claim.op == OP_LT:
        return value < Decimal(claim.values[0])
    if claim.op == OP_IN_BRACKET:
        lo = Decimal(claim.values[0])
        hi = Decimal(claim.values[1]) if claim.values[1] else None
        return value >= lo and (hi is None or value < hi)
    raise ClaimError("unsupported operator")


def check_indicator(catalog: Catalog, field: str, form: Form) -> FieldSpec:
    """An indicator (value in a published form) is allowed only off verification-only fields."""
    spec = catalog.fields.get(field)
    if spec is None:
        raise ClaimError(f"unknown field {field!r}", reason=Reason.UNKNOWN_FIELD)
    if form not in spec.forms or form is Form.LADDER:
        raise form_not_allowed(spec, form, as_indicator=True)
    if spec.verification_only:
        text = f"{field} is verification-only: ask a claim (forms {_forms(spec)}), not a value"
        raise PolicyError(text, reason=Reason.FORM_NOT_ALLOWED, public=text)
    return spec


def _forms(spec: FieldSpec) -> list[str]:
    return sorted(str(f) for f in spec.forms)


def form_not_allowed(spec: FieldSpec, form: Form | None, *, as_indicator: bool = False) -> PolicyError:
    """FORM_NOT_ALLOWED naming the field and the forms the catalog allows: public catalog facts, no oracle."""
    allowed = [f for f in _forms(spec) if not (as_indicator and f == str(Form.LADDER))]
    if form is None:
        text = f"{spec.key} has no disclosure form for institutions"
    else:
        text = f"{spec.key} cannot be disclosed as {form}"
    text += f"; the catalog allows {allowed}" if allowed else "; the catalog allows no form for institutions"
    return PolicyError(text, reason=Reason.FORM_NOT_ALLOWED, public=text)


def format_decimal(value: Decimal) -> str:
    return _fmt(value)
