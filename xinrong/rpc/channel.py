"""Client channels: mTLS with the caller's own certificate, and the server's
identity pinned through its certificate's DNS name (see keys.ca.server_name).

A target is one ``host:port``, or several (a sequence, or one string with
commas) for a party served by replicas, such as the node over PostgreSQL:
the channel then balances calls round-robin over every address whose gRPC
health says SERVING (client-side health checking), so a replica that dies
or stops costs only the calls it had in flight. Host names among several
addresses are resolved once, when the channel is made; a single DNS name
with several address records works as one target too.
"""

from __future__ import annotations

import ipaddress
import json
import socket
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


Target = str | Sequence[str]

# Round robin over the addresses that are healthy (grpc.health.v1 Watch, "" service).
_BALANCED = json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}})


def _addresses(target: Target) -> list[str]:
    items = target.split(",") if isinstance(target, str) else list(target)
    addresses = [item.strip() for item in items if item.strip()]
    if not addresses:
        raise ValueError("no address to connect to")
    return addresses


def _ip_literal(host: str) -> str | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return f"[{ip}]" if ip.version == 6 else str(ip)


def channel_target(target: Target) -> tuple[str, list[tuple[str, int | str]]]:
    """The gRPC target string and the channel options that balance over several addresses."""
    addresses = _addresses(target)
    if len(addresses) == 1:
        return addresses[0], []
    resolved: list[str] = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        literal = _ip_literal(host)
        if literal is not None:
            resolved.append(f"{literal}:{port}")
            continue
        for info in socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM):
            ip = str(info[4][0])
            resolved.append(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
    scheme = "ipv6" if any(r.startswith("[") for r in resolved) else "ipv4"
    return f"{scheme}:{','.join(dict.fromkeys(resolved))}", [("grpc.service_config", _BALANCED)]


def secure_channel(
    target: Target,
    credentials: PartyCredentials,
    *,
    server_role: str,
    server_id: str,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    options: Sequence[tuple[str, int | str]] = (),
) -> grpc.Channel:
    """options: extra channel arguments appended to the defaults (e.g. reconnect backoff).

    ``target``: one address or several (replicas; see the module docstring).
    """
    where, balanced = channel_target(target)
    creds, args = _channel_arguments(credentials, server_role, server_id, max_message_bytes, [*balanced, *options])
    return grpc.secure_channel(where, creds, options=args)


def secure_aio_channel(
    target: Target,
    credentials: PartyCredentials,
    *,
    server_role: str,
    server_id: str,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    options: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """The asyncio twin of ``secure_channel``; create it on the loop that will use it."""
    where, balanced = channel_target(target)
    creds, args = _channel_arguments(credentials, server_role, server_id, max_message_bytes, [*balanced, *options])
    return grpc.aio.secure_channel(where, creds, options=args)


def connects_within(channel: grpc.Channel | None, timeout: float) -> bool:
    """Whether ``channel`` connects within ``timeout`` (asking also starts it connecting).

    For pushes that wait for an agent's return: one health Check that waits for
    the connection (``wait_for_ready``); any answer, whatever the service's
    status, means it connected (the agent's servicer answers for itself when
    called). Not ``grpc.channel_ready_future``: its connectivity-polling thread
    outlives the wait by up to 0.2 s and dies with a ValueError if the channel
    is closed meanwhile (a node stopping); a call made here ends with the call.
    """
    if channel is None:
        return False
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=True)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        return code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, None)
    except ValueError:  # the channel is closed
        return False
    return True


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
