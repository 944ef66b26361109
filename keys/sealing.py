"""Sealed boxes: payloads the node relays but must not read.

HPKE (RFC 9180) base mode from ``cryptography``: DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, AES-256-GCM. The HPKE ``info`` binds the content type, the
recipient and a caller context (request id, job id), so a box cannot be
replayed under another request or opened as another message type.

Two schemes (``SealingScheme`` in common.proto):

``HPKE``: one single-shot HPKE encryption per box (``seal``). Used where
boxes are few (modeling rounds).

``HPKE_SESSION``: what a provider agent answers with (``SessionSealer``).
An HPKE encryption costs two X25519 operations, ~130 µs, which was a third of
an agent's CPU per verified claim. A session instead draws a random 256-bit
AES-GCM key, seals it once to the recipient with HPKE (``wrapped_key``; the
HPKE info binds content type and recipient), and seals each box with
AES-256-GCM under that key: the nonce is the session's counter (unique by
construction, never random), and the associated data binds content type,
recipient, context and the wrapped key. The recipient unwraps a session key
once and caches it. What this gives up against one HPKE per box, and why it
is acceptable:

* Boxes of one session share ``wrapped_key``, so a relay can tell they go to
  the same recipient: the relay routes them and reads ``recipient_id`` in
  clear anyway.
* The session key lives in the sender's memory for at most ``max_age``
  seconds or ``max_boxes`` boxes, and never on disk. Whoever reads that
  memory holds the sender's raw data already.
* Against compromise of the recipient's X25519 key, both schemes are equal:
  HPKE base mode has no forward secrecy against the recipient key.

Padding. AEAD ciphertexts are as long as their plaintexts, and the relaying
node knows what it routed (the field, the form), so an answer whose encoding
length varies (a bracket's edges, a grade's name) would be read off the box
length. Every plaintext is therefore padded here, before either scheme seals
it, to a length chosen by the sender from what the node already knows:
``pad_to`` (e.g. items in the request times a fixed per-item bucket), or by
default the next size of a fixed ladder (powers of two from 256 bytes, then
multiples of 64 KiB). Padding is ISO/IEC 7816-4: a 0x80 byte, then zeros;
``open`` removes it and refuses a box whose padding is malformed.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xinrong.errors import KeyFileError, SignatureError
from xinrong.keys.files import read_private_file, write_private_file
from xinrong.keys.signing import key_id_of
from xinrong.v1 import common_pb2

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_NONCE_BYTES = 12
_SESSION_KEY_BYTES = 32


_PAD_MARKER = 0x80
MIN_PADDED_BYTES = 256
_PAD_STEP = 64 * 1024


def padded_length(length: int, pad_to: int | None = None) -> int:
    """The length a plaintext of ``length`` bytes is padded to.

    With ``pad_to``: the smallest multiple of it that holds the plaintext and
    the marker byte (callers choose ``pad_to`` so every possible answer to a
    request fits in one). Without: the default ladder.
    """
    needed = length + 1
    if pad_to is not None:
        if pad_to <= 0:
            raise ValueError("pad_to must be positive")
        return -(-needed // pad_to) * pad_to
    if needed <= _PAD_STEP:
        return max(MIN_PADDED_BYTES, 1 << (needed - 1).bit_length())
    return -(-needed // _PAD_STEP) * _PAD_STEP


def pad(plaintext: bytes, pad_to: int | None = None) -> bytes:
    """``plaintext`` || 0x80 || zeros, to ``padded_length``."""
    size = padded_length(len(plaintext), pad_to)
    return plaintext + b"\x80" + bytes(size - len(plaintext) - 1)


def unpad(padded: bytes) -> bytes:
    """The plaintext inside ``pad``'s output; ``SignatureError`` if the padding is malformed."""
    body = padded.rstrip(b"\x00")
    if not body or body[-1] != _PAD_MARKER:
        raise SignatureError("sealed box has malformed padding")
    return body[:-1]


def _info(content_type: str, recipient_id: str, context: str) -> bytes:
    return b"\x00".join([b"xinrong.v1.SealedBox", content_type.encode(), recipient_id.encode(), context.encode()])


def _wrap_info(content_type: str, recipient_id: str) -> bytes:
    return b"\x00".join([b"xinrong.v1.SessionKey", content_type.encode(), recipient_id.encode()])


