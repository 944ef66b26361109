"""A per-call gate every guarded handler passes through, and the open streams it can close.

The server guard (``xinrong.rpc.server``) authenticates the caller and
checks its role per service; a party may add one ``CallGate`` to say, per
call, whether this caller may call this method right now (the node: is the
institution suspended, is its rate limit reached). The gate is asked once
per unary call and once when a stream opens, on the event loop: it must
answer from memory, never from a database.

A stream outlives the moment it was admitted, so the guard records every
open server stream in ``StreamRegistry``; ``close_party`` ends the streams
of one caller with a status (e.g. PERMISSION_DENIED INSTITUTION_SUSPENDED).
On the asyncio runtime the stream's task is cancelled and the guard answers
with the recorded error; a handler running in a worker thread, or any
handler that waits long between messages, can poll ``current_stream()``
(``cancelled`` / ``error``) to stop early.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Protocol

from xinrong.errors import XinrongError
from xinrong.rpc.auth import Peer


class CallGate(Protocol):
    """Per-call admission beside the role check; raises a ``XinrongError`` to refuse."""

    streams: StreamRegistry

    def admit(self, peer: Peer, method: str) -> None: ...


@dataclass(eq=False)
class OpenStream:
    """One open server stream: who, which method, and how to end it."""

    peer: Peer
    method: str
    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Task[object] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    error: XinrongError | None = None
    # Set by the server guard (on the loop) while the stream is suspended at its yield, i.e. while
    # gRPC writes a response: a cancel landing there would be swallowed without a status.
    yielding: bool = False

    def cancel(self, error: XinrongError) -> None:
        """End the stream with ``error`` (idempotent, from any thread)."""
        if self.cancelled.is_set():
            return
        self.error = error
        self.cancelled.set()
        if self.loop is not None and self.task is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._cancel_on_loop)

    def _cancel_on_loop(self) -> None:
        """Cancel the handler's task, unless it is writing a response: gRPC's write would swallow the
        cancel and leave the call open with no status (the client would wait forever); the guard
        checks ``cancelled`` as soon as the write returns instead."""
        if not self.yielding and self.task is not None:
            self.task.cancel()


_current: contextvars.ContextVar[OpenStream | None] = contextvars.ContextVar("xinrong_open_stream", default=None)


def current_stream() -> OpenStream | None:
    """The open stream the calling handler serves (None outside a guarded stream)."""
    return _current.get()


class StreamRegistry:
    """Open server streams per caller (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._open: dict[int, OpenStream] = {}

    @contextmanager
    def opened(self, peer: Peer, method: str) -> Iterator[OpenStream]:
        """Record a stream while the ``with`` block serves it (the current task, if on a loop)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            task: asyncio.Task[object] | None = asyncio.current_task()
        except RuntimeError:
            loop, task = None, None
        stream = OpenStream(peer, method, loop, task)
        key = next(self._ids)
        with self._lock:
            self._open[key] = stream
        token = _current.set(stream)
        try:
            yield stream
        finally:
            with suppress(ValueError):  # a generator finished in another context than it started in
                _current.reset(token)
            with self._lock:
                self._open.pop(key, None)

    def count(self, peer: Peer | None = None) -> int:
        with self._lock:
            return sum(1 for s in self._open.values() if peer is None or s.peer == peer)

    def close_party(self, role: str, party_id: str, error: XinrongError) -> int:
        """End every open stream of one caller with ``error``; returns how many."""
        with self._lock:
            chosen = [s for s in self._open.values() if s.peer.role == role and s.peer.party_id == party_id]
        for stream in chosen:
            stream.cancel(error)
        return len(chosen)


class OpenGate:
    """The gate that admits every call (a party without per-call policy)."""

    def __init__(self) -> None:
        self.streams = StreamRegistry()

    def admit(self, peer: Peer, method: str) -> None:
        return None


__all__ = ["CallGate", "OpenGate", "OpenStream", "StreamRegistry", "current_stream"]
