"""The node's role: it coordinates a job, runs the logit guard and decrypts only masked values.

``NodeCoordinator`` holds the job's HE secret key and reaches each provider
through a ``ProviderLink`` (``xinrong.node.modeling_links`` over gRPC, the
simulator's in-memory link in ``xinrong.tools.federation``). It relays what
it must not read as sealed boxes, and checks before relaying one that it is
addressed as the protocol says (recipient, content type, job, epoch, batch,
provider); it decrypts each party's masked gradient once per batch and of
that party's width only, so no party can use it as a decryption oracle.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from xinrong.modeling.he.base import HESecret
from xinrong.modeling.sigmoid import MIN_BOUND_CODE
from xinrong.modeling.vlr.config import PROTOCOL, TrainConfig
from xinrong.modeling.vlr.errors import ProtocolViolation, VlrError
from xinrong.modeling.vlr.guard import GuardSnapshot, LogitGuard
from xinrong.modeling.vlr.messages import (
    SEALED_PARTIAL,
    SEALED_RESIDUAL,
    SEALED_SQUARE,
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
    seal_context,
)
from xinrong.modeling.vlr.sealing import check_box
from xinrong.modeling.vlr_state import check_id

log = logging.getLogger(__name__)

T = TypeVar("T")


class ProviderLink(Protocol):
    """How the node reaches one provider (gRPC stub in production, a local wrapper in tests)."""

    provider_id: str

    def setup(self, msg: JobSetup) -> SetupAck: ...

    def bound(self, msg: BoundRequest) -> BoundReport: ...

    def encrypt(self, msg: EncryptRequest) -> bytes:
        """The provider's PartialLogits, sealed to the bank: opaque to the node."""
        ...

    def prefetch_gradient(self, msg: GradientRequest) -> None:
        """May start ``gradient(msg)`` now, so the provider works while the node decrypts; may do nothing."""
        ...

    def gradient(self, msg: GradientRequest) -> GradientReply: ...

    def update(self, msg: UpdateRequest) -> UpdateAck: ...

    def end_epoch(self, msg: EpochEnd) -> EpochAck: ...

    def finish(self, msg: FinishRequest) -> FinishAck: ...

    def resume_state(self, msg: ResumeQuery) -> ResumeState: ...

    def restore(self, msg: RestoreRequest) -> RestoreAck: ...


@dataclass
class _NodeBatch:
    epoch: int
    batch: int
    shrink_steps: int = 0
    decrypted: set[str] = field(default_factory=set)


