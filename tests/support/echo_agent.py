"""Fake AgentService servicers (threads and coroutines) for the RPC factory tests (test_rpc_factory, test_observe)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from xinrong.errors import ConsentError
from xinrong.v1 import agent_pb2, agent_pb2_grpc


class EchoAgent(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    """An AgentService whose answers exercise the server factory: one OK, one typed refusal, one crash."""

    def GetAgentInfo(
        self, request: agent_pb2.GetAgentInfoRequest, context: grpc.ServicerContext
    ) -> agent_pb2.GetAgentInfoResponse:
        return agent_pb2.GetAgentInfoResponse(provider="tax", enterprises=1)

    def EvaluateClaims(
        self, request: agent_pb2.EvaluateClaimsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EvaluateClaimsResponse:
        raise ConsentError("internal detail that must not leak")

    def EvaluateIndicators(
        self, request: agent_pb2.EvaluateIndicatorsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EvaluateIndicatorsResponse:
        raise RuntimeError("boom: secret internal state")

    def EvaluateStream(
        self, requests: Iterator[agent_pb2.EvaluateStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[agent_pb2.EvaluateStreamResponse]:
        """Echoes call ids; a call id of 0 ends the stream with a refusal."""
        for batch in requests:
            if any(c.call_id == 0 for c in batch.calls):
                raise ConsentError("internal detail that must not leak")
            yield agent_pb2.EvaluateStreamResponse(
                results=[agent_pb2.AgentCallResult(call_id=c.call_id) for c in batch.calls]
            )


class AsyncEchoAgent(EchoAgent):
    """The same service with coroutine handlers, for the asyncio runtime's loop path."""

    async def GetAgentInfo(  # type: ignore[override]
        self, request: agent_pb2.GetAgentInfoRequest, context: grpc.ServicerContext
    ) -> agent_pb2.GetAgentInfoResponse:
        return agent_pb2.GetAgentInfoResponse(provider="tax", enterprises=1)

    async def EvaluateClaims(  # type: ignore[override]
        self, request: agent_pb2.EvaluateClaimsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EvaluateClaimsResponse:
        raise ConsentError("internal detail that must not leak")

    async def EvaluateIndicators(  # type: ignore[override]
        self, request: agent_pb2.EvaluateIndicatorsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EvaluateIndicatorsResponse:
        raise RuntimeError("boom: secret internal state")

    async def EvaluateStream(self, requests: Any, context: grpc.ServicerContext) -> Any:
        async for batch in requests:
            if any(c.call_id == 0 for c in batch.calls):
                raise ConsentError("internal detail that must not leak")
            yield agent_pb2.EvaluateStreamResponse(
                results=[agent_pb2.AgentCallResult(call_id=c.call_id) for c in batch.calls]
            )
