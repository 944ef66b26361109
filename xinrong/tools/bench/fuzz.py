"""``xinrong bench fuzz``: every RPC of every service, fuzzed over mTLS against real servers.

The fuzzer stands up its own platform (``xinrong.tools.localnet``: keys,
data, a tax agent with joint modeling enabled and the node, as processes,
in a temporary directory) and drives every method of every service in
``xinrong.v1`` with hypothesis-generated inputs. Services and methods come
from the protobuf descriptors, so a new RPC joins without an edit here; the
server hosting a service is found by asking each server's gRPC health for
the service's name, and the roles allowed to call a method by probing it
once with an empty request from every role's certificate.

Inputs are wire bytes sent through a generic stub
(``request_serializer=lambda b: b``), so nothing a client library would
refuse to encode is out of reach:

- undecodable bytes: random garbage, truncated varints, bad wire types, a
  string field holding invalid UTF-8, valid messages cut or bit-flipped;
- structurally valid messages built from the request's descriptor, with
  extreme values: strings and bytes up to a few MB, up to 10,000 repeated
  elements, invalid UTF-8 in any string at any depth, boundary and
  out-of-range integers, enums outside their range, NaN and infinities,
  empty everything, unknown fields, duplicate fields;
- valid requests of the platform (a real consent, a real claim) merged with
  fuzzed fields (protobuf merges concatenated messages), so inputs also get
  past the first checks;
- a share of every method's inputs from a role that may not call it, which
  must be refused (PERMISSION_DENIED) whatever the bytes are.

How the inputs are made, and sent, so that 10,000 per RPC over every RPC
fits in about 20 minutes on two cores (hypothesis alone draws a few hundred
inputs a second, and a thread per call held the first version to ~90 inputs/s):

- hypothesis draws ``--drawn`` inputs per RPC (generate phase only, no
  database, no shrinking, fixed seed), on one thread of its own;
- a deterministic mutation stage (``Mutator``) breeds the rest from those
  seeds at the wire level, knowing the request's descriptor: seeds spliced or
  merged, fields dropped, one field repeated up to 10,000 times, a field at
  any depth set to an extreme value of its type (huge, invalid UTF-8,
  boundary ints, out-of-range enums, NaN, empty), wrong wire types, unknown
  fields, byte-level damage; the JSON says how many inputs were drawn and how
  many mutated, and by which operator;
- inputs go out through grpc.aio, many in flight per server (``CONCURRENCY``,
  below each server's call budget; a call the budget refuses is sent again);
  client streams use the synchronous stub on threads (see ``AioCaller.call``);
- the servers are fuzzed in parallel, each one RPC at a time.

Per RPC the result counts status codes, UNKNOWN and INTERNAL answers (never
acceptable: a bad input deserves a precise status) and the tracebacks the
hosting server logged while that RPC was fuzzed (the log is read once per
RPC, from where it stood when the RPC started); a server is fuzzed one RPC
after the other, so a traceback in its log is attributed to the RPC being
fuzzed there (a traceback the agent logs for a call the node relayed lands on
the agent RPC in flight; ``--one-server-at-a-time`` rules that out). The
resident memory of every server process is read before and after each RPC
and the whole run, and the CPU time each process spent while fuzzing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing
import os
import pkgutil
import random
import resource
import struct
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from xinrong import v1 as v1_package
from xinrong.claims import parse_claim
from xinrong.consent import parse_consent
from xinrong.enterprise.client import ConsentRequest, grant
from xinrong.errors import PUBLIC_MESSAGES, Reason
from xinrong.keys.layout import PartyCredentials
from xinrong.rpc.channel import secure_aio_channel, secure_channel
from xinrong.tools.bench.procstat import cpu_seconds
from xinrong.tools.localnet import LocalPlatform, deploy, first_enterprise, generate_data
from xinrong.tools.procs import ProcessGroup
from xinrong.v1 import node_pb2, node_pb2_grpc

FD = pb_descriptor.FieldDescriptor

# The roles a certificate can carry; every method is probed with each.
ROLES = ("institution", "enterprise", "node", "provider")
# Biggest single string or bytes value (a few MB, far below the 64 MiB transport cap).
HUGE_BYTES = 4 * 1024 * 1024
# Most elements in one repeated field, and most bytes such a run may take.
MANY_ELEMENTS = 10_000
MANY_BYTES = 4 * 1024 * 1024
# Nested messages deeper than this are left empty (descriptors may be recursive).
MAX_DEPTH = 3
TRACEBACK = b"Traceback (most recent call last)"
_GUARD_REFUSAL = PUBLIC_MESSAGES[Reason.CALLER_NOT_ALLOWED]


# --------------------------------------------------------------------------- descriptors


@dataclass(frozen=True)
class Method:
    """One RPC as the descriptors describe it."""

    service: str  # full service name, e.g. xinrong.v1.NodeService
    name: str
    input: pb_descriptor.Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def services() -> dict[str, list[Method]]:
    """Every service of every generated module in ``xinrong.v1``, by full name."""
    found: dict[str, list[Method]] = {}
    for info in pkgutil.iter_modules(v1_package.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"{v1_package.__name__}.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            found[service.full_name] = [
                Method(
                    service=service.full_name,
                    name=m.name,
                    input=m.input_type,
                    client_streaming=m.client_streaming,
                    server_streaming=m.server_streaming,
                )
                for m in service.methods
            ]
    return dict(sorted(found.items()))


# --------------------------------------------------------------------------- wire encoding


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers: ten bytes of two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


@dataclass(frozen=True)
class Huge:
    """A long value kept as a recipe (a chunk and a count) until it is encoded,
    so hypothesis never holds megabytes in its choice sequence."""

    chunk: bytes
    count: int

    def materialize(self) -> bytes:
        return self.chunk * self.count


@dataclass(frozen=True)
class Many:
    """One element of a repeated field, repeated ``count`` times on the wire."""

    element: Any
    count: int


def _payload(value: Any) -> bytes:
    if isinstance(value, Huge):
        return value.materialize()
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    assert isinstance(value, bytes)
    return value


_VARINT_TYPES = {
    FD.TYPE_INT32,
    FD.TYPE_INT64,
    FD.TYPE_UINT32,
    FD.TYPE_UINT64,
    FD.TYPE_BOOL,
    FD.TYPE_ENUM,
}
_PACKABLE = _VARINT_TYPES | {
    FD.TYPE_SINT32,
    FD.TYPE_SINT64,
    FD.TYPE_FIXED32,
    FD.TYPE_SFIXED32,
    FD.TYPE_FLOAT,
    FD.TYPE_FIXED64,
    FD.TYPE_SFIXED64,
    FD.TYPE_DOUBLE,
}


def _scalar_bytes(ftype: int, value: Any) -> tuple[int, bytes]:
    """(wire type, encoded value without tag) of one scalar."""
    if ftype in _VARINT_TYPES:
        return 0, _varint(int(value))
    if ftype in (FD.TYPE_SINT32, FD.TYPE_SINT64):
        return 0, _varint(_zigzag(int(value)))
    if ftype in (FD.TYPE_FIXED32, FD.TYPE_SFIXED32):
        return 5, struct.pack("<I", int(value) & 0xFFFFFFFF)
    if ftype == FD.TYPE_FLOAT:
        return 5, struct.pack("<f", value)
    if ftype in (FD.TYPE_FIXED64, FD.TYPE_SFIXED64):
        return 1, struct.pack("<Q", int(value) & 0xFFFFFFFFFFFFFFFF)
    if ftype == FD.TYPE_DOUBLE:
        return 1, struct.pack("<d", value)
    raise ValueError(f"not a scalar type: {ftype}")


def _encode_field(f: pb_descriptor.FieldDescriptor, value: Any) -> bytes:
    """One field occurrence (a scalar, a string/bytes, an encoded message, or a Many)."""
    if isinstance(value, Many):
        one = _encode_field(f, value.element)
        # Thousands of copies of a big element would be gigabytes: keep the run under MANY_BYTES.
        return one * max(1, min(value.count, MANY_BYTES // max(1, len(one))))
    if isinstance(value, Packed):
        body = b"".join(_scalar_bytes(f.type, v)[1] for v in value.values)
        return _length_delimited(f.number, body)
    if f.type in (FD.TYPE_STRING, FD.TYPE_BYTES, FD.TYPE_MESSAGE):
        return _length_delimited(f.number, _payload(value))
    wire_type, body = _scalar_bytes(f.type, value)
    return _tag(f.number, wire_type) + body


@dataclass(frozen=True)
class Packed:
    """Repeated scalars in one length-delimited run (the proto3 default)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Unknown:
    """A field number the message does not define, with any wire type."""

    number: int
    wire: bytes  # tag and value


