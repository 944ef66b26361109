"""The institution's side of joint modeling over the wire: job file, PSI, training, reports, scoring.

``train`` runs one job end to end from the bank's process, through the node:
ECDH-PSI (``xinrong.modeling.psi.BankPsi``), the split and training order
(``xinrong.modeling.vlr.split``), then ``BankDriver`` -- the protocol driver
the in-process simulator (``xinrong.tools.federation``) runs too -- over
``GrpcNode`` with the bank's own sealing key and each provider's CA-verified
binding (partial logits and square terms arrive sealed to this bank,
residuals leave sealed to each provider), and private scoring of the
held-out rows under a key only this bank holds. Every message crosses as its
``vlr_wire`` encoding inside a typed gRPC envelope
(``proto/xinrong/v1/modeling.proto``).

What the bank keeps on its own disk, under the job's output directory:

* ``.state/``: the alignment (its own ids in the canonical order, decoy
  flags, the train/test split), the JobStart it sent and its checkpoints:
  what ``--resume`` needs after a provider (or this process) died;
* at the end, written only once the node reports the job finished:
  ``xinrong.bank.share.json`` (its weights and preprocessing, atomically),
  ``model.json`` (what ``xinrong bank score`` needs), the model card
  (JSON + Markdown), ROC and KS plots, and its own weights report.

Failures come back as ``RemoteError`` with the node's precise status: which
provider failed at which step, and whether ``--resume`` can work.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import shutil
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from xinrong.errors import Reason, SignatureError, XinrongError
from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.layout import PartyCredentials, load_party
from xinrong.modeling import metrics, psi, scoring
from xinrong.modeling.data import PartyTable, parse_cell
from xinrong.modeling.he.base import HESecret, load_public
from xinrong.modeling.psi import psi_context
from xinrong.modeling.report import ModelCard, PartyInfo, he_description, plot_ks, plot_roc, write_weights_report
from xinrong.modeling.scoring import SCORING_KEY_CONTEXT, scoring_key_statement
from xinrong.modeling.serde import (
    ScoringKey,
    positions_to_proto,
    psi_selections_to_proto,
    score_outcome_from_proto,
    score_subjects_to_proto,
    scoring_key_to_proto,
)
from xinrong.modeling.vlr.bank import BankMetrics, BankParty
from xinrong.modeling.vlr.config import TrainConfig
from xinrong.modeling.vlr.driver import BankDriver
from xinrong.modeling.vlr.messages import (
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
    RestoreRequest,
)
from xinrong.modeling.vlr.sealing import HpkeSealer
from xinrong.modeling.vlr.split import aligned_features, aligned_labels, split_rows
from xinrong.modeling.vlr_state import ModelShare, atomic_write_bytes, check_id
from xinrong.modeling.vlr_wire import decode, encode
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.rpc.server import DEFAULT_MAX_MESSAGE_BYTES
from xinrong.v1 import common_pb2, modeling_pb2, modeling_pb2_grpc

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

BACKENDS = ("ckks", "paillier", "plain")
MODEL_FORMAT = "xinrong.bank.model/1"
STATE_FORMAT = "xinrong.bank.job_state/1"
MAX_SCORE_ROWS = 200_000  # per ScoreJobRows call (the node's limit)
MAX_SCORE_SUBJECTS = 20_000  # per ScoreEnterprises call (the node's limit)
MAX_PSI_IDS = 1_000_000  # bank ids + decoys per job (the node's limit)
_MESSAGE_MARGIN = 1 << 20  # room for the envelope under the 64 MiB limit


# -- the job file ------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFile:
    """A validated ``job.toml``; relative paths resolve against the file's directory."""

    job_id: str
    node: str
    credentials: Path
    providers: tuple[str, ...]
    backend: str
    labels: Path
    output: Path
    train: TrainConfig
    node_id: str = "node"
    allow_plain: bool = False
    id_column: str = ""  # "" = "id" if the file has one, else "uscc"
    label_column: str = "y"
    features: tuple[str, ...] | None = None  # None = every other column
    test_fraction: float = 0.3
    split_seed: int = 0
    decoys: Path | None = None
    he_params: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float = 600.0
    source: Path | None = None


