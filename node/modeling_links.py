"""The node's links to provider agents for joint modeling: ``ProviderLink`` over gRPC.

``NodeCoordinator`` (``xinrong.modeling.vlr``) talks to providers through the
``ProviderLink`` protocol; ``GrpcProviderLink`` implements it with one
``AgentModelingService`` call per protocol step, on a persistent mTLS
channel pinned to the provider's certificate name. Every call has a
deadline (``modeling_step_timeout_seconds``), and every request and
response is counted (serialized bytes, per party) and, in tests, handed to
an observer.

What the node relays but must not read arrives sealed (``SealedBox``); the
coordinator, not the link, refuses to relay a box that is visibly not
addressed as the protocol says (``xinrong.modeling.vlr.sealing.check_box``),
so the in-process simulator runs the same check. The node cannot open any
of them.

Failures carry the provider and the step, because that is what the bank
needs to act: an agent that does not answer (dead, unreachable, deadline
passed) is ``PROVIDER_UNAVAILABLE``; an agent that refuses keeps the
agent's reason and public message. Only sizes and ids are logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

import grpc

from xinrong.errors import Reason, XinrongError
from xinrong.keys.layout import PartyCredentials
from xinrong.modeling.vlr.errors import ProtocolViolation
from xinrong.modeling.vlr.messages import (
    BoundReport,
    BoundRequest,
    EncryptRequest,
    EpochAck,
    EpochEnd,
    FinishAck,
    FinishRequest,
    GradientReply,
    GradientRequest,
    JobSetup,
    RestoreAck,
    RestoreRequest,
    ResumeQuery,
    ResumeState,
    SetupAck,
    UpdateAck,
    UpdateRequest,
)
from xinrong.modeling.vlr_wire import decode, encode
from xinrong.node.config import ProviderEndpoint
from xinrong.rpc.channel import connects_within, secure_channel
from xinrong.rpc.errors import RemoteError, decode_rpc_error
from xinrong.v1 import modeling_pb2, modeling_pb2_grpc

log = logging.getLogger(__name__)

M = TypeVar("M")

# (peer, direction relative to the node: "in" | "out", rpc name, serialized message)
Observer = Callable[[str, str, str, bytes], None]

_CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)
_UNAVAILABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


class WireMeter:
    """Serialized request + response bytes per party of one job (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes: dict[str, int] = {}

    def add(self, party: str, n: int) -> None:
        with self._lock:
            self._bytes[party] = self._bytes.get(party, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._bytes)
        out["node"] = sum(out.values())  # the node is one end of every message
        return out


class AgentModelingChannels:
    """One persistent mTLS channel and ``AgentModelingService`` stub per configured agent.

    A connection of its own, apart from the verify path's (``xinrong.node.routing``):
    a training round moves megabytes of ciphertext, and on a shared HTTP/2
    connection it would queue in front of verifications and revocation pushes.
    """

    def __init__(self, endpoints: Sequence[ProviderEndpoint], credentials: PartyCredentials) -> None:
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, Any] = {}
        for endpoint in endpoints:
            channel = secure_channel(
                endpoint.address, credentials, server_role="provider", server_id=endpoint.name, options=_CHANNEL_OPTIONS
            )
            self._channels[endpoint.name] = channel
            self._stubs[endpoint.name] = modeling_pb2_grpc.AgentModelingServiceStub(channel)

    @property
    def providers(self) -> frozenset[str]:
        return frozenset(self._stubs)

    def stub(self, provider: str) -> Any:
        stub = self._stubs.get(provider)
        if stub is None:
            raise XinrongError(
                f"no agent configured for {provider}",
                reason=Reason.PROVIDER_UNAVAILABLE,
                public=f"provider {provider} is not configured at this node",
            )
        return stub

    def reachable(self, provider: str, timeout: float) -> bool:
        """Whether the agent accepts a connection within ``timeout`` (waiting while it reconnects)."""
        return connects_within(self._channels.get(provider), timeout)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


class AgentStepError(XinrongError):
    """One provider failed one step; ``provider`` and ``step`` say which."""

    def __init__(self, provider: str, step: str, remote: RemoteError) -> None:
        unavailable = remote.code in _UNAVAILABLE_CODES or remote.reason in (
            Reason.PROVIDER_UNAVAILABLE.value,
            "UNAVAILABLE",
            "DEADLINE_EXCEEDED",
        )
        self.provider = provider
        self.step = step
        self.unavailable = unavailable
        if unavailable:
            reason = Reason.PROVIDER_UNAVAILABLE
            public = f"provider {provider} did not answer at step {step} ({remote.code.name})"
        else:
            try:
                reason = Reason(remote.reason)
            except ValueError:
                reason = Reason.JOB_FAILED
            if reason in (Reason.INTERNAL,):
                reason = Reason.JOB_FAILED
            public = f"provider {provider} refused step {step}: {remote.message}"
        super().__init__(f"{public} [{remote.code.name} {remote.reason}]", reason=reason, public=public)


