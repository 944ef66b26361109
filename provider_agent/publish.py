"""``xinrong agent publish``: push the active period's public (aggregate-mode) fields to the node.

Only the catalog's aggregate-mode columns of the provider are ever read from
the store into a batch (and the node refuses any other field again), so a
non-public value cannot leave the agent this way.

Incremental: the agent remembers, per enterprise, a digest of what the node
acknowledged (``<db>.publish.json``, next to the data file) and sends only
enterprises whose public values changed, plus ``null`` for enterprises that
left the period. Idempotent: the planned batches are written to that file
*before* they are sent and re-sent first on the next run, so a run that died
between the node's commit and the agent's bookkeeping is finished by the
next one (the node answers ALREADY_APPLIED), not applied twice. If the node's
version is not the one the agent remembers (a fresh node, a lost state
file), the agent sends everything with ``replace`` set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from xinrong.catalog import Catalog
from xinrong.errors import Reason, XinrongError
from xinrong.keys.signing import SigningKey
from xinrong.provider_agent.config import AgentSetup
from xinrong.public import PublicBatch, PublicRecord, Value, canonical_json, field_value, sign_batch
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import RemoteError, decode_rpc_error
from xinrong.v1 import public_pb2, public_pb2_grpc

log = logging.getLogger(__name__)

# Enterprises per batch: ~400 KB of canonical JSON for the market provider.
CHUNK_RECORDS = 1000


@dataclass
class PublishReport:
    provider: str
    period: str
    outcome: str  # "published" | "unchanged" | "nothing_imported"
    batches: int = 0
    applied: int = 0
    already_applied: int = 0
    records_sent: int = 0
    records_changed: int = 0
    version: int = 0
    replace: bool = False
    fields: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def state_path(db: Path) -> Path:
    return db.with_name(f"{db.stem}.publish.json")


def _digest(values: dict[str, Value]) -> str:
    return hashlib.sha256(canonical_json(values)).hexdigest()[:32]


def public_view(db: Path, catalog: Catalog, provider: str) -> tuple[str, dict[str, dict[str, Value]]]:
    """The active period's as-of date and, per enterprise, its aggregate-mode values (blanks left out)."""
    specs = catalog.aggregate_fields(provider)
    conn = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")  # one snapshot of period and records
        row = conn.execute("SELECT id, as_of, columns FROM periods WHERE active = 1").fetchone()
        if row is None:
            return "", {}
        period_id, as_of = int(row[0]), str(row[1])
        stored = {name: i for i, name in enumerate(json.loads(str(row[2])))}
        wanted = [(s, stored[s.column]) for s in specs if s.column in stored]
        view: dict[str, dict[str, Value]] = {}
        for uscc, data in conn.execute(
            "SELECT uscc, data FROM records WHERE period_id = ? ORDER BY uscc", (period_id,)
        ):
            cells = json.loads(data)
            values: dict[str, Value] = {}
            for spec, pos in wanted:
                cell = cells[pos] if pos < len(cells) else None
                if cell is not None:
                    values[spec.key] = field_value(spec, cell)
            view[str(uscc)] = values
        conn.execute("COMMIT")
        return as_of, view
    finally:
        conn.close()


def _load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"node_version": 0, "digests": {}, "pending": []}
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a publish state file")
    return doc


