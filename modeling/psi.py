"""ECDH private set intersection over X25519 (SecretFlow's ECDH-25519 construction).

Who learns what
---------------
The bank (which learns the intersection) runs one ``BankPsi``; every provider
runs a ``ProviderPsi``; the node relays the messages, which hold only blinded
curve points and row positions:

1. bank -> provider: ``{H(x)^a}`` for the bank's ids, in a random order.
2. provider -> bank: ``{H(x)^ab}`` in the bank's order, plus ``{H(y)^b}`` for
   the provider's ids in a random order of its own.
3. bank: computes ``{H(y)^ba}``, matches, and intersects across all providers;
   then sends each provider the positions (in that provider's step-2 order)
   of the common rows, in one canonical row order.

Afterwards every party holds the same rows in the same order. The canonical
order is a uniformly random permutation drawn from the OS CSPRNG: an order
derived from the bank's data (say, sorted by loan date or outcome) would leak
that data to the providers. A provider learns the size of the bank's set and
which of its own ids are in the (joint) intersection, which vertical training
needs anyway; it never sees a bank id. The bank learns the intersection and
the providers' set sizes; the other points it receives are pseudorandom.
Security: semi-honest, in the random-oracle model, under the decisional
Diffie-Hellman assumption on Curve25519 and its twist (Huberman, Franklin,
Hogg 1999; the form analysed by Pinkas, Schneider, Zohner 2014/2018).

Decoys: the bank may add decoy ids (say, from the public registry) that it
will zero out in training. They are hashed and blinded like real ids, so a
provider cannot tell which intersecting rows are real borrowers; only the
bank's ``BankAlignment.is_decoy`` marks them.

Hashing to the curve
--------------------
``H(id)`` is SHA-256 over a domain tag, the job context and the id,
interpreted as an X25519 u-coordinate (top bit cleared, reduced mod p). About
half of all u-coordinates lie on Curve25519 and half on its quadratic twist;
X25519 handles both with the same ladder, and its scalar clamping makes every
scalar a multiple of the cofactor (8), so blinded values land in the
prime-order subgroup of the curve (order ~2^252) or of the twist (order
~2^253). Curve25519 was chosen to be twist-secure (Bernstein 2006; the twist's
prime subgroup gives ~2^126 security against discrete logs), so both halves
are sound groups for DDH, and the groups are disjoint, so matching is
unaffected. Blinding is ``X25519(k, u)`` through ``cryptography``'s
``X25519PrivateKey.exchange``; X25519 is commutative in the scalar
(``X25519(a, X25519(b, u)) == X25519(b, X25519(a, u))``), which is all ECDH-PSI
needs. SecretFlow's CURVE_25519 cryptor does the same (libsodium's
``crypto_scalarmult_curve25519`` on a SHA-256 digest used as the
u-coordinate); its separate Elligator-2 cryptor implements RFC 9380's
random-oracle hash-to-curve, which needs y-coordinates and affine point
additions in hand-written field arithmetic - the x-only X25519 API offers
neither, and the twist-secure direct hash above needs neither.

Every ``BankPsi`` / ``ProviderPsi`` draws a fresh 32-byte scalar, so blinded
values from different jobs cannot be linked.

Messages are transport-agnostic bytes: a fixed header (magic, version, kind,
a 16-byte digest of the job context, counts) followed by packed 32-byte
points or uint32 little-endian positions (``xinrong.modeling.positions``,
the codec every positions field uses). Version 1 sent the positions
big-endian; version 2 changed only that, and a party of one version refuses
every message of the other (step 1 already), so mixed deployments fail
loudly instead of misreading rows.

Cost and parallelism
--------------------
Every blinding is one X25519 scalar multiplication, ~40 us through
``cryptography`` on this machine (the call overhead around OpenSSL's ladder
is ~10 %); the call holds the GIL, so threads do not help. With ``n_b`` bank
ids, ``n_p`` ids per provider and K providers the job costs ``n_b`` (the
request, blinded once and reused for every provider) + ``K * (n_b + n_p)``
(providers) + ``K * n_p`` (the bank's accepts) multiplications: 210,000 for
30,000 x 30,000 and two providers. Large calls are therefore split into
chunks blinded in worker processes (``spawn``: the parties may run gRPC
threads, which ``fork`` would not copy safely); a party starts its own pool
for calls of ``PARALLEL_MIN`` points or more, or uses a caller-owned
``executor`` shared by several parties in one process (``xinrong.tools.federation_job.align_psi``).
A provider may blind its own ids (``ProviderPsi.prepare``) before the bank's
request arrives: they do not depend on it.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import struct
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Self

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from xinrong.modeling.positions import decode_positions, encode_positions

log = logging.getLogger(__name__)

POINT_BYTES = 32
CHUNK = 25_000  # largest task sent to a worker
MIN_CHUNK = 2_000  # smallest task worth a round trip to a worker (~80 ms of work)
TASKS_PER_WORKER = 4  # chunks per worker and call, so uneven workers even out
PARALLEL_MIN = 20_000  # below this, starting a party's own worker processes costs more than it saves
SHARED_MIN = 2 * MIN_CHUNK  # with a caller-owned (already running) executor
P25519 = 2**255 - 19

_MAGIC = b"XRPI"
_VERSION = 2  # 2: little-endian positions in the selection (1: big-endian)
_KIND_REQUEST = 1
_KIND_RESPONSE = 2
_KIND_SELECTION = 3
_HEADER = struct.Struct(">4sBB16sII")  # magic, version, kind, context digest, count a, count b
_HASH_DOMAIN = b"xinrong/psi/x25519/hash/v1\x00"
_CONTEXT_DOMAIN = b"xinrong/psi/x25519/context/v1\x00"


# --------------------------------------------------------------------------
# Primitives.


def context_digest(context: bytes) -> bytes:
    """32 bytes binding hashes and messages to one job."""
    return hashlib.sha256(_CONTEXT_DOMAIN + context).digest()


def hash_to_u(digest: bytes, identifier: str) -> bytes:
    """H(id): a canonical X25519 u-coordinate (on the curve or its twist)."""
    h = bytearray(hashlib.sha256(_HASH_DOMAIN + digest + identifier.encode("utf-8")).digest())
    h[31] &= 0x7F
    if h[31] == 0x7F and int.from_bytes(h, "little") >= P25519:  # 19 of 2^255 values
        return (int.from_bytes(h, "little") - P25519).to_bytes(32, "little")
    return bytes(h)


def blind(scalar: bytes, points: Sequence[bytes]) -> list[bytes]:
    """X25519(scalar, u) for every u; raises ValueError on a low-order input point."""
    key = X25519PrivateKey.from_private_bytes(scalar)
    from_bytes = X25519PublicKey.from_public_bytes
    try:
        return [key.exchange(from_bytes(u)) for u in points]
    except ValueError as exc:  # all-zero shared secret: a small-order point
        raise ValueError("PSI message holds a low-order curve point") from exc


def _task_blind(scalar: bytes, packed: bytes) -> tuple[bytes, float]:
    started = time.thread_time()
    points = [packed[i : i + POINT_BYTES] for i in range(0, len(packed), POINT_BYTES)]
    return b"".join(blind(scalar, points)), time.thread_time() - started


def _task_hash_blind(scalar: bytes, digest: bytes, ids: list[str]) -> tuple[bytes, float]:
    started = time.thread_time()
    out = b"".join(blind(scalar, [hash_to_u(digest, i) for i in ids]))
    return out, time.thread_time() - started


def _split_points(packed: bytes) -> list[bytes]:
    return [packed[i : i + POINT_BYTES] for i in range(0, len(packed), POINT_BYTES)]


def _random_permutation(n: int) -> npt.NDArray[np.int64]:
    """A uniform random permutation from the OS CSPRNG (argsort of 64-bit random keys)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64)


