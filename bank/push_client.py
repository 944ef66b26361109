"""Institution SDK of the push service: node-signed events, resumed from a cursor file.

``PushClient.events`` yields every event of a subscription after the cursor
held in a file, each one's node signature checked first (the node's key
comes from its CA-signed binding, fetched through the node and verified
here against the platform CA), and moves the cursor file forward only once
the caller has taken every event of a response: delivery is at-least-once,
so after a crash the last response's events may come again (same
``event_id``; receivers deduplicate), but none is ever skipped. When the
node goes away (restart, replica failover) the client reconnects with its
cursor and carries on.

A following stream is called without a deadline: the default per-call
timeout of the other SDK calls would cut a long-lived subscription.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from xinrong import ids
from xinrong.errors import SignatureError, XinrongError
from xinrong.keys.binding import verify_binding
from xinrong.keys.layout import PartyCredentials
from xinrong.keys.signing import VerifyKey
from xinrong.pushwire import EVENT_CONTEXT, RESPONSE_CONTEXT, response_message
from xinrong.rpc.channel import DEFAULT_TIMEOUT, secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import common_pb2, node_pb2, node_pb2_grpc, push_pb2, push_pb2_grpc

log = logging.getLogger(__name__)

# Codes after which a subscription is resumed (the node restarting, a replica
# going away, the link dropping); anything else is the caller's to handle.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,  # a stream cut mid-message (RST_STREAM) surfaces as INTERNAL
        grpc.StatusCode.UNKNOWN,
    }
)
MAX_BACKOFF_SECONDS = 5.0


class EventRejected(XinrongError):
    """An event failed its signature or ordering check; nothing of its response was delivered."""


@dataclass(frozen=True)
class ReceivedEvent:
    """One event, its node signature checked."""

    seq: int
    event_id: str
    topic: str
    enterprise: str
    region: str
    industry: str
    payload: bytes
    appended_ms: int
    restricted: bool
    node_id: str
    signed: push_pb2.SignedEvent
    # How the node's signature was checked: "event" (its own), "response"
    # (the response signature covering its hash), "" (not checked: benchmarks).
    checked: str = ""

    def payload_json(self) -> Any:
        """The payload as JSON, or None if it is not UTF-8 JSON."""
        try:
            return json.loads(self.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None

    def as_dict(self) -> dict[str, object]:
        """A JSON line: the event and its signature, so it can be re-verified offline."""
        out: dict[str, object] = {
            "seq": self.seq,
            "event_id": self.event_id,
            "topic": self.topic,
            "enterprise": self.enterprise,
            "region": self.region,
            "industry": self.industry,
            "appended_ms": self.appended_ms,
            "restricted": self.restricted,
            "node_id": self.node_id,
        }
        decoded = self.payload_json()
        if decoded is not None:
            out["payload"] = decoded
        else:
            out["payload_b64"] = base64.b64encode(self.payload).decode("ascii")
        out["signed_event_b64"] = base64.b64encode(self.signed.event).decode("ascii")
        out["signature_b64"] = base64.b64encode(self.signed.signature).decode("ascii")
        out["node_key_id"] = self.signed.key_id
        out["signature_ok"] = bool(self.checked)
        out["checked_by"] = f"{self.checked}_signature" if self.checked else "none"
        return out


def verify_event(
    key: VerifyKey | None, signed: push_pb2.SignedEvent, *, node_id: str, check_signature: bool = True
) -> ReceivedEvent:
    """Check one signed event against the node's key; EventRejected otherwise.

    ``check_signature`` False: the event's bytes were covered by a checked
    response signature already (or ``key`` is None: no check at all).
    """
    if check_signature and key is not None:
        try:
            key.verify(EVENT_CONTEXT, signed.event, signed.signature)
        except SignatureError:
            raise EventRejected("an event's node signature does not verify") from None
    event = push_pb2.Event.FromString(signed.event)
    if key is not None and (event.node_id != node_id or (signed.key_id and signed.key_id != key.key_id)):
        raise EventRejected("an event names another node or key")
    return ReceivedEvent(
        seq=event.seq,
        event_id=event.event_id,
        topic=event.topic,
        enterprise=event.enterprise,
        region=event.region,
        industry=event.industry,
        payload=bytes(event.payload),
        appended_ms=event.appended_ms,
        restricted=event.restricted,
        node_id=event.node_id,
        signed=signed,
        checked="event" if check_signature and key is not None else "",
    )


def verify_line(key: VerifyKey, line: dict[str, Any], *, node_id: str = "node") -> ReceivedEvent:
    """Re-check, offline, one JSON line written by ``ReceivedEvent.as_dict`` (its own signature)."""
    try:
        signed = push_pb2.SignedEvent(
            event=base64.b64decode(str(line["signed_event_b64"]), validate=True),
            signature=base64.b64decode(str(line["signature_b64"]), validate=True),
            key_id=str(line.get("node_key_id", "")),
        )
    except (KeyError, ValueError):
        raise EventRejected("the line holds no signed event") from None
    event = verify_event(key, signed, node_id=node_id)
    if event.seq != line.get("seq") or event.event_id != line.get("event_id"):
        raise EventRejected("the line's fields differ from its signed event")
    return event


class CursorFile:
    """The subscriber's resume point: one number in a file, replaced atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        cursor = ids.decimal(text)
        if cursor is None:
            raise ValueError(f"cursor file {self.path} does not hold a cursor")
        return cursor

    def write(self, cursor: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{cursor}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class Subscription:
    regions: tuple[str, ...] = ()
    industries: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()

    def request(self, cursor: int, *, follow: bool, max_batch: int = 0) -> push_pb2.SubscribeRequest:
        return push_pb2.SubscribeRequest(
            regions=list(self.regions),
            industries=list(self.industries),
            topics=list(self.topics),
            cursor=cursor,
            follow=follow,
            max_batch=max_batch,
        )


class PushClient:
    """An institution's subscriptions at the node (``node_target`` as for ``BankClient``)."""

    def __init__(
        self,
        node_target: str | Sequence[str],
        credentials: PartyCredentials,
        *,
        node_id: str = "node",
        timeout: float = DEFAULT_TIMEOUT,
        verify: str | bool = "response",
    ) -> None:
        """``verify``: "response" (default) checks the node's signature of each
        response, which covers the SHA-256 of every event in it; "event" also
        checks every event's own signature; "none" / False (benchmarks only)
        checks nothing."""
        if verify is True:
            verify = "response"
        elif verify is False:
            verify = "none"
        if verify not in ("response", "event", "none"):
            raise ValueError("verify must be response, event or none")
        if credentials.role != "institution":
            raise ValueError("a push client needs institution credentials")
        self.credentials = credentials
        self.timeout = timeout
        self._node_id = node_id
        self._verify = verify
        # Reconnect quickly after a node restart (gRPC's default backoff grows to minutes).
        self._channel = secure_channel(
            node_target,
            credentials,
            server_role="node",
            server_id=node_id,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self._push = push_pb2_grpc.PushServiceStub(self._channel)
        self._node = node_pb2_grpc.NodeServiceStub(self._channel)
        self._key: VerifyKey | None = None
        self.reconnects = 0

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PushClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def node_key(self) -> VerifyKey:
        """The node's signing key, from its binding as the platform CA signed it."""
        if self._key is None:
            try:
                resp = self._node.ListParties(
                    node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_NODE), timeout=self.timeout
                )
            except grpc.RpcError as err:
                raise decode_rpc_error(err) from None
            for signed in resp.bindings:
                try:
                    binding = verify_binding(
                        self.credentials.ca, signed, expect_role="node", expect_party_id=self._node_id
                    )
                except SignatureError:
                    continue
                self._key = binding.verify_key
                break
            if self._key is None:
                raise EventRejected(f"no CA-verified binding of the node {self._node_id!r}")
        return self._key

    def responses(
        self, subscription: Subscription, cursor: int, *, follow: bool, max_batch: int = 0
    ) -> Generator[push_pb2.SubscribeResponse, None, None]:
        """One stream, raw (no check, no reconnect): what ``batches`` builds on."""
        call = self._push.Subscribe(subscription.request(cursor, follow=follow, max_batch=max_batch), timeout=None)
        try:
            yield from call
        finally:
            call.cancel()

    def batches(
        self,
        subscription: Subscription,
        cursor: int = 0,
        *,
        follow: bool = False,
        max_batch: int = 0,
        retry_seconds: float = 30.0,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[list[ReceivedEvent], int]]:
        """(checked events, cursor after them) per response, reconnecting with the cursor.

        A stream that fails with a retryable code is resumed from the last
        cursor; without ``follow``, only for ``retry_seconds`` of failures in
        a row. ``stop()`` true ends a following subscription at the next response.
        """
        key = self.node_key() if self._verify != "none" else None
        failing_since: float | None = None
        backoff = 0.1
        while True:
            try:
                for resp in self.responses(subscription, cursor, follow=follow, max_batch=max_batch):
                    failing_since = None
                    backoff = 0.1
                    if key is not None:
                        self._check_response(key, resp)
                    events = [self._check(key, signed, cursor) for signed in resp.events]
                    for before, after in itertools.pairwise(events):
                        if after.seq <= before.seq:
                            raise EventRejected("events out of order")
                    if resp.cursor < cursor:
                        raise EventRejected("the node moved the cursor backwards")
                    cursor = resp.cursor
                    yield events, cursor
                    if stop is not None and stop():
                        return
                return  # the node ended the stream: caught up (no follow)
            except grpc.RpcError as err:
                code = err.code()
                if code not in RETRYABLE:
                    raise decode_rpc_error(err) from None
                now = time.monotonic()
                failing_since = failing_since or now
                if not follow and now - failing_since > retry_seconds:
                    raise decode_rpc_error(err) from None
                if stop is not None and stop():
                    return
                self.reconnects += 1
                log.info("subscription stream ended (%s); resuming after cursor %d", code.name, cursor)
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _check_response(self, key: VerifyKey, resp: push_pb2.SubscribeResponse) -> None:
        message = response_message(resp.cursor, resp.head, self.credentials.party_id, (e.event for e in resp.events))
        try:
            key.verify(RESPONSE_CONTEXT, message, resp.response_signature)
        except SignatureError:
            raise EventRejected("a response's node signature does not verify") from None

    def _check(self, key: VerifyKey | None, signed: push_pb2.SignedEvent, cursor: int) -> ReceivedEvent:
        received = verify_event(key, signed, node_id=self._node_id, check_signature=self._verify == "event")
        if key is not None and not received.checked:
            received = dataclasses.replace(received, checked="response")
        if received.seq <= cursor:
            raise EventRejected("an event at or before the cursor asked for")
        return received

    def events(
        self,
        subscription: Subscription,
        *,
        cursor_file: str | Path | None = None,
        cursor: int = 0,
        follow: bool = False,
        stop: Callable[[], bool] | None = None,
        retry_seconds: float = 30.0,
    ) -> Iterator[ReceivedEvent]:
        """Every event after the cursor (from ``cursor_file`` when given), checked.

        The cursor file moves forward after the caller took every event of
        a response (and after empty responses that only move the cursor).
        """
        store = CursorFile(cursor_file) if cursor_file is not None else None
        start = store.read() if store is not None else cursor
        for events, after in self.batches(subscription, start, follow=follow, stop=stop, retry_seconds=retry_seconds):
            yield from events
            if store is not None:
                store.write(after)


__all__ = [
    "EVENT_CONTEXT",
    "CursorFile",
    "EventRejected",
    "PushClient",
    "ReceivedEvent",
    "Subscription",
    "verify_event",
    "verify_line",
]
