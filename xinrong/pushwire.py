"""What the node signs on the push stream; one definition for the node and the banks.

* each event: Ed25519 over ``EVENT_CONTEXT || 0x00 || <serialized xinrong.v1.Event>``
  (signed at append; verifiable alone, offline);
* each response: Ed25519 over ``RESPONSE_CONTEXT || 0x00 || response_message(...)``,
  which binds the cursor, the head, the subscriber and the SHA-256 of every
  event in the response, so a subscriber checks one signature per response
  instead of one per event.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

EVENT_CONTEXT = "xinrong.v1.Event"
RESPONSE_CONTEXT = "xinrong.v1.SubscribeResponse"


def response_message(cursor: int, head: int, subscriber: str, events: Iterable[bytes]) -> bytes:
    """The bytes a SubscribeResponse's ``response_signature`` covers (after the context)."""
    parts = [struct.pack(">QQ", cursor, head), subscriber.encode("utf-8"), b"\x00"]
    parts.extend(hashlib.sha256(body).digest() for body in events)
    return b"".join(parts)


__all__ = ["EVENT_CONTEXT", "RESPONSE_CONTEXT", "response_message"]
