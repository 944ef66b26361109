"""Server factory: every xinrong server is built here, the same way.

mTLS with client certificates from the platform CA (required), a per-service
role check that refuses before any handler runs, domain errors mapped to
statuses in one place, message-size limits, gRPC health (NOT_SERVING until
the party says it is ready) and reflection, port 0 for tests, and a
graceful stop on SIGTERM / SIGINT.

Two runtimes behind one interface (``RunningServer``):

* ``threads`` (the default): gRPC's thread-pool server. Every handler is
  synchronous.
* ``asyncio``: gRPC's asyncio server on an event loop in its own thread.
  Coroutine handlers run on the loop; synchronous handlers run in a thread
  pool, so a servicer can mix both. This is for a server whose hot path
  mostly waits on another server (the node waits on agents): a request
  then costs no thread hand-offs, which in Python gRPC cost more CPU than
  the node's own logic.

The role check and the error mapping wrap each method handler once, when
the service is registered, rather than in a per-call interceptor: the
guard is the same code on both runtimes and adds nothing per call but a
function call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from xinrong import ids
from xinrong.errors import Reason, ValidationError, XinrongError
from xinrong.keys.layout import PartyCredentials
from xinrong.limits import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES
from xinrong.logs import NO_REQUEST, request_var
from xinrong.rpc.auth import Peer, peer_of, remember_peer
from xinrong.rpc.errors import DOMAIN, status_for, status_for_error
from xinrong.rpc.gate import CallGate

if TYPE_CHECKING:
    from xinrong.rpc.observe import Observer

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = MAX_MESSAGE_BYTES

Runtime = Literal["threads", "asyncio"]
T = TypeVar("T")


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service on a server and the certificate roles allowed to call it.

    ``register`` receives what the generated ``add_*Servicer_to_server``
    functions expect; it guards every handler it is given.
    """

    name: str
    register: Callable[[Any], None]
    allowed_roles: frozenset[str]
    # Methods whose calls do not count against the server's call budget: long-lived
    # streams (a following subscription) would otherwise hold a slot for hours and,
    # a few hundred of them, refuse every other call SERVER_BUSY. Such a service
    # bounds its streams itself.
    unbudgeted: frozenset[str] = frozenset()


def _refused_peer(context: Any, roles: frozenset[str], method: str) -> Peer | None:
    """The caller if its certificate's role may call this service, else None (and a log line)."""
    peer = peer_of(context, fresh=True)
    remember_peer(context, peer)
    if peer is None or peer.role not in roles:
        log.warning("[%s] refused caller role %s", method, peer.role if peer else None)
        return None
    return peer


def _gate_refusal(gate: CallGate | None, peer: Peer | None, method: str) -> grpc.Status | None:
    """The party's per-call gate (``xinrong.rpc.gate``): None to go on, else the refusal's status."""
    if gate is None or peer is None:
        return None
    try:
        gate.admit(peer, method)
    except XinrongError as exc:
        log.info("[%s] gate refused %s %s: %s", method, peer.role, peer.party_id, exc.reason.value)
        return status_for_error(exc)
    return None


def _failure_status(exc: Exception, method: str) -> grpc.Status:
    if isinstance(exc, XinrongError):
        log.info("[%s] refused %s: %s", method, exc.reason.value, exc.detail)
        return status_for_error(exc)
    log.exception("[%s] internal error", method, exc_info=exc)
    return status_for(Reason.INTERNAL)


Decode = Callable[[bytes], Any]


def _decoder(deserializer: Decode | None, method: str) -> Decode:
    """The request decoder, run by the guard only after the caller's role passed.

    Handlers are registered to receive raw bytes: gRPC's own decoding runs
    before any handler, so bytes that do not parse answered UNKNOWN or
    INTERNAL with a traceback logged per request, and before the role check.
    Here a decode failure is INVALID_ARGUMENT with a reason, logged as one line.
    """

    limit = MAX_REQUEST_BYTES.get(method)

    def decode(raw: bytes) -> Any:
        if limit is not None and len(raw) > limit:
            why = f"request of {method} is larger than its limit of {limit} bytes"
            raise ValidationError(why, public=why)
        if deserializer is None:
            return raw
        try:
            message = deserializer(raw)
        except Exception:
            why = f"request bytes do not decode as the request message of {method}"
            raise ValidationError(why, public=why) from None
        _adopt_request_id(message)
        return message

    return decode


