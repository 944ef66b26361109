"""Routing: one persistent mTLS channel per provider agent, concurrent fan-out.

Each agent is reached through ``xinrong.rpc.channel.secure_channel`` pinned
to the provider's certificate name, so the node only ever hands a consent
and an institution's binding to the agent it meant to reach. Calls are
issued as gRPC futures on the shared channels (no thread per call) and all
carry the configured deadline.

Failures: an agent's own refusal keeps the agent's reason (a revoked or
out-of-period consent reads the same to the bank whether the node or the
agent noticed), except reasons that describe the node-agent link rather
than the request (INTERNAL, CALLER_NOT_ALLOWED, ...), which become
PROVIDER_UNAVAILABLE like a timeout or a dead agent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import grpc

from keys.layout import PartyCredentials
from node.config import ProviderEndpoint
from xinrong.errors import ProviderUnavailable, Reason, XinrongError
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import agent_pb2, agent_pb2_grpc, common_pb2

log = logging.getLogger(__name__)

# Agent refusals passed on to the institution unchanged: they concern the
# request or the consent, which the institution may know about.
PROPAGATED_REASONS = frozenset(
    {
        Reason.ACCESS_DENIED,
        Reason.CONSENT_EXPIRED,
        Reason.CONSENT_NOT_YET_VALID,
        Reason.CONSENT_REVOKED,
        Reason.CONSENT_PAUSED,
        Reason.CONSENT_GRANTEE_MISMATCH,
        Reason.CLAIM_OUT_OF_SCOPE,
        Reason.CONSENT_USES_EXHAUSTED,
        Reason.CONSENT_DAILY_LIMIT,
        Reason.CONSENT_PERIOD_MISMATCH,
        Reason.CONSENT_MALFORMED,
        Reason.REQUEST_REPLAYED,
        Reason.REQUEST_STALE,
        Reason.THRESHOLD_NOT_PUBLISHED,
        Reason.FORM_NOT_ALLOWED,
        Reason.UNKNOWN_FIELD,
        Reason.INVALID_CLAIM,
        Reason.INVALID_ARGUMENT,
        Reason.ENTERPRISE_BUDGET_EXHAUSTED,
    }
)

# Reconnect quickly after an agent restarts; gRPC's default backoff grows to
# 120 s, during which every request routed to that agent would fail.
_CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


@dataclass(frozen=True)
class PushOutcome:
    """Result of pushing a revocation to one agent."""

    acked: bool
    reason: str = ""


def agent_failure(provider: str, err: grpc.RpcError) -> XinrongError:
    """Map an agent's error to the error the institution sees (see module docstring)."""
    remote = decode_rpc_error(err)
    try:
        reason = Reason(remote.reason)
    except ValueError:
        reason = Reason.PROVIDER_UNAVAILABLE
    if reason in PROPAGATED_REASONS:
        return XinrongError(f"agent {provider} refused: {reason.value}", reason=reason)
    return ProviderUnavailable(f"agent {provider} failed: {remote.code.name} {remote.reason}")


class AgentPool:
    """Persistent channels and stubs for every configured provider agent."""

    def __init__(self, endpoints: Sequence[ProviderEndpoint], credentials: PartyCredentials, *, timeout: float) -> None:
        self.timeout = timeout
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, Any] = {}
        for endpoint in endpoints:
            channel = secure_channel(
                endpoint.address, credentials, server_role="provider", server_id=endpoint.name, options=_CHANNEL_OPTIONS
            )
            self._channels[endpoint.name] = channel
            self._stubs[endpoint.name] = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]

    @property
    def providers(self) -> frozenset[str]:
        return frozenset(self._stubs)

    def evaluate_claims(
        self, requests: Mapping[str, agent_pb2.EvaluateClaimsRequest], *, recipient_id: str
    ) -> list[tuple[str, common_pb2.SealedBox]]:
        return self._fan_out("EvaluateClaims", requests, recipient_id)

    def evaluate_indicators(
        self, requests: Mapping[str, agent_pb2.EvaluateIndicatorsRequest], *, recipient_id: str
    ) -> list[tuple[str, common_pb2.SealedBox]]:
        return self._fan_out("EvaluateIndicators", requests, recipient_id)

    def _fan_out(self, method: str, requests: Mapping[str, Any], recipient_id: str) -> list[tuple[str, common_pb2.SealedBox]]:
        """Call every agent concurrently; all answers, or one failure.

        All futures are started before any is awaited, so the wall time is the
        slowest agent (bounded by the deadline), not the sum. Every call is
        awaited, so which failure is reported does not depend on timing: the
        first agent refusal in provider order, else PROVIDER_UNAVAILABLE.
        """
        names = sorted(requests)
        calls: list[tuple[str, Callable[[], Any]]]
        if len(names) == 1:
            # One agent: a plain blocking call costs less CPU than a future.
            name = names[0]
            stub_method = getattr(self._stubs[name], method)
            calls = [(name, lambda: stub_method(requests[name], timeout=self.timeout))]
        else:
            futures = [(n, getattr(self._stubs[n], method).future(requests[n], timeout=self.timeout)) for n in names]
            calls = [(n, f.result) for n, f in futures]
        answers: list[tuple[str, common_pb2.SealedBox]] = []
        failure: XinrongError | None = None
        for name, wait in calls:
            try:
                response = wait()
            except grpc.RpcError as err:
                candidate = agent_failure(name, err)
                # An agent's refusal says more than another agent's outage; keep the first refusal.
                if failure is None or (
                    failure.reason is Reason.PROVIDER_UNAVAILABLE and candidate.reason is not Reason.PROVIDER_UNAVAILABLE
                ):
                    failure = candidate
                continue
            sealed = response.sealed
            if sealed.recipient_id != recipient_id or not sealed.ciphertext:
                # The node cannot read the box, but it can refuse to relay one
                # that is visibly not for the caller.
                candidate = ProviderUnavailable(f"agent {name} returned a box not sealed to the caller")
                failure = failure or candidate
                continue
            answers.append((name, sealed))
        if failure is not None:
            raise failure
        return answers

    def push_revocation(
        self, providers: Sequence[str], request: agent_pb2.UpdateConsentStatusRequest
    ) -> dict[str, PushOutcome]:
        """Push one revocation to several agents concurrently; never raises."""
        calls = []
        outcomes: dict[str, PushOutcome] = {}
        for name in sorted(set(providers)):
            stub = self._stubs.get(name)
            if stub is None:
                outcomes[name] = PushOutcome(False, "NOT_CONFIGURED")
                continue
            calls.append((name, stub.UpdateConsentStatus.future(request, timeout=self.timeout)))
        for name, call in calls:
            try:
                response = call.result()
            except grpc.RpcError as err:
                remote = decode_rpc_error(err)
                outcomes[name] = PushOutcome(False, remote.reason or remote.code.name)
                continue
            if response.state == common_pb2.CONSENT_STATE_REVOKED:
                outcomes[name] = PushOutcome(True)
            else:
                outcomes[name] = PushOutcome(False, "NOT_REVOKED")
        return outcomes

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
