"""The node's own metrics, beside the per-RPC ones every server has (``xinrong.rpc.observe``).

* ``xinrong_node_admissions_total{purpose, outcome}``: every admission
  decision, one per subject: ``ALLOWED`` or the refusal's reason (the
  ``Reason`` enum: a fixed set);
* ``xinrong_node_budget_refusals_total{kind}``: the budget and quota
  refusals among them (consent uses, consent daily, enterprise daily);
* ``xinrong_node_agent_up{provider}``: whether the node reaches the agent
  and it answers health SERVING, probed when scraped (provider names are
  the public registry's);
* ``xinrong_node_agent_stream_queued{provider}`` / ``_pending`` /
  ``_batches_in_flight``: the batching stream to each agent;
* ``xinrong_node_audit_entries``: audit log size (the chain head's seq);
* ``xinrong_node_modeling_jobs{state}``: joint-modeling jobs held, by state;
* ``xinrong_node_institutions{status}``: access institutions, active / suspended;
* ``xinrong_node_gate_refusals{reason}``: calls the per-call gate refused
  (``INSTITUTION_SUSPENDED``, ``QUOTA_EXHAUSTED``) since start.

No label holds an enterprise, a consent, a request id or anything asked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xinrong.node.modeling import ModelingHub
from xinrong.node.service import NodeCore
from xinrong.rpc.observe import Observer

log = logging.getLogger(__name__)

BUDGET_REASONS = {
    "CONSENT_USES_EXHAUSTED": "consent_uses",
    "CONSENT_DAILY_LIMIT": "consent_daily",
    "ENTERPRISE_BUDGET_EXHAUSTED": "enterprise_daily",
}
JOB_STATES = ("CREATED", "RUNNING", "SUCCEEDED", "FAILED")
PROBE_SECONDS = 1.0

Samples = Iterable[tuple[tuple[str, ...], float]]


def observe_node(observer: Observer, core: NodeCore, hub: ModelingHub | None) -> None:
    """Attach the node's counters and scrape-time gauges to ``observer``."""
    admissions = observer.counter(
        "xinrong_node_admissions", "Admission decisions by purpose and outcome", ("purpose", "outcome")
    )
    budget = observer.counter("xinrong_node_budget_refusals", "Budget and quota refusals by kind", ("kind",))

    def decided(purpose: str, outcome: str) -> None:
        admissions.labels(purpose, outcome).inc()
        kind = BUDGET_REASONS.get(outcome)
        if kind is not None:
            budget.labels(kind).inc()

    core.admission.on_decision = decided
    agents = core.agents

    def agent_up() -> Samples:
        # Blocking channels of the pool (revocation pushes): probe all at once, bounded.
        channels = agents.blocking_channels()
        calls = []
        for name, channel in sorted(channels.items()):
            stub = health_pb2_grpc.HealthStub(channel)
            calls.append((name, stub.Check.future(health_pb2.HealthCheckRequest(), timeout=PROBE_SECONDS)))
        for name, call in calls:
            try:
                up = call.result().status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                up = False
            yield (name,), 1.0 if up else 0.0

    def streams(what: str) -> Samples:
        for name, depth in sorted(agents.stream_depths().items()):
            yield (name,), float(getattr(depth, what))

    def audit_entries() -> Samples:
        yield (), float(core.audit.head()[0])

    def jobs() -> Samples:
        counts = dict.fromkeys(JOB_STATES, 0)
        if hub is not None:
            for state, count in hub.jobs_by_state().items():
                counts[state] = counts.get(state, 0) + count
        for state, count in counts.items():
            yield (state,), float(count)

    gauges = observer.gauges
    gauges.add("xinrong_node_agent_up", "1 if the agent answers health SERVING to the node", ("provider",), agent_up)
    gauges.add(
        "xinrong_node_agent_stream_queued",
        "Calls queued for the agent's stream",
        ("provider",),
        lambda: streams("queued"),
    )
    gauges.add(
        "xinrong_node_agent_stream_pending",
        "Calls sent to the agent awaiting their answer",
        ("provider",),
        lambda: streams("pending"),
    )
    gauges.add(
        "xinrong_node_agent_stream_batches_in_flight",
        "Batches at the agent",
        ("provider",),
        lambda: streams("batches_in_flight"),
    )
    gauges.add("xinrong_node_audit_entries", "Entries in the audit log (chain head seq)", (), audit_entries)
    gauges.add("xinrong_node_modeling_jobs", "Joint-modeling jobs held, by state", ("state",), jobs)

    def institutions() -> Samples:
        held = core.institutions.all()
        for status in ("active", "suspended"):
            yield (status,), float(sum(1 for i in held if i.status == status))

    def gate_refusals() -> Samples:
        yield ("INSTITUTION_SUSPENDED",), float(core.gate.suspended_refused)
        yield ("QUOTA_EXHAUSTED",), float(core.quotas.refused)

    gauges.add("xinrong_node_institutions", "Registered access institutions, by status", ("status",), institutions)
    gauges.add(
        "xinrong_node_gate_refusals", "Calls refused by the per-call gate since start", ("reason",), gate_refusals
    )


__all__ = ["BUDGET_REASONS", "observe_node"]
