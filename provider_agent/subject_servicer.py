"""AgentSubjectService over gRPC: the node relays the enterprise's signed requests; proto in, domain, proto out.

Only the configured node may call (as for AgentService); the enterprise's
own signature on every request is checked by ``SubjectDesk``.
"""

from __future__ import annotations

import grpc

from xinrong.provider_agent.subject import SubjectDesk
from xinrong.rpc.auth import require_node
from xinrong.v1 import subject_pb2, subject_pb2_grpc

SERVICE_NAME = "xinrong.v1.AgentSubjectService"


class AgentSubjectServicer(subject_pb2_grpc.AgentSubjectServiceServicer):  # type: ignore[misc]
    def __init__(self, desk: SubjectDesk, node_id: str) -> None:
        self._desk = desk
        self._node_id = node_id

    def GetSubjectReport(
        self, request: subject_pb2.GetSubjectReportRequest, context: grpc.ServicerContext
    ) -> subject_pb2.GetSubjectReportResponse:
        require_node(context, self._node_id)
        return subject_pb2.GetSubjectReportResponse(sealed=self._desk.report(request.query, request.enterprise_binding))

    def AcceptCase(
        self, request: subject_pb2.AcceptCaseRequest, context: grpc.ServicerContext
    ) -> subject_pb2.AcceptCaseResponse:
        require_node(context, self._node_id)
        state = self._desk.accept_case(request.query, request.enterprise_binding, request.case_id, request.sealed)
        return subject_pb2.AcceptCaseResponse(case_id=request.case_id, state=state)  # type: ignore[arg-type]

    def UpdateConsentPause(
        self, request: subject_pb2.UpdateConsentPauseRequest, context: grpc.ServicerContext
    ) -> subject_pb2.UpdateConsentPauseResponse:
        require_node(context, self._node_id)
        state = self._desk.update_pause(request.change, request.enterprise_binding)
        change = subject_pb2.ConsentStateChange.FromString(request.change.change)
        return subject_pb2.UpdateConsentPauseResponse(consent_id=change.consent_id, state=state)  # type: ignore[arg-type]

    def GetCaseStats(
        self, request: subject_pb2.GetCaseStatsRequest, context: grpc.ServicerContext
    ) -> subject_pb2.GetCaseStatsResponse:
        require_node(context, self._node_id)
        return self._desk.stats()
