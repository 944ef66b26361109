"""What a provider agent pulls from the node before it serves (issue 10, A13): ``AgentSyncService``.

The node pushes revocations and pauses to agents and retries until each
acknowledges, and pushes at once when an agent that was down accepts a
connection again. That still left a window after an agent's restart in
which it served before the push arrived. An agent configured with the
node's address (``[agent] node_address``) therefore pulls, before its port
opens, every revocation and pause / resume it has not acknowledged. What it
gets is what the push would carry: enterprise-signed, verified by the agent
itself, so the node cannot forge a revocation this way any more than by
pushing it. The pull only tells the calling provider about its own pending
items; it is an audit entry (counts only).
"""

from __future__ import annotations

import logging

import grpc

from xinrong.errors import Reason, XinrongError
from xinrong.node.audit import AuditEvent, Decision
from xinrong.node.service import NodeCore
from xinrong.node.subject import SubjectRights
from xinrong.rpc.auth import Peer, peer_of
from xinrong.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "xinrong.v1.AgentSyncService"
AGENT_SYNC_ROLES = frozenset({"provider"})


class AgentSync:
    """The pull's use case: the calling provider's pending revocations and pauses."""

    def __init__(self, core: NodeCore, rights: SubjectRights | None) -> None:
        self._core = core
        self._rights = rights

    def pull(self, caller: Peer) -> agent_pb2.PullConsentUpdatesResponse:
        provider = caller.party_id
        if caller.role != "provider" or provider not in self._core.agents.providers:
            raise XinrongError(f"{provider} is not a routed provider", reason=Reason.CALLER_NOT_ALLOWED)
        revocations = self._core.lifecycle.pending_revocations(provider)
        pauses = self._rights.pending_pauses(provider) if self._rights is not None else []
        with self._core.db.transaction() as tx:
            self._core.audit.append(
                tx,
                AuditEvent(
                    caller_role=caller.role,
                    caller_id=provider,
                    method="PullConsentUpdates",
                    decision=Decision.ALLOWED,
                    reason=f"{len(revocations)} revocations, {len(pauses)} pauses",
                    providers=(provider,),
                ),
                int(self._core.clock() * 1000),
            )
        log.info("agent %s pulled %d revocations and %d pauses", provider, len(revocations), len(pauses))
        return agent_pb2.PullConsentUpdatesResponse(revocations=revocations, pauses=pauses)


class AgentSyncServicer(agent_pb2_grpc.AgentSyncServiceServicer):  # type: ignore[misc]
    def __init__(self, sync: AgentSync) -> None:
        self._sync = sync

    def PullConsentUpdates(
        self, request: agent_pb2.PullConsentUpdatesRequest, context: grpc.ServicerContext
    ) -> agent_pb2.PullConsentUpdatesResponse:
        caller = peer_of(context)
        if caller is None:
            raise XinrongError("no verified caller", reason=Reason.CALLER_NOT_ALLOWED)
        return self._sync.pull(caller)


__all__ = ["AGENT_SYNC_ROLES", "SERVICE_NAME", "AgentSync", "AgentSyncServicer"]