def _check_ids(ids: Sequence[str], what: str) -> list[str]:
    out = list(ids)
    if any(not isinstance(i, str) for i in out):
        raise TypeError(f"{what} must be strings")
    if len(set(out)) != len(out):
        raise ValueError(f"{what} contain duplicates")
    return out


def worker_count(workers: int | None = None) -> int:
    """Worker processes for ``workers`` (None: the cores, at most 4)."""
    return max(1, min(os.cpu_count() or 1, 4) if workers is None else workers)


def worker_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A pool of ``worker_count(workers)`` blinding processes that several parties of one process may share.

    ``spawn`` start method (see the module docstring); the caller owns it and
    shuts it down. Workers receive a party's scalar with each task: share a
    pool only among parties of one trust domain (one process, as in the
    in-process benchmark), never across organisations.
    """
    return ProcessPoolExecutor(max_workers=worker_count(workers), mp_context=multiprocessing.get_context("spawn"))


class _Party:
    """Shared machinery: the job scalar, worker processes, CPU accounting."""

    def __init__(self, context: bytes, workers: int | None, executor: Executor | None = None) -> None:
        self._digest = context_digest(context)
        self._tag = self._digest[:16]
        self._scalar = os.urandom(32)
        self._workers = worker_count(workers)
        self._shared = executor
        self._executor: ProcessPoolExecutor | None = None
        self._cpu_lock = threading.Lock()
        self.cpu_seconds = 0.0  # this party's own threads plus its tasks in worker processes

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop this party's own worker processes (never a shared executor)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _add_cpu(self, seconds: float) -> None:
        with self._cpu_lock:
            self.cpu_seconds += seconds

    def _pool(self, size: int) -> Executor | None:
        if self._shared is not None:
            return self._shared if size >= SHARED_MIN else None
        if self._workers <= 1 or size < PARALLEL_MIN:
            return None
        if self._executor is None:
            self._executor = worker_pool(self._workers)
        return self._executor

    def _chunk(self, size: int) -> int:
        """Points per task: TASKS_PER_WORKER tasks per worker, within [MIN_CHUNK, CHUNK]."""
        return max(MIN_CHUNK, min(CHUNK, -(-size // (TASKS_PER_WORKER * self._workers))))

    def _hash_blind(self, ids: list[str]) -> bytes:
        pool = self._pool(len(ids))
        if pool is None:
            return _task_hash_blind(self._scalar, self._digest, ids)[0]
        step = self._chunk(len(ids))
        futures = [
            pool.submit(_task_hash_blind, self._scalar, self._digest, ids[i : i + step])
            for i in range(0, len(ids), step)
        ]
        parts = []
        for f in futures:
            data, cpu = f.result()
            parts.append(data)
            self._add_cpu(cpu)
        return b"".join(parts)

    def _blind_packed(self, packed: bytes) -> bytes:
        count = len(packed) // POINT_BYTES
        pool = self._pool(count)
        if pool is None:
            return b"".join(blind(self._scalar, _split_points(packed)))
        step = self._chunk(count) * POINT_BYTES
        futures = [pool.submit(_task_blind, self._scalar, packed[i : i + step]) for i in range(0, len(packed), step)]
        parts = []
        for f in futures:
            data, cpu = f.result()
            parts.append(data)
            self._add_cpu(cpu)
        return b"".join(parts)

    def _header(self, kind: int, a: int, b: int = 0) -> bytes:
        return _HEADER.pack(_MAGIC, _VERSION, kind, self._tag, a, b)

    def _parse(self, data: bytes, kind: int) -> tuple[int, int, memoryview]:
        if len(data) < _HEADER.size:
            raise ValueError("truncated PSI message")
        magic, version, got_kind, tag, a, b = _HEADER.unpack_from(data, 0)
        if magic != _MAGIC or version != _VERSION or got_kind != kind:
            raise ValueError("not a PSI message of the expected kind and version")
        if tag != self._tag:
            raise ValueError("PSI message belongs to another job")
        return a, b, memoryview(data)[_HEADER.size :]


# --------------------------------------------------------------------------
# The bank.


@dataclass(frozen=True)
class BankAlignment:
    """The bank's view of the aligned rows, in the canonical order every party shares."""

    ids: list[str] = field(repr=False)
    is_decoy: npt.NDArray[np.bool_] = field(repr=False)
    bank_index: npt.NDArray[np.int64] = field(repr=False)  # row in the bank's ids, -1 for decoys

    def __len__(self) -> int:
        return len(self.ids)


