"""EvaluationService: an enterprise reads its own score, grade and sealed breakdown.

Only the enterprise itself: the caller's certificate id must be the USCC
the signed breakdown request names and its binding is for. The score and
grade come from the node's store; the breakdown comes from every agent,
computed from that provider's own data and sealed to a reply key the
enterprise signed for this request: the node relays boxes it cannot open.
An agent that does not answer is left out (the enterprise sees which
providers answered); the score does not depend on it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from xinrong.errors import Reason, SignatureError, XinrongError
from xinrong.keys.binding import verify_binding
from xinrong.keys.layout import PartyCredentials
from xinrong.node.evaluation import EvaluationAgents, EvaluationStore, check_period
from xinrong.rpc.auth import require_caller
from xinrong.v1 import evaluation_pb2, evaluation_pb2_grpc

SERVICE_NAME = "xinrong.v1.EvaluationService"
ALLOWED_ROLES = frozenset({"enterprise"})

log = logging.getLogger(__name__)


class EvaluationServicer(evaluation_pb2_grpc.EvaluationServiceServicer):  # type: ignore[misc]
    def __init__(
        self, store: EvaluationStore, agents: EvaluationAgents, credentials: PartyCredentials, *, timeout: float
    ) -> None:
        self._store = store
        self._agents = agents
        self._creds = credentials
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="evaluation-breakdown")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._agents.close()

    def GetOwnEvaluation(
        self, request: evaluation_pb2.GetOwnEvaluationRequest, context: grpc.ServicerContext
    ) -> evaluation_pb2.GetOwnEvaluationResponse:
        caller = require_caller(context)
        denied = XinrongError("not the enterprise's own evaluation", reason=Reason.ACCESS_DENIED)
        try:
            binding = verify_binding(
                self._creds.ca, request.enterprise_binding, expect_role="enterprise", expect_party_id=caller.party_id
            )
        except SignatureError:
            raise denied from None
        inner = evaluation_pb2.BreakdownRequest()
        try:
            inner.ParseFromString(request.breakdown_request.request)
        except Exception:
            raise denied from None
        if caller.role != "enterprise" or inner.enterprise_uscc != binding.party_id:
            raise denied
        record = self._store.lookup(binding.party_id, check_period(request.period) if request.period else None)
        if record is None:
            raise XinrongError(
                "no evaluation", reason=Reason.NOT_FOUND, public="no evaluation has been run for this period"
            )
        call = evaluation_pb2.SealEvaluationBreakdownRequest(
            request=request.breakdown_request, enterprise_binding=request.enterprise_binding
        )
        futures = {
            name: self._pool.submit(stub.SealEvaluationBreakdown, call, timeout=self._timeout)
            for name, stub in sorted(self._agents.stubs.items())
        }
        response = evaluation_pb2.GetOwnEvaluationResponse(
            period=record.period,
            evaluation_id=record.evaluation_id,
            index_version=record.index_version,
            index_sha256=record.index_sha256,
            scored=record.scored,
            score=record.score,
            grade=record.grade,
            evaluated_at=record.evaluated_at,
        )
        for name, future in futures.items():
            try:
                sealed = future.result().sealed
            except grpc.RpcError as err:
                log.info("breakdown from %s failed: %s", name, err.code().name)
                continue
            response.breakdowns.append(sealed)
            response.provider_bindings.append(self._agents.bindings[name])
        return response
