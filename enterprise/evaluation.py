"""The enterprise's own evaluation: score, grade and the breakdown from its own data.

The breakdown is computed by each provider's agent from the enterprise's
records there, signed by the provider and sealed to a fresh X25519 key the
enterprise signs into its request, so the node, which relays the boxes,
reads none of it. The client checks every provider binding against the CA,
every signature, and that each box answers this request for this enterprise.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from xinrong.keys.binding import verify_binding
from xinrong.keys.layout import PartyCredentials
from xinrong.keys.sealing import SealingKey
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import evaluation_pb2, evaluation_pb2_grpc

BREAKDOWN_REQUEST_CONTEXT = "xinrong.v1.BreakdownRequest"
BREAKDOWN_CONTEXT = "xinrong.v1.EvaluationBreakdown"
BREAKDOWN_CONTENT_TYPE = "xinrong.v1.SignedBreakdown"
TIMEOUT = 30.0


def own_evaluation(
    node_target: str, credentials: PartyCredentials, *, period: str = "", node_id: str = "node"
) -> dict[str, Any]:
    reply = SealingKey(X25519PrivateKey.generate())
    inner = evaluation_pb2.BreakdownRequest(
        enterprise_uscc=credentials.party_id,
        request_id=f"bd-{secrets.token_hex(12)}",
        requested_at=int(time.time()),
        reply_public_key=reply.public_raw,
    )
    raw = inner.SerializeToString(deterministic=True)
    request = evaluation_pb2.GetOwnEvaluationRequest(
        period=period,
        breakdown_request=evaluation_pb2.SignedBreakdownRequest(
            request=raw, signature=credentials.signing_key.sign(BREAKDOWN_REQUEST_CONTEXT, raw)
        ),
        enterprise_binding=credentials.binding.signed,
    )
    channel = secure_channel(node_target, credentials, server_role="node", server_id=node_id)
    try:
        resp = evaluation_pb2_grpc.EvaluationServiceStub(channel).GetOwnEvaluation(request, timeout=TIMEOUT)
    except grpc.RpcError as err:
        raise decode_rpc_error(err) from None
    finally:
        channel.close()
    breakdown: list[dict[str, Any]] = []
    for box, signed_binding in zip(resp.breakdowns, resp.provider_bindings):
        provider = verify_binding(credentials.ca, signed_binding, expect_role="provider")
        opened = reply.open(
            box, recipient_id=credentials.party_id, content_type=BREAKDOWN_CONTENT_TYPE, context=inner.request_id
        )
        signed = evaluation_pb2.SignedBreakdown()
        signed.ParseFromString(opened)
        provider.verify_key.verify(BREAKDOWN_CONTEXT, signed.breakdown, signed.signature)
        body = json.loads(signed.breakdown)
        if (body["provider"], body["enterprise"], body["request_id"]) != (
            provider.provider,
            credentials.party_id,
            inner.request_id,
        ):
            raise ValueError(f"breakdown from {provider.provider} answers another request")
        breakdown.append(body)
    return {
        "enterprise": credentials.party_id,
        "period": resp.period,
        "evaluation_id": resp.evaluation_id,
        "index_version": resp.index_version,
        "index_sha256": resp.index_sha256,
        "scored": resp.scored,
        "score": resp.score if resp.scored else None,
        "grade": resp.grade if resp.scored else None,
        "evaluated_at": resp.evaluated_at,
        "breakdown": breakdown,
        "breakdown_points": sum(int(b["total"]) for b in breakdown),
    }