class BankPsi(_Party):
    """The party that learns the intersection and fixes the row order."""

    def __init__(
        self,
        ids: Sequence[str],
        *,
        context: bytes,
        decoys: Sequence[str] = (),
        workers: int | None = None,
        executor: Executor | None = None,
    ) -> None:
        started = time.thread_time()
        super().__init__(context, workers, executor)
        real = _check_ids(ids, "bank ids")
        real_set = set(real)
        extra = [d for d in _check_ids(decoys, "decoy ids") if d not in real_set]
        if len(extra) != len(decoys):
            log.info("dropped %d decoys that are real bank ids", len(decoys) - len(extra))
        self._n_real = len(real)
        self._items = real + extra  # index < n_real: real row; otherwise a decoy
        self._order = _random_permutation(len(self._items))  # request position -> item
        self._matches: dict[str, npt.NDArray[np.int64]] = {}  # provider -> position in its list, per request slot
        self._provider_sizes: dict[str, int] = {}
        self._request: bytes | None = None
        self._add_cpu(time.thread_time() - started)

    def request(self) -> bytes:
        """Step 1: the bank's blinded ids, shuffled (the same bytes go to every provider)."""
        if self._request is None:
            started = time.thread_time()
            ordered = [self._items[i] for i in self._order.tolist()]
            body = self._hash_blind(ordered)
            self._request = self._header(_KIND_REQUEST, len(ordered)) + body
            self._add_cpu(time.thread_time() - started)
        return self._request

    def accept(self, provider: str, response: bytes) -> None:
        """Step 3 for one provider: match its double-blinded values against ours."""
        if self._request is None:
            raise RuntimeError("send the request before accepting responses")
        if provider in self._matches:
            raise ValueError(f"a response from provider {provider!r} was already accepted")
        started = time.thread_time()
        n_bank, n_prov, body = self._parse(response, _KIND_RESPONSE)
        if n_bank != len(self._items) or len(body) != (n_bank + n_prov) * POINT_BYTES:
            raise ValueError("PSI response does not match the request")
        split = n_bank * POINT_BYTES
        theirs = self._blind_packed(bytes(body[split:]))
        index: dict[bytes, int] = {}
        for j, point in enumerate(_split_points(theirs)):
            if index.setdefault(point, j) != j:
                raise ValueError("PSI response repeats a provider point")
        ours = _split_points(bytes(body[:split]))
        matches = np.fromiter((index.get(p, -1) for p in ours), dtype=np.int64, count=n_bank)
        self._matches[provider] = matches
        self._provider_sizes[provider] = n_prov
        self._add_cpu(time.thread_time() - started)

    def finish(self) -> tuple[BankAlignment, dict[str, bytes]]:
        """The joint intersection in canonical order, and each provider's selection message."""
        if not self._matches:
            raise RuntimeError("no provider response accepted")
        started = time.thread_time()
        slots = np.arange(len(self._items), dtype=np.int64)
        common = np.ones(len(slots), dtype=bool)
        for matches in self._matches.values():
            common &= matches >= 0
        chosen = slots[common][_random_permutation(int(common.sum()))]  # canonical row order
        items = self._order[chosen]
        selections = {}
        for provider, matches in self._matches.items():
            positions = encode_positions(matches[chosen])
            msg = self._header(_KIND_SELECTION, len(chosen)) + positions
            selections[provider] = msg
        is_decoy = items >= self._n_real
        alignment = BankAlignment(
            ids=[self._items[i] for i in items.tolist()],
            is_decoy=is_decoy,
            bank_index=np.where(is_decoy, -1, items).astype(np.int64),
        )
        self._add_cpu(time.thread_time() - started)
        self.close()
        return alignment, selections


