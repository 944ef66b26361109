"""Before it serves, an agent pulls the revocations and pauses it missed while down (issue 10, A13).

The node pushes every revocation and pause / resume until each agent
acknowledges, and pushes at once when a returning agent accepts a
connection. An agent that restarts still served a moment before that push
arrived. With ``[agent] node_address`` set, ``start_agent`` calls
``AgentSyncService.PullConsentUpdates`` on the node before the agent's port
opens and applies each item exactly as a push (the enterprise's signature is
verified here; the node cannot forge one). If the node cannot be reached
the agent starts anyway and relies on the pushes (the node is then down too,
and every request comes through it); that is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from xinrong.errors import XinrongError
from xinrong.keys.layout import PartyCredentials
from xinrong.provider_agent.evaluate import ProviderAgent
from xinrong.provider_agent.subject import SubjectDesk
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

PULL_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Pulled:
    revocations: int
    pauses: int
    refused: int


def pull_consent_updates(
    node_address: str,
    node_id: str,
    credentials: PartyCredentials,
    agent: ProviderAgent,
    desk: SubjectDesk,
    *,
    timeout: float = PULL_TIMEOUT_SECONDS,
) -> Pulled | None:
    """Pull and apply; None if the node did not answer."""
    channel = secure_channel(node_address, credentials, server_role="node", server_id=node_id)
    try:
        response = agent_pb2_grpc.AgentSyncServiceStub(channel).PullConsentUpdates(
            agent_pb2.PullConsentUpdatesRequest(), timeout=timeout
        )
    except grpc.RpcError as err:
        remote = decode_rpc_error(err)
        log.warning(
            "could not pull pending revocations from the node at %s (%s %s): relying on the node's pushes",
            node_address,
            remote.code.name,
            remote.reason,
        )
        return None
    finally:
        channel.close()
    refused = 0
    for revocation in response.revocations:
        try:
            agent.update_consent_status(revocation.revocation, revocation.enterprise_binding)
        except XinrongError as exc:  # not authentic: the same refusal a push would get
            refused += 1
            log.warning("pulled revocation refused: %s", exc.reason.value)
    for pause in response.pauses:
        try:
            desk.update_pause(pause.change, pause.enterprise_binding)
        except XinrongError as exc:
            refused += 1
            log.warning("pulled pause refused: %s", exc.reason.value)
    pulled = Pulled(len(response.revocations), len(response.pauses), refused)
    log.info("pulled from the node before serving: %d revocations, %d pauses", pulled.revocations, pulled.pauses)
    return pulled


__all__ = ["PULL_TIMEOUT_SECONDS", "Pulled", "pull_consent_updates"]
