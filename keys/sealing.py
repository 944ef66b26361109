"""Sealed boxes: payloads the node relays but must not read.

HPKE (RFC 9180) base mode from ``cryptography``: DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, AES-256-GCM. The HPKE ``info`` binds the content type, the
recipient and a caller context (request id, job id), so a box cannot be
replayed under another request or opened as another message type.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from keys.files import read_private_file, write_private_file
from keys.signing import key_id_of
from xinrong.errors import KeyFileError, SignatureError
from xinrong.v1 import common_pb2

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _info(content_type: str, recipient_id: str, context: str) -> bytes:
    return b"\x00".join(
        [b"xinrong.v1.SealedBox", content_type.encode(), recipient_id.encode(), context.encode()]
    )


class SealingKey:
    """An X25519 private key that opens boxes sealed to its party."""

    __slots__ = ("_key", "public_raw", "key_id")

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key
        self.public_raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
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
        try:
            return _SUITE.decrypt(box.ciphertext, self._key, info=_info(content_type, recipient_id, context))
        except Exception:  # cryptography raises InvalidTag and others; all mean "cannot open"
            raise SignatureError("sealed box cannot be opened") from None

    def __repr__(self) -> str:
        return f"SealingKey(key_id={self.key_id})"


@lru_cache(maxsize=1024)
def _recipient(public_raw: bytes) -> tuple[X25519PublicKey, str]:
    """The parsed key and its id; an agent seals to the same few banks all day."""
    return X25519PublicKey.from_public_bytes(public_raw), key_id_of(public_raw)


def seal(
    plaintext: bytes, *, recipient_id: str, recipient_public_raw: bytes, content_type: str, context: str
) -> common_pb2.SealedBox:
    """Seal plaintext to a recipient's X25519 public key (taken from a CA-verified binding)."""
    public, key_id = _recipient(recipient_public_raw)
    ciphertext = _SUITE.encrypt(plaintext, public, info=_info(content_type, recipient_id, context))
    return common_pb2.SealedBox(
        recipient_id=recipient_id,
        recipient_key_id=key_id,
        content_type=content_type,
        context=context,
        ciphertext=ciphertext,
    )


def open_sealed(
    key: SealingKey, box: common_pb2.SealedBox, *, recipient_id: str, content_type: str, context: str
) -> bytes:
    return key.open(box, recipient_id=recipient_id, content_type=content_type, context=context)
