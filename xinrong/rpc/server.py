"""Server factory: every xinrong server is built here, the same way.

mTLS with client certificates from the platform CA (required), a per-service
role check in an interceptor that aborts before any handler runs, domain
errors mapped to statuses in one place, message-size limits, gRPC health
(NOT_SERVING until the party says it is ready) and reflection, port 0 for
tests, and a graceful stop on SIGTERM / SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keys.layout import PartyCredentials
from xinrong.errors import Reason, XinrongError
from xinrong.rpc.auth import peer_of, remember_peer
from xinrong.rpc.errors import status_for, status_for_error

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service on a server and the certificate roles allowed to call it."""

    name: str
    register: Callable[[grpc.Server], None]
    allowed_roles: frozenset[str]


def _check_peer(context: grpc.ServicerContext, roles: frozenset[str] | None, method: str) -> None:
    peer = peer_of(context, fresh=True)
    remember_peer(context, peer)
    if peer is None or (roles is not None and peer.role not in roles):
        log.warning("[%s] refused caller role %s", method, peer.role if peer else None)
        context.abort_with_status(status_for(Reason.CALLER_NOT_ALLOWED))


def _failure_status(exc: Exception, method: str) -> grpc.Status:
    if isinstance(exc, XinrongError):
        log.info("[%s] refused %s: %s", method, exc.reason.value, exc.detail)
        return status_for_error(exc)
    log.exception("[%s] internal error", method, exc_info=exc)
    return status_for(Reason.INTERNAL)


def _wrap_unary(behavior: Callable[..., Any], roles: frozenset[str] | None, method: str) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        _check_peer(context, roles, method)
        try:
            return behavior(request, context)
        except Exception as exc:  # noqa: BLE001 - mapped to a status right below
            failure = _failure_status(exc, method)
        context.abort_with_status(failure)

    return wrapped


def _wrap_stream(behavior: Callable[..., Any], roles: frozenset[str] | None, method: str) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        _check_peer(context, roles, method)
        try:
            yield from behavior(request, context)
            return
        except Exception as exc:  # noqa: BLE001 - mapped to a status right below
            failure = _failure_status(exc, method)
        context.abort_with_status(failure)

    return wrapped


class GuardInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg, misc]
    """Role check before the handler; XinrongError -> status with ErrorInfo after it."""

    def __init__(self, rules: dict[str, frozenset[str]]) -> None:
        self._rules = rules

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method
        service = method.split("/")[1] if method.count("/") >= 2 else ""
        roles = self._rules.get(service)  # None: health and reflection, any CA-certified peer
        kwargs = dict(
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(handler.unary_unary, roles, method), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream, roles, method), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(handler.stream_unary, roles, method), **kwargs)
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(handler.stream_stream, roles, method), **kwargs)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: tuple[str, ...]
    _stopped: threading.Event = field(default_factory=threading.Event)

    def set_serving(self, serving: bool) -> None:
        """Report readiness: health answers SERVING only after the party says so."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: NOT_SERVING first so balancers drain, then finish in-flight calls."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.set_serving(False)
        self.server.stop(grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()

    def install_signal_handlers(self, grace: float = 5.0) -> None:
        def handler(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping gracefully", signum)
            threading.Thread(target=self.stop, args=(grace,), daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def build_server(
    credentials: PartyCredentials,
    bind: str,
    services: list[ServiceBinding],
    *,
    max_workers: int = 16,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> RunningServer:
    """Build and start a server; bind "127.0.0.1:0" for an ephemeral port."""
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    rules = {s.name: s.allowed_roles for s in services}
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=credentials.party_id),
        interceptors=[GuardInterceptor(rules)],
        options=options,
        maximum_concurrent_rpcs=max_workers * 16,
    )
    for s in services:
        s.register(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(s.name for s in services)
    reflection.enable_server_reflection(
        (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    server_creds = grpc.ssl_server_credentials(
        [(credentials.tls_key_pem, credentials.tls_cert_pem)],
        root_certificates=credentials.ca_cert_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port(bind, server_creds)
    if port == 0:
        raise OSError(f"cannot bind {bind}")
    server.start()
    running = RunningServer(server=server, port=port, health=health_servicer, service_names=names)
    running.set_serving(False)
    return running
