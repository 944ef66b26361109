"""Public records, voluntary filings and the credit report at the node (Issue 12 §1, §2, §4).

What the node may hold here is public by definition: aggregate-mode catalog
fields a provider signed and pushed, and items the enterprise itself filed.
Every non-aggregate field is refused at the gate (``xinrong.public.parse_batch``)
before anything is stored, so the node's promise "no raw non-public value in
my stores" survives this feature (the e2e storage scan checks it).

Publishing is versioned per provider: batch ``v`` applies only on top of
``base_version`` = the node's latest; the very same batch again is a no-op
(``ALREADY_APPLIED``); another batch under a used version is refused.
Publishes of one provider are serialized (the SQLite write transaction; a
per-provider advisory lock on PostgreSQL), so of two batches on the same base
exactly one applies and the other is FAILED_PRECONDITION (stale base). Every
batch is kept as received (bytes + signature), so any version is provable
later; ``public_records`` is the current value per (enterprise, field).

Reads (records, report) are audit entries in the transparency log, allowed
or refused. After a batch or filing commits, every callback registered with
``on_change`` gets the changed records (enterprise, field, region, industry):
the integrator wires the push service's event log there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xinrong.catalog import Catalog
from xinrong.errors import Reason, SignatureError, ValidationError, XinrongError
from xinrong.keys.binding import verify_binding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.signing import SigningKey
from xinrong.node.audit import AuditEntry, AuditEvent, AuditLog, Decision
from xinrong.node.db import Database, Transaction
from xinrong.node.registry import PartyRegistry
from xinrong.public import (
    BATCH_CONTEXT,
    FILING_CONTEXT,
    MAX_BINDING_BYTES,
    MAX_SIGNATURE_BYTES,
    WITHDRAWAL_CONTEXT,
    PublicBatch,
    parse_batch,
    parse_filing,
    parse_withdrawal,
)
from xinrong.report import FiledItems, SourcedValue, build_report, new_report_id, sign_report
from xinrong.rpc.auth import Peer
from xinrong.v1 import common_pb2

log = logging.getLogger(__name__)

REGION_FIELD = "market.region_code"
INDUSTRY_FIELD = "market.industry_class"


def published_region_industry(
    query: Callable[[str, Sequence[Any]], Sequence[tuple[Any, ...]]], uscc: str
) -> tuple[str, str]:
    """An enterprise's published division code and GB/T 4754 class ("" for either not published)."""
    rows = query(
        "SELECT field, value FROM public_records WHERE uscc = ? AND field IN (?, ?)",
        (uscc, REGION_FIELD, INDUSTRY_FIELD),
    )
    found = {str(f): json.loads(str(v)) for f, v in rows}
    return str(found.get(REGION_FIELD, "")), str(found.get(INDUSTRY_FIELD, ""))


# pg_advisory_xact_lock(class, hashtext(provider)) key space of publishes ("xinr"); the two-int key
# space does not overlap the one-bigint keys of the other node locks (events, whitelist, sequencer).
PUBLISH_LOCK_CLASS = 0x78696E72

# Tables: schema step 4 in xinrong.node.migrations.


@dataclass(frozen=True)
class ChangedRecord:
    """One change the push service may tell subscribers about (no value: only what changed where)."""

    topic: str  # "public_record" | "filing"
    enterprise: str
    field: str
    region: str
    industry: str
    provider: str  # "enterprise" for filings
    version: int  # batch version; 0 for filings
    self_reported: bool = False
    removed: bool = False


@dataclass(frozen=True)
class PublishResult:
    applied: bool
    version: int
    changed: int


@dataclass(frozen=True)
class StoredRecord:
    provider: str
    field: str
    value_json: str
    as_of: str
    version: int


@dataclass(frozen=True)
class StoredFiling:
    filing_id: str
    filing: bytes
    signature: bytes
    filed_ms: int
    withdrawn_ms: int


def _denied(detail: str, public: str | None = None) -> XinrongError:
    return XinrongError(detail, reason=Reason.ACCESS_DENIED, public=public)


