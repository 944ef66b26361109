"""Routing: one persistent mTLS channel per provider agent, concurrent fan-out.

Each agent is reached through ``xinrong.rpc.channel.secure_aio_channel``
(and ``secure_channel`` for revocation pushes) pinned to the provider's
certificate name, so the node only ever hands a consent
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

Outages (issue 10, A6): a failure that shows the agent down (timeout, dead
stream, unreachable) opens the provider's circuit breaker. While it is open,
admission refuses requests for that provider at step 7 with
PROVIDER_UNAVAILABLE and a retry-after (google.rpc.RetryInfo), before any
consent is consulted: fast, no use and no budget burned, and no oracle (an
agent's availability says nothing about an enterprise). The node itself
probes the agent (``GetAgentInfo``, no enterprise data) every
``PROBE_SECONDS`` and closes the breaker at the first answer, so no bank's
use is spent on a probe and the first request after the agent is back gets
through within a probe interval. A failed call that provably reached no data
(never written to the agent, or refused by it) is marked ``data_read=False``
so admission refunds the enterprise's budget (the consent's use stays).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from xinrong.errors import ProviderUnavailable, Reason, XinrongError
from xinrong.keys.layout import PartyCredentials
from xinrong.node.config import ProviderEndpoint
from xinrong.rpc.channel import connects_within, secure_aio_channel, secure_channel
from xinrong.rpc.errors import RemoteError, decode_rpc_error, remote_error_from_fields
from xinrong.rpc.observe import outgoing_metadata
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
    ("grpc.max_reconnect_backoff_ms", 500),
)

# Circuit breaker (see module docstring): probe interval of an open breaker,
# and the retry-after a refused bank is told.
PROBE_SECONDS = 0.2
PROBE_TIMEOUT_SECONDS = 0.5
RETRY_AFTER_SECONDS = 1.0


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
        refusal = XinrongError(f"agent {provider} refused: {reason.value}", reason=reason)
        # The agent checks the consent and request before it reads any data.
        refusal.data_read = False
        return refusal
    return ProviderUnavailable(f"agent {provider} failed: {remote.code.name} {remote.reason}")


# The end-of-stream marker of an asyncio call's read().
_EOF = grpc.aio.EOF  # type: ignore[attr-defined]

MAX_BATCH = 64
# Two batches at the agent: one being answered, the next already waiting, so
# the agent never idles for a node round trip while calls are queued.
MAX_IN_FLIGHT = 2
# While a batch is at the agent, a call that finds fewer than
# COALESCE_TARGET companions waits up to COALESCE_SECONDS for more before
# it is sent. Each batch costs a stream write and read at the node, a
# read, a write and a state COMMIT at the agent, and (see ``durable``) a
# COMMIT at the node; under load, calls otherwise trickle out one or two
# at a time. An idle link sends at once, so a lone request never waits.
COALESCE_TARGET = 4
COALESCE_SECONDS = 0.001

# Makes the node's decisions for the calls of a batch durable before the
# batch leaves (``xinrong.node.db.Database.wait_durable``): given the largest unit
# token of the batch, returns once a COMMIT covers it.
Durable = Callable[[int], None]


def _no_durability(token: int) -> None:
    return None


@dataclass(frozen=True)
class StreamDepth:
    """How full one agent's batching stream is (for metrics): calls queued, awaiting answers, batches out."""

    queued: int = 0
    pending: int = 0
    batches_in_flight: int = 0


