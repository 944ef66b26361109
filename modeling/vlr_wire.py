"""Explicit, pickle-free encoding of the protocol's messages.

Every message of ``xinrong.modeling.vlr.messages`` is a frozen dataclass whose fields are
numbers, strings, booleans, bytes, or tuples of those. ``encode`` writes a
JSON header (everything but bytes; ``allow_nan=False``) followed by the byte
fields as length-prefixed blobs (``xinrong.modeling.he.base.pack_blobs``), and
``decode`` checks every field's type on the way back. The gRPC layer can
carry these bytes as-is or map the same fields onto protobuf messages; the
in-process simulator round-trips every message through them, so what is tested
is what would cross the wire, and byte counts are honest.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from xinrong.errors import ValidationError
from xinrong.modeling.he.base import pack_blobs, unpack_blobs

T = TypeVar("T")
_MAGIC = b"XRVLR1"
_MAX_HEADER = 1 << 20


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _is_bytes_type(tp: Any) -> bool:
    return tp is bytes or (get_origin(tp) is tuple and get_args(tp)[:1] == (bytes,))


def encode(msg: Any) -> bytes:
    """Message -> bytes; refuses non-finite floats and unknown field types."""
    if not dataclasses.is_dataclass(msg) or isinstance(msg, type):
        raise TypeError("only protocol dataclass instances can be encoded")
    hints = _hints(type(msg))
    header: dict[str, Any] = {"type": type(msg).__name__}
    blobs: list[bytes] = []
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        tp = hints[f.name]
        if _is_bytes_type(tp):
            items = [value] if tp is bytes else list(value)
            if not all(isinstance(b, bytes) for b in items):
                raise TypeError(f"field {f.name} must hold bytes")
            header[f.name] = len(items) if tp is not bytes else -1
            blobs.extend(items)
        else:
            header[f.name] = list(value) if isinstance(value, tuple) else value
    text = json.dumps(header, sort_keys=True, allow_nan=False, separators=(",", ":")).encode()
    return pack_blobs([_MAGIC, text, *blobs])


def _check_scalar(name: str, tp: Any, value: Any) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"field {name}: expected a boolean")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"field {name}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"field {name}: expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"field {name}: expected a string")
        return value
    raise TypeError(f"field {name}: unsupported type {tp!r}")


def _check_value(name: str, tp: Any, value: Any) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        if len(args) != 1:
            raise TypeError(f"field {name}: unsupported union {tp!r}")
        return _check_value(name, args[0], value)
    if origin is tuple:
        targs = get_args(tp)
        if len(targs) != 2 or targs[1] is not Ellipsis:
            raise TypeError(f"field {name}: only homogeneous tuples are supported")
        if not isinstance(value, list):
            raise ValueError(f"field {name}: expected a list")
        return tuple(_check_scalar(name, targs[0], v) for v in value)
    return _check_scalar(name, tp, value)


def decode(cls: type[T], data: bytes) -> T:
    """bytes -> message of type ``cls``; any mismatch raises ValueError."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError("decode needs a protocol dataclass type")
    blobs = unpack_blobs(data)
    if len(blobs) < 2 or blobs[0] != _MAGIC:
        raise ValueError("not a protocol message")
    if len(blobs[1]) > _MAX_HEADER:
        raise ValueError("message header too large")
    try:
        header = json.loads(blobs[1])
    except json.JSONDecodeError as exc:
        raise ValueError("malformed message header") from exc
    if not isinstance(header, dict) or header.get("type") != cls.__name__:
        raise ValueError(f"expected a {cls.__name__} message")
    hints = _hints(cls)
    rest = blobs[2:]
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in header:
            raise ValueError(f"message lacks field {f.name}")
        tp = hints[f.name]
        if _is_bytes_type(tp):
            count = header[f.name]
            if tp is bytes:
                if count != -1 or not rest:
                    raise ValueError(f"field {f.name}: malformed bytes field")
                kwargs[f.name], rest = rest[0], rest[1:]
            else:
                if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= len(rest):
                    raise ValueError(f"field {f.name}: malformed bytes list")
                kwargs[f.name], rest = tuple(rest[:count]), rest[count:]
        else:
            kwargs[f.name] = _check_value(f.name, tp, header[f.name])
    if rest:
        raise ValueError("trailing blobs in message")
    extra = set(header) - {f.name for f in dataclasses.fields(cls)} - {"type"}
    if extra:
        raise ValueError(f"unknown fields {sorted(extra)}")
    result: T = cls(**kwargs)
    return result


def decode_for_job(cls: type[T], data: bytes, job_id: str) -> T:
    """``decode`` for a body that arrived in an RPC naming ``job_id``: a
    malformed body, or one carrying another job's id, is the caller's
    error (INVALID_ARGUMENT), never an internal one."""
    try:
        msg = decode(cls, data)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"body is not a {cls.__name__}: {exc}") from None
    if getattr(msg, "job_id", job_id) != job_id:
        raise ValidationError("body is for another job than the request names")
    return msg


__all__ = ["decode", "decode_for_job", "encode"]
