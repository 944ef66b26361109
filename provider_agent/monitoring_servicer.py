"""AgentMonitoringService over gRPC: proto in, ``AgentMonitor`` call, proto out.

Only the configured node calls it (the server guard admits the node role;
``require_node`` checks it is *the* node). Domain errors propagate to the
guard, which maps them to a status with an ``ErrorInfo`` reason.
"""

from __future__ import annotations

import grpc

from xinrong.provider_agent.monitoring import AgentMonitor
from xinrong.rpc.auth import require_node
from xinrong.v1 import monitoring_pb2, monitoring_pb2_grpc

SERVICE_NAME = "xinrong.v1.AgentMonitoringService"


class AgentMonitoringServicer(monitoring_pb2_grpc.AgentMonitoringServiceServicer):  # type: ignore[misc]
    def __init__(self, monitor: AgentMonitor, node_id: str) -> None:
        self._monitor = monitor
        self._node_id = node_id

    def AddWatch(
        self, request: monitoring_pb2.AddWatchRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.AddWatchResponse:
        require_node(context, self._node_id)
        return monitoring_pb2.AddWatchResponse(watch_id=self._monitor.add_watch(request))

    def RemoveWatch(
        self, request: monitoring_pb2.RemoveWatchRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.RemoveWatchResponse:
        require_node(context, self._node_id)
        removed = self._monitor.remove_watch(request.watch_id)
        return monitoring_pb2.RemoveWatchResponse(watch_id=request.watch_id, removed=removed)

    def PullWatchUpdates(
        self, request: monitoring_pb2.PullWatchUpdatesRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.PullWatchUpdatesResponse:
        require_node(context, self._node_id)
        rows = self._monitor.pull(request.after_seq, request.max_updates, request.wait_ms)
        return monitoring_pb2.PullWatchUpdatesResponse(
            updates=[
                monitoring_pb2.QueuedWatchUpdate(seq=seq, update=monitoring_pb2.SealedWatchUpdate.FromString(blob))
                for seq, blob in rows
            ]
        )
