"""The provider's role: a feature holder's steps, and the sealing around them on any transport.

``ProviderParty`` is the math: it standardizes its own columns, bounds and
encrypts its partial logits, computes its masked gradient on the bank's
encrypted residual and updates its own weights. ``ProviderEndpoint`` is
what a transport hands each step to: it seals the partial logits (and the
square term) to the bank, opens the residual sealed to this provider and
checks that what it opened is for the job, epoch and batch the node named.
The provider agent (``xinrong.provider_agent``) and the in-process simulator
(``xinrong.tools.federation``) both run their provider through it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xinrong.errors import ValidationError
from xinrong.modeling.he.base import load_public
from xinrong.modeling.preprocess import fit_transform
from xinrong.modeling.sigmoid import shrink_factor
from xinrong.modeling.vlr.config import TrainConfig, batch_count, level_scale
from xinrong.modeling.vlr.errors import ProtocolViolation, VlrError
from xinrong.modeling.vlr.messages import (
    SEALED_PARTIAL,
    SEALED_RESIDUAL,
    SEALED_SQUARE,
    BoundReport,
    BoundRequest,
    EncryptRequest,
    EpochAck,
    EpochEnd,
    FinishAck,
    FinishRequest,
    GradientPayload,
    GradientReply,
    GradientRequest,
    JobSetup,
    PartialLogits,
    Residual,
    RestoreAck,
    RestoreRequest,
    ResumeQuery,
    ResumeState,
    SetupAck,
    SquareTerm,
    UpdateAck,
    UpdateRequest,
    rows_from_bytes,
    seal_context,
)
from xinrong.modeling.vlr.party import Optimizer, PartyCore, Position, f64_values
from xinrong.modeling.vlr.sealing import Sealer, parse_box
from xinrong.modeling.vlr_state import ModelShare
from xinrong.modeling.vlr_wire import decode, encode

log = logging.getLogger(__name__)


class ProviderParty(PartyCore):
    """A feature holder. Its raw rows arrive in the aligned (PSI) order; they never leave.

    ``min_batch_rows`` is the provider's own policy, not the bank's: it
    refuses a job whose batches are small enough that a coarse per-batch
    logit bound would describe a handful of rows.
    """

    role = "provider"

    def __init__(
        self,
        party_id: str,
        x_aligned_raw: npt.ArrayLike,
        feature_names: Sequence[str],
        *,
        checkpoint_dir: str | Path | None = None,
        min_batch_rows: int = 16,
    ) -> None:
        super().__init__(party_id, checkpoint_dir)
        self._raw = np.asarray(x_aligned_raw, dtype=np.float64)
        if self._raw.ndim != 2 or self._raw.shape[1] != len(feature_names) or self._raw.shape[1] == 0:
            raise ValueError("provider needs a 2-D feature matrix with at least one named column")
        self._names = tuple(feature_names)
        self.min_batch_rows = min_batch_rows
        self._mask: Any = None
        self._batch_n = 0

    def setup(self, msg: JobSetup) -> SetupAck:
        config = TrainConfig.from_json(msg.config_json)
        if msg.job_id != config.job_id or msg.provider_id != self.party_id:
            raise ProtocolViolation("job setup is for another job or party")
        if not config.sigmoid_degree:
            raise ProtocolViolation("the node must resolve the sigmoid degree before setup")
        if msg.n_rows != self._raw.shape[0]:
            raise ProtocolViolation("aligned row count differs from this provider's aligned data")
        rows = rows_from_bytes(msg.train_rows, msg.n_rows)
        smallest = rows.size // batch_count(rows.size, config.batch_size)
        if smallest < self.min_batch_rows:
            raise VlrError(f"batches of {smallest} rows are below this provider's minimum of {self.min_batch_rows}")
        self.config = config
        # Providers never evaluate the polynomial; they only normalize by the radius.
        self.he = load_public(msg.scheme, msg.he_public)
        raw_train = self._raw[rows]
        self.transform = fit_transform(
            raw_train, self._names, impute=config.impute, indicators=config.missing_indicators, clip=config.clip
        )
        self.x = self.transform.apply(raw_train)
        self.n_train = rows.size
        width = self.x.shape[1]
        self.opt = Optimizer(width, np.ones(width))
        self.pos = Position()
        log.info(
            "provider %s: job %s set up, %d training rows, %d columns", self.party_id, config.job_id, rows.size, width
        )
        return SetupAck(job_id=config.job_id, party_id=self.party_id, feature_names=self.transform.output_names())

    def bound(self, msg: BoundRequest) -> BoundReport:
        self._check_job(msg.job_id)
        self._expect(msg.epoch, msg.batch, "bound")
        rows = self.batches(msg.epoch)[msg.batch]
        code = self._bound(self.x[rows])
        self.pos.phase = "encrypt"
        return BoundReport(msg.job_id, msg.epoch, msg.batch, self.party_id, code)

    def encrypt(self, msg: EncryptRequest) -> PartialLogits:
        self._check_job(msg.job_id)
        self._expect(msg.epoch, msg.batch, "encrypt")
        if self._tau is None:
            raise ProtocolViolation("no bound was computed for this batch")
        he = self._he()
        if msg.shrink_steps:
            factor = shrink_factor(msg.shrink_steps)
            self._opt().shrink(factor)
            self._tau = self._tau * factor
        if not 0 <= msg.level <= self.job_config().guard_max_level:
            raise ProtocolViolation("interval level out of range")
        ct = he.rerandomize(he.encrypt(self._tau / level_scale(msg.level)))
        self.pos.phase = "gradient"
        return PartialLogits(msg.job_id, msg.epoch, msg.batch, self.party_id, he.serialize(ct))

    def gradient(self, msg: Residual) -> GradientPayload:
        self._check_job(msg.job_id)
        self._expect(msg.epoch, msg.batch, "gradient")
        if msg.party_id != self.party_id:
            raise ProtocolViolation("residual addressed to another party")
        he = self._he()
        rows = self.batches(msg.epoch)[msg.batch]
        d = he.deserialize(msg.ciphertext)
        if he.length(d) != rows.size:
            raise ProtocolViolation("residual length differs from the batch size")
        payload, self._mask = he.masked_column_sums(d, self.x[rows])
        square = b""
        if msg.prefix:
            if self._tau is None:
                raise ProtocolViolation("no partial logits for this batch")
            prefix = he.deserialize(msg.prefix)
            if he.length(prefix) != rows.size:
                raise ProtocolViolation("prefix length differs from the batch size")
            term = he.add_plain(he.mul_plain(prefix, 2.0 * self._tau), self._tau**2)
            square = encode(
                SquareTerm(msg.job_id, msg.epoch, msg.batch, self.party_id, he.serialize(he.rerandomize(term)))
            )
        self._batch_n = rows.size
        self.pos.phase = "update"
        return GradientPayload(msg.job_id, msg.epoch, msg.batch, self.party_id, payload, square)

    def update(self, msg: UpdateRequest) -> UpdateAck:
        self._check_job(msg.job_id)
        self._expect(msg.epoch, msg.batch, "update")
        cfg, opt, he = self.job_config(), self._opt(), self._he()
        sums = f64_values(msg.masked_sums, opt.w.size, "masked sums")
        grad = he.unmask_column_sums(sums, self._mask)
        self._mask = None
        opt.step(grad, self._batch_n, cfg.learning_rate_at(msg.epoch), cfg.momentum, cfg.l2)
        self._tau = None
        self._advance()
        return UpdateAck(msg.job_id, msg.epoch, msg.batch, self.party_id)

    def end_epoch(self, msg: EpochEnd) -> EpochAck:
        self._check_job(msg.job_id)
        self._end_epoch(msg.epoch)
        return EpochAck(msg.job_id, msg.epoch, self.party_id)

    def resume_state(self, msg: ResumeQuery) -> ResumeState:
        self._check_job(msg.job_id)
        return ResumeState(msg.job_id, self.party_id, self.checkpointed_epochs())

    def restore(self, msg: RestoreRequest) -> RestoreAck:
        self._check_job(msg.job_id)
        self.restore_checkpoint(msg.epoch)
        return RestoreAck(msg.job_id, self.party_id, msg.epoch)

    def model_share(self, epochs: int) -> ModelShare:
        if self.transform is None:
            raise ProtocolViolation("no job is set up")
        return ModelShare(
            job_id=self.job_config().job_id,
            party_id=self.party_id,
            role="provider",
            feature_names=self.transform.output_names(),
            transform=self.transform,
            weights=tuple(float(w) for w in self._opt().w),
            intercept=None,
            epochs=epochs,
            sigmoid={"degree": self.job_config().sigmoid_degree, "radius": self.job_config().sigmoid_radius},
        )

    def finish(self, msg: FinishRequest, share_path: str | Path) -> FinishAck:
        """Write this provider's model share atomically (a crash leaves no half-written file)."""
        self._check_job(msg.job_id)
        share = self.model_share(msg.epochs)
        text = share.to_json().encode()
        share.save(share_path)
        return FinishAck(msg.job_id, self.party_id, hashlib.sha256(text).hexdigest())


