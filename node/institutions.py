"""The access institutions: registry, status, security assessments, and the per-call gate.

Institutions used to be fixed in the node's config file. They now live in
the node's database (schema step 6, ``institutions``): the config's
``[[institutions]]`` are imported at start as registered and active (an
existing row keeps its status: a suspension survives a restart), and the
operator onboards, suspends, resumes and assesses institutions at run time
(``xinrong node institutions``, over ``InstitutionAdminService``).

Every call of every guarded service passes ``InstitutionGate.admit``
(``xinrong.rpc.gate``, asked by the server guard after the role check): a
suspended institution gets PERMISSION_DENIED ``INSTITUTION_SUSPENDED`` (its
own status, nothing about anyone else), and an institution over its rate
limit RESOURCE_EXHAUSTED ``QUOTA_EXHAUSTED`` with a RetryInfo. The gate
answers from memory: every write to ``institutions`` bumps the one-row
counter ``institutions_version`` in the same transaction, and each replica
reads that counter every ``refresh_seconds`` (0.25 s) and reloads the table
when it moved, so a suspension written at one replica takes effect at all
of them within about a second, without a database read per call. Open
streams of an institution that becomes suspended are closed with the same
status.

A security assessment that failed, or whose ``valid_until`` has passed,
suspends the institution automatically (at start and every
``assessment_check_seconds``). An institution without any assessment on
record is not suspended for it: the config-file institutions of earlier
releases carry none.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from xinrong.errors import Reason, ValidationError, XinrongError
from xinrong.keys.ca import check_party_id
from xinrong.node.audit import AuditEvent, AuditLog, Decision
from xinrong.node.config import INSTITUTION_TYPES, NodeConfig
from xinrong.node.db import Database, Transaction
from xinrong.node.quotas import Limit, QuotaBook, parse_overrides
from xinrong.rpc.auth import Peer
from xinrong.rpc.gate import StreamRegistry

log = logging.getLogger(__name__)

ACTIVE = "active"
SUSPENDED = "suspended"
# Who suspended: the operator, the assessment check, the risk monitor.
BY_OPERATOR = "operator"
BY_ASSESSMENT = "assessment"
BY_RISK = "risk_monitor"
RESULTS = ("pass", "fail")
INSTITUTION = "institution"
MAX_REASON = 500
# How often a replica on a shared database says it is alive (quota shares count live replicas).
HEARTBEAT_SECONDS = 1.0
MAX_NAME = 200

_COLUMNS = (
    "institution_id, name, kind, status, status_reason, status_since_ms, suspended_by, assessed_ms, "
    "assessment_result, assessment_valid_until_ms, assessor, quota_overrides, source, created_ms, updated_ms"
)


@dataclass(frozen=True)
class Assessment:
    """The latest security assessment: when, the result, until when it holds, by whom."""

    assessed_at: float
    result: str
    valid_until: float
    assessor: str


@dataclass(frozen=True)
class Institution:
    institution_id: str
    name: str
    kind: str
    status: str
    status_reason: str
    status_since: float
    suspended_by: str
    assessment: Assessment | None
    quota_overrides: dict[str, Limit] = field(default_factory=dict)
    source: str = "config"
    created: float = 0.0

    @property
    def suspended(self) -> bool:
        return self.status == SUSPENDED

    def to_json(self) -> dict[str, Any]:
        a = self.assessment
        return {
            "id": self.institution_id,
            "name": self.name,
            "type": self.kind,
            "status": self.status,
            "status_reason": self.status_reason,
            "status_since": self.status_since,
            "suspended_by": self.suspended_by,
            "assessment": None
            if a is None
            else {
                "assessed_at": a.assessed_at,
                "result": a.result,
                "valid_until": a.valid_until,
                "assessor": a.assessor,
            },
            "quota_overrides": {m: {"rate": q.rate, "burst": q.burst} for m, q in self.quota_overrides.items()},
            "source": self.source,
        }


def suspended_error(institution_id: str) -> XinrongError:
    return XinrongError(f"institution {institution_id} is suspended", reason=Reason.INSTITUTION_SUSPENDED)


def _row(row: tuple[Any, ...]) -> Institution:
    (ident, name, kind, status, reason, since_ms, by, assessed_ms, result, valid_ms, assessor, quotas, source) = row[
        :13
    ]
    assessment = (
        Assessment(int(assessed_ms) / 1000, str(result), int(valid_ms or 0) / 1000, str(assessor))
        if assessed_ms is not None
        else None
    )
    try:
        overrides = parse_overrides(json.loads(quotas or "{}"))
    except ValueError:
        overrides = {}
    return Institution(
        institution_id=str(ident),
        name=str(name),
        kind=str(kind),
        status=str(status),
        status_reason=str(reason),
        status_since=int(since_ms) / 1000,
        suspended_by=str(by),
        assessment=assessment,
        quota_overrides=overrides,
        source=str(source),
        created=int(row[13]) / 1000,
    )


def check_type(kind: str) -> str:
    if kind not in INSTITUTION_TYPES:
        raise ValidationError(f"institution type {kind!r} is not one of {INSTITUTION_TYPES}")
    return kind


def _text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit or any(ord(c) < 32 for c in value):
        raise ValidationError(f"{what}: at most {limit} printable characters")
    return value


class InstitutionRegistry:
    """The ``institutions`` table, cached in memory and re-read when its version moves."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        *,
        node_id: str,
        clock: Callable[[], float],
        on_suspended: Callable[[str], object] = lambda ident: None,
        on_new: Callable[[str], object] = lambda ident: None,
    ) -> None:
        self._db = db
        self._audit = audit
        self._node_id = node_id
        self._clock = clock
        self._lock = threading.Lock()
        # One refresh at a time: two interleaved reloads could install the older table last.
        self._refreshing = threading.Lock()
        self._by_id: dict[str, Institution] = {}
        self._version = -1
        self._on_suspended = on_suspended
        self._on_new = on_new

    # -- reading ---------------------------------------------------------------

    def get(self, institution_id: str) -> Institution | None:
        """From memory (the per-call path)."""
        return self._by_id.get(institution_id)

    def all(self) -> list[Institution]:
        with self._lock:
            return sorted(self._by_id.values(), key=lambda i: i.institution_id)

    @property
    def version(self) -> int:
        return self._version

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the table if its version moved (or ``force``); True if it did."""
        with self._refreshing:
            return self._refresh(force)

    def _refresh(self, force: bool) -> bool:
        rows = self._db.query("SELECT version FROM institutions_version WHERE id = 1")
        version = int(rows[0][0]) if rows else 0
        if version == self._version and not force:
            return False
        loaded = {
            i.institution_id: i for i in (_row(r) for r in self._db.query(f"SELECT {_COLUMNS} FROM institutions"))
        }
        with self._lock:
            before = self._by_id
            self._by_id = loaded
            self._version = version
        for ident, inst in loaded.items():
            old = before.get(ident)
            if old is None and before:
                self._on_new(ident)
            if inst.suspended and (old is None or not old.suspended):
                self._on_suspended(ident)
        return True

    # -- writing ---------------------------------------------------------------

    def _bump(self, tx: Transaction) -> None:
        tx.execute("UPDATE institutions_version SET version = version + 1 WHERE id = 1")

    def _audit_action(self, tx: Transaction, action: str, ident: str, reason: str = "", now: float = 0.0) -> None:
        self._audit.append(
            tx,
            AuditEvent(
                caller_role="node",
                caller_id=self._node_id,
                method=f"InstitutionAdmin.{action}",
                decision=Decision.ALLOWED,
                reason=reason[:64],
                fields=(f"institution:{ident}",),
            ),
            int((now or self._clock()) * 1000),
        )

    def import_configured(self, tx: Transaction, entries: Iterable[tuple[str, str, str]]) -> int:
        """Config-file institutions (id, name, type): new ones registered and active; known ones
        keep their status and assessment (a suspension survives a restart), and the config's
        name and type win for rows the config itself brought in."""
        now_ms = int(self._clock() * 1000)
        count = 0
        for ident, name, kind in entries:
            row = (
                ident,
                name or ident,
                kind,
                ACTIVE,
                "",
                now_ms,
                "",
                None,
                "",
                None,
                "",
                "{}",
                "config",
                now_ms,
                now_ms,
            )
            tx.execute(
                f"INSERT INTO institutions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (institution_id) DO UPDATE SET name = excluded.name, kind = excluded.kind "
                "WHERE institutions.source = 'config'",
                row,
            )
            count += 1
        if count:
            self._bump(tx)
        return count

    def registered_ids(self) -> set[str]:
        """Institutions onboarded at run time (not from this node's config)."""
        rows = self._db.query("SELECT institution_id FROM institutions WHERE source = 'registered'")
        return {str(r[0]) for r in rows}

    def register(self, tx: Transaction, ident: str, name: str, kind: str) -> None:
        """A new institution, active (its binding is stored by the caller in the same transaction)."""
        check_party_id(ident)
        check_type(kind)
        name = _text(name, "name", MAX_NAME) or ident
        now = self._clock()
        now_ms = int(now * 1000)
        tx.execute(
            f"INSERT INTO institutions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (institution_id) DO UPDATE SET name = excluded.name, kind = excluded.kind, "
            "source = excluded.source, updated_ms = excluded.updated_ms",
            (ident, name, kind, ACTIVE, "", now_ms, "", None, "", None, "", "{}", "registered", now_ms, now_ms),
        )
        self._bump(tx)
        self._audit_action(tx, "Register", ident, kind, now)

    def require(self, ident: str) -> Institution:
        inst = self.get(ident)
        if inst is None:
            self.refresh(force=True)
            inst = self.get(ident)
        if inst is None:
            raise XinrongError(f"no institution {ident!r}", reason=Reason.NOT_FOUND)
        return inst

    def set_status(self, ident: str, status: str, *, reason: str = "", by: str = BY_OPERATOR) -> Institution:
        """Suspend (``status=SUSPENDED``) or resume one institution; returns its new record."""
        self.require(ident)
        reason = _text(reason, "reason", MAX_REASON)
        now = self._clock()
        with self._db.transaction() as tx:
            tx.execute(
                "UPDATE institutions SET status = ?, status_reason = ?, status_since_ms = ?, suspended_by = ?, "
                "updated_ms = ? WHERE institution_id = ?",
                (status, reason, int(now * 1000), by if status == SUSPENDED else "", int(now * 1000), ident),
            )
            self._bump(tx)
            self._audit_action(tx, "Suspend" if status == SUSPENDED else "Resume", ident, by, now)
        self.refresh()
        log.warning("institution %s %s by %s", ident, status, by)
        return self.require(ident)

    def suspend(self, ident: str, reason: str, *, by: str = BY_OPERATOR) -> Institution:
        return self.set_status(ident, SUSPENDED, reason=reason, by=by)

    def resume(self, ident: str) -> Institution:
        return self.set_status(ident, ACTIVE)

    def assess(
        self, ident: str, *, result: str, valid_until: float, assessor: str, assessed_at: float = 0.0
    ) -> Institution:
        """Record the latest security assessment (a failed or expired one suspends at the next check)."""
        self.require(ident)
        if result not in RESULTS:
            raise ValidationError(f"assessment result must be one of {RESULTS}")
        assessor = _text(assessor, "assessor", MAX_NAME)
        if not assessor:
            raise ValidationError("assessment needs an assessor")
        now = self._clock()
        assessed_at = assessed_at or now
        if valid_until <= assessed_at:
            raise ValidationError("valid_until must be after the assessment date")
        with self._db.transaction() as tx:
            tx.execute(
                "UPDATE institutions SET assessed_ms = ?, assessment_result = ?, assessment_valid_until_ms = ?, "
                "assessor = ?, updated_ms = ? WHERE institution_id = ?",
                (int(assessed_at * 1000), result, int(valid_until * 1000), assessor, int(now * 1000), ident),
            )
            self._bump(tx)
            self._audit_action(tx, "Assess", ident, result, now)
        self.refresh()
        self.enforce_assessments()
        return self.require(ident)

    def set_quota(self, ident: str, method: str, limit: Limit | None) -> Institution:
        """Store (or with None remove) one per-institution override."""
        inst = self.require(ident)
        overrides = {m: {"rate": q.rate, "burst": q.burst} for m, q in inst.quota_overrides.items()}
        if limit is None:
            overrides.pop(method, None)
        else:
            overrides[method] = {"rate": limit.rate, "burst": limit.burst}
        now = self._clock()
        with self._db.transaction() as tx:
            tx.execute(
                "UPDATE institutions SET quota_overrides = ?, updated_ms = ? WHERE institution_id = ?",
                (json.dumps(overrides, sort_keys=True), int(now * 1000), ident),
            )
            self._bump(tx)
            self._audit_action(tx, "SetQuota", ident, method, now)
        self.refresh()
        return self.require(ident)

    # -- replicas -----------------------------------------------------------------

    def heartbeat(self, replica_id: str, *, fresh_seconds: float) -> int:
        """Record this replica as alive; the number of replicas seen within ``fresh_seconds``."""
        now_ms = int(self._clock() * 1000)
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO node_replicas (replica_id, seen_ms) VALUES (?, ?) "
                "ON CONFLICT (replica_id) DO UPDATE SET seen_ms = excluded.seen_ms",
                (replica_id, now_ms),
            )
            tx.execute("DELETE FROM node_replicas WHERE seen_ms < ?", (now_ms - int(60 * fresh_seconds * 1000),))
        rows = self._db.query(
            "SELECT count(*) FROM node_replicas WHERE seen_ms >= ?", (now_ms - int(fresh_seconds * 1000),)
        )
        return max(1, int(rows[0][0]) if rows else 1)

    def forget_replica(self, replica_id: str) -> None:
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM node_replicas WHERE replica_id = ?", (replica_id,))

    # -- assessments -------------------------------------------------------------

    def enforce_assessments(self) -> list[str]:
        """Suspend every active institution whose assessment failed or expired; returns their ids."""
        now = self._clock()
        suspended: list[str] = []
        for inst in self.all():
            a = inst.assessment
            if inst.suspended or a is None:
                continue
            if a.result != "pass":
                why = f"security assessment failed ({a.assessor})"
            elif a.valid_until < now:
                why = "security assessment expired"
            else:
                continue
            self.suspend(inst.institution_id, why, by=BY_ASSESSMENT)
            suspended.append(inst.institution_id)
        return suspended

    def due(self, days: float) -> list[Institution]:
        """Institutions whose assessment expires within ``days`` (or has expired, or never was)."""
        horizon = self._clock() + days * 86400
        return [i for i in self.all() if i.assessment is None or i.assessment.valid_until <= horizon]


