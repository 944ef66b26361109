"""The institution's side of joint modeling over the wire: one job from PSI to the finished model.

``train`` runs one job end to end from the bank's process, through the
node: ECDH-PSI (``xinrong.modeling.psi.BankPsi``), the split and training
order (``xinrong.modeling.vlr.split``), then ``BankDriver`` -- the protocol
driver the in-process simulator (``xinrong.tools.federation``) runs too --
over ``GrpcNode`` with the bank's own sealing key and each provider's
CA-verified binding (partial logits and square terms arrive sealed to this
bank, residuals leave sealed to each provider), and private scoring of the
held-out rows under a key only this bank holds.

What the bank keeps on its own disk, under the job's output directory:

* ``.state/``: the alignment, the JobStart it sent and its checkpoints
  (``xinrong.bank.job_state``): what ``--resume`` needs after a provider (or
  this process) died;
* at the end, written only once the node reports the job finished:
  ``bank.share.json`` (its weights and preprocessing, atomically),
  ``model.json``, the model card, plots and its own weights report
  (``xinrong.bank.model_files``).

Failures come back as ``RemoteError`` with the node's precise status: which
provider failed at which step, and whether ``--resume`` can work.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xinrong.bank.bank_table import read_bank_table, sha256_file
from xinrong.bank.job_file import JobFile
from xinrong.bank.job_state import JobState
from xinrong.bank.model_files import write_reports
from xinrong.bank.modeling_client import GrpcNode, ModelingClient, provider_bindings
from xinrong.bank.scoring_client import score_job_rows
from xinrong.errors import SignatureError, XinrongError
from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.layout import PartyCredentials, load_party
from xinrong.limits import MAX_PSI_IDS
from xinrong.modeling import metrics, psi
from xinrong.modeling.data import PartyTable
from xinrong.modeling.psi import psi_context
from xinrong.modeling.serde import psi_selections_to_proto
from xinrong.modeling.vlr.bank import BankMetrics, BankParty
from xinrong.modeling.vlr.driver import BankDriver
from xinrong.modeling.vlr.messages import EpochEnd, JobStarted
from xinrong.modeling.vlr.sealing import HpkeSealer
from xinrong.modeling.vlr.split import aligned_features, aligned_labels, split_rows
from xinrong.modeling.vlr_state import ModelShare
from xinrong.modeling.vlr_wire import decode, encode
from xinrong.v1 import common_pb2, modeling_pb2

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


@dataclass
class TrainOutcome:
    """What one training run produced; every number the user needs is here."""

    job_id: str
    output: Path
    providers: tuple[str, ...]
    metadata: dict[str, Any]
    bank_share: ModelShare
    metrics: BankMetrics
    auc: float
    ks: float
    rows_bank: int
    rows_aligned: int
    rows_train: int
    rows_test: int
    y_test: FloatArray
    test_logits: FloatArray
    state: JobState
    seconds_psi: float
    seconds_total: float  # CreateJob (PSI start) to finished model
    seconds_train: float
    epoch_seconds: list[float]
    seconds_scoring: float
    resumed_from: int | None
    wire_bytes: dict[str, int]
    bank_wire_bytes: int
    files: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        loss = f"{self.metrics.epoch_losses[-1]:.4f}" if self.metrics.epoch_losses else "n/a"
        mb = sum(v for k, v in self.wire_bytes.items() if k != "node") / 1e6
        per_epoch = f"{float(np.median(self.epoch_seconds)):.2f}s/epoch" if self.epoch_seconds else "-"
        resumed = f", resumed from epoch {self.resumed_from}" if self.resumed_from is not None else ""
        return (
            f"model {self.job_id}: test AUC {self.auc:.4f}, KS {self.ks:.4f} on {self.rows_test} held-out rows; "
            f"{self.metrics.epochs_run} epochs{' (stopped early)' if self.metrics.stopped_early else ''}, "
            f"final loss {loss}; {self.rows_aligned} of {self.rows_bank} bank rows aligned with "
            f"{len(self.providers)} providers ({self.rows_train} train); {self.seconds_total:.1f}s to the model "
            f"(PSI {self.seconds_psi:.1f}s, {per_epoch}){resumed}; {mb:.1f} MB on the wire; output {self.output}"
        )


class _NullBar:
    def update(self, n: int = 1) -> None:
        return None

    def set_postfix_str(self, s: str) -> None:
        return None

    def close(self) -> None:
        return None


ProgressFactory = Callable[[int, int], Any]  # (total batches, already done) -> a tqdm-like bar


def tqdm_progress(total: int, initial: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="batch", desc="training", dynamic_ncols=True)


class _Trainer:
    """One job driven from the bank: its data, the PSI and split, and ``BankDriver`` over gRPC."""

    def __init__(self, job: JobFile, credentials: PartyCredentials, client: ModelingClient) -> None:
        if credentials.role != "institution" or credentials.sealing_key is None:
            raise ValueError("joint modeling needs institution credentials with a sealing key")
        self.job = job
        self.creds = credentials
        self.bank_id = credentials.party_id
        self.client = client
        self.sealing = credentials.sealing_key
        self.state_dir = job.output / ".state"
        self.providers: dict[str, VerifiedBinding] = {}

    def _verify_providers(self, bindings: Sequence[common_pb2.SignedPartyBinding]) -> None:
        """The providers' sealing keys come through the node: check each against the CA ourselves."""
        verified: dict[str, VerifiedBinding] = {}
        for signed in bindings:
            try:
                b = verify_binding(self.creds.ca, signed, expect_role="provider")
            except SignatureError:
                raise XinrongError(
                    "a provider binding fails the CA check",
                    public="the node handed over a provider binding that fails the CA check",
                ) from None
            verified[b.party_id] = b
        if set(verified) != set(self.job.providers):
            raise XinrongError("provider bindings do not match the job's providers")
        for b in verified.values():
            if len(b.sealing_public_raw) != 32:
                raise XinrongError(f"provider {b.party_id} has no sealing key")
        self.providers = verified

    def driver(self, bank: BankParty) -> BankDriver:
        """The protocol driver over gRPC, sealing to the providers' CA-verified keys."""
        recipients = {pid: b.sealing_public_raw for pid, b in self.providers.items()}
        return BankDriver(
            bank, GrpcNode(self.client, self.job.job_id), HpkeSealer(self.bank_id, self.sealing, recipients)
        )

    def _read_labels(self) -> PartyTable:
        return read_bank_table(
            self.job.labels,
            party_id=self.bank_id,
            id_column=self.job.id_column,
            label_column=self.job.label_column,
            features=self.job.features,
        )

    def _decoys(self) -> list[str]:
        if self.job.decoys is None:
            return []
        return [line.strip() for line in self.job.decoys.read_text().splitlines() if line.strip()]

    # PSI and split ------------------------------------------------------------------------

    def align(self, table: PartyTable) -> JobState:
        job = self.job
        decoys = self._decoys()
        if len(table.ids) + len(decoys) > MAX_PSI_IDS:
            raise ValueError(
                f"{len(table.ids) + len(decoys):,} ids exceed the PSI's limit of {MAX_PSI_IDS:,} per job "
                "(32 bytes each under the 64 MiB message limit); split the population into several jobs"
            )
        with psi.BankPsi(table.ids, context=psi_context(job.job_id), decoys=decoys) as bank_psi:
            request = bank_psi.request()

            def exchange(pid: str) -> bytes:
                answer = self.client.call(
                    "ExchangePsi", modeling_pb2.ExchangePsiRequest(job_id=job.job_id, provider_id=pid, body=request)
                )
                if answer.provider_id != pid:
                    raise XinrongError("PSI answer from another provider")
                return bytes(answer.body)

            # every provider blinds at once (its own process); the bank matches each answer as it comes
            with ThreadPoolExecutor(max_workers=len(job.providers)) as pool:
                futures = {pid: pool.submit(exchange, pid) for pid in job.providers}
                for pid in job.providers:
                    bank_psi.accept(pid, futures[pid].result())
            alignment, selections = bank_psi.finish()
        response = self.client.call(
            "SelectPsi",
            modeling_pb2.SelectPsiRequest(
                job_id=job.job_id, selections=psi_selections_to_proto(job.providers, selections)
            ),
        )
        n = len(alignment)
        if int(response.aligned_rows) != n:
            raise XinrongError("providers aligned a different number of rows than the bank")
        if n == 0:
            raise XinrongError(
                "no enterprise is common to the bank and every provider",
                public="the PSI found no enterprise common to the bank and every provider",
            )
        is_decoy = np.asarray(alignment.is_decoy, dtype=bool)
        bank_rows = np.asarray(alignment.bank_index, dtype=np.int64)
        assert table.y is not None
        split = split_rows(
            alignment.ids,
            bank_rows,
            is_decoy,
            aligned_labels(table.y, bank_rows, is_decoy),
            job_id=job.job_id,
            test_fraction=job.test_fraction,
            split_seed=job.split_seed,
        )
        return JobState(
            job_id=job.job_id,
            providers=job.providers,
            ids=list(alignment.ids),
            bank_rows=bank_rows,
            is_decoy=is_decoy,
            train_rows=split.train_rows,
            test_rows=split.test_rows,
            labels_sha256=sha256_file(job.labels),
        )

    def party(self, table: PartyTable, state: JobState) -> BankParty:
        assert table.y is not None
        y = aligned_labels(table.y, state.bank_rows, state.is_decoy)
        rows = state.train_rows
        return BankParty(
            self.bank_id,
            self.job.train,
            aligned_features(table.x, state.bank_rows, state.is_decoy)[rows],
            table.columns,
            y[rows],
            decoy=state.is_decoy[rows],
            checkpoint_dir=self.state_dir / "checkpoints",
        )


