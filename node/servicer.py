"""Thin gRPC servicer: proto -> domain input -> NodeCore -> proto.

Verify and GetIndicators are coroutines served on the node's event loop
(the asyncio runtime of ``xinrong.rpc.server``); the other methods are
plain functions the runtime runs in its thread pool.

No decisions are made here. The caller's identity comes from its verified
client certificate (``peer_of``), never from the request; domain errors
propagate to the guard interceptor in ``xinrong.rpc.server``, which maps
them to a status with an ``ErrorInfo`` reason.
"""

from __future__ import annotations

import grpc

from xinrong.node.serde import answers_to_proto, indicators_input_from_proto, verify_input_from_proto
from xinrong.node.service import NodeCore
from xinrong.rpc.auth import require_caller
from xinrong.v1 import node_pb2, node_pb2_grpc

SERVICE_NAME = "xinrong.v1.NodeService"


class NodeServicer(node_pb2_grpc.NodeServiceServicer):  # type: ignore[misc]
    def __init__(self, core: NodeCore) -> None:
        self._core = core

    def RegisterConsent(
        self, request: node_pb2.RegisterConsentRequest, context: grpc.ServicerContext
    ) -> node_pb2.RegisterConsentResponse:
        consent_id, state = self._core.register_consent(require_caller(context), request.consent)
        return node_pb2.RegisterConsentResponse(consent_id=consent_id, state=state)  # type: ignore[arg-type]

    def RevokeConsent(
        self, request: node_pb2.RevokeConsentRequest, context: grpc.ServicerContext
    ) -> node_pb2.RevokeConsentResponse:
        result = self._core.revoke_consent(require_caller(context), request.revocation)
        return node_pb2.RevokeConsentResponse(
            consent_id=result.consent_id,
            state=result.state,  # type: ignore[arg-type]
            providers_notified=list(result.providers_notified),
        )

    def GetConsentStatus(
        self, request: node_pb2.GetConsentStatusRequest, context: grpc.ServicerContext
    ) -> node_pb2.GetConsentStatusResponse:
        status = self._core.consent_status(require_caller(context), request.consent_id)
        return node_pb2.GetConsentStatusResponse(
            consent_id=status.consent_id,
            state=status.state,  # type: ignore[arg-type]
            uses=status.uses,
            max_uses=status.max_uses,
            valid_until=status.valid_until,
        )

    async def Verify(self, request: node_pb2.VerifyRequest, context: grpc.ServicerContext) -> node_pb2.VerifyResponse:
        result = await self._core.verify(require_caller(context), verify_input_from_proto(request))
        return node_pb2.VerifyResponse(
            request_id=result.request_id, answers=answers_to_proto(result), audit_leaf_index=result.audit_leaf_index
        )

    async def GetIndicators(
        self, request: node_pb2.GetIndicatorsRequest, context: grpc.ServicerContext
    ) -> node_pb2.GetIndicatorsResponse:
        result = await self._core.get_indicators(require_caller(context), indicators_input_from_proto(request))
        return node_pb2.GetIndicatorsResponse(
            request_id=result.request_id, answers=answers_to_proto(result), audit_leaf_index=result.audit_leaf_index
        )

    def ListParties(
        self, request: node_pb2.ListPartiesRequest, context: grpc.ServicerContext
    ) -> node_pb2.ListPartiesResponse:
        return node_pb2.ListPartiesResponse(
            bindings=self._core.list_parties(require_caller(context), int(request.role))
        )

    def GetCatalog(
        self, request: node_pb2.GetCatalogRequest, context: grpc.ServicerContext
    ) -> node_pb2.GetCatalogResponse:
        raw, digest = self._core.get_catalog()
        return node_pb2.GetCatalogResponse(catalog_toml=raw, sha256=digest)
