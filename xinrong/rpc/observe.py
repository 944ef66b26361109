"""What an operator sees of a running server: Prometheus metrics and request-scoped logs.

One ``Observer`` per server (node or agent; the modeling services run
inside them), with its own ``CollectorRegistry`` so several servers in one
process (tests, the in-process benchmarks) never share or clash over a
metric. ``build_server`` installs its interceptor, which for every call of
a registered method

* counts it by method and status code (``xinrong_rpc_requests_total``),
  times it (``xinrong_rpc_duration_seconds``) and tracks the calls in
  flight (``xinrong_rpc_in_flight``);
* sets the request context of the log lines written while it runs
  (``xinrong.logs``): the request id is the caller's own where the
  request has one (a bank's Verify ``request_id``, which the node passes
  to the agent inside each call), else the ``x-request-id`` metadata of
  the call, else a fresh one; and writes one access line when it ends
  (DEBUG when it succeeded, INFO otherwise), ids and status only.

Labels are the method, the status code, the admission reason, the
provider name and a job state: all drawn from small fixed sets known to
every party (the proto, the reason enum, the public registry). No label
ever holds an enterprise id, a consent id, a request id, a claim or its
value; the tests scrape after traffic and look for them.

The HTTP endpoint is opt-in (``[metrics] listen``), binds loopback unless
``allow_remote`` says otherwise, and serves only ``/metrics`` text.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import ipaddress
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from typing import Annotated, Any, TypeVar

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest, start_http_server
from prometheus_client.registry import Collector
from pydantic import AfterValidator, model_validator

from xinrong import ids
from xinrong.config import Section, check_address
from xinrong.logs import LOG_FORMATS, RequestContext, request_var
from xinrong.rpc.auth import peer_of

log = logging.getLogger("xinrong.access")

T = TypeVar("T")

REQUEST_ID_HEADER = "x-request-id"

# Seconds; Verify is a few ms, modeling steps take seconds to minutes.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0)


def _listen(value: str) -> str:
    return check_address(value, allow_port_zero=True) if value else value


def _format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise ValueError(f"must be one of {list(LOG_FORMATS)}")
    return value


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsConfig(Section):
    """The ``[metrics]`` table: off unless ``listen`` names a local address.

    [metrics]
    listen = "127.0.0.1:9464"   # port 0: any free port (see --metrics-port-file)
    # allow_remote = false      # true to bind a non-loopback address
    """

    listen: Annotated[str, AfterValidator(_listen)] = ""
    # The metrics say how busy the server is and what it refuses: loopback
    # only unless the operator says a scraper elsewhere may read them.
    allow_remote: bool = False

    @model_validator(mode="after")
    def _local(self) -> MetricsConfig:
        if self.listen and not self.allow_remote and not is_loopback(self.listen.rpartition(":")[0]):
            raise ValueError(f"listen {self.listen!r} is not a loopback address (set allow_remote = true to allow it)")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    def with_port(self, port: int | None) -> MetricsConfig:
        """The table with ``--metrics-port`` applied (on the configured host, loopback by default)."""
        if port is None:
            return self
        host = self.listen.rpartition(":")[0] if self.listen else "127.0.0.1"
        return MetricsConfig(listen=f"{host}:{port}", allow_remote=self.allow_remote)


class LoggingConfig(Section):
    """The ``[logging]`` table: ``format = "json"`` for one JSON object per line."""

    format: Annotated[str, AfterValidator(_format)] = "text"


class ScrapeGauges(Collector):
    """Gauges read when scraped (queue depths, availability, sizes), from callbacks.

    Each callback returns ``(label values, value)`` pairs; one that fails
    is left out of that scrape (and logged once), never fails the scrape.
    """

    def __init__(self) -> None:
        self._gauges: list[tuple[str, str, tuple[str, ...], Callable[[], Iterable[tuple[tuple[str, ...], float]]]]] = []
        self._failed: set[str] = set()

    def add(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        read: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
    ) -> None:
        self._gauges.append((name, documentation, tuple(labels), read))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation, labels, read in self._gauges:
            family = GaugeMetricFamily(name, documentation, labels=list(labels))
            try:
                for values, value in read():
                    family.add_metric(list(values), float(value))
            except Exception:
                if name not in self._failed:
                    log.warning("metric %s could not be read", name, exc_info=True)
                    self._failed.add(name)
                continue
            yield family


# The observer of the server whose call this thread / task is serving.
_current: contextvars.ContextVar[Observer | None] = contextvars.ContextVar("xinrong_observer", default=None)


_Tokens = tuple[contextvars.Token[RequestContext], contextvars.Token["Observer | None"]]


_CODE_NAMES: dict[Any, str] = {
    **{code: code.name for code in grpc.StatusCode},
    **{code.value[0]: code.name for code in grpc.StatusCode},
}


def _code_name(context: Any, failed: bool) -> str:
    """The call's status code name as the server set it (abort, set_code), else OK / UNKNOWN."""
    try:
        code = context.code()
    except Exception:
        code = None
    name = _CODE_NAMES.get(code) if code is not None else None
    return name or ("UNKNOWN" if failed else "OK")


