"""Thin gRPC servicer of SubjectService: proto -> SubjectRights -> proto.

The runtime runs these plain functions in its thread pool (they fan out to
agents with blocking calls). The caller is the certificate's identity; the
guard of ``xinrong.rpc.server`` admits only enterprises to this service.
"""

from __future__ import annotations

import grpc

from xinrong.node.subject import SubjectRights, my_data_to_proto
from xinrong.rpc.auth import require_caller
from xinrong.v1 import subject_pb2, subject_pb2_grpc

SERVICE_NAME = "xinrong.v1.SubjectService"


class SubjectServicer(subject_pb2_grpc.SubjectServiceServicer):  # type: ignore[misc]
    def __init__(self, rights: SubjectRights) -> None:
        self._rights = rights

    def GetMyData(
        self, request: subject_pb2.GetMyDataRequest, context: grpc.ServicerContext
    ) -> subject_pb2.GetMyDataResponse:
        return my_data_to_proto(self._rights.my_data(require_caller(context), request))

    def FileCase(
        self, request: subject_pb2.FileCaseRequest, context: grpc.ServicerContext
    ) -> subject_pb2.FileCaseResponse:
        case_id, state = self._rights.file_case(require_caller(context), request)
        return subject_pb2.FileCaseResponse(case_id=case_id, state=state)  # type: ignore[arg-type]

    def ListMyConsents(
        self, request: subject_pb2.ListMyConsentsRequest, context: grpc.ServicerContext
    ) -> subject_pb2.ListMyConsentsResponse:
        return subject_pb2.ListMyConsentsResponse(consents=self._rights.list_consents(require_caller(context)))

    def ChangeConsentState(
        self, request: subject_pb2.ChangeConsentStateRequest, context: grpc.ServicerContext
    ) -> subject_pb2.ChangeConsentStateResponse:
        consent_id, state, notified = self._rights.change_state(require_caller(context), request.change)
        return subject_pb2.ChangeConsentStateResponse(
            consent_id=consent_id,
            state=state,  # type: ignore[arg-type]
            providers_notified=list(notified),
        )
