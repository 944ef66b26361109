"""Bytes: SEAL's own serialization kept in memory, and the framing of payloads and keys.

See docs/CKKS.md, "Serialization". Nothing here is pickled.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import threading
from typing import Any

from xinrong.modeling.he.base import unpack_blobs
from xinrong.modeling.he.ckks.params import CKKSParams, SealContext

# Payloads: a header (magic, version, kind, key id), the kind's fields, then
# SEAL ciphertexts as length-prefixed blobs (``base.pack_blobs``).
MAGIC = b"XRCK"
VERSION = 2
KIND_VECTOR = 1
KIND_COLUMN_SUMS = 2
KIND_TOTAL = 3
HEADER = struct.Struct(">4sBB16s")  # magic, version, kind, key id
VEC_FIELDS = struct.Struct(">QI")  # length, ciphertext count
COL_FIELDS = struct.Struct(">IIII")  # k, block length, columns per ciphertext (2 per block), ciphertexts
TOTAL_FIELDS = struct.Struct(">QI")  # length, ciphertext count
# Key exports: a magic, then blobs (parameters JSON, SEAL keys).
PUBLIC_MAGIC = b"XRCKPUB2"
SECRET_MAGIC = b"XRCKSEC2"
# Upper bound on the number of columns in one masked payload (sanity check
# on untrusted headers before any allocation).
MAX_COLUMNS = 1 << 16

_SCRATCH_LOCK = threading.Lock()
_SCRATCH_DIR: tempfile.TemporaryDirectory[str] | None = None
_HAVE_MEMFD = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


def _scratch_file() -> tuple[int, str, str | None]:
    """An empty file SEAL can open by path: (fd, path, path to unlink afterwards).

    Linux: an anonymous memfd, reachable only through this process's
    ``/proc/self/fd``; it lives in RAM and vanishes on close. Elsewhere: a
    file in a private (0700) temporary directory, unlinked right after use.
    """
    if _HAVE_MEMFD:
        fd = os.memfd_create("xinrong-ckks", os.MFD_CLOEXEC)
        return fd, f"/proc/self/fd/{fd}", None
    global _SCRATCH_DIR
    with _SCRATCH_LOCK:
        if _SCRATCH_DIR is None:
            _SCRATCH_DIR = tempfile.TemporaryDirectory(prefix="xinrong-ckks-")
        directory = _SCRATCH_DIR.name
    fd, path = tempfile.mkstemp(dir=directory)
    return fd, path, path


def seal_save(obj: Any) -> bytes:
    """SEAL's own serialization of a ciphertext or key, as bytes."""
    fd, path, unlink = _scratch_file()
    try:
        obj.save(path)
        size = os.fstat(fd).st_size
        chunks = []
        offset = 0
        while offset < size:
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                raise OSError("short read from the serialization buffer")
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
        if unlink is not None:
            os.unlink(unlink)


def seal_load(obj: Any, context: SealContext, data: bytes, what: str) -> None:
    """Load SEAL bytes into ``obj``; SEAL checks them against ``context`` (``is_valid_for``)."""
    fd, path, unlink = _scratch_file()
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        obj.load(context, path)
    except (RuntimeError, ValueError, TypeError) as exc:  # SEAL's validation failures
        raise ValueError(f"malformed CKKS {what}") from exc
    finally:
        os.close(fd)
        if unlink is not None:
            os.unlink(unlink)


def derive_key_id(params: CKKSParams, public_key_blob: bytes) -> bytes:
    """16 bytes binding the parameters and the public key (not the relinearization keys)."""
    digest = hashlib.sha256(b"xinrong/ckks/key-id\x00" + params.to_json() + b"\x00" + public_key_blob)
    return digest.digest()[:16]


def split_blobs(data: bytes, magic: bytes, count: int, what: str) -> list[bytes]:
    """The ``count`` blobs of a key export after its ``magic``; anything else is refused."""
    if not data.startswith(magic):
        raise ValueError(f"not a CKKS {what}")
    blobs = unpack_blobs(data[len(magic) :])
    if len(blobs) != count:
        raise ValueError(f"malformed CKKS {what}")
    return blobs
