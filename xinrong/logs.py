"""Log lines an operator can follow across processes: text or one JSON object per line.

Every record carries the request it was written for, when there is one:
``request_id``, ``caller`` (the certified party id), ``method``, and for
the access line written when a call ends, ``status`` and ``duration_ms``.
The request context lives in context variables set by the server's
observing interceptor (``xinrong.rpc.observe``), so a log line written
deep in a servicer carries the same request id as the access line, and
the node and an agent log the same id for one bank request.

Only ids, statuses and timings are put here by this module: never a
claim value, a label, a key or a ciphertext (the callers' messages are
theirs to keep free of those, as before).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
from typing import Any, Literal, NamedTuple

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = ("text", "json")


class RequestContext(NamedTuple):
    """The request a log line is written for: ids only."""

    request_id: str
    caller: str
    method: str


NO_REQUEST = RequestContext("", "", "")

# The request being served on this thread / task (NO_REQUEST outside one): one
# variable, so entering and leaving a request costs one set and one reset.
request_var: contextvars.ContextVar[RequestContext] = contextvars.ContextVar("xinrong_request", default=NO_REQUEST)


def current_request_id() -> str:
    return request_var.get().request_id


_CONTEXT_FIELDS = ("request_id", "caller", "method")
_ACCESS_FIELDS = ("status", "duration_ms")


class ContextFilter(logging.Filter):
    """Copies the current request context onto every record (unless the record has its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_var.get()
        if not getattr(record, "request_id", ""):
            record.request_id = current.request_id
        if not getattr(record, "caller", ""):
            record.caller = current.caller
        if not getattr(record, "method", ""):
            record.method = current.method
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the request context."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*_CONTEXT_FIELDS, *_ACCESS_FIELDS):
            value = getattr(record, name, None)
            if value not in (None, ""):
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, sort_keys=False)


class TextFormatter(logging.Formatter):
    """Today's text lines, with the request id appended when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", "")
        return f"{text} [request_id={rid}]" if rid else text


def use_format(fmt: str) -> None:
    """Switch the root logger's handlers to ``fmt`` ("text" or "json") and add the context filter."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, not {fmt!r}")
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    for handler in root.handlers:
        handler.setFormatter(formatter)
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())


__all__ = [
    "LOG_FORMATS",
    "NO_REQUEST",
    "ContextFilter",
    "JsonFormatter",
    "LogFormat",
    "RequestContext",
    "TextFormatter",
    "current_request_id",
    "request_var",
    "use_format",
]
