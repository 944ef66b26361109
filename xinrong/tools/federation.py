"""All parties of a training job in one process: the production roles over an in-memory transport.

This simulator exists for tests, trials and the benchmark. What runs is
the code the real processes run: the bank's ``BankDriver`` (as in
``xinrong.bank``), the node's ``NodeCoordinator`` (as in ``xinrong.node``)
and each provider's ``ProviderEndpoint`` (as in ``xinrong.provider_agent``).
Only the transport differs, and it does what gRPC does, minus the network:

* every message crosses as bytes (``xinrong.modeling.vlr_wire``): encoded,
  counted per party, and decoded on the other side as the real servers
  decode a request (``decode_for_job``) and the real clients a reply, so
  nothing relies on sharing Python objects and ``bytes_per_party`` is what
  would be sent;
* what the node must not read is **really sealed** with HPKE by the same
  sealing code (``xinrong.modeling.vlr.sealing``), to throwaway X25519 keys
  of the recipient, so sealed sizes are honest, the node object is only ever
  handed sealed bytes, and it checks their addressing as it does in production;
* with ``capture=True`` every byte string the node receives or sends is
  recorded (``Traffic.node_view``) for the privacy tests.

A whole job in one process -- PSI, split, training here, private scoring --
is ``xinrong.tools.federation_job.run_job``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from xinrong.errors import ProviderUnavailable
from xinrong.keys.sealing import SealingKey
from xinrong.modeling.he.base import HESecret, provider_public_bytes
from xinrong.modeling.vlr.bank import BankMetrics, BankParty
from xinrong.modeling.vlr.driver import BankDriver
from xinrong.modeling.vlr.messages import (
    BackwardReply,
    BackwardRequest,
    BoundReport,
    BoundRequest,
    EncryptRequest,
    EpochAck,
    EpochEnd,
    FinishAck,
    FinishRequest,
    ForwardReply,
    ForwardRequest,
    GradientReply,
    GradientRequest,
    JobSetup,
    JobStart,
    JobStarted,
    LossReply,
    LossRequest,
    RestoreAck,
    RestoreRequest,
    ResumeQuery,
    ResumeState,
    SetupAck,
    UpdateAck,
    UpdateRequest,
)
from xinrong.modeling.vlr.node import NodeCoordinator
from xinrong.modeling.vlr.provider import ProviderEndpoint, ProviderParty
from xinrong.modeling.vlr.sealing import HpkeSealer
from xinrong.modeling.vlr_state import ModelShare, atomic_write_bytes
from xinrong.modeling.vlr_wire import decode, decode_for_job, encode

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


def _cross(traffic: Traffic, src: str, dst: str, msg: M) -> M:
    """Send a protocol message over the modeled wire: encode, count, decode."""
    data = encode(msg)
    traffic.transfer(src, dst, type(msg).__name__, data)
    out: M = decode(type(msg), data)
    return out


class _Request(Protocol):
    @property
    def job_id(self) -> str: ...


Q = TypeVar("Q", bound=_Request)


def _deliver(traffic: Traffic, src: str, dst: str, msg: Q) -> Q:
    """A request over the modeled wire, received as the real servers receive one: in an envelope naming
    its job, decoded with ``decode_for_job``."""
    data = encode(msg)
    traffic.transfer(src, dst, type(msg).__name__, data)
    return decode_for_job(type(msg), data, msg.job_id)


def sealers(bank_id: str, provider_ids: Sequence[str]) -> dict[str, HpkeSealer]:
    """Throwaway X25519 keys: each party seals to the others' public keys, as with its real credentials."""
    keys = {pid: SealingKey.generate() for pid in (bank_id, *provider_ids)}
    out = {bank_id: HpkeSealer(bank_id, keys[bank_id], {p: keys[p].public_raw for p in provider_ids})}
    for p in provider_ids:
        out[p] = HpkeSealer(p, keys[p], {bank_id: keys[bank_id].public_raw})
    return out


class LocalProviderLink:
    """The node's ``ProviderLink`` to one in-process provider: the agent's transport, minus the network.

    The provider side runs ``ProviderEndpoint``, as the agent does, on each
    request decoded as the agent decodes it.
    """

    def __init__(
        self,
        endpoint: ProviderEndpoint,
        *,
        traffic: Traffic,
        share_dir: Path,
        fail_after: int | None = None,
    ) -> None:
        self.provider_id = endpoint.provider_id
        self.endpoint = endpoint
        self._traffic = traffic
        self._share_dir = share_dir
        self._fail_after = fail_after
        self._calls = 0

    def _count_call(self) -> None:
        self._calls += 1
        if self._fail_after is not None and self._calls > self._fail_after:
            raise ProviderUnavailable(f"provider {self.provider_id} stopped answering")

    def _call(self, msg: Q, handler: Callable[[Q], R]) -> R:
        self._count_call()
        with self._traffic.working(self.provider_id):
            reply = handler(_deliver(self._traffic, NODE, self.provider_id, msg))
            return _cross(self._traffic, self.provider_id, NODE, reply)

    def setup(self, msg: JobSetup) -> SetupAck:
        return self._call(msg, self.endpoint.setup)

    def bound(self, msg: BoundRequest) -> BoundReport:
        return self._call(msg, self.endpoint.bound)

    def encrypt(self, msg: EncryptRequest) -> bytes:
        self._count_call()
        with self._traffic.working(self.provider_id):
            sealed = self.endpoint.encrypt(_deliver(self._traffic, NODE, self.provider_id, msg))
        self._traffic.transfer(self.provider_id, NODE, "SealedPartialLogits", sealed)
        return sealed

    def prefetch_gradient(self, msg: GradientRequest) -> None:
        return None  # one process: nothing to overlap

    def gradient(self, msg: GradientRequest) -> GradientReply:
        return self._call(msg, self.endpoint.gradient)

    def update(self, msg: UpdateRequest) -> UpdateAck:
        return self._call(msg, self.endpoint.update)

    def end_epoch(self, msg: EpochEnd) -> EpochAck:
        return self._call(msg, self.endpoint.end_epoch)

    def finish(self, msg: FinishRequest) -> FinishAck:
        return self._call(msg, lambda m: self.endpoint.finish(m, self._share_dir / f"{self.provider_id}.share.json"))

    def resume_state(self, msg: ResumeQuery) -> ResumeState:
        return self._call(msg, self.endpoint.resume_state)

    def restore(self, msg: RestoreRequest) -> RestoreAck:
        return self._call(msg, self.endpoint.restore)