_JOB_KEYS = {"id", "node", "node_id", "credentials", "providers", "backend", "allow_plain", "output", "timeout_seconds"}
_DATA_KEYS = {"labels", "id_column", "label_column", "features", "test_fraction", "split_seed", "decoys"}
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - {"job_id"}


def _check_keys(table: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (allowed: {sorted(allowed)})")
    return table


def _path(base: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty path")
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def parse_job(doc: dict[str, Any], base: Path, *, source: Path | None = None) -> JobFile:
    _check_keys(doc, {"job", "data", "train", "he"}, "job file")
    job = _check_keys(doc.get("job", {}), _JOB_KEYS, "[job]")
    data = _check_keys(doc.get("data", {}), _DATA_KEYS, "[data]")
    train = _check_keys(doc.get("train", {}), _TRAIN_KEYS, "[train]")
    he = doc.get("he", {})
    if not isinstance(he, dict):
        raise ValueError("[he] must be a table")
    for key in ("id", "node", "credentials", "providers"):
        if key not in job:
            raise ValueError(f"[job] needs {key!r}")
    if "labels" not in data:
        raise ValueError("[data] needs 'labels' (the label CSV)")
    job_id = check_id(str(job["id"]), "[job] id")
    providers = job["providers"]
    if not isinstance(providers, list) or not providers or not all(isinstance(p, str) for p in providers):
        raise ValueError("[job] providers must be a non-empty list of provider ids")
    backend = str(job.get("backend", "ckks"))
    if backend not in BACKENDS:
        raise ValueError(f"[job] backend must be one of {BACKENDS}")
    allow_plain = job.get("allow_plain", False)
    if not isinstance(allow_plain, bool):
        raise ValueError("[job] allow_plain must be true or false")
    if backend == "plain" and not allow_plain:
        raise ValueError(
            "backend 'plain' sends partial logits unencrypted to the bank: it is for tests only "
            "(set allow_plain = true in [job] to use it)"
        )
    features = data.get("features")
    if features is not None and (not isinstance(features, list) or not all(isinstance(f, str) for f in features)):
        raise ValueError("[data] features must be a list of column names")
    config = TrainConfig(job_id=job_id, **train)
    try:
        config.validate()
    except ValueError as exc:
        raise ValueError(f"[train]: {exc}") from None
    test_fraction = float(data.get("test_fraction", 0.3))
    if not 0 < test_fraction < 1:
        raise ValueError("[data] test_fraction must be in (0, 1)")
    timeout = float(job.get("timeout_seconds", 600.0))
    if not timeout > 0:
        raise ValueError("[job] timeout_seconds must be positive")
    return JobFile(
        job_id=job_id,
        node=str(job["node"]),
        node_id=str(job.get("node_id", "node")),
        credentials=_path(base, job["credentials"], "[job] credentials"),
        providers=tuple(providers),
        backend=backend,
        allow_plain=allow_plain,
        labels=_path(base, data["labels"], "[data] labels"),
        output=_path(base, job.get("output", f"models/{job_id}"), "[job] output"),
        train=config,
        id_column=str(data.get("id_column", "")),
        label_column=str(data.get("label_column", "y")),
        features=None if features is None else tuple(features),
        test_fraction=test_fraction,
        split_seed=int(data.get("split_seed", 0)),
        decoys=_path(base, data["decoys"], "[data] decoys") if data.get("decoys") else None,
        he_params=dict(he),
        timeout_seconds=timeout,
        source=source,
    )


def load_job(path: str | Path) -> JobFile:
    path = Path(path).expanduser().resolve()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"job file {path} does not exist") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    return parse_job(doc, path.parent, source=path)


# -- the bank's own data -----------------------------------------------------------------


def read_bank_table(
    path: Path,
    *,
    party_id: str,
    id_column: str = "",
    label_column: str | None = "y",
    features: Sequence[str] | None = None,
) -> PartyTable:
    """The bank's CSV: ids, optional 0/1 labels, numeric features (blank -> NaN). Never leaves the bank."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        id_col = id_column or ("id" if "id" in header else "uscc")
        if id_col not in header:
            raise ValueError(f"{path}: no id column {id_col!r} (name it with [data] id_column)")
        if label_column is not None and label_column not in header:
            raise ValueError(f"{path}: no label column {label_column!r} (name it with [data] label_column)")
        skip = {id_col} | ({label_column} if label_column else set())
        cols = list(features) if features is not None else [h for h in header if h not in skip]
        missing = sorted(set(cols) - set(header))
        if missing:
            raise ValueError(f"{path}: feature columns {missing} are not in the file")
        if skip & set(cols):
            raise ValueError(f"{path}: the id or label column cannot be a feature")
        pos = [header.index(c) for c in cols]
        ids: list[str] = []
        ys: list[float] = []
        rows: list[list[float]] = []
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} fields, got {len(rec)}")
            ids.append(rec[header.index(id_col)].strip())
            if label_column is not None:
                y = parse_cell(rec[header.index(label_column)], f"{path}:{line} {label_column}")
                if y not in (0.0, 1.0):
                    raise ValueError(f"{path}:{line}: label must be 0 or 1")
                ys.append(y)
            rows.append([parse_cell(rec[j], f"{path}:{line} {cols[k]}") for k, j in enumerate(pos)])
    if not ids:
        raise ValueError(f"{path}: no rows")
    x = np.asarray(rows, dtype=np.float64).reshape(len(ids), len(cols))
    return PartyTable(
        name=party_id,
        ids=tuple(ids),
        columns=tuple(cols),
        x=x,
        y=np.asarray(ys, dtype=np.float64) if label_column is not None else None,
    )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- the connection ----------------------------------------------------------------------


class ModelingClient:
    """The bank's ``ModelingService`` stub: deadlines, wire-byte count, decoded refusals."""

    def __init__(
        self, target: str, credentials: PartyCredentials, *, node_id: str = "node", timeout: float = 600.0
    ) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.bytes = 0
        self.calls = 0
        self._channel = secure_channel(target, credentials, server_role="node", server_id=node_id)
        self._stub = modeling_pb2_grpc.ModelingServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def directory(self) -> Any:
        """The node's ``NodeService`` on the same channel (party bindings for a resume)."""
        from xinrong.v1 import node_pb2_grpc

        return node_pb2_grpc.NodeServiceStub(self._channel)

    def __enter__(self) -> ModelingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        size = request.ByteSize()
        if size > DEFAULT_MAX_MESSAGE_BYTES - _MESSAGE_MARGIN:
            raise XinrongError(
                f"{method} of {size / 1e6:.1f} MB exceeds the 64 MiB message limit",
                reason=Reason.INVALID_ARGUMENT,
                public=f"a {method} message of {size / 1e6:.1f} MB exceeds the 64 MiB message limit: "
                "lower [train] batch_size (or use fewer providers per job)",
            )
        try:
            response = getattr(self._stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None
        self.bytes += size + response.ByteSize()
        self.calls += 1
        return response


class GrpcNode:
    """``NodeTransport`` over the ``ModelingService``: one RPC per step, the message as its body."""

    def __init__(self, client: ModelingClient, job_id: str) -> None:
        self._client = client
        self._job_id = job_id

    def _rpc(self, method: str, request_cls: Any, msg: Any) -> bytes:
        response = self._client.call(method, request_cls(job_id=self._job_id, body=encode(msg)))
        return bytes(response.body)

    def start(self, msg: JobStart) -> JobStarted:
        return decode(JobStarted, self._rpc("StartTraining", modeling_pb2.StartTrainingRequest, msg))

    def forward(self, msg: ForwardRequest) -> ForwardReply:
        return decode(ForwardReply, self._rpc("Forward", modeling_pb2.ForwardRequest, msg))

    def backward(self, msg: BackwardRequest) -> BackwardReply:
        return decode(BackwardReply, self._rpc("Backward", modeling_pb2.BackwardRequest, msg))

    def loss(self, msg: LossRequest) -> LossReply:
        return decode(LossReply, self._rpc("ComputeLoss", modeling_pb2.ComputeLossRequest, msg))

    def end_epoch(self, msg: EpochEnd) -> None:
        self._rpc("EndEpoch", modeling_pb2.EndEpochRequest, msg)

    def restore(self, msg: RestoreRequest) -> None:
        self._client.call("RestoreJob", modeling_pb2.RestoreJobRequest(job_id=self._job_id, body=encode(msg)))

    def finish(self, msg: FinishRequest) -> dict[str, Any]:
        response = self._client.call("FinishJob", modeling_pb2.FinishJobRequest(job_id=self._job_id, body=encode(msg)))
        metadata: dict[str, Any] = json.loads(response.metadata_json)
        return metadata


# -- durable job state (for --resume) ------------------------------------------------------


@dataclass
class JobState:
    """The bank's side of an aligned job: enough to rebuild its ``BankParty`` after a crash."""

    job_id: str
    providers: tuple[str, ...]
    ids: list[str]
    bank_rows: IntArray  # row in the bank's table, -1 for a decoy
    is_decoy: npt.NDArray[np.bool_]
    train_rows: IntArray  # positions in the aligned order, in training order
    test_rows: IntArray
    labels_sha256: str
    job_start: bytes = b""

    def save(self, directory: Path) -> None:
        body = {
            "format": STATE_FORMAT,
            "job_id": self.job_id,
            "providers": list(self.providers),
            "ids": self.ids,
            "bank_rows": self.bank_rows.tolist(),
            "is_decoy": self.is_decoy.astype(int).tolist(),
            "train_rows": self.train_rows.tolist(),
            "test_rows": self.test_rows.tolist(),
            "labels_sha256": self.labels_sha256,
        }
        atomic_write_bytes(directory / "alignment.json", json.dumps(body).encode())
        if self.job_start:
            atomic_write_bytes(directory / "job_start.bin", self.job_start)

    @classmethod
    def load(cls, directory: Path) -> JobState:
        path = directory / "alignment.json"
        if not path.is_file():
            raise ValueError(f"nothing to resume: {path} does not exist (run without --resume)")
        body = json.loads(path.read_text())
        if body.get("format") != STATE_FORMAT:
            raise ValueError(f"{path} is not a job state of this version")
        start = directory / "job_start.bin"
        return cls(
            job_id=str(body["job_id"]),
            providers=tuple(body["providers"]),
            ids=[str(i) for i in body["ids"]],
            bank_rows=np.asarray(body["bank_rows"], dtype=np.int64),
            is_decoy=np.asarray(body["is_decoy"], dtype=bool),
            train_rows=np.asarray(body["train_rows"], dtype=np.int64),
            test_rows=np.asarray(body["test_rows"], dtype=np.int64),
            labels_sha256=str(body["labels_sha256"]),
            job_start=start.read_bytes() if start.is_file() else b"",
        )


# -- training ------------------------------------------------------------------------------


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
            labels_sha256=_sha256_file(job.labels),
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
            if state.labels_sha256 != _sha256_file(job.labels):
                raise ValueError(f"{job.labels} changed since the job began; it cannot resume")
            if not state.job_start:
                raise ValueError("the job never started training; run without --resume to start over")
            bank = trainer.party(table, state)
            t_start = time.perf_counter()
            response = client.call("ResumeJob", modeling_pb2.ResumeJobRequest(job_id=job.job_id, body=state.job_start))
            trainer._verify_providers(_provider_bindings(client, job))
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
        bar = progress(bank._cfg().epochs * n_batches, first * n_batches) if progress is not None else _NullBar()

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


def _provider_bindings(client: ModelingClient, job: JobFile) -> list[common_pb2.SignedPartyBinding]:
    """Provider bindings for a resume, through the node's directory (checked against the CA by the caller)."""
    from xinrong.v1 import node_pb2

    stub = client.directory()
    try:
        resp = stub.ListParties(node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_PROVIDER), timeout=30.0)
    except grpc.RpcError as err:
        raise decode_rpc_error(err) from None
    out = []
    for signed in resp.bindings:
        binding = common_pb2.PartyBinding.FromString(signed.binding)
        if binding.party_id in job.providers:
            out.append(signed)
    return out


# -- private scoring --------------------------------------------------------------------------


def signed_scoring_key(
    creds: PartyCredentials, job_id: str, request_id: str
) -> tuple[HESecret, modeling_pb2.ScoringKey]:
    """A fresh scoring key of the bank's own, signed for this job and request (providers check it)."""
    secret = scoring.bank_keygen("ckks")
    public = scoring.bank_public_bytes(secret)
    signature = creds.signing_key.sign(SCORING_KEY_CONTEXT, scoring_key_statement(job_id, request_id, "ckks", public))
    return secret, scoring_key_to_proto(ScoringKey(scheme="ckks", public_key=public, signature=signature))


def _own_part(share: ModelShare, x_raw: FloatArray) -> FloatArray | None:
    if not share.weights:
        return None
    out: FloatArray = share.transform.apply(x_raw) @ np.asarray(share.weights, dtype=np.float64)
    return out


def score_job_rows(
    client: ModelingClient,
    creds: PartyCredentials,
    job_id: str,
    providers: Sequence[str],
    share: ModelShare,
    x_raw: FloatArray,
    positions: IntArray,
) -> FloatArray:
    """Logits of aligned rows of the job, by private scoring, in chunks under the message limit."""
    out: list[FloatArray] = []
    for start in range(0, positions.size, MAX_SCORE_ROWS):
        chunk = positions[start : start + MAX_SCORE_ROWS]
        request_id = f"{job_id}-rows-{uuid.uuid4().hex[:12]}"
        secret, key = signed_scoring_key(creds, job_id, request_id)
        response = client.call(
            "ScoreJobRows",
            modeling_pb2.ScoreJobRowsRequest(
                job_id=job_id,
                request_id=request_id,
                positions=positions_to_proto(chunk),
                scoring_key=key,
            ),
        )
        batch = scoring.bank_score(
            secret,
            bytes(response.aggregate),
            request_id=request_id,
            expected_providers=list(providers),
            bank_partial=_own_part(share, x_raw[start : start + MAX_SCORE_ROWS]),
            intercept=float(share.intercept or 0.0),
        )
        out.append(np.asarray(batch.logit, dtype=np.float64))
    return np.concatenate(out) if out else np.zeros(0)


@dataclass(frozen=True)
class ScoredEnterprise:
    enterprise: str
    consent_id: str
    scored: bool
    probability: float | None = None
    score: int | None = None
    grade: str | None = None
    reason: str = ""
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "enterprise": self.enterprise,
            "consent_id": self.consent_id,
            "status": "scored" if self.scored else "refused",
        }
        if self.scored:
            out.update(probability=self.probability, score=self.score, grade=self.grade)
        else:
            out.update(reason=self.reason, message=self.message)
        return out


