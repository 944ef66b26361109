"""EvaluationAgentService over gRPC: the node only; proto in, domain call, proto out."""

from __future__ import annotations

import grpc

from xinrong.provider_agent.evaluation import AgentEvaluation
from xinrong.rpc.auth import require_node
from xinrong.v1 import evaluation_pb2, evaluation_pb2_grpc

SERVICE_NAME = "xinrong.v1.EvaluationAgentService"


class AgentEvaluationServicer(evaluation_pb2_grpc.EvaluationAgentServiceServicer):  # type: ignore[misc]
    def __init__(self, evaluation: AgentEvaluation, node_id: str) -> None:
        self._evaluation = evaluation
        self._node_id = node_id

    def GetEvaluationUniverse(
        self, request: evaluation_pb2.GetEvaluationUniverseRequest, context: grpc.ServicerContext
    ) -> evaluation_pb2.GetEvaluationUniverseResponse:
        require_node(context, self._node_id)
        usccs, as_of = self._evaluation.universe()
        return evaluation_pb2.GetEvaluationUniverseResponse(usccs=usccs, data_as_of=as_of)

    def ComputeEvaluationPart(
        self, request: evaluation_pb2.ComputeEvaluationPartRequest, context: grpc.ServicerContext
    ) -> evaluation_pb2.ComputeEvaluationPartResponse:
        require_node(context, self._node_id)
        payload, as_of = self._evaluation.compute_part(request)
        return evaluation_pb2.ComputeEvaluationPartResponse(payload=payload, data_as_of=as_of)

    def SealEvaluationBreakdown(
        self, request: evaluation_pb2.SealEvaluationBreakdownRequest, context: grpc.ServicerContext
    ) -> evaluation_pb2.SealEvaluationBreakdownResponse:
        require_node(context, self._node_id)
        box = self._evaluation.seal_breakdown(request.request, request.enterprise_binding)
        return evaluation_pb2.SealEvaluationBreakdownResponse(sealed=box)
