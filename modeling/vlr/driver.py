"""The protocol driver: the bank's side of a job, step by step, over any transport.

The bank drives every exchange: per batch ``ForwardRequest`` -> node ->
providers -> node -> bank, then ``BackwardRequest`` (plus ``LossRequest``
with a degree-1 backend), then per epoch ``EpochEnd`` and at the end
``FinishRequest``. ``BankDriver`` is that sequence, written once against
two interfaces: ``NodeTransport`` (how the bank reaches the node) and
``xinrong.modeling.vlr.sealing.Sealer`` (how it opens what providers sealed
to it and seals each provider's residual). ``xinrong.bank`` runs it over
gRPC with the bank's credentials; ``xinrong.tools.federation`` runs it in
one process over an in-memory transport with throwaway keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from xinrong.errors import XinrongError
from xinrong.modeling.vlr.bank import BankParty
from xinrong.modeling.vlr.messages import (
    SEALED_PARTIAL,
    SEALED_RESIDUAL,
    SEALED_SQUARE,
    BackwardReply,
    BackwardRequest,
    EpochEnd,
    FinishRequest,
    ForwardReply,
    ForwardRequest,
    JobStart,
    JobStarted,
    LossReply,
    LossRequest,
    PartialLogits,
    RestoreRequest,
    SquareTerm,
    seal_context,
)
from xinrong.modeling.vlr.sealing import Sealer
from xinrong.modeling.vlr_state import ModelShare
from xinrong.modeling.vlr_wire import decode, encode
from xinrong.v1 import common_pb2


class NodeTransport(Protocol):
    """The node as the bank reaches it: one call per protocol step, replies as they came off the wire."""

    def start(self, msg: JobStart) -> JobStarted: ...

    def forward(self, msg: ForwardRequest) -> ForwardReply: ...

    def backward(self, msg: BackwardRequest) -> BackwardReply: ...

    def loss(self, msg: LossRequest) -> LossReply: ...

    def end_epoch(self, msg: EpochEnd) -> None: ...

    def restore(self, msg: RestoreRequest) -> None: ...

    def finish(self, msg: FinishRequest) -> dict[str, Any]:
        """The model metadata the node keeps (names, hashes, metrics; never a weight)."""
        ...


class BankDriver:
    """Drives one job from the bank: start, resume, every batch and epoch, finish."""

    def __init__(self, bank: BankParty, node: NodeTransport, sealer: Sealer) -> None:
        self.bank = bank
        self.node = node
        self.sealer = sealer

    @property
    def job_id(self) -> str:
        return self.bank.job_config().job_id

    def start(self, msg: JobStart) -> JobStarted:
        """Send the bank's ``JobStart`` (``BankParty.job_start``); take the node's key and resolved config."""
        started = self.node.start(msg)
        self.bank.started(started)
        return started

    def restore(self, provider_epochs: Iterable[int]) -> int:
        """Go back to the newest epoch the bank and every provider checkpointed (0: none) and tell the node."""
        common = set(provider_epochs) & set(self.bank.checkpointed_epochs())
        epoch = max(common) if common else 0
        if epoch:
            self.bank.restore_checkpoint(epoch)
        self.node.restore(RestoreRequest(self.job_id, epoch))
        return epoch

    def _open(self, blob: bytes, content_type: str, context: str) -> bytes:
        return self.sealer.open(common_pb2.SealedBox.FromString(blob), content_type=content_type, context=context)

    def batch(self, epoch: int, b: int) -> None:
        """One mini-batch: bounds and partial logits, residuals and gradients, the loss if it is due."""
        bank, job_id = self.bank, self.job_id
        fwd = self.node.forward(bank.forward_request(epoch, b))
        if fwd.provider_ids != bank.provider_ids:
            raise XinrongError("node answered for another provider order")
        partials = [
            decode(PartialLogits, self._open(blob, SEALED_PARTIAL, seal_context(job_id, epoch, b, pid)))
            for pid, blob in zip(fwd.provider_ids, fwd.sealed_partials)
        ]
        back = bank.backward(fwd, partials)
        sealed = tuple(
            self.sealer.seal(
                encode(r),
                to=r.party_id,
                content_type=SEALED_RESIDUAL,
                context=seal_context(job_id, epoch, b, r.party_id),
            )
            for r in back.residuals
        )
        request = BackwardRequest(job_id, epoch, b, sealed, back.gradient_payload, back.loss_payload)
        reply = self.node.backward(request)
        squares = [
            decode(SquareTerm, self._open(blob, SEALED_SQUARE, seal_context(job_id, epoch, b, pid)))
            for pid, blob in zip(bank.provider_ids, reply.sealed_squares)
        ]
        loss_request = bank.apply(reply, squares)
        if loss_request is not None:
            bank.apply_loss(self.node.loss(loss_request))

    def train(
        self,
        *,
        on_batch: Callable[[], None] | None = None,
        on_epoch: Callable[[EpochEnd], None] | None = None,
    ) -> list[float]:
        """Every epoch from the bank's position on, until the last or an early stop; seconds per epoch."""
        bank = self.bank
        cfg = bank.job_config()
        n_batches = bank.n_batches()
        epoch_seconds: list[float] = []
        for epoch in range(bank.pos.epoch, cfg.epochs):
            te = time.perf_counter()
            for b in range(n_batches):
                self.batch(epoch, b)
                if on_batch is not None:
                    on_batch()
            end = bank.end_epoch()
            self.node.end_epoch(end)
            epoch_seconds.append(time.perf_counter() - te)
            if on_epoch is not None:
                on_epoch(end)
            if end.stop:
                break
        return epoch_seconds

    def finish(self, share_path: str | Path) -> tuple[dict[str, Any], ModelShare]:
        """Providers write their shares (through the node), then the bank its own; the node's metadata."""
        metrics = self.bank.metrics
        metadata = self.node.finish(FinishRequest(self.job_id, metrics.epochs_run, tuple(metrics.epoch_losses)))
        return metadata, self.bank.finish(share_path)
