"""The agent's role in full-coverage evaluation: its part of every enterprise's points.

Per round the agent lays its own data out over the period's universe (the
public register, in USCC order, published by the node), masks it with one
zero-sum mask per other participant (``xinrong.modeling.evaluation``: the
pairwise secret is an X25519 agreement of the two agents' CA-bound sealing
keys, which the relaying node does not hold) and encrypts it under the
node's period key. The node, which holds that key, can decrypt this part
alone and sees only values uniform mod M; the masks cancel only in the sum
of every participant's part.

What the agent checks before it computes anything: the caller is the node
(servicer); every participant binding is CA-signed for a provider, its own
among them, none twice; the index is the one it uses; the universe is
sorted, distinct and matches its digest; a round of an evaluation id is
answered once (a second answer under the same masks with another eligible
set would let the node subtract the two).

The enterprise's own breakdown (``seal_breakdown``) is computed here too,
from the same data, signed by the provider and sealed to a reply key the
enterprise signed for the request, so the node relays bytes it cannot read.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xinrong.catalog import Catalog
from xinrong.errors import Reason, SignatureError, XinrongError
from xinrong.index import EvaluationIndex
from xinrong.keys import sealing
from xinrong.keys.binding import verify_binding
from xinrong.keys.layout import PartyCredentials
from xinrong.modeling import evaluation as ev
from xinrong.modeling.he import base
from xinrong.v1 import common_pb2, evaluation_pb2

log = logging.getLogger(__name__)

USCC_BYTES = 18
BREAKDOWN_REQUEST_CONTEXT = "xinrong.v1.BreakdownRequest"
BREAKDOWN_CONTEXT = "xinrong.v1.EvaluationBreakdown"
BREAKDOWN_CONTENT_TYPE = "xinrong.v1.SignedBreakdown"
REGISTER_PROVIDER = "market"  # the market regulator's register is public by law (企业信用信息公示)
_ROUNDS = {
    evaluation_pb2.EVALUATION_ROUND_PRESENCE: ev.KIND_PRESENCE,
    evaluation_pb2.EVALUATION_ROUND_POINTS: ev.KIND_POINTS,
}
_MAX_ANSWERED = 4096


def _invalid(message: str) -> XinrongError:
    return XinrongError(message, reason=Reason.INVALID_ARGUMENT, public=message)


def unpack_universe(data: bytes) -> npt.NDArray[Any]:
    """The packed register as a sorted NumPy array of 18-byte codes; refuses anything else."""
    if not data or len(data) % USCC_BYTES:
        raise _invalid("universe must be a non-empty concatenation of 18-character USCCs")
    universe = np.frombuffer(data, dtype=f"S{USCC_BYTES}")
    if universe.size > 1 and not bool(np.all(universe[1:] > universe[:-1])):
        raise _invalid("universe must be sorted and distinct")
    return universe


def pack_universe(usccs: Sequence[str]) -> bytes:
    codes = sorted(set(usccs))
    if any(len(c) != USCC_BYTES or not c.isascii() for c in codes):
        raise ValueError("a USCC is 18 ASCII characters")
    return "".join(codes).encode("ascii")


@dataclass(frozen=True)
class OwnData:
    """The active period's records of this provider, as the index reads them."""

    period_id: int
    as_of: str
    ids: tuple[str, ...]
    columns: dict[str, list[Any]]  # index field -> cell per id (None = no value)


def read_own_data(db: Path, catalog: Catalog, index: EvaluationIndex, provider: str) -> OwnData:
    """One consistent snapshot of the active period: the cells of this provider's index fields."""
    try:
        conn = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise XinrongError(f"cannot open {db}: {exc}", reason=Reason.FAILED_PRECONDITION) from None
    try:
        conn.execute("BEGIN")
        row = conn.execute("SELECT id, as_of, columns FROM periods WHERE active = 1").fetchone()
        if row is None:
            raise XinrongError(
                "no active period", reason=Reason.FAILED_PRECONDITION, public="the provider has imported no data period"
            )
        period_id, as_of = int(row[0]), str(row[1])
        stored = {name: i for i, name in enumerate(json.loads(str(row[2])))}
        records = conn.execute(
            "SELECT uscc, data FROM records WHERE period_id = ? ORDER BY uscc", (period_id,)
        ).fetchall()
        conn.execute("COMMIT")
    finally:
        conn.close()
    items = [i for i in index.provider_items(provider) if i.spec.column in stored]
    columns: dict[str, list[Any]] = {i.field: [] for i in items}
    where = [(i.field, stored[i.spec.column]) for i in items]
    for _, data in records:
        cells = json.loads(data)
        for field, pos in where:
            columns[field].append(cells[pos] if pos < len(cells) else None)
    return OwnData(period_id, as_of, tuple(str(u) for u, _ in records), columns)