class _BatchingStream:
    """One EvaluateStream to one agent, coalescing concurrent calls into batches.

    Lives on the node's event loop (every method runs there, so no locks):
    at most ``MAX_IN_FLIGHT`` batches are at the agent (it answers a
    stream's batches in order, one after another); calls arriving meanwhile
    form the next batch. One writer task sends, one reader task resolves
    each call's future by its call id. Just before a batch is written, one
    COMMIT makes every call in it durable at the node: the group commit
    follows the batches.
    """

    def depth(self) -> StreamDepth:
        """Read from another thread without the loop: three int reads, each consistent on its own."""
        return StreamDepth(len(self._queued), len(self._pending), self._in_flight)

    def __init__(self, provider: str, stub: Any, durable: Durable) -> None:
        self.provider = provider
        self._stub = stub
        self._durable = durable
        self._ids = itertools.count(1)
        self._queued: list[tuple[agent_pb2.AgentCall, int]] = []
        self._pending: dict[int, asyncio.Future[agent_pb2.AgentCallResult]] = {}
        self._in_flight = 0
        self._call: Any = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Call ids whose batch was handed to the transport (may have reached the agent).
        self._sent: set[int] = set()
        self.batches_sent = 0  # for tests and diagnostics

    async def call(self, call: agent_pb2.AgentCall, timeout: float, durable_token: int) -> agent_pb2.AgentCallResult:
        """Send one call on the stream and wait for its result, at most ``timeout`` seconds.

        ``durable_token``: the node's database unit that must be committed
        before the call leaves. A call that misses its deadline resets the
        stream (failing the calls sharing it), since the agent is evidently
        stuck or gone.
        """
        if self._call is None:
            self._open()
        call.call_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[agent_pb2.AgentCallResult] = loop.create_future()
        self._pending[call.call_id] = future
        self._queued.append((call, durable_token))
        self._wake.set()
        # A plain timer rather than asyncio.wait_for, which adds a future, a
        # callback and a loop hop to every call: ~10 us on the loop per request.
        timer = loop.call_later(timeout, self._expire, future, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, future: asyncio.Future[agent_pb2.AgentCallResult], timeout: float) -> None:
        if not future.done():
            # Fails this call and every call sharing the stream.
            self.reset(ProviderUnavailable(f"agent {self.provider} did not answer within {timeout}s"))

    def _open(self) -> None:
        call = self._stub.EvaluateStream()
        self._call, self._in_flight = call, 0
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write(call)), loop.create_task(self._read(call))]

    async def _write(self, call: Any) -> None:
        try:
            while True:
                await self._wake.wait()
                if self._in_flight and len(self._queued) < COALESCE_TARGET:
                    await asyncio.sleep(COALESCE_SECONDS)
                self._wake.clear()
                while self._queued and self._in_flight < MAX_IN_FLIGHT:
                    batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
                    try:
                        self._durable(max(token for _, token in batch))
                    except Exception as err:
                        log.error("node database refused to commit; failing %d calls to %s", len(batch), self.provider)
                        for c, _ in batch:
                            future = self._pending.pop(c.call_id, None)
                            if future is not None and not future.done():
                                future.set_exception(err)
                        continue
                    self._in_flight += 1
                    self.batches_sent += 1
                    # Marked sent before the write: the agent's answer can be read (and
                    # discard the id) before the write's await returns; marked after, the id
                    # stayed in ``_sent`` for the stream's life (a soak: one int per call).
                    ids = [c.call_id for c, _ in batch]
                    self._sent.update(ids)
                    try:
                        await call.write(agent_pb2.EvaluateStreamRequest(calls=[c for c, _ in batch]))
                    except BaseException:
                        # A write that raises never handed the batch to the transport
                        # (the call failed before it connected): those calls reached nothing.
                        self._sent.difference_update(ids)
                        raise
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self._fail(call, err)

    async def _read(self, call: Any) -> None:
        try:
            while True:
                response = await call.read()
                if response is _EOF:
                    break
                self._in_flight -= 1
                for result in response.results:
                    self._sent.discard(result.call_id)
                    future = self._pending.pop(result.call_id, None)
                    if future is not None and not future.done():
                        future.set_result(result)
                if self._queued:
                    self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self._fail(call, err)
            return
        self._fail(call, None)

    def _fail(self, call: Any, err: Exception | None) -> None:
        if call is not self._call:
            return
        if isinstance(err, grpc.RpcError):
            detail = f"failed: {decode_rpc_error(err)}"
        else:
            detail = "closed" if err is None else f"failed: {type(err).__name__}"
        self.reset(ProviderUnavailable(f"stream to agent {self.provider} {detail}"))

    def reset(self, failure: XinrongError) -> None:
        """Give up on the stream and fail every call sharing it; the next call opens a fresh one."""
        pending, self._pending = self._pending, {}
        sent, self._sent = self._sent, set()
        self._queued = []
        if self._call is not None:
            self._call.cancel()
        self._call, self._in_flight = None, 0
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks = []
        self._wake = asyncio.Event()
        unsent = ProviderUnavailable(failure.detail, reason=failure.reason, public=failure.public_message)
        unsent.data_read = False
        for call_id, future in pending.items():
            if not future.done():
                future.set_exception(failure if call_id in sent else unsent)