def score_enterprises(
    client: ModelingClient,
    creds: PartyCredentials,
    model: dict[str, Any],
    share: ModelShare,
    subjects: Sequence[tuple[str, str]],
    bank_x: FloatArray,
) -> list[ScoredEnterprise]:
    """Score (uscc, consent id) pairs; a refused one comes back with the node's reason, unscored."""
    out: list[ScoredEnterprise] = []
    for start in range(0, len(subjects), MAX_SCORE_SUBJECTS):
        out += _score_chunk(
            client,
            creds,
            model,
            share,
            subjects[start : start + MAX_SCORE_SUBJECTS],
            bank_x[start : start + MAX_SCORE_SUBJECTS],
        )
    return out


def _score_chunk(
    client: ModelingClient,
    creds: PartyCredentials,
    model: dict[str, Any],
    share: ModelShare,
    subjects: Sequence[tuple[str, str]],
    bank_x: FloatArray,
) -> list[ScoredEnterprise]:
    job_id = str(model["job_id"])
    providers = [str(p) for p in model["providers"]]
    request_id = f"score-{uuid.uuid4()}"
    secret, key = signed_scoring_key(creds, job_id, request_id)
    response = client.call(
        "ScoreEnterprises",
        modeling_pb2.ScoreEnterprisesRequest(
            request_id=request_id,
            requested_at=int(time.time()),
            job_id=job_id,
            subjects=score_subjects_to_proto(subjects),
            scoring_key=key,
        ),
    )
    outcomes = [score_outcome_from_proto(o) for o in response.outcomes]
    if [o.enterprise_uscc for o in outcomes] != [u for u, _ in subjects]:
        raise XinrongError("node answered for other enterprises than asked")
    admitted = [i for i, o in enumerate(outcomes) if o.admitted]
    results: list[ScoredEnterprise] = []
    batch = None
    if admitted:
        batch = scoring.bank_score(
            secret,
            bytes(response.aggregate),
            request_id=request_id,
            expected_providers=providers,
            bank_partial=_own_part(share, bank_x[admitted]),
            intercept=float(share.intercept or 0.0),
        )
    slot = {i: k for k, i in enumerate(admitted)}
    for i, ((uscc, consent_id), o) in enumerate(zip(subjects, outcomes)):
        if o.admitted and batch is not None:
            k = slot[i]
            results.append(
                ScoredEnterprise(
                    uscc,
                    consent_id,
                    True,
                    round(float(batch.probability[k]), 6),
                    int(batch.points[k]),
                    str(batch.grade[k]),
                )
            )
        else:
            results.append(ScoredEnterprise(uscc, consent_id, False, reason=o.reason, message=o.message))
    return results