def _save_state(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def plan(
    key: SigningKey,
    provider: str,
    period: str,
    view: dict[str, dict[str, Value]],
    acked: dict[str, str],
    *,
    base_version: int,
    replace: bool,
) -> list[tuple[bytes, bytes]]:
    """Signed batches carrying what changed since ``acked`` (everything when ``replace``)."""
    records: list[PublicRecord] = []
    for uscc in sorted(set(view) | set(acked)):
        values = view.get(uscc)
        if values is None:
            if not replace:
                records.append(PublicRecord(uscc, None))
        elif replace or acked.get(uscc) != _digest(values):
            records.append(PublicRecord(uscc, values))
    batches = []
    version = base_version
    for start in range(0, max(len(records), 1 if replace else 0), CHUNK_RECORDS):
        chunk = tuple(records[start : start + CHUNK_RECORDS])
        batch = PublicBatch(
            provider=provider,
            period=period,
            version=version + 1,
            base_version=version,
            records=chunk,
            replace=replace and start == 0,
        )
        batches.append(sign_batch(key, batch))
        version += 1
    return batches


def publish(setup: AgentSetup, node: str) -> PublishReport:
    """Plan, persist, send, acknowledge; returns what happened (for ``--json``).

    Pending batches the node no longer fits (it was reset, or another copy of
    this agent published meanwhile) are dropped once and everything is sent
    again on top of the node's version.
    """
    try:
        return _publish(setup, node)
    except RemoteError as exc:
        path = state_path(Path(setup.config.db))
        if exc.reason != Reason.FAILED_PRECONDITION.value or not path.exists():
            raise
        log.warning("the node refused the pending batches (%s); resending everything", exc.message)
        path.unlink()
        return _publish(setup, node)


def _publish(setup: AgentSetup, node: str) -> PublishReport:
    cfg = setup.config
    provider = cfg.provider
    if not setup.catalog.aggregate_fields(provider):
        raise XinrongError(f"provider {provider} holds no aggregate-mode field: nothing is public")
    path = state_path(Path(cfg.db))
    state = _load_state(path)
    period, view = public_view(Path(cfg.db), setup.catalog, provider)
    report = PublishReport(
        provider=provider,
        period=period,
        outcome="published",
        fields=[s.key for s in setup.catalog.aggregate_fields(provider)],
    )
    channel = secure_channel(node, setup.credentials, server_role="node", server_id=cfg.node_id)
    try:
        stub = public_pb2_grpc.PublicServiceStub(channel)

        def call(method: str, request: Any) -> Any:
            try:
                return getattr(stub, method)(request, timeout=60)
            except grpc.RpcError as err:
                raise decode_rpc_error(err) from None

        pending = state.get("pending") or []
        if not pending:
            if not period:
                report.outcome = "nothing_imported"
                return report
            node_version = int(call("GetPublishState", public_pb2.GetPublishStateRequest()).version)
            replace = node_version != int(state.get("node_version", 0)) or (
                node_version == 0 and bool(state.get("digests"))
            )
            acked = {} if replace else dict(state.get("digests", {}))
            batches = plan(
                setup.credentials.signing_key,
                provider,
                period,
                view,
                acked,
                base_version=node_version,
                replace=replace and node_version > 0,
            )
            report.replace = replace and node_version > 0
            if not batches:
                report.outcome = "unchanged"
                report.version = node_version
                return report
            target = {uscc: _digest(values) for uscc, values in view.items()}
            pending = [
                {"batch": base64.b64encode(raw).decode(), "signature": base64.b64encode(sig).decode()}
                for raw, sig in batches
            ]
            state = {
                "node_version": node_version,
                "digests": state.get("digests", {}),
                "pending": pending,
                "target": target,
            }
            _save_state(path, state)  # before sending: a crash is finished by the next run
        for item in pending:
            raw, sig = base64.b64decode(item["batch"]), base64.b64decode(item["signature"])
            resp = call("PublishRecords", public_pb2.PublishRecordsRequest(batch=raw, signature=sig))
            report.batches += 1
            report.records_sent += len(json.loads(raw)["records"])
            report.records_changed += int(resp.records_changed)
            report.version = int(resp.version)
            if resp.outcome == public_pb2.PUBLISH_OUTCOME_ALREADY_APPLIED:
                report.already_applied += 1
            else:
                report.applied += 1
        _save_state(path, {"node_version": report.version, "digests": state.get("target", {}), "pending": []})
        if report.applied == 0 and report.already_applied:
            report.outcome = "already_applied"
        log.info(
            "published %s period %s: %d batches (%d already applied), %d changes, node version %d",
            provider,
            period,
            report.batches,
            report.already_applied,
            report.records_changed,
            report.version,
        )
        return report
    finally:
        channel.close()


__all__ = ["CHUNK_RECORDS", "PublishReport", "plan", "public_view", "publish", "state_path"]