class LocalNode:
    """The bank's ``NodeTransport`` to the in-process node: the node's ``ModelingService``, minus the network.

    The node side runs ``NodeCoordinator``, as the node's modeling hub does,
    on each request decoded as the hub decodes it; it keeps the model
    metadata in ``metadata_dir`` (the real node keeps it in its database).
    """

    def __init__(self, node: NodeCoordinator, *, traffic: Traffic, bank_id: str, metadata_dir: Path) -> None:
        self.coordinator = node
        self._traffic = traffic
        self._bank_id = bank_id
        self._metadata_dir = metadata_dir

    def _call(self, msg: Q, handler: Callable[[Q], R]) -> R:
        with self._traffic.working(NODE):
            reply = handler(_deliver(self._traffic, self._bank_id, NODE, msg))
            return _cross(self._traffic, NODE, self._bank_id, reply)

    def start(self, msg: JobStart) -> JobStarted:
        return self._call(msg, self.coordinator.start)

    def forward(self, msg: ForwardRequest) -> ForwardReply:
        return self._call(msg, self.coordinator.forward)

    def backward(self, msg: BackwardRequest) -> BackwardReply:
        return self._call(msg, self.coordinator.backward)

    def loss(self, msg: LossRequest) -> LossReply:
        return self._call(msg, self.coordinator.loss)

    def end_epoch(self, msg: EpochEnd) -> None:
        self._call(msg, self.coordinator.end_epoch)

    def resume(self, msg: ResumeQuery) -> tuple[int, ...]:
        """Checkpointed epochs every provider holds (the real node answers this inside ``ResumeJob``)."""
        return self.coordinator.resume(_deliver(self._traffic, self._bank_id, NODE, msg))

    def restore(self, msg: RestoreRequest) -> None:
        self._call(msg, self.coordinator.restore)

    def finish(self, msg: FinishRequest) -> dict[str, Any]:
        metadata = self.coordinator.finish(_deliver(self._traffic, self._bank_id, NODE, msg))
        meta_bytes = json.dumps(metadata, sort_keys=True, indent=1, allow_nan=False).encode()
        atomic_write_bytes(self._metadata_dir / f"{msg.job_id}.model.json", meta_bytes)
        return metadata


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
    """A bank, its providers and the node, wired together in-process around the production roles.

    ``BankDriver`` drives the job as it does from the bank's process, over
    ``LocalNode`` instead of gRPC; the node is a ``NodeCoordinator`` whose
    providers are ``ProviderEndpoint``s behind ``LocalProviderLink``s. Every
    sealed payload is really sealed (``HpkeSealer`` with throwaway keys).
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
        seal = sealers(bank.party_id, [p.party_id for p in self.providers])
        share_dir = self.workdir / "shares"
        self.links = [
            LocalProviderLink(
                ProviderEndpoint(p, sealer=seal[p.party_id], bank_id=bank.party_id),
                traffic=self.traffic,
                share_dir=share_dir,
                fail_after=(fail_after or {}).get(p.party_id),
            )
            for p in self.providers
        ]
        self.node = NodeCoordinator(
            secret, self.links, public_for_providers=provider_public_bytes(secret), parallel=parallel
        )
        self.transport = LocalNode(
            self.node, traffic=self.traffic, bank_id=bank.party_id, metadata_dir=self.workdir / "node"
        )
        self.driver = BankDriver(bank, self.transport, seal[bank.party_id])
        self.share_dir = share_dir
        self._started = False

    def start(self, n_rows: int, train_rows: npt.ArrayLike) -> None:
        with self.traffic.working(self.bank.party_id):
            self.driver.start(self.bank.job_start([p.party_id for p in self.providers], n_rows, train_rows))
        self._started = True

    def resume(self) -> int:
        """Restore every party to the newest epoch all of them checkpointed; 0 if none."""
        return self.driver.restore(self.transport.resume(ResumeQuery(self.bank.job_config().job_id)))

    def run(self, *, progress: Callable[[int, BankMetrics], None] | None = None, resume: bool = False) -> TrainResult:
        if not self._started:
            raise RuntimeError("call start() first")
        with self.traffic.working(self.bank.party_id):  # the bank drives; node and provider work is carved out
            return self._run(progress, resume)

    def _run(self, progress: Callable[[int, BankMetrics], None] | None, resume: bool) -> TrainResult:
        resumed_from = self.resume() if resume else 0
        t0 = time.perf_counter()

        def on_epoch(end: EpochEnd) -> None:
            if progress is not None:
                progress(end.epoch, self.bank.metrics)

        try:
            epoch_seconds = self.driver.train(on_epoch=on_epoch)
            metadata, bank_share = self.driver.finish(self.share_dir / f"{self.bank.party_id}.share.json")
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
