"""Financing demands and the whitelist (Issue 13 §2), on the node's event log.

**Demands.** An enterprise registers a demand it signed (``xinrong.demand``)
naming consents of purpose ``matching``, one institution each. Stored in
``demands`` (schema step 8), withdrawn by the enterprise, expired by its
``valid_until``.

**Whitelist.** An enterprise is on the whitelist *for an institution* when

* its latest full-coverage evaluation (``xinrong.node.evaluation``: the node
  holds each scored enterprise's score and grade, nothing more) has a grade
  at or above the published threshold (``[node].whitelist_min_grade``,
  ``xinrong node whitelist threshold``), and the evaluation is not older
  than ``whitelist_valid_days``;
* it holds an active, unexpired demand referencing an active (not paused,
  revoked or expired) matching consent whose grantee is that institution.

``whitelist`` rows are what was pushed, per (enterprise, institution,
demand). Recomputing an enterprise compares what should be pushed with what
was, and appends the difference as events of topic ``whitelist`` in the same
transaction as the rows (so the rows never say "pushed" without the event,
or the reverse): an addition (payload: enterprise, grade if the demand
allows it, the demand, valid-until) with audience = the institutions it is
for; a removal (enterprise, demand id) with audience = the institutions that
had it. Never the points breakdown, never why an entry left (a reason would
tell a bank about the grade or the consent). A payload that changes (new
grade after a period, new valid-until) is pushed again as an addition.

**When.** Synchronously on RegisterDemand / WithdrawDemand; on every consent
state change through ``ConsentRegistry.on_change`` (revocation, pause,
resume: the enterprise is marked and the worker recomputes it within a
second); and by the worker's sweep every ``SWEEP_SECONDS`` and whenever a new
evaluation period appears (also catching expiries and, over PostgreSQL,
another replica's revocations). On PostgreSQL recomputations serialize on an
advisory lock, so two replicas never push the same change twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xinrong.demand import VerifiedDemand, verify_signed_demand
from xinrong.keys.ca import CaVerifier
from xinrong.node.audit import AuditEvent, AuditLog, Decision
from xinrong.node.consents import ACTIVE as CONSENT_ACTIVE
from xinrong.node.consents import ConsentRegistry
from xinrong.node.db import Database, Transaction
from xinrong.node.evaluation import EvaluationStore
from xinrong.node.events import EventLog, NewEvent
from xinrong.node.public import published_region_industry
from xinrong.node.registry import PartyRegistry
from xinrong.v1 import common_pb2, demand_pb2

log = logging.getLogger(__name__)

TOPIC = "whitelist"
ACTIVE = demand_pb2.DEMAND_STATE_ACTIVE
WITHDRAWN = demand_pb2.DEMAND_STATE_WITHDRAWN
EXPIRED = demand_pb2.DEMAND_STATE_EXPIRED
INSTITUTION = "institution"
MATCHING = common_pb2.CONSENT_PURPOSE_MATCHING
# pg_advisory_xact_lock key of whitelist recomputations ("xinrong" 08).
WHITELIST_LOCK = 0x78696E726F6E6708
SWEEP_SECONDS = 5.0
TICK_SECONDS = 0.2


class DemandConflict(Exception):
    """A demand with this id is registered with other bytes."""


@dataclass(frozen=True)
class DemandRecord:
    verified: VerifiedDemand
    state: int
    registered_ms: int
    withdrawn_ms: int | None

    @property
    def demand(self) -> demand_pb2.FinancingDemand:
        return self.verified.demand

    def effective_state(self, now: float) -> int:
        if self.state == WITHDRAWN:
            return WITHDRAWN
        if now >= self.demand.valid_until:
            return EXPIRED
        return self.state


class DemandStore:
    """Demands in the node's database (read through: demands are few and replicas share them)."""

    _ROW = "SELECT signed, state, registered_ms, withdrawn_ms FROM demands"

    def __init__(self, db: Database, ca: CaVerifier) -> None:
        self._db = db
        self._ca = ca

    def _record(self, row: tuple[Any, ...]) -> DemandRecord | None:
        try:
            signed = demand_pb2.SignedDemand.FromString(bytes(row[0]))
            verified = verify_signed_demand(self._ca, signed, now=None)
        except Exception:  # a row written behind the node's back is not honoured
            log.warning("a stored demand fails its signature check; ignored")
            return None
        return DemandRecord(verified, int(row[1]), int(row[2]), None if row[3] is None else int(row[3]))

    def get(self, demand_id: str) -> DemandRecord | None:
        rows = self._db.query(f"{self._ROW} WHERE demand_id = ?", (demand_id,))
        return self._record(rows[0]) if rows else None

    def of_enterprise(self, enterprise: str) -> list[DemandRecord]:
        rows = self._db.query(f"{self._ROW} WHERE enterprise = ? ORDER BY registered_ms, demand_id", (enterprise,))
        return [r for r in (self._record(row) for row in rows) if r is not None]

    def enterprises(self) -> list[str]:
        """Enterprises with a demand in any state (their whitelist entries may need removing)."""
        return [str(r[0]) for r in self._db.query("SELECT DISTINCT enterprise FROM demands ORDER BY enterprise")]

    def register(self, tx: Transaction, verified: VerifiedDemand, now: float) -> bool:
        """Store a new demand; the same bytes again are a no-op (False)."""
        signed = verified.signed.SerializeToString(deterministic=True)
        row = tx.execute("SELECT signed FROM demands WHERE demand_id = ?", (verified.demand_id,)).fetchone()
        if row is not None:
            if bytes(row[0]) != signed:
                raise DemandConflict(verified.demand_id)
            return False
        tx.execute(
            "INSERT INTO demands (demand_id, enterprise, signed, state, registered_ms) VALUES (?, ?, ?, ?, ?)",
            (verified.demand_id, verified.enterprise, signed, ACTIVE, int(now * 1000)),
        )
        return True

    def withdraw(self, tx: Transaction, demand_id: str, now: float) -> None:
        tx.execute(
            "UPDATE demands SET state = ?, withdrawn_ms = ? WHERE demand_id = ? AND state = ?",
            (WITHDRAWN, int(now * 1000), demand_id, ACTIVE),
        )