def call_agent(
    stub: Any,
    method: str,
    request: Any,
    *,
    provider: str,
    step: str,
    timeout: float,
    meter: WireMeter | None,
    observer: Observer | None,
    wait_for_ready: bool = False,
) -> Any:
    """One unary call to an agent: deadline, byte count, observer, error with provider and step."""
    if observer is not None:
        observer(provider, "out", method, request.SerializeToString())
    try:
        response = getattr(stub, method)(request, timeout=timeout, wait_for_ready=wait_for_ready)
    except grpc.RpcError as err:
        remote = decode_rpc_error(err)
        log.info("agent %s failed %s: %s %s", provider, step, remote.code.name, remote.reason)
        raise AgentStepError(provider, step, remote) from None
    if meter is not None:
        meter.add(provider, request.ByteSize() + response.ByteSize())
    if observer is not None:
        observer(provider, "in", method, response.SerializeToString())
    return response


class GrpcProviderLink:
    """``xinrong.modeling.vlr.node.ProviderLink`` over gRPC to one agent, for one job."""

    def __init__(
        self,
        provider_id: str,
        stub: Any,
        *,
        job_id: str,
        timeout: float,
        meter: WireMeter,
        observer: Observer | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.provider_id = provider_id
        self._executor = executor
        self._prefetched: tuple[GradientRequest, Future[GradientReply]] | None = None
        self._stub = stub
        self._job_id = job_id
        self._timeout = timeout
        self._meter = meter
        self._observer = observer

    def _call(self, method: str, request_cls: Any, msg: Any, reply_cls: type[M] | None, step: str) -> Any:
        if getattr(msg, "job_id", self._job_id) != self._job_id:
            raise ProtocolViolation("message for another job")
        request = request_cls(job_id=self._job_id, body=encode(msg))
        response = call_agent(
            self._stub,
            method,
            request,
            provider=self.provider_id,
            step=step,
            timeout=self._timeout,
            meter=self._meter,
            observer=self._observer,
        )
        if reply_cls is None:
            return response
        try:
            reply = decode(reply_cls, response.body)
        except (ValueError, TypeError) as exc:
            raise AgentStepError(
                self.provider_id,
                step,
                RemoteError(grpc.StatusCode.INTERNAL, Reason.JOB_FAILED.value, "malformed reply"),
            ) from exc
        if getattr(reply, "job_id", self._job_id) != self._job_id:
            raise ProtocolViolation(f"{self.provider_id} answered for another job")
        return reply

    @staticmethod
    def _at(name: str, msg: Any) -> str:
        return f"{name} (epoch {msg.epoch}, batch {msg.batch})"

    def setup(self, msg: JobSetup) -> SetupAck:
        reply: SetupAck = self._call("SetupParty", modeling_pb2.AgentSetupPartyRequest, msg, SetupAck, "SetupParty")
        return reply

    def bound(self, msg: BoundRequest) -> BoundReport:
        reply: BoundReport = self._call(
            "ComputeBound", modeling_pb2.AgentComputeBoundRequest, msg, BoundReport, self._at("ComputeBound", msg)
        )
        return reply

    def encrypt(self, msg: EncryptRequest) -> bytes:
        response = self._call(
            "EncryptPartial", modeling_pb2.AgentEncryptPartialRequest, msg, None, self._at("EncryptPartial", msg)
        )
        return bytes(response.sealed)

    def prefetch_gradient(self, msg: GradientRequest) -> None:
        """Send the batch's residual now; ``gradient`` with the same message collects the answer.

        ``NodeCoordinator.backward`` calls this once it has checked the
        residuals, then decrypts the bank's own masked sums, and only then
        collects the providers' gradients. Starting the providers' call
        before the decryption lets their HE work (in their own processes)
        overlap it; the messages and their order at each provider are the
        protocol's, unchanged.
        """
        if self._executor is None:
            return
        self._prefetched = (msg, self._executor.submit(self._gradient_call, msg))

    def gradient(self, msg: GradientRequest) -> GradientReply:
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[0] == msg:
            return prefetched[1].result()
        if prefetched is not None:
            prefetched[1].cancel()
        return self._gradient_call(msg)

    def _gradient_call(self, msg: GradientRequest) -> GradientReply:
        reply: GradientReply = self._call(
            "ComputeGradient",
            modeling_pb2.AgentComputeGradientRequest,
            msg,
            GradientReply,
            self._at("ComputeGradient", msg),
        )
        return reply

    def update(self, msg: UpdateRequest) -> UpdateAck:
        reply: UpdateAck = self._call(
            "ApplyUpdate", modeling_pb2.AgentApplyUpdateRequest, msg, UpdateAck, self._at("ApplyUpdate", msg)
        )
        return reply

    def end_epoch(self, msg: EpochEnd) -> EpochAck:
        reply: EpochAck = self._call(
            "EndEpoch", modeling_pb2.AgentEndEpochRequest, msg, EpochAck, f"EndEpoch (epoch {msg.epoch})"
        )
        return reply

    def finish(self, msg: FinishRequest) -> FinishAck:
        reply: FinishAck = self._call("FinishJob", modeling_pb2.AgentFinishJobRequest, msg, FinishAck, "FinishJob")
        return reply

    def resume_state(self, msg: ResumeQuery) -> ResumeState:
        reply: ResumeState = self._call(
            "GetResumeState", modeling_pb2.AgentGetResumeStateRequest, msg, ResumeState, "GetResumeState"
        )
        return reply

    def restore(self, msg: RestoreRequest) -> RestoreAck:
        reply: RestoreAck = self._call(
            "RestoreJob", modeling_pb2.AgentRestoreJobRequest, msg, RestoreAck, f"RestoreJob (epoch {msg.epoch})"
        )
        return reply
