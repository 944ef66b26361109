"""Routing: one persistent mTLS channel per provider agent, concurrent fan-out.

Each agent is reached through ``xinrong.rpc.channel.secure_channel`` pinned
to the provider's certificate name, so the node only ever hands a consent
and an institution's binding to the agent it meant to reach.

Evaluations travel on one long-lived ``EvaluateStream`` per agent
(``_BatchingStream``): calls that arrive while a batch is at the agent are
queued and sent together as the next batch. Under load this coalesces
concurrent bank requests and divides the per-call cost of the node-agent
link (in Python gRPC, a unary call costs several times a stream message)
by the batch size; an idle node sends each call at once, so a lone request
waits for nothing. Each call still carries its own deadline; a call that
misses it resets the stream, failing the calls sharing it with
PROVIDER_UNAVAILABLE, and the next call opens a fresh stream.

Failures: an agent's own refusal keeps the agent's reason (a revoked or
out-of-period consent reads the same to the bank whether the node or the
agent noticed), except reasons that describe the node-agent link rather
than the request (INTERNAL, CALLER_NOT_ALLOWED, ...), which become
PROVIDER_UNAVAILABLE like a timeout or a dead agent.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import grpc

from keys.layout import PartyCredentials
from node.config import ProviderEndpoint
from xinrong.errors import ProviderUnavailable, Reason, XinrongError
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import RemoteError, decode_rpc_error, remote_error_from_fields
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


def agent_failure(provider: str, err: grpc.RpcError | RemoteError) -> XinrongError:
    """Map an agent's error to the error the institution sees (see module docstring)."""
    remote = err if isinstance(err, RemoteError) else decode_rpc_error(err)
    try:
        reason = Reason(remote.reason)
    except ValueError:
        reason = Reason.PROVIDER_UNAVAILABLE
    if reason in PROPAGATED_REASONS:
        return XinrongError(f"agent {provider} refused: {reason.value}", reason=reason)
    return ProviderUnavailable(f"agent {provider} failed: {remote.code.name} {remote.reason}")


MAX_BATCH = 64
# Two batches at the agent: one being answered, the next already waiting, so
# the agent never idles for a node round trip while calls are queued.
MAX_IN_FLIGHT = 2
_CLOSE = object()


class _BatchingStream:
    """One EvaluateStream to one agent, coalescing concurrent calls into batches.

    At most ``MAX_IN_FLIGHT`` batches are at the agent (it answers a stream's
    batches in order, one after another); calls arriving meanwhile form the
    next batch.
    """

    def __init__(self, provider: str, stub: Any) -> None:
        self.provider = provider
        self._stub = stub
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._queued: list[agent_pb2.AgentCall] = []
        self._pending: dict[int, Future[agent_pb2.AgentCallResult]] = {}
        self._in_flight = 0
        self._max_in_flight = MAX_IN_FLIGHT
        self._outbox: queue.SimpleQueue[object] | None = None
        self._call: Any = None
        self.batches_sent = 0  # for tests and diagnostics

    def submit(self, call: agent_pb2.AgentCall) -> Future[agent_pb2.AgentCallResult]:
        future: Future[agent_pb2.AgentCallResult] = Future()
        with self._cond:
            if self._call is None:
                self._open_locked()
            call.call_id = next(self._ids)
            self._pending[call.call_id] = future
            self._queued.append(call)
            self._send_locked()
        return future

    def _open_locked(self) -> None:
        outbox: queue.SimpleQueue[object] = queue.SimpleQueue()

        def requests() -> Iterator[agent_pb2.EvaluateStreamRequest]:
            while True:
                item = outbox.get()
                if item is _CLOSE:
                    return
                assert isinstance(item, agent_pb2.EvaluateStreamRequest)
                yield item

        self._outbox = outbox
        self._in_flight = 0
        self._call = self._stub.EvaluateStream(requests())
        threading.Thread(
            target=self._read, args=(self._call,), name=f"agent-stream-{self.provider}", daemon=True
        ).start()

    def _send_locked(self) -> None:
        if self._in_flight >= self._max_in_flight or not self._queued or self._outbox is None:
            return
        batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
        self._in_flight += 1
        self.batches_sent += 1
        self._outbox.put(agent_pb2.EvaluateStreamRequest(calls=batch))

    def _read(self, call: Any) -> None:
        failure: XinrongError = ProviderUnavailable(f"stream to agent {self.provider} closed")
        try:
            for response in call:
                with self._cond:
                    self._in_flight -= 1
                    done = [(self._pending.pop(r.call_id, None), r) for r in response.results]
                    self._send_locked()
                for future, result in done:
                    if future is not None and not future.done():
                        future.set_result(result)
        except grpc.RpcError as err:
            failure = ProviderUnavailable(f"stream to agent {self.provider} failed: {decode_rpc_error(err)}")
        finally:
            with self._cond:
                if self._call is call:
                    self._reset_locked(failure)

    def _reset_locked(self, failure: XinrongError) -> None:
        pending, self._pending = self._pending, {}
        self._queued = []
        if self._outbox is not None:
            self._outbox.put(_CLOSE)
        if self._call is not None:
            self._call.cancel()
        self._call, self._outbox, self._in_flight = None, None, 0
        for future in pending.values():
            if not future.done():
                future.set_exception(failure)

    def reset(self, reason: str) -> None:
        """Give up on the stream (a call missed its deadline): fail what shares it."""
        with self._cond:
            self._reset_locked(ProviderUnavailable(f"agent {self.provider}: {reason}"))

    def close(self) -> None:
        self.reset("node shutting down")


