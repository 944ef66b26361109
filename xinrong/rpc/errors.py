"""The one place that maps domain errors to gRPC status codes and public reasons.

Servers abort with a ``google.rpc.Status`` carrying one ``ErrorInfo``
(reason = ``Reason`` value, domain = ``xinrong.v1``), as AIP-193 describes;
the status message is the fixed public message of the reason. Internal
detail goes to the local log only. Clients turn the status back into a
typed ``RemoteError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from xinrong.errors import PUBLIC_MESSAGES, Reason, XinrongError

log = logging.getLogger(__name__)

DOMAIN = "xinrong.v1"

STATUS_OF: dict[Reason, grpc.StatusCode] = {
    Reason.ACCESS_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.CONSENT_EXPIRED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CONSENT_NOT_YET_VALID: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CONSENT_REVOKED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CONSENT_PAUSED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CONSENT_GRANTEE_MISMATCH: grpc.StatusCode.PERMISSION_DENIED,
    Reason.CLAIM_OUT_OF_SCOPE: grpc.StatusCode.PERMISSION_DENIED,
    Reason.CONSENT_USES_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.CONSENT_DAILY_LIMIT: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.CONSENT_PERIOD_MISMATCH: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CONSENT_MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.REQUEST_REPLAYED: grpc.StatusCode.ALREADY_EXISTS,
    Reason.REQUEST_STALE: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.THRESHOLD_NOT_PUBLISHED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.FORM_NOT_ALLOWED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.UNKNOWN_FIELD: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INVALID_CLAIM: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.ENTERPRISE_BUDGET_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.CALLER_NOT_ALLOWED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.PROVIDER_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Reason.PROVIDER_NOT_CONNECTED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.STORE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Reason.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.JOB_FAILED: grpc.StatusCode.ABORTED,
    Reason.INTERNAL: grpc.StatusCode.INTERNAL,
    Reason.INSTITUTION_SUSPENDED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.QUOTA_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.REPLAY_WINDOW_FULL: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.OUT_OF_RANGE: grpc.StatusCode.OUT_OF_RANGE,
}
assert set(STATUS_OF) == set(Reason), "every reason needs a status code"


# A refusal travels in trailers twice (grpc-message and the Status detail), and stock
# clients accept 16 KiB of metadata: a longer public message would turn the refusal
# into the client's own RESOURCE_EXHAUSTED. Messages quote callers' values shortened
# already (xinrong.claims); this is the bound for any that does not.
MAX_PUBLIC_MESSAGE_CHARS = 1024


def _bounded(message: str) -> str:
    if len(message) <= MAX_PUBLIC_MESSAGE_CHARS:
        return message
    return message[: MAX_PUBLIC_MESSAGE_CHARS - 3] + "..."


def status_for(reason: Reason, message: str | None = None) -> grpc.Status:
    message = _bounded(message) if message else None
    info = error_details_pb2.ErrorInfo(reason=reason.value, domain=DOMAIN)
    detail = any_pb2.Any()
    detail.Pack(info)
    code = STATUS_OF[reason]
    status = status_pb2.Status(code=code.value[0], message=message or PUBLIC_MESSAGES[reason], details=[detail])
    return rpc_status.to_status(status)


def status_for_error(exc: XinrongError) -> grpc.Status:
    if exc.retry_after is None:
        return status_for(exc.reason, exc.public_message)
    info = error_details_pb2.ErrorInfo(
        reason=exc.reason.value, domain=DOMAIN, metadata={"retry_after_ms": str(int(exc.retry_after * 1000))}
    )
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromMilliseconds(int(exc.retry_after * 1000))
    details = []
    for message in (info, retry):
        detail = any_pb2.Any()
        detail.Pack(message)
        details.append(detail)
    code = STATUS_OF[exc.reason]
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=_bounded(exc.public_message), details=details)
    )


def status_fields(exc: Exception) -> tuple[int, str, str]:
    """(status code, reason, public message) of an error, for per-call results
    inside a stream (``CallError``), mapped exactly like a unary refusal."""
    if isinstance(exc, XinrongError):
        return STATUS_OF[exc.reason].value[0], exc.reason.value, _bounded(exc.public_message)
    return grpc.StatusCode.INTERNAL.value[0], Reason.INTERNAL.value, PUBLIC_MESSAGES[Reason.INTERNAL]


_CODE_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


@dataclass
class RemoteError(Exception):
    """A refusal from a xinrong server, decoded from its google.rpc.Status."""

    code: grpc.StatusCode
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"


def decode_rpc_error(err: grpc.RpcError) -> RemoteError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    reason = ""
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except Exception:
        status = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                break
    if not reason:
        reason = {
            grpc.StatusCode.UNAVAILABLE: "UNAVAILABLE",
            grpc.StatusCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
        }.get(code, code.name)
    return RemoteError(code=code, reason=reason, message=message or "")


def remote_error_from_fields(code: int, reason: str, message: str) -> RemoteError:
    """The RemoteError a client sees for a per-call error inside a stream."""
    return RemoteError(code=_CODE_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN), reason=reason, message=message)
