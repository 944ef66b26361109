"""The bank's role: the label holder's steps (residual, loss, its own gradient, early stopping).

``BankParty`` holds the labels, optionally its own feature columns, and the
intercept; ``xinrong.modeling.vlr.driver.BankDriver`` drives the job with it.
Decoy rows (in the aligned set only to hide the bank's real borrowers) get
weight 0 under encryption; real rows ``B / B_real``, capped by
``MAX_ROW_WEIGHT`` (at least a quarter of every batch real), which keeps
residuals within a few times the CKKS masking bound ``value_bound``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xinrong.modeling.he.base import load_public
from xinrong.modeling.preprocess import ColumnTransform, fit_transform
from xinrong.modeling.sigmoid import Approximant, shrink_factor
from xinrong.modeling.vlr.config import TrainConfig, batch_rows, level_scale
from xinrong.modeling.vlr.errors import ProtocolViolation, VlrError
from xinrong.modeling.vlr.messages import (
    BackwardReply,
    EpochEnd,
    ForwardReply,
    ForwardRequest,
    JobStart,
    JobStarted,
    LossReply,
    LossRequest,
    PartialLogits,
    Residual,
    SquareTerm,
    rows_to_bytes,
)
from xinrong.modeling.vlr.party import Optimizer, PartyCore, Position, f64_values
from xinrong.modeling.vlr_state import ModelShare, check_id

FloatArray = npt.NDArray[np.float64]

MAX_ROW_WEIGHT = 4.0  # real rows are weighted B / B_real: at least a quarter of a batch must be real


@dataclass
class BankMetrics:
    """What the bank learns and reports: aggregate losses, guard events, nothing per row."""

    epoch_losses: list[float] = field(default_factory=list)
    guard_levels: dict[int, int] = field(default_factory=dict)  # interval level -> batches
    guard_shrinks: list[tuple[int, int, int]] = field(default_factory=list)  # (epoch, batch, shrink steps)
    stopped_early: bool = False
    epochs_run: int = 0


@dataclass(frozen=True)
class BankBackward:
    """The bank's side of step 2-4, before the transport seals the residuals."""

    residuals: tuple[Residual, ...]
    gradient_payload: bytes
    loss_payload: bytes


