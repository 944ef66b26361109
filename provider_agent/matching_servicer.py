"""MatchingAgentService over gRPC: the node only; proto in, domain call, proto out."""

from __future__ import annotations

import grpc

from xinrong.provider_agent.matching import AgentMatching
from xinrong.rpc.auth import require_node
from xinrong.v1 import products_pb2, products_pb2_grpc

SERVICE_NAME = "xinrong.v1.MatchingAgentService"


class AgentMatchingServicer(products_pb2_grpc.MatchingAgentServiceServicer):  # type: ignore[misc]
    def __init__(self, matching: AgentMatching, node_id: str) -> None:
        self._matching = matching
        self._node_id = node_id

    def ComputeMatch(
        self, request: products_pb2.ComputeMatchRequest, context: grpc.ServicerContext
    ) -> products_pb2.ComputeMatchResponse:
        require_node(context, self._node_id)
        return self._matching.compute(request)
