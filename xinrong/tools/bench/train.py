"""``xinrong bench train``: federated LR on real hetero data against scikit-learn, same run.

Two modes (``mode`` in the JSON line):

* ``processes`` (default): the node and K provider agents run as separate
  processes over mTLS (``xinrong.tools.localnet``), each agent with its slice of
  the host columns as its ``[modeling] dataset``; this process plays the
  bank (``xinrong.bank.modeling.train``). ``bytes_per_party`` are the serialized
  request + response bytes of every gRPC message, counted by the node per
  party. Providers compute on the other core while the bank and node wait,
  which one process cannot do (TenSEAL holds the GIL).
* ``inprocess`` (``--inprocess``): one process plays the bank, the
  providers and the node (``xinrong.tools.federation_job``), with every message encoded,
  counted and (where the node must not read it) HPKE-sealed.

Either way alignment is the real ECDH-PSI and the test rows are scored
with the private scoring protocol. In the same run scikit-learn's
``LogisticRegression`` is fitted on the joined training rows, with each
party's own fitted preprocessing and the matching regularization:
our objective is mean log-loss + ``l2``/2 * ||w||^2 (intercept free), which
is scikit-learn's ``C = 1 / (l2 * n_train)`` with the lbfgs solver.

``seconds_total`` is wall time from the start of the PSI to the finished
model (key generation and training included; process start-up, scoring of
the test rows and the scikit-learn fit excluded). Timings on a shared machine are noisy:
compare ratios within one run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from xinrong.modeling import data, metrics

if TYPE_CHECKING:  # the protocol and HE modules load when a benchmark runs, not with the CLI
    from xinrong.modeling.vlr.bank import BankMetrics
    from xinrong.modeling.vlr.config import TrainConfig
    from xinrong.tools.federation_job import JobResult

BACKENDS = ("ckks", "paillier", "plain")
MODES = ("processes", "inprocess")

# Per-dataset defaults found in plaintext trials (see modeling.sigmoid): batches
# that fill a CKKS ciphertext on default_credit, small batches on the 398-row breast set.
_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "default_credit": {"batch_size": 7000, "epochs": 8, "learning_rate": 0.5},
    "breast": {"batch_size": 200, "epochs": 30, "learning_rate": 0.5},
    "custom": {"batch_size": 4096, "epochs": 10, "learning_rate": 0.5},
    "fate_shape": {"batch_size": 4096, "epochs": 2, "learning_rate": 0.5},
}

# FATE's own benchmark shape (issue 10, A15): 100k rows, the bank 30 features,
# one provider 300; synthetic, standardized, generated from a fixed seed.
FATE_SHAPE = {"rows": 100_000, "guest_features": 30, "host_features": 300, "seed": 20_241}
GENERATED = ("fate_shape",)


def fate_shape(
    rows: int = FATE_SHAPE["rows"],
    guest_features: int = FATE_SHAPE["guest_features"],
    host_features: int = FATE_SHAPE["host_features"],
    seed: int = FATE_SHAPE["seed"],
) -> tuple[data.PartyTable, data.PartyTable]:
    """The bank's table (labels) and the provider's, on shared ids; labels from a sparse logistic model."""
    rng = np.random.default_rng(seed)
    xg = rng.standard_normal((rows, guest_features))
    xh = rng.standard_normal((rows, host_features))
    wg = rng.standard_normal(guest_features) * (rng.random(guest_features) < 0.5)
    wh = rng.standard_normal(host_features) * (rng.random(host_features) < 0.1)
    logits = (xg @ wg + xh @ wh) / np.sqrt(max(1.0, float(np.count_nonzero(wg) + np.count_nonzero(wh)))) * 2.0
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float64)

    def standardized(x: np.ndarray) -> np.ndarray:
        # Four decimals keep the CSVs the agents read small; the values stay standardized.
        return np.asarray(np.round((x - x.mean(axis=0)) / x.std(axis=0), 4), dtype=np.float64)

    ids = tuple(f"{i:06d}" for i in range(rows))
    bank = data.PartyTable("bank", ids, tuple(f"g{j}" for j in range(guest_features)), standardized(xg), y)
    host = data.PartyTable("provider-1", ids, tuple(f"h{j}" for j in range(host_features)), standardized(xh))
    return bank, host


# The first-order surrogate (Paillier) is least squares: its curvature does not vanish for
# confident rows, so correlated features need a smaller step (breast diverges at 0.5).
_FIRST_ORDER_LEARNING_RATE = {"breast": 0.1}


def _he_params(backend: str, paillier_bits: int, plain_max_degree: int = 7, sigmoid_degree: int = 0) -> dict[str, Any]:
    if backend == "paillier":
        return {"n_bits": paillier_bits, "allow_small_key": paillier_bits < 2048}
    if backend == "plain":
        return {"max_degree": max(plain_max_degree, sigmoid_degree)}  # default: what the default CKKS chain evaluates
    if sigmoid_degree > 7:
        # one more 40-bit level per doubling of the degree (polyval depth ceil(log2(d + 1))),
        # on top of the default [60, 40 x 5, 60] (max degree 7); 360 bits at N = 16384 for d <= 15
        depth = math.ceil(math.log2(sigmoid_degree + 1))
        return {"coeff_mod_bit_sizes": (60,) + (40,) * (depth + 2) + (60,)}
    return {}


def _sklearn_reference(
    job: JobResult, bank: data.PartyTable, providers: Sequence[data.PartyTable], l2: float
) -> dict[str, Any]:
    """Fit scikit-learn on the joined rows with each party's own fitted transform."""
    from sklearn.linear_model import LogisticRegression

    al = job.alignment
    shares = job.train.provider_shares
    real = ~al.is_decoy

    def joined(rows: np.ndarray) -> np.ndarray:
        parts = []
        bank_share = job.train.bank_share
        if bank_share.feature_names:
            xb = np.full((rows.size, len(bank.columns)), np.nan)
            ok = real[rows]
            xb[ok] = bank.x[al.bank_rows[rows[ok]]]
            parts.append(bank_share.transform.apply(xb))
        for p in providers:
            parts.append(shares[p.name].transform.apply(p.x[al.provider_rows[p.name][rows]]))
        return np.hstack(parts)

    train_real = job.train_rows[real[job.train_rows]]
    x_train, x_test = joined(train_real), joined(job.test_rows)
    y_train = job.y_train[real[job.train_rows]]
    n = y_train.size
    t0 = time.perf_counter()
    clf = LogisticRegression(C=1.0 / (l2 * n) if l2 > 0 else 1e12, max_iter=10_000, tol=1e-10)
    clf.fit(x_train, y_train)
    seconds = time.perf_counter() - t0
    test_scores = clf.decision_function(x_test)
    train_scores = clf.decision_function(x_train)
    return {
        "auc": metrics.auc(job.y_test, test_scores),
        "ks": metrics.ks(job.y_test, test_scores),
        "train_auc": metrics.auc(y_train, train_scores),
        "seconds": seconds,
        "max_abs_logit": float(np.max(np.abs(train_scores))),
        "coef": np.r_[clf.coef_[0], clf.intercept_],
        "x_train": x_train,
        "y_train": y_train,
    }


