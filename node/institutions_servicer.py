"""Thin servicer of ``xinrong.v1.InstitutionAdminService``: proto -> registry -> proto.

Who may call it: the node's own certified identity only (role ``node`` and
this node's party id, like ``require_node`` at the agents). The operator
runs ``xinrong node institutions`` with the node's credentials. Why not a
new ``operator`` role: whoever holds the node's credentials already holds
everything this service could give (the database, the checkpoint signing
key), so the node's identity adds no new holder of power, needs no new role
in the CA's bindings and certificates, and no other party's certificate
(institution, enterprise, provider, another node certified by the same CA)
can ever reach it. A dedicated operator role bound by the CA would let the
operator's key be separate from the node's; it is the natural next step.
"""

from __future__ import annotations

import time

import grpc

from xinrong.errors import ValidationError
from xinrong.limits import MAX_TIMESTAMP
from xinrong.node.institutions import SUSPENDED, Institution
from xinrong.node.quotas import Limit
from xinrong.node.service import NodeCore
from xinrong.node.usage import usage_counts
from xinrong.rpc.auth import require_node
from xinrong.v1 import institutions_pb2 as pb
from xinrong.v1 import institutions_pb2_grpc

SERVICE_NAME = "xinrong.v1.InstitutionAdminService"
ALLOWED_ROLES = frozenset({"node"})

TYPE_TO_PROTO = {
    "bank": pb.INSTITUTION_TYPE_BANK,
    "insurer": pb.INSTITUTION_TYPE_INSURER,
    "guarantor": pb.INSTITUTION_TYPE_GUARANTOR,
    "credit_agency": pb.INSTITUTION_TYPE_CREDIT_AGENCY,
}
PROTO_TO_TYPE = {v: k for k, v in TYPE_TO_PROTO.items()}
RESULT_TO_PROTO = {"pass": pb.ASSESSMENT_RESULT_PASS, "fail": pb.ASSESSMENT_RESULT_FAIL}
PROTO_TO_RESULT = {v: k for k, v in RESULT_TO_PROTO.items()}
MAX_DUE_DAYS = 3660
DEFAULT_USAGE_SECONDS = 7 * 86400


def institution_to_proto(inst: Institution) -> pb.Institution:
    out = pb.Institution(
        institution_id=inst.institution_id,
        name=inst.name,
        type=TYPE_TO_PROTO.get(inst.kind, pb.INSTITUTION_TYPE_UNSPECIFIED),
        status=pb.INSTITUTION_STATUS_SUSPENDED if inst.status == SUSPENDED else pb.INSTITUTION_STATUS_ACTIVE,
        status_reason=inst.status_reason,
        status_since_ms=int(inst.status_since * 1000),
        suspended_by=inst.suspended_by,
        quota_overrides=[
            pb.QuotaOverride(method=m, rate=q.rate, burst=q.burst) for m, q in sorted(inst.quota_overrides.items())
        ],
        source=inst.source,
    )
    if inst.assessment is not None:
        a = inst.assessment
        out.assessment.CopyFrom(
            pb.SecurityAssessment(
                assessed_at=int(a.assessed_at),
                result=RESULT_TO_PROTO.get(a.result, pb.ASSESSMENT_RESULT_UNSPECIFIED),
                valid_until=int(a.valid_until),
                assessor=a.assessor,
            )
        )
    return out


