"""The bytes of one audit-log leaf: what the node hashes and what any party can recompute.

An enterprise shown an access entry rebuilds the leaf from the entry's
fields (plus its own USCC) and checks the inclusion proof on the hash of
these bytes, so the encoding lives here, below every party: canonical JSON
with sorted keys, no whitespace, ASCII only, version 1. Byte for byte what
``json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``
gives (``tests/test_node_audit.py`` compares), spelled out because the node
runs it once per request on its loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from json.encoder import encode_basestring_ascii as _str  # what json's encoder applies to str

from xinrong.jsontext import string_array


def audit_leaf(
    *,
    seq: int,
    ts_ms: int,
    caller_role: str,
    caller_id: str,
    method: str,
    request_id: str,
    enterprise: str,
    consent_id: str,
    providers: Sequence[str],
    fields: Sequence[str],
    claims_sha256: str,
    decision: str,
    reason: str,
) -> bytes:
    """The canonical leaf of audit entry ``seq`` (its leaf index is ``seq - 1``)."""
    return audit_leaf_encoded(
        seq,
        ts_ms,
        caller_role,
        caller_id,
        method,
        request_id,
        enterprise,
        consent_id,
        string_array(providers),
        string_array(fields),
        claims_sha256,
        decision,
        reason,
    )


def audit_leaf_encoded(
    seq: int,
    ts_ms: int,
    caller_role: str,
    caller_id: str,
    method: str,
    request_id: str,
    enterprise: str,
    consent_id: str,
    providers_json: str,
    fields_json: str,
    claims_sha256: str,
    decision: str,
    reason: str,
) -> bytes:
    """As ``audit_leaf``, the two lists given already as ``string_array`` JSON (as the node stores them)."""
    return (
        '{"caller_id":'
        + _str(caller_id)
        + ',"caller_role":'
        + _str(caller_role)
        + ',"claims_sha256":'
        + _str(claims_sha256)
        + ',"consent_id":'
        + _str(consent_id)
        + ',"decision":'
        + _str(decision)
        + ',"enterprise":'
        + _str(enterprise)
        + ',"fields":'
        + fields_json
        + ',"method":'
        + _str(method)
        + ',"providers":'
        + providers_json
        + ',"reason":'
        + _str(reason)
        + ',"request_id":'
        + _str(request_id)
        + ',"seq":'
        + str(int(seq))
        + ',"ts_ms":'
        + str(int(ts_ms))
        + ',"v":1}'
    ).encode("ascii")


__all__ = ["audit_leaf", "audit_leaf_encoded"]