def _incoming_request_id(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and ids.is_request_id(value):
            return value
    return ""


def add_cli_flags(parser: Any) -> None:
    """``--metrics-port``, ``--metrics-port-file`` and ``--log-format`` of a serve command."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this local port (0: any free port)",
    )
    parser.add_argument("--metrics-port-file", help="write the metrics port here once serving (for port 0)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="text (default) or json: one object per line")


def apply_cli_flags(config: Any, args: Any) -> Any:
    """The config (node or agent) with the serve command's operating flags applied; logging switched."""
    from xinrong.logs import use_format

    metrics = config.metrics.with_port(getattr(args, "metrics_port", None))
    fmt = getattr(args, "log_format", None) or config.logging.format
    use_format(fmt)
    return config.model_copy(update={"metrics": metrics, "logging": LoggingConfig(format=fmt)})


def wanted(metrics: MetricsConfig, log_format: str) -> bool:
    """Whether a server needs an observer: metrics on, JSON logs, or access lines at DEBUG."""
    return metrics.enabled or log_format == "json" or log.isEnabledFor(logging.DEBUG)


# Generated ids: a random prefix per process and a counter (unique across processes
# without a urandom call per request).
_PREFIX = uuid.uuid4().hex[:12]
_SERIAL = itertools.count(1)


def new_request_id() -> str:
    return f"x-{_PREFIX}-{next(_SERIAL)}"


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata that carries the current request id to the next server (empty outside a request)."""
    rid = request_var.get().request_id
    return ((REQUEST_ID_HEADER, rid),) if rid else ()


class Observer:
    """Metrics registry, interceptor and HTTP endpoint of one server."""

    def __init__(self, party: str = "") -> None:
        self.party = party
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "xinrong_rpc_requests",
            "RPCs finished, by method and status code",
            ("method", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "xinrong_rpc_duration_seconds",
            "RPC latency by method",
            ("method",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("xinrong_rpc_in_flight", "RPCs being served", ("method",), registry=self.registry)
        self.stream_calls = Counter(
            "xinrong_stream_calls",
            "Calls answered inside a batching stream (EvaluateStream), by kind and status code",
            ("method", "code"),
            registry=self.registry,
        )
        self.stream_latency = Histogram(
            "xinrong_stream_call_duration_seconds",
            "Latency of one call inside a batching stream",
            ("method",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gauges = ScrapeGauges()
        self.registry.register(self.gauges)
        self._http: Any = None
        self._http_thread: Any = None
        # method -> (its registered handler, the observed one); registered methods only.
        self._wrapped: dict[str, tuple[Any, Any]] = {}
        self._per_method: dict[str, tuple[Any, Any]] = {}
        self._per_code: dict[tuple[str, str], Any] = {}
        self.metrics_port = 0

    # -- metrics of the party's own (the node's admissions, an agent's jobs) ----

    def counter(self, name: str, documentation: str, labels: Sequence[str]) -> Counter:
        return Counter(name, documentation, tuple(labels), registry=self.registry)

    def exposition(self) -> str:
        return generate_latest(self.registry).decode("utf-8")

    # -- the HTTP endpoint ---------------------------------------------------

    def serve_http(self, config: MetricsConfig) -> int:
        """Start ``/metrics`` on ``config.listen``; returns the bound port."""
        if not config.enabled:
            raise ValueError("metrics are not enabled ([metrics] listen is empty)")
        host, _, port = config.listen.rpartition(":")
        host = host.strip("[]")
        if not config.allow_remote and not is_loopback(host):
            raise ValueError(f"metrics address {config.listen!r} is not loopback and allow_remote is false")
        self._http, self._http_thread = start_http_server(int(port), addr=host, registry=self.registry)
        self.metrics_port = int(self._http.server_port)
        log.info("metrics on http://%s:%d/metrics", config.listen.rpartition(":")[0], self.metrics_port)
        return self.metrics_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    # -- the interceptors ----------------------------------------------------

    def sync_interceptor(self) -> grpc.ServerInterceptor[Any, Any]:
        return _SyncInterceptor(self)

    def aio_interceptor(self) -> Any:
        return _AioInterceptor(self)

    def _begin(self, method: str, request: Any, context: Any) -> tuple[_Tokens, float]:
        rid = ""
        candidate = getattr(request, "request_id", "") if request is not None else ""
        if isinstance(candidate, str) and candidate and ids.is_request_id(candidate):
            rid = candidate
        if not rid:
            try:
                rid = _incoming_request_id(context.invocation_metadata())
            except Exception:
                rid = ""
        rid = rid or new_request_id()
        try:
            peer = peer_of(context, fresh=True)
        except Exception:
            peer = None
        tokens = (
            request_var.set(RequestContext(rid, peer.party_id if peer is not None else "", method)),
            _current.set(self),
        )
        self._children(method)[0].inc()
        return tokens, time.perf_counter()

    def _children(self, method: str) -> tuple[Any, Any]:
        """The method's in-flight gauge and latency histogram children (looked up once)."""
        children = self._per_method.get(method)
        if children is None:
            children = self._per_method[method] = (self.in_flight.labels(method), self.latency.labels(method))
        return children

    def _count(self, method: str, code: str) -> None:
        child = self._per_code.get((method, code))
        if child is None:
            child = self._per_code[(method, code)] = self.requests.labels(method, code)
        child.inc()

    def _end(self, method: str, context: Any, started: float, failed: bool, tokens: _Tokens) -> None:
        seconds = time.perf_counter() - started
        code = _code_name(context, failed)
        in_flight, latency = self._children(method)
        in_flight.dec()
        self._count(method, code)
        latency.observe(seconds)
        level = logging.DEBUG if code == "OK" else logging.INFO
        if log.isEnabledFor(level):
            extra = {
                "status": code,
                "duration_ms": round(seconds * 1000, 3),
                "request_id": request_var.get().request_id,
                "caller": request_var.get().caller,
                "method": method,
            }
            log.log(level, "%s %s", method, code, extra=extra)
        _reset(tokens)

    def wrap(self, handler: Any, method: str) -> Any:
        """The handler with its behavior observed (same kind, same serializers), made once per method."""
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        streaming_in, streaming_out = handler.request_streaming, handler.response_streaming
        behavior = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        wrapped = self._wrap_behavior(behavior, method, streaming_in, streaming_out)
        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(streaming_in, streaming_out)]
        return factory(wrapped, **kwargs)

    def _wrap_behavior(
        self, behavior: Callable[..., Any], method: str, streaming_in: bool, streaming_out: bool
    ) -> Callable[..., Any]:
        def first(request: Any) -> Any:
            return None if streaming_in else request

        if inspect.isasyncgenfunction(behavior):

            async def agen(request: Any, context: Any) -> Any:
                tokens, started = self._begin(method, first(request), context)
                failed = True
                try:
                    async for item in behavior(request, context):
                        yield item
                    failed = False
                finally:
                    self._end(method, context, started, failed, tokens)

            return agen
        if inspect.iscoroutinefunction(behavior):

            async def coro(request: Any, context: Any) -> Any:
                tokens, started = self._begin(method, first(request), context)
                failed = True
                try:
                    result = await behavior(request, context)
                    failed = False
                    return result
                finally:
                    self._end(method, context, started, failed, tokens)

            return coro
        if streaming_out:

            def gen(request: Any, context: Any) -> Any:
                tokens, started = self._begin(method, first(request), context)
                failed = True
                try:
                    yield from behavior(request, context)
                    failed = False
                finally:
                    self._end(method, context, started, failed, tokens)

            return gen

        def plain(request: Any, context: Any) -> Any:
            tokens, started = self._begin(method, first(request), context)
            failed = True
            try:
                result = behavior(request, context)
                failed = False
                return result
            finally:
                self._end(method, context, started, failed, tokens)

        return plain