def run(
    dataset: str | None = "default_credit",
    backend: str = "ckks",
    providers: int = 2,
    guest: str | Path | None = None,
    hosts: Sequence[str | Path] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    l2: float = 0.01,
    momentum: float = 0.8,
    seed: int = 0,
    split_seed: int = 0,
    sigmoid_degree: int = 0,
    sigmoid_radius: float = 10.0,
    sigmoid_weight_scale: float = 2.0,
    patience: int = 0,
    track_loss: bool = True,
    parallel: bool = False,
    paillier_bits: int = 2048,
    workdir: str | Path | None = None,
    progress: Callable[[int, BankMetrics], None] | None = None,
    loss_batches: int = 1,
    align: Literal["psi", "ids"] = "psi",
    plain_max_degree: int = 7,
    mode: str = "inprocess",
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train federated and centralized models on the same split; return one flat JSON-able dict.

    ``align="ids"`` skips the PSI (plain id join) for quick trials only; the
    benchmark's numbers use the PSI. ``mode="processes"`` deploys real
    processes (see the module docstring).
    """
    from xinrong.modeling.vlr.config import TrainConfig
    from xinrong.tools.federation_job import run_job

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    if guest is not None:
        if not hosts:
            raise ValueError("--guest needs at least one --host")
        bank = data.read_table(guest, label=True, name="bank")
        host_tables = [data.read_table(h, label=False, name=f"provider-{i + 1}") for i, h in enumerate(hosts)]
        if len(host_tables) == 1 and providers > 1:
            host_tables = data.split_columns(host_tables[0], providers)
        name = "custom"
    else:
        if dataset is None:
            raise ValueError("give a dataset or --guest/--host files")
    if guest is None and dataset in GENERATED:
        bank, host = fate_shape()
        host_tables = data.split_columns(host, providers) if providers > 1 else [host]
        name = str(dataset)
    elif guest is None:
        assert dataset is not None
        g, h = data.dataset_paths(dataset, data_dir)
        bank = data.read_table(g, label=True, name="bank")
        host_tables = data.split_columns(data.read_table(h, label=False, name="provider-1"), providers)
        name = dataset
    defaults = _DATASET_DEFAULTS.get(name, _DATASET_DEFAULTS["custom"])
    config = TrainConfig(
        job_id=f"bench-{name}-{backend}",
        epochs=epochs or int(defaults["epochs"]),
        batch_size=batch_size or int(defaults["batch_size"]),
        learning_rate=learning_rate
        or (_FIRST_ORDER_LEARNING_RATE.get(name) if backend == "paillier" else None)
        or float(defaults["learning_rate"]),
        momentum=momentum,
        l2=l2,
        seed=seed,
        sigmoid_degree=sigmoid_degree,
        sigmoid_radius=sigmoid_radius,
        sigmoid_weight_scale=sigmoid_weight_scale,
        patience=patience,
        track_loss=track_loss,
        loss_batches=loss_batches,
    )
    config.validate()
    he_params = _he_params(backend, paillier_bits, plain_max_degree, sigmoid_degree)
    if mode == "processes":
        if align != "psi":
            raise ValueError("the multi-process mode always aligns with the PSI")
        return _run_processes(name, backend, bank, host_tables, config, he_params, l2, split_seed, workdir)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="xinrong-bench-train-")
        workdir = tmp.name
    try:
        job = run_job(
            bank,
            host_tables,
            config,
            backend=backend,
            he_params=_he_params(backend, paillier_bits, plain_max_degree, sigmoid_degree),
            workdir=workdir,
            align=align,
            split_seed=split_seed,
            parallel=parallel,
            progress=progress,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    ref = _sklearn_reference(job, bank, host_tables, l2)
    tr = job.train
    fed_coef = np.r_[
        list(tr.bank_share.weights),
        *[list(tr.provider_shares[p.name].weights) for p in host_tables],
        [tr.bank_share.intercept or 0.0],
    ]
    train_logits = ref["x_train"] @ fed_coef[:-1] + fed_coef[-1]
    auc, ks = metrics.auc(job.y_test, job.test_logits), metrics.ks(job.y_test, job.test_logits)
    sigmoid = tr.bank_share.sigmoid
    traffic = tr.traffic.per_party()
    return {
        "mode": "inprocess",
        "dataset": name,
        "backend": backend,
        "providers": len(host_tables),
        "rows_aligned": len(job.alignment),
        "rows_train": int(job.train_rows.size),
        "rows_test": int(job.test_rows.size),
        "auc": round(auc, 6),
        "ks": round(ks, 6),
        "auc_sklearn": round(ref["auc"], 6),
        "ks_sklearn": round(ref["ks"], 6),
        "delta_auc": round(auc - ref["auc"], 6),
        "delta_ks": round(ks - ref["ks"], 6),
        "train_auc": round(metrics.auc(ref["y_train"], train_logits), 6),
        "train_auc_sklearn": round(ref["train_auc"], 6),
        "aligned_by": align,
        "seconds_total": round(job.seconds_total, 3),
        "seconds_psi": round(job.alignment.seconds, 3),
        "seconds_keygen": round(job.seconds_keygen, 3),
        "seconds_train": round(tr.seconds_train, 3),
        "seconds_per_epoch": round(statistics.median(tr.epoch_seconds), 3) if tr.epoch_seconds else None,
        "seconds_scoring_test": round(job.seconds_scoring, 3),
        "seconds_sklearn": round(ref["seconds"], 3),
        "epochs": tr.metrics.epochs_run,
        "stopped_early": tr.metrics.stopped_early,
        "bytes_per_party": {p: v["sent"] + v["received"] for p, v in traffic.items()},
        "bytes_detail": traffic,
        # CPU each party spent (its own code; nested calls of other parties carved out): what it
        # would need in a process of its own. PSI: its worker processes included.
        "cpu_seconds_train": {p: round(v, 3) for p, v in sorted(tr.traffic.cpu_seconds.items())},
        "cpu_seconds_psi": {p: round(v, 3) for p, v in sorted(job.alignment.cpu_seconds.items())},
        "config": {
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "momentum": config.momentum,
            "l2": config.l2,
            "sklearn_C": 1.0 / (config.l2 * ref["y_train"].size) if config.l2 > 0 else None,
        },
        "sigmoid": {
            k: sigmoid.get(k) for k in ("degree", "radius", "weight_scale", "max_error", "coercive", "loss_mode")
        },
        "guard_levels": {str(k): v for k, v in sorted(tr.metrics.guard_levels.items())},
        "guard_shrinks": len(tr.metrics.guard_shrinks),
        "guard_max_bound_sum": round(float(tr.metadata["guard"]["max_bound_sum"]), 4),
        "max_abs_logit_train": round(float(np.max(np.abs(train_logits))), 3),
        "max_abs_logit_train_sklearn": round(ref["max_abs_logit"], 3),
        "epoch_losses": [round(v, 6) for v in tr.metrics.epoch_losses],
    }


# -- the multi-process mode -------------------------------------------------------------------

# Catalog provider names the agents take in the multi-process mode (their certificates,
# bindings and node routes need catalog providers); each gets one slice of the host columns.
_AGENT_NAMES = (
    "tax",
    "social_insurance",
    "electricity",
    "housing_fund",
    "water",
    "gas",
    "market",
    "judicial",
    "real_estate",
)


def _write_table(path: Path, table: data.PartyTable) -> Path:
    """``id[,y],x...`` (y if the table has labels), floats written exactly (repr), blanks for NaN."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", *(["y"] if table.y is not None else []), *table.columns])
        labels = [[int(v)] for v in table.y] if table.y is not None else [[] for _ in table.ids]
        for ident, label, row in zip(table.ids, labels, table.x):
            writer.writerow([ident, *label, *["" if math.isnan(v) else repr(float(v)) for v in row]])
    return path


