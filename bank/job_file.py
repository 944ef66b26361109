"""The bank's ``job.toml``: one training job, validated when it is read.

Sections ``[job]`` (id, node, credentials, providers, backend, output),
``[data]`` (the label CSV and its columns, split, decoys), ``[train]``
(``xinrong.modeling.vlr.config.TrainConfig`` fields) and ``[he]`` (backend
parameters, checked by the node). Unknown keys are refused; relative paths
resolve against the file's directory.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xinrong.modeling.vlr.config import TrainConfig
from xinrong.modeling.vlr_state import check_id

BACKENDS = ("ckks", "paillier", "plain")


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