def _role(caller: Peer, *roles: str) -> None:
    """Method-level roles (the server's guard admits the service's roles as a whole)."""
    if caller.role not in roles:
        raise XinrongError(
            f"{caller.role} may not call this method",
            reason=Reason.CALLER_NOT_ALLOWED,
            public=f"this method is for the {' or '.join(roles)} role only",
        )


def _leaf(entry: AuditEntry) -> int | None:
    """The entry's leaf in the transparency log; None while it waits for a sequencer (PostgreSQL)."""
    return entry.seq - 1 if entry.seq > 0 else None


def _bounded(value: bytes, limit: int, what: str) -> bytes:
    if len(value) > limit:
        raise ValidationError(f"{what} longer than {limit} bytes", public=f"{what} is too large")
    return value


class PublicStore:
    """Public records, filings and credit reports over the node's database and audit log."""

    def __init__(
        self,
        *,
        db: Database,
        audit: AuditLog,
        catalog: Catalog,
        registry: PartyRegistry,
        ca: CaVerifier,
        signing_key: SigningKey,
        node_id: str = "node",
        max_clock_skew_seconds: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.audit = audit
        self.catalog = catalog
        self.registry = registry
        self.ca = ca
        self.signing_key = signing_key
        self.node_id = node_id
        self.max_clock_skew_seconds = max_clock_skew_seconds
        self.clock = clock
        self._callbacks: list[Callable[[Sequence[ChangedRecord]], None]] = []
        self._lock = threading.Lock()

    # -- change hook -----------------------------------------------------------------

    def on_change(self, callback: Callable[[Sequence[ChangedRecord]], None]) -> None:
        """Register ``callback(changes)``, called after each batch or filing commits (never inside the tx)."""
        with self._lock:
            self._callbacks.append(callback)

    def _notify(self, changes: list[ChangedRecord]) -> None:
        if not changes:
            return
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(changes)
            except Exception:  # a subscriber's failure must not fail the publish that already committed
                log.exception("public change callback failed")

    # -- helpers ---------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _audit(self, tx: Transaction, caller: Peer, method: str, decision: Decision, **kw: Any) -> AuditEntry:
        event = AuditEvent(caller_role=caller.role, caller_id=caller.party_id, method=method, decision=decision, **kw)
        return self.audit.append(tx, event, self._now_ms())

    def _refuse(self, caller: Peer, method: str, error: XinrongError, enterprise: str = "") -> XinrongError:
        """Record a refused read of enterprise data, then hand the error back to raise."""
        try:
            with self.db.transaction() as tx:
                self._audit(tx, caller, method, Decision.REFUSED, reason=error.reason.value, enterprise=enterprise)
        except XinrongError:
            log.warning("could not record a refused %s", method)
        return error

    def _reader_allowed(self, caller: Peer, uscc: str, method: str) -> None:
        """Institutions registered at this node read any enterprise; an enterprise reads itself only."""
        if caller.role == "institution":
            if self.registry.get("institution", caller.party_id) is None:
                raise self._refuse(caller, method, _denied("institution not registered at this node"), uscc)
            return
        if caller.role == "enterprise":
            if caller.party_id != uscc:
                raise self._refuse(caller, method, _denied("an enterprise reads only its own records"), uscc)
            return
        raise XinrongError(
            f"{caller.role} may not call {method}",
            reason=Reason.CALLER_NOT_ALLOWED,
            public="this method is for the institution or enterprise role only",
        )

    def _region_industry(self, tx: Transaction, uscc: str) -> tuple[str, str]:
        return published_region_industry(lambda sql, params: tx.execute(sql, params).fetchall(), uscc)

    # -- publish ---------------------------------------------------------------------

    def publish_state(self, caller: Peer) -> tuple[int, str, str]:
        _role(caller, "provider")
        provider = self._provider_of(caller)
        rows = self.db.query(
            "SELECT version, period, sha256 FROM public_batches WHERE provider = ? ORDER BY version DESC LIMIT 1",
            (provider,),
        )
        return (int(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else (0, "", "")

    def _provider_of(self, caller: Peer) -> str:
        binding = self.registry.get("provider", caller.party_id)
        if binding is None or not binding.provider:
            raise _denied(f"provider {caller.party_id} has no binding at this node")
        return binding.provider

    def publish(self, caller: Peer, raw: bytes, signature: bytes) -> PublishResult:
        """Verify the batch against the caller's CA-checked binding, then apply it (or recognise it)."""
        _role(caller, "provider")
        _bounded(signature, MAX_SIGNATURE_BYTES, "signature")
        binding = self.registry.get("provider", caller.party_id)
        if binding is None or not binding.provider:
            raise _denied(f"provider {caller.party_id} has no binding at this node")
        try:
            binding.verify_key.verify(BATCH_CONTEXT, raw, signature)
        except SignatureError:
            raise _denied(
                f"batch signature of {caller.party_id} does not verify",
                public="the batch signature does not verify against the provider's CA-checked binding",
            ) from None
        batch = parse_batch(raw, self.catalog)
        if batch.provider != binding.provider:
            raise _denied(
                f"{caller.party_id} signed a batch for {batch.provider}",
                public="a provider may publish only its own fields",
            )
        digest = hashlib.sha256(raw).hexdigest()
        changes: list[ChangedRecord] = []
        try:
            with self.db.transaction() as tx:
                # One publish of a provider at a time, so the base check below and the insert are one
                # step: two batches on the same base (other versions: no key conflict) cannot both apply.
                # SQLite: the write transaction (the database lock, BEGIN IMMEDIATE) already serializes;
                # PostgreSQL: a transaction-scoped advisory lock per provider, across replicas.
                if self.db.shared:
                    tx.execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", (PUBLISH_LOCK_CLASS, batch.provider))
                # Latest first: on PostgreSQL each statement sees what committed before it,
                # so a replica committing this very version between the two reads is seen
                # by the second one (ALREADY_APPLIED), never as a moved base.
                latest = self._latest_version(tx, batch.provider)
                known = self._already_published(tx, batch, digest)
                if known is not None:
                    return known
                if batch.base_version != latest:
                    raise XinrongError(
                        f"{batch.provider} batch on {batch.base_version}, node at {latest}",
                        reason=Reason.FAILED_PRECONDITION,
                        public=f"the node's latest version of {batch.provider} is {latest}: publish on top of it",
                    )
                # The batch row first: a replica applying the same (provider, version) at
                # the same instant waits on this key and loses here, before either touched
                # a record (no lock-order deadlock between two different batches).
                tx.execute(
                    "INSERT INTO public_batches (provider, version, base_version, period, sha256, batch, signature, "
                    "key_id, records, changed, received_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        batch.provider,
                        batch.version,
                        batch.base_version,
                        batch.period,
                        digest,
                        raw,
                        signature,
                        binding.key_id,
                        len(batch.records),
                        0,
                        self._now_ms(),
                    ),
                )
                changes = self._apply(tx, batch)
                tx.execute(
                    "UPDATE public_batches SET changed = ? WHERE provider = ? AND version = ?",
                    (len(changes), batch.provider, batch.version),
                )
                self._audit(
                    tx,
                    caller,
                    "PublishRecords",
                    Decision.ALLOWED,
                    providers=(batch.provider,),
                    fields=tuple(sorted({c.field for c in changes})),
                )
                tx.on_commit(lambda: self._notify(changes))
        except self.db.unique_violation as exc:
            if not self.db.violated_unique(exc, "public_batches"):
                raise
            lost = True
        else:
            lost = False
        if lost:
            # Another replica committed this (provider, version) after our read; our
            # transaction rolled back whole (no record, audit entry or hook): answer
            # exactly as a re-send of this batch would be answered now.
            with self.db.transaction() as tx:
                known = self._already_published(tx, batch, digest)
            if known is None:  # the conflicting row is committed: it cannot have vanished
                raise XinrongError(
                    f"{batch.provider} version {batch.version} conflicted but is not stored",
                    reason=Reason.INTERNAL,
                    public="the batch raced another publish of the same version",
                )
            log.info("public batch %s v%d: another replica applied it first", batch.provider, batch.version)
            return known
        log.info(
            "public batch %s v%d (%s): %d records, %d changes",
            batch.provider,
            batch.version,
            batch.period,
            len(batch.records),
            len(changes),
        )
        return PublishResult(applied=True, version=batch.version, changed=len(changes))

    def _latest_version(self, tx: Transaction, provider: str) -> int:
        rows = tx.execute(
            "SELECT coalesce(max(version), 0) FROM public_batches WHERE provider = ?", (provider,)
        ).fetchall()
        return int(rows[0][0]) if rows else 0

    def _already_published(self, tx: Transaction, batch: PublicBatch, digest: str) -> PublishResult | None:
        """A re-send's answer if ``batch.version`` is stored: ALREADY_APPLIED for the same bytes,
        FAILED_PRECONDITION for other content (the version is taken for good: retrying cannot help)."""
        same = tx.execute(
            "SELECT sha256 FROM public_batches WHERE provider = ? AND version = ?", (batch.provider, batch.version)
        ).fetchall()
        if not same:
            return None
        if str(same[0][0]) != digest:
            raise XinrongError(
                f"{batch.provider} version {batch.version} exists with other content",
                reason=Reason.FAILED_PRECONDITION,
                public=f"version {batch.version} was already published with other content",
            )
        return PublishResult(applied=False, version=self._latest_version(tx, batch.provider), changed=0)

    def _apply(self, tx: Transaction, batch: PublicBatch) -> list[ChangedRecord]:
        public = [s.key for s in self.catalog.aggregate_fields(batch.provider)]
        old_all: dict[str, dict[str, str]] = {}
        if batch.replace:
            for uscc, fld, value in tx.execute(
                "SELECT uscc, field, value FROM public_records WHERE provider = ?", (batch.provider,)
            ).fetchall():
                old_all.setdefault(str(uscc), {})[str(fld)] = str(value)
            tx.execute("DELETE FROM public_records WHERE provider = ?", (batch.provider,))
        touched: list[tuple[str, list[tuple[str, bool]]]] = []
        for record in batch.records:
            if batch.replace:
                old = old_all.pop(record.uscc, {})
            else:
                old = {
                    str(f): str(v)
                    for f, v in tx.execute(
                        "SELECT field, value FROM public_records WHERE uscc = ? AND provider = ?",
                        (record.uscc, batch.provider),
                    ).fetchall()
                }
            new = {k: json.dumps(v, ensure_ascii=False) for k, v in (record.values or {}).items()}
            diff: list[tuple[str, bool]] = []
            for key in public:
                before, after = old.get(key), new.get(key)
                if after is not None and (before != after or batch.replace):
                    tx.execute(
                        "INSERT INTO public_records (uscc, field, provider, value, as_of, version) "
                        "VALUES (?,?,?,?,?,?) ON CONFLICT (uscc, field) DO UPDATE SET "
                        "value = excluded.value, as_of = excluded.as_of, version = excluded.version",
                        (record.uscc, key, batch.provider, after, batch.period, batch.version),
                    )
                    if before != after:
                        diff.append((key, False))
                elif after is None and before is not None:
                    if not batch.replace:
                        tx.execute("DELETE FROM public_records WHERE uscc = ? AND field = ?", (record.uscc, key))
                    diff.append((key, True))
            if diff:
                touched.append((record.uscc, diff))
        # A full resend drops whoever it no longer names.
        for uscc, old in old_all.items():
            touched.append((uscc, [(key, True) for key in sorted(old)]))
        changes: list[ChangedRecord] = []
        for uscc, diff in touched:
            region, industry = self._region_industry(tx, uscc)
            changes.extend(
                ChangedRecord(
                    topic="public_record",
                    enterprise=uscc,
                    field=key,
                    region=region,
                    industry=industry,
                    provider=batch.provider,
                    version=batch.version,
                    removed=removed,
                )
                for key, removed in diff
            )
        return changes

    # -- reads -----------------------------------------------------------------------

    def _records(self, tx: Transaction, uscc: str) -> list[StoredRecord]:
        rows = tx.execute(
            "SELECT provider, field, value, version FROM public_records WHERE uscc = ? ORDER BY field", (uscc,)
        ).fetchall()
        periods: dict[str, str] = {}
        out = []
        for provider, fld, value, version in rows:
            provider = str(provider)
            if provider not in periods:
                latest = tx.execute(
                    "SELECT period FROM public_batches WHERE provider = ? ORDER BY version DESC LIMIT 1", (provider,)
                ).fetchall()
                periods[provider] = str(latest[0][0]) if latest else ""
            # Incremental batches carry only changes: an unchanged value holds as of the latest period.
            out.append(StoredRecord(provider, str(fld), str(value), periods[provider], int(version)))
        return out

    def records(self, caller: Peer, uscc: str) -> tuple[list[StoredRecord], int | None]:
        self._reader_allowed(caller, uscc, "GetPublicRecords")
        with self.db.transaction() as tx:
            found = self._records(tx, uscc)
            entry = self._audit(
                tx,
                caller,
                "GetPublicRecords",
                Decision.ALLOWED,
                enterprise=uscc,
                providers=tuple(sorted({r.provider for r in found})),
                fields=tuple(r.field for r in found),
            )
        return found, _leaf(entry)

    def credit_report(self, caller: Peer, uscc: str) -> dict[str, Any]:
        """The signed envelope; the read is an audit entry whose leaf the report names."""
        self._reader_allowed(caller, uscc, "GetCreditReport")
        with self.db.transaction() as tx:
            found = self._records(tx, uscc)
            filings = self._active_filings(tx, uscc)
            report_id = new_report_id()
            entry = self._audit(
                tx,
                caller,
                "GetCreditReport",
                Decision.ALLOWED,
                enterprise=uscc,
                request_id=report_id,
                providers=tuple(sorted({r.provider for r in found})),
            )
        report = build_report(
            catalog=self.catalog,
            enterprise=uscc,
            name="",
            records=[SourcedValue(r.provider, r.field, json.loads(r.value_json), r.as_of) for r in found],
            filings=filings,
            issued_at=self.clock(),
            report_id=report_id,
            audit_leaf_index=_leaf(entry),
        )
        return sign_report(report, self.signing_key)

    # -- filings ---------------------------------------------------------------------

    def _enterprise_key(self, caller: Peer, binding_raw: bytes) -> Any:
        _bounded(binding_raw, MAX_BINDING_BYTES, "enterprise_binding")
        signed = common_pb2.SignedPartyBinding()
        try:
            signed.ParseFromString(binding_raw)
            binding = verify_binding(
                self.ca, signed, expect_role="enterprise", expect_party_id=caller.party_id, now=self.clock()
            )
        except Exception:
            raise _denied(
                "enterprise binding does not verify", public="the enterprise binding does not verify against the CA"
            ) from None
        return binding.verify_key

    def file(self, caller: Peer, raw: bytes, signature: bytes, binding_raw: bytes) -> tuple[str, bool, int | None]:
        _role(caller, "enterprise")
        _bounded(signature, MAX_SIGNATURE_BYTES, "signature")
        key = self._enterprise_key(caller, binding_raw)
        try:
            key.verify(FILING_CONTEXT, raw, signature)
        except SignatureError:
            raise _denied("filing signature does not verify", public="the filing signature does not verify") from None
        filing = parse_filing(raw, self.catalog)
        if filing.enterprise != caller.party_id:
            raise _denied("filing for another enterprise", public="an enterprise files only for itself")
        if filing.signed_at > self.clock() + self.max_clock_skew_seconds:
            raise ValidationError("filing signed in the future", public="the filing's signed_at is in the future")
        with self.db.transaction() as tx:
            existing = tx.execute("SELECT filing FROM filings WHERE filing_id = ?", (filing.filing_id,)).fetchall()
            if existing:
                if bytes(existing[0][0]) == raw:
                    return filing.filing_id, True, None
                raise XinrongError(
                    "filing id reused", reason=Reason.FAILED_PRECONDITION, public="this filing id was used before"
                )
            tx.execute(
                "INSERT INTO filings (filing_id, enterprise, filing, signature, commitment_sha256, signed_at, filed_ms) "
                "VALUES (?,?,?,?,?,?,?)",
                (
                    filing.filing_id,
                    filing.enterprise,
                    raw,
                    signature,
                    filing.commitment_sha256,
                    filing.signed_at,
                    self._now_ms(),
                ),
            )
            entry = self._audit(
                tx,
                caller,
                "FileSelfReport",
                Decision.ALLOWED,
                enterprise=filing.enterprise,
                consent_id=filing.filing_id,
                fields=tuple(sorted(filing.items)),
            )
            changes = self._filing_changes(tx, filing.enterprise, sorted(filing.items), removed=False)
            tx.on_commit(lambda: self._notify(changes))
        return filing.filing_id, False, _leaf(entry)

    def _filing_changes(self, tx: Transaction, uscc: str, keys: Sequence[str], *, removed: bool) -> list[ChangedRecord]:
        region, industry = self._region_industry(tx, uscc)
        return [
            ChangedRecord(
                topic="filing",
                enterprise=uscc,
                field=key,
                region=region,
                industry=industry,
                provider="enterprise",
                version=0,
                self_reported=True,
                removed=removed,
            )
            for key in keys
        ]

    def withdraw(self, caller: Peer, raw: bytes, signature: bytes, binding_raw: bytes) -> tuple[str, bool, int | None]:
        _role(caller, "enterprise")
        _bounded(signature, MAX_SIGNATURE_BYTES, "signature")
        key = self._enterprise_key(caller, binding_raw)
        try:
            key.verify(WITHDRAWAL_CONTEXT, raw, signature)
        except SignatureError:
            raise _denied(
                "withdrawal signature does not verify", public="the withdrawal signature does not verify"
            ) from None
        withdrawal = parse_withdrawal(raw)
        if withdrawal.enterprise != caller.party_id:
            raise _denied("withdrawal for another enterprise", public="an enterprise withdraws only its own filings")
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT enterprise, withdrawn_ms, filing FROM filings WHERE filing_id = ?", (withdrawal.filing_id,)
            ).fetchall()
            if not rows or str(rows[0][0]) != caller.party_id:
                raise XinrongError("no such filing of the caller", reason=Reason.NOT_FOUND)
            if rows[0][1] is not None:
                return withdrawal.filing_id, True, None
            tx.execute(
                "UPDATE filings SET withdrawn_ms = ?, withdrawal = ?, withdrawal_signature = ? WHERE filing_id = ?",
                (self._now_ms(), raw, signature, withdrawal.filing_id),
            )
            items = sorted(json.loads(bytes(rows[0][2]).decode("utf-8"))["items"])
            entry = self._audit(
                tx,
                caller,
                "WithdrawFiling",
                Decision.ALLOWED,
                enterprise=caller.party_id,
                consent_id=withdrawal.filing_id,
                fields=tuple(items),
            )
            changes = self._filing_changes(tx, caller.party_id, items, removed=True)
            tx.on_commit(lambda: self._notify(changes))
        return withdrawal.filing_id, False, _leaf(entry)

    def list_filings(self, caller: Peer) -> list[StoredFiling]:
        _role(caller, "enterprise")
        rows = self.db.query(
            "SELECT filing_id, filing, signature, filed_ms, withdrawn_ms FROM filings WHERE enterprise = ? "
            "ORDER BY filed_ms, filing_id",
            (caller.party_id,),
        )
        return [StoredFiling(str(a), bytes(b), bytes(c), int(d), int(e or 0)) for a, b, c, d, e in rows]

    def _active_filings(self, tx: Transaction, uscc: str) -> list[FiledItems]:
        rows = tx.execute(
            "SELECT filing_id, filing FROM filings WHERE enterprise = ? AND withdrawn_ms IS NULL", (uscc,)
        ).fetchall()
        out = []
        for filing_id, raw in rows:
            doc = json.loads(bytes(raw).decode("utf-8"))  # validated when filed
            out.append(
                FiledItems(
                    filing_id=str(filing_id),
                    items=doc["items"],
                    signed_at=int(doc["signed_at"]),
                    commitment_sha256=str(doc["commitment"]["text_sha256"]),
                )
            )
        return out


__all__ = ["ChangedRecord", "PublicStore", "PublishResult", "StoredFiling", "StoredRecord"]