class NodeCoordinator:
    """The node's side of a training job: relays sealed payloads, runs the guard, decrypts masked sums.

    It holds the job's HE secret key and never receives anything that
    decrypts to an unmasked value: the payloads it decrypts were masked by
    their senders, and everything else it relays is sealed to someone else.
    ``parallel`` fans provider calls out on threads: over the wire each call
    waits on a provider computing in its own process, so they overlap (in one
    process mostly not: SEAL's Python binding holds the GIL).
    """

    def __init__(
        self,
        secret: HESecret,
        links: Sequence[ProviderLink],
        *,
        public_for_providers: bytes | None = None,
        parallel: bool = False,
    ) -> None:
        self.secret = secret
        self.links = {link.provider_id: link for link in links}
        if len(self.links) != len(links) or not links:
            raise ValueError("need at least one provider link, each once")
        self._public_providers = public_for_providers
        self.parallel = parallel and len(links) > 1
        self._pool = ThreadPoolExecutor(max_workers=len(links)) if self.parallel else None
        self.config: TrainConfig | None = None
        self.provider_ids: tuple[str, ...] = ()
        self.widths: dict[str, int] = {}
        self.feature_names: dict[str, tuple[str, ...]] = {}
        self.guard: LogitGuard | None = None
        self._batch: _NodeBatch | None = None
        self._key_lock = threading.Lock()  # one decryption at a time (provider calls may be threaded)
        self.bank_id = ""
        self.epoch_losses: list[float] = []
        self.epochs_done = 0
        self._guard_snapshots: dict[int, GuardSnapshot] = {}  # completed epochs -> the guard's statistics then

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _map(self, fn: Callable[[ProviderLink], T]) -> list[T]:
        links = [self.links[p] for p in self.provider_ids]
        if self._pool is None:
            return [fn(link) for link in links]
        return list(self._pool.map(fn, links))

    def _cfg(self) -> TrainConfig:
        if self.config is None:
            raise ProtocolViolation("no job is running")
        return self.config

    def _check(self, job_id: str, epoch: int, batch: int) -> _NodeBatch:
        if job_id != self._cfg().job_id:
            raise ProtocolViolation("message for another job")
        if self._batch is None or (self._batch.epoch, self._batch.batch) != (epoch, batch):
            raise ProtocolViolation("message for a batch that is not open")
        return self._batch

    def start(self, msg: JobStart) -> JobStarted:
        """Resolve the sigmoid degree for this key, set up every provider, hand the bank the key."""
        config = TrainConfig.from_json(msg.config_json)
        if config.job_id != msg.job_id:
            raise ProtocolViolation("job id differs from the config's")
        if tuple(sorted(msg.provider_ids)) != tuple(sorted(self.links)):
            raise VlrError("the job names providers this node has no link to")
        approx = config.approximant(self.secret.max_degree)
        config = dataclasses.replace(config, sigmoid_degree=approx.degree)
        config_json = config.to_json()
        self.config = config
        self.bank_id = check_id(msg.bank_id, "bank id")
        self.provider_ids = msg.provider_ids
        self.guard = LogitGuard(
            config.guard_target, config.guard_min_factor, config.guard_max_level, approx.enforce_interval
        )
        if self.bank_id in self.provider_ids:
            raise ProtocolViolation("the bank cannot also be a provider of the job")
        self.widths = {self.bank_id: len(msg.bank_features) + 1}
        self.feature_names = {self.bank_id: msg.bank_features}
        # The bank evaluates the sigmoid (relinearization keys); providers only add and
        # multiply by plaintexts, so they get the lighter key unless the caller chose one.
        public_all = self.secret.public_bytes(with_relin_keys=True)
        public_providers = self._public_providers or self.secret.public_bytes(with_relin_keys=False)
        scheme = self.secret.scheme

        def setup(link: ProviderLink) -> SetupAck:
            return link.setup(
                JobSetup(
                    msg.job_id, config_json, link.provider_id, msg.n_rows, msg.train_rows, scheme, public_providers
                )
            )

        for pid, ack in zip(self.provider_ids, self._map(setup)):
            if ack.job_id != msg.job_id or ack.party_id != pid:
                raise ProtocolViolation("setup acknowledged by another job or party")
            self.widths[pid] = len(ack.feature_names)
            self.feature_names[pid] = ack.feature_names
        log.info("node: job %s started with %d providers", msg.job_id, len(self.provider_ids))
        return JobStarted(msg.job_id, config_json, scheme, public_all, self.provider_ids)

    def forward(self, msg: ForwardRequest) -> ForwardReply:
        cfg = self._cfg()
        if msg.job_id != cfg.job_id:
            raise ProtocolViolation("message for another job")
        if self.guard is None:
            raise ProtocolViolation("no job is running")
        self._batch = _NodeBatch(msg.epoch, msg.batch)
        request = BoundRequest(msg.job_id, msg.epoch, msg.batch)
        reports = self._map(lambda link: link.bound(request))
        codes = [msg.bank_code]
        for pid, rep in zip(self.provider_ids, reports):
            if (rep.job_id, rep.epoch, rep.batch, rep.party_id) != (msg.job_id, msg.epoch, msg.batch, pid):
                raise ProtocolViolation("bound report for another batch or party")
            codes.append(rep.code)
        if any(c < MIN_BOUND_CODE for c in codes):
            raise ProtocolViolation("bound code out of range")
        level, steps = self.guard.decide(msg.epoch, msg.batch, codes)
        self._batch.shrink_steps = steps
        enc = EncryptRequest(msg.job_id, msg.epoch, msg.batch, level, steps)
        sealed = self._map(lambda link: link.encrypt(enc))
        for pid, blob in zip(self.provider_ids, sealed):
            check_box(
                blob,
                recipient=self.bank_id,
                content_type=SEALED_PARTIAL,
                context=seal_context(msg.job_id, msg.epoch, msg.batch, pid),
                what=f"partial logits of {pid}",
            )
        return ForwardReply(msg.job_id, msg.epoch, msg.batch, level, steps, self.provider_ids, tuple(sealed))

    def _decrypt_sums(self, batch: _NodeBatch, party: str, payload: bytes) -> bytes:
        """Decrypt one party's masked gradient payload: once per batch, of that party's own width."""
        with self._key_lock:
            if party in batch.decrypted:
                raise ProtocolViolation(f"a second gradient payload from {party} in one batch")
            batch.decrypted.add(party)
            sums = np.asarray(self.secret.decrypt_column_sums(payload), dtype=np.float64)
        if sums.shape != (self.widths[party],):
            raise ProtocolViolation(f"gradient payload from {party} has the wrong width")
        return sums.astype("<f8").tobytes()

    def backward(self, msg: BackwardRequest) -> BackwardReply:
        batch = self._check(msg.job_id, msg.epoch, msg.batch)
        if len(msg.sealed_residuals) != len(self.provider_ids):
            raise ProtocolViolation("one sealed residual per provider expected")
        requests: dict[str, GradientRequest] = {}
        for pid, sealed in zip(self.provider_ids, msg.sealed_residuals):
            check_box(
                sealed,
                recipient=pid,
                content_type=SEALED_RESIDUAL,
                context=seal_context(msg.job_id, msg.epoch, msg.batch, pid),
                what=f"residual for {pid}",
            )
            requests[pid] = GradientRequest(msg.job_id, msg.epoch, msg.batch, sealed)
        # Providers may start on their residuals while the node decrypts the bank's sums; the
        # messages and their order at each provider stay the protocol's.
        for pid in self.provider_ids:
            self.links[pid].prefetch_gradient(requests[pid])
        bank_sums = self._decrypt_sums(batch, self.bank_id, msg.gradient_payload)
        masked_loss: float | None = None
        if msg.loss_payload:
            masked_loss = self._decrypt_total(batch, msg.loss_payload)

        def provider_step(link: ProviderLink) -> bytes:
            reply = link.gradient(requests[link.provider_id])
            if reply.sealed_square:
                check_box(
                    reply.sealed_square,
                    recipient=self.bank_id,
                    content_type=SEALED_SQUARE,
                    context=seal_context(msg.job_id, msg.epoch, msg.batch, link.provider_id),
                    what=f"square term of {link.provider_id}",
                )
            if (reply.job_id, reply.epoch, reply.batch, reply.party_id) != (
                msg.job_id,
                msg.epoch,
                msg.batch,
                link.provider_id,
            ):
                raise ProtocolViolation("gradient reply for another batch or party")
            sums = self._decrypt_sums(batch, link.provider_id, reply.payload)
            ack = link.update(UpdateRequest(msg.job_id, msg.epoch, msg.batch, sums))
            if ack.party_id != link.provider_id:
                raise ProtocolViolation("update acknowledged by another party")
            return reply.sealed_square

        squares = self._map(provider_step)
        if any(squares) and not all(squares):
            raise ProtocolViolation("square terms from some providers only")
        return BackwardReply(msg.job_id, msg.epoch, msg.batch, bank_sums, masked_loss, tuple(s for s in squares if s))

    def _decrypt_total(self, batch: _NodeBatch, payload: bytes) -> float:
        with self._key_lock:
            if "#loss" in batch.decrypted:
                raise ProtocolViolation("a second loss payload in one batch")
            batch.decrypted.add("#loss")
            value = float(self.secret.decrypt_total(payload))
        if not math.isfinite(value):
            raise ProtocolViolation("loss payload decrypted to a non-finite value")
        return value

    def loss(self, msg: LossRequest) -> LossReply:
        batch = self._check(msg.job_id, msg.epoch, msg.batch)
        return LossReply(msg.job_id, msg.epoch, msg.batch, self._decrypt_total(batch, msg.loss_payload))

    def end_epoch(self, msg: EpochEnd) -> EpochAck:
        if msg.job_id != self._cfg().job_id:
            raise ProtocolViolation("message for another job")
        self._batch = None
        acks = self._map(lambda link: link.end_epoch(msg))
        if any(a.epoch != msg.epoch for a in acks):
            raise ProtocolViolation("provider acknowledged another epoch")
        if msg.loss is not None:
            self.epoch_losses.append(msg.loss)
        self.epochs_done = msg.epoch
        if self.guard is not None:
            self._guard_snapshots[msg.epoch] = self.guard.snapshot()
        return EpochAck(msg.job_id, msg.epoch, "node")

    def finish(self, msg: FinishRequest) -> dict[str, Any]:
        """Tell providers to write their shares; return the model metadata the node keeps."""
        cfg = self._cfg()
        acks = self._map(lambda link: link.finish(msg))
        guard = self.guard
        return {
            "format": "xinrong.vlr.model_metadata/1",
            "protocol": PROTOCOL,
            "job_id": cfg.job_id,
            "scheme": self.secret.scheme,
            "he_key_id": self.secret.key_id(),
            "config": dataclasses.asdict(cfg),
            "parties": {self.bank_id: "bank", **dict.fromkeys(self.provider_ids, "provider")},
            "feature_names": {p: list(names) for p, names in self.feature_names.items()},
            "share_sha256": {a.party_id: a.share_sha256 for a in acks},
            "epochs": msg.epochs,
            "epoch_losses": list(msg.epoch_losses),
            "guard": {
                "batches": guard.batches_seen if guard else 0,
                "levels": {str(k): v for k, v in sorted(guard.levels.items())} if guard else {},
                "shrinks": len(guard.shrinks) if guard else 0,
                "max_bound_sum": guard.max_bound_sum if guard else 0.0,
            },
        }

    def resume(self, msg: ResumeQuery) -> tuple[int, ...]:
        """Checkpointed epochs every provider has in common."""
        if msg.job_id != self._cfg().job_id:
            raise ProtocolViolation("message for another job")
        states = self._map(lambda link: link.resume_state(msg))
        common = set(states[0].epochs)
        for s in states[1:]:
            common &= set(s.epochs)
        return tuple(sorted(common))

    def restore(self, msg: RestoreRequest) -> RestoreAck:
        """Every provider back to a checkpointed epoch; epoch 0 starts afresh (they were just set up again)."""
        if msg.job_id != self._cfg().job_id:
            raise ProtocolViolation("message for another job")
        if msg.epoch < 0:
            raise ProtocolViolation("negative epoch")
        self._batch = None
        if msg.epoch:
            acks = self._map(lambda link: link.restore(msg))
            if any(a.epoch != msg.epoch for a in acks):
                raise ProtocolViolation("provider restored another epoch")
        self.epochs_done = msg.epoch
        self.epoch_losses = self.epoch_losses[: msg.epoch]
        snapshot = self._guard_snapshots.get(msg.epoch)
        if self.guard is not None and snapshot is not None:
            self.guard.restore(snapshot)
        return RestoreAck(msg.job_id, "node", msg.epoch)