class InstitutionGate:
    """The node's ``CallGate``: suspension and quotas, for every service, from memory."""

    def __init__(self, registry: InstitutionRegistry, quotas: QuotaBook) -> None:
        self.registry = registry
        self.quotas = quotas
        self.streams = StreamRegistry()
        self.suspended_refused = 0

    def admit(self, peer: Peer, method: str) -> None:
        if peer.role != INSTITUTION:
            return
        inst = self.registry.get(peer.party_id)
        if inst is None:
            return  # not registered: each service's own check refuses (admission step 1)
        if inst.suspended:
            self.suspended_refused += 1
            raise suspended_error(peer.party_id)
        self.quotas.take(inst.institution_id, inst.kind, method.rsplit("/", 1)[-1], inst.quota_overrides)

    def close_streams(self, institution_id: str) -> int:
        closed = self.streams.close_party(INSTITUTION, institution_id, suspended_error(institution_id))
        if closed:
            log.warning("closed %d open streams of suspended institution %s", closed, institution_id)
        return closed


class InstitutionWatch:
    """The background thread: registry refresh, assessment checks, the risk monitor."""

    def __init__(
        self,
        registry: InstitutionRegistry,
        config: NodeConfig,
        *,
        risk_tick: Callable[[], object] | None = None,
        quotas: QuotaBook | None = None,
        shared: bool = False,
        monotonic: Callable[[], float],
    ) -> None:
        self._registry = registry
        self._quotas = quotas
        self._shared = shared
        self._replica_id = uuid.uuid4().hex
        self._policy = config.institution_policy
        self._risk = config.risk
        self._risk_tick = risk_tick
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="node-institutions", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_assess = self._monotonic() + self._policy.assessment_check_seconds
        next_risk = self._monotonic() + self._risk.interval_seconds
        next_beat = 0.0
        failing = False
        while not self._stop.wait(self._policy.refresh_seconds):
            try:
                self._registry.refresh()
                now = self._monotonic()
                if self._shared and self._quotas is not None and now >= next_beat:
                    next_beat = now + HEARTBEAT_SECONDS
                    live = self._registry.heartbeat(self._replica_id, fresh_seconds=3 * HEARTBEAT_SECONDS)
                    self._quotas.set_live_replicas(live)
                if now >= next_assess:
                    next_assess = now + self._policy.assessment_check_seconds
                    self._registry.enforce_assessments()
                if self._risk_tick is not None and self._risk.enabled and now >= next_risk:
                    next_risk = now + self._risk.interval_seconds
                    self._risk_tick()
                failing = False
            except Exception:
                if not failing:
                    log.warning("institution registry refresh failed; retrying", exc_info=True)
                failing = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._shared:
            try:  # the others' shares grow at their next count, not after the heartbeat times out
                self._registry.forget_replica(self._replica_id)
            except Exception:
                log.debug("could not remove this replica's heartbeat", exc_info=True)


__all__ = [
    "ACTIVE",
    "BY_ASSESSMENT",
    "BY_OPERATOR",
    "BY_RISK",
    "SUSPENDED",
    "Assessment",
    "Institution",
    "InstitutionGate",
    "InstitutionRegistry",
    "InstitutionWatch",
    "check_type",
    "suspended_error",
]