class ProviderEndpoint:
    """One provider's side of a job as the node's messages arrive, whatever carries them.

    The party's steps, plus what only a transport used to do: the partial
    logits and the square term leave sealed to the bank; the residual
    arrives sealed to this provider, is opened here, and must be for the
    job, epoch and batch of the request that carried it (the box's context
    binds them too, but a bank could seal a residual of another batch under
    this batch's context).
    """

    def __init__(self, party: ProviderParty, *, sealer: Sealer, bank_id: str) -> None:
        self.party = party
        self.provider_id = party.party_id
        self._sealer = sealer
        self._bank_id = bank_id

    def setup(self, msg: JobSetup) -> SetupAck:
        return self.party.setup(msg)

    def bound(self, msg: BoundRequest) -> BoundReport:
        return self.party.bound(msg)

    def encrypt(self, msg: EncryptRequest) -> bytes:
        """The party's ``PartialLogits``, sealed to the bank: all the node gets to relay."""
        partial = self.party.encrypt(msg)
        return self._sealer.seal(
            encode(partial),
            to=self._bank_id,
            content_type=SEALED_PARTIAL,
            context=seal_context(msg.job_id, msg.epoch, msg.batch, self.provider_id),
        )

    def gradient(self, msg: GradientRequest) -> GradientReply:
        context = seal_context(msg.job_id, msg.epoch, msg.batch, self.provider_id)
        box = parse_box(msg.sealed_residual, ValidationError("residual is not a sealed box"))
        opened = self._sealer.open(box, content_type=SEALED_RESIDUAL, context=context)
        residual = decode(Residual, opened)
        if (residual.job_id, residual.epoch, residual.batch) != (msg.job_id, msg.epoch, msg.batch):
            raise ValidationError("sealed residual is for another batch")
        out = self.party.gradient(residual)
        sealed_square = b""
        if out.square:
            sealed_square = self._sealer.seal(out.square, to=self._bank_id, content_type=SEALED_SQUARE, context=context)
        return GradientReply(out.job_id, out.epoch, out.batch, out.party_id, out.payload, sealed_square)

    def update(self, msg: UpdateRequest) -> UpdateAck:
        return self.party.update(msg)

    def end_epoch(self, msg: EpochEnd) -> EpochAck:
        return self.party.end_epoch(msg)

    def finish(self, msg: FinishRequest, share_path: str | Path) -> FinishAck:
        return self.party.finish(msg, share_path)

    def resume_state(self, msg: ResumeQuery) -> ResumeState:
        return self.party.resume_state(msg)

    def restore(self, msg: RestoreRequest) -> RestoreAck:
        return self.party.restore(msg)