def _session_aad(content_type: str, recipient_id: str, context: str, wrapped_key: bytes) -> bytes:
    return _info(content_type, recipient_id, context) + b"\x00" + wrapped_key


class SealingKey:
    """An X25519 private key that opens boxes sealed to its party."""

    __slots__ = ("_key", "_sessions", "_sessions_lock", "key_id", "public_raw")

    #: Unwrapped session keys kept per recipient key: one per sender and
    #: content type in use, so a bank talking to every provider needs a few.
    SESSION_CACHE_SIZE = 256

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key
        self._sessions: OrderedDict[tuple[bytes, str, str], AESGCM] = OrderedDict()
        self._sessions_lock = threading.Lock()
        self.public_raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = key_id_of(self.public_raw)

    @classmethod
    def generate(cls) -> SealingKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | Path) -> SealingKey:
        data = read_private_file(path)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError:
            raise KeyFileError(f"{path} is not a PEM private key") from None
        if not isinstance(key, X25519PrivateKey):
            raise KeyFileError(f"{path} is not an X25519 private key")
        return cls(key)

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private_file(path, pem, overwrite=overwrite)

    def open(self, box: common_pb2.SealedBox, *, recipient_id: str, content_type: str, context: str) -> bytes:
        """Open a box addressed to recipient_id; one opaque error for every failure."""
        if box.recipient_id != recipient_id or box.content_type != content_type or box.context != context:
            raise SignatureError("sealed box is not addressed to this recipient, type or context")
        if box.scheme == common_pb2.SEALING_SCHEME_HPKE:
            try:
                padded = _SUITE.decrypt(box.ciphertext, self._key, info=_info(content_type, recipient_id, context))
            except Exception:  # cryptography raises InvalidTag and others; all mean "cannot open"
                raise SignatureError("sealed box cannot be opened") from None
            return unpad(padded)
        if box.scheme == common_pb2.SEALING_SCHEME_HPKE_SESSION:
            if len(box.ciphertext) < _NONCE_BYTES:
                raise SignatureError("sealed box cannot be opened")
            aead = self._session(box.wrapped_key, content_type, recipient_id)
            try:
                padded = aead.decrypt(
                    box.ciphertext[:_NONCE_BYTES],
                    box.ciphertext[_NONCE_BYTES:],
                    _session_aad(content_type, recipient_id, context, box.wrapped_key),
                )
            except Exception:
                raise SignatureError("sealed box cannot be opened") from None
            return unpad(padded)
        raise SignatureError("sealed box has no known sealing scheme")

    def agree(self, peer_public_raw: bytes) -> bytes:
        """Raw X25519 agreement with a peer's CA-bound sealing key (callers must run it through a KDF).

        For pairwise secrets between two parties that the relaying node must
        not know, e.g. the zero-sum masks of full-coverage evaluation.
        """
        try:
            return self._key.exchange(X25519PublicKey.from_public_bytes(peer_public_raw))
        except ValueError:
            raise SignatureError("peer sealing key is not a valid X25519 key") from None

    def _session(self, wrapped_key: bytes, content_type: str, recipient_id: str) -> AESGCM:
        """The session key under a wrapped key, unwrapped once.

        The cache key holds content type and recipient as well as the wrapped
        bytes: the HPKE info binds both, and a hit must not skip that check.
        """
        cache_key = (wrapped_key, content_type, recipient_id)
        with self._sessions_lock:
            aead = self._sessions.get(cache_key)
            if aead is not None:
                self._sessions.move_to_end(cache_key)
                return aead
        try:
            key = _SUITE.decrypt(wrapped_key, self._key, info=_wrap_info(content_type, recipient_id))
        except Exception:
            raise SignatureError("sealed box cannot be opened") from None
        if len(key) != _SESSION_KEY_BYTES:
            raise SignatureError("sealed box cannot be opened")
        aead = AESGCM(key)
        with self._sessions_lock:
            self._sessions[cache_key] = aead
            while len(self._sessions) > self.SESSION_CACHE_SIZE:
                self._sessions.popitem(last=False)
        return aead

    def __repr__(self) -> str:
        return f"SealingKey(key_id={self.key_id})"


@lru_cache(maxsize=1024)
def _recipient(public_raw: bytes) -> tuple[X25519PublicKey, str]:
    """The parsed key and its id; an agent seals to the same few banks all day."""
    return X25519PublicKey.from_public_bytes(public_raw), key_id_of(public_raw)


