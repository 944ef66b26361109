"""The node's side of loan products: the public showcase, matching runs, applications.

Products (``loan_products``) are public and signed by their bank; the node
checks the signature and every rule (``xinrong.modeling.matching``) before it
stores one, so an agent, an enterprise or another bank reading it later
checks the same bytes.

A matching run for one product of bank B takes every enterprise with an
ACTIVE consent of purpose MATCHING granted to B, admits them through the one
admission path (``Purpose`` MATCHING: the consent's purpose, grantee, state,
window, scope of the rules' fields and forms, uses and budgets; one audit
entry per enterprise, allowed or refused) on B's behalf, and asks every
provider with a rule in the product for its part (``ComputeMatch``). It stores,
per (product, enterprise, provider), the provider-signed contribution (a
Paillier ciphertext under B's key) and a box sealed to the enterprise, and
the homomorphic sum of the contributions: only ciphertexts. The node holds
no key that opens either, so it learns neither the eligibility bit nor a
count of failed rules; an enterprise with a missing part (an agent refused
its consent, or failed) gets no stored result of that run.

Triggers: a product published (its run), a MATCHING consent registered (every
active product of its grantee, for that enterprise), a new data period at an
agent (``check_periods``, polled), a financing demand changed
(``on_demand_changed``, for the demands store's change hook) and
``RunMatching`` (``xinrong node matching run``). Background runs go through
one worker thread.

An application (``ApplyToProduct``) is signed by the enterprise and names
the product and the match run; the node attaches that run's signed
contributions, the providers' CA-signed bindings and the sum (the
eligibility attestation) and keeps it for the bank, which verifies it
offline. Applying is the enterprise's choice to reveal that one bit to that
one bank; for every product the enterprise did not apply to, the bank gets
nothing at all.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from xinrong import ids
from xinrong.catalog import Catalog, Form
from xinrong.errors import Reason, SignatureError, ValidationError, XinrongError
from xinrong.keys.ca import CaVerifier
from xinrong.keys.layout import PartyCredentials
from xinrong.modeling import matching as mt
from xinrong.node.admission import INSTITUTION, MATCHING, AccessRequest, Admission, Ask, Subject
from xinrong.node.audit import AuditEvent, AuditLog, Decision, claims_digest
from xinrong.node.config import NodeConfig
from xinrong.node.consents import ConsentRegistry
from xinrong.node.db import Database
from xinrong.node.registry import PartyRegistry
from xinrong.node.routing import agent_failure
from xinrong.rpc.auth import Peer
from xinrong.rpc.channel import secure_channel
from xinrong.v1 import agent_pb2, agent_pb2_grpc, common_pb2, products_pb2, products_pb2_grpc

log = logging.getLogger(__name__)

MAX_DEMAND_TEXT = 200
# How often the node asks each agent which data period it serves (GetAgentInfo:
# no enterprise data); a new period re-matches every product with a rule there.
PERIOD_POLL_SECONDS = 30.0
# Enterprises per agent call (the agent takes at most provider_agent.matching.MAX_SUBJECTS).
CHUNK_SUBJECTS = 200
SECONDS_PER_SUBJECT = 0.05
# Products one bank may have published (active or withdrawn): the node stores them all.
MAX_PRODUCTS_PER_BANK = 500
# Observer of the node's matching traffic (tests): (provider, "out"/"in", method, bytes).
Observer = Callable[[str, str, str, bytes], None]


def _not_found() -> XinrongError:
    return XinrongError("no such product", reason=Reason.NOT_FOUND, public="no such product")


@dataclass(frozen=True)
class _ProductAsk:
    """What a match run asks, for admission step 5: the product's rules (already canonical)."""

    product: mt.CheckedProduct

    def check(self) -> Ask:
        needs: list[tuple[str, Form]] = [(r.spec.key, r.form) for r in self.product.rules]
        items: dict[str, list[Any]] = {}
        for r in self.product.rules:
            items.setdefault(r.spec.provider, []).append(r.claim)
        return Ask(
            needs=tuple(needs),
            fields=tuple(sorted({f for f, _ in needs})),
            claims_sha256=claims_digest([r.text for r in self.product.rules]),
            items=items,
        )

    def raw_digest(self) -> str:
        return claims_digest([r.text for r in self.product.rules])