class BankParty(PartyCore):
    """The label holder: drives the job, holds the intercept, computes residual and loss.

    ``x_train_raw`` may have zero columns (labels only). ``decoy`` marks
    training rows that are in the aligned set only to hide the bank's real
    borrowers: their residual is zeroed under encryption, so they add nothing
    to any gradient or to the loss, and providers cannot tell them apart.
    """

    role = "bank"

    def __init__(
        self,
        party_id: str,
        config: TrainConfig,
        x_train_raw: npt.ArrayLike,
        feature_names: Sequence[str],
        y_train: npt.ArrayLike,
        *,
        decoy: npt.ArrayLike | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        super().__init__(party_id, checkpoint_dir)
        config.validate()
        self.config = config
        raw = np.asarray(x_train_raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(feature_names):
            raise ValueError("bank features must be a 2-D matrix with one name per column")
        y = np.asarray(y_train, dtype=np.float64).reshape(-1)
        if y.shape[0] != raw.shape[0] or not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("labels must be 0/1, one per training row")
        self.decoy = np.zeros(y.shape[0], dtype=bool) if decoy is None else np.asarray(decoy, dtype=bool).reshape(-1)
        if self.decoy.shape != y.shape:
            raise ValueError("decoy flags must match the training rows")
        real = ~self.decoy
        if not (y[real] == 1).any() or not (y[real] == 0).any():
            raise ValueError("the real training rows need both classes")
        self.y = np.where(self.decoy, 0.0, y)
        self.n_train = y.shape[0]
        if raw.shape[1]:
            self.transform = fit_transform(
                raw[real], feature_names, impute=config.impute, indicators=config.missing_indicators, clip=config.clip
            )
            feats = self.transform.apply(raw)
        else:
            self.transform = None
            feats = np.zeros((y.shape[0], 0))
        self.x = np.hstack([feats, np.ones((y.shape[0], 1))])  # last column: the intercept
        width = self.x.shape[1]
        l2_mask = np.ones(width)
        l2_mask[-1] = 0.0
        self.opt = Optimizer(width, l2_mask)
        self.pos = Position(phase="forward")
        self.provider_ids: tuple[str, ...] = ()
        self._level_cache: dict[int, Approximant] = {}
        self.metrics = BankMetrics()
        self._pending: dict[str, Any] = {}
        self._epoch_loss_sum = 0.0
        self._epoch_loss_rows = 0
        self._best_loss = math.inf
        self._bad_epochs = 0
        self._check_batches()

    def _check_batches(self) -> None:
        cfg = self.job_config()
        for epoch in range(min(cfg.epochs, 3)):
            for rows in batch_rows(self.n_train, cfg.batch_size, cfg.seed, epoch):
                real = int((~self.decoy[rows]).sum())
                if real == 0 or rows.size / real > MAX_ROW_WEIGHT:
                    raise VlrError("a batch has too few real rows for its decoys; use fewer decoys or larger batches")

    def job_start(self, provider_ids: Sequence[str], n_rows: int, train_rows: npt.ArrayLike) -> JobStart:
        cfg = self.job_config()
        self.provider_ids = tuple(check_id(p, "provider id") for p in provider_ids)
        if not self.provider_ids or len(set(self.provider_ids)) != len(self.provider_ids):
            raise ValueError("need at least one provider, each once")
        rows = np.asarray(train_rows, dtype=np.int64)
        if rows.size != self.n_train:
            raise ValueError("train rows must match the bank's training rows")
        return JobStart(
            cfg.job_id,
            cfg.to_json(),
            self.party_id,
            self.feature_names,
            self.provider_ids,
            int(n_rows),
            rows_to_bytes(rows),
        )

    def started(self, msg: JobStarted) -> None:
        """Load the node's key; accept the node's config only if it merely resolved the sigmoid degree."""
        self._check_job(msg.job_id)
        if msg.provider_ids != self.provider_ids:
            raise ProtocolViolation("node answered with another provider set")
        resolved = TrainConfig.from_json(msg.config_json)
        if dataclasses.replace(resolved, sigmoid_degree=self.job_config().sigmoid_degree) != self.job_config():
            raise ProtocolViolation("node changed the job configuration")
        self.he = load_public(msg.scheme, msg.he_public)
        approx = resolved.approximant(self.he.max_degree)
        if approx.degree != resolved.sigmoid_degree:
            raise ProtocolViolation("node resolved a sigmoid degree the key cannot evaluate")
        self.config = resolved
        self.approx = approx
        self._level_cache = {0: approx}

    @property
    def feature_names(self) -> tuple[str, ...]:
        return () if self.transform is None else self.transform.output_names()

    def _level_approx(self, level: int) -> Approximant:
        """The surrogate of one interval level, fitted once and cached."""
        approx = self._level_cache.get(level)
        if approx is None:
            approx = self.job_config().approximant(self._he().max_degree, level)
            self._level_cache[level] = approx
        return approx

    @property
    def loss_mode(self) -> str:
        if not self.job_config().track_loss:
            return "none"
        return self._approx().loss_mode

    def forward_request(self, epoch: int, batch: int) -> ForwardRequest:
        self._expect(epoch, batch, "forward")
        rows = self.batches(epoch)[batch]
        code = self._bound(self.x[rows])  # the ones column carries the intercept
        self.pos.phase = "backward"
        return ForwardRequest(self.job_config().job_id, epoch, batch, code)

    def backward(self, reply: ForwardReply, partials: Sequence[PartialLogits]) -> BankBackward:
        """Residual, own gradient payload and (if possible now) loss payload for this batch."""
        self._check_job(reply.job_id)
        self._expect(reply.epoch, reply.batch, "backward")
        if reply.provider_ids != self.provider_ids or len(partials) != len(self.provider_ids):
            raise ProtocolViolation("partial logits from an unexpected provider set")
        he, opt = self._he(), self._opt()
        if self._tau is None:
            raise ProtocolViolation("no bound was computed for this batch")
        if not 0 <= reply.level <= self.job_config().guard_max_level:
            raise ProtocolViolation("interval level out of range")
        approx = self._level_approx(reply.level)
        if reply.shrink_steps:
            factor = shrink_factor(reply.shrink_steps)
            opt.shrink(factor)
            self._tau = self._tau * factor
            self.metrics.guard_shrinks.append((reply.epoch, reply.batch, reply.shrink_steps))
        self.metrics.guard_levels[reply.level] = self.metrics.guard_levels.get(reply.level, 0) + 1
        tau = self._tau / level_scale(reply.level)
        rows = self.batches(reply.epoch)[reply.batch]
        n = rows.size
        cts = []
        for pid, part in zip(self.provider_ids, partials):
            if (part.job_id, part.epoch, part.batch, part.party_id) != (reply.job_id, reply.epoch, reply.batch, pid):
                raise ProtocolViolation("partial logits for another batch or party")
            ct = he.deserialize(part.ciphertext)
            if he.length(ct) != n:
                raise ProtocolViolation("partial logits have the wrong length")
            cts.append(ct)
        acc = cts[0]
        for ct in cts[1:]:
            acc = he.add(acc, ct)
        t = he.add_plain(acc, tau)
        y = self.y[rows]
        real = ~self.decoy[rows]
        n_real = int(real.sum())
        weights: FloatArray | None = None
        if n_real == 0 or n / n_real > MAX_ROW_WEIGHT:
            raise VlrError("a batch has too few real rows for its decoys; use fewer decoys or larger batches")
        if n_real < n:
            weights = np.where(real, n / n_real, 0.0)
        # w * (s(t) - y): the weights ride on the polynomial (no level of their own); decoys have y = 0.
        wy = y if weights is None else weights * y
        d = he.add_plain(he.polyval(t, approx.coeffs, row_weights=weights), -wy)
        mode = self.loss_mode
        loss_batches = self.job_config().loss_batches
        want_loss = mode != "none" and (loss_batches == 0 or reply.batch < loss_batches)
        residuals = []
        prefix_plain = tau
        prefix_ct: Any = None
        for j, pid in enumerate(self.provider_ids):
            prefix = b""
            if mode == "square" and want_loss:
                if prefix_ct is None:
                    prefix_ct = he.encrypt(prefix_plain)
                prefix = he.serialize(he.rerandomize(prefix_ct))
                prefix_ct = he.add(prefix_ct, cts[j])
            residuals.append(
                Residual(reply.job_id, reply.epoch, reply.batch, pid, he.serialize(he.rerandomize(d)), prefix)
            )
        gradient_payload, grad_mask = he.masked_column_sums(d, self.x[rows])
        loss_payload = b""
        loss_mask: Any = None
        if mode == "poly" and want_loss:
            # w * (l0(t) - y t); the backend reuses the powers of t from the sigmoid above
            lt = he.add(he.polyval(t, approx.loss_coeffs, row_weights=weights), he.mul_plain(t, -wy))
            loss_payload, loss_mask = he.masked_total(lt)
        self._pending = {
            "grad_mask": grad_mask,
            "loss_mask": loss_mask,
            "t": t,
            "y": y,
            "weights": weights,
            "n": n,
            "n_real": n_real,
            "want_loss": want_loss,
            "tau": tau,
            "approx": approx,
        }
        self.pos.phase = "apply"
        return BankBackward(tuple(residuals), gradient_payload, loss_payload)

    def apply(self, reply: BackwardReply, squares: Sequence[SquareTerm] = ()) -> LossRequest | None:
        """Unmask and apply the bank's gradient; returns a loss request in square-loss mode."""
        self._check_job(reply.job_id)
        self._expect(reply.epoch, reply.batch, "apply")
        cfg, opt, he = self.job_config(), self._opt(), self._he()
        p = self._pending
        sums = f64_values(reply.masked_sums, opt.w.size, "masked sums")
        grad = he.unmask_column_sums(sums, p["grad_mask"])
        opt.step(grad, p["n"], cfg.learning_rate_at(reply.epoch), cfg.momentum, cfg.l2)
        mode = self.loss_mode if p["want_loss"] else "none"
        request: LossRequest | None = None
        if mode == "poly":
            if reply.masked_loss is None:
                raise ProtocolViolation("node returned no loss")
            self._record_loss(he.unmask_total(reply.masked_loss, p["loss_mask"]))
        elif mode == "square":
            request = self._square_loss(reply, squares)
        if request is None:
            self._finish_batch()
        else:
            self.pos.phase = "loss"
        return request

    def _square_loss(self, reply: BackwardReply, squares: Sequence[SquareTerm]) -> LossRequest:
        he = self._he()
        p = self._pending
        approx = p["approx"]
        if len(squares) != len(self.provider_ids):
            raise ProtocolViolation("square terms missing")
        t2: Any = None
        for pid, sq in zip(self.provider_ids, squares):
            if (sq.job_id, sq.epoch, sq.batch, sq.party_id) != (reply.job_id, reply.epoch, reply.batch, pid):
                raise ProtocolViolation("square term for another batch or party")
            ct = he.deserialize(sq.ciphertext)
            if he.length(ct) != p["n"]:
                raise ProtocolViolation("square term has the wrong length")
            t2 = ct if t2 is None else he.add(t2, ct)
        t2 = he.add_plain(t2, p["tau"] ** 2)
        c = approx.loss_coeffs  # l0/R = c0 + c1 t + c2 t^2 ; row loss/R adds -y t
        lt = he.add_plain(he.add(he.mul_plain(p["t"], c[1] - p["y"]), he.mul_plain(t2, c[2])), c[0])
        if p["weights"] is not None:
            lt = he.mul_plain(lt, p["weights"])
        payload, p["loss_mask"] = he.masked_total(lt)
        return LossRequest(reply.job_id, reply.epoch, reply.batch, payload)

    def apply_loss(self, reply: LossReply) -> None:
        self._check_job(reply.job_id)
        self._expect(reply.epoch, reply.batch, "loss")
        self._record_loss(self._he().unmask_total(reply.masked_loss, self._pending["loss_mask"]))
        self._finish_batch()

    def _record_loss(self, masked_free_total: float) -> None:
        p = self._pending
        # the total is sum_rows weight * loss/R with weights summing to n: mean over real rows
        mean = masked_free_total * p["approx"].radius / p["n"]
        self._epoch_loss_sum += mean * p["n_real"]
        self._epoch_loss_rows += p["n_real"]

    def _finish_batch(self) -> None:
        self._pending = {}
        self._tau = None
        self._advance()

    def end_epoch(self) -> EpochEnd:
        """Close the epoch: record its loss, decide early stopping, checkpoint."""
        cfg = self.job_config()
        epoch = self.pos.epoch + 1
        loss: float | None = None
        if self._epoch_loss_rows:
            loss = self._epoch_loss_sum / self._epoch_loss_rows
            self.metrics.epoch_losses.append(loss)
        self._epoch_loss_sum, self._epoch_loss_rows = 0.0, 0
        stop = epoch >= cfg.epochs
        if loss is not None and cfg.patience:
            if self._best_loss - loss > cfg.tol * max(
                abs(self._best_loss) if math.isfinite(self._best_loss) else 1.0, 1e-12
            ):
                self._best_loss, self._bad_epochs = loss, 0
            else:
                self._bad_epochs += 1
            if self._bad_epochs >= cfg.patience and not stop:
                stop = True
                self.metrics.stopped_early = True
        self.metrics.epochs_run = epoch
        self._end_epoch(epoch)
        return EpochEnd(cfg.job_id, epoch, loss, stop)

    def _checkpoint_meta(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "epoch_losses": m.epoch_losses,
            "guard_levels": {str(k): v for k, v in m.guard_levels.items()},
            "guard_shrinks": [list(e) for e in m.guard_shrinks],
            "best_loss": self._best_loss if math.isfinite(self._best_loss) else None,
            "bad_epochs": self._bad_epochs,
        }

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        self.metrics = BankMetrics(
            epoch_losses=[float(v) for v in meta.get("epoch_losses", [])],
            guard_levels={int(k): int(v) for k, v in meta.get("guard_levels", {}).items()},
            guard_shrinks=[(int(a), int(b), int(c)) for a, b, c in meta.get("guard_shrinks", [])],
            epochs_run=int(meta.get("epoch", 0)),
        )
        best = meta.get("best_loss")
        self._best_loss = math.inf if best is None else float(best)
        self._bad_epochs = int(meta.get("bad_epochs", 0))
        self._epoch_loss_sum, self._epoch_loss_rows = 0.0, 0

    def model_share(self, epochs: int) -> ModelShare:
        w = self._opt().w
        transform = self.transform or ColumnTransform((), (), (), (), (), self.job_config().clip)
        return ModelShare(
            job_id=self.job_config().job_id,
            party_id=self.party_id,
            role="bank",
            feature_names=transform.output_names(),
            transform=transform,
            weights=tuple(float(v) for v in w[:-1]),
            intercept=float(w[-1]),
            epochs=epochs,
            sigmoid=self._approx().to_dict(),
        )

    def finish(self, share_path: str | Path) -> ModelShare:
        share = self.model_share(self.metrics.epochs_run)
        share.save(share_path)
        return share