class AgentPool:
    """Channels to every configured provider agent.

    Evaluations (the hot path) go over asyncio channels and batching streams
    owned by the node's event loop, created on first use there; revocation
    pushes, which run in ordinary threads, use blocking channels.
    """

    def __init__(
        self,
        endpoints: Sequence[ProviderEndpoint],
        credentials: PartyCredentials,
        *,
        timeout: float,
        durable: Durable = _no_durability,
    ) -> None:
        self.timeout = timeout
        self._durable = durable
        self._endpoints = {e.name: e for e in endpoints}
        self._credentials = credentials
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, Any] = {}
        for endpoint in endpoints:
            channel = secure_channel(
                endpoint.address, credentials, server_role="provider", server_id=endpoint.name, options=_CHANNEL_OPTIONS
            )
            self._channels[endpoint.name] = channel
            self._stubs[endpoint.name] = agent_pb2_grpc.AgentServiceStub(channel)
        self._aio_channels: dict[str, grpc.aio.Channel] = {}
        self._streams: dict[str, _BatchingStream] = {}
        # Open circuit breakers: provider -> the task probing it (on the loop).
        self._open: dict[str, asyncio.Task[None]] = {}

    @property
    def providers(self) -> frozenset[str]:
        return frozenset(self._stubs)

    def blocking_channels(self) -> dict[str, grpc.Channel]:
        """The blocking channel to each agent (a copy), e.g. for health probes from a scrape thread."""
        return dict(self._channels)

    def stream_depths(self) -> dict[str, StreamDepth]:
        """Every configured provider's stream depth; zeros where no stream is open yet."""
        return {name: (s.depth() if (s := self._streams.get(name)) else StreamDepth()) for name in self._stubs}

    def down(self, providers: Collection[str]) -> XinrongError | None:
        """The refusal for providers whose breaker is open, or None (admission step 7)."""
        down = sorted(p for p in providers if p in self._open)
        if not down:
            return None
        names = ", ".join(down)
        refusal = ProviderUnavailable(
            f"circuit open for {down}",
            public=f"provider {names} is unavailable; retry after {RETRY_AFTER_SECONDS:g} s",
        )
        refusal.data_read = False
        refusal.retry_after = RETRY_AFTER_SECONDS
        return refusal

    def _trip(self, name: str) -> None:
        """Open the provider's breaker and probe the agent until it answers."""
        if name in self._open:
            return
        log.warning("agent %s unavailable: refusing its requests until it answers a probe", name)
        self._open[name] = asyncio.get_running_loop().create_task(self._probe(name))

    async def _probe(self, name: str) -> None:
        stub = self.stream(name)._stub
        try:
            while True:
                await asyncio.sleep(PROBE_SECONDS)
                try:
                    await stub.GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=PROBE_TIMEOUT_SECONDS)
                except grpc.RpcError:
                    continue
                log.info("agent %s answers again", name)
                return
        finally:
            self._open.pop(name, None)

    def batches_sent(self, name: str) -> int:
        """Batches sent on the agent's stream so far (for tests and diagnostics)."""
        stream = self._streams.get(name)
        return stream.batches_sent if stream is not None else 0

    def stream(self, name: str) -> _BatchingStream:
        """The agent's batching stream (on the running loop; created on first use)."""
        stream = self._streams.get(name)
        if stream is None:
            endpoint = self._endpoints[name]
            channel = secure_aio_channel(
                endpoint.address, self._credentials, server_role="provider", server_id=name, options=_CHANNEL_OPTIONS
            )
            self._aio_channels[name] = channel
            stream = self._streams[name] = _BatchingStream(
                name, agent_pb2_grpc.AgentServiceStub(channel), self._durable
            )
        return stream

    async def evaluate_claims(
        self, requests: Mapping[str, agent_pb2.EvaluateClaimsRequest], *, recipient_id: str, durable_token: int
    ) -> list[tuple[str, common_pb2.SealedBox]]:
        calls = {name: agent_pb2.AgentCall(claims=req) for name, req in requests.items()}
        return await self._fan_out(calls, recipient_id, durable_token)

    async def evaluate_indicators(
        self, requests: Mapping[str, agent_pb2.EvaluateIndicatorsRequest], *, recipient_id: str, durable_token: int
    ) -> list[tuple[str, common_pb2.SealedBox]]:
        calls = {name: agent_pb2.AgentCall(indicators=req) for name, req in requests.items()}
        return await self._fan_out(calls, recipient_id, durable_token)

    async def _fan_out(
        self, calls: Mapping[str, agent_pb2.AgentCall], recipient_id: str, durable_token: int
    ) -> list[tuple[str, common_pb2.SealedBox]]:
        """Call every agent concurrently; all answers, or one failure.

        Every call is sent before any is awaited, so the wall time is the
        slowest agent (bounded by the deadline), not the sum. Every call is
        awaited, so which failure is reported does not depend on timing: the
        first agent refusal in provider order, else PROVIDER_UNAVAILABLE.
        """
        names = sorted(calls)
        outcomes: list[agent_pb2.AgentCallResult | BaseException]
        if len(names) == 1:  # the common case, without gather's task per call
            try:
                outcomes = [await self.stream(names[0]).call(calls[names[0]], self.timeout, durable_token)]
            except XinrongError as exc:
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(
                *(self.stream(n).call(calls[n], self.timeout, durable_token) for n in names), return_exceptions=True
            )
        answers: list[tuple[str, common_pb2.SealedBox]] = []
        failure: XinrongError | None = None
        data_read = False
        for name, outcome in zip(names, outcomes):
            candidate: XinrongError | None = None
            if isinstance(outcome, XinrongError):
                candidate = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            elif outcome.HasField("error"):
                e = outcome.error
                candidate = agent_failure(name, remote_error_from_fields(e.code, e.reason, e.message))
            elif outcome.sealed.recipient_id != recipient_id or not outcome.sealed.ciphertext:
                # The node cannot read the box, but it can refuse to relay one
                # that is visibly not for the caller.
                candidate = ProviderUnavailable(f"agent {name} returned a box not sealed to the caller")
            else:
                answers.append((name, outcome.sealed))
            if candidate is None or candidate.data_read:
                data_read = True
            if candidate is not None and candidate.reason is Reason.PROVIDER_UNAVAILABLE:
                self._trip(name)
            if candidate is not None and (
                # An agent's refusal says more than another agent's outage; keep the first refusal.
                failure is None
                or (
                    failure.reason is Reason.PROVIDER_UNAVAILABLE
                    and candidate.reason is not Reason.PROVIDER_UNAVAILABLE
                )
            ):
                failure = candidate
        if failure is not None:
            # Refund the enterprise's budget only if no agent may have read anything.
            failure.data_read = data_read
            raise failure
        return answers

    def reachable(self, name: str, timeout: float = 0.2) -> bool:
        """Whether the agent's push channel connects within ``timeout`` (it also starts connecting)."""
        return connects_within(self._channels.get(name), timeout)

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
            calls.append(
                (name, stub.UpdateConsentStatus.future(request, timeout=self.timeout, metadata=outgoing_metadata()))
            )
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

    async def aclose(self) -> None:
        """Close the streams and asyncio channels (on the loop that owns them)."""
        for task in list(self._open.values()):
            task.cancel()
        for stream in self._streams.values():
            stream.reset(ProviderUnavailable(f"agent {stream.provider}: node shutting down"))
        for channel in self._aio_channels.values():
            await channel.close(None)
        self._aio_channels.clear()

    def close(self) -> None:
        """Close the blocking channels (call ``aclose`` on the loop first)."""
        for channel in self._channels.values():
            channel.close()
