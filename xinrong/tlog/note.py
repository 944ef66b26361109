"""C2SP signed notes (c2sp.org/signed-note) and transparency-log checkpoints (c2sp.org/tlog-checkpoint).

A checkpoint is the note text

    <origin>
    <tree size, decimal, no leading zeros>
    <base64 RFC 6962 root hash>
    [extension lines]

followed by a blank line and one signature line per signer,
``— <key name> base64(key ID || Ed25519 signature)``, where
``key ID = SHA-256(key name || 0x0A || 0x01 || public key)[:4]``. The log's
key name is its origin. Anyone can verify a checkpoint with their own code
from the origin and the 32-byte public key (``verifier_key`` prints them in
the Go ``note`` package's verifier-key form, ``name+hexid+base64(0x01||key)``).

Parsing is strict: what does not follow the grammar is refused, and a note
with no valid signature from the expected key is refused; signatures from
unknown keys are ignored, as the spec requires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from xinrong.errors import SignatureError
from xinrong.keys.signing import SigningKey, VerifyKey
from xinrong.tlog.merkle import HASH_SIZE

ED25519 = 0x01
DASH = "\u2014"
MAX_NOTE_BYTES = 64 * 1024
MAX_SIGNATURES = 16

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_NAME = re.compile(r"[^\s+]+")


class NoteError(ValueError):
    """A note or checkpoint that is malformed or carries no valid signature of the expected key."""


def key_id(name: str, public_raw: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_raw).digest()[:4]


def verifier_key(name: str, public_raw: bytes) -> str:
    """The verifier key string: ``<name>+<key id hex>+<base64(0x01 || public key)>``."""
    encoded = base64.b64encode(bytes([ED25519]) + public_raw).decode()
    return f"{name}+{key_id(name, public_raw).hex()}+{encoded}"


def parse_verifier_key(text: str) -> tuple[str, bytes]:
    """(name, 32-byte Ed25519 public key) from a verifier key string."""
    try:
        name, hex_id, encoded = text.strip().split("+", 2)
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        raise NoteError("not a verifier key (name+keyid+base64)") from None
    if not _NAME.fullmatch(name) or len(raw) != 33 or raw[0] != ED25519:
        raise NoteError("not an Ed25519 verifier key")
    if key_id(name, raw[1:]).hex() != hex_id:
        raise NoteError("verifier key id does not match its key")
    return name, raw[1:]


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"


def parse_checkpoint_text(text: str) -> Checkpoint:
    if not text.endswith("\n"):
        raise NoteError("checkpoint text must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise NoteError("a checkpoint is at least three non-empty lines")
    origin, size_text, root_text, *extensions = lines
    if not _SIZE.fullmatch(size_text) or int(size_text) >= 2**63:
        raise NoteError("tree size is not a decimal number without leading zeros")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise NoteError("root hash is not base64") from None
    if len(root) != HASH_SIZE:
        raise NoteError("root hash is not 32 bytes")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


def _split_note(note: str) -> tuple[str, list[Signature]]:
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise NoteError("note too large")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("note holds a control character")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("note has no signature block")
    text, block = note[: cut + 1], note[cut + 2 :]
    if not block.endswith("\n"):
        raise NoteError("signature block must end in a newline")
    signatures: list[Signature] = []
    for line in block[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH or not _NAME.fullmatch(parts[1]):
            raise NoteError("malformed signature line")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise NoteError("signature is not base64") from None
        if len(raw) < 5:
            raise NoteError("signature too short")
        signatures.append(Signature(parts[1], raw[:4], raw[4:]))
    if not signatures or len(signatures) > MAX_SIGNATURES:
        raise NoteError("a note carries 1 to 16 signatures")
    return text, signatures


def sign_note(text: str, name: str, key: SigningKey) -> str:
    """The signed note: text, blank line, one Ed25519 signature line."""
    signature = key.sign_note(text.encode())
    encoded = base64.b64encode(key_id(name, key.public_raw) + signature).decode()
    return f"{text}\n{DASH} {name} {encoded}\n"


def verify_note(note: str, name: str, public_raw: bytes) -> str:
    """The note's text if a signature by (name, key) verifies; NoteError otherwise.

    Signatures of other keys are ignored; a signature of this key that does
    not verify rejects the whole note.
    """
    text, signatures = _split_note(note)
    wanted = key_id(name, public_raw)
    verifier = VerifyKey(public_raw)
    mine = [s for s in signatures if s.name == name and s.key_id == wanted]
    if not mine:
        raise NoteError(f"no signature by {name}")
    for s in mine:
        try:
            verifier.verify_note(text.encode(), s.signature)
        except SignatureError:
            raise NoteError(f"a signature by {name} does not verify") from None
    return text


def sign_checkpoint(checkpoint: Checkpoint, key: SigningKey) -> str:
    return sign_note(checkpoint.text(), checkpoint.origin, key)


def open_checkpoint(note: str, origin: str, public_raw: bytes) -> Checkpoint:
    """A checkpoint note of ``origin`` signed by its key, parsed; NoteError otherwise."""
    checkpoint = parse_checkpoint_text(verify_note(note, origin, public_raw))
    if checkpoint.origin != origin:
        raise NoteError(f"checkpoint of {checkpoint.origin!r}, not {origin!r}")
    return checkpoint


__all__ = [
    "Checkpoint",
    "NoteError",
    "key_id",
    "open_checkpoint",
    "parse_checkpoint_text",
    "parse_verifier_key",
    "sign_checkpoint",
    "sign_note",
    "verifier_key",
    "verify_note",
]
