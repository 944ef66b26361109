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
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from xinrong.node.audit import AuditEvent, AuditLog, Decision
from xinrong.node.config import RiskConfig
from xinrong.node.db import Database
from xinrong.node.institutions import BY_RISK, InstitutionRegistry

log = logging.getLogger(__name__)

INSTITUTION = "institution"
FLAG_METHOD = "InstitutionRiskFlag"
# At most this many audit rows are read per institution and call (a window of normal use holds far fewer).
MAX_ROWS = 200_000


def _providers(text: str) -> list[str]:
    try:
        items = json.loads(text)
    except ValueError:
        return []
    return [i for i in items if isinstance(i, str)] if isinstance(items, list) else []


def usage_counts(db: Database, institution: str, since: float) -> Counter[tuple[str, str, str, str]]:
    """(day, purpose, provider, decision) -> count of the institution's audited decisions since ``since``."""
    rows = db.query(
        "SELECT ts_ms, method, providers, decision FROM audit_log "
        "WHERE caller_id = ? AND caller_role = ? AND ts_ms >= ? ORDER BY ts_ms LIMIT ?",
        (institution, INSTITUTION, int(since * 1000), MAX_ROWS),
    )
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for ts_ms, method, providers, decision in rows:
        day = dt.datetime.fromtimestamp(int(ts_ms) / 1000, dt.UTC).strftime("%Y-%m-%d")
        for provider in _providers(str(providers)) or [""]:
            counts[(day, str(method), provider, str(decision))] += 1
    # The risk monitor's flags about it (few: at most one per rule and window), by rule.
    mark = f"institution:{institution}"
    flags = db.query(
        "SELECT ts_ms, reason, fields FROM audit_log WHERE caller_role = ? AND method = ? AND ts_ms >= ? LIMIT ?",
        ("node", FLAG_METHOD, int(since * 1000), MAX_ROWS),
    )
    for ts_ms, reason, fields in flags:
        if mark in _providers(str(fields)):
            day = dt.datetime.fromtimestamp(int(ts_ms) / 1000, dt.UTC).strftime("%Y-%m-%d")
            counts[(day, f"{FLAG_METHOD}:{reason}", "", Decision.FLAGGED.value)] += 1
    return counts


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
        """The rules' verdicts for one institution over the window ending ``now`` (no side effects)."""
        c = self._config
        rows = self._db.query(
            "SELECT ts_ms, decision, consent_id, enterprise FROM audit_log "
            "WHERE caller_id = ? AND caller_role = ? AND ts_ms >= ? LIMIT ?",
            (institution, INSTITUTION, int((now - c.window_seconds) * 1000), MAX_ROWS),
        )
        decided = [r for r in rows if r[1] in (Decision.ALLOWED.value, Decision.REFUSED.value)]
        if len(decided) < c.min_requests:
            return []
        flags: list[Flag] = []
        refused = sum(1 for r in decided if r[1] == Decision.REFUSED.value)
        rate = refused / len(decided)
        if rate > c.max_refusal_rate:
            flags.append(Flag(institution, "RISK_REFUSAL_RATE", rate, c.max_refusal_rate))
        per_consent: dict[str, set[str]] = defaultdict(set)
        for _ts, _decision, consent_id, enterprise in decided:
            if consent_id and enterprise:
                per_consent[str(consent_id)].add(str(enterprise))
        widest = max((len(v) for v in per_consent.values()), default=0)
        if widest > c.max_enterprises_per_consent:
            flags.append(Flag(institution, "RISK_ENTERPRISES_PER_CONSENT", widest, c.max_enterprises_per_consent))
        start, end = c.business_hours
        offset = dt.timedelta(hours=c.utc_offset_hours)
        off = 0
        for ts_ms, *_ in decided:
            hour = (dt.datetime.fromtimestamp(int(ts_ms) / 1000, dt.UTC) + offset).hour
            if not (start <= hour < end):
                off += 1
        share = off / len(decided)
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
