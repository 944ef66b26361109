"""Syntax of the ids callers choose: one validator for node and agents.

Request and consent ids are chosen by the caller and end up in audit
entries, replay tables and agents' answer logs. Node and agents once held
separate patterns, matched with ``^...$`` (which accepts a trailing
newline), so an id could pass the node, consume a use and then be refused
by the agent. Every check here is a ``fullmatch``.
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 128

# Request ids: letters and digits first, then a few separators (uuid4, ULID,
# "r-<uuid>", "job:step:n"); no whitespace, quotes or control characters.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# Consent ids are chosen by the enterprise and signed: any printable ASCII.
_CONSENT_ID = re.compile(r"[\x21-\x7e]{1,128}")


# A decimal number as callers and files write it: ASCII digits only. ``str.isdigit``
# is true for superscripts, Arabic-Indic and full-width digits too, and ``int()`` then raises (a crash where a
# refusal was meant) or reads a number the caller never wrote in ASCII.
_DECIMAL = re.compile(r"[0-9]{1,19}")


def decimal(value: str, *, max_digits: int = 19) -> int | None:
    """``value`` as a non-negative int if it is 1..``max_digits`` ASCII digits, else None."""
    if len(value) > max_digits or _DECIMAL.fullmatch(value) is None:
        return None
    return int(value)


# What a refusal of a request id says (the caller's own bytes: no oracle).
REQUEST_ID_RULE = (
    "request_id must be 1 to 128 ASCII characters: a letter or digit, then letters, digits, '.', '_', ':' or '-'"
)


def is_request_id(value: str) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


def is_consent_id(value: str) -> bool:
    return _CONSENT_ID.fullmatch(value) is not None


def safe_request_id(value: str) -> str:
    """The id if well formed, else "": what an audit entry may hold of caller-chosen text."""
    return value if is_request_id(value) else ""


def safe_consent_id(value: str) -> str:
    return value if is_consent_id(value) else ""


__all__ = [
    "MAX_ID_LENGTH",
    "REQUEST_ID_RULE",
    "decimal",
    "is_consent_id",
    "is_request_id",
    "safe_consent_id",
    "safe_request_id",
]
