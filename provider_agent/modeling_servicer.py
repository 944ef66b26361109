"""``AgentModelingService`` over gRPC: proto in, ``AgentModeling`` call, proto out.

The guard interceptor already refused every caller whose certificate role is
not ``node``; here, as in ``xinrong.provider_agent.servicer``, the certificate's
party id must also be the configured node id, so no other CA-certified node
can drive this provider's modeling jobs.
"""

from __future__ import annotations

import grpc

from xinrong.modeling.serde import scoring_key_from_proto
from xinrong.provider_agent.modeling import AgentModeling
from xinrong.rpc.auth import require_node
from xinrong.v1 import modeling_pb2, modeling_pb2_grpc

SERVICE_NAME = "xinrong.v1.AgentModelingService"


class AgentModelingServicer(modeling_pb2_grpc.AgentModelingServiceServicer):  # type: ignore[misc]
    def __init__(self, modeling: AgentModeling, node_id: str) -> None:
        self._m = modeling
        self._node_id = node_id

    def OpenJob(
        self, request: modeling_pb2.AgentOpenJobRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentOpenJobResponse:
        require_node(context, self._node_id)
        rows = self._m.open_job(request.job_id, request.institution_binding, request.backend, request.resume)
        return modeling_pb2.AgentOpenJobResponse(provider_id=self._m.provider, rows=rows)

    def RespondPsi(
        self, request: modeling_pb2.AgentRespondPsiRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentRespondPsiResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentRespondPsiResponse(body=self._m.respond_psi(request.job_id, bytes(request.body)))

    def SelectPsi(
        self, request: modeling_pb2.AgentSelectPsiRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentSelectPsiResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentSelectPsiResponse(aligned_rows=self._m.select_psi(request.job_id, bytes(request.body)))

    def SetupParty(
        self, request: modeling_pb2.AgentSetupPartyRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentSetupPartyResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentSetupPartyResponse(body=self._m.setup(request.job_id, bytes(request.body)))

    def ComputeBound(
        self, request: modeling_pb2.AgentComputeBoundRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentComputeBoundResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentComputeBoundResponse(body=self._m.bound(request.job_id, bytes(request.body)))

    def EncryptPartial(
        self, request: modeling_pb2.AgentEncryptPartialRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentEncryptPartialResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentEncryptPartialResponse(sealed=self._m.encrypt(request.job_id, bytes(request.body)))

    def ComputeGradient(
        self, request: modeling_pb2.AgentComputeGradientRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentComputeGradientResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentComputeGradientResponse(body=self._m.gradient(request.job_id, bytes(request.body)))

    def ApplyUpdate(
        self, request: modeling_pb2.AgentApplyUpdateRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentApplyUpdateResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentApplyUpdateResponse(body=self._m.update(request.job_id, bytes(request.body)))

    def EndEpoch(
        self, request: modeling_pb2.AgentEndEpochRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentEndEpochResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentEndEpochResponse(body=self._m.end_epoch(request.job_id, bytes(request.body)))

    def FinishJob(
        self, request: modeling_pb2.AgentFinishJobRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentFinishJobResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentFinishJobResponse(body=self._m.finish(request.job_id, bytes(request.body)))

    def GetResumeState(
        self, request: modeling_pb2.AgentGetResumeStateRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentGetResumeStateResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentGetResumeStateResponse(body=self._m.resume_state(request.job_id, bytes(request.body)))

    def RestoreJob(
        self, request: modeling_pb2.AgentRestoreJobRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentRestoreJobResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentRestoreJobResponse(body=self._m.restore(request.job_id, bytes(request.body)))

    def ScoreRows(
        self, request: modeling_pb2.AgentScoreRowsRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentScoreRowsResponse:
        require_node(context, self._node_id)
        payload = self._m.score_rows(
            request.job_id, request.request_id, bytes(request.positions), scoring_key_from_proto(request.scoring_key)
        )
        return modeling_pb2.AgentScoreRowsResponse(payload=payload)

    def ScoreEnterprises(
        self, request: modeling_pb2.AgentScoreEnterprisesRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentScoreEnterprisesResponse:
        require_node(context, self._node_id)
        payload = self._m.score_enterprises(
            request.job_id,
            request.request_id,
            request.requested_at,
            list(request.enterprise_usccs),
            list(request.consents),
            request.audience_binding,
            scoring_key_from_proto(request.scoring_key),
        )
        return modeling_pb2.AgentScoreEnterprisesResponse(payload=payload)

    def AbortJob(
        self, request: modeling_pb2.AgentAbortJobRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.AgentAbortJobResponse:
        require_node(context, self._node_id)
        return modeling_pb2.AgentAbortJobResponse(held=self._m.abort(request.job_id, request.reason))