@dataclass(frozen=True)
class RunStats:
    products: int = 0
    pairs: int = 0
    refused: int = 0
    seconds: float = 0.0
    admission_seconds: float = 0.0
    agents_seconds: float = 0.0
    store_seconds: float = 0.0

    def __add__(self, other: RunStats) -> RunStats:
        return RunStats(
            self.products + other.products,
            self.pairs + other.pairs,
            self.refused + other.refused,
            self.seconds + other.seconds,
            self.admission_seconds + other.admission_seconds,
            self.agents_seconds + other.agents_seconds,
            self.store_seconds + other.store_seconds,
        )


class MatchingChannels:
    """One mTLS channel per configured agent for matching traffic (and its period probe)."""

    def __init__(self, config: NodeConfig, credentials: PartyCredentials) -> None:
        self._channels: dict[str, grpc.Channel] = {}
        self.stubs: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        for endpoint in config.providers:
            channel = secure_channel(endpoint.address, credentials, server_role="provider", server_id=endpoint.name)
            self._channels[endpoint.name] = channel
            self.stubs[endpoint.name] = products_pb2_grpc.MatchingAgentServiceStub(channel)
            self.info[endpoint.name] = agent_pb2_grpc.AgentServiceStub(channel)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


class ProductDesk:
    """Products, match runs and applications over the node's database."""

    def __init__(
        self,
        *,
        db: Database,
        ca: CaVerifier,
        catalog: Catalog,
        registry: PartyRegistry,
        consents: ConsentRegistry,
        admission: Admission,
        audit: AuditLog,
        channels: MatchingChannels,
        node_id: str,
        timeout: float,
        max_clock_skew_seconds: float,
        clock: Callable[[], float] = time.time,
        observer: Observer | None = None,
    ) -> None:
        self._db = db
        self._ca = ca
        self._catalog = catalog
        self._registry = registry
        self._consents = consents
        self._admission = admission
        self._audit = audit
        self._channels = channels
        self._node_id = node_id
        self._timeout = timeout
        self._skew = max_clock_skew_seconds
        self._clock = clock
        self.observer = observer
        self._queue: queue.Queue[tuple[str | None, str | None] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0
        self._run_lock = threading.Lock()
        self._periods: dict[str, str] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- products --------------------------------------------------------------

    def _bank(self, bank_id: str) -> Any:
        binding = self._registry.get(INSTITUTION, bank_id)
        if binding is None:
            raise XinrongError(
                f"bank {bank_id} not registered", reason=Reason.CALLER_NOT_ALLOWED, public="the bank is not registered"
            )
        return binding

    def publish(self, caller: Peer, signed: products_pb2.SignedLoanProduct) -> mt.CheckedProduct:
        if caller.role != INSTITUTION:
            raise XinrongError(
                "only institutions publish products",
                reason=Reason.CALLER_NOT_ALLOWED,
                public="only institutions publish products",
            )
        bank = self._bank(caller.party_id)
        try:
            checked = mt.verify_product(self._ca, self._catalog, signed, bank)
        except SignatureError:
            raise ValidationError(
                "product not signed by the caller", public="the product is not signed by the calling bank's key"
            ) from None
        now_ms = int(self._clock() * 1000)
        raw = signed.SerializeToString(deterministic=True)
        with self._db.transaction() as tx:
            row = tx.execute("SELECT bank_id FROM loan_products WHERE product_id = ?", (checked.product_id,)).fetchone()
            if row is not None and row[0] != caller.party_id:
                raise XinrongError(
                    "product id taken", reason=Reason.FAILED_PRECONDITION, public="another bank uses this product id"
                )
            if row is None:
                count = tx.execute(
                    "SELECT COUNT(*) FROM loan_products WHERE bank_id = ?", (caller.party_id,)
                ).fetchone()
                if count is not None and int(count[0]) >= MAX_PRODUCTS_PER_BANK:
                    raise XinrongError(
                        "too many products",
                        reason=Reason.FAILED_PRECONDITION,
                        public=f"a bank publishes at most {MAX_PRODUCTS_PER_BANK} products",
                    )
                tx.execute(
                    "INSERT INTO loan_products (product_id, bank_id, signed, published_ms) VALUES (?,?,?,?)",
                    (checked.product_id, caller.party_id, raw, now_ms),
                )
            else:  # a new version of the bank's own product: old results no longer apply
                tx.execute(
                    "UPDATE loan_products SET signed = ?, published_ms = ?, withdrawn_ms = NULL WHERE product_id = ?",
                    (raw, now_ms, checked.product_id),
                )
                tx.execute("DELETE FROM match_contributions WHERE product_id = ?", (checked.product_id,))
                tx.execute("DELETE FROM match_sums WHERE product_id = ?", (checked.product_id,))
        log.info("product %s of %s published (%d rules)", checked.product_id, caller.party_id, len(checked.rules))
        return checked

    def withdraw(self, caller: Peer, product_id: str) -> int:
        if caller.role != INSTITUTION or not mt.is_product_id(product_id):
            raise _not_found()
        now_ms = int(self._clock() * 1000)
        with self._db.transaction() as tx:
            done = tx.execute(
                "UPDATE loan_products SET withdrawn_ms = ? WHERE product_id = ? AND bank_id = ? AND withdrawn_ms IS NULL",
                (now_ms, product_id, caller.party_id),
            ).rowcount
            if not done:
                raise _not_found()
            tx.execute("DELETE FROM match_contributions WHERE product_id = ?", (product_id,))
            tx.execute("DELETE FROM match_sums WHERE product_id = ?", (product_id,))
        return now_ms

    def listings(self, bank_id: str = "", include_withdrawn: bool = False) -> list[products_pb2.ProductListing]:
        sql = "SELECT signed, bank_id, withdrawn_ms FROM loan_products"
        where, params = [], []
        if bank_id:
            where.append("bank_id = ?")
            params.append(bank_id)
        if not include_withdrawn:
            where.append("withdrawn_ms IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        out = []
        for signed, bank, withdrawn in self._db.query(sql + " ORDER BY product_id", params):
            listing = products_pb2.ProductListing(
                withdrawn=withdrawn is not None, withdrawn_at=(withdrawn or 0) // 1000
            )
            listing.product.ParseFromString(bytes(signed))
            binding = self._registry.get(INSTITUTION, bank)
            if binding is not None:
                listing.bank_binding.CopyFrom(binding.signed)
            out.append(listing)
        return out

    def product(self, product_id: str) -> mt.CheckedProduct:
        """An active product, re-checked from its stored bytes."""
        rows = self._db.query(
            "SELECT signed, bank_id FROM loan_products WHERE product_id = ? AND withdrawn_ms IS NULL", (product_id,)
        )
        if not rows:
            raise _not_found()
        signed = products_pb2.SignedLoanProduct.FromString(bytes(rows[0][0]))
        return mt.verify_product(self._ca, self._catalog, signed, self._bank(str(rows[0][1])))

    def _active_ids(self, bank_id: str | None = None) -> list[str]:
        if bank_id:
            rows = self._db.query(
                "SELECT product_id FROM loan_products WHERE withdrawn_ms IS NULL AND bank_id = ? ORDER BY product_id",
                (bank_id,),
            )
        else:
            rows = self._db.query("SELECT product_id FROM loan_products WHERE withdrawn_ms IS NULL ORDER BY product_id")
        return [str(r[0]) for r in rows]

    # -- matching ---------------------------------------------------------------

    def _subjects(self, bank_id: str, enterprise: str | None) -> list[Subject]:
        now = self._clock()
        out = []
        for record in self._consents.all():
            consent = record.verified.consent
            if (
                consent.purpose == common_pb2.CONSENT_PURPOSE_MATCHING
                and record.grantee == bank_id
                and (enterprise is None or record.enterprise == enterprise)
                and record.effective_state(now) == common_pb2.CONSENT_STATE_ACTIVE
            ):
                out.append(Subject(record.enterprise, record.consent_id))
        # One consent per enterprise: the one registered last.
        latest: dict[str, Subject] = {}
        for s in sorted(out, key=lambda s: (self._consents.get(s.consent_id).registered_ms, s.consent_id)):  # type: ignore[union-attr]
            latest[s.enterprise] = s
        return [latest[e] for e in sorted(latest)]

    def run(
        self, product_id: str | None = None, *, enterprise: str | None = None, bank_id: str | None = None
    ) -> RunStats:
        """Match one product (or every active one, or those of a bank) now; blocks."""
        with self._run_lock:
            stats = RunStats()
            ids_ = [product_id] if product_id else self._active_ids(bank_id)
            for pid in ids_:
                try:
                    stats = stats + self._run_product(self.product(pid), enterprise)
                except XinrongError as exc:
                    log.warning("matching product %s failed: %s", pid, exc.reason.value)
                    stats = stats + RunStats(products=1)
            return stats

    def _run_product(self, product: mt.CheckedProduct, enterprise: str | None) -> RunStats:
        """All matching enterprises, in chunks of ``CHUNK_SUBJECTS`` (each its own run id and admission)."""
        subjects = self._subjects(product.bank_id, enterprise)
        stats = RunStats()
        for at in range(0, len(subjects), CHUNK_SUBJECTS):
            stats = stats + self._run_chunk(product, subjects[at : at + CHUNK_SUBJECTS])
        return RunStats(
            products=1,
            pairs=stats.pairs,
            refused=stats.refused,
            seconds=stats.seconds,
            admission_seconds=stats.admission_seconds,
            agents_seconds=stats.agents_seconds,
            store_seconds=stats.store_seconds,
        )

    def _run_chunk(self, product: mt.CheckedProduct, subjects: Sequence[Subject]) -> RunStats:
        start = time.perf_counter()
        now = self._clock()
        match_id = f"m-{secrets.token_hex(12)}"
        request = AccessRequest(
            purpose=MATCHING,
            caller=Peer(INSTITUTION, product.bank_id),  # the node matches on the grantee bank's behalf
            request_id=match_id,
            requested_at=int(now),
            subjects=tuple(subjects),
            asking=_ProductAsk(product),
        )
        admitted = self._admission.admit_blocking(request)
        admission_seconds = time.perf_counter() - start
        refused = len(admitted.refused)
        if not admitted.admitted:
            return RunStats(products=1, refused=refused, seconds=time.perf_counter() - start)
        call = products_pb2.ComputeMatchRequest(
            match_id=match_id,
            requested_at=int(now),
            product=product.signed,
            bank_binding=self._bank(product.bank_id).signed,
        )
        for a in admitted.admitted:
            call.subjects.add(enterprise_uscc=a.subject.enterprise, consent=a.record.verified.signed)
        parts: dict[str, dict[str, products_pb2.MatchOutcome]] = {}
        t_agents = time.perf_counter()
        # Every provider at once: each call is that agent's CPU, not the node's.
        failure: tuple[str, XinrongError] | None = None
        with ThreadPoolExecutor(max_workers=len(product.providers), thread_name_prefix="matching") as pool:
            futures = {p: pool.submit(self._call_provider, p, call) for p in product.providers}
            for provider, future in futures.items():
                try:
                    response = future.result()
                except XinrongError as exc:
                    failure = failure or (provider, exc)
                    continue
                parts[provider] = {o.enterprise_uscc: o for o in response.outcomes}
        if failure is not None:
            provider, error = failure
            self._admission.failed(admitted, error.reason.value)
            log.warning("matching %s: provider %s failed (%s)", match_id, provider, error.reason.value)
            return RunStats(products=1, refused=refused + len(admitted.admitted), seconds=time.perf_counter() - start)
        agents_seconds = time.perf_counter() - t_agents
        t_store = time.perf_counter()
        rows: list[tuple[str, list[tuple[str, bytes, bytes]], bytes]] = []
        reasons: Counter[str] = Counter(e.reason.value for _s, e in admitted.refused)
        for a in admitted.admitted:
            e = a.subject.enterprise
            mine: list[tuple[str, bytes, bytes]] = []
            for provider in product.providers:
                o = parts[provider].get(e)
                if o is None or o.refused_reason or not self._contribution_ok(o, product, e, provider, match_id):
                    break
                mine.append(
                    (
                        provider,
                        o.contribution.SerializeToString(deterministic=True),
                        o.feedback.SerializeToString(deterministic=True),
                    )
                )
            else:
                cts = [bytes(mt.parse_contribution(parts[p][e].contribution).ciphertext) for p in product.providers]
                rows.append((e, mine, mt.add_ciphertexts(product.n, cts)))
                continue
            refused += 1
            reasons[o.refused_reason if o is not None and o.refused_reason else "INCOMPLETE"] += 1
        now_ms = int(self._clock() * 1000)
        with self._db.transaction() as tx:
            # Withdrawn or re-published meanwhile: these parts are for a product that no longer is.
            current = tx.execute(
                "SELECT signed FROM loan_products WHERE product_id = ? AND withdrawn_ms IS NULL", (product.product_id,)
            ).fetchone()
            if current is None or mt.product_sha256(products_pb2.SignedLoanProduct.FromString(bytes(current[0]))) != (
                product.sha256
            ):
                rows = []
            for e, mine, total in rows:
                tx.execute(
                    "DELETE FROM match_contributions WHERE product_id = ? AND enterprise = ?", (product.product_id, e)
                )
                for provider, contribution, feedback in mine:
                    tx.execute(
                        "INSERT INTO match_contributions (product_id, enterprise, provider, match_id, contribution, "
                        "feedback, computed_ms) VALUES (?,?,?,?,?,?,?)",
                        (product.product_id, e, provider, match_id, contribution, feedback, now_ms),
                    )
                tx.execute(
                    "INSERT INTO match_sums (product_id, enterprise, match_id, total, computed_ms) VALUES (?,?,?,?,?) "
                    "ON CONFLICT (product_id, enterprise) DO UPDATE SET match_id = excluded.match_id, "
                    "total = excluded.total, computed_ms = excluded.computed_ms",
                    (product.product_id, e, match_id, total, now_ms),
                )
        seconds = time.perf_counter() - start
        log.info(
            "matching %s: product %s, %d enterprises matched, %d refused %s, %.2f s",
            match_id,
            product.product_id,
            len(rows),
            refused,
            dict(reasons),
            seconds,
        )
        return RunStats(
            products=1,
            pairs=len(rows),
            refused=refused,
            seconds=seconds,
            admission_seconds=admission_seconds,
            agents_seconds=agents_seconds,
            store_seconds=time.perf_counter() - t_store,
        )

    def _call_provider(
        self, provider: str, call: products_pb2.ComputeMatchRequest
    ) -> products_pb2.ComputeMatchResponse:
        stub = self._channels.stubs.get(provider)
        if stub is None:
            raise XinrongError(f"no agent for {provider}", reason=Reason.PROVIDER_NOT_CONNECTED)
        return self._call(stub, provider, call)

    def _call(
        self, stub: Any, provider: str, call: products_pb2.ComputeMatchRequest
    ) -> products_pb2.ComputeMatchResponse:
        if self.observer is not None:
            self.observer(provider, "out", "ComputeMatch", call.SerializeToString())
        # The agent's work grows with the chunk (a Paillier encryption, two signatures and a seal
        # per enterprise): the configured deadline plus a budget per enterprise.
        timeout = self._timeout + SECONDS_PER_SUBJECT * len(call.subjects)
        try:
            response: products_pb2.ComputeMatchResponse = stub.ComputeMatch(call, timeout=timeout)
        except grpc.RpcError as err:
            raise agent_failure(provider, err) from None
        if self.observer is not None:
            self.observer(provider, "in", "ComputeMatch", response.SerializeToString())
        return response

    def _contribution_ok(
        self,
        outcome: products_pb2.MatchOutcome,
        product: mt.CheckedProduct,
        enterprise: str,
        provider: str,
        match_id: str,
    ) -> bool:
        """The provider's signature and the contribution's binding to this run; else the part is dropped."""
        binding = self._registry.get("provider", provider)
        if binding is None:
            return False
        try:
            binding.verify_key.verify(
                mt.CONTRIBUTION_CONTEXT, outcome.contribution.contribution, outcome.contribution.signature
            )
            c = mt.parse_contribution(outcome.contribution)
        except XinrongError:
            return False
        return (
            c.enterprise_uscc == enterprise
            and c.provider == provider
            and c.product_id == product.product_id
            and c.product_sha256 == product.sha256
            and c.match_id == match_id
            and len(c.ciphertext) == mt.ciphertext_width(product.n)
        )

    # -- background runs -----------------------------------------------------------

    def schedule(
        self, product_id: str | None = None, *, enterprise: str | None = None, bank_id: str | None = None
    ) -> None:
        """Run later on the worker thread (publish, consent registered)."""
        with self._idle:
            self._pending += 1
        self._queue.put((product_id, f"{enterprise or ''}|{bank_id or ''}"))
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="node-matching", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            product_id, who = item
            enterprise, _, bank = (who or "|").partition("|")
            try:
                self.run(product_id, enterprise=enterprise or None, bank_id=bank or None)
            except Exception:
                log.exception("background matching failed")
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Until every scheduled run finished (tests, the demo)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def on_consent(self, signed: common_pb2.SignedConsent) -> None:
        """A consent was registered: if it is for matching, match its enterprise against its grantee's products."""
        try:
            consent = common_pb2.Consent.FromString(signed.consent)
        except Exception:
            return
        if consent.purpose == common_pb2.CONSENT_PURPOSE_MATCHING and self._active_ids(consent.grantee_id):
            self.schedule(enterprise=consent.enterprise_uscc, bank_id=consent.grantee_id)

    def check_periods(self) -> list[str]:
        """Providers whose served data period changed since the last look; their products are re-matched."""
        changed: list[str] = []
        for provider, stub in sorted(self._channels.info.items()):
            try:
                info = stub.GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=5)
            except grpc.RpcError:
                continue
            before = self._periods.get(provider)
            self._periods[provider] = info.data_as_of
            if before is not None and before != info.data_as_of:
                changed.append(provider)
        if changed:
            for product_id in self._active_ids():
                try:
                    if set(self.product(product_id).providers) & set(changed):
                        self.schedule(product_id)
                except XinrongError:
                    continue
        return changed

    def start_period_watch(self, interval: float = PERIOD_POLL_SECONDS) -> None:
        def watch() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check_periods()
                except Exception:
                    log.warning("period watch failed", exc_info=True)

        self._watcher = threading.Thread(target=watch, name="node-matching-periods", daemon=True)
        self._watcher.start()

    def on_demand_changed(self, enterprise: str) -> None:
        """An enterprise's financing demand changed (the demands store's change hook): match it again."""
        self.schedule(enterprise=enterprise)

    def close(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._queue.put(None)
        self._channels.close()

    # -- the enterprise --------------------------------------------------------------

    def _audit_read(
        self, caller: Peer, method: str, enterprise: str, request_id: str, providers: Sequence[str]
    ) -> None:
        event = AuditEvent(
            caller_role=caller.role,
            caller_id=caller.party_id,
            method=method,
            decision=Decision.ALLOWED,
            request_id=ids.safe_request_id(request_id),
            enterprise=enterprise,
            providers=tuple(sorted(providers)),
        )
        with self._db.transaction() as tx:
            self._audit.append(tx, event, int(self._clock() * 1000))

    def my_matches(self, caller: Peer) -> list[products_pb2.EnterpriseMatch]:
        if caller.role != "enterprise":
            raise XinrongError(
                "enterprises only", reason=Reason.CALLER_NOT_ALLOWED, public="only the enterprise itself calls this"
            )
        rows = self._db.query(
            "SELECT c.product_id, p.bank_id, c.match_id, c.computed_ms, c.provider, c.feedback "
            "FROM match_contributions c JOIN loan_products p ON p.product_id = c.product_id "
            "WHERE c.enterprise = ? AND p.withdrawn_ms IS NULL ORDER BY c.product_id, c.provider",
            (caller.party_id,),
        )
        out: dict[str, products_pb2.EnterpriseMatch] = {}
        providers: set[str] = set()
        for product_id, bank_id, match_id, computed_ms, provider, feedback in rows:
            m = out.get(product_id)
            if m is None:
                m = out[product_id] = products_pb2.EnterpriseMatch(
                    product_id=product_id, bank_id=bank_id, match_id=match_id, computed_at=int(computed_ms) // 1000
                )
            m.feedback.add().ParseFromString(bytes(feedback))
            binding = self._registry.get("provider", provider)
            if binding is not None:
                m.provider_bindings.append(binding.signed)
            providers.add(str(provider))
        self._audit_read(caller, "ListMyMatches", caller.party_id, "", sorted(providers))
        return list(out.values())

    def apply(
        self,
        caller: Peer,
        signed: products_pb2.SignedProductApplication,
        enterprise_binding: common_pb2.SignedPartyBinding,
    ) -> tuple[str, int]:
        if caller.role != "enterprise":
            raise XinrongError(
                "enterprises only", reason=Reason.CALLER_NOT_ALLOWED, public="only the enterprise itself calls this"
            )
        app = mt.verify_application(self._ca, signed, enterprise_binding, expect_enterprise=caller.party_id)
        now = self._clock()
        if not ids.is_request_id(app.application_id):
            raise ValidationError("application id malformed", public="application id: 1-128 of A-Z a-z 0-9 . _ : -")
        if abs(now - app.requested_at) > self._skew:
            raise XinrongError("stale application", reason=Reason.REQUEST_STALE)
        if app.amount <= 0 or app.term_months <= 0 or app.term_months > 600:
            raise ValidationError("demand out of range", public="amount > 0 and 0 < term_months <= 600")
        if len(app.purpose) > MAX_DEMAND_TEXT or len(app.region) > 16 or not (app.purpose + app.region).isprintable():
            raise ValidationError("demand text", public=f"purpose: at most {MAX_DEMAND_TEXT} printable characters")
        if not mt.is_product_id(app.product_id):
            raise _not_found()
        product = self.product(app.product_id)
        if app.bank_id != product.bank_id:
            raise _not_found()
        rows = self._db.query(
            "SELECT provider, match_id, contribution FROM match_contributions "
            "WHERE product_id = ? AND enterprise = ? ORDER BY provider",
            (product.product_id, caller.party_id),
        )
        sums = self._db.query(
            "SELECT match_id, total FROM match_sums WHERE product_id = ? AND enterprise = ?",
            (product.product_id, caller.party_id),
        )
        if not sums or not rows or (app.match_id and sums[0][0] != app.match_id):
            raise XinrongError(
                "no match result",
                reason=Reason.FAILED_PRECONDITION,
                public="no match result for this product and run: grant the bank a matching consent and wait for a run",
            )
        attestation = products_pb2.EligibilityAttestation(sum=bytes(sums[0][1]))
        for provider, _match, contribution in rows:
            attestation.contributions.add().ParseFromString(bytes(contribution))
            binding = self._registry.get("provider", provider)
            if binding is not None:
                attestation.provider_bindings.append(binding.signed)
        received_ms = int(now * 1000)
        event = AuditEvent(
            caller_role=caller.role,
            caller_id=caller.party_id,
            method="ApplyToProduct",
            decision=Decision.ALLOWED,
            request_id=app.application_id,
            enterprise=caller.party_id,
            providers=product.providers,
            claims_sha256=hashlib.sha256(product.sha256.encode()).hexdigest(),
        )
        with self._db.transaction() as tx:
            exists = tx.execute(
                "SELECT 1 FROM product_applications WHERE application_id = ?", (app.application_id,)
            ).fetchone()
            if exists:
                raise XinrongError("application id seen before", reason=Reason.REQUEST_REPLAYED)
            tx.execute(
                "INSERT INTO product_applications (application_id, bank_id, product_id, enterprise, signed, "
                "enterprise_binding, attestation, received_ms) VALUES (?,?,?,?,?,?,?,?)",
                (
                    app.application_id,
                    product.bank_id,
                    product.product_id,
                    caller.party_id,
                    signed.SerializeToString(deterministic=True),
                    enterprise_binding.SerializeToString(deterministic=True),
                    attestation.SerializeToString(deterministic=True),
                    received_ms,
                ),
            )
            self._audit.append(tx, event, received_ms)
        return app.application_id, received_ms // 1000

    # -- the bank ------------------------------------------------------------------

    def applications(self, caller: Peer, product_id: str = "") -> list[products_pb2.ApplicationRecord]:
        if caller.role != INSTITUTION:
            raise XinrongError(
                "institutions only", reason=Reason.CALLER_NOT_ALLOWED, public="only institutions call this"
            )
        sql = (
            "SELECT application_id, enterprise, signed, enterprise_binding, attestation, received_ms "
            "FROM product_applications WHERE bank_id = ?"
        )
        params: list[Any] = [caller.party_id]
        if product_id:
            sql += " AND product_id = ?"
            params.append(product_id)
        out = []
        for application_id, enterprise, signed, binding, attestation, received_ms in self._db.query(
            sql + " ORDER BY received_ms, application_id", params
        ):
            record = products_pb2.ApplicationRecord(received_at=int(received_ms) // 1000)
            record.application.ParseFromString(bytes(signed))
            record.enterprise_binding.ParseFromString(bytes(binding))
            record.attestation.ParseFromString(bytes(attestation))
            self._audit_read(caller, "ListApplications", str(enterprise), str(application_id), ())
            out.append(record)
        return out


__all__ = ["MATCHING", "MatchingChannels", "ProductDesk", "RunStats"]
