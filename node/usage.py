"""What an institution did, from the audit log: usage counts and the risk monitor.

Both read only the audit log's metadata (caller, method, providers,
decision, time, consent id and enterprise code), never an answer: the log
holds no answer.

``usage_counts`` is ``xinrong node institutions usage``: the institution's
decisions since a time, counted by UTC day, purpose (the audited method),
provider and decision, and the risk monitor's flags about it (decision
FLAGGED, purpose ``InstitutionRiskFlag:<rule>``).

``RiskMonitor`` looks at each institution's decisions over a sliding window
and flags a pattern that looks like probing or trawling:

* ``RISK_REFUSAL_RATE``: more than ``max_refusal_rate`` of its decisions
  were refusals (guessing consents, enterprises or fields);
* ``RISK_ENTERPRISES_PER_CONSENT``: one consent id tried against more than
  ``max_enterprises_per_consent`` enterprises (a consent is for one
  enterprise: trying it on others probes which firms use the platform);
* ``RISK_OFF_HOURS``: more than ``max_off_hours_share`` of its requests
  outside business hours (local time, ``utc_offset_hours``).

Every rule needs ``min_requests`` decisions in the window. Each flag is an
audit entry (decision FLAGGED, caller the node, ``institution:<id>`` in
its fields), at most once per institution and rule per window; with
``auto_suspend`` the institution is also suspended (by ``risk_monitor``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from xinrong.node.audit import AuditEvent, AuditLog, Decision
from xinrong.node.config import RiskConfig
from xinrong.node.db import Database
from xinrong.node.institutions import BY_RISK, InstitutionRegistry

log = logging.getLogger(__name__)

INSTITUTION = "institution"
FLAG_METHOD = "InstitutionRiskFlag"
# At most this many flag rows are read per usage call (flags are rare: one per rule and window).
MAX_ROWS = 10_000


def _providers(text: str) -> list[str]:
    try:
        items = json.loads(text)
    except ValueError:
        return []
    return [i for i in items if isinstance(i, str)] if isinstance(items, list) else []


def usage_counts(db: Database, institution: str, since: float) -> Counter[tuple[str, str, str, str]]:
    """(day, purpose, provider, decision) -> count of the institution's audited decisions since ``since``.

    Counted by the database (the ``audit_log_caller`` index, one group per day, method,
    providers and decision), so a busy institution's month is not read row by row.
    """
    rows = db.query(
        "SELECT ts_ms / 86400000, method, providers, decision, count(*) FROM audit_log "
        "WHERE caller_id = ? AND caller_role = ? AND ts_ms >= ? "
        "GROUP BY ts_ms / 86400000, method, providers, decision",
        (institution, INSTITUTION, int(since * 1000)),
    )
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for day_number, method, providers, decision, n in rows:
        day = _day(int(day_number) * 86400)
        for provider in _providers(str(providers)) or [""]:
            counts[(day, str(method), provider, str(decision))] += int(n)
    # The risk monitor's flags about it (few: at most one per rule and window), by rule.
    mark = f"institution:{institution}"
    flags = db.query(
        "SELECT ts_ms, reason, fields FROM audit_log WHERE caller_role = ? AND method = ? AND ts_ms >= ? LIMIT ?",
        ("node", FLAG_METHOD, int(since * 1000), MAX_ROWS),
    )
    for ts_ms, reason, fields in flags:
        if mark in _providers(str(fields)):
            counts[(_day(int(ts_ms) / 1000), f"{FLAG_METHOD}:{reason}", "", Decision.FLAGGED.value)] += 1
    return counts


def _day(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Flag:
    institution: str
    rule: str
    value: float
    threshold: float


class RiskMonitor:
    """Periodic pass over the audit log (``tick``, from the node's institution thread)."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        institutions: InstitutionRegistry,
        config: RiskConfig,
        *,
        node_id: str,
        clock: Callable[[], float],
    ) -> None:
        self._db = db
        self._audit = audit
        self._institutions = institutions
        self._config = config
        self._node_id = node_id
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}

    def evaluate(self, institution: str, now: float) -> list[Flag]:
        """The rules' verdicts for one institution over the window ending ``now`` (no side effects).

        Three aggregate queries over the ``audit_log_caller`` index: no row is read
        into the node (a busy bank's hour is a few hundred thousand entries). They
        run on a reader connection (``read_query``), never under the lock the
        request path takes: a scan that long would stall every admission.
        """
        c = self._config
        where = "caller_id = ? AND caller_role = ? AND ts_ms >= ? AND decision IN ('ALLOWED', 'REFUSED')"
        params = (institution, INSTITUTION, int((now - c.window_seconds) * 1000))
        start, end = c.business_hours
        offset = int(c.utc_offset_hours) * 3600  # integers from the typed config, never from a request
        local = f"(ts_ms / 1000 + {offset})"
        hour = f"({local} / 3600 - ({local} / 86400) * 24)"  # integer arithmetic: no '%', which psycopg reserves
        (total, refused, off), *_ = self._db.read_query(
            f"SELECT count(*), coalesce(sum(CASE WHEN decision = 'REFUSED' THEN 1 ELSE 0 END), 0), "
            f"coalesce(sum(CASE WHEN {hour} < {int(start)} OR {hour} >= {int(end)} THEN 1 ELSE 0 END), 0) "
            f"FROM audit_log WHERE {where}",
            params,
        )
        total, refused, off = int(total), int(refused), int(off)
        if total < c.min_requests:
            return []
        flags: list[Flag] = []
        rate = refused / total
        if rate > c.max_refusal_rate:
            flags.append(Flag(institution, "RISK_REFUSAL_RATE", rate, c.max_refusal_rate))
        (widest,), *_ = self._db.read_query(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(DISTINCT enterprise) AS n FROM audit_log "
            f"WHERE {where} AND consent_id <> '' AND enterprise <> '' GROUP BY consent_id) AS per_consent",
            params,
        )
        if int(widest) > c.max_enterprises_per_consent:
            flags.append(Flag(institution, "RISK_ENTERPRISES_PER_CONSENT", int(widest), c.max_enterprises_per_consent))
        share = off / total
        if share > c.max_off_hours_share:
            flags.append(Flag(institution, "RISK_OFF_HOURS", share, c.max_off_hours_share))
        return flags

    def tick(self) -> list[Flag]:
        """Evaluate every active institution; audit (and optionally suspend on) each new flag."""
        now = self._clock()
        raised: list[Flag] = []
        for inst in self._institutions.all():
            if inst.suspended:
                continue
            for flag in self.evaluate(inst.institution_id, now):
                key = (flag.institution, flag.rule)
                if now - self._last.get(key, -1e18) < self._config.window_seconds:
                    continue
                self._last[key] = now
                self._record(flag, now)
                raised.append(flag)
            if self._config.auto_suspend and any(f.institution == inst.institution_id for f in raised):
                rules = ",".join(f.rule for f in raised if f.institution == inst.institution_id)
                self._institutions.suspend(inst.institution_id, f"risk monitor: {rules}", by=BY_RISK)
        return raised

    def _record(self, flag: Flag, now: float) -> None:
        log.warning("risk monitor flagged %s: %s %.3g > %.3g", flag.institution, flag.rule, flag.value, flag.threshold)
        event = AuditEvent(
            caller_role="node",
            caller_id=self._node_id,
            method=FLAG_METHOD,
            decision=Decision.FLAGGED,
            reason=flag.rule,
            fields=(f"institution:{flag.institution}", f"value:{flag.value:.4g}", f"threshold:{flag.threshold:.4g}"),
        )
        with self._db.transaction() as tx:
            self._audit.append(tx, event, int(now * 1000))


__all__ = ["FLAG_METHOD", "Flag", "RiskMonitor", "usage_counts"]