def seal(
    plaintext: bytes,
    *,
    recipient_id: str,
    recipient_public_raw: bytes,
    content_type: str,
    context: str,
    pad_to: int | None = None,
) -> common_pb2.SealedBox:
    """Seal plaintext, padded (see ``pad``), to a recipient's X25519 public key
    (taken from a CA-verified binding)."""
    public, key_id = _recipient(recipient_public_raw)
    ciphertext = _SUITE.encrypt(pad(plaintext, pad_to), public, info=_info(content_type, recipient_id, context))
    return common_pb2.SealedBox(
        recipient_id=recipient_id,
        recipient_key_id=key_id,
        content_type=content_type,
        context=context,
        ciphertext=ciphertext,
        scheme=common_pb2.SEALING_SCHEME_HPKE,
    )


@dataclass
class _Session:
    aead: AESGCM
    wrapped_key: bytes
    key_id: str
    started: float
    pid: int
    boxes: int = field(default=0)


class SessionSealer:
    """Seals many boxes to the same few recipients (``HPKE_SESSION``).

    One per sending process; thread-safe. A session is per recipient id,
    recipient key and content type, and ends after ``max_boxes`` boxes or
    ``max_age`` seconds, whichever comes first; the next box starts a new one
    with a fresh key. The counter nonce is unique within a session because
    the counter is taken under the lock and a session key is never reused
    across sessions or processes (it is random and lives only in memory; a
    process forked with a sealer starts its own sessions).
    """

    def __init__(
        self,
        *,
        max_boxes: int = 1 << 20,
        max_age: float = 300.0,
        max_sessions: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < max_boxes < 1 << 64:
            raise ValueError("max_boxes must be in 1..2**64-1")
        if max_age <= 0 or max_sessions <= 0:
            raise ValueError("max_age and max_sessions must be positive")
        self._max_boxes = max_boxes
        self._max_age = max_age
        self._max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[tuple[str, bytes, str], _Session] = OrderedDict()

    def _new_session(self, recipient_id: str, recipient_public_raw: bytes, content_type: str, now: float) -> _Session:
        public, key_id = _recipient(recipient_public_raw)
        key = AESGCM.generate_key(bit_length=8 * _SESSION_KEY_BYTES)
        wrapped = _SUITE.encrypt(key, public, info=_wrap_info(content_type, recipient_id))
        return _Session(aead=AESGCM(key), wrapped_key=wrapped, key_id=key_id, started=now, pid=os.getpid())

    def seal(
        self,
        plaintext: bytes,
        *,
        recipient_id: str,
        recipient_public_raw: bytes,
        content_type: str,
        context: str,
        pad_to: int | None = None,
    ) -> common_pb2.SealedBox:
        """Seal plaintext, padded (see ``pad``), to a recipient's X25519 public
        key (taken from a CA-verified binding)."""
        slot = (recipient_id, recipient_public_raw, content_type)
        now = self._clock()
        with self._lock:
            session = self._sessions.get(slot)
            if (
                session is None
                or session.boxes >= self._max_boxes
                or now - session.started >= self._max_age
                # A forked child must never continue its parent's counter
                # under the parent's key: that would repeat nonces.
                or session.pid != os.getpid()
            ):
                # Two X25519 operations under the lock, once per session.
                session = self._new_session(recipient_id, recipient_public_raw, content_type, now)
                self._sessions[slot] = session
                while len(self._sessions) > self._max_sessions:
                    self._sessions.popitem(last=False)
            counter = session.boxes
            session.boxes = counter + 1
        nonce = counter.to_bytes(_NONCE_BYTES, "big")
        sealed = session.aead.encrypt(
            nonce, pad(plaintext, pad_to), _session_aad(content_type, recipient_id, context, session.wrapped_key)
        )
        return common_pb2.SealedBox(
            recipient_id=recipient_id,
            recipient_key_id=session.key_id,
            content_type=content_type,
            context=context,
            ciphertext=nonce + sealed,
            scheme=common_pb2.SEALING_SCHEME_HPKE_SESSION,
            wrapped_key=session.wrapped_key,
        )


def open_sealed(
    key: SealingKey, box: common_pb2.SealedBox, *, recipient_id: str, content_type: str, context: str
) -> bytes:
    return key.open(box, recipient_id=recipient_id, content_type=content_type, context=context)
