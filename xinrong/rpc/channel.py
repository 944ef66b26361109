"""Client channels: mTLS with the caller's own certificate, and the server's
identity pinned through its certificate's DNS name (see keys.ca.server_name)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xinrong.keys.ca import server_name
from xinrong.keys.layout import PartyCredentials
from xinrong.rpc.server import DEFAULT_MAX_MESSAGE_BYTES

DEFAULT_TIMEOUT = 10.0


def _channel_arguments(
    credentials: PartyCredentials,
    server_role: str,
    server_id: str,
    max_message_bytes: int,
    options: Sequence[tuple[str, int | str]],
) -> tuple[grpc.ChannelCredentials, list[tuple[str, int | str]]]:
    channel_creds = grpc.ssl_channel_credentials(
        root_certificates=credentials.ca_cert_pem,
        private_key=credentials.tls_key_pem,
        certificate_chain=credentials.tls_cert_pem,
    )
    channel_options: list[tuple[str, int | str]] = [
        ("grpc.ssl_target_name_override", server_name(server_role, server_id)),
        ("grpc.default_authority", server_name(server_role, server_id)),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.enable_retries", 1),
        *options,
    ]
    return channel_creds, channel_options


def secure_channel(
    target: str,
    credentials: PartyCredentials,
    *,
    server_role: str,
    server_id: str,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    options: Sequence[tuple[str, int | str]] = (),
) -> grpc.Channel:
    """options: extra channel arguments appended to the defaults (e.g. reconnect backoff)."""
    creds, args = _channel_arguments(credentials, server_role, server_id, max_message_bytes, options)
    return grpc.secure_channel(target, creds, options=args)


def secure_aio_channel(
    target: str,
    credentials: PartyCredentials,
    *,
    server_role: str,
    server_id: str,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    options: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """The asyncio twin of ``secure_channel``; create it on the loop that will use it."""
    creds, args = _channel_arguments(credentials, server_role, server_id, max_message_bytes, options)
    return grpc.aio.secure_channel(target, creds, options=args)


def wait_healthy(channel: grpc.Channel, *, service: str = "", timeout: float = 30.0) -> None:
    """Block until the server reports SERVING for service, or raise TimeoutError."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    last: str = "no answer"
    while time.monotonic() < deadline:
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        except grpc.RpcError as err:
            last = f"{err.code().name}"
        time.sleep(0.1)
    raise TimeoutError(f"server not healthy after {timeout:.0f}s (last: {last})")