def _clear_state(directory: Path) -> None:
    """A fresh (non-resume) run starts from nothing: drop an earlier attempt's state, never anything else."""
    if directory.exists():
        shutil.rmtree(directory)


def train(
    job: JobFile,
    *,
    resume: bool = False,
    credentials: PartyCredentials | None = None,
    progress: ProgressFactory | None = None,
) -> TrainOutcome:
    """Run (or resume) one job; raises ``RemoteError`` with the node's status when the job fails."""
    creds = credentials or load_party(job.credentials)
    with ModelingClient(job.node, creds, node_id=job.node_id, timeout=job.timeout_seconds) as client:
        trainer = _Trainer(job, creds, client)
        table = trainer._read_labels()
        job.output.mkdir(parents=True, exist_ok=True)
        if (job.output / "bank.share.json").exists():
            raise ValueError(f"{job.output} already holds a finished model; choose another output directory or job id")
        resumed_from: int | None = None
        if resume:
            state = JobState.load(trainer.state_dir)
            if state.job_id != job.job_id or state.providers != job.providers:
                raise ValueError("the saved job state belongs to another job id or provider list")
            if state.labels_sha256 != sha256_file(job.labels):
                raise ValueError(f"{job.labels} changed since the job began; it cannot resume")
            if not state.job_start:
                raise ValueError("the job never started training; run without --resume to start over")
            bank = trainer.party(table, state)
            t_start = time.perf_counter()
            response = client.call("ResumeJob", modeling_pb2.ResumeJobRequest(job_id=job.job_id, body=state.job_start))
            trainer._verify_providers(provider_bindings(client, job))
            driver = trainer.driver(bank)
            bank.job_start(job.providers, len(state.ids), state.train_rows)  # the provider order, as first sent
            started = decode(JobStarted, bytes(response.body))
            bank.started(started)
            resumed_from = driver.restore(int(e) for e in response.provider_epochs)
            seconds_psi = 0.0
            log.info("job %s resumed from epoch %d", job.job_id, resumed_from)
        else:
            _clear_state(trainer.state_dir)
            t_start = time.perf_counter()  # seconds_total: from the job's creation (PSI start) to the model
            created = client.call(
                "CreateJob",
                modeling_pb2.CreateJobRequest(
                    job_id=job.job_id,
                    provider_ids=list(job.providers),
                    backend=job.backend,
                    he_params_json=json.dumps(job.he_params, sort_keys=True),
                ),
            )
            trainer._verify_providers(created.provider_bindings)
            t_psi = time.perf_counter()
            state = trainer.align(table)
            seconds_psi = time.perf_counter() - t_psi
            trainer.state_dir.mkdir(parents=True, exist_ok=True)
            state.save(trainer.state_dir)
            bank = trainer.party(table, state)
            driver = trainer.driver(bank)
            start = bank.job_start(job.providers, len(state.ids), state.train_rows)
            state.job_start = encode(start)
            state.save(trainer.state_dir)
            started = driver.start(start)
        he_public, scheme = started.he_public, started.scheme
        # the batches ------------------------------------------------------------------------
        n_batches = bank.n_batches()
        first = bank.pos.epoch
        bar = progress(bank.job_config().epochs * n_batches, first * n_batches) if progress is not None else _NullBar()

        def on_epoch(end: EpochEnd) -> None:
            if end.loss is not None:
                bar.set_postfix_str(f"epoch {end.epoch} loss {end.loss:.4f}")

        t_train = time.perf_counter()
        try:
            epoch_seconds = driver.train(on_batch=lambda: bar.update(1), on_epoch=on_epoch)
        finally:
            bar.close()
        metadata, share = driver.finish(job.output / "bank.share.json")
        seconds_total = time.perf_counter() - t_start
        seconds_train = time.perf_counter() - t_train
        # held-out rows, scored privately ---------------------------------------------------
        ts = time.perf_counter()
        x_test = aligned_features(table.x, state.bank_rows, state.is_decoy)[state.test_rows]
        logits = score_job_rows(client, creds, job.job_id, job.providers, share, x_test, state.test_rows)
        seconds_scoring = time.perf_counter() - ts
        assert table.y is not None
        y_test = aligned_labels(table.y, state.bank_rows, state.is_decoy)[state.test_rows]
        status = client.call("GetJob", modeling_pb2.GetJobRequest(job_id=job.job_id))
        wire = {k: int(v) for k, v in status.wire_bytes.items()}
        outcome = TrainOutcome(
            job_id=job.job_id,
            output=job.output,
            providers=job.providers,
            metadata=metadata,
            bank_share=share,
            metrics=bank.metrics,
            auc=metrics.auc(y_test, logits),
            ks=metrics.ks(y_test, logits),
            rows_bank=len(table.ids),
            rows_aligned=len(state.ids),
            rows_train=int(state.train_rows.size),
            rows_test=int(state.test_rows.size),
            y_test=y_test,
            test_logits=logits,
            state=state,
            seconds_psi=seconds_psi,
            seconds_total=seconds_total,
            seconds_train=seconds_train,
            epoch_seconds=epoch_seconds,
            seconds_scoring=seconds_scoring,
            resumed_from=resumed_from,
            wire_bytes=wire,
            bank_wire_bytes=client.bytes,
        )
        outcome.files = write_reports(outcome, job, table, scheme, he_public)
    return outcome
