"""Thin gRPC servicer of PublicService: proto -> PublicStore -> proto.

The server admits providers, institutions and enterprises; which of them may
call which method is decided in ``xinrong.node.public`` (CALLER_NOT_ALLOWED
otherwise). The caller is always the certificate's identity.
"""

from __future__ import annotations

import json

import grpc

from xinrong.errors import ValidationError
from xinrong.node.public import PublicStore
from xinrong.rpc.auth import require_caller
from xinrong.uscc import is_valid
from xinrong.v1 import public_pb2, public_pb2_grpc

SERVICE_NAME = "xinrong.v1.PublicService"
ALLOWED_ROLES = frozenset({"provider", "institution", "enterprise"})


def _uscc(value: str) -> str:
    if not is_valid(value):
        raise ValidationError("enterprise_uscc is not a valid USCC", public="enterprise_uscc is not a valid USCC")
    return value


class PublicServicer(public_pb2_grpc.PublicServiceServicer):  # type: ignore[misc]
    def __init__(self, store: PublicStore) -> None:
        self._store = store

    def PublishRecords(
        self, request: public_pb2.PublishRecordsRequest, context: grpc.ServicerContext
    ) -> public_pb2.PublishRecordsResponse:
        result = self._store.publish(require_caller(context), bytes(request.batch), bytes(request.signature))
        outcome = public_pb2.PUBLISH_OUTCOME_APPLIED if result.applied else public_pb2.PUBLISH_OUTCOME_ALREADY_APPLIED
        return public_pb2.PublishRecordsResponse(
            outcome=outcome,
            version=result.version,
            records_changed=result.changed,
        )

    def GetPublishState(
        self, request: public_pb2.GetPublishStateRequest, context: grpc.ServicerContext
    ) -> public_pb2.GetPublishStateResponse:
        version, period, digest = self._store.publish_state(require_caller(context))
        return public_pb2.GetPublishStateResponse(version=version, period=period, batch_sha256=digest)

    def GetPublicRecords(
        self, request: public_pb2.GetPublicRecordsRequest, context: grpc.ServicerContext
    ) -> public_pb2.GetPublicRecordsResponse:
        records, leaf = self._store.records(require_caller(context), _uscc(request.enterprise_uscc))
        response = public_pb2.GetPublicRecordsResponse(
            records=[
                public_pb2.PublicRecord(
                    provider=r.provider, field=r.field, value_json=r.value_json, as_of=r.as_of, version=r.version
                )
                for r in records
            ]
        )
        if leaf is not None:
            response.audit_leaf_index = leaf
        return response

    def FileSelfReport(
        self, request: public_pb2.FileSelfReportRequest, context: grpc.ServicerContext
    ) -> public_pb2.FileSelfReportResponse:
        filing_id, already, leaf = self._store.file(
            require_caller(context), bytes(request.filing), bytes(request.signature), bytes(request.enterprise_binding)
        )
        response = public_pb2.FileSelfReportResponse(filing_id=filing_id, already_filed=already)
        if leaf is not None:
            response.audit_leaf_index = leaf
        return response

    def WithdrawFiling(
        self, request: public_pb2.WithdrawFilingRequest, context: grpc.ServicerContext
    ) -> public_pb2.WithdrawFilingResponse:
        filing_id, already, leaf = self._store.withdraw(
            require_caller(context),
            bytes(request.withdrawal),
            bytes(request.signature),
            bytes(request.enterprise_binding),
        )
        response = public_pb2.WithdrawFilingResponse(filing_id=filing_id, already_withdrawn=already)
        if leaf is not None:
            response.audit_leaf_index = leaf
        return response

    def ListFilings(
        self, request: public_pb2.ListFilingsRequest, context: grpc.ServicerContext
    ) -> public_pb2.ListFilingsResponse:
        return public_pb2.ListFilingsResponse(
            filings=[
                public_pb2.Filing(
                    filing_id=f.filing_id,
                    filing=f.filing,
                    signature=f.signature,
                    filed_ms=f.filed_ms,
                    withdrawn_ms=f.withdrawn_ms,
                )
                for f in self._store.list_filings(require_caller(context))
            ]
        )

    def GetCreditReport(
        self, request: public_pb2.GetCreditReportRequest, context: grpc.ServicerContext
    ) -> public_pb2.GetCreditReportResponse:
        envelope = self._store.credit_report(require_caller(context), _uscc(request.enterprise_uscc))
        return public_pb2.GetCreditReportResponse(envelope_json=json.dumps(envelope, ensure_ascii=False).encode())


__all__ = ["ALLOWED_ROLES", "SERVICE_NAME", "PublicServicer"]
