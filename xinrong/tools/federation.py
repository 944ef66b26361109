"""All parties of a training job in one process, with every message on a modeled wire.

This driver exists for tests, trials and the benchmark. It does what the
gRPC transport will do, minus the network:

* every message crosses as bytes (``xinrong.modeling.vlr_wire``): encoded, counted
  per party, decoded on the other side, so nothing relies on sharing Python
  objects and ``bytes_per_party`` is what would be sent;
* what the node must not read is **really sealed** with HPKE
  (``xinrong.keys.sealing``) to throwaway X25519 keys of the recipient, with the same
  content types and contexts the transport uses, so sealed sizes are honest
  and the node object is only ever handed sealed bytes;
* with ``capture=True`` every byte string the node receives or sends is
  recorded (``Traffic.node_view``) for the privacy tests.

Alignment uses the ECDH-PSI (``xinrong.modeling.psi``); ``align="ids"`` is a
test-only shortcut that joins on plain ids. Scoring of held-out rows uses
the private scoring protocol (``xinrong.modeling.scoring``) under a key of the
bank's own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from xinrong.errors import ProviderUnavailable
from xinrong.keys.sealing import SealingKey, seal
from xinrong.modeling import scoring
from xinrong.modeling.data import PartyTable, align_by_id_for_tests, stratified_split
from xinrong.modeling.he.base import HESecret, keygen, provider_public_bytes
from xinrong.modeling.vlr import (
    SEALED_PARTIAL,
    SEALED_RESIDUAL,
    SEALED_SQUARE,
    BackwardReply,
    BackwardRequest,
    BankMetrics,
    BankParty,
    BoundReport,
    BoundRequest,
    EncryptRequest,
    EpochAck,
    EpochEnd,
    FinishAck,
    FinishRequest,
    ForwardReply,
    GradientReply,
    GradientRequest,
    JobSetup,
    JobStart,
    JobStarted,
    LossReply,
    NodeCoordinator,
    PartialLogits,
    ProviderParty,
    Residual,
    RestoreAck,
    RestoreRequest,
    ResumeQuery,
    ResumeState,
    SetupAck,
    SquareTerm,
    TrainConfig,
    UpdateAck,
    UpdateRequest,
    seal_context,
)
from xinrong.modeling.vlr_state import ModelShare, atomic_write_bytes
from xinrong.modeling.vlr_wire import decode, encode
from xinrong.v1 import common_pb2

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
M = TypeVar("M")
R = TypeVar("R")
NODE = "node"


# -- the modeled wire ----------------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    """One byte string the node handled: direction relative to the node, peer, message type."""

    direction: Literal["in", "out"]
    peer: str
    kind: str
    data: bytes


@dataclass
class Traffic:
    """Bytes each party sent and received, CPU each party spent; optionally everything the node saw.

    ``cpu_seconds`` is thread CPU time attributed to the party whose code ran
    (``working``): nested work of another party (the node calling a
    provider) is subtracted from the caller, so each entry is what that
    party would spend in a process of its own (minus the gRPC layer). Only
    the calling thread counts: work a backend hands to its own threads or
    processes (Paillier's obfuscator pool and exponentiation workers) is
    missing, so compare CKKS and plain runs, not Paillier ones.
    """

    capture: bool = False
    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    node_view: list[Captured] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    _stacks: threading.local = field(default_factory=threading.local, repr=False, compare=False)
    _cpu_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @contextmanager
    def working(self, party: str) -> Iterator[None]:
        """Attribute this thread's CPU time inside the block to ``party``."""
        stack: list[list[float]] = self._stacks.__dict__.setdefault("stack", [])
        frame = [time.thread_time(), 0.0]  # start, time spent in nested parties
        stack.append(frame)
        try:
            yield
        finally:
            stack.pop()
            elapsed = time.thread_time() - frame[0]
            with self._cpu_lock:
                self.cpu_seconds[party] = self.cpu_seconds.get(party, 0.0) + elapsed - frame[1]
            if stack:
                stack[-1][1] += elapsed

    def transfer(self, src: str, dst: str, kind: str, data: bytes) -> None:
        self.sent[src] = self.sent.get(src, 0) + len(data)
        self.received[dst] = self.received.get(dst, 0) + len(data)
        if self.capture and NODE in (src, dst):
            if dst == NODE:
                self.node_view.append(Captured("in", src, kind, data))
            else:
                self.node_view.append(Captured("out", dst, kind, data))

    def per_party(self) -> dict[str, dict[str, int]]:
        parties = sorted(set(self.sent) | set(self.received))
        return {p: {"sent": self.sent.get(p, 0), "received": self.received.get(p, 0)} for p in parties}


class SealingModel:
    """Throwaway HPKE keys, sealing and opening exactly as the transport does."""

    def __init__(self, party_ids: Sequence[str]) -> None:
        self._keys = {pid: SealingKey.generate() for pid in party_ids}

    def seal(self, plaintext: bytes, *, to: str, content_type: str, context: str) -> bytes:
        key = self._keys[to]
        box = seal(
            plaintext, recipient_id=to, recipient_public_raw=key.public_raw, content_type=content_type, context=context
        )
        return box.SerializeToString()

    def open(self, blob: bytes, *, recipient: str, content_type: str, context: str) -> bytes:
        box = common_pb2.SealedBox.FromString(blob)
        return self._keys[recipient].open(box, recipient_id=recipient, content_type=content_type, context=context)


def _cross(traffic: Traffic, src: str, dst: str, msg: M) -> M:
    """Send a protocol message over the modeled wire: encode, count, decode."""
    data = encode(msg)
    traffic.transfer(src, dst, type(msg).__name__, data)
    out: M = decode(type(msg), data)
    return out


class LocalProviderLink:
    """The node's link to one in-process provider, playing the provider agent's transport."""

    def __init__(
        self,
        party: ProviderParty,
        *,
        traffic: Traffic,
        sealing: SealingModel,
        bank_id: str,
        share_dir: Path,
        fail_after: int | None = None,
    ) -> None:
        self.provider_id = party.party_id
        self.party = party
        self._traffic = traffic
        self._sealing = sealing
        self._bank_id = bank_id
        self._share_dir = share_dir
        self._fail_after = fail_after
        self._calls = 0

    def _call(self, msg: M, handler: Callable[[M], R]) -> R:
        self._calls += 1
        if self._fail_after is not None and self._calls > self._fail_after:
            raise ProviderUnavailable(f"provider {self.provider_id} stopped answering")
        with self._traffic.working(self.provider_id):
            reply = handler(_cross(self._traffic, NODE, self.provider_id, msg))
            return _cross(self._traffic, self.provider_id, NODE, reply)

    def setup(self, msg: JobSetup) -> SetupAck:
        return self._call(msg, self.party.setup)

    def bound(self, msg: BoundRequest) -> BoundReport:
        return self._call(msg, self.party.bound)

    def encrypt(self, msg: EncryptRequest) -> bytes:
        def handler(m: EncryptRequest) -> bytes:
            partial = self.party.encrypt(m)
            return self._sealing.seal(
                encode(partial),
                to=self._bank_id,
                content_type=SEALED_PARTIAL,
                context=seal_context(m.job_id, m.epoch, m.batch, self.provider_id),
            )

        self._calls += 1
        if self._fail_after is not None and self._calls > self._fail_after:
            raise ProviderUnavailable(f"provider {self.provider_id} stopped answering")
        with self._traffic.working(self.provider_id):
            sealed = handler(_cross(self._traffic, NODE, self.provider_id, msg))
        self._traffic.transfer(self.provider_id, NODE, "SealedPartialLogits", sealed)
        return sealed

    def gradient(self, msg: GradientRequest) -> GradientReply:
        def handler(m: GradientRequest) -> GradientReply:
            ctx = seal_context(m.job_id, m.epoch, m.batch, self.provider_id)
            opened = self._sealing.open(
                m.sealed_residual, recipient=self.provider_id, content_type=SEALED_RESIDUAL, context=ctx
            )
            out = self.party.gradient(decode(Residual, opened))
            sealed_square = b""
            if out.square:
                sealed_square = self._sealing.seal(
                    out.square, to=self._bank_id, content_type=SEALED_SQUARE, context=ctx
                )
            return GradientReply(out.job_id, out.epoch, out.batch, out.party_id, out.payload, sealed_square)

        return self._call(msg, handler)

    def update(self, msg: UpdateRequest) -> UpdateAck:
        return self._call(msg, self.party.update)

    def end_epoch(self, msg: EpochEnd) -> EpochAck:
        return self._call(msg, self.party.end_epoch)

    def finish(self, msg: FinishRequest) -> FinishAck:
        return self._call(msg, lambda m: self.party.finish(m, self._share_dir / f"{self.provider_id}.share.json"))

    def resume_state(self, msg: ResumeQuery) -> ResumeState:
        return self._call(msg, self.party.resume_state)

    def restore(self, msg: RestoreRequest) -> RestoreAck:
        return self._call(msg, self.party.restore)


# -- one training job ----------------------------------------------------------------------


@dataclass
class TrainResult:
    bank_share: ModelShare
    provider_shares: dict[str, ModelShare]
    metadata: dict[str, Any]
    metrics: BankMetrics
    traffic: Traffic
    seconds_train: float
    epoch_seconds: list[float]
    resumed_from: int


class LocalFederation:
    """A bank, its providers and the node, wired together in-process.

    The bank drives: each batch is ``ForwardRequest`` -> node -> providers ->
    node -> bank, then ``BackwardRequest`` -> node -> providers -> node ->
    bank (plus ``LossRequest`` with a degree-1 backend).
    """

    def __init__(
        self,
        bank: BankParty,
        providers: Sequence[ProviderParty],
        secret: HESecret,
        *,
        workdir: str | Path,
        parallel: bool = False,
        capture: bool = False,
        fail_after: dict[str, int] | None = None,
        traffic: Traffic | None = None,
    ) -> None:
        self.bank = bank
        self.providers = list(providers)
        self.workdir = Path(workdir)
        self.traffic = traffic if traffic is not None else Traffic(capture=capture)
        ids = [bank.party_id] + [p.party_id for p in self.providers]
        self.sealing = SealingModel(ids)
        share_dir = self.workdir / "shares"
        self.links = [
            LocalProviderLink(
                p,
                traffic=self.traffic,
                sealing=self.sealing,
                bank_id=bank.party_id,
                share_dir=share_dir,
                fail_after=(fail_after or {}).get(p.party_id),
            )
            for p in self.providers
        ]
        self.node = NodeCoordinator(
            secret, self.links, public_for_providers=provider_public_bytes(secret), parallel=parallel
        )
        self.share_dir = share_dir
        self._started = False

    def _to_node(self, msg: M, handler: Callable[[M], R]) -> R:
        with self.traffic.working(NODE):
            reply = handler(_cross(self.traffic, self.bank.party_id, NODE, msg))
            return _cross(self.traffic, NODE, self.bank.party_id, reply)

    def start(self, n_rows: int, train_rows: npt.ArrayLike) -> None:
        with self.traffic.working(self.bank.party_id):
            start: JobStart = self.bank.job_start([p.party_id for p in self.providers], n_rows, train_rows)
            started: JobStarted = self._to_node(start, self.node.start)
            self.bank.started(started)
        self._started = True

    def resume(self) -> int:
        """Restore every party to the newest epoch all of them checkpointed; 0 if none."""
        cfg = self.bank._cfg()
        query = ResumeQuery(cfg.job_id)
        common = set(self.node.resume(_cross(self.traffic, self.bank.party_id, NODE, query)))
        common &= set(self.bank.checkpointed_epochs())
        if not common:
            return 0
        epoch = max(common)
        self.bank.restore_checkpoint(epoch)
        self.node.restore(_cross(self.traffic, self.bank.party_id, NODE, RestoreRequest(cfg.job_id, epoch)))
        return epoch

    def _batch(self, epoch: int, batch: int) -> None:
        bank, job = self.bank, self.bank._cfg().job_id
        fwd: ForwardReply = self._to_node(bank.forward_request(epoch, batch), self.node.forward)
        partials = [
            decode(
                PartialLogits,
                self.sealing.open(
                    blob,
                    recipient=bank.party_id,
                    content_type=SEALED_PARTIAL,
                    context=seal_context(job, epoch, batch, pid),
                ),
            )
            for pid, blob in zip(fwd.provider_ids, fwd.sealed_partials)
        ]
        back = bank.backward(fwd, partials)
        sealed = tuple(
            self.sealing.seal(
                encode(r),
                to=r.party_id,
                content_type=SEALED_RESIDUAL,
                context=seal_context(job, epoch, batch, r.party_id),
            )
            for r in back.residuals
        )
        request = BackwardRequest(job, epoch, batch, sealed, back.gradient_payload, back.loss_payload)
        reply: BackwardReply = self._to_node(request, self.node.backward)
        squares = [
            decode(
                SquareTerm,
                self.sealing.open(
                    blob,
                    recipient=bank.party_id,
                    content_type=SEALED_SQUARE,
                    context=seal_context(job, epoch, batch, pid),
                ),
            )
            for pid, blob in zip(self.node.provider_ids, reply.sealed_squares)
        ]
        loss_request = bank.apply(reply, squares)
        if loss_request is not None:
            loss_reply: LossReply = self._to_node(loss_request, self.node.loss)
            bank.apply_loss(loss_reply)

    def run(self, *, progress: Callable[[int, BankMetrics], None] | None = None, resume: bool = False) -> TrainResult:
        if not self._started:
            raise RuntimeError("call start() first")
        with self.traffic.working(self.bank.party_id):  # the bank drives; node and provider work is carved out
            return self._run(progress, resume)

    def _run(self, progress: Callable[[int, BankMetrics], None] | None, resume: bool) -> TrainResult:
        cfg = self.bank._cfg()
        resumed_from = self.resume() if resume else 0
        t0 = time.perf_counter()
        epoch_seconds: list[float] = []
        try:
            for epoch in range(self.bank.pos.epoch, cfg.epochs):
                te = time.perf_counter()
                for b in range(self.bank.n_batches()):
                    self._batch(epoch, b)
                end: EpochEnd = self.bank.end_epoch()
                self._to_node(end, self.node.end_epoch)
                epoch_seconds.append(time.perf_counter() - te)
                if progress is not None:
                    progress(end.epoch, self.bank.metrics)
                if end.stop:
                    break
            epochs = self.bank.metrics.epochs_run
            finish = FinishRequest(cfg.job_id, epochs, tuple(self.bank.metrics.epoch_losses))
            metadata = self.node.finish(_cross(self.traffic, self.bank.party_id, NODE, finish))
            meta_bytes = json.dumps(metadata, sort_keys=True, indent=1, allow_nan=False).encode()
            atomic_write_bytes(self.workdir / "node" / f"{cfg.job_id}.model.json", meta_bytes)
            bank_share = self.bank.finish(self.share_dir / f"{self.bank.party_id}.share.json")
        finally:
            self.node.close()
        provider_shares = {
            p.party_id: ModelShare.load(self.share_dir / f"{p.party_id}.share.json") for p in self.providers
        }
        return TrainResult(
            bank_share=bank_share,
            provider_shares=provider_shares,
            metadata=metadata,
            metrics=self.bank.metrics,
            traffic=self.traffic,
            seconds_train=time.perf_counter() - t0,
            epoch_seconds=epoch_seconds,
            resumed_from=resumed_from,
        )


# -- alignment -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """Rows common to the bank and all providers, in one order every party shares."""

    ids: tuple[str, ...]  # the bank's view: the id of every aligned row (decoys included)
    bank_rows: npt.NDArray[np.int64]  # row in the bank's table, -1 for a decoy
    provider_rows: dict[str, npt.NDArray[np.int64]]
    is_decoy: npt.NDArray[np.bool_]
    seconds: float
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per party, its PSI workers included

    def __len__(self) -> int:
        return int(self.bank_rows.size)


def align_psi(
    bank: PartyTable,
    providers: Sequence[PartyTable],
    *,
    job_id: str,
    traffic: Traffic,
    decoys: Sequence[str] = (),
    workers: int | None = None,
) -> Alignment:
    """ECDH-PSI between the bank and each provider, relayed (and counted) through the node.

    The parties work as they would in their own processes: every provider
    blinds its own ids at once (``ProviderPsi.prepare``, concurrently with
    the bank's request) and answers the request on its own thread; the bank
    accepts responses as they arrive. X25519 holds the GIL, so the blinding
    itself runs in one pool of worker processes shared by all parties of
    this process (``psi.worker_pool``; ``workers=1``: none, all in this
    thread). ``Alignment.cpu_seconds`` is each party's CPU, its workers
    included: what it would spend in a process of its own.
    """
    from xinrong.modeling import psi

    t0 = time.perf_counter()
    context = f"xinrong/vlr/{job_id}".encode()
    work = len(bank.ids) + len(decoys) + sum(len(bank.ids) + 2 * len(p.ids) for p in providers)
    n_workers = psi.worker_count(workers)
    pool = psi.worker_pool(n_workers) if n_workers > 1 and work >= psi.PARALLEL_MIN else None
    try:
        bank_psi = psi.BankPsi(bank.ids, context=context, decoys=decoys, workers=n_workers, executor=pool)
        provider_psis = {
            p.name: psi.ProviderPsi(p.ids, context=context, workers=n_workers, executor=pool) for p in providers
        }
        with ThreadPoolExecutor(max_workers=len(providers), thread_name_prefix="psi-provider") as threads:
            for pp in provider_psis.values():
                threads.submit(pp.prepare)  # their own ids, while the bank blinds its request
            request = bank_psi.request()
            traffic.transfer(bank.name, NODE, "PsiRequest", request)
            responses = {}
            for p in providers:
                traffic.transfer(NODE, p.name, "PsiRequest", request)
                responses[p.name] = threads.submit(provider_psis[p.name].respond, request)
            for p in providers:
                response = responses[p.name].result()
                traffic.transfer(p.name, NODE, "PsiResponse", response)
                traffic.transfer(NODE, bank.name, "PsiResponse", response)
                bank_psi.accept(p.name, response)
        alignment, selections = bank_psi.finish()
        provider_rows = {}
        for p in providers:
            sel = selections[p.name]
            traffic.transfer(bank.name, NODE, "PsiSelection", sel)
            traffic.transfer(NODE, p.name, "PsiSelection", sel)
            provider_rows[p.name] = provider_psis[p.name].finish(sel).provider_index
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return Alignment(
        ids=tuple(alignment.ids),
        bank_rows=alignment.bank_index,
        provider_rows=provider_rows,
        is_decoy=np.asarray(alignment.is_decoy, dtype=bool),
        seconds=time.perf_counter() - t0,
        cpu_seconds={bank.name: bank_psi.cpu_seconds, **{n: pp.cpu_seconds for n, pp in provider_psis.items()}},
    )


def align_ids_for_tests(bank: PartyTable, providers: Sequence[PartyTable]) -> Alignment:
    """TEST-ONLY: join on plain ids (see ``xinrong.modeling.data.align_by_id_for_tests``)."""
    t0 = time.perf_counter()
    bank_rows, rows = align_by_id_for_tests(bank, providers)
    return Alignment(
        ids=tuple(bank.ids[i] for i in bank_rows),
        bank_rows=bank_rows,
        provider_rows={p.name: r for p, r in zip(providers, rows)},
        is_decoy=np.zeros(bank_rows.size, dtype=bool),
        seconds=time.perf_counter() - t0,
    )


# -- end to end: align, split, train, score ---------------------------------------------------


@dataclass
class JobResult:
    train: TrainResult
    alignment: Alignment
    train_rows: npt.NDArray[np.int64]  # positions in the aligned order
    test_rows: npt.NDArray[np.int64]
    y_train: FloatArray
    y_test: FloatArray
    test_logits: FloatArray  # from private scoring
    seconds_total: float  # alignment + keys + training, to the finished model
    seconds_keygen: float
    seconds_scoring: float
    scoring_traffic: Traffic


def run_job(
    bank: PartyTable,
    providers: Sequence[PartyTable],
    config: TrainConfig,
    *,
    backend: str,
    he_params: dict[str, Any] | None = None,
    workdir: str | Path,
    align: Literal["psi", "ids"] = "psi",
    decoys: Sequence[str] = (),
    test_fraction: float = 0.3,
    split_seed: int = 0,
    parallel: bool = False,
    capture: bool = False,
    progress: Callable[[int, BankMetrics], None] | None = None,
    psi_workers: int | None = None,
) -> JobResult:
    """The whole job in one process: PSI, 70/30 stratified split, training, private scoring of the test rows."""
    if bank.y is None:
        raise ValueError("the bank's table needs labels")
    names = [bank.name] + [p.name for p in providers]
    if len(set(names)) != len(names):
        raise ValueError("party names must be distinct")
    workdir = Path(workdir)
    t_start = time.perf_counter()
    traffic = Traffic(capture=capture)
    if align == "psi":
        alignment = align_psi(
            bank, providers, job_id=config.job_id, traffic=traffic, decoys=decoys, workers=psi_workers
        )
    else:
        if decoys:
            raise ValueError("decoys need the PSI")
        alignment = align_ids_for_tests(bank, providers)
    n = len(alignment)
    if n == 0:
        raise ValueError("the parties have no rows in common")
    real = ~alignment.is_decoy
    y_aligned = np.zeros(n)
    y_aligned[real] = bank.y[alignment.bank_rows[real]]
    # Split in the bank's own row order, so the split depends on the bank's data and
    # the seed only, not on the PSI's random canonical order.
    real_pos = np.flatnonzero(real)
    real_pos = real_pos[np.argsort(alignment.bank_rows[real_pos], kind="stable")]
    tr, te = stratified_split(y_aligned[real_pos], test_fraction, split_seed)
    # Training order: a keyed hash of the ids. Reproducible for a given job (so batches do
    # not depend on the PSI's random row order), and a function of the ids alone, so it
    # reveals nothing of the bank's own row order (which may follow dates or outcomes).
    train_rows = np.concatenate([real_pos[tr], np.flatnonzero(alignment.is_decoy)]).astype(np.int64)
    keys = [hashlib.sha256(f"{config.job_id}\x00{alignment.ids[i]}".encode()).digest() for i in train_rows]
    train_rows = train_rows[np.argsort(np.array(keys, dtype=object), kind="stable")]
    test_rows = np.sort(real_pos[te]).astype(np.int64)
    x_bank = np.full((n, len(bank.columns)), np.nan)
    x_bank[real] = bank.x[alignment.bank_rows[real]]

    tk = time.perf_counter()
    secret = keygen(backend, **(he_params or {}))
    seconds_keygen = time.perf_counter() - tk

    bank_party = BankParty(
        bank.name,
        config,
        x_bank[train_rows],
        bank.columns,
        y_aligned[train_rows],
        decoy=alignment.is_decoy[train_rows],
        checkpoint_dir=workdir / "checkpoints" / bank.name,
    )
    provider_parties = [
        ProviderParty(
            p.name,
            p.x[alignment.provider_rows[p.name]],
            p.columns,
            checkpoint_dir=workdir / "checkpoints" / p.name,
        )
        for p in providers
    ]
    fed = LocalFederation(bank_party, provider_parties, secret, workdir=workdir, parallel=parallel, traffic=traffic)
    fed.start(n, train_rows)
    result = fed.run(progress=progress)
    seconds_total = time.perf_counter() - t_start

    ts = time.perf_counter()
    scoring_traffic = Traffic(capture=capture)
    logits = score_rows(
        result.bank_share,
        x_bank[test_rows],
        {p.name: (result.provider_shares[p.name], p.x[alignment.provider_rows[p.name][test_rows]]) for p in providers},
        request_id=f"{config.job_id}-test",
        traffic=scoring_traffic,
    )
    return JobResult(
        train=result,
        alignment=alignment,
        train_rows=train_rows,
        test_rows=test_rows,
        y_train=y_aligned[train_rows],
        y_test=y_aligned[test_rows],
        test_logits=logits,
        seconds_total=seconds_total,
        seconds_keygen=seconds_keygen,
        seconds_scoring=time.perf_counter() - ts,
        scoring_traffic=scoring_traffic,
    )


def score_rows(
    bank_share: ModelShare,
    bank_x_raw: npt.ArrayLike,
    providers: dict[str, tuple[ModelShare, npt.ArrayLike]],
    *,
    request_id: str,
    traffic: Traffic,
    scheme: str = "ckks",
) -> FloatArray:
    """Private scoring of aligned rows: providers encrypt under the bank's key, the node adds, the bank decrypts."""
    secret = scoring.bank_keygen(scheme)
    public_bytes = scoring.bank_public_bytes(secret)
    from xinrong.modeling.he.base import load_public

    payloads = []
    for pid, (share, x_raw) in providers.items():
        traffic.transfer(bank_share.party_id, NODE, "ScoringKey", public_bytes)
        traffic.transfer(NODE, pid, "ScoringKey", public_bytes)
        public = load_public(scheme, public_bytes)
        features = share.transform.apply(x_raw)
        payload = scoring.provider_encrypt(public, request_id, pid, features, np.asarray(share.weights))
        traffic.transfer(pid, NODE, "PartialScores", payload)
        payloads.append(payload)
    node_public = load_public(scheme, public_bytes)
    total = scoring.aggregate(node_public, payloads, min_providers=len(providers))
    traffic.transfer(NODE, bank_share.party_id, "AggregateScores", total)
    bx = np.asarray(bank_x_raw, dtype=np.float64)
    own = bank_share.transform.apply(bx) @ np.asarray(bank_share.weights) if bank_share.weights else None
    batch = scoring.bank_score(
        secret,
        total,
        request_id=request_id,
        expected_providers=list(providers),
        bank_partial=own,
        intercept=float(bank_share.intercept or 0.0),
    )
    out: FloatArray = np.asarray(batch.logit, dtype=np.float64)
    if not np.all(np.isfinite(out)) or math.isnan(float(out.sum())):
        raise ValueError("scoring produced non-finite logits")
    return out
