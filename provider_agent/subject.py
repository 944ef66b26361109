"""The enterprise's rights at the agent: its own data, objections, repairs, consent pauses.

What lives here, in a SQLite file of its own next to the state store
(``<state_db>.subject.db``; private, 0600), so the serving state's one-writer
discipline is untouched and ``xinrong agent objections|repairs`` (run by the
provider's operator while the agent serves) can write it too:

* **cases** (objections 异议申诉 and repair applications 信用修复), filed by
  the enterprise (signed by it, sealed to this provider, the node relays),
  with every step in ``case_events``;
* **pauses**: the newest enterprise-signed pause / resume per consent;
* **subject_log**: one entry per step (query answered, case filed,
  resolved, approved, pause applied), metadata only, never a value.

The answering path (``ProviderAgent``) reads an in-memory ``SubjectView``:
which (enterprise, field) pairs are disputed, which are repaired (with the
value hash they were approved on) and which consents are paused. The view
is reloaded whenever the file changed (``PRAGMA data_version``, one cheap
statement, at most once a millisecond), so a resolution written by the CLI
applies to every answer begun a millisecond later.

Repair semantics (chosen, documented in docs/THREAT_MODEL.md): from the
effective date on, a repaired item answers as NO_DATA in verdicts and
indicators (the value is not disclosed, and NO_DATA is what a bank already
sees for any absent value, so the repair leaves no distinguishable trace),
for as long as the stored value is the one the repair was approved on; a
re-import that changes the value (say, arrears paid and the flag now
false) discloses the new value normally.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from xinrong import subject as subj
from xinrong.catalog import Catalog, FieldSpec
from xinrong.claims import format_decimal
from xinrong.errors import ConsentError, ProviderUnavailable, Reason, ValidationError, XinrongError
from xinrong.keys.binding import VerifiedBinding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.layout import PartyCredentials
from xinrong.provider_agent.store import DataStore
from xinrong.statefiles import prepare_private
from xinrong.v1 import common_pb2, subject_pb2

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_DAYS = 5.0
VIEW_RECHECK_SECONDS = 0.001

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
  case_id TEXT PRIMARY KEY,
  kind INTEGER NOT NULL,
  enterprise TEXT NOT NULL,
  field TEXT NOT NULL,
  statement TEXT NOT NULL,
  evidence BLOB NOT NULL,
  evidence_name TEXT NOT NULL,
  state INTEGER NOT NULL,
  filed_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  effective_date TEXT NOT NULL DEFAULT '',
  value_sha256 TEXT NOT NULL DEFAULT '',
  filing BLOB NOT NULL,
  signature BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_by_enterprise ON cases(enterprise);
CREATE TABLE IF NOT EXISTS case_events (
  id INTEGER PRIMARY KEY,
  case_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  state INTEGER NOT NULL,
  note TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS case_events_by_case ON case_events(case_id);
CREATE TABLE IF NOT EXISTS pauses (
  consent_id TEXT NOT NULL,
  enterprise TEXT NOT NULL,
  paused INTEGER NOT NULL,
  signed_at_ms INTEGER NOT NULL,
  change BLOB NOT NULL,
  signature BLOB NOT NULL,
  PRIMARY KEY (consent_id, enterprise)
);
CREATE TABLE IF NOT EXISTS seen_queries (
  request_id TEXT PRIMARY KEY,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS subject_log (
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,
  action TEXT NOT NULL,
  enterprise TEXT NOT NULL,
  ref TEXT NOT NULL,
  field TEXT NOT NULL,
  detail TEXT NOT NULL
);
"""

OPEN = subject_pb2.CASE_STATE_OPEN
CORRECTED = subject_pb2.CASE_STATE_CORRECTED
REJECTED = subject_pb2.CASE_STATE_REJECTED
APPROVED = subject_pb2.CASE_STATE_APPROVED
OBJECTION = subject_pb2.CASE_KIND_OBJECTION
REPAIR = subject_pb2.CASE_KIND_REPAIR


def subject_db_path(state_db: Path) -> Path:
    return state_db.with_name(f"{state_db.name}.subject.db")