class AgentPool:
    """Persistent channels, stubs and evaluation streams for every configured provider agent."""

    def __init__(self, endpoints: Sequence[ProviderEndpoint], credentials: PartyCredentials, *, timeout: float) -> None:
        self.timeout = timeout
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, Any] = {}
        self._streams: dict[str, _BatchingStream] = {}
        for endpoint in endpoints:
            channel = secure_channel(
                endpoint.address, credentials, server_role="provider", server_id=endpoint.name, options=_CHANNEL_OPTIONS
            )
            self._channels[endpoint.name] = channel
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            self._stubs[endpoint.name] = stub
            self._streams[endpoint.name] = _BatchingStream(endpoint.name, stub)

    @property
    def providers(self) -> frozenset[str]:
        return frozenset(self._stubs)

    def evaluate_claims(
        self, requests: Mapping[str, agent_pb2.EvaluateClaimsRequest], *, recipient_id: str
    ) -> list[tuple[str, common_pb2.SealedBox]]:
        calls = {name: agent_pb2.AgentCall(claims=req) for name, req in requests.items()}
        return self._fan_out(calls, recipient_id)

    def evaluate_indicators(
        self, requests: Mapping[str, agent_pb2.EvaluateIndicatorsRequest], *, recipient_id: str
    ) -> list[tuple[str, common_pb2.SealedBox]]:
        calls = {name: agent_pb2.AgentCall(indicators=req) for name, req in requests.items()}
        return self._fan_out(calls, recipient_id)

    def _fan_out(self, calls: Mapping[str, agent_pb2.AgentCall], recipient_id: str) -> list[tuple[str, common_pb2.SealedBox]]:
        """Call every agent concurrently; all answers, or one failure.

        Every call is submitted before any is awaited, so the wall time is the
        slowest agent (bounded by the deadline), not the sum. Every call is
        awaited, so which failure is reported does not depend on timing: the
        first agent refusal in provider order, else PROVIDER_UNAVAILABLE.
        """
        names = sorted(calls)
        futures = [(n, self._streams[n].submit(calls[n])) for n in names]
        answers: list[tuple[str, common_pb2.SealedBox]] = []
        failure: XinrongError | None = None
        for name, future in futures:
            candidate: XinrongError | None = None
            try:
                result = future.result(timeout=self.timeout)
            except FutureTimeout:
                self._streams[name].reset("deadline exceeded")
                candidate = ProviderUnavailable(f"agent {name} did not answer within {self.timeout}s")
            except XinrongError as exc:
                candidate = exc
            else:
                if result.HasField("error"):
                    e = result.error
                    candidate = agent_failure(name, remote_error_from_fields(e.code, e.reason, e.message))
                elif result.sealed.recipient_id != recipient_id or not result.sealed.ciphertext:
                    # The node cannot read the box, but it can refuse to relay one
                    # that is visibly not for the caller.
                    candidate = ProviderUnavailable(f"agent {name} returned a box not sealed to the caller")
                else:
                    answers.append((name, result.sealed))
            if candidate is not None and (
                # An agent's refusal says more than another agent's outage; keep the first refusal.
                failure is None
                or (failure.reason is Reason.PROVIDER_UNAVAILABLE and candidate.reason is not Reason.PROVIDER_UNAVAILABLE)
            ):
                failure = candidate
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
        for stream in self._streams.values():
            stream.close()
        for channel in self._channels.values():
            channel.close()