def _adopt_request_id(message: Any) -> None:
    """The observer began the call on raw bytes: once decoded, a request's own
    ``request_id`` (a bank's Verify id) names the call in logs, so one request
    can be followed from the bank through node and agent."""
    current = request_var.get()
    if current is NO_REQUEST:
        return
    candidate = getattr(message, "request_id", "")
    if isinstance(candidate, str) and candidate and candidate != current.request_id and ids.is_request_id(candidate):
        request_var.set(current._replace(request_id=candidate))


def _decoded_stream(requests: Any, decode: Decode) -> Any:
    for raw in requests:
        yield decode(raw)


async def _decoded_async_stream(requests: Any, decode: Decode) -> Any:
    async for raw in requests:
        yield decode(raw)


def _guard_sync(
    behavior: Callable[..., Any],
    roles: frozenset[str],
    method: str,
    streaming: bool,
    decode: Decode,
    request_streaming: bool,
    budget: _CallBudget | None = None,
    gate: CallGate | None = None,
) -> Callable[..., Any]:
    """Thread runtime: the call budget, role check, the gate, then decoding, then
    the handler; any exception becomes its status."""

    def decoded(raw: Any) -> Any:
        return _decoded_stream(raw, decode) if request_streaming else decode(raw)

    def budgeted(guarded: Callable[..., Any]) -> Callable[..., Any]:
        if budget is None:
            return guarded

        if streaming:

            def stream_call(request: Any, context: grpc.ServicerContext) -> Any:
                if not budget.enter():
                    context.abort_with_status(_busy_status(budget.limit))
                try:
                    yield from guarded(request, context)
                finally:
                    budget.leave()

            return stream_call

        def unary_call(request: Any, context: grpc.ServicerContext) -> Any:
            if not budget.enter():
                context.abort_with_status(_busy_status(budget.limit))
            try:
                return guarded(request, context)
            finally:
                budget.leave()

        return unary_call

    if streaming:

        def stream(request: Any, context: grpc.ServicerContext) -> Any:
            peer = _refused_peer(context, roles, method)
            if peer is None:
                context.abort_with_status(status_for(Reason.CALLER_NOT_ALLOWED))
            refusal = _gate_refusal(gate, peer, method)
            if refusal is not None:
                context.abort_with_status(refusal)
            try:
                if gate is not None and peer is not None:
                    with gate.streams.opened(peer, method) as open_stream:
                        for item in behavior(decoded(request), context):
                            if open_stream.error is not None:
                                raise open_stream.error
                            yield item
                        return
                yield from behavior(decoded(request), context)
                return
            except Exception as exc:
                if not context.is_active():
                    # The caller hung up (a stopping node closes its streams): nobody to answer.
                    log.info("[%s] caller went away (%s)", method, type(exc).__name__)
                    return
                failure = _failure_status(exc, method)
            context.abort_with_status(failure)

        return budgeted(stream)

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        peer = _refused_peer(context, roles, method)
        if peer is None:
            context.abort_with_status(status_for(Reason.CALLER_NOT_ALLOWED))
        refusal = _gate_refusal(gate, peer, method)
        if refusal is not None:
            context.abort_with_status(refusal)
        try:
            return behavior(decoded(request), context)
        except Exception as exc:
            failure = _failure_status(exc, method)
        context.abort_with_status(failure)

    return budgeted(unary)