def _encode_message(entries: Sequence[tuple[Any, Any]]) -> bytes:
    """Fields as (descriptor, value) in order; (None, Unknown) for an unknown field."""
    out = bytearray()
    for f, value in entries:
        if f is None:
            out += value.wire
        else:
            out += _encode_field(f, value)
    return bytes(out)


# --------------------------------------------------------------------------- strategies


_INT32 = (0, 1, -1, 2**31 - 1, -(2**31), 2**31, 2**32 - 1)
_INT64 = (0, 1, -1, 2**63 - 1, -(2**63), 2**53, 2**32, -(2**32))
_UINT64 = (0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1)
_INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"abc\xfe", b"\x80")


@dataclass
class Corpus:
    """Values that mean something to the platform, so fuzzed fields reach past the first checks.

    ``strings``: ids, codes, claims and paths in the form the servers expect;
    ``messages``: valid serialized instances by message full name (a real
    consent, a real claim); ``requests``: valid requests by method path.
    """

    strings: list[str] = field(default_factory=list)
    messages: dict[str, list[bytes]] = field(default_factory=dict)
    requests: dict[str, list[bytes]] = field(default_factory=dict)


def _int_strategy(ftype: int) -> st.SearchStrategy[int]:
    if ftype in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return st.one_of(st.sampled_from(_INT32), st.integers(-(2**31), 2**31 - 1))
    if ftype in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return st.one_of(st.sampled_from((0, 1, 2**31, 2**32 - 1)), st.integers(0, 2**32 - 1))
    if ftype in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return st.one_of(st.sampled_from(_UINT64), st.integers(0, 2**64 - 1))
    if ftype == FD.TYPE_BOOL:
        return st.sampled_from((0, 1, 2, 2**63 - 1))  # non-canonical booleans decode as true
    return st.one_of(st.sampled_from(_INT64), st.integers(-(2**63), 2**63 - 1))  # int64, sint64, sfixed64


def _rarely(rare: st.SearchStrategy[Any], common: st.SearchStrategy[Any], percent: int = 2) -> st.SearchStrategy[Any]:
    """``rare`` in about ``percent`` % of draws: huge values are worth sending, not in every input."""
    return st.integers(0, 99).flatmap(lambda n: rare if n < percent else common)


