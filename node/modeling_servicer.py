"""Thin gRPC servicer of ``ModelingService``: proto -> ``ModelingHub`` -> proto.

The caller is the certificate's identity (``peer_of``), never a request
field. Every request/response pair's serialized size is counted for the
job's institution (the wire bytes ``GetJob`` and the benchmark report), and
a test observer, if set, sees every message. Domain errors propagate to the
guard of ``xinrong.rpc.server``, which maps them to a status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from xinrong.modeling.serde import (
    job_state_to_proto,
    psi_selections_from_proto,
    score_outcome_to_proto,
    score_subjects_from_proto,
    scoring_key_from_proto,
)
from xinrong.node.modeling import ModelingHub
from xinrong.node.modeling_links import Observer
from xinrong.rpc.auth import Peer, require_caller
from xinrong.v1 import modeling_pb2, modeling_pb2_grpc

SERVICE_NAME = "xinrong.v1.ModelingService"

R = TypeVar("R")


class ModelingServicer(modeling_pb2_grpc.ModelingServiceServicer):  # type: ignore[misc]
    def __init__(self, hub: ModelingHub, observer: Observer | None = None) -> None:
        self._hub = hub
        self._observer = observer

    def _serve(
        self, context: grpc.ServicerContext, rpc: str, request: Any, job_id: str, handler: Callable[[Peer], R]
    ) -> R:
        caller = require_caller(context)
        if self._observer is not None:
            self._observer(caller.party_id, "in", rpc, request.SerializeToString())
        response = handler(caller)
        self._hub.count_bank_bytes(job_id, caller.party_id, request.ByteSize() + response.ByteSize())  # type: ignore[attr-defined]
        if self._observer is not None:
            self._observer(caller.party_id, "out", rpc, response.SerializeToString())  # type: ignore[attr-defined]
        return response

    def CreateJob(
        self, request: modeling_pb2.CreateJobRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.CreateJobResponse:
        def handle(caller: Peer) -> modeling_pb2.CreateJobResponse:
            record, bindings = self._hub.create_job(
                caller, request.job_id, tuple(request.provider_ids), request.backend, request.he_params_json
            )
            return modeling_pb2.CreateJobResponse(
                job_id=record.job_id, state=job_state_to_proto(record.state), provider_bindings=bindings
            )

        return self._serve(context, "CreateJob", request, request.job_id, handle)

    def ExchangePsi(
        self, request: modeling_pb2.ExchangePsiRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.ExchangePsiResponse:
        def handle(caller: Peer) -> modeling_pb2.ExchangePsiResponse:
            body = self._hub.exchange_psi(caller, request.job_id, request.provider_id, bytes(request.body))
            return modeling_pb2.ExchangePsiResponse(job_id=request.job_id, provider_id=request.provider_id, body=body)

        return self._serve(context, "ExchangePsi", request, request.job_id, handle)

    def SelectPsi(
        self, request: modeling_pb2.SelectPsiRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.SelectPsiResponse:
        def handle(caller: Peer) -> modeling_pb2.SelectPsiResponse:
            rows = self._hub.select_psi(caller, request.job_id, psi_selections_from_proto(request.selections))
            return modeling_pb2.SelectPsiResponse(job_id=request.job_id, aligned_rows=rows)

        return self._serve(context, "SelectPsi", request, request.job_id, handle)

    def StartTraining(
        self, request: modeling_pb2.StartTrainingRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.StartTrainingResponse:
        return self._serve(
            context,
            "StartTraining",
            request,
            request.job_id,
            lambda caller: modeling_pb2.StartTrainingResponse(
                body=self._hub.start_training(caller, request.job_id, bytes(request.body))
            ),
        )

    def Forward(
        self, request: modeling_pb2.ForwardRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.ForwardResponse:
        return self._serve(
            context,
            "Forward",
            request,
            request.job_id,
            lambda caller: modeling_pb2.ForwardResponse(
                body=self._hub.forward(caller, request.job_id, bytes(request.body))
            ),
        )

    def Backward(
        self, request: modeling_pb2.BackwardRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.BackwardResponse:
        return self._serve(
            context,
            "Backward",
            request,
            request.job_id,
            lambda caller: modeling_pb2.BackwardResponse(
                body=self._hub.backward(caller, request.job_id, bytes(request.body))
            ),
        )

    def ComputeLoss(
        self, request: modeling_pb2.ComputeLossRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.ComputeLossResponse:
        return self._serve(
            context,
            "ComputeLoss",
            request,
            request.job_id,
            lambda caller: modeling_pb2.ComputeLossResponse(
                body=self._hub.compute_loss(caller, request.job_id, bytes(request.body))
            ),
        )

    def EndEpoch(
        self, request: modeling_pb2.EndEpochRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.EndEpochResponse:
        return self._serve(
            context,
            "EndEpoch",
            request,
            request.job_id,
            lambda caller: modeling_pb2.EndEpochResponse(
                body=self._hub.end_epoch(caller, request.job_id, bytes(request.body))
            ),
        )

    def FinishJob(
        self, request: modeling_pb2.FinishJobRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.FinishJobResponse:
        return self._serve(
            context,
            "FinishJob",
            request,
            request.job_id,
            lambda caller: modeling_pb2.FinishJobResponse(
                job_id=request.job_id, metadata_json=self._hub.finish(caller, request.job_id, bytes(request.body))
            ),
        )

    def ResumeJob(
        self, request: modeling_pb2.ResumeJobRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.ResumeJobResponse:
        def handle(caller: Peer) -> modeling_pb2.ResumeJobResponse:
            body, epochs = self._hub.resume(caller, request.job_id, bytes(request.body))
            return modeling_pb2.ResumeJobResponse(body=body, provider_epochs=list(epochs))

        return self._serve(context, "ResumeJob", request, request.job_id, handle)

    def RestoreJob(
        self, request: modeling_pb2.RestoreJobRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.RestoreJobResponse:
        return self._serve(
            context,
            "RestoreJob",
            request,
            request.job_id,
            lambda caller: modeling_pb2.RestoreJobResponse(
                job_id=request.job_id, epoch=self._hub.restore(caller, request.job_id, bytes(request.body))
            ),
        )

    def ScoreJobRows(
        self, request: modeling_pb2.ScoreJobRowsRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.ScoreJobRowsResponse:
        return self._serve(
            context,
            "ScoreJobRows",
            request,
            request.job_id,
            lambda caller: modeling_pb2.ScoreJobRowsResponse(
                request_id=request.request_id,
                aggregate=self._hub.score_rows(
                    caller,
                    request.job_id,
                    request.request_id,
                    bytes(request.positions),
                    scoring_key_from_proto(request.scoring_key),
                ),
            ),
        )

    def ScoreEnterprises(
        self, request: modeling_pb2.ScoreEnterprisesRequest, context: grpc.ServicerContext
    ) -> modeling_pb2.ScoreEnterprisesResponse:
        def handle(caller: Peer) -> modeling_pb2.ScoreEnterprisesResponse:
            result = self._hub.score_enterprises(
                caller,
                request.job_id,
                request.request_id,
                request.requested_at,
                score_subjects_from_proto(request.subjects),
                scoring_key_from_proto(request.scoring_key),
            )
            return modeling_pb2.ScoreEnterprisesResponse(
                request_id=result.request_id,
                outcomes=[score_outcome_to_proto(o) for o in result.outcomes],
                aggregate=result.aggregate,
            )

        return self._serve(context, "ScoreEnterprises", request, request.job_id, handle)

    def GetJob(self, request: modeling_pb2.GetJobRequest, context: grpc.ServicerContext) -> modeling_pb2.ModelingJob:
        def handle(caller: Peer) -> modeling_pb2.ModelingJob:
            record, resumable, wire = self._hub.get_job(caller, request.job_id)
            return modeling_pb2.ModelingJob(
                job_id=record.job_id,
                institution_id=record.institution,
                provider_ids=list(record.providers),
                backend=record.backend,
                state=job_state_to_proto(record.state),
                failure_reason=record.failure_reason,
                epochs_done=record.epochs_done,
                resumable=resumable,
                wire_bytes=wire,
                created_at=record.created_ms // 1000,
                updated_at=record.updated_ms // 1000,
            )

        return self._serve(context, "GetJob", request, request.job_id, handle)