def _reset(tokens: _Tokens) -> None:
    """Undo ``_begin``; a generator finalised in another context (a cancelled stream) has nothing to undo."""
    try:
        _current.reset(tokens[1])
        request_var.reset(tokens[0])
    except ValueError:
        pass


class _SyncInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, observer: Observer) -> None:
        self._observer = observer

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED, no label for made-up names
            return None
        return self._observer.wrap(handler, details.method)


class _AioInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, observer: Observer) -> None:
        self._observer = observer

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        return self._observer.wrap(handler, details.method)


@contextlib.contextmanager
def stream_call(method: str, request_id: str) -> Iterator[Callable[[str], None]]:
    """One call inside a batching stream: its own request id, log line and counters.

    Yields ``done(code_name)``; a call that raises is counted INTERNAL-like
    as UNKNOWN. Outside an observed server only the log context is set.
    """
    observer = _current.get()
    rid = request_id if request_id and ids.is_request_id(request_id) else new_request_id()
    outer = request_var.get()
    token = request_var.set(RequestContext(rid, outer.caller, method))
    started = time.perf_counter()
    outcome = ["UNKNOWN"]

    def done(code: str) -> None:
        outcome[0] = code

    try:
        yield done
    finally:
        seconds = time.perf_counter() - started
        if observer is not None:
            observer.stream_calls.labels(method, outcome[0]).inc()
            observer.stream_latency.labels(method).observe(seconds)
        level = logging.DEBUG if outcome[0] == "OK" else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s %s",
                method,
                outcome[0],
                extra={
                    "status": outcome[0],
                    "duration_ms": round(seconds * 1000, 3),
                    "method": method,
                    "request_id": rid,
                    "caller": outer.caller,
                },
            )
        with contextlib.suppress(ValueError):
            request_var.reset(token)


class ContextThreadPool(futures.ThreadPoolExecutor):
    """A thread pool whose tasks run in the submitter's context variables.

    ``loop.run_in_executor`` does not carry them over, so without this a
    synchronous handler of the asyncio runtime would log without its request id.
    """

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> futures.Future[T]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def current_observer() -> Observer | None:
    return _current.get()


__all__ = [
    "LATENCY_BUCKETS",
    "REQUEST_ID_HEADER",
    "ContextThreadPool",
    "LoggingConfig",
    "MetricsConfig",
    "Observer",
    "ScrapeGauges",
    "add_cli_flags",
    "apply_cli_flags",
    "current_observer",
    "is_loopback",
    "new_request_id",
    "outgoing_metadata",
    "stream_call",
    "wanted",
]
