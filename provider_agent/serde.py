"""AgentService messages <-> the agent's domain requests: one place."""

from __future__ import annotations

from xinrong.provider_agent.evaluate import ClaimsRequest, IndicatorQuery, IndicatorsRequest
from xinrong.v1 import agent_pb2


def claims_request_from_proto(request: agent_pb2.EvaluateClaimsRequest) -> ClaimsRequest:
    return ClaimsRequest(
        request_id=request.request_id,
        requested_at=request.requested_at,
        enterprise_uscc=request.enterprise_uscc,
        consent=request.consent,
        audience_binding=request.audience_binding,
        claims=tuple(request.claims),
    )


def indicators_request_from_proto(request: agent_pb2.EvaluateIndicatorsRequest) -> IndicatorsRequest:
    return IndicatorsRequest(
        request_id=request.request_id,
        requested_at=request.requested_at,
        enterprise_uscc=request.enterprise_uscc,
        consent=request.consent,
        audience_binding=request.audience_binding,
        queries=tuple(IndicatorQuery(field=q.field, form=q.form) for q in request.queries),
    )
