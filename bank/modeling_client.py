"""The bank's connection to the node's ``ModelingService``, and the protocol's transport over it.

``ModelingClient`` is the stub with deadlines, the 64 MiB message limit
checked before sending, a count of wire bytes and the node's refusals
decoded (``RemoteError``). ``GrpcNode`` is the
``xinrong.modeling.vlr.driver.NodeTransport`` the bank's ``BankDriver`` runs
over: every protocol message crosses as its ``vlr_wire`` body inside a
typed envelope (``proto/xinrong/v1/modeling.proto``).
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from xinrong.bank.job_file import JobFile
from xinrong.errors import Reason, XinrongError
from xinrong.keys.layout import PartyCredentials
from xinrong.modeling.vlr.messages import (
    BackwardReply,
    BackwardRequest,
    EpochEnd,
    FinishRequest,
    ForwardReply,
    ForwardRequest,
    JobStart,
    JobStarted,
    LossReply,
    LossRequest,
    RestoreRequest,
)
from xinrong.modeling.vlr_wire import decode, encode
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.rpc.server import DEFAULT_MAX_MESSAGE_BYTES
from xinrong.v1 import common_pb2, modeling_pb2, modeling_pb2_grpc

_MESSAGE_MARGIN = 1 << 20  # room for the envelope under the 64 MiB limit


class ModelingClient:
    """The bank's ``ModelingService`` stub: deadlines, wire-byte count, decoded refusals."""

    def __init__(
        self, target: str, credentials: PartyCredentials, *, node_id: str = "node", timeout: float = 600.0
    ) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.bytes = 0
        self.calls = 0
        self._channel = secure_channel(target, credentials, server_role="node", server_id=node_id)
        self._stub = modeling_pb2_grpc.ModelingServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def directory(self) -> Any:
        """The node's ``NodeService`` on the same channel (party bindings for a resume)."""
        from xinrong.v1 import node_pb2_grpc

        return node_pb2_grpc.NodeServiceStub(self._channel)

    def __enter__(self) -> ModelingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        size = request.ByteSize()
        if size > DEFAULT_MAX_MESSAGE_BYTES - _MESSAGE_MARGIN:
            raise XinrongError(
                f"{method} of {size / 1e6:.1f} MB exceeds the 64 MiB message limit",
                reason=Reason.INVALID_ARGUMENT,
                public=f"a {method} message of {size / 1e6:.1f} MB exceeds the 64 MiB message limit: "
                "lower [train] batch_size (or use fewer providers per job)",
            )
        try:
            response = getattr(self._stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None
        self.bytes += size + response.ByteSize()
        self.calls += 1
        return response


class GrpcNode:
    """``NodeTransport`` over the ``ModelingService``: one RPC per step, the message as its body."""

    def __init__(self, client: ModelingClient, job_id: str) -> None:
        self._client = client
        self._job_id = job_id

    def _rpc(self, method: str, request_cls: Any, msg: Any) -> bytes:
        response = self._client.call(method, request_cls(job_id=self._job_id, body=encode(msg)))
        return bytes(response.body)

    def start(self, msg: JobStart) -> JobStarted:
        return decode(JobStarted, self._rpc("StartTraining", modeling_pb2.StartTrainingRequest, msg))

    def forward(self, msg: ForwardRequest) -> ForwardReply:
        return decode(ForwardReply, self._rpc("Forward", modeling_pb2.ForwardRequest, msg))

    def backward(self, msg: BackwardRequest) -> BackwardReply:
        return decode(BackwardReply, self._rpc("Backward", modeling_pb2.BackwardRequest, msg))

    def loss(self, msg: LossRequest) -> LossReply:
        return decode(LossReply, self._rpc("ComputeLoss", modeling_pb2.ComputeLossRequest, msg))

    def end_epoch(self, msg: EpochEnd) -> None:
        self._rpc("EndEpoch", modeling_pb2.EndEpochRequest, msg)

    def restore(self, msg: RestoreRequest) -> None:
        self._client.call("RestoreJob", modeling_pb2.RestoreJobRequest(job_id=self._job_id, body=encode(msg)))

    def finish(self, msg: FinishRequest) -> dict[str, Any]:
        response = self._client.call("FinishJob", modeling_pb2.FinishJobRequest(job_id=self._job_id, body=encode(msg)))
        metadata: dict[str, Any] = json.loads(response.metadata_json)
        return metadata


def provider_bindings(client: ModelingClient, job: JobFile) -> list[common_pb2.SignedPartyBinding]:
    """Provider bindings for a resume, through the node's directory (checked against the CA by the caller)."""
    from xinrong.v1 import node_pb2

    stub = client.directory()
    try:
        resp = stub.ListParties(node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_PROVIDER), timeout=30.0)
    except grpc.RpcError as err:
        raise decode_rpc_error(err) from None
    out = []
    for signed in resp.bindings:
        binding = common_pb2.PartyBinding.FromString(signed.binding)
        if binding.party_id in job.providers:
            out.append(signed)
    return out
