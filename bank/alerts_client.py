"""Post-loan monitoring for an institution: register watches, follow risk alerts.

The node streams this bank's queued watch updates (``StreamAlerts``): one
sealed, provider-signed update per watch per period, changed or not, all of
one length. Here each is opened with the bank's sealing key and its
signature checked against the provider's CA-verified binding (fetched
through the node, verified against the platform CA here); the update must
name this bank, its watch and its update id, or it is rejected. The last
verdict per (watch, claim) is kept, and only a *change* is surfaced, as an
``Alert``: claim, old -> new verdict, data-as-of, and the provider's
signature over the update (verifiable offline later).

No alert lost across restarts: the state (``alerts.db`` in the state dir)
holds the cursor, the last verdict per (watch, claim), the update ids seen
and every alert raised, and a batch's alerts, verdicts and cursor commit in
one transaction. The stream resumes after the durable cursor, which is the
node's acknowledgement; a batch redelivered after a crash is recognised by
its update ids (and by the period ordering of each watch's updates), so an
alert is raised exactly once. The first update of a watch is its baseline:
no alert.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from xinrong.bank.client import RESULT_NAMES, AnswerRejected, BankClient
from xinrong.claims import parse_claim
from xinrong.errors import SignatureError
from xinrong.keys.layout import PartyCredentials
from xinrong.rpc.channel import DEFAULT_TIMEOUT, secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.statefiles import prepare_private
from xinrong.v1 import monitoring_pb2, monitoring_pb2_grpc

log = logging.getLogger(__name__)

WATCH_UPDATE_CONTEXT = "xinrong.v1.WatchUpdate"  # as the agents sign them
WATCH_UPDATE_CONTENT_TYPE = "xinrong.v1.SignedWatchUpdate"  # as the agents seal them
RECONNECT_SECONDS = 0.2
# A stream is re-opened after this long (when a batch arrives) so the node can drop acknowledged updates.
RESUME_SECONDS = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (update_id TEXT PRIMARY KEY, received_ms INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verdicts (
  watch_id TEXT NOT NULL,
  claim TEXT NOT NULL,
  provider TEXT NOT NULL,
  result TEXT NOT NULL,
  period INTEGER NOT NULL,
  data_as_of TEXT NOT NULL,
  PRIMARY KEY (watch_id, claim)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  update_id TEXT NOT NULL,
  watch_id TEXT NOT NULL,
  enterprise TEXT NOT NULL,
  provider TEXT NOT NULL,
  provider_key_id TEXT NOT NULL,
  claim TEXT NOT NULL,
  old TEXT NOT NULL,
  new TEXT NOT NULL,
  data_as_of TEXT NOT NULL,
  signed BLOB NOT NULL,
  received_ms INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class Alert:
    """A watched claim whose verdict changed between two periods, as the provider signed it."""

    id: int
    update_id: str
    watch_id: str
    enterprise: str
    provider: str
    provider_key_id: str
    claim: str
    old: str
    new: str
    data_as_of: str
    signed: bytes  # the SignedWatchUpdate: update bytes and the provider's signature
    received_ms: int

    def as_dict(self) -> dict[str, object]:
        signed = monitoring_pb2.SignedWatchUpdate.FromString(self.signed)
        return {
            "alert_id": self.id,
            "watch_id": self.watch_id,
            "enterprise": self.enterprise,
            "claim": self.claim,
            "old": self.old,
            "new": self.new,
            "data_as_of": self.data_as_of,
            "provider": self.provider,
            "provider_key_id": self.provider_key_id,
            "provider_signature": signed.signature.hex(),
            "signature_ok": True,
        }


@dataclass
class BatchOutcome:
    alerts: list[Alert]
    updates: int = 0
    duplicates: int = 0
    rejected: int = 0


class AlertState:
    """The bank's durable monitoring state in ``<state_dir>/alerts.db``."""

    def __init__(self, state_dir: str | Path) -> None:
        directory = Path(state_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = prepare_private(directory / "alerts.db", "bank alert state")
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def cursor(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
        return int(row[0]) if row else 0

    def alerts(self, after_id: int = 0) -> list[Alert]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, update_id, watch_id, enterprise, provider, provider_key_id, claim, old, new, data_as_of, "
                "signed, received_ms FROM alerts WHERE id > ? ORDER BY id",
                (after_id,),
            ).fetchall()
        return [_alert(r) for r in rows]

    def alert_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def verdict(self, watch_id: str, claim: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT result FROM verdicts WHERE watch_id = ? AND claim = ?", (watch_id, claim)
            ).fetchone()
        return str(row[0]) if row else None

    def updates_seen(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0])

    def apply(self, checked: list[tuple[str, monitoring_pb2.WatchUpdate, bytes]], cursor: int) -> BatchOutcome:
        """Checked updates of one batch, and the cursor after it: one transaction."""
        outcome = BatchOutcome(alerts=[])
        now_ms = int(time.time() * 1000)
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for update_id, update, signed in checked:
                    if (
                        conn.execute(
                            "INSERT OR IGNORE INTO seen(update_id, received_ms) VALUES (?, ?)", (update_id, now_ms)
                        ).rowcount
                        == 0
                    ):
                        outcome.duplicates += 1
                        continue
                    outcome.updates += 1
                    for verdict in update.verdicts:
                        new = RESULT_NAMES.get(verdict.result, "UNSPECIFIED")
                        row = conn.execute(
                            "SELECT result, period FROM verdicts WHERE watch_id = ? AND claim = ?",
                            (update.watch_id, verdict.claim_text),
                        ).fetchone()
                        if row is not None and int(row[1]) >= update.period:
                            continue  # an older period delivered late: the newer verdict stands
                        conn.execute(
                            "INSERT INTO verdicts(watch_id, claim, provider, result, period, data_as_of) "
                            "VALUES (?,?,?,?,?,?) ON CONFLICT(watch_id, claim) DO UPDATE SET "
                            "result = excluded.result, period = excluded.period, data_as_of = excluded.data_as_of",
                            (
                                update.watch_id,
                                verdict.claim_text,
                                update.provider,
                                new,
                                update.period,
                                update.data_as_of,
                            ),
                        )
                        if row is None or row[0] == new:
                            continue  # the baseline, or no change
                        cur = conn.execute(
                            "INSERT INTO alerts(update_id, watch_id, enterprise, provider, provider_key_id, claim, old, "
                            "new, data_as_of, signed, received_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            (
                                update_id,
                                update.watch_id,
                                update.enterprise_uscc,
                                update.provider,
                                update.provider_key_id,
                                verdict.claim_text,
                                str(row[0]),
                                new,
                                update.data_as_of,
                                signed,
                                now_ms,
                            ),
                        )
                        outcome.alerts.append(
                            Alert(
                                id=int(cur.lastrowid or 0),
                                update_id=update_id,
                                watch_id=update.watch_id,
                                enterprise=update.enterprise_uscc,
                                provider=update.provider,
                                provider_key_id=update.provider_key_id,
                                claim=verdict.claim_text,
                                old=str(row[0]),
                                new=new,
                                data_as_of=update.data_as_of,
                                signed=signed,
                                received_ms=now_ms,
                            )
                        )
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('cursor', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(cursor),),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return outcome

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _alert(r: tuple[Any, ...]) -> Alert:
    return Alert(
        id=int(str(r[0])),
        update_id=str(r[1]),
        watch_id=str(r[2]),
        enterprise=str(r[3]),
        provider=str(r[4]),
        provider_key_id=str(r[5]),
        claim=str(r[6]),
        old=str(r[7]),
        new=str(r[8]),
        data_as_of=str(r[9]),
        signed=bytes(r[10]),
        received_ms=int(str(r[11])),
    )