def _huge(chunks: st.SearchStrategy[bytes]) -> st.SearchStrategy[Huge]:
    return st.builds(
        lambda chunk, size: Huge(chunk, max(1, size // len(chunk))),
        chunks.filter(bool),
        st.sampled_from((1024, 65_536, 1_000_000, HUGE_BYTES)),
    )


class Strategies:
    """Hypothesis strategies for protobuf wire bytes, built from message descriptors."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self._messages: dict[tuple[str, int], st.SearchStrategy[bytes]] = {}
        strings = [s for s in corpus.strings if s] or ["x"]
        self.text = st.one_of(
            st.just(""),
            st.sampled_from(strings),
            st.sampled_from(strings).map(lambda s: s + "\n"),  # trailing newline after a valid value
            st.sampled_from(strings).map(lambda s: s.upper()),
            st.text(max_size=40),
            st.text(alphabet=st.characters(codec="utf-8"), max_size=8).map(lambda s: s * 3),
            st.sampled_from(("\x00", "../" * 20, "%s%n", "\u202e", "a" * 300, "💥" * 50)),
        )
        invalid_utf8 = st.one_of(
            st.sampled_from(_INVALID_UTF8),  # invalid UTF-8 in a string field
            st.builds(lambda s, bad: s.encode() + bad, st.sampled_from(strings), st.sampled_from(_INVALID_UTF8)),
        )
        self.string_payload: st.SearchStrategy[Any] = _rarely(
            st.one_of(_huge(st.sampled_from((b"a", b"0", b"\xe4\xbf\xa1"))), _huge(st.sampled_from(_INVALID_UTF8))),
            _rarely(invalid_utf8, self.text, 3),
            1,
        )
        self.bytes_payload: st.SearchStrategy[Any] = _rarely(
            _huge(st.binary(min_size=1, max_size=16)),
            st.one_of(
                st.just(b""),
                st.binary(max_size=64),
                st.binary(min_size=32, max_size=32),
                st.binary(min_size=64, max_size=64),
                st.sampled_from(strings).map(str.encode),
            ),
        )

    def message(self, desc: Any, depth: int = 0) -> st.SearchStrategy[bytes]:
        """Wire bytes of one instance of ``desc`` (structurally valid, extreme values)."""
        key = (desc.full_name, depth)
        if key not in self._messages:
            self._messages[key] = st.deferred(lambda: self._build_message(desc, depth))
        return self._messages[key]

    def _build_message(self, desc: pb_descriptor.Descriptor, depth: int) -> st.SearchStrategy[bytes]:
        fields_strategy: st.SearchStrategy[Sequence[list[Any]]]
        if depth >= MAX_DEPTH or not desc.fields:
            fields_strategy = st.just(())
        else:
            per_field = [self._field_entries(f, depth) for f in desc.fields]
            fields_strategy = st.lists(st.sampled_from(range(len(per_field))), max_size=len(per_field) + 2).flatmap(
                lambda picks: st.tuples(*(per_field[i] for i in picks)) if picks else st.just(())
            )
        defined = {f.number for f in desc.fields}
        unknown = st.lists(self._unknown(defined), max_size=3)
        generated = st.builds(
            lambda entries, extra, shuffle: _shuffled(
                [e for group in entries for e in group] + [(None, u) for u in extra], shuffle
            ),
            fields_strategy,
            st.one_of(st.just([]), st.just([]), unknown),
            st.integers(0, 2**16),
        ).map(_encode_message)
        valid = self.corpus.messages.get(desc.full_name)
        if not valid:
            return generated
        # A valid instance, alone or with fuzzed fields merged over it (later fields win or append).
        seeded = st.builds(lambda v, extra: v + extra, st.sampled_from(valid), st.one_of(st.just(b""), generated))
        return st.one_of(generated, seeded)

    def _value(self, f: pb_descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if f.type == FD.TYPE_STRING:
            return self.string_payload
        if f.type == FD.TYPE_BYTES:
            return self.bytes_payload
        if f.type == FD.TYPE_MESSAGE:
            assert f.message_type is not None
            return self.message(f.message_type, depth + 1)
        if f.type == FD.TYPE_ENUM:
            assert f.enum_type is not None
            numbers = sorted(v.number for v in f.enum_type.values)
            return st.one_of(st.sampled_from(numbers), st.sampled_from((-1, max(numbers) + 1, 2**31 - 1, 2**40)))
        if f.type == FD.TYPE_DOUBLE:
            return st.floats(allow_nan=True, allow_infinity=True)
        if f.type == FD.TYPE_FLOAT:
            return st.floats(width=32, allow_nan=True, allow_infinity=True)
        if f.type == FD.TYPE_GROUP:
            return st.nothing()
        return _int_strategy(f.type)

    def _field_entries(self, f: pb_descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[list[Any]]:
        """The occurrences of one field: one value, a list, a packed run, or thousands of copies."""
        value = self._value(f, depth)
        one = value.map(lambda v: [(f, v)])
        if not f.is_repeated:
            # A singular field twice is legal on the wire (the last one wins; messages merge).
            return st.one_of(
                one, one, one, st.lists(value, min_size=2, max_size=3).map(lambda vs: [(f, v) for v in vs])
            )
        listed = st.lists(value, max_size=6).map(lambda vs: [(f, v) for v in vs])
        many = st.builds(
            lambda v, n: [(f, Many(v, n))],
            value if depth == 0 else value.filter(lambda v: not isinstance(v, Huge)),
            st.sampled_from((100, 1000, MANY_ELEMENTS)),
        ).filter(lambda entries: not isinstance(entries[0][1].element, Huge))
        common: list[st.SearchStrategy[list[Any]]] = [listed]
        rare: list[st.SearchStrategy[list[Any]]] = [many]
        if f.type in _PACKABLE:
            common.append(st.lists(value, max_size=8).map(lambda vs: [(f, Packed(tuple(vs)))]))
            rare.append(st.builds(lambda v, n: [(f, Packed((v,) * n))], value, st.just(MANY_ELEMENTS)))
        return _rarely(st.one_of(*rare), st.one_of(*common), 5)

    def _unknown(self, defined: set[int]) -> st.SearchStrategy[Unknown]:
        number = st.one_of(st.integers(1, 64), st.integers(1000, 2**29 - 1)).filter(lambda n: n not in defined)
        return st.one_of(
            st.builds(lambda n, v: Unknown(n, _tag(n, 0) + _varint(v)), number, st.integers(0, 2**64 - 1)),
            st.builds(lambda n, b: Unknown(n, _length_delimited(n, b)), number, st.binary(max_size=64)),
            _rarely(
                st.builds(lambda n, h: Unknown(n, _length_delimited(n, h.materialize())), number, _huge(st.just(b"u"))),
                st.builds(lambda n, b: Unknown(n, _length_delimited(n, b)), number, st.binary(max_size=8)),
                10,
            ),
            st.builds(lambda n, b: Unknown(n, _tag(n, 5) + b), number, st.binary(min_size=4, max_size=4)),
            st.builds(lambda n, b: Unknown(n, _tag(n, 1) + b), number, st.binary(min_size=8, max_size=8)),
        )

    def request(self, method: Method) -> st.SearchStrategy[bytes]:
        """One request: undecodable bytes, a mutated valid message, or a structured extreme one."""
        structured = self.message(method.input)
        valid = self.corpus.requests.get(method.path, [])
        seeded: list[st.SearchStrategy[bytes]] = []
        if valid:
            seeded.append(
                st.builds(lambda v, extra: v + extra, st.sampled_from(valid), st.one_of(st.just(b""), structured))
            )
        undecodable = st.one_of(
            st.sampled_from(
                (
                    b"\xff",
                    b"\x0a\x01\xff",  # field 1, length 1, invalid UTF-8 (a string in most requests)
                    b"\x0a",  # a tag without its length
                    b"\x0a\x05ab",  # a length past the end
                    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # an over-long varint
                    b"\x0b",  # group start (wire type 3)
                    b"\x0f",  # wire type 7
                    b"\x00",  # field number 0
                    b"\x0a\xff\xff\xff\xff\x0f",  # a length of 4 GiB
                )
            ),
            st.binary(min_size=1, max_size=128),
            st.builds(_mutate, structured, st.integers(0, 2**32 - 1)),
        )
        return st.one_of(undecodable, structured, structured, structured, *seeded, *seeded)


def _shuffled(entries: list[Any], salt: int) -> list[Any]:
    """Fields in a hypothesis-chosen order (protobuf accepts any order)."""
    random.Random(salt).shuffle(entries)
    return entries


def _mutate(data: bytes, salt: int) -> bytes:
    """A valid message cut short, a byte flipped, or garbage inserted."""
    rng = random.Random(salt)
    if not data:
        return b"\xff"
    how = rng.randrange(3)
    at = rng.randrange(len(data))
    if how == 0:
        return data[: max(1, at)]
    if how == 1:
        return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8))) + data[at:]


def generate(strategy: st.SearchStrategy[bytes], count: int, seed: int, sink: Callable[[bytes], None]) -> int:
    """Feed ``count`` examples of ``strategy`` to ``sink`` as hypothesis draws them (fixed seed)."""
    seen = [0]

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
        report_multiple_bugs=False,
    )
    @given(strategy)
    def run(data: bytes) -> None:
        seen[0] += 1
        sink(data)

    run()
    return seen[0]


# --------------------------------------------------------------------------- mutation stage
#
# Hypothesis draws a few hundred inputs per RPC at a few hundred per second;
# 10,000 per RPC over ~90 RPCs that way would take hours. So hypothesis draws
# the seeds (``drawn`` per RPC) and a cheap deterministic mutator breeds the
# rest from them at the wire level, knowing the request's descriptor: fields
# of two seeds spliced or merged, fields dropped, repeated thousands of times,
# set to an extreme value of their type (at any depth: a nested message is
# mutated with its own descriptor), given the wrong wire type, unknown fields
# added, and byte-level damage. A child of structurally valid parents stays
# structurally valid unless the operator is one that breaks it, so the mix of
# decodable / undecodable inputs stays close to hypothesis' own.


def split_fields(data: bytes) -> list[tuple[int, int, int, int]] | None:
    """The top-level fields of wire bytes as (number, wire type, start, end), or None if malformed."""
    out: list[tuple[int, int, int, int]] = []
    pos, end = 0, len(data)

    def varint(at: int) -> tuple[int, int]:
        value, shift = 0, 0
        while at < end and shift < 70:
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, at
            shift += 7
        raise ValueError("bad varint")

    try:
        while pos < end:
            start = pos
            key, pos = varint(pos)
            number, wire_type = key >> 3, key & 7
            if number == 0:
                return None
            if wire_type == 0:
                _, pos = varint(pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 2:
                length, pos = varint(pos)
                pos += length
            elif wire_type == 5:
                pos += 4
            else:
                return None
            if pos > end:
                return None
            out.append((number, wire_type, start, pos))
    except ValueError:
        return None
    return out


def _value_start(data: bytes, start: int) -> int:
    """Where a length-delimited field's payload starts (past tag and length)."""
    pos = start
    for _ in range(2):
        while data[pos] & 0x80:
            pos += 1
        pos += 1
    return pos


_FLOATS = (0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), float("-inf"), 5e-324, 1.7976931348623157e308)
_HUGE_CACHE: dict[str, bytes] = {}


def _huge_value(kind: str) -> bytes:
    """A few large values made once (the mutator reuses them, it never builds megabytes per input)."""
    if kind not in _HUGE_CACHE:
        rng = random.Random(kind)
        made = {
            "ascii": b"a" * HUGE_BYTES,
            "cjk": "信".encode() * (HUGE_BYTES // 3),
            "bad-utf8": b"\xc3\x28" * (HUGE_BYTES // 2),
            "binary": rng.randbytes(HUGE_BYTES),
            "medium": b"0" * 65_536,
        }
        _HUGE_CACHE.update(made)
    return _HUGE_CACHE[kind]


class Mutator:
    """Children of hypothesis-drawn seeds for one request type (deterministic for a seed).

    ``seeds``: wire bytes drawn by hypothesis; ``corpus``: platform values
    (ids, codes, valid messages) that fuzzed fields take now and then.
    """

    # Operators and their weights (out of 100).
    OPERATORS = (
        ("splice", 16),  # some fields of one seed and some of another
        ("merge", 8),  # two seeds concatenated (protobuf merges them)
        ("drop", 8),  # some fields left out
        ("repeat", 6),  # one field 2..10,000 times
        ("value", 34),  # one field (at any depth) set to an extreme value of its type
        ("wire_type", 5),  # a known field with the wrong wire type (undecodable)
        ("unknown", 7),  # an unknown field added
        ("bytes", 16),  # cut short, a bit flipped, garbage inserted (mostly undecodable)
    )

    def __init__(self, desc: Any, seeds: Sequence[bytes], corpus: Corpus, rng: random.Random) -> None:
        self.desc = desc
        self.seeds = list(seeds) or [b""]
        self.corpus = corpus
        self.rng = rng
        self.strings = [s.encode() for s in corpus.strings if s] or [b"x"]
        self._split: dict[int, list[tuple[int, int, int, int]] | None] = {}
        names = [name for name, _ in self.OPERATORS]
        weights = [w for _, w in self.OPERATORS]
        self._ops = rng.choices(names, weights, k=4096)  # a fixed cycle of operators, cheap to pick from
        self._next = 0
        self.counts: Counter[str] = Counter()

    def _fields(self, index: int) -> list[tuple[int, int, int, int]] | None:
        if index not in self._split:
            self._split[index] = split_fields(self.seeds[index])
        return self._split[index]

    def _pick(self) -> tuple[bytes, list[tuple[int, int, int, int]] | None]:
        i = self.rng.randrange(len(self.seeds))
        return self.seeds[i], self._fields(i)

    def child(self) -> bytes:
        op = self._ops[self._next % len(self._ops)]
        self._next += 1
        self.counts[op] += 1
        data, fields = self._pick()
        if fields is None and op not in ("merge", "bytes", "unknown"):
            op = "bytes"  # an undecodable seed has no fields to work on
        made: bytes = getattr(self, f"_op_{op}")(data, fields)
        return made

    # -- operators ---------------------------------------------------------------------------

    def _op_splice(self, data: bytes, fields: list[tuple[int, int, int, int]]) -> bytes:
        other, other_fields = self._pick()
        rng = self.rng
        parts = [data[s:e] for _, _, s, e in fields if rng.random() < 0.5]
        parts += [other[s:e] for _, _, s, e in other_fields or () if rng.random() < 0.5]
        rng.shuffle(parts)
        return b"".join(parts)

    def _op_merge(self, data: bytes, fields: Any) -> bytes:
        return data + self._pick()[0]

    def _op_drop(self, data: bytes, fields: list[tuple[int, int, int, int]]) -> bytes:
        keep = self.rng.random()
        return b"".join(data[s:e] for _, _, s, e in fields if self.rng.random() < keep)

    def _op_repeat(self, data: bytes, fields: list[tuple[int, int, int, int]]) -> bytes:
        if not fields:
            return data * 2
        _, _, s, e = self.rng.choice(fields)
        one = data[s:e]
        count = self.rng.choice((2, 3, 100, 1000, MANY_ELEMENTS))
        count = max(1, min(count, MANY_BYTES // max(1, len(one))))
        return data[:s] + one * count + data[e:]

    def _op_value(self, data: bytes, fields: list[tuple[int, int, int, int]]) -> bytes:
        return self._set_value(self.desc, data, fields, 0)

    def _set_value(
        self, desc: pb_descriptor.Descriptor, data: bytes, fields: list[tuple[int, int, int, int]] | None, depth: int
    ) -> bytes:
        rng = self.rng
        known = [t for t in fields or () if t[0] in desc.fields_by_number]
        if not known or (desc.fields and rng.random() < 0.25):
            # Add a field the seed lacks (or one more occurrence), at the end.
            f = rng.choice(desc.fields) if desc.fields else None
            if f is None:
                return data
            return data + self._field_bytes(f, self._extreme(f, b"", depth))
        number, wire_type, s, e = rng.choice(known)
        f = desc.fields_by_number[number]
        current = data[_value_start(data, s) : e] if wire_type == 2 else b""
        return data[:s] + self._field_bytes(f, self._extreme(f, current, depth)) + data[e:]

    def _field_bytes(self, f: pb_descriptor.FieldDescriptor, value: Any) -> bytes:
        if isinstance(value, bytes) and f.type not in (FD.TYPE_STRING, FD.TYPE_BYTES, FD.TYPE_MESSAGE):
            return _length_delimited(f.number, value)  # a packed run
        return _encode_field(f, value)

    def _extreme(self, f: pb_descriptor.FieldDescriptor, current: bytes, depth: int) -> Any:
        """A value for ``f``: empty, a platform value, a boundary, invalid UTF-8, or huge (rarely)."""
        rng = self.rng
        roll = rng.random()
        if f.type == FD.TYPE_STRING:
            if roll < 0.015:
                return _huge_value(rng.choice(("ascii", "cjk", "bad-utf8", "medium")))
            if roll < 0.15:
                return rng.choice(self.strings) + rng.choice(_INVALID_UTF8)  # undecodable
            if roll < 0.25:
                return rng.choice(_INVALID_UTF8)
            return rng.choice(
                (
                    b"",
                    rng.choice(self.strings),
                    rng.choice(self.strings) + b"\n",
                    rng.choice(self.strings).upper(),
                    b"\x00",
                    b"../" * 20,
                    "\u202e".encode(),
                    b"a" * 300,
                    "💥".encode() * 50,
                    rng.choice(self.strings) * rng.randrange(2, 50),
                )
            )
        if f.type == FD.TYPE_BYTES:
            if roll < 0.02:
                return _huge_value(rng.choice(("binary", "medium", "ascii")))
            return rng.choice(
                (
                    b"",
                    rng.randbytes(rng.randrange(1, 65)),
                    rng.randbytes(32),
                    rng.randbytes(64),
                    rng.choice(self.strings),
                )
            )
        if f.type == FD.TYPE_MESSAGE:
            sub = f.message_type
            assert sub is not None
            valid = self.corpus.messages.get(sub.full_name)
            if roll < 0.5 and depth < MAX_DEPTH:
                return self._set_value(sub, current, split_fields(current), depth + 1)
            if roll < 0.65 and valid:
                return rng.choice(valid)
            if roll < 0.75:
                return rng.randbytes(rng.randrange(1, 16))  # mostly undecodable
            return b""
        if f.type == FD.TYPE_ENUM:
            assert f.enum_type is not None
            numbers = [v.number for v in f.enum_type.values]
            choice = rng.choice([*numbers, -1, max(numbers) + 1, 2**31 - 1, 2**40])
            return self._maybe_packed(f, choice)
        if f.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            return self._maybe_packed(f, rng.choice(_FLOATS))
        if f.type == FD.TYPE_BOOL:
            return self._maybe_packed(f, rng.choice((0, 1, 2, 2**63 - 1)))
        if f.type in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
            bounds: Sequence[int] = (0, 1, 2**31, 2**32 - 1)
        elif f.type in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
            bounds = _UINT64
        elif f.type in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
            bounds = _INT32
        else:
            bounds = _INT64
        value = rng.choice(bounds) if roll < 0.8 else rng.randrange(-(2**63), 2**64)
        if f.type in (FD.TYPE_SINT32, FD.TYPE_SINT64, FD.TYPE_SFIXED64, FD.TYPE_SFIXED32, FD.TYPE_INT32, FD.TYPE_INT64):
            value = max(-(2**63), min(value, 2**63 - 1))
        return self._maybe_packed(f, value)

    def _maybe_packed(self, f: pb_descriptor.FieldDescriptor, value: Any) -> Any:
        """A repeated scalar sometimes as a packed run (up to 10,000 copies), else one element."""
        if f.is_repeated and self.rng.random() < 0.3:
            count = self.rng.choice((1, 8, MANY_ELEMENTS))
            return _scalar_bytes(f.type, value)[1] * count
        return value

    def _op_wire_type(self, data: bytes, fields: list[tuple[int, int, int, int]]) -> bytes:
        desc_fields = self.desc.fields
        if not desc_fields:
            return data + b"\x0f"
        f = self.rng.choice(desc_fields)
        if f.type in (FD.TYPE_STRING, FD.TYPE_BYTES, FD.TYPE_MESSAGE):
            wrong = _tag(f.number, 0) + _varint(self.rng.choice(_UINT64))
        else:
            wrong = _tag(f.number, self.rng.choice((2, 3, 4))) + b"\x01x"
        at = self.rng.choice([0, len(data)] + [s for _, _, s, _ in fields])
        return data[:at] + wrong + data[at:]

    def _op_unknown(self, data: bytes, fields: Any) -> bytes:
        rng = self.rng
        defined = set(self.desc.fields_by_number)
        number = rng.choice((rng.randrange(1, 65), rng.randrange(1000, 2**29)))
        while number in defined:
            number += 1
        kind = rng.randrange(5)
        if kind == 0:
            extra = _tag(number, 0) + _varint(rng.randrange(2**64))
        elif kind == 1:
            extra = _length_delimited(number, rng.randbytes(rng.randrange(65)))
        elif kind == 2:
            extra = _length_delimited(number, _huge_value("ascii") if rng.random() < 0.05 else b"u" * 1024)
        elif kind == 3:
            extra = _tag(number, 5) + rng.randbytes(4)
        else:
            extra = _tag(number, 1) + rng.randbytes(8)
        return data + extra if rng.random() < 0.5 else extra + data

    def _op_bytes(self, data: bytes, fields: Any) -> bytes:
        return _mutate(data, self.rng.randrange(2**32))


# --------------------------------------------------------------------------- the network


@dataclass
class Target:
    """A running server and the credentials of each role to call it with."""

    name: str  # the process name in the group (node, agent-tax)
    address: str
    server_role: str
    server_id: str


@dataclass
class Network:
    platform: LocalPlatform
    credentials: dict[str, PartyCredentials]
    targets: list[Target]
    corpus: Corpus

    def pid(self, target: Target) -> int:
        return self.platform.group.parties[target.name].proc.pid

    def log_path(self, target: Target) -> Path:
        return self.platform.group.parties[target.name].log_path


def stand_up(workdir: Path, group: ProcessGroup, *, enterprises: int = 100, seed: int = 7) -> Network:
    """Data, a tax agent (joint modeling on) and the node as processes; a real consent for bank-a."""
    generate_data(workdir / "data", enterprises=enterprises, seed=seed)
    platform = deploy(
        workdir,
        providers=["tax"],
        institutions=["bank-a"],
        data_dir=workdir / "data",
        group=group,
        node_overrides={"enterprise_daily_budget": 1_000_000_000},
        agent_modeling={"tax": {"enabled": True, "allowed_institutions": ["bank-a"]}},
    )
    enterprise = first_enterprise(workdir / "data", "tax")
    ent_creds = platform.enterprise(enterprise)
    consent = grant(
        ent_creds,
        ConsentRequest("bank-a", "loan_application", ("tax.*",), "2025-01-01", "2026-12-31", max_uses=4_000_000_000),
    )
    bank = platform.party("institution", "bank-a")
    node = platform.party("node", "node")
    consent_id = parse_consent(consent).consent_id
    with secure_channel(platform.node_address, bank, server_role="node", server_id="node") as ch:
        node_pb2_grpc.NodeServiceStub(ch).RegisterConsent(node_pb2.RegisterConsentRequest(consent=consent), timeout=30)
    claim = parse_claim("tax.credit_grade in A,B")
    request_id = f"r-{uuid.UUID(int=1)}"
    verify = node_pb2.VerifyRequest(
        request_id=request_id,
        requested_at=int(time.time()),
        enterprise_uscc=enterprise,
        consent_id=consent_id,
        claims=[claim],
    )
    corpus = Corpus(
        strings=[
            consent_id,
            enterprise,
            request_id,
            str(uuid.UUID(int=2)),
            "bank-a",
            "tax",
            "node",
            "loan_application",
            "tax.credit_grade",
            "tax.*",
            "A",
            "2026-12-31",
            "job-1",
            "ckks",
            "paillier",
            "plain",
        ],
        messages={
            consent.DESCRIPTOR.full_name: [consent.SerializeToString()],
            claim.DESCRIPTOR.full_name: [claim.SerializeToString()],
        },
        requests={
            "/xinrong.v1.NodeService/Verify": [verify.SerializeToString()],
            "/xinrong.v1.NodeService/RegisterConsent": [
                node_pb2.RegisterConsentRequest(consent=consent).SerializeToString()
            ],
            "/xinrong.v1.NodeService/GetConsentStatus": [
                node_pb2.GetConsentStatusRequest(consent_id=consent_id).SerializeToString()
            ],
        },
    )
    targets = [Target("node", platform.node_address, "node", "node")]
    targets += [
        Target(f"agent-{name}", f"127.0.0.1:{port}", "provider", name) for name, port in platform.provider_ports.items()
    ]
    creds = {"institution": bank, "enterprise": ent_creds, "node": node, "provider": platform.party("provider", "tax")}
    return Network(platform, creds, targets, corpus)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process (Linux ``/proc``); ``VmHWM``: its peak so far."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} for {pid}")


def tracebacks(path: Path) -> int:
    try:
        return path.read_bytes().count(TRACEBACK)
    except OSError:
        return 0


# --------------------------------------------------------------------------- calling


_IDENTITY: Callable[[bytes], bytes] = lambda b: b  # noqa: E731


class Caller:
    """Generic stubs on one channel per (target, role): raw bytes in, raw bytes out."""

    def __init__(self, network: Network) -> None:
        self._network = network
        self._channels: dict[tuple[str, str], grpc.Channel] = {}

    def channel(self, target: Target, role: str) -> grpc.Channel:
        key = (target.name, role)
        if key not in self._channels:
            self._channels[key] = secure_channel(
                target.address,
                self._network.credentials[role],
                server_role=target.server_role,
                server_id=target.server_id,
            )
        return self._channels[key]

    def call(
        self, target: Target, role: str, method: Method, payload: bytes, timeout: float
    ) -> tuple[grpc.StatusCode, str]:
        """Send one input; the status (OK included) and details it ended with."""
        ch = self.channel(target, role)
        raw: dict[str, Any] = {"request_serializer": _IDENTITY, "response_deserializer": _IDENTITY}
        try:
            if method.client_streaming:
                # The stream carries the input and then, for some inputs, a copy of it.
                messages = [payload] if len(payload) % 2 else [payload, payload]
                if method.server_streaming:
                    for _ in ch.stream_stream(method.path, **raw)(iter(messages), timeout=timeout):
                        pass
                else:
                    ch.stream_unary(method.path, **raw)(iter(messages), timeout=timeout)
            elif method.server_streaming:
                stream = ch.unary_stream(method.path, **raw)(payload, timeout=timeout)
                for _ in stream:
                    if method.path in TAILING_STREAMS:  # never ends by design: the first answer is the outcome
                        stream.cancel()  # type: ignore[no-untyped-call]
                        break
            else:
                ch.unary_unary(method.path, **raw)(payload, timeout=timeout)
        except grpc.RpcError as err:
            return err.code(), str(err.details() or "")
        return grpc.StatusCode.OK, ""

    def probe(self, target: Target, role: str, method: Method) -> bool:
        """Whether the role gets past the role check (an empty request from its certificate)."""
        code, details = self.call(target, role, method, b"", 30.0)
        return not (code == grpc.StatusCode.PERMISSION_DENIED and details == _GUARD_REFUSAL)

    def hosts(self, target: Target, service: str) -> bool:
        """Whether the target serves the service (its gRPC health knows the name)."""
        for role in ROLES:
            try:
                resp = health_pb2_grpc.HealthStub(self.channel(target, role)).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=10
                )
            except grpc.RpcError:
                continue
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
        return False

    def serving(self, target: Target) -> bool:
        for role in ROLES:
            try:
                resp = health_pb2_grpc.HealthStub(self.channel(target, role)).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
                return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
            except grpc.RpcError:
                continue
        return False

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()


@dataclass
class RpcResult:
    inputs: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    tracebacks: int = 0
    wrong_role_inputs: int = 0
    wrong_role_not_denied: int = 0
    roles: tuple[str, ...] = ()
    seconds: float = 0.0
    undecodable: int = 0
    # UNKNOWN / INTERNAL / DEADLINE_EXCEEDED to inputs that decode: not a transport-level
    # refusal, a handler defect (with a few examples to reproduce it).
    bad_decodable: int = 0
    bad_undecodable: int = 0  # the same to inputs that do not decode (issue 10 A2 while open)
    examples: list[dict[str, Any]] = field(default_factory=list)
    # Resident memory of the hosting server before and after this RPC's inputs
    # (RPCs run one after the other, so growth is attributed like tracebacks).
    rss_mb: tuple[float, float] = (0.0, 0.0)
    drawn: int = 0  # inputs hypothesis drew
    mutated: int = 0  # inputs the mutation stage bred from them
    operators: Counter[str] = field(default_factory=Counter)
    busy_retries: int = 0  # sends again after a full call budget (the input never reached the handler)

    def as_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"examples": self.examples} if self.examples else {}
        return {
            "inputs": self.inputs,
            "codes": dict(sorted(self.codes.items())),
            "unknown": self.codes.get("UNKNOWN", 0),
            "internal": self.codes.get("INTERNAL", 0),
            "tracebacks": self.tracebacks,
            "roles": list(self.roles),
            "wrong_role_inputs": self.wrong_role_inputs,
            "wrong_role_not_denied": self.wrong_role_not_denied,
            "undecodable_inputs": self.undecodable,
            "bad_decodable": self.bad_decodable,
            "bad_undecodable": self.bad_undecodable,
            "drawn": self.drawn,
            "mutated": self.mutated,
            "busy_retries": self.busy_retries,
            "seconds": round(self.seconds, 1),
            "rss_mb": list(self.rss_mb),
            **extra,
        }


# Server streams that tail a log (a following subscription never ends): the
# fuzzer takes the first response as the outcome and hangs up.
TAILING_STREAMS = frozenset({"/xinrong.v1.PushService/Subscribe"})
_BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_EXAMPLES = 3


def decodes(method: Method, payload: bytes) -> bool:
    """Whether the payload parses as the method's request (strict UTF-8, as the servers parse)."""
    try:
        message_factory.GetMessageClass(method.input).FromString(payload)
    except DecodeError:
        return False
    return True


class AioCaller:
    """Generic asyncio stubs on one channel per (target, role): raw bytes in, raw bytes out.

    Many inputs in flight from one thread: a synchronous stub holds a thread
    per call, and a few threads were what held the sender to ~90 inputs/s.
    """

    def __init__(self, network: Network, sync: Caller, stream_threads: int = 16) -> None:
        self._network = network
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._sync = sync
        self._streams = futures.ThreadPoolExecutor(max_workers=stream_threads, thread_name_prefix="fuzz-stream")

    def channel(self, target: Target, role: str) -> grpc.aio.Channel:
        key = (target.name, role)
        if key not in self._channels:
            self._channels[key] = secure_aio_channel(
                target.address,
                self._network.credentials[role],
                server_role=target.server_role,
                server_id=target.server_id,
            )
        return self._channels[key]

    async def call(
        self, target: Target, role: str, method: Method, payload: bytes, timeout: float
    ) -> tuple[grpc.StatusCode, str]:
        """Send one input; the status (OK included) and details it ended with."""
        ch = self.channel(target, role)
        raw: dict[str, Any] = {"request_serializer": _IDENTITY, "response_deserializer": _IDENTITY}
        try:
            if method.client_streaming:
                # grpc.aio reports a write that races the server's early end of the call (a
                # refusal) as a local INTERNAL "Internal error from Core", hiding the server's
                # status: client streams go through the synchronous stub, on a thread.
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(
                    self._streams, self._sync.call, target, role, method, payload, timeout
                )
            if method.server_streaming:
                stream = ch.unary_stream(method.path, **raw)(payload, timeout=timeout)
                async for _ in stream:
                    if method.path in TAILING_STREAMS:  # never ends by design: the first answer is the outcome
                        stream.cancel()
                        break
            else:
                await ch.unary_unary(method.path, **raw)(payload, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            return err.code(), str(err.details() or "")
        return grpc.StatusCode.OK, ""

    async def healthy(self, target: Target) -> bool:
        """Whether the target answers SERVING to a health check (from the first role it lets in)."""
        for role in ROLES:
            try:
                resp = await health_pb2_grpc.HealthStub(self.channel(target, role)).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
                return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
            except grpc.aio.AioRpcError:
                continue
        return False

    async def close(self) -> None:
        self._streams.shutdown(wait=True)
        for ch in self._channels.values():
            await ch.close(None)


# A call the server refused because its call budget was full (xinrong.rpc.server
# _busy_status) never reached the handler: it is sent again, a few times.
_BUSY = "server busy"
BUSY_RETRIES = 20
# Hypothesis-drawn inputs per RPC by default; the mutation stage breeds the rest.
DRAWN = 400
# Inputs in flight per server: the node (asyncio runtime) has a call budget of
# 256, the agent (threads runtime) of 16, shared with the node's own calls to it.
CONCURRENCY = {"node": 64, "agent": 8}


def draw(strategy: st.SearchStrategy[bytes], count: int, seed: int) -> list[bytes]:
    """``count`` hypothesis examples of ``strategy`` (fixed seed, generate phase only)."""
    out: list[bytes] = []
    generate(strategy, count, seed, out.append)
    return out


def draw_requests(corpus: Corpus, path: str, count: int, seed: int) -> list[bytes]:
    """``draw`` for one RPC's requests, from picklable arguments: it runs in a process of
    its own, so hypothesis (a third of the fuzzer's CPU) does not hold the sender's GIL."""
    method = next(m for methods in services().values() for m in methods if m.path == path)
    return draw(Strategies(corpus).request(method), count, seed)


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def tracebacks_since(path: Path, offset: int) -> int:
    """Tracebacks a log gained past ``offset`` (read once per RPC, not per input)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().count(TRACEBACK)
    except OSError:
        return 0


async def fuzz_method(
    caller: AioCaller,
    network: Network,
    target: Target,
    method: Method,
    strategies: Strategies,
    *,
    inputs: int,
    seed: int,
    allowed: tuple[str, ...],
    refused: tuple[str, ...],
    drawn: int = DRAWN,
    concurrency: int = 8,
    timeout: float = 30.0,
    seeds: Awaitable[list[bytes]] | None = None,
) -> RpcResult:
    """``inputs`` inputs to one RPC, ``concurrency`` in flight; the codes they got.

    The first ``min(inputs, drawn)`` are hypothesis' (``seeds``, drawn ahead
    by the caller while the previous RPC was sent; else drawn here, on a
    thread), the rest the mutation stage's children of them. ``allowed``: the roles that get
    past the method's checks (the inputs are theirs); ``refused``: the roles
    the service refuses outright, which send one input in ten and must get
    PERMISSION_DENIED whatever the bytes.
    """
    loop = asyncio.get_running_loop()
    result = RpcResult(roles=allowed)
    log = network.log_path(target)
    offset = _log_size(log)
    rss_before = rss_mb(network.pid(target))
    rng = random.Random(seed)
    t0 = time.monotonic()
    if seeds is None:
        seeds = loop.run_in_executor(None, draw, strategies.request(method), min(inputs, drawn), seed)
    pool = await seeds
    result.drawn = len(pool)
    mutator = Mutator(method.input, pool, strategies.corpus, random.Random(seed ^ 0x5EED))
    slots = asyncio.Semaphore(concurrency)
    pending: set[asyncio.Task[None]] = set()

    async def send(payload: bytes, role: str, wrong: bool) -> None:
        try:
            for attempt in range(BUSY_RETRIES):
                code, details = await caller.call(target, role, method, payload, timeout)
                if code != grpc.StatusCode.RESOURCE_EXHAUSTED or not details.startswith(_BUSY):
                    break
                result.busy_retries += 1
                await asyncio.sleep(0.05 * (attempt + 1))
            decodable = decodes(method, payload)
            result.inputs += 1
            result.codes[code.name] += 1
            result.undecodable += not decodable
            if not decodable and code in _BAD and not wrong:
                result.bad_undecodable += 1
            if decodable and code in _BAD and not wrong:
                result.bad_decodable += 1
            if code in _BAD and not wrong and len(result.examples) < MAX_EXAMPLES:
                result.examples.append(
                    {"code": code.name, "details": details[:160], "bytes": len(payload), "head_hex": payload[:48].hex()}
                )
            if wrong:
                result.wrong_role_inputs += 1
                if code != grpc.StatusCode.PERMISSION_DENIED:
                    result.wrong_role_not_denied += 1
        finally:
            slots.release()

    for i in range(inputs):
        payload = pool[i] if i < len(pool) else mutator.child()
        # One input in ten from a role that may not call the method (when there is one).
        wrong = bool(refused) and (not allowed or rng.random() < 0.1)
        role = rng.choice(refused if wrong else allowed)
        await slots.acquire()
        task = loop.create_task(send(payload, role, wrong))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    result.mutated = result.inputs - min(result.inputs, result.drawn)
    result.operators = mutator.counts
    result.seconds = time.monotonic() - t0
    await caller.healthy(target)  # a round trip, so the server's log has caught up with the last input
    await asyncio.sleep(0.2)
    result.tracebacks = tracebacks_since(log, offset)
    result.rss_mb = (rss_before, rss_mb(network.pid(target)))
    return result


@dataclass
class Plan:
    """The RPCs one server hosts, in order, with the roles each is fuzzed from."""

    target: Target
    methods: list[tuple[Method, int, tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)


def plan(
    caller: Caller, network: Network, services_wanted: Sequence[str], methods_wanted: Sequence[str], seed: int
) -> tuple[list[Plan], list[str]]:
    """Which server hosts each service, and the roles that may call each method; the services nobody serves."""
    plans = {t.name: Plan(t) for t in network.targets}
    skipped: list[str] = []
    for service, methods in services().items():
        if services_wanted and not any(w in service for w in services_wanted):
            continue
        target = next((t for t in network.targets if caller.hosts(t, service)), None)
        if target is None:
            skipped.append(service)
            continue
        # A role may pass the service's certificate check and still be refused by
        # one method (an institution revoking a consent): its inputs would be
        # refused there only after decoding. The roles no method lets through
        # are the ones the service itself refuses, before anything else.
        allowed = {m.path: tuple(r for r in ROLES if caller.probe(target, r, m)) for m in methods}
        served = {r for roles in allowed.values() for r in roles}
        refused = tuple(r for r in ROLES if r not in served)
        for i, method in enumerate(methods):
            if methods_wanted and not any(w in method.path for w in methods_wanted):
                continue
            plans[target.name].methods.append((method, seed * 1000 + i, allowed[method.path], refused))
    return [p for p in plans.values() if p.methods], skipped


async def _fuzz_all(
    network: Network,
    sync: Caller,
    plans: list[Plan],
    strategies: Strategies,
    *,
    inputs: int,
    drawn: int,
    concurrency: dict[str, int],
    one_server_at_a_time: bool,
    progress: Callable[[str], None] | None,
    cpu: dict[str, float],
) -> dict[str, RpcResult]:
    caller = AioCaller(network, sync)
    results: dict[str, RpcResult] = {}
    # Hypothesis in one process of its own ("spawn": grpc does not survive a fork), one RPC
    # ahead of the sender on each server.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    draw_pool = futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    loop = asyncio.get_running_loop()

    def seeds_for(method: Method, seed: int) -> asyncio.Future[list[bytes]]:
        return loop.run_in_executor(draw_pool, draw_requests, strategies.corpus, method.path, min(inputs, drawn), seed)

    async def one_server(p: Plan) -> None:
        kind = p.target.name.split("-")[0]
        ahead = seeds_for(p.methods[0][0], p.methods[0][1])
        for i, (method, seed, allowed, refused) in enumerate(p.methods):
            seeds = ahead
            if i + 1 < len(p.methods):
                ahead = seeds_for(p.methods[i + 1][0], p.methods[i + 1][1])
            results[method.path] = await fuzz_method(
                caller,
                network,
                p.target,
                method,
                strategies,
                inputs=inputs,
                seed=seed,
                allowed=allowed,
                refused=refused,
                drawn=drawn,
                concurrency=concurrency.get(kind, 8),
                seeds=seeds,
            )
            if progress is not None:
                progress(f"{method.path}: {json.dumps(results[method.path].as_json())}")

    try:
        if one_server_at_a_time:
            for p in plans:
                await one_server(p)
        else:
            # Servers in parallel, each one RPC at a time: a traceback in a server's log
            # belongs to the RPC that server was being fuzzed with.
            await asyncio.gather(*(one_server(p) for p in plans))
    finally:
        draw_pool.shutdown(wait=True)
        await caller.close()
        # The hypothesis process has been waited for; the servers have not (yet).
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu["hypothesis"] = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return results


def run(
    *,
    inputs: int,
    seed: int = 1,
    services_wanted: Sequence[str] = (),
    methods_wanted: Sequence[str] = (),
    workdir: Path | None = None,
    drawn: int = DRAWN,
    concurrency: dict[str, int] | None = None,
    one_server_at_a_time: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Stand up a platform, fuzz every RPC (or the services/methods named), return the JSON result."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="xinrong-fuzz-")
        workdir = Path(tmp.name)
    t0 = time.monotonic()
    try:
        with ProcessGroup(workdir) as group:
            network = stand_up(workdir, group)
            caller = Caller(network)
            try:
                strategies = Strategies(network.corpus)
                plans, skipped = plan(caller, network, services_wanted, methods_wanted, seed)
                rss_before = {t.name.split("-")[0]: rss_mb(network.pid(t)) for t in network.targets}
                cpu_before = {t.name.split("-")[0]: cpu_seconds(network.pid(t)) for t in network.targets}
                cpu_before["fuzzer"] = cpu_seconds(os.getpid())
                t_fuzz = time.monotonic()
                cpu_after: dict[str, float] = {}
                results = asyncio.run(
                    _fuzz_all(
                        network,
                        caller,
                        plans,
                        strategies,
                        inputs=inputs,
                        drawn=drawn,
                        concurrency={**CONCURRENCY, **(concurrency or {})},
                        one_server_at_a_time=one_server_at_a_time,
                        progress=progress,
                        cpu=cpu_after,
                    )
                )
                fuzz_seconds = time.monotonic() - t_fuzz
                cpu_after.update({t.name.split("-")[0]: cpu_seconds(network.pid(t)) for t in network.targets})
                cpu_after["fuzzer"] = cpu_seconds(os.getpid())
                cpu_before["hypothesis"] = 0.0
                rss_after = {t.name.split("-")[0]: rss_mb(network.pid(t)) for t in network.targets}
                rss_peak = {t.name.split("-")[0]: rss_mb(network.pid(t), "VmHWM") for t in network.targets}
                alive = {
                    t.name.split("-")[0]: network.platform.group.parties[t.name].proc.poll() is None
                    and caller.serving(t)
                    for t in network.targets
                }
            finally:
                caller.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    ordered = {path: results[path].as_json() for path in sorted(results)}
    total = sum(r.inputs for r in results.values())
    operators: Counter[str] = Counter()
    for r in results.values():
        operators.update(r.operators)
    return {
        "bench": "fuzz",
        "rpcs": ordered,
        "rss_mb": {name: [rss_before[name], rss_after[name]] for name in rss_before},
        "rss_peak_mb": rss_peak,  # the most each server held at any moment (VmHWM)
        "alive": alive,
        "services_not_served": skipped,
        "inputs_per_rpc": inputs,
        "inputs": total,
        # How the inputs were made: hypothesis draws, and the mutation stage's children of them.
        "inputs_drawn": sum(r.drawn for r in results.values()),
        "inputs_mutated": sum(r.mutated for r in results.values()),
        "mutation_operators": dict(sorted(operators.items())),
        "busy_retries": sum(r.busy_retries for r in results.values()),
        "inputs_per_second": round(total / fuzz_seconds, 1) if fuzz_seconds else 0.0,
        "fuzz_seconds": round(fuzz_seconds, 1),
        # CPU each process spent while fuzzing (the sender, its hypothesis process, the servers).
        "cpu_seconds": {name: round(cpu_after[name] - cpu_before[name], 1) for name in cpu_before},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "seed": seed,
        "seconds": round(time.monotonic() - t0, 1),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", type=int, default=1000, help="inputs per RPC (default 1000)")
    p.add_argument(
        "--drawn",
        type=int,
        default=DRAWN,
        help=f"of those, drawn by hypothesis (default {DRAWN}); the mutation stage breeds the rest from them",
    )
    p.add_argument("--seed", type=int, default=1, help="hypothesis seed (default 1)")
    p.add_argument(
        "--service", action="append", default=[], help="fuzz only services whose name contains this (repeatable)"
    )
    p.add_argument(
        "--method", action="append", default=[], help="fuzz only methods whose path contains this (repeatable)"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help=f"inputs in flight per server (default node {CONCURRENCY['node']}, agent {CONCURRENCY['agent']})",
    )
    p.add_argument(
        "--one-server-at-a-time",
        action="store_true",
        help="fuzz the servers one after the other (default: in parallel, each one RPC at a time)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep keys, data and server logs here")
    p.add_argument("--json", action="store_true", help="print only the JSON line")


def main(args: argparse.Namespace) -> int:
    import sys

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(
        inputs=args.inputs,
        seed=args.seed,
        services_wanted=args.service,
        methods_wanted=args.method,
        workdir=args.workdir,
        drawn=args.drawn,
        concurrency=None if args.concurrency is None else {"node": args.concurrency, "agent": args.concurrency},
        one_server_at_a_time=args.one_server_at_a_time,
        progress=None if args.json else progress,
    )
    if not args.json:
        bad = {p: r for p, r in result["rpcs"].items() if r["unknown"] or r["internal"] or r["tracebacks"]}
        print(f"fuzzed {len(result['rpcs'])} RPCs x {args.inputs} inputs; {len(bad)} with UNKNOWN/INTERNAL/tracebacks")
    print(json.dumps(result))
    return 0