# -- reports ---------------------------------------------------------------------------------


def write_reports(
    outcome: TrainOutcome, job: JobFile, table: PartyTable, scheme: str, he_public: bytes
) -> dict[str, str]:
    """Plots, model card, the bank's private weights report and ``model.json``; all written atomically."""
    out = job.output
    files: dict[str, str] = {}
    files["roc"] = str(plot_roc(outcome.y_test, outcome.test_logits, out / "roc.png", title=f"ROC - {job.job_id}"))
    files["ks"] = str(plot_ks(outcome.y_test, outcome.test_logits, out / "ks.png", title=f"KS - {job.job_id}"))
    names = outcome.metadata.get("feature_names", {})
    parties = [PartyInfo(outcome.bank_share.party_id, "bank", tuple(outcome.bank_share.feature_names))]
    parties += [PartyInfo(p, "provider", tuple(names.get(p, ()))) for p in outcome.providers]
    he: dict[str, Any] = {"scheme": scheme}
    with contextlib.suppress(ValueError):
        he = he_description(load_public(scheme, he_public))
    cfg = dataclasses.asdict(job.train)
    cfg["sigmoid_degree"] = outcome.bank_share.sigmoid.get("degree", cfg["sigmoid_degree"])
    card = ModelCard(
        model_id=job.job_id,
        parties=tuple(parties),
        metrics={"auc": outcome.auc, "ks": outcome.ks},
        training={
            **cfg,
            "epochs_run": outcome.metrics.epochs_run,
            "stopped_early": outcome.metrics.stopped_early,
            "epoch_losses": [round(v, 6) for v in outcome.metrics.epoch_losses],
            "guard_levels": {str(k): v for k, v in sorted(outcome.metrics.guard_levels.items())},
            "guard_shrinks": len(outcome.metrics.guard_shrinks),
        },
        he=he,
        data={
            "rows_bank": outcome.rows_bank,
            "rows_aligned": outcome.rows_aligned,
            "rows_train": outcome.rows_train,
            "rows_test": outcome.rows_test,
            "test_positive_rate": round(float(outcome.y_test.mean()), 6),
            "alignment": "ECDH-PSI (X25519) through the node",
            "split": f"stratified {1 - job.test_fraction:.0%}/{job.test_fraction:.0%}, seed {job.split_seed}",
            "evaluation": "private scoring (CKKS, bank's key)",
        },
    )
    json_path, md_path = card.write(out)
    files["model_card_json"], files["model_card_md"] = str(json_path), str(md_path)
    w_json, w_md = write_weights_report(
        out,
        model_id=job.job_id,
        party_id=outcome.bank_share.party_id,
        feature_names=outcome.bank_share.feature_names,
        weights=outcome.bank_share.weights,
        intercept=outcome.bank_share.intercept,
    )
    files["weights_json"], files["weights_md"] = str(w_json), str(w_md)
    model = {
        "format": MODEL_FORMAT,
        "job_id": job.job_id,
        "bank_id": outcome.bank_share.party_id,
        "providers": list(outcome.providers),
        "node": job.node,
        "node_id": job.node_id,
        "credentials": str(job.credentials),
        "share": "bank.share.json",
        "bank_data": str(job.labels),
        "id_column": job.id_column,
        "bank_columns": list(table.columns),
        "metrics": {"auc": outcome.auc, "ks": outcome.ks, "rows_test": outcome.rows_test},
        "metadata": outcome.metadata,
    }
    atomic_write_bytes(out / "model.json", (json.dumps(model, indent=1, sort_keys=True) + "\n").encode())
    files["model"] = str(out / "model.json")
    files["share"] = str(out / "bank.share.json")
    return files