# --------------------------------------------------------------------------
# A provider.


@dataclass(frozen=True)
class ProviderAlignment:
    """A provider's view: its own ids in the canonical row order (no decoy flags)."""

    ids: list[str] = field(repr=False)
    provider_index: npt.NDArray[np.int64] = field(repr=False)  # row in the provider's ids

    def __len__(self) -> int:
        return len(self.ids)


class ProviderPsi(_Party):
    """A data holder: blinds the bank's points and its own, then learns its rows' order."""

    def __init__(
        self,
        ids: Sequence[str],
        *,
        context: bytes,
        workers: int | None = None,
        max_request: int | None = None,
        executor: Executor | None = None,
    ) -> None:
        started = time.thread_time()
        super().__init__(context, workers, executor)
        self._ids = _check_ids(ids, "provider ids")
        self._order = _random_permutation(len(self._ids))  # response position -> own row
        self._max_request = max_request
        self._responded = False
        self._own: bytes | None = None
        self._prepare_lock = threading.Lock()
        self._add_cpu(time.thread_time() - started)

    def prepare(self) -> None:
        """Blind our own ids, {H(y)^b} in our shuffled order, ahead of the bank's request.

        They do not depend on the request, so a provider can do this half of
        its work while the bank computes its request. Idempotent and
        thread-safe; ``respond`` calls it if nobody did.
        """
        with self._prepare_lock:
            if self._own is None:
                started = time.thread_time()
                self._own = self._hash_blind([self._ids[i] for i in self._order.tolist()])
                self._add_cpu(time.thread_time() - started)

    def respond(self, request: bytes) -> bytes:
        """Step 2: {H(x)^ab} in the bank's order and our own {H(y)^b}, shuffled."""
        if self._responded:
            raise RuntimeError("this provider already answered a request for this job")
        started = time.thread_time()
        n_bank, _zero, body = self._parse(request, _KIND_REQUEST)
        if len(body) != n_bank * POINT_BYTES:
            raise ValueError("PSI request length does not match its header")
        if self._max_request is not None and n_bank > self._max_request:
            raise ValueError("PSI request exceeds the allowed set size")
        double = self._blind_packed(bytes(body))
        self._add_cpu(time.thread_time() - started)
        self.prepare()
        started = time.thread_time()
        own = self._own
        if own is None:  # pragma: no cover - prepare() always sets it
            raise RuntimeError("own blinded ids are missing")
        self._responded = True
        msg = self._header(_KIND_RESPONSE, n_bank, len(self._ids)) + double + own
        self._add_cpu(time.thread_time() - started)
        self.close()
        return msg

    def finish(self, selection: bytes) -> ProviderAlignment:
        """Our rows in the canonical order the bank fixed."""
        if not self._responded:
            raise RuntimeError("respond to the request before reading the selection")
        started = time.thread_time()
        count, _zero, body = self._parse(selection, _KIND_SELECTION)
        if len(body) != 4 * count:
            raise ValueError("PSI selection length does not match its header")
        positions = decode_positions(body)
        if positions.size and (positions.max() >= len(self._ids) or len(np.unique(positions)) != positions.size):
            raise ValueError("PSI selection names positions that are out of range or repeated")
        rows = self._order[positions]
        alignment = ProviderAlignment(ids=[self._ids[i] for i in rows.tolist()], provider_index=rows)
        self._add_cpu(time.thread_time() - started)
        return alignment


def psi_context(job_id: str) -> bytes:
    """The PSI's job binding (the bank uses the same): blinded ids of two jobs never match."""
    return f"xinrong/vlr/{job_id}".encode()