def _sklearn_reference_by_id(
    bank: data.PartyTable,
    hosts: Sequence[data.PartyTable],
    shares: dict[str, Any],
    bank_share: Any,
    ids: Sequence[str],
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    y_train: np.ndarray,
    y_test: np.ndarray,
    l2: float,
) -> dict[str, Any]:
    """scikit-learn on the rows the federation trained on, joined by id (the benchmark holds every CSV)."""
    from sklearn.linear_model import LogisticRegression

    bank_pos = {k: i for i, k in enumerate(bank.ids)}
    host_pos = [{k: i for i, k in enumerate(h.ids)} for h in hosts]

    def joined(rows: np.ndarray) -> np.ndarray:
        keys = [ids[r] for r in rows]
        parts = []
        if bank_share.feature_names:
            parts.append(bank_share.transform.apply(bank.x[[bank_pos[k] for k in keys]]))
        for h, pos in zip(hosts, host_pos):
            parts.append(shares[h.name].transform.apply(h.x[[pos[k] for k in keys]]))
        return np.hstack(parts)

    x_train, x_test = joined(train_rows), joined(test_rows)
    t0 = time.perf_counter()
    clf = LogisticRegression(C=1.0 / (l2 * y_train.size) if l2 > 0 else 1e12, max_iter=10_000, tol=1e-10)
    clf.fit(x_train, y_train)
    seconds = time.perf_counter() - t0
    test_scores = clf.decision_function(x_test)
    train_scores = clf.decision_function(x_train)
    return {
        "auc": metrics.auc(y_test, test_scores),
        "ks": metrics.ks(y_test, test_scores),
        "train_auc": metrics.auc(y_train, train_scores),
        "seconds": seconds,
        "x_train": x_train,
    }


