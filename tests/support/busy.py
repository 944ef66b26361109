"""Reading a SERVER_BUSY refusal: the RetryInfo a caller is told to honour."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def retry_after(err: grpc.RpcError) -> float | None:
    """Seconds of the refusal's RetryInfo, or None if it has none."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToMilliseconds()) / 1000
    return None