def cell_sha256(cell: object) -> str:
    """Hash of one stored JSON cell, to tell whether a repaired value was re-imported since."""
    return hashlib.sha256(json.dumps(cell, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SubjectView:
    """What the answering path needs, as immutable sets (swapped whole on reload)."""

    disputed: frozenset[tuple[str, str]] = frozenset()
    repaired: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # -> (effective date, value hash)
    paused: frozenset[tuple[str, str]] = frozenset()

    def hidden(self, enterprise: str, key: str, cell: object, today: str) -> bool:
        entry = self.repaired.get((enterprise, key))
        return entry is not None and today >= entry[0] and cell_sha256(cell) == entry[1]


@dataclass(frozen=True)
class Case:
    case_id: str
    kind: int
    enterprise: str
    field: str
    statement: str
    evidence_bytes: int
    state: int
    filed_at: int
    updated_at: int
    reason: str
    effective_date: str
    overdue: bool
    history: tuple[tuple[int, int, str], ...]

    def summary(self) -> dict[str, object]:
        """For the provider's CLI: no evidence bytes, the enterprise's statement is its own text."""
        return {
            "id": self.case_id,
            "kind": subject_pb2.CaseKind.Name(self.kind).removeprefix("CASE_KIND_").lower(),
            "enterprise": self.enterprise,
            "field": self.field,
            "statement": self.statement,
            "evidence_bytes": self.evidence_bytes,
            "state": subject_pb2.CaseState.Name(self.state).removeprefix("CASE_STATE_").lower(),
            "filed_at": self.filed_at,
            "updated_at": self.updated_at,
            "reason": self.reason,
            "effective_date": self.effective_date,
            "overdue": self.overdue,
        }


class SubjectStore:
    """The agent's subject-rights file (see the module docstring)."""

    def __init__(self, path: str | Path, *, deadline_days: float = DEFAULT_DEADLINE_DAYS) -> None:
        self.path = prepare_private(path, "agent subject store", create_dir=True)
        self.deadline_seconds = int(deadline_days * 86400)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        # A second connection only to notice commits of any other connection (the CLI, or ours).
        self._watch = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._version = -1
        self._view = SubjectView()
        self._checked = -1.0

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._watch.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _log(
        self, conn: sqlite3.Connection, at: int, action: str, enterprise: str, ref: str, fld: str, detail: str
    ) -> None:
        conn.execute(
            "INSERT INTO subject_log(at, action, enterprise, ref, field, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (at, action, enterprise, ref, fld, detail),
        )

    # -- the view the answering path reads ------------------------------------

    def view(self) -> SubjectView:
        """The current view; the file is looked at no more than once a millisecond (a request
        asks twice), so a change is seen by every answer begun a millisecond after its commit."""
        now = time.monotonic()
        if now - self._checked < VIEW_RECHECK_SECONDS:
            return self._view
        with self._lock:
            version = int(self._watch.execute("PRAGMA data_version").fetchone()[0])
            if version != self._version:
                self._version = version
                self._view = self._load_view()
            self._checked = now
            return self._view

    def _load_view(self) -> SubjectView:
        c = self._watch
        disputed = frozenset(
            (str(e), str(f))
            for e, f in c.execute("SELECT enterprise, field FROM cases WHERE kind = ? AND state = ?", (OBJECTION, OPEN))
        )
        repaired = {
            (str(e), str(f)): (str(d), str(h))
            for e, f, d, h in c.execute(
                "SELECT enterprise, field, effective_date, value_sha256 FROM cases WHERE kind = ? AND state = ?",
                (REPAIR, APPROVED),
            )
        }
        paused = frozenset(
            (str(cid), str(e)) for cid, e in c.execute("SELECT consent_id, enterprise FROM pauses WHERE paused = 1")
        )
        return SubjectView(disputed=disputed, repaired=repaired, paused=paused)

    # -- writes from the serving agent ------------------------------------------

    def seen(self, request_id: str, now: int) -> bool:
        """Record a subject query's id; True if it was seen before (a replay)."""
        with self._tx() as conn:
            try:
                conn.execute("INSERT INTO seen_queries(request_id, at) VALUES (?, ?)", (request_id, now))
            except sqlite3.IntegrityError:
                return True
            self._log(conn, now, "query", "", request_id, "", "")
        return False

    def prune_seen(self, older_than: int) -> int:
        """Forget subject-query ids the freshness check refuses anyway."""
        with self._tx() as conn:
            return int(conn.execute("DELETE FROM seen_queries WHERE at < ?", (older_than,)).rowcount)

    def log(self, now: int, action: str, enterprise: str, ref: str, fld: str = "", detail: str = "") -> None:
        with self._tx() as conn:
            self._log(conn, now, action, enterprise, ref, fld, detail)

    def add_case(self, filing: subject_pb2.CaseFiling, signed: subject_pb2.SignedCaseFiling, now: int) -> bool:
        """Store a new case; the same case id again is a no-op (False)."""
        with self._tx() as conn:
            row = conn.execute("SELECT filing FROM cases WHERE case_id = ?", (filing.case_id,)).fetchone()
            if row is not None:
                if bytes(row[0]) != signed.filing:
                    raise XinrongError("case id filed with other content", reason=Reason.FAILED_PRECONDITION)
                return False
            conn.execute(
                "INSERT INTO cases(case_id, kind, enterprise, field, statement, evidence, evidence_name, state, "
                "filed_at, updated_at, filing, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    filing.case_id,
                    int(filing.kind),
                    filing.enterprise_uscc,
                    filing.field,
                    filing.statement,
                    filing.evidence,
                    filing.evidence_name,
                    OPEN,
                    now,
                    now,
                    signed.filing,
                    signed.signature,
                ),
            )
            conn.execute(
                "INSERT INTO case_events(case_id, at, state, note) VALUES (?, ?, ?, 'filed')",
                (filing.case_id, now, OPEN),
            )
            self._log(conn, now, "case_filed", filing.enterprise_uscc, filing.case_id, filing.field, str(filing.kind))
        return True

    def set_pause(
        self, change: subject_pb2.ConsentStateChange, signed: subject_pb2.SignedConsentStateChange, now: int
    ) -> bool:
        """Apply a pause / resume unless a newer one (by signed_at) is held; returns whether paused."""
        paused = change.action == subject_pb2.CONSENT_ACTION_PAUSE
        with self._tx() as conn:
            row = conn.execute(
                "SELECT paused, signed_at_ms FROM pauses WHERE consent_id = ? AND enterprise = ?",
                (change.consent_id, change.enterprise_uscc),
            ).fetchone()
            if row is not None and int(row[1]) > change.signed_at_ms:
                return bool(row[0])
            conn.execute(
                "INSERT INTO pauses(consent_id, enterprise, paused, signed_at_ms, change, signature) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(consent_id, enterprise) DO UPDATE SET paused = excluded.paused, "
                "signed_at_ms = excluded.signed_at_ms, change = excluded.change, signature = excluded.signature",
                (
                    change.consent_id,
                    change.enterprise_uscc,
                    int(paused),
                    change.signed_at_ms,
                    signed.change,
                    signed.signature,
                ),
            )
            self._log(conn, now, "pause" if paused else "resume", change.enterprise_uscc, change.consent_id, "", "")
        return paused

    # -- the provider's operator (CLI) --------------------------------------------

    def cases(self, *, enterprise: str | None = None, kind: int | None = None, now: float | None = None) -> list[Case]:
        now_i = int(time.time() if now is None else now)
        sql = (
            "SELECT case_id, kind, enterprise, field, statement, length(evidence), state, filed_at, updated_at, "
            "reason, effective_date FROM cases WHERE 1 = 1"
        )
        params: list[object] = []
        if enterprise is not None:
            sql += " AND enterprise = ?"
            params.append(enterprise)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY filed_at, case_id", params).fetchall()
            events: dict[str, list[tuple[int, int, str]]] = {}
            for cid, at, state, note in self._conn.execute(
                "SELECT case_id, at, state, note FROM case_events ORDER BY id"
            ):
                events.setdefault(str(cid), []).append((int(at), int(state), str(note)))
        return [
            Case(
                case_id=str(r[0]),
                kind=int(r[1]),
                enterprise=str(r[2]),
                field=str(r[3]),
                statement=str(r[4]),
                evidence_bytes=int(r[5]),
                state=int(r[6]),
                filed_at=int(r[7]),
                updated_at=int(r[8]),
                reason=str(r[9]),
                effective_date=str(r[10]),
                overdue=int(r[6]) == OPEN and now_i - int(r[7]) > self.deadline_seconds,
                history=tuple(events.get(str(r[0]), ())),
            )
            for r in rows
        ]

    def resolve(
        self,
        case_id: str,
        *,
        kind: int,
        state: int,
        reason: str = "",
        effective_date: str = "",
        value_sha256: str = "",
        now: float | None = None,
    ) -> Case:
        """Close an open case of ``kind``: CORRECTED / REJECTED (objection), APPROVED / REJECTED (repair)."""
        now_i = int(time.time() if now is None else now)
        with self._tx() as conn:
            row = conn.execute(
                "SELECT kind, state, enterprise, field FROM cases WHERE case_id = ?", (case_id,)
            ).fetchone()
            if row is None or int(row[0]) != kind:
                raise ValidationError(f"no {_name(subject_pb2.CaseKind, kind)} case with id {case_id}")
            if int(row[1]) != OPEN:
                raise ValidationError(f"case {case_id} is already {_name(subject_pb2.CaseState, int(row[1]))}")
            conn.execute(
                "UPDATE cases SET state = ?, updated_at = ?, reason = ?, effective_date = ?, value_sha256 = ? "
                "WHERE case_id = ?",
                (state, now_i, reason, effective_date, value_sha256, case_id),
            )
            note = reason or subject_pb2.CaseState.Name(state).removeprefix("CASE_STATE_").lower()
            conn.execute(
                "INSERT INTO case_events(case_id, at, state, note) VALUES (?, ?, ?, ?)", (case_id, now_i, state, note)
            )
            self._log(conn, now_i, "case_" + _name(subject_pb2.CaseState, state), str(row[2]), case_id, str(row[3]), "")
        return next(c for c in self.cases(now=now_i) if c.case_id == case_id)

    def overdue(self, now: float | None = None) -> int:
        return sum(1 for c in self.cases(now=now) if c.overdue)

    def export_case(self, case_id: str, *, kind: int, out_dir: Path, now: float | None = None) -> dict[str, Any]:
        """Write a case's evidence file and its manifest into ``out_dir`` (private files, never overwritten).

        The provider reviews the evidence outside the agent. The manifest
        (``<case_id>.json``) carries the enterprise's signed filing as stored
        (base64 ``filing`` and ``signature``, which cover the evidence bytes),
        so the export can be checked against the enterprise's key later;
        the evidence file's name is the case id plus the filed name reduced
        to safe characters. The export is a step in ``subject_log``.
        """
        now_i = int(time.time() if now is None else now)
        with self._lock:
            row = self._conn.execute(
                "SELECT kind, enterprise, field, statement, evidence, evidence_name, state, filing, signature "
                "FROM cases WHERE case_id = ?",
                (case_id,),
            ).fetchone()
        if row is None or int(row[0]) != kind:
            raise ValidationError(f"no {_name(subject_pb2.CaseKind, kind)} case with id {case_id}")
        evidence = bytes(row[4])
        out_dir.mkdir(parents=True, exist_ok=True)
        evidence_path = out_dir / f"{case_id}-{_safe_name(str(row[5]))}" if evidence else None
        manifest = {
            "case_id": case_id,
            "kind": _name(subject_pb2.CaseKind, kind),
            "enterprise": str(row[1]),
            "field": str(row[2]),
            "statement": str(row[3]),
            "state": _name(subject_pb2.CaseState, int(row[6])),
            "evidence_name": str(row[5]),
            "evidence_file": evidence_path.name if evidence_path else "",
            "evidence_bytes": len(evidence),
            "evidence_sha256": hashlib.sha256(evidence).hexdigest() if evidence else "",
            "filing": base64.b64encode(bytes(row[7])).decode(),
            "signature": base64.b64encode(bytes(row[8])).decode(),
        }
        manifest_path = out_dir / f"{case_id}.json"
        if evidence_path is not None:
            _write_new(evidence_path, evidence)
        _write_new(manifest_path, (json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode())
        with self._tx() as conn:
            self._log(conn, now_i, "case_evidence_exported", str(row[1]), case_id, str(row[2]), "")
        return {**manifest, "manifest_file": str(manifest_path), "out_dir": str(out_dir)}

    def subject_log(self) -> list[tuple[int, str, str, str, str]]:
        with self._lock:
            return [
                (int(a), str(b), str(c), str(d), str(e))
                for a, b, c, d, e in self._conn.execute(
                    "SELECT at, action, enterprise, ref, field FROM subject_log ORDER BY id"
                )
            ]


def _name(enum: Any, value: int) -> str:
    """CASE_STATE_OPEN -> open."""
    name: str = enum.Name(value)
    return name.split("_", 2)[2].lower()


def _text(spec: FieldSpec, cell: object) -> tuple[str, bool]:
    if cell is None:
        return "", False
    if isinstance(cell, bool):
        return ("true" if cell else "false"), True
    if spec.numeric and isinstance(cell, (int, str)):
        return format_decimal(Decimal(cell)), True
    return str(cell), True


class SubjectDesk:
    """The agent's subject-rights use cases, called by ``AgentSubjectServicer`` (node only)."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        provider: str,
        credentials: PartyCredentials,
        data: DataStore,
        store: SubjectStore,
        max_clock_skew_seconds: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if credentials.sealing_key is None:
            raise ValidationError("the provider's credentials have no sealing key (cases are sealed to it)")
        self.catalog = catalog
        self.provider = provider
        self._credentials = credentials
        self._ca: CaVerifier = credentials.ca
        self._data = data
        self.store = store
        self._skew = max_clock_skew_seconds
        self._clock = clock

    def _check(
        self, query: subject_pb2.SignedSubjectQuery, binding: common_pb2.SignedPartyBinding, now: float
    ) -> tuple[subject_pb2.SubjectQuery, VerifiedBinding]:
        enterprise = subj.verify_enterprise(self._ca, binding, now=now)
        parsed = subj.verify_query(query, enterprise, now=now, max_skew=self._skew)
        if self.store.seen(parsed.request_id, int(now)):
            raise ValidationError("request id seen before", reason=Reason.REQUEST_REPLAYED)
        return parsed, enterprise

    def report(
        self, query: subject_pb2.SignedSubjectQuery, binding: common_pb2.SignedPartyBinding
    ) -> common_pb2.SealedBox:
        """Every field held on the enterprise, raw, with status and its cases; signed, padded, sealed to it."""
        now = self._clock()
        parsed, verified = self._check(query, binding, now)
        enterprise = verified.party_id
        sealing_raw = verified.sealing_public_raw
        if len(sealing_raw) != 32:
            raise ValidationError("the enterprise's binding has no sealing key: re-run `xinrong enterprise keygen`")
        lookup = self._data.lookup(enterprise, "0000-01-01", "9999-12-31")
        if lookup is None:
            raise ProviderUnavailable("no data period imported yet")
        cells: list[object] | None = json.loads(lookup.data) if lookup.data is not None else None
        columns = self._data.columns(lookup.period_id)
        view = self.store.view()
        today = dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()
        report = subject_pb2.SubjectReport(
            request_id=parsed.request_id,
            enterprise_uscc=enterprise,
            provider=self.provider,
            provider_key_id=self._credentials.signing_key.key_id,
            issued_at=int(now),
            data_as_of=lookup.as_of,
            held=cells is not None,
        )
        for spec in self.catalog.provider_fields(self.provider):
            index = columns.get(spec.column)
            cell = cells[index] if cells is not None and index is not None and index < len(cells) else None
            value, present = _text(spec, cell)
            status = subject_pb2.FIELD_STATUS_NORMAL
            if (enterprise, spec.key) in view.disputed:
                status = subject_pb2.FIELD_STATUS_DISPUTED
            elif present and view.hidden(enterprise, spec.key, cell, today):
                status = subject_pb2.FIELD_STATUS_REPAIRED
            report.fields.add(field=spec.key, value=value, present=present, status=status)
        for case in self.store.cases(enterprise=enterprise, now=now):
            report.cases.add(
                case_id=case.case_id,
                kind=case.kind,
                field=case.field,
                statement=case.statement,
                state=case.state,
                filed_at=case.filed_at,
                updated_at=case.updated_at,
                reason=case.reason,
                overdue=case.overdue,
                effective_date=case.effective_date,
                evidence_bytes=case.evidence_bytes,
                history=[subject_pb2.CaseEvent(at=a, state=s, note=n) for a, s, n in case.history],  # type: ignore[arg-type]
            )
        raw = report.SerializeToString(deterministic=True)
        signed = subject_pb2.SignedSubjectReport(
            report=raw, signature=self._credentials.signing_key.sign(subj.REPORT_CONTEXT, raw)
        )
        self.store.log(int(now), "report", enterprise, parsed.request_id, "", f"{len(report.fields)} fields")
        return subj.seal_report(
            signed,
            enterprise=enterprise,
            sealing_public_raw=sealing_raw,
            request_id=parsed.request_id,
            fields=len(report.fields),
            cases=len(report.cases),
        )

    def accept_case(
        self,
        query: subject_pb2.SignedSubjectQuery,
        binding: common_pb2.SignedPartyBinding,
        case_id: str,
        sealed: common_pb2.SealedBox,
    ) -> int:
        """Open the sealed filing, check the enterprise signed it about itself and this provider's field, store it."""
        now = self._clock()
        _parsed, verified = self._check(query, binding, now)
        enterprise = verified.party_id
        key = self._credentials.sealing_key
        assert key is not None
        try:
            raw = key.open(
                sealed, recipient_id=self._credentials.party_id, content_type=subj.FILING_CONTENT_TYPE, context=case_id
            )
            signed = subject_pb2.SignedCaseFiling.FromString(raw)
        except Exception:
            raise ConsentError("case filing cannot be opened") from None
        filing = subj.verify_filing(signed, verified)
        if filing.case_id != case_id or filing.provider != self.provider or filing.enterprise_uscc != enterprise:
            raise ConsentError("case filing is for another case, provider or enterprise")
        spec = self.catalog.fields.get(filing.field)
        if spec is None or spec.provider != self.provider:
            msg = f"{filing.field!r} is not a field of provider {self.provider}"
            raise ValidationError(msg, public=msg)
        if filing.kind == REPAIR:
            lookup = self._data.lookup(enterprise, "0000-01-01", "9999-12-31")
            cells = json.loads(lookup.data) if lookup is not None and lookup.data is not None else None
            index = self._data.columns(lookup.period_id).get(spec.column) if lookup is not None else None
            if cells is None or index is None or index >= len(cells) or cells[index] is None:
                msg = "no record is held on this field: nothing to repair"
                raise ValidationError(msg, public=msg)
        self.store.add_case(filing, signed, int(now))
        log.info("case %s filed on %s (kind %d)", filing.case_id, filing.field, filing.kind)
        return OPEN

    def stats(self) -> subject_pb2.GetCaseStatsResponse:
        """Counts only: open and overdue cases, for the platform."""
        cases = [c for c in self.store.cases(now=self._clock()) if c.state == OPEN]
        objections = [c for c in cases if c.kind == OBJECTION]
        repairs = [c for c in cases if c.kind == REPAIR]
        overdue = sum(1 for c in objections if c.overdue)
        if overdue:
            log.warning("%d objection(s) open past the %d-day deadline", overdue, self.store.deadline_seconds // 86400)
        return subject_pb2.GetCaseStatsResponse(
            provider=self.provider,
            open_objections=len(objections),
            overdue_objections=overdue,
            open_repairs=len(repairs),
            overdue_repairs=sum(1 for c in repairs if c.overdue),
            deadline_seconds=self.store.deadline_seconds,
        )

    def update_pause(self, signed: subject_pb2.SignedConsentStateChange, binding: common_pb2.SignedPartyBinding) -> int:
        change = subj.verify_state_change(self._ca, signed, binding)
        paused = self.store.set_pause(change, signed, int(self._clock()))
        return common_pb2.CONSENT_STATE_PAUSED if paused else common_pb2.CONSENT_STATE_ACTIVE


def current_cell_sha256(data: DataStore, catalog: Catalog, enterprise: str, key: str) -> str:
    """The hash of the value a repair is approved on (the CLI reads the active period)."""
    spec = catalog.field(key)
    lookup = data.lookup(enterprise, "0000-01-01", "9999-12-31")
    if lookup is None or lookup.data is None:
        raise ValidationError("the enterprise is not in the active period")
    cells = json.loads(lookup.data)
    index = data.columns(lookup.period_id).get(spec.column)
    if index is None or index >= len(cells) or cells[index] is None:
        raise ValidationError(f"no value held on {key}")
    return cell_sha256(cells[index])


def _safe_name(name: str) -> str:
    """A filed evidence name reduced to a harmless file name (no path, no control or shell characters)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(c for c in base if c.isascii() and (c.isalnum() or c in "._-")).lstrip(".")[:64]
    return kept or "evidence.bin"


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (0600) with ``data``; an existing file is never overwritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


__all__ = [
    "Case",
    "SubjectDesk",
    "SubjectStore",
    "SubjectView",
    "cell_sha256",
    "current_cell_sha256",
    "subject_db_path",
]
