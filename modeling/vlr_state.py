"""Each party's durable state: checkpoints and the final model share.

A party's checkpoint and model share hold *its own* weights and
preprocessing, written on *its own* disk; nothing here is ever sent. Two
rules make a crash harmless:

* every file is written to a temporary name in the same directory, flushed,
  fsynced and renamed over the target (``os.replace`` is atomic on POSIX),
  then the directory is fsynced, so a reader sees the old file or the new
  one, never half of one;
* no pickle: checkpoints are ``np.savez`` archives of numeric arrays plus a
  JSON document stored as a uint8 array, read back with
  ``allow_pickle=False``; model shares are JSON.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xinrong.errors import ValidationError
from xinrong.modeling.preprocess import ColumnTransform

FloatArray = npt.NDArray[np.float64]
SHARE_FORMAT = "xinrong.vlr.model_share/1"
CHECKPOINT_FORMAT = "xinrong.vlr.checkpoint/1"
_CHECKPOINT_RE = re.compile(r"^(?P<party>[A-Za-z0-9._-]+)\.epoch(?P<epoch>\d{5})\.npz$")
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class IdError(ValidationError, ValueError):
    """A refused id: INVALID_ARGUMENT at an RPC boundary (a caller chose it), and
    still a ValueError for local callers (job files, checkpoints)."""


def check_id(value: str, what: str = "id") -> str:
    """Ids end up in file names: refuse anything that could escape a directory.

    ``fullmatch``: ``$`` would accept a trailing newline. The message shows at
    most the id's first characters: a caller may send megabytes.
    """
    if _SAFE_ID.fullmatch(value) is None or value in (".", ".."):
        shown = value if len(value) <= 40 else value[:40] + f"... ({len(value)} characters)"
        raise IdError(f"{what} {shown!r} must be 1-128 characters of [A-Za-z0-9._-]")
    return value


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int = 0o600) -> Path:
    """Write data to path atomically: temp file in the same directory, fsync, rename, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def save_checkpoint(
    directory: str | Path, party_id: str, epoch: int, arrays: dict[str, FloatArray], meta: dict[str, Any]
) -> Path:
    """Write ``<party>.epoch<NNNNN>.npz`` atomically; ``epoch`` = epochs completed."""
    check_id(party_id, "party id")
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    if "meta_json" in arrays:
        raise ValueError("'meta_json' is reserved")
    body = dict(meta, format=CHECKPOINT_FORMAT, party_id=party_id, epoch=epoch)
    payload: dict[str, npt.NDArray[Any]] = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    payload["meta_json"] = np.frombuffer(json.dumps(body, sort_keys=True, allow_nan=False).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **payload)  # type: ignore[arg-type]
    return atomic_write_bytes(Path(directory) / f"{party_id}.epoch{epoch:05d}.npz", buf.getvalue())


def load_checkpoint(path: str | Path) -> tuple[dict[str, FloatArray], dict[str, Any]]:
    with np.load(Path(path), allow_pickle=False) as data:
        arrays = {k: np.array(data[k]) for k in data.files}
    raw = arrays.pop("meta_json", None)
    if raw is None:
        raise ValueError(f"{path} is not a checkpoint")
    meta = json.loads(raw.astype(np.uint8).tobytes())
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint of this format")
    return arrays, meta


def checkpoint_epochs(directory: str | Path, party_id: str) -> list[int]:
    """Epochs (completed) for which this party has a checkpoint, ascending."""
    d = Path(directory)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _CHECKPOINT_RE.match(p.name)
        if m and m.group("party") == party_id:
            out.append(int(m.group("epoch")))
    return sorted(out)


def checkpoint_path(directory: str | Path, party_id: str, epoch: int) -> Path:
    return Path(directory) / f"{check_id(party_id, 'party id')}.epoch{epoch:05d}.npz"


def prune_checkpoints(directory: str | Path, party_id: str, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints: an older one is what a resume falls back to."""
    epochs = checkpoint_epochs(directory, party_id)
    for e in epochs[: max(0, len(epochs) - keep)]:
        checkpoint_path(directory, party_id, e).unlink(missing_ok=True)


@dataclass(frozen=True)
class ModelShare:
    """One party's part of a trained model: what it needs to score, and nothing else.

    ``weights`` apply to ``transform.apply(raw)`` columns (``feature_names``);
    only the bank's share has an intercept. Scoring adds the parties' partial
    scores under the bank's key; nobody else ever sees this file.
    """

    job_id: str
    party_id: str
    role: str  # "bank" | "provider"
    feature_names: tuple[str, ...]
    transform: ColumnTransform
    weights: tuple[float, ...]
    intercept: float | None
    epochs: int
    sigmoid: dict[str, Any]

    def __post_init__(self) -> None:
        if self.role not in ("bank", "provider"):
            raise ValueError("role must be 'bank' or 'provider'")
        if len(self.weights) != len(self.feature_names):
            raise ValueError("weights and feature names differ in length")
        if self.transform.output_names() != self.feature_names:
            raise ValueError("feature names do not match the transform's outputs")
        if (self.intercept is not None) != (self.role == "bank"):
            raise ValueError("exactly the bank's share carries the intercept")

    def partial_scores(self, x_raw: npt.ArrayLike) -> FloatArray:
        """This party's contribution to the logit of each row (plus the intercept for the bank)."""
        out: FloatArray = self.transform.apply(x_raw) @ np.asarray(self.weights, dtype=np.float64)
        if self.intercept is not None:
            out = out + self.intercept
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": SHARE_FORMAT,
                "job_id": self.job_id,
                "party_id": self.party_id,
                "role": self.role,
                "feature_names": list(self.feature_names),
                "transform": self.transform.to_dict(),
                "weights": list(self.weights),
                "intercept": self.intercept,
                "epochs": self.epochs,
                "sigmoid": self.sigmoid,
            },
            sort_keys=True,
            indent=1,
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str) -> ModelShare:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != SHARE_FORMAT:
            raise ValueError("not a model share of this format")
        intercept = data.get("intercept")
        return cls(
            job_id=str(data["job_id"]),
            party_id=str(data["party_id"]),
            role=str(data["role"]),
            feature_names=tuple(str(n) for n in data["feature_names"]),
            transform=ColumnTransform.from_dict(data["transform"]),
            weights=tuple(float(w) for w in data["weights"]),
            intercept=None if intercept is None else float(intercept),
            epochs=int(data["epochs"]),
            sigmoid=dict(data["sigmoid"]),
        )

    def save(self, path: str | Path) -> Path:
        return atomic_write_bytes(path, self.to_json().encode())

    @classmethod
    def load(cls, path: str | Path) -> ModelShare:
        return cls.from_json(Path(path).read_text())
