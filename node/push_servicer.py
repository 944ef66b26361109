"""Thin gRPC servicer of the push service (``xinrong.v1.PushService``).

``Subscribe`` is an async generator on the server's event loop: it reads the
event log in pages (in a worker thread: the database calls block), ships
the stored signed bytes, and when caught up waits for a wake-up from
``EventLog.on_append`` rather than polling. Over PostgreSQL another
replica's appends wake nobody here, so a caught-up stream also re-reads
every ``POLL_SECONDS_SHARED`` (a short poll, by design). An idle stream
sends a heartbeat (no events, the current cursor) every
``HEARTBEAT_SECONDS`` so the client can tell a quiet log from a dead link.

The stream has no deadline of its own: ``xinrong.rpc.server`` sets none,
and the bank SDK calls without a timeout when following. Nor does it count
against the server's call budget (``ServiceBinding.unbudgeted``): a few
hundred following banks would otherwise refuse every other call; instead
an institution holds at most ``MAX_STREAMS_PER_INSTITUTION`` streams. It ends when the
client hangs up, or when the node stops (the server cancels it after its
grace period; the client resumes from its cursor on a replica or after the
restart).

Opening a subscription is one audit entry (caller, filters); the events it
carries are public records or events addressed to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc

from xinrong.errors import Reason, XinrongError, invalid
from xinrong.node.audit import AuditEvent, AuditLog, Decision
from xinrong.node.db import Database
from xinrong.node.events import EventLog, Filters, Page, StoredEvent
from xinrong.node.registry import PartyRegistry
from xinrong.pushwire import RESPONSE_CONTEXT, response_message
from xinrong.rpc.auth import require_caller
from xinrong.rpc.gate import current_stream
from xinrong.v1 import push_pb2, push_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "xinrong.v1.PushService"
ALLOWED_ROLES = frozenset({"institution"})
INSTITUTION = "institution"

DEFAULT_BATCH = 500
MAX_BATCH = 2000
HEARTBEAT_SECONDS = 15.0
POLL_SECONDS_SHARED = 0.25
# A wake-up can only be missed if a callback fails; re-read now and then anyway.
POLL_SECONDS_LOCAL = 5.0
MAX_CURSOR = 2**62
# Subscriptions do not count against the server's call budget (long-lived): bounded here.
MAX_STREAMS_PER_INSTITUTION = 16


class PushServicer(push_pb2_grpc.PushServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        events: EventLog,
        registry: PartyRegistry,
        audit: AuditLog,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._events = events
        self._registry = registry
        self._audit = audit
        self._db = db
        self._clock = clock
        self._heartbeat = heartbeat_seconds
        self.open_streams = 0
        # Open streams per institution, for MAX_STREAMS_PER_INSTITUTION (event-loop only). A
        # suspension ends them through the server guard's stream registry
        # (``InstitutionGate.close_streams``), as every other stream of the institution.
        self._streams: dict[str, int] = {}

    def _record(self, caller_id: str, filters: Filters, decision: Decision, reason: str = "") -> None:
        fields = (
            *(f"topic:{t}" for t in filters.topics),
            *(f"region:{r}" for r in filters.regions),
            *(f"industry:{i}" for i in filters.industries),
        )
        with self._db.transaction() as tx:
            self._audit.append(
                tx,
                AuditEvent(
                    caller_role=INSTITUTION,
                    caller_id=caller_id,
                    method="Subscribe",
                    decision=decision,
                    reason=reason,
                    fields=fields,
                ),
                int(self._clock() * 1000),
            )

    def _response(
        self, subscriber: str, events: list[StoredEvent], cursor: int, head: int, key_id: str
    ) -> push_pb2.SubscribeResponse:
        """The events as stored, and one node signature over the response (``xinrong.pushwire``)."""
        message = response_message(cursor, head, subscriber, (e.body for e in events))
        return push_pb2.SubscribeResponse(
            events=[e.signed(key_id) for e in events],
            cursor=cursor,
            head=head,
            response_signature=self._events.signing_key.sign(RESPONSE_CONTEXT, message),
        )

    def _page(self, cursor: int, filters: Filters, institution: str, limit: int) -> Page:
        return self._events.after(cursor, filters, institution, limit=limit)

    async def Subscribe(
        self, request: push_pb2.SubscribeRequest, context: grpc.ServicerContext
    ) -> AsyncIterator[push_pb2.SubscribeResponse]:
        caller = require_caller(context)
        if caller.role != INSTITUTION:
            raise XinrongError(f"{caller.role} may not subscribe", reason=Reason.CALLER_NOT_ALLOWED)
        filters = Filters.checked(request.regions, request.industries, request.topics)
        if request.cursor >= MAX_CURSOR:
            raise invalid("cursor must be below 2^62")
        loop = asyncio.get_running_loop()
        if self._registry.get(INSTITUTION, caller.party_id) is None:
            await loop.run_in_executor(
                None, self._record, caller.party_id, filters, Decision.REFUSED, Reason.CALLER_NOT_ALLOWED.value
            )
            raise XinrongError("institution not registered at this node", reason=Reason.CALLER_NOT_ALLOWED)
        head = await loop.run_in_executor(None, self._events.head)
        if request.cursor > head:
            # A cursor from another log (a replaced database, another node): say so, never wait forever.
            await loop.run_in_executor(
                None, self._record, caller.party_id, filters, Decision.REFUSED, Reason.FAILED_PRECONDITION.value
            )
            raise XinrongError(
                "cursor beyond the log's head",
                reason=Reason.FAILED_PRECONDITION,
                public=f"the cursor is beyond this node's log (head {head}): it comes from another log",
            )
        if self._streams.get(caller.party_id, 0) >= MAX_STREAMS_PER_INSTITUTION:
            await loop.run_in_executor(
                None, self._record, caller.party_id, filters, Decision.REFUSED, Reason.FAILED_PRECONDITION.value
            )
            raise XinrongError(
                "too many open subscriptions",
                reason=Reason.FAILED_PRECONDITION,
                public=f"at most {MAX_STREAMS_PER_INSTITUTION} open subscriptions per institution",
            )
        await loop.run_in_executor(None, self._record, caller.party_id, filters, Decision.ALLOWED)
        batch = min(request.max_batch or DEFAULT_BATCH, MAX_BATCH)
        cursor = int(request.cursor)
        wake = asyncio.Event()

        def on_append(_head: int) -> None:
            loop.call_soon_threadsafe(wake.set)

        poll = POLL_SECONDS_SHARED if self._events.shared else POLL_SECONDS_LOCAL
        key_id = self._events.key_id
        self._streams[caller.party_id] = self._streams.get(caller.party_id, 0) + 1
        self._events.on_append(on_append)
        self.open_streams += 1
        sent_any = False
        last_sent = time.monotonic()
        # A suspension cancels this stream's task (``InstitutionGate.close_streams``); asyncio.wait_for
        # can swallow a cancel that lands as its timeout fires, so the gate's flag is checked too.
        gated = current_stream()
        try:
            while True:
                if gated is not None and gated.cancelled.is_set() and gated.error is not None:
                    raise gated.error
                wake.clear()
                page = await loop.run_in_executor(None, self._page, cursor, filters, caller.party_id, batch)
                if page.events or page.cursor != cursor:
                    cursor = page.cursor
                    sent_any = True
                    last_sent = time.monotonic()
                    yield self._response(caller.party_id, page.events, cursor, page.head, key_id)
                    if len(page.events) >= batch:
                        continue  # more is waiting
                if not sent_any:  # caught up at once: say so (cursor and head), so the client knows it is live
                    sent_any = True
                    last_sent = time.monotonic()
                    yield self._response(caller.party_id, [], cursor, page.head, key_id)
                if not request.follow:
                    return
                idle = self._heartbeat - (time.monotonic() - last_sent)
                if idle <= 0:
                    last_sent = time.monotonic()
                    yield self._response(caller.party_id, [], cursor, page.head, key_id)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=min(poll, idle))
        finally:
            self.open_streams -= 1
            self._events.remove_callback(on_append)
            left = self._streams.get(caller.party_id, 1) - 1
            if left > 0:
                self._streams[caller.party_id] = left
            else:
                self._streams.pop(caller.party_id, None)


__all__ = ["ALLOWED_ROLES", "SERVICE_NAME", "PushServicer"]
