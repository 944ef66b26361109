"""What the bank keeps of an aligned job on its own disk, so ``--resume`` can rebuild it after a crash.

Under the job's output directory, ``.state/``: the alignment (its own ids in
the canonical order, decoy flags, the train/test split, a hash of the label
file), the ``JobStart`` it sent and (``BankParty``) its checkpoints. JSON
and raw message bytes; no pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from xinrong.modeling.vlr_state import atomic_write_bytes

IntArray = npt.NDArray[np.int64]

STATE_FORMAT = "xinrong.bank.job_state/1"


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
