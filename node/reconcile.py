"""Reconcile the node's audit log with the agents' answer logs: every entry on one side only.

Each agent keeps its own Merkle log of what it answered (request id,
audience, enterprise, consent, fields, hashes; never a value) with its own
signed checkpoints (``xinrong agent audit export``). Here each export is
first proven to be that agent's signed log: the checkpoint must verify with
the agent's key from its CA-checked binding (the node's config names it) and
the root recomputed from the exported entries must equal the signed root.
Then the node's ALLOWED Verify / GetIndicators / MatchProducts entries are matched, per
provider they were routed to, with the agents' answers by (request id,
institution, enterprise):

* ``node_only``: admitted and routed, no answer logged by the agent, and no
  FAILED entry explaining it (an answer that never came is logged FAILED);
* ``agent_only``: an answer the node has no admission for (an agent answering
  a request the node never admitted, or an audit entry gone missing).

Both are mismatches. ALLOWED entries with a FAILED entry and no answer are
counted as ``failed_explained``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xinrong.jsontext import string_array
from xinrong.keys.binding import verify_binding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.layout import read_binding_file
from xinrong.node.audit import AUDIT_COLUMNS, dialect_sql, row_to_entry
from xinrong.node.config import NodeConfig
from xinrong.tlog import merkle
from xinrong.tlog.auditleaf import answer_leaf
from xinrong.tlog.client import answers_origin
from xinrong.tlog.note import open_checkpoint
from xinrong.tlog.store import fold, frontier_root

KIND_OF_METHOD = {
    "Verify": "claims",
    "GetIndicators": "indicators",
    "MatchProducts": "matching",
    "WatchUpdate": "watch",
}


def _answer_request_id(method: str, request_id: str, enterprise: str) -> str:
    """A match run is one admission for many enterprises; each agent logs ``<run>.<USCC>`` (provider_agent.matching)."""
    return f"{request_id}.{enterprise}" if method == "MatchProducts" else request_id


class ExportRejected(ValueError):
    """An agent export that is not the agent's signed log."""


@dataclass
class ReconcileReport:
    matched: int = 0
    failed_explained: int = 0
    node_only: list[dict[str, Any]] = field(default_factory=list)
    agent_only: list[dict[str, Any]] = field(default_factory=list)
    agents: dict[str, int] = field(default_factory=dict)  # provider -> checkpoint size checked

    @property
    def mismatches(self) -> int:
        return len(self.node_only) + len(self.agent_only)

    def to_json(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "failed_explained": self.failed_explained,
            "mismatches": self.mismatches,
            "node_only": self.node_only,
            "agent_only": self.agent_only,
            "agents": self.agents,
        }


def _export_leaf(doc: dict[str, Any]) -> bytes:
    return answer_leaf(
        int(doc["seq"]),
        str(doc["request_id"]),
        str(doc["kind"]),
        str(doc["consent_id"]),
        str(doc["enterprise_uscc"]),
        str(doc["audience"]),
        string_array(doc["fields"]),
        str(doc["data_as_of"]),
        string_array(doc["answer_sha256"]),
        str(doc["sealed_sha256"]),
        int(doc["issued_at"]),
    )


def check_export(config: NodeConfig, export: dict[str, Any]) -> list[dict[str, Any]]:
    """The export's entries, once proven to be exactly the agent's signed log; ExportRejected otherwise."""
    provider = str(export.get("provider", ""))
    endpoint = next((p for p in config.providers if p.name == provider), None)
    if endpoint is None:
        raise ExportRejected(f"provider {provider!r} is not configured at this node")
    ca = CaVerifier(config.ca_cert.read_bytes())
    try:
        binding = verify_binding(ca, read_binding_file(endpoint.binding), expect_role="provider")
    except Exception:
        raise ExportRejected(f"the binding of {provider!r} does not verify") from None
    origin = answers_origin(binding.party_id)
    entries = list(export.get("entries", []))
    note = str(export.get("checkpoint", ""))
    if not note:
        if entries:
            raise ExportRejected(f"{provider}: entries without a signed checkpoint")
        return []
    try:
        checkpoint = open_checkpoint(note, origin, binding.verify_key.raw)
    except ValueError as exc:
        raise ExportRejected(f"{provider}: checkpoint does not verify: {exc}") from None
    if len(entries) != checkpoint.size:
        raise ExportRejected(f"{provider}: {len(entries)} entries, the checkpoint signs {checkpoint.size}")
    frontier: list[tuple[int, bytes]] = []
    fold(0, frontier, [merkle.leaf_hash(_export_leaf(e)) for e in entries])
    if frontier_root(frontier) != checkpoint.root:
        raise ExportRejected(f"{provider}: the entries do not give the signed root")
    return entries


def reconcile(conn: Any, config: NodeConfig, exports: Sequence[dict[str, Any]]) -> ReconcileReport:
    report = ReconcileReport()
    answers: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    checked: set[str] = set()
    for export in exports:
        entries = check_export(config, export)
        provider = str(export["provider"])
        checked.add(provider)
        report.agents[provider] = len(entries)
        for e in entries:
            key = (provider, str(e["kind"]), str(e["request_id"]), str(e["audience"]), str(e["enterprise_uscc"]))
            answers[key] = e
    allowed: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    failed: set[tuple[str, str, str]] = set()
    cursor = conn.execute(
        dialect_sql(conn, f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE method IN (?, ?, ?, ?) ORDER BY seq"),
        ("Verify", "GetIndicators", "MatchProducts", "WatchUpdate"),
    )
    for row in cursor.fetchall():
        entry = row_to_entry(row)
        event = entry.event
        request_id = _answer_request_id(event.method, event.request_id, event.enterprise)
        if event.decision.value == "FAILED":
            failed.add((request_id, event.caller_id, event.enterprise))
        if event.decision.value != "ALLOWED":
            continue
        for provider in event.providers:
            if provider not in checked:
                continue
            key = (provider, KIND_OF_METHOD[event.method], request_id, event.caller_id, event.enterprise)
            allowed[key] = {
                "leaf_index": entry.seq - 1,
                "provider": provider,
                "request_id": request_id,
                "institution": event.caller_id,
                "enterprise": event.enterprise,
                "method": event.method,
            }
    for key, doc in allowed.items():
        if key in answers:
            report.matched += 1
        elif (key[2], key[3], key[4]) in failed:
            report.failed_explained += 1
        else:
            report.node_only.append(doc)
    for key, e in answers.items():
        if key not in allowed:
            report.agent_only.append(
                {"provider": key[0], "seq": e["seq"], "request_id": key[2], "institution": key[3], "enterprise": key[4]}
            )
    return report


__all__ = ["ExportRejected", "ReconcileReport", "check_export", "reconcile"]
