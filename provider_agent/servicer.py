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
from xinrong.provider_agent.evaluate import ClaimsRequest, IndicatorQuery, IndicatorsRequest, ProviderAgent
from xinrong.rpc.auth import peer_of
from xinrong.rpc.errors import status_fields
from xinrong.v1 import agent_pb2, agent_pb2_grpc, common_pb2

SERVICE_NAME = "xinrong.v1.AgentService"

log = logging.getLogger(__name__)


def claims_request(request: agent_pb2.EvaluateClaimsRequest) -> ClaimsRequest:
    return ClaimsRequest(
        request_id=request.request_id,
        requested_at=request.requested_at,
        enterprise_uscc=request.enterprise_uscc,
        consent=request.consent,
        audience_binding=request.audience_binding,
        claims=tuple(request.claims),
    )


def indicators_request(request: agent_pb2.EvaluateIndicatorsRequest) -> IndicatorsRequest:
    return IndicatorsRequest(
        request_id=request.request_id,
        requested_at=request.requested_at,
        enterprise_uscc=request.enterprise_uscc,
        consent=request.consent,
        audience_binding=request.audience_binding,
        queries=tuple(IndicatorQuery(field=q.field, form=q.form) for q in request.queries),
    )


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    def __init__(self, agent: ProviderAgent, node_id: str) -> None:
        self._agent = agent
        self._node_id = node_id

    def _require_node(self, context: grpc.ServicerContext) -> None:
        peer = peer_of(context)
        if peer is None or peer.role != "node" or peer.party_id != self._node_id:
            raise XinrongError("caller is not the configured node", reason=Reason.CALLER_NOT_ALLOWED)

    def EvaluateClaims(
        self, request: agent_pb2.EvaluateClaimsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EvaluateClaimsResponse:
        self._require_node(context)
        return agent_pb2.EvaluateClaimsResponse(sealed=self._agent.evaluate_claims(claims_request(request)))

    def EvaluateIndicators(
        self, request: agent_pb2.EvaluateIndicatorsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EvaluateIndicatorsResponse:
        self._require_node(context)
        return agent_pb2.EvaluateIndicatorsResponse(sealed=self._agent.evaluate_indicators(indicators_request(request)))

    def _one(self, call: agent_pb2.AgentCall) -> agent_pb2.AgentCallResult:
        """One call of a batch: answered or refused on its own, like a unary call."""
        try:
            kind = call.WhichOneof("call")
            box: common_pb2.SealedBox
            if kind == "claims":
                box = self._agent.evaluate_claims(claims_request(call.claims))
            elif kind == "indicators":
                box = self._agent.evaluate_indicators(indicators_request(call.indicators))
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
        self._require_node(context)
        for batch in request_iterator:
            # One state commit for the batch; answers leave only after it.
            with self._agent.batch():
                results = [self._one(call) for call in batch.calls]
            yield agent_pb2.EvaluateStreamResponse(results=results)

    def UpdateConsentStatus(
        self, request: agent_pb2.UpdateConsentStatusRequest, context: grpc.ServicerContext
    ) -> agent_pb2.UpdateConsentStatusResponse:
        self._require_node(context)
        result = self._agent.update_consent_status(request.revocation, request.enterprise_binding)
        return agent_pb2.UpdateConsentStatusResponse(consent_id=result.consent_id, state=result.state)

    def GetAgentInfo(
        self, request: agent_pb2.GetAgentInfoRequest, context: grpc.ServicerContext
    ) -> agent_pb2.GetAgentInfoResponse:
        self._require_node(context)
        info = self._agent.info()
        return agent_pb2.GetAgentInfoResponse(
            provider=info.provider, data_as_of=info.data_as_of, enterprises=info.enterprises
        )