class InstitutionAdminServicer(institutions_pb2_grpc.InstitutionAdminServiceServicer):  # type: ignore[misc]
    def __init__(self, core: NodeCore) -> None:
        self._core = core
        self._registry = core.institutions

    def _caller(self, context: grpc.ServicerContext) -> None:
        require_node(context, self._core.credentials.party_id)

    def RegisterInstitution(
        self, request: pb.RegisterInstitutionRequest, context: grpc.ServicerContext
    ) -> pb.RegisterInstitutionResponse:
        self._caller(context)
        kind = PROTO_TO_TYPE.get(request.type)
        if kind is None:
            raise ValidationError("institution type missing or unknown")
        inst = self._core.register_institution(request.binding, request.name, kind)
        return pb.RegisterInstitutionResponse(institution=institution_to_proto(inst))

    def ListInstitutions(
        self, request: pb.ListInstitutionsRequest, context: grpc.ServicerContext
    ) -> pb.ListInstitutionsResponse:
        self._caller(context)
        return pb.ListInstitutionsResponse(institutions=[institution_to_proto(i) for i in self._registry.all()])

    def GetInstitution(
        self, request: pb.GetInstitutionRequest, context: grpc.ServicerContext
    ) -> pb.GetInstitutionResponse:
        self._caller(context)
        return pb.GetInstitutionResponse(
            institution=institution_to_proto(self._registry.require(request.institution_id))
        )

    def SuspendInstitution(
        self, request: pb.SuspendInstitutionRequest, context: grpc.ServicerContext
    ) -> pb.SuspendInstitutionResponse:
        self._caller(context)
        if not request.reason.strip():
            raise ValidationError("a suspension needs a reason")
        inst = self._registry.suspend(request.institution_id, request.reason)
        return pb.SuspendInstitutionResponse(institution=institution_to_proto(inst))

    def ResumeInstitution(
        self, request: pb.ResumeInstitutionRequest, context: grpc.ServicerContext
    ) -> pb.ResumeInstitutionResponse:
        self._caller(context)
        inst = self._registry.resume(request.institution_id)
        return pb.ResumeInstitutionResponse(institution=institution_to_proto(inst))

    def RecordAssessment(
        self, request: pb.RecordAssessmentRequest, context: grpc.ServicerContext
    ) -> pb.RecordAssessmentResponse:
        self._caller(context)
        a = request.assessment
        result = PROTO_TO_RESULT.get(a.result)
        if result is None:
            raise ValidationError("assessment result missing or unknown")
        inst = self._registry.assess(
            request.institution_id,
            result=result,
            valid_until=float(a.valid_until),
            assessor=a.assessor,
            assessed_at=float(a.assessed_at),
        )
        return pb.RecordAssessmentResponse(institution=institution_to_proto(inst))

    def ListDueAssessments(
        self, request: pb.ListDueAssessmentsRequest, context: grpc.ServicerContext
    ) -> pb.ListDueAssessmentsResponse:
        self._caller(context)
        days = min(int(request.within_days), MAX_DUE_DAYS)
        return pb.ListDueAssessmentsResponse(institutions=[institution_to_proto(i) for i in self._registry.due(days)])

    def SetQuota(self, request: pb.SetQuotaRequest, context: grpc.ServicerContext) -> pb.SetQuotaResponse:
        self._caller(context)
        q = request.quota
        if not q.method:
            raise ValidationError("quota needs a method name or '*'")
        if q.rate < 0 or (q.rate > 0 and q.burst < 1) or q.rate != q.rate or q.burst != q.burst:
            raise ValidationError("quota rate must be >= 0 and burst >= 1")
        limit = Limit(float(q.rate), float(q.burst)) if q.rate > 0 else None
        inst = self._registry.set_quota(request.institution_id, q.method, limit)
        return pb.SetQuotaResponse(institution=institution_to_proto(inst))

    def GetInstitutionUsage(
        self, request: pb.GetInstitutionUsageRequest, context: grpc.ServicerContext
    ) -> pb.GetInstitutionUsageResponse:
        self._caller(context)
        inst = self._registry.require(request.institution_id)
        if request.since > MAX_TIMESTAMP:  # found by bench fuzz: past ~2**53 ms SQLite's INTEGER overflowed
            raise ValidationError(f"since must be a Unix time before {MAX_TIMESTAMP} (2100)")
        since = float(request.since) if request.since > 0 else time.time() - DEFAULT_USAGE_SECONDS
        counts = usage_counts(self._core.db, inst.institution_id, since)
        return pb.GetInstitutionUsageResponse(
            counts=[
                pb.UsageCount(day=day, purpose=purpose, provider=provider, decision=decision, count=n)
                for (day, purpose, provider, decision), n in sorted(counts.items())
            ],
            total=sum(counts.values()),
        )
