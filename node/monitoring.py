"""Post-loan monitoring at the node: watches admitted, sealed updates queued and streamed.

``RegisterWatch`` goes through the one admission path (``MONITORING``: the
claims checked like a Verify's, a consent for POST_LOAN_MONITORING, one use
consumed, an audit entry, the uniform denial), then hands the watch to
every agent concerned (``AgentMonitoringService.AddWatch``; each agent
re-verifies the consent itself). If an agent refuses or is down, the watch
is withdrawn from the others and the admission is followed by a FAILED
entry, as a Verify whose agent failed.

The agents emit one sealed update per live watch per period (see
``xinrong.provider_agent.monitoring``). The node cannot open them: a
puller thread per provider long-polls the agent's outbox
(``PullWatchUpdates``), checks only what it can see (the watch is known,
live, the caller's provider is one of the watch's, the box is addressed to
the watch's institution) and stores them in ``alert_queue`` together with
the new cursor, in one durable transaction; the next pull carries that
cursor, which is the agent's acknowledgement. So an update is in the
agent's outbox or in the node's queue at every instant, across a kill -9
of either.

``StreamAlerts`` sends an institution its queued updates after its cursor,
then new ones as the pullers store them (woken at once, so import-to-alert
latency is the agent's pass plus two hops). ``after_seq`` acknowledges: rows
of that institution up to it are deleted when a stream opens. At-least-once:
a bank that crashes before its cursor is durable gets the same updates again
(same update ids; the SDK is idempotent).

Nothing stored here holds a verdict: the queue has ids, the provider, the
institution and the sealed bytes (``tests/test_alerts.py`` checks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from xinrong.cache import BoundedCache
from xinrong.catalog import Catalog
from xinrong.claims import CLAIM_CACHE_BYTES, CheckedClaim, check_claim, checked_claim_weight
from xinrong.errors import Reason, ValidationError, XinrongError, invalid
from xinrong.keys.layout import PartyCredentials
from xinrong.limits import MAX_TIMESTAMP, MAX_WATCH_CLAIMS
from xinrong.node.access import ClaimsAsk
from xinrong.node.admission import MONITORING, AccessRequest, Admission, Ask, Subject
from xinrong.node.audit import AuditEvent, AuditLog, Decision, claims_digest
from xinrong.node.config import ProviderEndpoint
from xinrong.node.db import Database
from xinrong.node.registry import PartyRegistry
from xinrong.node.routing import agent_failure
from xinrong.rpc.auth import Peer
from xinrong.rpc.channel import secure_channel
from xinrong.v1 import monitoring_pb2, monitoring_pb2_grpc

log = logging.getLogger(__name__)

INSTITUTION = "institution"
WATCH_UPDATE_CONTENT_TYPE = "xinrong.v1.SignedWatchUpdate"  # as the agents seal them
PULL_WAIT_MS = 1000
PULL_MAX = 2000
STREAM_BATCH = 500
STREAM_IDLE_SECONDS = 1.0
RETRY_SECONDS = 0.2

ACTIVE = 1  # WatchState
CANCELLED_STATE = 2


@dataclass(frozen=True)
class WatchRow:  # frozen; cached_property writes the instance __dict__ directly
    watch_id: str
    institution: str
    enterprise: str
    consent_id: str
    providers: tuple[str, ...]
    claims: tuple[str, ...]
    valid_until: int
    state: int
    registered_ms: int

    @functools.cached_property
    def fields(self) -> tuple[str, ...]:
        return tuple(sorted({text.split(" ", 1)[0] for text in self.claims}))

    @functools.cached_property
    def claims_sha256(self) -> str:
        return claims_digest(list(self.claims))


@dataclass(frozen=True)
class _WatchAsk:
    """A watch's shape for admission step 5: its claims as a Verify's, and a term in the future."""

    claims: ClaimsAsk
    valid_until: int
    now: float

    def check(self) -> Ask:
        if self.valid_until and not self.now < self.valid_until < MAX_TIMESTAMP:
            raise invalid(f"valid_until must lie in the future (the loan's end) and before {MAX_TIMESTAMP} (2100)")
        return self.claims.check()

    def raw_digest(self) -> str:
        return self.claims.raw_digest()


class _Wakeup:
    """Wakes the streams waiting on event loops when a puller thread stored updates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def add(self, item: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.add(item)

    def discard(self, item: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.discard(item)

    def fire(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed
                self.discard((loop, event))


class Monitoring:
    """The node's MonitoringService domain (see the module docstring)."""

    def __init__(
        self,
        *,
        db: Database,
        admission: Admission,
        audit: AuditLog,
        registry: PartyRegistry,
        catalog: Catalog,
        endpoints: tuple[ProviderEndpoint, ...],
        credentials: PartyCredentials,
        timeout: float,
        clock: Callable[[], float] = time.time,
        on_stored: Callable[[int], None] | None = None,
    ) -> None:
        self.db = db
        self.admission = admission
        self.audit = audit
        self.registry = registry
        self.catalog = catalog
        self.timeout = timeout
        self.clock = clock
        self._node_id = credentials.party_id
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, Any] = {}
        for endpoint in endpoints:
            channel = secure_channel(endpoint.address, credentials, server_role="provider", server_id=endpoint.name)
            self._channels[endpoint.name] = channel
            self._stubs[endpoint.name] = monitoring_pb2_grpc.AgentMonitoringServiceStub(channel)
        self._claims: BoundedCache[bytes, CheckedClaim] = BoundedCache(
            4096, max_bytes=CLAIM_CACHE_BYTES, weigh=checked_claim_weight
        )
        self._watches: dict[str, WatchRow] = {}
        self._institutions: set[str] = set()  # those with a watch, live or not
        self._watches_lock = threading.Lock()
        self._wakeup = _Wakeup()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.on_stored = on_stored  # tests and the bench: called with the number of updates stored
        self.stored = 0

    # -- start / stop ------------------------------------------------------------------

    def load(self) -> int:
        rows = self.db.query(
            "SELECT watch_id, institution, enterprise, consent_id, providers, claims, valid_until, state, "
            "registered_ms FROM watches"
        )
        with self._watches_lock:
            for r in rows:
                self._watches[r[0]] = _row(r)
                self._institutions.add(str(r[1]))
        return len(rows)

    def start(self) -> None:
        for name in sorted(self._stubs):
            thread = threading.Thread(target=self._pull_loop, args=(name,), name=f"node-alerts-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=PULL_WAIT_MS / 1000 + self.timeout + 1)
        for channel in self._channels.values():
            channel.close()

    # -- register / cancel / list --------------------------------------------------------

    def register(self, caller: Peer, req: monitoring_pb2.RegisterWatchRequest) -> monitoring_pb2.RegisterWatchResponse:
        asking = ClaimsAsk(tuple(req.claims), self.catalog, MAX_WATCH_CLAIMS, self._claims)
        request = AccessRequest(
            MONITORING,
            caller,
            req.request_id,
            req.requested_at,
            (Subject(enterprise=req.enterprise_uscc, consent_id=req.consent_id),),
            _WatchAsk(asking, int(req.valid_until), self.clock()),
        )
        admitted = self.admission.admit_blocking(request)
        subject = admitted.admitted[0]
        consent = subject.record.verified.consent
        valid_until = int(consent.valid_until) if not req.valid_until else min(req.valid_until, consent.valid_until)
        watch_id = "w-" + secrets.token_hex(16)
        providers = admitted.ask.providers
        texts = tuple(_claim_texts(asking))
        row = WatchRow(
            watch_id=watch_id,
            institution=caller.party_id,
            enterprise=req.enterprise_uscc,
            consent_id=req.consent_id,
            providers=providers,
            claims=texts,
            valid_until=valid_until,
            state=ACTIVE,
            registered_ms=int(self.clock() * 1000),
        )
        # Known before any agent may emit its first update for it.
        self._insert(row)
        calls = []
        for name in providers:
            add = monitoring_pb2.AddWatchRequest(
                watch_id=watch_id,
                enterprise_uscc=req.enterprise_uscc,
                consent=subject.record.verified.signed,
                audience_binding=admitted.audience.signed,
                claims=admitted.ask.items[name],
                valid_until=valid_until,
                requested_at=req.requested_at,
            )
            calls.append((name, self._stubs[name].AddWatch.future(add, timeout=self.timeout)))
        failure: XinrongError | None = None
        accepted: list[str] = []
        for name, call in calls:
            try:
                call.result()
                accepted.append(name)
            except grpc.RpcError as err:
                candidate = agent_failure(name, err)
                if failure is None or failure.reason is Reason.PROVIDER_UNAVAILABLE:
                    failure = candidate
        if failure is not None:
            self._withdraw(watch_id, accepted)
            self.admission.failed(admitted, failure.reason.value, data_read=bool(accepted))
            raise failure
        log.info("watch %s registered with %s", watch_id, ", ".join(providers))
        leaf = subject.leaf_index
        return monitoring_pb2.RegisterWatchResponse(
            watch_id=watch_id, valid_until=valid_until, providers=list(providers), audit_leaf_index=leaf or 0
        )

    def _insert(self, row: WatchRow) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO watches (watch_id, institution, enterprise, consent_id, providers, claims, valid_until, "
                "state, registered_ms) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    row.watch_id,
                    row.institution,
                    row.enterprise,
                    row.consent_id,
                    json.dumps(list(row.providers)),
                    json.dumps(list(row.claims)),
                    row.valid_until,
                    row.state,
                    row.registered_ms,
                ),
            )
        with self._watches_lock:
            self._watches[row.watch_id] = row
            self._institutions.add(row.institution)

    def _withdraw(self, watch_id: str, providers: list[str]) -> None:
        for name in providers:
            try:
                self._stubs[name].RemoveWatch(
                    monitoring_pb2.RemoveWatchRequest(watch_id=watch_id), timeout=self.timeout
                )
            except grpc.RpcError:
                log.warning("watch %s could not be withdrawn from %s; its updates are dropped here", watch_id, name)
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM watches WHERE watch_id = ?", (watch_id,))
        with self._watches_lock:
            self._watches.pop(watch_id, None)

    def cancel(self, caller: Peer, watch_id: str) -> monitoring_pb2.CancelWatchResponse:
        with self._watches_lock:
            row = self._watches.get(watch_id)
        if row is None or caller.role != INSTITUTION or row.institution != caller.party_id:
            # One answer for "no such watch" and "another bank's watch".
            raise XinrongError("no such watch of the caller's", reason=Reason.NOT_FOUND)
        if row.state == ACTIVE:
            with self.db.transaction() as tx:
                tx.execute("UPDATE watches SET state = ? WHERE watch_id = ?", (CANCELLED_STATE, watch_id))
                self.audit.append(
                    tx,
                    AuditEvent(
                        caller_role=caller.role,
                        caller_id=caller.party_id,
                        method="CancelWatch",
                        decision=Decision.ALLOWED,
                        enterprise=row.enterprise,
                        consent_id=row.consent_id,
                        providers=row.providers,
                    ),
                    int(self.clock() * 1000),
                )
            with self._watches_lock:
                self._watches[watch_id] = row = _replace_state(row, CANCELLED_STATE)
            for name in row.providers:
                try:
                    self._stubs[name].RemoveWatch(
                        monitoring_pb2.RemoveWatchRequest(watch_id=watch_id), timeout=self.timeout
                    )
                except grpc.RpcError:
                    # Its later updates are dropped here (the watch is no longer live).
                    log.warning("agent %s not told of cancelled watch %s", name, watch_id)
        return monitoring_pb2.CancelWatchResponse(watch_id=watch_id, state=row.state)  # type: ignore[arg-type]

    def listing(self, caller: Peer) -> monitoring_pb2.ListWatchesResponse:
        with self._watches_lock:
            rows = sorted((r for r in self._watches.values() if r.institution == caller.party_id), key=_by_time)
        now = self.clock()
        return monitoring_pb2.ListWatchesResponse(
            watches=[
                monitoring_pb2.WatchListing(
                    watch_id=r.watch_id,
                    enterprise_uscc=r.enterprise,
                    consent_id=r.consent_id,
                    claims=list(r.claims),
                    providers=list(r.providers),
                    valid_until=r.valid_until,
                    state=r.state if r.state != ACTIVE or now < r.valid_until else 3,  # type: ignore[arg-type]
                    registered_at=r.registered_ms // 1000,
                )
                for r in rows
            ]
        )

    # -- agents -> queue ---------------------------------------------------------------

    def cursor(self, provider: str) -> int:
        rows = self.db.query("SELECT after_seq FROM watch_cursors WHERE provider = ?", (provider,))
        return int(rows[0][0]) if rows else 0

    def _pull_loop(self, provider: str) -> None:
        stub = self._stubs[provider]
        cursor = self.cursor(provider)
        failing = False
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                resp = stub.PullWatchUpdates(
                    monitoring_pb2.PullWatchUpdatesRequest(
                        after_seq=cursor, max_updates=PULL_MAX, wait_ms=PULL_WAIT_MS
                    ),
                    timeout=PULL_WAIT_MS / 1000 + self.timeout,
                )
                if failing:
                    log.info("agent %s: pulling watch updates again", provider)
                failing = False
            except grpc.RpcError:
                if not failing:
                    log.warning("agent %s: watch updates cannot be pulled now; retrying", provider)
                failing = True
                self._stop.wait(RETRY_SECONDS)
                continue
            if resp.updates:
                cursor = self.store_updates(provider, list(resp.updates))
            elif time.monotonic() - started < PULL_WAIT_MS / 2000:
                self._stop.wait(RETRY_SECONDS)  # the agent keeps no watch and answered at once

    def store_updates(self, provider: str, updates: list[monitoring_pb2.QueuedWatchUpdate]) -> int:
        """Queue what the node may relay, advance the provider's cursor, commit; returns the cursor."""
        now_ms = int(self.clock() * 1000)
        with self._watches_lock:
            unknown = {q.update.watch_id for q in updates if q.update.watch_id not in self._watches}
        if unknown:
            self._refresh(unknown)
        rows: list[tuple[tuple[Any, ...], WatchRow]] = []
        last = 0
        dropped = 0
        with self._watches_lock:
            for queued in updates:
                last = max(last, int(queued.seq))
                u = queued.update
                watch = self._watches.get(u.watch_id)
                if (
                    watch is None
                    or watch.state != ACTIVE
                    or u.provider != provider
                    or provider not in watch.providers
                    or u.sealed.recipient_id != watch.institution
                    or u.sealed.content_type != WATCH_UPDATE_CONTENT_TYPE
                    or not u.update_id
                ):
                    dropped += 1
                    continue
                rows.append(
                    (
                        (watch.institution, u.update_id, u.watch_id, provider, u.SerializeToString(), now_ms),
                        watch,
                    )
                )
        stored = 0
        with self.db.transaction() as tx:
            for values, watch in rows:
                cur = tx.execute(
                    "INSERT INTO alert_queue (institution, update_id, watch_id, provider, sealed, received_ms) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT (update_id) DO NOTHING",
                    values,
                )
                if cur.rowcount == 0:
                    continue  # a redelivery: queued (and audited) once
                stored += 1
                # The agent read the borrower's data for this bank's watch: an access like any
                # other, in the log the enterprise reads (metadata only, no verdict).
                self.audit.append(
                    tx,
                    AuditEvent(
                        caller_role=INSTITUTION,
                        caller_id=watch.institution,
                        method="WatchUpdate",
                        decision=Decision.ALLOWED,
                        request_id=values[1],
                        enterprise=watch.enterprise,
                        consent_id=watch.consent_id,
                        providers=(provider,),
                        fields=watch.fields,
                        claims_sha256=watch.claims_sha256,
                    ),
                    now_ms,
                )
            tx.execute(
                "INSERT INTO watch_cursors (provider, after_seq) VALUES (?, ?) "
                "ON CONFLICT (provider) DO UPDATE SET after_seq = excluded.after_seq",
                (provider, last),
            )
        if dropped:
            log.info("agent %s: %d updates for unknown or ended watches dropped", provider, dropped)
        self.stored += stored
        self._wakeup.fire()
        if self.on_stored is not None:
            self.on_stored(stored)
        return last

    def _refresh(self, watch_ids: set[str]) -> None:
        """Watches registered through another replica (a shared database): read them before judging an update."""
        for watch_id in sorted(watch_ids)[:PULL_MAX]:
            rows = self.db.query(
                "SELECT watch_id, institution, enterprise, consent_id, providers, claims, valid_until, state, "
                "registered_ms FROM watches WHERE watch_id = ?",
                (watch_id,),
            )
            if rows:
                with self._watches_lock:
                    self._watches[watch_id] = _row(rows[0])
                    self._institutions.add(str(rows[0][1]))

    # -- queue -> banks ----------------------------------------------------------------

    def _check_institution(self, caller: Peer) -> None:
        if caller.role != INSTITUTION or self.registry.get(caller.role, caller.party_id) is None:
            raise XinrongError(
                f"{caller.role} {caller.party_id} may not stream alerts", reason=Reason.CALLER_NOT_ALLOWED
            )

    def _has_watches(self, institution: str) -> bool:
        with self._watches_lock:
            return institution in self._institutions

    def acknowledge(self, institution: str, after_seq: int) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM alert_queue WHERE institution = ? AND seq <= ?", (institution, after_seq))

    def queued(self, institution: str, after_seq: int, limit: int = STREAM_BATCH) -> list[tuple[int, bytes]]:
        rows = self.db.query(
            "SELECT seq, sealed FROM alert_queue WHERE institution = ? AND seq > ? ORDER BY seq LIMIT ?",
            (institution, after_seq, limit),
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def stream(self, caller: Peer, after_seq: int) -> AsyncIterator[monitoring_pb2.StreamAlertsResponse]:
        if after_seq >= 2**62:
            raise ValidationError("after_seq out of range")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._check_institution, caller)
        await loop.run_in_executor(None, self.acknowledge, caller.party_id, after_seq)
        event = asyncio.Event()
        waiter = (loop, event)
        self._wakeup.add(waiter)
        cursor = after_seq
        try:
            while True:
                event.clear()
                rows = await loop.run_in_executor(None, self.queued, caller.party_id, cursor)
                if rows:
                    cursor = rows[-1][0]
                    yield monitoring_pb2.StreamAlertsResponse(
                        updates=[
                            monitoring_pb2.QueuedWatchUpdate(
                                seq=seq, update=monitoring_pb2.SealedWatchUpdate.FromString(blob)
                            )
                            for seq, blob in rows
                        ]
                    )
                    continue
                if not self._has_watches(caller.party_id):
                    return  # nothing can come: the stream ends (the SDK reconnects after its cursor)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), STREAM_IDLE_SECONDS)
        finally:
            self._wakeup.discard(waiter)


def _row(r: tuple[Any, ...]) -> WatchRow:
    return WatchRow(
        watch_id=str(r[0]),
        institution=str(r[1]),
        enterprise=str(r[2]),
        consent_id=str(r[3]),
        providers=tuple(json.loads(r[4])),
        claims=tuple(json.loads(r[5])),
        valid_until=int(r[6]),
        state=int(r[7]),
        registered_ms=int(r[8]),
    )


def _replace_state(row: WatchRow, state: int) -> WatchRow:
    return dataclasses.replace(row, state=state)


def _by_time(row: WatchRow) -> tuple[int, str]:
    return (row.registered_ms, row.watch_id)


def _claim_texts(asking: ClaimsAsk) -> list[str]:
    return [check_claim(asking.catalog, c).text for c in asking.claims]


__all__ = ["Monitoring", "WatchRow"]