@dataclass(frozen=True)
class Threshold:
    """The published whitelist rule."""

    min_grade: str
    valid_days: int

    def to_json(self, grades: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"min_grade": self.min_grade, "valid_days": self.valid_days}
        if grades is not None:
            out["grades_meeting_it"] = grades[: grades.index(self.min_grade) + 1] if self.min_grade in grades else []
        return out


@dataclass(frozen=True)
class Entry:
    """What should be (or was) pushed to one institution for one demand."""

    institution: str
    demand_id: str
    payload: bytes
    valid_until: int
    consent_id: str = ""

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()


@dataclass
class Changes:
    added: list[tuple[str, str]] = field(default_factory=list)  # (institution, demand_id)
    removed: list[tuple[str, str]] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)


def _demand_json(d: demand_pb2.FinancingDemand) -> dict[str, Any]:
    return {
        "demand_id": d.demand_id,
        "amount_yuan": d.amount_yuan,
        "term_months": d.term_months,
        "purpose": d.purpose,
        "region": d.region,
        "industry": d.industry,
        "valid_until": d.valid_until,
    }


@dataclass
class Whitelist:
    """Recomputes and pushes the whitelist (see the module docstring)."""

    db: Database
    events: EventLog
    demands: DemandStore
    consents: ConsentRegistry
    registry: PartyRegistry
    evaluations: EvaluationStore
    threshold: Threshold
    clock: Callable[[], float] = time.time
    # Every push to an institution is an audit entry of the enterprise's (its
    # "who saw my data" lists it): method WhitelistPush / WhitelistRemove.
    audit: AuditLog | None = None
    _dirty: set[str] = field(default_factory=set)
    _cv: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _period_seen: tuple[str, int] | None = None

    # -- what should be pushed -----------------------------------------------------

    def grade_of(self, enterprise: str) -> tuple[str, str, int] | None:
        """(grade, period, evaluated_at) if the enterprise's latest grade meets the threshold."""
        record = self.evaluations.lookup(enterprise)
        if record is None or not record.scored:
            return None
        grades = [str(g) for g in self.evaluations.meta(record.period)["grades"]]
        if self.threshold.min_grade not in grades or record.grade not in grades:
            return None
        if grades.index(record.grade) > grades.index(self.threshold.min_grade):
            return None
        return record.grade, record.period, record.evaluated_at

    def allowed_institutions(self, demand: demand_pb2.FinancingDemand, now: float) -> dict[str, tuple[int, str]]:
        """Institution -> (consent valid_until, consent id), for each active matching consent of the demand."""
        out: dict[str, tuple[int, str]] = {}
        for consent_id in demand.consent_ids:
            record = self.consents.get(consent_id)
            if record is None or record.enterprise != demand.enterprise_uscc:
                continue
            consent = record.verified.consent
            if consent.purpose != MATCHING or record.effective_state(now) != CONSENT_ACTIVE:
                continue
            if now < consent.valid_from or self.registry.get(INSTITUTION, consent.grantee_id) is None:
                continue
            out[consent.grantee_id] = max(out.get(consent.grantee_id, (0, "")), (int(consent.valid_until), consent_id))
        return out

    def desired(self, enterprise: str) -> dict[tuple[str, str], Entry]:
        now = self.clock()
        graded = self.grade_of(enterprise)
        if graded is None:
            return {}
        grade, period, evaluated_at = graded
        fresh_until = evaluated_at + self.threshold.valid_days * 86400
        out: dict[tuple[str, str], Entry] = {}
        for record in self.demands.of_enterprise(enterprise):
            if record.effective_state(now) != ACTIVE:
                continue
            demand = record.demand
            for institution, (consent_until, consent_id) in sorted(self.allowed_institutions(demand, now).items()):
                valid_until = min(demand.valid_until, consent_until, fresh_until)
                if valid_until <= now:
                    continue
                body: dict[str, Any] = {
                    "action": "add",
                    "enterprise": enterprise,
                    "demand": _demand_json(demand),
                    "valid_until": valid_until,
                    "period": period,
                }
                if demand.show_grade:
                    body["grade"] = grade
                payload = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
                out[(institution, demand.demand_id)] = Entry(
                    institution, demand.demand_id, payload, valid_until, consent_id
                )
        return out

    # -- applying the difference -----------------------------------------------------

    def recompute(self, enterprise: str) -> Changes:
        """Push what changed for one enterprise; the rows and the events in one transaction."""
        want = self.desired(enterprise)
        demands = self.demands.of_enterprise(enterprise)
        # A demand that names no industry is tagged with the enterprise's public one
        # (market.industry_class), so subscriptions by industry still receive it.
        public = (
            published_region_industry(self.db.query, enterprise)[1]
            if any(not r.demand.industry for r in demands)
            else ""
        )
        regions = {r.demand.demand_id: (r.demand.region, r.demand.industry or public) for r in demands}
        changes = Changes()
        pushed = {
            (str(r[0]), str(r[1])): str(r[2])
            for r in self.db.query(
                "SELECT institution, demand_id, payload_sha256 FROM whitelist WHERE enterprise = ?", (enterprise,)
            )
        }
        if pushed == {key: entry.digest for key, entry in want.items()}:
            return changes  # nothing to push (checked again under the lock below when there is)
        with self.db.transaction() as tx:
            if self.db.shared:
                tx.execute("SELECT pg_advisory_xact_lock(?)", (WHITELIST_LOCK,))
            have = {
                (str(r[0]), str(r[1])): str(r[2])
                for r in tx.execute(
                    "SELECT institution, demand_id, payload_sha256 FROM whitelist WHERE enterprise = ?", (enterprise,)
                ).fetchall()
            }
            additions: dict[bytes, list[Entry]] = {}
            for key, entry in want.items():
                if have.get(key) != entry.digest:
                    additions.setdefault(entry.payload, []).append(entry)
            removals: dict[str, list[str]] = {}
            for institution, demand_id in have:
                if (institution, demand_id) not in want:
                    removals.setdefault(demand_id, []).append(institution)
            if not additions and not removals:
                return changes
            new_events: list[NewEvent] = []
            for demand_id, institutions in sorted(removals.items()):
                region, industry = regions.get(demand_id, ("", ""))
                payload = json.dumps(
                    {"action": "remove", "enterprise": enterprise, "demand_id": demand_id},
                    sort_keys=True,
                    separators=(",", ":"),
                ).encode()
                new_events.append(NewEvent(TOPIC, enterprise, region, industry, payload, tuple(sorted(institutions))))
                for institution in institutions:
                    tx.execute(
                        "DELETE FROM whitelist WHERE enterprise = ? AND institution = ? AND demand_id = ?",
                        (enterprise, institution, demand_id),
                    )
                    changes.removed.append((institution, demand_id))
                    self._audit(tx, "WhitelistRemove", institution, enterprise, "")
            now_ms = int(self.clock() * 1000)
            for payload, entries in additions.items():
                demand_id = entries[0].demand_id
                region, industry = regions.get(demand_id, ("", ""))
                audience = tuple(sorted(e.institution for e in entries))
                new_events.append(NewEvent(TOPIC, enterprise, region, industry, payload, audience))
                for e in entries:
                    tx.execute(
                        "INSERT INTO whitelist (enterprise, institution, demand_id, payload_sha256, valid_until, "
                        "updated_ms) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (enterprise, institution, demand_id) "
                        "DO UPDATE SET payload_sha256 = excluded.payload_sha256, valid_until = excluded.valid_until, "
                        "updated_ms = excluded.updated_ms",
                        (enterprise, e.institution, e.demand_id, e.digest, e.valid_until, now_ms),
                    )
                    changes.added.append((e.institution, e.demand_id))
                    self._audit(tx, "WhitelistPush", e.institution, enterprise, e.consent_id)
            changes.seqs = self.events.append_in(tx, new_events)
        if changes.added or changes.removed:
            log.info(
                "whitelist: %d added, %d removed for one enterprise (events %s)",
                len(changes.added),
                len(changes.removed),
                changes.seqs,
            )
        return changes

    def _audit(self, tx: Transaction, method: str, institution: str, enterprise: str, consent_id: str) -> None:
        if self.audit is None:
            return
        self.audit.append(
            tx,
            AuditEvent(
                caller_role=INSTITUTION,
                caller_id=institution,
                method=method,
                decision=Decision.ALLOWED,
                enterprise=enterprise,
                consent_id=consent_id,
            ),
            int(self.clock() * 1000),
        )

    def recompute_all(self) -> int:
        """Every enterprise with a demand or an entry; the number of events appended."""
        names = set(self.demands.enterprises())
        names.update(str(r[0]) for r in self.db.query("SELECT DISTINCT enterprise FROM whitelist"))
        appended = 0
        for enterprise in sorted(names):
            appended += len(self.recompute(enterprise).seqs)
        return appended

    def pushed_to(self, enterprise: str, demand_id: str | None = None) -> dict[str, list[str]]:
        """demand id -> institutions it is currently pushed to (the enterprise's own view)."""
        rows = self.db.query(
            "SELECT demand_id, institution FROM whitelist WHERE enterprise = ? ORDER BY demand_id, institution",
            (enterprise,),
        )
        out: dict[str, list[str]] = {}
        for d, i in rows:
            if demand_id is None or d == demand_id:
                out.setdefault(str(d), []).append(str(i))
        return out

    def entries(self) -> list[tuple[str, str, str, int]]:
        """(enterprise, institution, demand_id, valid_until) of every current entry (operators)."""
        rows = self.db.query(
            "SELECT enterprise, institution, demand_id, valid_until FROM whitelist ORDER BY enterprise, institution"
        )
        return [(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]

    # -- the worker -----------------------------------------------------------------------

    def mark(self, enterprise: str) -> None:
        """Recompute this enterprise soon (a consent of it changed); safe under any lock."""
        with self._cv:
            self._dirty.add(enterprise)
            self._cv.notify()

    def _period_changed(self) -> bool:
        latest = self.evaluations.latest()
        seen = None if latest is None else (latest, int(self.evaluations.meta(latest)["evaluated_at"]))
        changed = seen != self._period_seen
        self._period_seen = seen
        return changed

    def _run(self) -> None:
        next_sweep = 0.0
        while not self._stop.is_set():
            with self._cv:
                if not self._dirty:
                    self._cv.wait(timeout=TICK_SECONDS)
                dirty, self._dirty = self._dirty, set()
            try:
                if self._period_changed() or time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_SECONDS
                    self.recompute_all()
                    continue
                for enterprise in sorted(dirty):
                    self.recompute(enterprise)
            except Exception:  # the next tick retries (the marks are re-derived by the sweep)
                log.warning("whitelist recomputation failed; retrying", exc_info=True)

    def start(self) -> None:
        from xinrong.index import default_index

        grades = [g.name for g in default_index().grades]
        if self.threshold.min_grade not in grades:
            log.warning(
                "[node].whitelist_min_grade %r is not a grade of the index %s: the whitelist stays empty",
                self.threshold.min_grade,
                grades,
            )
        self._thread = threading.Thread(target=self._run, name="node-whitelist", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)


__all__ = [
    "TOPIC",
    "DemandConflict",
    "DemandRecord",
    "DemandStore",
    "Entry",
    "Threshold",
    "Whitelist",
]
