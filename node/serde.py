"""NodeService messages <-> the node's domain inputs and results: one place, both ways."""

from __future__ import annotations

from xinrong.node.access import Answers, IndicatorsInput, VerifyInput
from xinrong.v1 import node_pb2


def verify_input_from_proto(request: node_pb2.VerifyRequest) -> VerifyInput:
    return VerifyInput(
        request_id=request.request_id,
        requested_at=request.requested_at,
        enterprise_uscc=request.enterprise_uscc,
        consent_id=request.consent_id,
        claims=tuple(request.claims),
    )


def indicators_input_from_proto(request: node_pb2.GetIndicatorsRequest) -> IndicatorsInput:
    return IndicatorsInput(
        request_id=request.request_id,
        requested_at=request.requested_at,
        enterprise_uscc=request.enterprise_uscc,
        consent_id=request.consent_id,
        queries=tuple((q.field, int(q.form)) for q in request.queries),
    )


def answers_to_proto(result: Answers) -> list[node_pb2.ProviderAnswer]:
    return [node_pb2.ProviderAnswer(provider=provider, sealed=box) for provider, box in result.answers]
