"""Sealed boxes between the bank and the providers, and the node's check before it relays one.

The protocol code seals and opens through ``Sealer``; ``HpkeSealer`` is the
one implementation (``xinrong.keys.sealing``: HPKE to the recipient's
X25519 key, bound to content type, recipient and context). Production
gives it the party's own key and the CA-checked keys of the job's other
parties; the in-process simulator gives it throwaway keys. Either way the
boxes are real, and the node only ever holds their bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from xinrong.keys.sealing import SealingKey, seal
from xinrong.modeling.vlr.errors import ProtocolViolation
from xinrong.v1 import common_pb2


class Sealer(Protocol):
    """Seal to another party of the job; open what was sealed to this one."""

    def seal(self, plaintext: bytes, *, to: str, content_type: str, context: str) -> bytes:
        """A serialized ``SealedBox`` only ``to`` can open."""
        ...

    def open(self, box: common_pb2.SealedBox, *, content_type: str, context: str) -> bytes:
        """The plaintext of a box sealed to this party; ``SignatureError`` if it is not one."""
        ...


class HpkeSealer:
    """HPKE boxes to the job's other parties, opened with this party's own key."""

    def __init__(self, party_id: str, key: SealingKey, recipients: Mapping[str, bytes]) -> None:
        self.party_id = party_id
        self._key = key
        self._recipients = dict(recipients)  # party id -> raw X25519 public key

    def seal(self, plaintext: bytes, *, to: str, content_type: str, context: str) -> bytes:
        box = seal(
            plaintext,
            recipient_id=to,
            recipient_public_raw=self._recipients[to],
            content_type=content_type,
            context=context,
        )
        return box.SerializeToString()

    def open(self, box: common_pb2.SealedBox, *, content_type: str, context: str) -> bytes:
        return self._key.open(box, recipient_id=self.party_id, content_type=content_type, context=context)


def parse_box(blob: bytes, error: Exception) -> common_pb2.SealedBox:
    """The ``SealedBox`` in ``blob``, or ``error`` raised if the bytes are not one."""
    try:
        return common_pb2.SealedBox.FromString(blob)
    except Exception:
        raise error from None


def check_box(blob: bytes, *, recipient: str, content_type: str, context: str, what: str) -> None:
    """The node refuses to relay a sealed box that is visibly not the one the protocol expects."""
    box = parse_box(blob, ProtocolViolation(f"{what}: not a sealed box"))
    if (
        box.recipient_id != recipient
        or box.content_type != content_type
        or box.context != context
        or not box.ciphertext
    ):
        raise ProtocolViolation(f"{what}: not sealed to {recipient} as {content_type} for this batch")
