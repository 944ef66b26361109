"""AgentService over gRPC: proto in, domain call, proto out. Nothing else.

The guard interceptor (``xinrong.rpc.server``) has already refused every
caller whose certificate role is not ``node``; here the certificate's party
id must also be the configured node id, so a second CA-certified node (say,
a test or staging node) cannot drive this provider. Domain errors propagate
to the interceptor, which maps them to a status with an ``ErrorInfo`` reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from xinrong.errors import Reason, XinrongError
from xinrong.provider_agent.evaluate import ProviderAgent
from xinrong.provider_agent.serde import claims_request_from_proto, indicators_request_from_proto
from xinrong.rpc.auth import require_node
from xinrong.rpc.errors import status_fields
from xinrong.rpc.observe import stream_call
from xinrong.v1 import agent_pb2, agent_pb2_grpc, common_pb2

SERVICE_NAME = "xinrong.v1.AgentService"

log = logging.getLogger(__name__)

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    def __init__(self, agent: ProviderAgent, node_id: str) -> None:
        self._agent = agent
        self._node_id = node_id

    def EvaluateClaims(
        self, request: agent_pb2.EvaluateClaimsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EvaluateClaimsResponse:
        require_node(context, self._node_id)
        return agent_pb2.EvaluateClaimsResponse(sealed=self._agent.evaluate_claims(claims_request_from_proto(request)))

    def EvaluateIndicators(
        self, request: agent_pb2.EvaluateIndicatorsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EvaluateIndicatorsResponse:
        require_node(context, self._node_id)
        return agent_pb2.EvaluateIndicatorsResponse(
            sealed=self._agent.evaluate_indicators(indicators_request_from_proto(request))
        )

    def _one(self, call: agent_pb2.AgentCall) -> agent_pb2.AgentCallResult:
        """One call of a batch, logged and counted under the bank's request id (``stream_call``)."""
        kind = call.WhichOneof("call") or "none"
        request_id = call.claims.request_id if kind == "claims" else call.indicators.request_id
        with stream_call(f"EvaluateStream/{kind}", request_id) as done:
            result = self._answer(call)
            done(_CODE_NAMES.get(result.error.code, "UNKNOWN") if result.HasField("error") else "OK")
            return result

    def _answer(self, call: agent_pb2.AgentCall) -> agent_pb2.AgentCallResult:
        """One call of a batch: answered or refused on its own, like a unary call."""
        try:
            kind = call.WhichOneof("call")
            box: common_pb2.SealedBox
            if kind == "claims":
                box = self._agent.evaluate_claims(claims_request_from_proto(call.claims))
            elif kind == "indicators":
                box = self._agent.evaluate_indicators(indicators_request_from_proto(call.indicators))
            else:
                raise XinrongError("stream call without a request", reason=Reason.INVALID_ARGUMENT)
            return agent_pb2.AgentCallResult(call_id=call.call_id, sealed=box)
        except Exception as exc:
            if isinstance(exc, XinrongError):
                log.info("[EvaluateStream] refused %s: %s", exc.reason.value, exc.detail)
            else:
                log.exception("[EvaluateStream] internal error")
            code, reason, message = status_fields(exc)
            return agent_pb2.AgentCallResult(
                call_id=call.call_id, error=agent_pb2.CallError(code=code, reason=reason, message=message)
            )

    def EvaluateStream(
        self, request_iterator: Iterator[agent_pb2.EvaluateStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[agent_pb2.EvaluateStreamResponse]:
        require_node(context, self._node_id)
        for batch in request_iterator:
            # One state commit for the batch; answers leave only after it.
            with self._agent.batch():
                results = [self._one(call) for call in batch.calls]
            yield agent_pb2.EvaluateStreamResponse(results=results)

    def UpdateConsentStatus(
        self, request: agent_pb2.UpdateConsentStatusRequest, context: grpc.ServicerContext
    ) -> agent_pb2.UpdateConsentStatusResponse:
        require_node(context, self._node_id)
        result = self._agent.update_consent_status(request.revocation, request.enterprise_binding)
        return agent_pb2.UpdateConsentStatusResponse(consent_id=result.consent_id, state=result.state)

    def GetAgentInfo(
        self, request: agent_pb2.GetAgentInfoRequest, context: grpc.ServicerContext
    ) -> agent_pb2.GetAgentInfoResponse:
        require_node(context, self._node_id)
        info = self._agent.info()
        return agent_pb2.GetAgentInfoResponse(
            provider=info.provider, data_as_of=info.data_as_of, enterprises=info.enterprises
        )
