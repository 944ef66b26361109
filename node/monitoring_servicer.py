"""Thin gRPC servicer of MonitoringService: proto -> ``Monitoring`` -> proto.

RegisterWatch, CancelWatch and ListWatches are plain functions the asyncio
runtime runs in its pool (they call agents with blocking stubs);
StreamAlerts is an async generator on the loop, so an open stream holds no
thread. The caller is the certificate's identity; the guard of
``xinrong.rpc.server`` admits only institutions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from xinrong.node.monitoring import Monitoring
from xinrong.rpc.auth import require_caller
from xinrong.v1 import monitoring_pb2, monitoring_pb2_grpc

SERVICE_NAME = "xinrong.v1.MonitoringService"
ALLOWED_ROLES = frozenset({"institution"})


class MonitoringServicer(monitoring_pb2_grpc.MonitoringServiceServicer):  # type: ignore[misc]
    def __init__(self, monitoring: Monitoring) -> None:
        self._monitoring = monitoring

    def RegisterWatch(
        self, request: monitoring_pb2.RegisterWatchRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.RegisterWatchResponse:
        return self._monitoring.register(require_caller(context), request)

    def CancelWatch(
        self, request: monitoring_pb2.CancelWatchRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.CancelWatchResponse:
        return self._monitoring.cancel(require_caller(context), request.watch_id)

    def ListWatches(
        self, request: monitoring_pb2.ListWatchesRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.ListWatchesResponse:
        return self._monitoring.listing(require_caller(context))

    async def StreamAlerts(
        self, request: monitoring_pb2.StreamAlertsRequest, context: grpc.ServicerContext
    ) -> AsyncIterator[monitoring_pb2.StreamAlertsResponse]:
        caller = require_caller(context)
        async for response in self._monitoring.stream(caller, request.after_seq):
            yield response