def _run_processes(
    name: str,
    backend: str,
    bank_table: data.PartyTable,
    host_tables: Sequence[data.PartyTable],
    config: TrainConfig,
    he_params: dict[str, Any],
    l2: float,
    split_seed: int,
    workdir: str | Path | None,
) -> dict[str, Any]:
    """Node and agents as real processes over mTLS, the bank in this process."""
    from xinrong.bank.modeling import JobFile, train
    from xinrong.keys.layout import party_dir
    from xinrong.modeling.vlr_state import ModelShare
    from xinrong.tools.localnet import deploy
    from xinrong.tools.procs import ProcessGroup

    if len(host_tables) > len(_AGENT_NAMES):
        raise ValueError(f"at most {len(_AGENT_NAMES)} providers in the multi-process mode")
    # Short test keys and the plain backend are the node's call (modeling_allow_insecure), not the bank's.
    insecure = backend == "plain" or bool(he_params.get("allow_small_key"))
    he_params = {k: v for k, v in he_params.items() if k != "allow_small_key"}
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="xinrong-bench-train-")
        workdir = tmp.name
    root = Path(workdir)
    try:
        data_dir = root / "datasets"
        data_dir.mkdir(parents=True, exist_ok=True)
        hosts = [dataclasses.replace(t, name=_AGENT_NAMES[i]) for i, t in enumerate(host_tables)]
        guest_path = _write_table(data_dir / "bank.csv", bank_table)
        modeling = {
            h.name: {
                "enabled": True,
                "allowed_institutions": ["bank"],
                "dataset": str(_write_table(data_dir / f"{h.name}.csv", h)),
                "dir": str(root / "agents" / h.name),
                "allow_insecure": insecure,
            }
            for h in hosts
        }
        with ProcessGroup(root) as group:
            platform = deploy(
                root,
                providers=[h.name for h in hosts],
                institutions=["bank"],
                data_dir=None,
                group=group,
                agent_modeling=modeling,
                node_overrides={"modeling_allow_insecure": insecure, "modeling_step_timeout_seconds": 900.0},
            )
            job = JobFile(
                job_id=config.job_id,
                node=platform.node_address,
                credentials=party_dir(platform.keys_dir, "institution", "bank"),
                providers=tuple(h.name for h in hosts),
                backend=backend,
                labels=guest_path,
                output=root / "bank-model",
                train=config,
                allow_plain=backend == "plain",
                id_column="id",
                label_column="y",
                split_seed=split_seed,
                he_params=he_params,
                timeout_seconds=900.0,
            )
            outcome = train(job)
        shares = {h.name: ModelShare.load(root / "agents" / h.name / config.job_id / "share.json") for h in hosts}
    finally:
        if tmp is not None:
            tmp.cleanup()
    state = outcome.state
    real = ~state.is_decoy
    train_real = state.train_rows[real[state.train_rows]]
    y = np.zeros(len(state.ids))
    assert bank_table.y is not None
    y[real] = bank_table.y[state.bank_rows[real]]
    ref = _sklearn_reference_by_id(
        bank_table,
        hosts,
        shares,
        outcome.bank_share,
        state.ids,
        train_real,
        state.test_rows,
        y[train_real],
        outcome.y_test,
        l2,
    )
    coef = np.r_[list(outcome.bank_share.weights), *[list(shares[h.name].weights) for h in hosts]]
    train_logits = ref["x_train"] @ coef + float(outcome.bank_share.intercept or 0.0)
    m = outcome.metrics
    wire = dict(outcome.wire_bytes)
    sigmoid = outcome.bank_share.sigmoid
    return {
        "mode": "processes",
        "dataset": name,
        "backend": backend,
        "providers": len(hosts),
        "rows_aligned": outcome.rows_aligned,
        "rows_train": outcome.rows_train,
        "rows_test": outcome.rows_test,
        "auc": round(outcome.auc, 6),
        "ks": round(outcome.ks, 6),
        "auc_sklearn": round(ref["auc"], 6),
        "ks_sklearn": round(ref["ks"], 6),
        "delta_auc": round(outcome.auc - ref["auc"], 6),
        "delta_ks": round(outcome.ks - ref["ks"], 6),
        "train_auc": round(metrics.auc(y[train_real], train_logits), 6),
        "train_auc_sklearn": round(ref["train_auc"], 6),
        "aligned_by": "psi",
        "seconds_total": round(outcome.seconds_total, 3),
        "seconds_psi": round(outcome.seconds_psi, 3),
        "seconds_train": round(outcome.seconds_train, 3),
        "seconds_per_epoch": round(statistics.median(outcome.epoch_seconds), 3) if outcome.epoch_seconds else None,
        "seconds_scoring_test": round(outcome.seconds_scoring, 3),
        "seconds_sklearn": round(ref["seconds"], 3),
        "epochs": m.epochs_run,
        "stopped_early": m.stopped_early,
        "bytes_per_party": wire,
        "bytes_bank_client_side": outcome.bank_wire_bytes,
        "config": {
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "momentum": config.momentum,
            "l2": config.l2,
            "sklearn_C": 1.0 / (config.l2 * train_real.size) if config.l2 > 0 else None,
        },
        "sigmoid": {
            k: sigmoid.get(k) for k in ("degree", "radius", "weight_scale", "max_error", "coercive", "loss_mode")
        },
        "guard_levels": {str(k): v for k, v in sorted(m.guard_levels.items())},
        "guard_shrinks": len(m.guard_shrinks),
        "guard_max_bound_sum": round(float(outcome.metadata.get("guard", {}).get("max_bound_sum", 0.0)), 4),
        "max_abs_logit_train": round(float(np.max(np.abs(train_logits))), 3),
        "epoch_losses": [round(v, 6) for v in m.epoch_losses],
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        choices=(*data.DATASETS, *GENERATED),
        default=None,
        help="a dataset from ../shared/data, or fate_shape (generated: 100k rows, bank 30 + one provider 300 features)",
    )
    p.add_argument(
        "--data-dir", type=Path, help="folder holding the shared datasets (default: $XINRONG_DATA_DIR, ../shared/data)"
    )
    p.add_argument("--guest", type=Path, help="bank CSV: id,y,x...")
    p.add_argument("--host", type=Path, action="append", dest="hosts", help="provider CSV: id,x... (repeatable)")
    p.add_argument("--backend", choices=BACKENDS, default="ckks", help="HE backend (default ckks)")
    p.add_argument("--providers", type=int, help="split the host columns across K providers (default 2; fate_shape: 1)")
    p.add_argument("--epochs", type=int, help="epochs (default: the dataset's)")
    p.add_argument("--batch-size", type=int, help="rows per batch (default: the dataset's)")
    p.add_argument("--learning-rate", type=float, help="learning rate (default: the dataset's)")
    p.add_argument("--l2", type=float, default=0.01, help="L2 penalty (default 0.01)")
    p.add_argument("--sigmoid-degree", type=int, default=0, help="0: the highest odd degree the backend evaluates")
    p.add_argument("--patience", type=int, default=0, help="early stopping patience in epochs (0: off)")
    p.add_argument("--no-loss", action="store_true", help="do not compute the encrypted loss")
    p.add_argument(
        "--loss-batches", type=int, default=1, help="encrypted loss on the first k batches per epoch (0: all)"
    )
    p.add_argument("--paillier-bits", type=int, default=2048, help="Paillier modulus bits (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the split and training order")
    p.add_argument("--parallel", action="store_true", help="in-process mode: call providers on threads")
    p.add_argument(
        "--inprocess",
        action="store_true",
        help="one process plays every party (xinrong.tools.federation_job) instead of node + agent processes",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON line")


def main(args: argparse.Namespace) -> int:
    dataset = args.dataset if (args.dataset or args.guest) else "default_credit"

    def progress(epoch: int, m: BankMetrics) -> None:
        if not args.json:
            loss = f"{m.epoch_losses[-1]:.5f}" if m.epoch_losses else "n/a"
            print(f"epoch {epoch}: loss {loss}", flush=True)

    providers = args.providers or (1 if dataset in GENERATED and not args.guest else 2)
    from xinrong.errors import XinrongError
    from xinrong.rpc.errors import RemoteError

    try:
        result = _run_from_args(args, dataset, providers, progress)
    except (RemoteError, XinrongError) as exc:
        # One line, no traceback: the status says which party failed at which step.
        print(f"xinrong bench train: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def _run_from_args(
    args: argparse.Namespace, dataset: str, providers: int, progress: Callable[[int, BankMetrics], None]
) -> dict[str, Any]:
    return run(
        dataset=None if args.guest else dataset,
        backend=args.backend,
        providers=providers,
        guest=args.guest,
        hosts=args.hosts,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        l2=args.l2,
        seed=args.seed,
        sigmoid_degree=args.sigmoid_degree,
        patience=args.patience,
        track_loss=not args.no_loss,
        loss_batches=args.loss_batches,
        parallel=args.parallel,
        paillier_bits=args.paillier_bits,
        progress=progress,
        mode="inprocess" if args.inprocess else "processes",
        data_dir=args.data_dir,
    )


if __name__ == "__main__":  # pragma: no cover - ``python -m xinrong.tools.bench.train`` (spawn-safe entry point)
    _parser = argparse.ArgumentParser(prog="python -m xinrong.tools.bench.train", description=__doc__.split("\n\n")[0])
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