def load_model(directory: Path) -> tuple[dict[str, Any], ModelShare]:
    path = directory / "model.json"
    if not path.is_file():
        raise ValueError(f"{directory} holds no model.json (train one with `xinrong model train`)")
    model = json.loads(path.read_text())
    if model.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a model of this version")
    return model, ModelShare.load(directory / str(model.get("share", "bank.share.json")))


def bank_features_for(
    model: dict[str, Any], share: ModelShare, usccs: Sequence[str], rows: dict[str, dict[str, str]] | None = None
) -> FloatArray:
    """The bank's own raw features for enterprises: from ``rows`` (an input CSV) if it has every
    column, else from the bank's data file named in the model; an enterprise absent from both has
    gaps, which the bank's preprocessing imputes as in training."""
    columns = [str(c) for c in model.get("bank_columns", [])]
    x = np.full((len(usccs), len(columns)), np.nan)
    if not columns:
        return x
    source: dict[str, list[float]] = {}
    if rows is not None and all(all(c in r for c in columns) for r in rows.values()):
        for u, r in rows.items():
            source[u] = [parse_cell(r[c], f"input {c}") for c in columns]
    else:
        path = Path(str(model.get("bank_data", "")))
        if path.is_file():
            table = read_bank_table(
                path,
                party_id=share.party_id,
                id_column=str(model.get("id_column", "")),
                label_column=None,
                features=columns,
            )
            source = {i: list(table.x[k]) for k, i in enumerate(table.ids)}
    for k, u in enumerate(usccs):
        if u in source:
            x[k] = source[u]
    return x


def iter_csv(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="") as fh:
        yield from csv.DictReader(fh)


__all__ = [
    "JobFile",
    "JobState",
    "ModelingClient",
    "ScoredEnterprise",
    "TrainOutcome",
    "bank_features_for",
    "iter_csv",
    "load_job",
    "load_model",
    "parse_job",
    "read_bank_table",
    "score_enterprises",
    "score_job_rows",
    "tqdm_progress",
    "train",
]
