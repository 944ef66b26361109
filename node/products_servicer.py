"""ProductService: proto in, ``ProductDesk`` call, proto out.

Who may call what is the caller's certificate: banks publish, withdraw and
read their applications; enterprises read their own matches and apply;
every registered party lists products (they are public); only the node's
own operator (the node's certificate) runs matching on demand.
"""

from __future__ import annotations

import grpc

from xinrong.errors import Reason, XinrongError
from xinrong.node.products import ProductDesk
from xinrong.rpc.auth import require_caller
from xinrong.v1 import products_pb2, products_pb2_grpc

SERVICE_NAME = "xinrong.v1.ProductService"
ALLOWED_ROLES = frozenset({"institution", "enterprise", "provider", "node"})


class ProductServicer(products_pb2_grpc.ProductServiceServicer):  # type: ignore[misc]
    def __init__(self, desk: ProductDesk, node_id: str) -> None:
        self._desk = desk
        self._node_id = node_id

    def PublishProduct(
        self, request: products_pb2.PublishProductRequest, context: grpc.ServicerContext
    ) -> products_pb2.PublishProductResponse:
        caller = require_caller(context)
        checked = self._desk.publish(caller, request.product)
        self._desk.schedule(checked.product_id)
        return products_pb2.PublishProductResponse(product_id=checked.product_id, queued=1)

    def WithdrawProduct(
        self, request: products_pb2.WithdrawProductRequest, context: grpc.ServicerContext
    ) -> products_pb2.WithdrawProductResponse:
        caller = require_caller(context)
        at_ms = self._desk.withdraw(caller, request.product_id)
        return products_pb2.WithdrawProductResponse(product_id=request.product_id, withdrawn_at=at_ms // 1000)

    def ListProducts(
        self, request: products_pb2.ListProductsRequest, context: grpc.ServicerContext
    ) -> products_pb2.ListProductsResponse:
        require_caller(context)
        listings = self._desk.listings(request.bank_id, request.include_withdrawn)
        return products_pb2.ListProductsResponse(products=listings)

    def RunMatching(
        self, request: products_pb2.RunMatchingRequest, context: grpc.ServicerContext
    ) -> products_pb2.RunMatchingResponse:
        caller = require_caller(context)
        if caller.role != "node" or caller.party_id != self._node_id:
            raise XinrongError(
                "only the node's operator runs matching",
                reason=Reason.CALLER_NOT_ALLOWED,
                public="only the node's operator runs matching",
            )
        stats = self._desk.run(request.product_id or None)
        return products_pb2.RunMatchingResponse(
            products=stats.products,
            pairs=stats.pairs,
            refused=stats.refused,
            seconds=stats.seconds,
            admission_seconds=stats.admission_seconds,
            agents_seconds=stats.agents_seconds,
            store_seconds=stats.store_seconds,
        )

    def ListMyMatches(
        self, request: products_pb2.ListMyMatchesRequest, context: grpc.ServicerContext
    ) -> products_pb2.ListMyMatchesResponse:
        caller = require_caller(context)
        return products_pb2.ListMyMatchesResponse(matches=self._desk.my_matches(caller))

    def ApplyToProduct(
        self, request: products_pb2.ApplyToProductRequest, context: grpc.ServicerContext
    ) -> products_pb2.ApplyToProductResponse:
        caller = require_caller(context)
        application_id, received_at = self._desk.apply(caller, request.application, request.enterprise_binding)
        return products_pb2.ApplyToProductResponse(application_id=application_id, received_at=received_at)

    def ListApplications(
        self, request: products_pb2.ListApplicationsRequest, context: grpc.ServicerContext
    ) -> products_pb2.ListApplicationsResponse:
        caller = require_caller(context)
        return products_pb2.ListApplicationsResponse(applications=self._desk.applications(caller, request.product_id))