def _active_period_id(db: Path) -> int | None:
    try:
        conn = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True, isolation_level=None)
        try:
            row = conn.execute("SELECT id FROM periods WHERE active = 1").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return None if row is None else int(row[0])


class AgentEvaluation:
    """The agent's evaluation role (domain; the servicer maps proto in and out)."""

    def __init__(
        self,
        *,
        provider: str,
        credentials: PartyCredentials,
        catalog: Catalog,
        index: EvaluationIndex,
        db: Path,
        max_clock_skew_seconds: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if credentials.sealing_key is None:
            raise ValueError("an agent needs its sealing key for evaluation masks")
        self.provider = provider
        self._creds = credentials
        self._sealing_key = credentials.sealing_key
        self._catalog = catalog
        self._index = index
        self._db = db
        self._skew = max_clock_skew_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[int, OwnData, npt.NDArray[Any], npt.NDArray[np.int64]] | None = None
        self._answered: dict[tuple[str, str], None] = {}

    def _own(self) -> tuple[OwnData, npt.NDArray[Any], npt.NDArray[np.int64]]:
        """Own data and points, computed once per active period."""
        with self._lock:
            if self._cached is None or self._cached[0] != _active_period_id(self._db):
                data = read_own_data(self._db, self._catalog, self._index, self.provider)
                ids = np.asarray(data.ids, dtype=f"S{USCC_BYTES}")
                points = ev_points(self._index, self.provider, data)
                self._cached = (data.period_id, data, ids, points)
            _, own, ids, points = self._cached
            return own, ids, points

    def universe(self) -> tuple[bytes, str]:
        if self.provider != REGISTER_PROVIDER:
            raise XinrongError(
                "not the register",
                reason=Reason.FAILED_PRECONDITION,
                public=f"only the {REGISTER_PROVIDER} provider publishes the register",
            )
        own, ids, _ = self._own()
        return ids.tobytes(), own.as_of

    def _pair_secrets(self, participants: Sequence[common_pb2.SignedPartyBinding]) -> dict[str, bytes]:
        ca = self._creds.ca
        seen: dict[str, bytes] = {}
        for signed in participants:
            try:
                b = verify_binding(ca, signed, expect_role="provider", now=self._clock())
            except SignatureError:
                raise _invalid("a participant binding does not verify") from None
            if not b.provider or b.provider in seen:
                raise _invalid("participants must be distinct providers")
            seen[b.provider] = b.sealing_public_raw
        if seen.get(self.provider) != self._sealing_key.public_raw:
            raise _invalid("this provider is not among the participants with its own key")
        if not 2 <= len(seen) <= ev.MAX_MASKED_PROVIDERS:
            raise _invalid(f"an evaluation needs 2..{ev.MAX_MASKED_PROVIDERS} participants")
        return {p: self._sealing_key.agree(raw) for p, raw in seen.items() if p != self.provider}

    def compute_part(self, request: evaluation_pb2.ComputeEvaluationPartRequest) -> tuple[bytes, str]:
        kind = _ROUNDS.get(request.round)
        if kind is None:
            raise _invalid("round must be PRESENCE or POINTS")
        if not request.evaluation_id or len(request.evaluation_id) > 128:
            raise _invalid("evaluation id must be 1..128 characters")
        if request.index_sha256 != self._index.sha256:
            raise XinrongError(
                "index mismatch", reason=Reason.FAILED_PRECONDITION, public="the agent uses another index version"
            )
        universe = unpack_universe(request.universe)
        if ev.universe_digest(universe) != request.universe_sha256:
            raise _invalid("universe does not match its digest")
        secrets_by_peer = self._pair_secrets(request.participants)
        try:
            public = base.load_public("ckks", request.public_key)
        except Exception:
            raise _invalid("public key does not load") from None
        eligible = None
        if kind == ev.KIND_POINTS:
            try:
                eligible = ev.unpack_mask(request.eligible, universe.size)
            except ValueError:
                raise _invalid("eligible set does not fit the universe") from None
        slot = (request.evaluation_id, kind)
        with self._lock:
            if slot in self._answered:
                raise XinrongError("round answered", reason=Reason.REQUEST_REPLAYED)
            self._answered[slot] = None
            while len(self._answered) > _MAX_ANSWERED:
                self._answered.pop(next(iter(self._answered)))
        own, ids, points = self._own()
        positions = ev.universe_positions(universe, ids)
        outside = int(np.sum(positions < 0))
        if kind == ev.KIND_PRESENCE:
            values = ev.presence(universe.size, positions)
        else:
            assert eligible is not None
            values = np.where(eligible, ev.lay_out(universe.size, positions, points), 0.0)
        context = ev.round_context(
            public_key=request.public_key,
            universe_sha256=request.universe_sha256,
            providers=[self.provider, *secrets_by_peer],
            eligible=request.eligible,
        )
        keys = {
            peer: ev.mask_key(
                s, evaluation_id=request.evaluation_id, kind=kind, a=self.provider, b=peer, context=context
            )
            for peer, s in secrets_by_peer.items()
        }
        masked = ev.mask_values(values, ev.zero_sum_mask(universe.size, self.provider, keys))
        payload = ev.encrypt_part(
            public,
            kind=kind,
            evaluation_id=request.evaluation_id,
            index_sha256=self._index.sha256,
            provider=self.provider,
            values=masked,
        )
        log.info(
            "evaluation %s %s: %d enterprises in the universe, %d outside it, %d bytes",
            request.evaluation_id,
            kind,
            universe.size,
            outside,
            len(payload),
        )
        return payload, own.as_of

    def seal_breakdown(
        self, signed: evaluation_pb2.SignedBreakdownRequest, enterprise_binding: common_pb2.SignedPartyBinding
    ) -> common_pb2.SealedBox:
        try:
            b = verify_binding(self._creds.ca, enterprise_binding, expect_role="enterprise", now=self._clock())
            b.verify_key.verify(BREAKDOWN_REQUEST_CONTEXT, signed.request, signed.signature)
        except SignatureError:
            raise XinrongError("breakdown request signature", reason=Reason.ACCESS_DENIED) from None
        request = evaluation_pb2.BreakdownRequest()
        request.ParseFromString(signed.request)
        if request.enterprise_uscc != b.party_id or len(request.reply_public_key) != 32 or not request.request_id:
            raise XinrongError("breakdown request for another party", reason=Reason.ACCESS_DENIED)
        if abs(self._clock() - request.requested_at) > self._skew:
            raise XinrongError("stale breakdown request", reason=Reason.REQUEST_STALE)
        own, ids, _ = self._own()
        at = int(np.searchsorted(ids, request.enterprise_uscc.encode()))
        held = at < ids.size and ids[at] == request.enterprise_uscc.encode()
        items: list[dict[str, Any]] = []
        total = 0
        for item in self._index.provider_items(self.provider):
            column = own.columns.get(item.field)
            points = item.points(column[at] if held and column is not None else None)
            total += points
            items.append({"field": item.field, "form": str(item.form), "points": points})
        body = {
            "provider": self.provider,
            "enterprise": request.enterprise_uscc,
            "request_id": request.request_id,
            "data_as_of": own.as_of,
            "index_sha256": self._index.sha256,
            "held": bool(held),
            "items": items,
            "total": total,
        }
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        inner = evaluation_pb2.SignedBreakdown(
            breakdown=raw, signature=self._creds.signing_key.sign(BREAKDOWN_CONTEXT, raw)
        )
        return sealing.seal(
            inner.SerializeToString(deterministic=True),
            recipient_id=request.enterprise_uscc,
            recipient_public_raw=bytes(request.reply_public_key),
            content_type=BREAKDOWN_CONTENT_TYPE,
            context=request.request_id,
        )


def ev_points(index: EvaluationIndex, provider: str, data: OwnData) -> npt.NDArray[np.int64]:
    from xinrong.index import provider_points

    return provider_points(index, provider, data.columns, len(data.ids))


__all__ = [
    "BREAKDOWN_CONTENT_TYPE",
    "BREAKDOWN_CONTEXT",
    "BREAKDOWN_REQUEST_CONTEXT",
    "AgentEvaluation",
    "pack_universe",
    "read_own_data",
    "unpack_universe",
]