class _CallBudget:
    """Concurrent guarded calls, in both runtimes; a call over it is refused at once with ``_busy_status``.

    gRPC's ``maximum_concurrent_rpcs`` counts every call, health checks too,
    so a node busy with 256 calls failed its liveness probe and would be
    restarted by an orchestrator. The budget lives in the guard instead:
    health and reflection are not guarded, so they always answer. On the
    asyncio runtime (calls hold no thread) the budget is ``16 * max_workers``;
    on the threads runtime a call holds a handler thread, so the budget is
    ``max_workers`` and the pool has ``BUDGET_SPARE_THREADS`` more, for
    health, reflection and the refusals themselves (before, calls past the
    pool queued silently until their deadline and health queued with them).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()  # the threads runtime enters from many threads

    def enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


# What a refused caller is told to wait before retrying (RetryInfo): calls are short, a second frees many.
BUSY_RETRY_SECONDS = 1.0
# Threads runtime: pool threads beyond the call budget (see _CallBudget).
BUDGET_SPARE_THREADS = 4


def _busy_status(limit: int) -> grpc.Status:
    retry_ms = int(BUSY_RETRY_SECONDS * 1000)
    info = error_details_pb2.ErrorInfo(reason="SERVER_BUSY", domain=DOMAIN, metadata={"retry_after_ms": str(retry_ms)})
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromMilliseconds(retry_ms)
    details = []
    for message in (info, retry):
        detail = any_pb2.Any()
        detail.Pack(message)
        details.append(detail)
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    message = f"server busy: {limit} calls in flight; retry after {BUSY_RETRY_SECONDS:g} s"
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=details))


async def _abort(context: Any, status: grpc.Status) -> None:
    await context.abort(status.code, status.details, status.trailing_metadata)


class _BlockingRequests:
    """A request stream of the asyncio runtime, read from a pool thread as a
    plain iterator (for synchronous streaming handlers)."""

    def __init__(self, requests: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._requests = requests.__aiter__()
        self._loop = loop

    def __iter__(self) -> _BlockingRequests:
        return self

    def __next__(self) -> Any:
        try:
            return asyncio.run_coroutine_threadsafe(self._requests.__anext__(), self._loop).result()
        except StopAsyncIteration:
            raise StopIteration from None


_DONE = object()


def _guard_async(
    behavior: Callable[..., Any],
    roles: frozenset[str],
    method: str,
    pool: futures.Executor,
    *,
    request_streaming: bool,
    response_streaming: bool,
    decode: Decode,
    budget: _CallBudget | None = None,
    gate: CallGate | None = None,
) -> Callable[..., Any]:
    """asyncio runtime: coroutine (and async generator) handlers run on the
    loop; plain ones run in ``pool``, so they may block, with their request
    and response streams bridged to the loop."""

    async def admit(context: Any) -> Peer | None:
        peer = _refused_peer(context, roles, method)
        if peer is None:
            await _abort(context, status_for(Reason.CALLER_NOT_ALLOWED))
        refusal = _gate_refusal(gate, peer, method)
        if refusal is not None:
            await _abort(context, refusal)
        return peer

    def in_pool(request: Any, context: Any, peer: Peer | None) -> Any:
        remember_peer(context, peer)  # this thread's cache, for the servicer's peer_of
        return behavior(request, context)

    def decoded(request: Any) -> Any:
        return _decoded_async_stream(request, decode) if request_streaming else decode(request)

    def blocking(request: Any) -> Any:
        return _BlockingRequests(request, asyncio.get_running_loop()) if request_streaming else request

    on_loop = inspect.iscoroutinefunction(behavior)
    if not response_streaming:

        async def unary(request: Any, context: Any) -> Any:
            if budget is not None and not budget.enter():
                await _abort(context, _busy_status(budget.limit))
            try:
                return await guarded_unary(request, context)
            finally:
                if budget is not None:
                    budget.leave()

        async def guarded_unary(request: Any, context: Any) -> Any:
            peer = await admit(context)
            try:
                request = decoded(request)
                if on_loop:
                    return await behavior(request, context)
                return await asyncio.get_running_loop().run_in_executor(pool, in_pool, blocking(request), context, peer)
            except Exception as exc:
                failure = _failure_status(exc, method)
            await _abort(context, failure)

        return unary

    async_generator = inspect.isasyncgenfunction(behavior)

    async def stream(request: Any, context: Any) -> Any:
        if budget is not None and not budget.enter():
            await _abort(context, _busy_status(budget.limit))
        try:
            async for item in guarded_stream(request, context):
                yield item
        finally:
            if budget is not None:
                budget.leave()

    async def guarded_stream(request: Any, context: Any) -> Any:
        peer = await admit(context)
        if gate is None or peer is None:
            async for item in served_stream(request, context, peer):
                yield item
            return
        with gate.streams.opened(peer, method) as open_stream:
            items = served_stream(request, context, peer)
            try:
                async for item in items:
                    open_stream.yielding = True  # see OpenStream._cancel_on_loop
                    try:
                        yield item
                    finally:
                        open_stream.yielding = False
                    if open_stream.cancelled.is_set():
                        break
                else:
                    return
            except asyncio.CancelledError:
                if open_stream.error is None:
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            finally:
                await items.aclose()
            # Closed by the gate (e.g. the institution was suspended): say why.
            assert open_stream.error is not None  # set before ``cancelled``
            await _abort(context, status_for_error(open_stream.error))

    async def served_stream(request: Any, context: Any, peer: Peer | None) -> Any:
        try:
            request = decoded(request)
            if async_generator:
                async for item in behavior(request, context):
                    yield item
                return
            loop = asyncio.get_running_loop()
            responses = iter(await loop.run_in_executor(pool, in_pool, blocking(request), context, peer))
            while (item := await loop.run_in_executor(pool, next, responses, _DONE)) is not _DONE:
                yield item
            return
        except Exception as exc:
            failure = _failure_status(exc, method)
        await _abort(context, failure)

    return stream


class _GuardedRegistrar:
    """Stands in for the server in generated ``add_*Servicer_to_server``
    functions and registers each handler wrapped in the guard."""

    def __init__(
        self,
        server: Any,
        roles: frozenset[str],
        pool: futures.Executor | None,
        budget: _CallBudget | None = None,
        gate: CallGate | None = None,
        unbudgeted: frozenset[str] = frozenset(),
    ) -> None:
        self._server = server
        self._roles = roles
        self._pool = pool
        self._budget = budget
        self._gate = gate
        self._unbudgeted = unbudgeted

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        # The generated code also registers each method by name below; that
        # is the only registration kept, so no unguarded handler exists.
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        guarded = {
            name: self._guard(f"/{service}/{name}", h, budgeted=name not in self._unbudgeted)
            for name, h in handlers.items()
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, guarded),))
        self._server.add_registered_method_handlers(service, guarded)

    def _guard(self, method: str, h: Any, *, budgeted: bool = True) -> Any:
        # Raw bytes in: the guard decodes after the role check (see _decoder).
        kwargs = {"request_deserializer": None, "response_serializer": h.response_serializer}
        decode = _decoder(h.request_deserializer, method)
        if self._pool is not None:
            behavior = h.unary_unary or h.unary_stream or h.stream_unary or h.stream_stream
            wrapped = _guard_async(
                behavior,
                self._roles,
                method,
                self._pool,
                request_streaming=h.request_streaming,
                response_streaming=h.response_streaming,
                decode=decode,
                budget=self._budget if budgeted else None,
                gate=self._gate,
            )
            factory = {
                (False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler,
            }[(h.request_streaming, h.response_streaming)]
            return factory(wrapped, **kwargs)
        streams = h.request_streaming
        budget = self._budget if budgeted else None
        if h.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _guard_sync(h.unary_unary, self._roles, method, False, decode, streams, budget, self._gate),
                **kwargs,
            )
        if h.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _guard_sync(h.unary_stream, self._roles, method, True, decode, streams, budget, self._gate),
                **kwargs,
            )
        if h.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _guard_sync(h.stream_unary, self._roles, method, False, decode, streams, budget, self._gate),
                **kwargs,
            )
        return grpc.stream_stream_rpc_method_handler(
            _guard_sync(h.stream_stream, self._roles, method, True, decode, streams, budget, self._gate), **kwargs
        )


def _options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


def _server_credentials(credentials: PartyCredentials) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(credentials.tls_key_pem, credentials.tls_cert_pem)],
        root_certificates=credentials.ca_cert_pem,
        require_client_auth=True,
    )


def _reflected(names: tuple[str, ...]) -> tuple[str, ...]:
    return (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)


# Seconds after the grace period before a signalled process exits regardless.
HARD_STOP_MARGIN_SECONDS = 2.0


def _hard_stop(after: float) -> None:
    log.warning("still running %.1fs after the stop signal (calls stuck in flight): exiting now", after)
    logging.shutdown()
    os._exit(1)


_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class RunningServer:
    """A started server; health is NOT_SERVING until ``set_serving(True)``."""

    def __init__(self, port: int, service_names: tuple[str, ...]) -> None:
        self.port = port
        self.service_names = service_names
        self._stopped = threading.Event()
        self._hard_stop_armed = threading.Event()
        # Guarded calls in flight beyond which a call is refused SERVER_BUSY (see _CallBudget).
        self.call_budget = 0

    def set_serving(self, serving: bool) -> None:
        """Report readiness: health answers SERVING only after the party says so."""
        status = _SERVING if serving else _NOT_SERVING
        for name in ("", *self.service_names):
            self._set_health(name, status)

    def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: NOT_SERVING first so balancers drain, then finish in-flight calls."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.set_serving(False)
        self._stop(grace)

    def install_signal_handlers(self, grace: float = 5.0, hard_margin: float = HARD_STOP_MARGIN_SECONDS) -> None:
        """SIGTERM / SIGINT: a graceful stop of at most ``grace`` seconds, then
        a hard stop. gRPC cancels calls still running after the grace period,
        but a handler stuck in its own code keeps its worker thread, and the
        interpreter waits for pool threads at exit: an agent once stayed up
        30 s after SIGTERM. So the process exits ``grace + hard_margin``
        seconds after the signal whatever is in flight (state stores commit
        per transaction, so a hard exit loses only the calls in flight)."""

        def handler(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping gracefully (at most %.1fs)", signum, grace)
            threading.Thread(target=self.stop, args=(grace,), daemon=True).start()
            if not self._hard_stop_armed.is_set():
                self._hard_stop_armed.set()
                timer = threading.Timer(grace + hard_margin, _hard_stop, args=(grace + hard_margin,))
                timer.daemon = True
                timer.start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def wait(self) -> None:
        raise NotImplementedError

    def _set_health(self, name: str, status: int) -> None:
        raise NotImplementedError

    def _stop(self, grace: float) -> None:
        raise NotImplementedError


class ThreadedServer(RunningServer):
    def __init__(
        self, port: int, service_names: tuple[str, ...], server: grpc.Server, health_servicer: health.HealthServicer
    ) -> None:
        super().__init__(port, service_names)
        self.server = server
        self._health = health_servicer

    def wait(self) -> None:
        self.server.wait_for_termination()

    def _set_health(self, name: str, status: int) -> None:
        self._health.set(name, status)

    def _stop(self, grace: float) -> None:
        self.server.stop(grace).wait()


class AsyncioServer(RunningServer):
    """The asyncio runtime: the loop runs in its own thread until ``stop``."""

    def __init__(
        self,
        port: int,
        service_names: tuple[str, ...],
        *,
        loop: asyncio.AbstractEventLoop,
        server: Any,
        health_servicer: Any,
        pool: futures.ThreadPoolExecutor,
        thread: threading.Thread,
    ) -> None:
        super().__init__(port, service_names)
        self.loop = loop
        self.server = server
        self._health = health_servicer
        self._pool = pool
        self._thread = thread
        # Coroutine functions run on the loop after the server stopped and
        # before the loop ends (e.g. closing the node's asyncio channels).
        self.on_stop: list[Callable[[], Awaitable[None]]] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the server's loop from another thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait(self) -> None:
        self._thread.join()

    def _set_health(self, name: str, status: int) -> None:
        if self.loop.is_running():
            self.run(self._health.set(name, status))

    def _stop(self, grace: float) -> None:
        async def shutdown() -> None:
            await self.server.stop(grace)
            for hook in self.on_stop:
                try:
                    await hook()
                except Exception:
                    log.exception("shutdown hook failed")

        try:
            self.run(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=grace + 10)
            self._pool.shutdown(wait=True)


def check_bindable(bind: str) -> None:
    """Refuse, with the operating system's reason, an address that cannot be bound.

    gRPC only says "Failed to bind" (and logs an error line of its own), so
    a busy port is probed first with a plain socket; port 0 always binds.
    """
    host, _, port_text = bind.rpartition(":")
    port = ids.decimal(port_text, max_digits=5)
    if port is None or port == 0:
        return
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot bind {bind}: {exc.strerror}") from None


def _add_port(server: Any, bind: str, credentials: PartyCredentials) -> int:
    check_bindable(bind)
    try:
        port: int = server.add_secure_port(bind, _server_credentials(credentials))
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot bind {bind}")
    return port


def build_server(
    credentials: PartyCredentials,
    bind: str,
    services: list[ServiceBinding],
    *,
    max_workers: int = 16,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    runtime: Runtime = "threads",
    observer: Observer | None = None,
    gate: CallGate | None = None,
) -> RunningServer:
    """Build and start a server; bind "127.0.0.1:0" for an ephemeral port.

    ``observer`` (xinrong.rpc.observe): metrics and request-scoped logs of every call.
    ``gate`` (xinrong.rpc.gate): the party's per-call admission, asked after the role check.
    """
    if runtime == "asyncio":
        return _build_asyncio(credentials, bind, services, max_workers, max_message_bytes, observer, gate)
    if runtime != "threads":
        raise ValueError(f"unknown server runtime {runtime!r}")
    budget = _CallBudget(max_workers)
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=max_workers + BUDGET_SPARE_THREADS, thread_name_prefix=credentials.party_id
        ),
        options=_options(max_message_bytes),
        # A backstop only (it counts health too): the budget refuses long before.
        maximum_concurrent_rpcs=max_workers * 16,
        interceptors=[observer.sync_interceptor()] if observer is not None else None,
    )
    for s in services:
        s.register(_GuardedRegistrar(server, s.allowed_roles, None, budget, gate, s.unbudgeted))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(s.name for s in services)
    reflection.enable_server_reflection(_reflected(names), server)
    port = _add_port(server, bind, credentials)
    running = ThreadedServer(port, names, server, health_servicer)
    running.call_budget = budget.limit
    running.set_serving(False)
    server.start()
    return running


def _build_asyncio(
    credentials: PartyCredentials,
    bind: str,
    services: list[ServiceBinding],
    max_workers: int,
    max_message_bytes: int,
    observer: Observer | None = None,
    gate: CallGate | None = None,
) -> AsyncioServer:
    loop = asyncio.new_event_loop()
    from xinrong.rpc.observe import ContextThreadPool  # handlers in the pool keep the request's log context

    pool = ContextThreadPool(max_workers=max_workers, thread_name_prefix=credentials.party_id)
    names = tuple(s.name for s in services)

    async def start() -> tuple[Any, Any, int]:
        # No maximum_concurrent_rpcs: it would count health checks (see _CallBudget).
        server = grpc.aio.server(
            options=_options(max_message_bytes),
            interceptors=[observer.aio_interceptor()] if observer is not None else None,
        )
        budget = _CallBudget(max_workers * 16)
        for s in services:
            s.register(_GuardedRegistrar(server, s.allowed_roles, pool, budget, gate, s.unbudgeted))
        health_servicer = AsyncHealthServicer()
        for name in ("", *names):  # the asyncio servicer starts out SERVING
            await health_servicer.set(name, _NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(_reflected(names), server)
        port = _add_port(server, bind, credentials)
        await server.start()
        return server, health_servicer, port

    thread = threading.Thread(target=loop.run_forever, name=f"{credentials.party_id}-loop", daemon=True)
    thread.start()
    try:
        server, health_servicer, port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        pool.shutdown(wait=False)
        raise
    running = AsyncioServer(
        port, names, loop=loop, server=server, health_servicer=health_servicer, pool=pool, thread=thread
    )
    running.call_budget = max_workers * 16
    return running
