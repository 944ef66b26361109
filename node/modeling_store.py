"""The node's durable record of modeling jobs and the models they produced.

One row per job id: who ran it with which providers and backend, its state,
why it failed, how many epochs are done and, once it succeeded, the model
metadata ``NodeCoordinator.finish`` returned (party ids, feature *names*
by party, share hashes, losses, guard statistics; never a weight, never a
value). The HE secret key is never stored: it lives in the node's memory for
the job's lifetime only, which is why a node restart fails every unfinished
job for good (``fail_interrupted``) instead of pretending it could resume.

State changes go through ``NodeCore``'s database in the same transaction as
their audit entry.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from typing import Any

from xinrong.node.db import Transaction

# Tables: schema steps in xinrong.node.migrations.

CREATED = "CREATED"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
STATES = (CREATED, RUNNING, SUCCEEDED, FAILED)

RESTARTED_REASON = (
    "the node restarted while the job was unfinished: its HE secret key lived only in the node's memory, "
    "so the job cannot resume; run `xinrong model train` without --resume to start it again from scratch"
)

_COLUMNS = (
    "job_id, institution, providers, backend, state, failure_reason, epochs_done, created_ms, updated_ms, metadata"
)


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    institution: str
    providers: tuple[str, ...]
    backend: str
    state: str
    failure_reason: str
    epochs_done: int
    created_ms: int
    updated_ms: int
    metadata: dict[str, Any] | None = None

    def with_state(
        self,
        state: str,
        now_ms: int,
        *,
        reason: str = "",
        epochs_done: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> JobRecord:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        return replace(
            self,
            state=state,
            failure_reason=reason if state == FAILED else "",
            epochs_done=self.epochs_done if epochs_done is None else epochs_done,
            updated_ms=now_ms,
            metadata=metadata if metadata is not None else self.metadata,
        )

    def to_json(self) -> dict[str, Any]:
        """What ``xinrong node models list`` prints: metadata only."""
        out: dict[str, Any] = {
            "job_id": self.job_id,
            "institution": self.institution,
            "providers": list(self.providers),
            "backend": self.backend,
            "state": self.state,
            "epochs_done": self.epochs_done,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
        }
        if self.failure_reason:
            out["failure_reason"] = self.failure_reason
        if self.metadata is not None:
            out["model"] = self.metadata
        return out


def _row(row: tuple[Any, ...]) -> JobRecord:
    job_id, inst, providers, backend, state, reason, epochs, created, updated, metadata = row
    return JobRecord(
        job_id=str(job_id),
        institution=str(inst),
        providers=tuple(json.loads(providers)),
        backend=str(backend),
        state=str(state),
        failure_reason=str(reason),
        epochs_done=int(epochs),
        created_ms=int(created),
        updated_ms=int(updated),
        metadata=None if metadata is None else json.loads(metadata),
    )


def save(tx: Transaction, record: JobRecord) -> None:
    """Insert or replace a job's row (inside the caller's transaction)."""
    tx.execute(
        f"INSERT INTO modeling_jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (job_id) DO UPDATE SET institution = excluded.institution, providers = excluded.providers, "
        "backend = excluded.backend, state = excluded.state, failure_reason = excluded.failure_reason, "
        "epochs_done = excluded.epochs_done, created_ms = excluded.created_ms, updated_ms = excluded.updated_ms, "
        "metadata = excluded.metadata",
        (
            record.job_id,
            record.institution,
            json.dumps(list(record.providers)),
            record.backend,
            record.state,
            record.failure_reason,
            record.epochs_done,
            record.created_ms,
            record.updated_ms,
            None if record.metadata is None else json.dumps(record.metadata, sort_keys=True, allow_nan=False),
        ),
    )


def get(query: Any, job_id: str) -> JobRecord | None:
    """``query`` is ``Database.query`` (or a read-only connection's execute)."""
    rows = list(query(f"SELECT {_COLUMNS} FROM modeling_jobs WHERE job_id = ?", (job_id,)))
    return _row(rows[0]) if rows else None


def unfinished(query: Any) -> list[JobRecord]:
    rows = query(f"SELECT {_COLUMNS} FROM modeling_jobs WHERE state IN (?, ?) ORDER BY created_ms", (CREATED, RUNNING))
    return [_row(r) for r in rows]


def list_jobs(conn: Any) -> list[JobRecord]:
    """Every job, oldest first (read-only operator tools; a sqlite3 or psycopg connection)."""
    try:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM modeling_jobs ORDER BY created_ms, job_id").fetchall()
    except sqlite3.OperationalError:  # a database from before modeling existed
        return []
    return [_row(r) for r in rows]