class AlertsClient:
    """Watches and alerts of one institution: the node's MonitoringService plus the durable state."""

    def __init__(
        self,
        node_target: str | Sequence[str],
        credentials: PartyCredentials,
        state_dir: str | Path,
        *,
        node_id: str = "node",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if credentials.role != "institution" or credentials.sealing_key is None:
            raise ValueError("an alerts client needs institution credentials with a sealing key")
        self.credentials = credentials
        self.timeout = timeout
        self._bank = BankClient(node_target, credentials, node_id=node_id, timeout=timeout)
        self._channel = secure_channel(node_target, credentials, server_role="node", server_id=node_id)
        self._stub = monitoring_pb2_grpc.MonitoringServiceStub(self._channel)
        self.state = AlertState(state_dir)
        self._stream: Any = None

    def close(self) -> None:
        self._channel.close()
        self._bank.close()
        self.state.close()

    def __enter__(self) -> AlertsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def bank(self) -> BankClient:
        return self._bank

    # -- watches ---------------------------------------------------------------------

    def register_watch(
        self, enterprise: str, claims: Sequence[str], consent_id: str, *, valid_until: int = 0
    ) -> monitoring_pb2.RegisterWatchResponse:
        request = monitoring_pb2.RegisterWatchRequest(
            request_id=str(uuid.uuid4()),
            requested_at=int(time.time()),
            enterprise_uscc=enterprise,
            consent_id=consent_id,
            claims=[parse_claim(c) for c in claims],
            valid_until=valid_until,
        )
        try:
            resp: monitoring_pb2.RegisterWatchResponse = self._stub.RegisterWatch(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None
        return resp

    def cancel_watch(self, watch_id: str) -> monitoring_pb2.CancelWatchResponse:
        try:
            resp: monitoring_pb2.CancelWatchResponse = self._stub.CancelWatch(
                monitoring_pb2.CancelWatchRequest(watch_id=watch_id), timeout=self.timeout
            )
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None
        return resp

    def list_watches(self) -> list[monitoring_pb2.WatchListing]:
        try:
            resp = self._stub.ListWatches(monitoring_pb2.ListWatchesRequest(), timeout=self.timeout)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None
        return list(resp.watches)

    # -- updates -> alerts ---------------------------------------------------------------

    def check(self, envelope: monitoring_pb2.SealedWatchUpdate) -> tuple[monitoring_pb2.WatchUpdate, bytes]:
        """Open, verify and bind one update to this bank; AnswerRejected if anything fails."""
        key = self.credentials.sealing_key
        assert key is not None
        me = self.credentials.party_id
        try:
            raw = key.open(
                envelope.sealed, recipient_id=me, content_type=WATCH_UPDATE_CONTENT_TYPE, context=envelope.update_id
            )
            signed = monitoring_pb2.SignedWatchUpdate.FromString(raw)
            binding = self._bank.provider_binding(envelope.provider)
            binding.verify_key.verify(WATCH_UPDATE_CONTEXT, signed.update, signed.signature)
            update = monitoring_pb2.WatchUpdate.FromString(signed.update)
        except (SignatureError, ValueError) as exc:
            raise AnswerRejected(f"watch update {envelope.update_id!r} fails its checks: {exc}") from None
        except Exception as exc:  # a protobuf DecodeError and the like: the same rejection
            raise AnswerRejected(f"watch update {envelope.update_id!r} cannot be read: {type(exc).__name__}") from None
        if (
            update.audience != me
            or update.update_id != envelope.update_id
            or update.watch_id != envelope.watch_id
            or update.provider != envelope.provider
            or update.provider_key_id != binding.key_id
        ):
            raise AnswerRejected(f"watch update {envelope.update_id!r} is not bound to this bank and watch")
        return update, raw

    def process(self, response: monitoring_pb2.StreamAlertsResponse) -> BatchOutcome:
        """One streamed batch: checked, then applied with the new cursor in one transaction."""
        checked: list[tuple[str, monitoring_pb2.WatchUpdate, bytes]] = []
        rejected = 0
        last = self.state.cursor()
        for queued in response.updates:
            last = max(last, int(queued.seq))
            try:
                update, raw = self.check(queued.update)
            except AnswerRejected as exc:
                log.warning("%s", exc.detail)
                rejected += 1
                continue
            checked.append((queued.update.update_id, update, raw))
        outcome = self.state.apply(checked, last)
        outcome.rejected = rejected
        return outcome

    def stream(self) -> Iterator[monitoring_pb2.StreamAlertsResponse]:
        """One StreamAlerts call after the durable cursor (ends when the node hangs up)."""
        call = self._stub.StreamAlerts(monitoring_pb2.StreamAlertsRequest(after_seq=self.state.cursor()))
        self._stream = call
        try:
            yield from call
        finally:
            self._stream = None

    def follow(
        self,
        on_alert: Callable[[Alert], None] | None = None,
        *,
        stop: threading.Event | None = None,
        until: Callable[[], bool] | None = None,
    ) -> int:
        """Process updates as they come, reconnecting after the durable cursor; returns alerts raised.

        Stops when ``stop`` is set or ``until()`` holds (checked after each batch and each reconnect).
        """
        stop = stop or threading.Event()
        raised = 0

        def watch_stop() -> None:
            # A stream idle at the node yields nothing: cancel it from here once told to stop.
            while not stop.wait(0.1):
                if until is not None and until():
                    stop.set()
            self.cancel_stream()

        threading.Thread(target=watch_stop, name="alerts-stop", daemon=True).start()
        while not stop.is_set() and not (until is not None and until()):
            opened = time.monotonic()
            try:
                for response in self.stream():
                    outcome = self.process(response)
                    raised += len(outcome.alerts)
                    if on_alert is not None:
                        for alert in outcome.alerts:
                            on_alert(alert)
                    if stop.is_set() or (until is not None and until()):
                        self.cancel_stream()
                        return raised
                    if time.monotonic() - opened > RESUME_SECONDS:
                        # Re-open after the durable cursor: that acknowledges, and the node drops what we hold.
                        self.cancel_stream()
                        break
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.CANCELLED:
                    if stop.is_set() or (until is not None and until()):
                        break
                    continue  # our own resume
                remote = decode_rpc_error(err)
                log.info("alert stream ended (%s); resuming", remote.reason or remote.code.name)
            stop.wait(RECONNECT_SECONDS)
        return raised

    def cancel_stream(self) -> None:
        call = self._stream
        if call is not None:
            call.cancel()


__all__ = ["Alert", "AlertState", "AlertsClient", "BatchOutcome"]
