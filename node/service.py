"""The node's domain: one façade over its parts, each a concern of its own.

``NodeCore`` wires the parts and keeps the servicer's view of them:

* ``admission`` (``xinrong.node.admission``): the one path by which a
  consented request gets in, for every purpose; the order of its checks
  and why the early ones are no oracle are documented there;
* ``access`` (``xinrong.node.access``): Verify and GetIndicators — what is
  asked, one admission, then the agents;
* ``lifecycle`` (``xinrong.node.lifecycle``): consents registered, read,
  revoked, and revocations pushed to the agents;
* the directory (party bindings, the catalog) and start-up / housekeeping,
  here.

Every decision appends an audit entry, allowed or refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from xinrong.catalog import Catalog
from xinrong.config import ConfigError
from xinrong.errors import SignatureError, ValidationError
from xinrong.keys.binding import VerifiedBinding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.layout import PartyCredentials, read_binding_file
from xinrong.node.access import CANCELLED, AccessService, Answers, IndicatorsInput, VerifyInput
from xinrong.node.admission import Admission
from xinrong.node.audit import open_audit_log
from xinrong.node.config import NodeConfig
from xinrong.node.consents import ConsentRegistry
from xinrong.node.db import Database
from xinrong.node.institutions import Institution, InstitutionGate, InstitutionRegistry
from xinrong.node.lifecycle import ConsentLifecycle, ConsentStatus, RevokeResult
from xinrong.node.limits import EnterpriseBudget, ReplayGuard
from xinrong.node.quotas import QuotaBook
from xinrong.node.registry import PartyRegistry
from xinrong.node.routing import AgentPool
from xinrong.node.tlog import TransparencyLog
from xinrong.rpc.auth import Peer
from xinrong.serde import PROTO_TO_ROLE
from xinrong.v1 import common_pb2

log = logging.getLogger(__name__)

_ROLE_OF: dict[int, str] = {int(k): v for k, v in PROTO_TO_ROLE.items()}

INSTITUTION = "institution"
ENTERPRISE = "enterprise"


class NodeCore:
    """Registry, consents, admission, access, audit and routing behind one façade."""

    def __init__(
        self,
        config: NodeConfig,
        credentials: PartyCredentials,
        catalog: Catalog,
        db: Database,
        agents: AgentPool,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.catalog = catalog
        self.db = db
        self.agents = agents
        self.clock = clock
        self.ca = CaVerifier(credentials.ca_cert_pem)
        self.registry = PartyRegistry(db, self.ca, clock=clock)
        self.consents = ConsentRegistry(db, self.ca, self.registry, clock=clock)
        self.replay = ReplayGuard(
            db,
            retention_seconds=2 * config.max_clock_skew_seconds + 60,
            max_bytes=config.replay_window_bytes,
            max_caller_bytes=config.replay_window_caller_bytes,
        )
        self.budget = EnterpriseBudget(db, daily_limit=config.enterprise_daily_budget)
        self.audit = open_audit_log(db)
        self.tlog = TransparencyLog(
            db,
            node_id=credentials.party_id,
            signing_key=credentials.signing_key,
            clock=clock,
            sequencer_lock=getattr(self.audit, "_lock", None) if db.shared else None,
        )
        # Access institutions (Issue 12 section 5): registry, status, quotas, the per-call gate.
        self.institutions = InstitutionRegistry(
            db,
            self.audit,
            node_id=credentials.party_id,
            clock=clock,
            on_suspended=lambda ident: self.gate.close_streams(ident),  # noqa: PLW0108 (gate made below)
            on_new=lambda ident: self.registry.reload(INSTITUTION, ident),
        )
        self.quotas = QuotaBook(config.quotas)
        self.gate = InstitutionGate(self.institutions, self.quotas)
        from xinrong.node.usage import RiskMonitor  # usage imports the registry module

        self.risk = RiskMonitor(
            db, self.audit, self.institutions, config.risk, node_id=credentials.party_id, clock=clock
        )
        self.admission = Admission(
            db=db,
            registry=self.registry,
            consents=self.consents,
            replay=self.replay,
            budget=self.budget,
            audit=self.audit,
            max_clock_skew_seconds=config.max_clock_skew_seconds,
            routable=lambda: agents.providers,
            clock=clock,
            down=agents.down,
        )
        self.access = AccessService(self.admission, agents, catalog, max_claims=config.max_claims_per_request)
        self.lifecycle = ConsentLifecycle(
            db=db,
            ca=self.ca,
            registry=self.registry,
            consents=self.consents,
            audit=self.audit,
            agents=agents,
            node_id=credentials.party_id,
            retry_seconds=config.revocation_retry_seconds,
            clock=clock,
        )
        # Called after a consent is registered (e.g. product matching, xinrong.node.products).
        self.on_consent_registered: list[Callable[[common_pb2.SignedConsent], None]] = []

    # -- start-up ----------------------------------------------------------

    def load(self) -> None:
        """Load persisted state, then CA-check and upsert every configured binding.

        Raises ValidationError if a configured binding is not what the config
        says it is: a node that cannot vouch for its parties must not start.
        """
        now = self.clock()
        self.registry.load()
        configured: list[VerifiedBinding] = [self.credentials.binding]
        for endpoint in self.config.providers:
            signed = _read_binding(endpoint.binding)
            try:
                binding = self.registry.verify(signed, role="provider", party_id=endpoint.name)
            except SignatureError:
                raise ConfigError(
                    f"binding {endpoint.binding} is not a valid CA-signed provider binding for {endpoint.name!r}"
                ) from None
            if binding.provider != endpoint.name:
                raise ConfigError(
                    f"binding {endpoint.binding} is for provider {binding.provider!r}, not {endpoint.name!r}"
                )
            configured.append(binding)
        for entry in self.config.institutions:
            signed = _read_binding(entry.binding)
            try:
                configured.append(self.registry.verify(signed, role=INSTITUTION, party_id=entry.id))
            except SignatureError:
                raise ConfigError(
                    f"binding {entry.binding} is not a valid CA-signed institution binding for {entry.id!r}"
                ) from None
        keep = {(b.role, b.party_id) for b in configured}
        keep |= {(INSTITUTION, ident) for ident in self.institutions.registered_ids()}
        with self.db.transaction() as tx:
            for binding in configured:
                self.registry.upsert(tx, binding, source="config")
            dropped = self.registry.retain_configured(tx, keep)
            self.institutions.import_configured(tx, [(e.id, e.name, e.type) for e in self.config.institutions])
        self.institutions.refresh(force=True)
        self.institutions.enforce_assessments()
        if dropped:
            log.warning("no longer configured, access removed: %s", ", ".join(f"{r} {p}" for r, p in dropped))
        consents = self.consents.load()
        replay = self.replay.load(now)
        self.budget.load(now)
        head_seq, head = self.audit.head()
        # Fold whatever the tree lacks (after schema step 3: the whole migrated chain) and sign.
        self.tlog.tick(force=True)
        log.info(
            "node state loaded: %d parties configured, %d consents, %d live replay ids, audit head seq %d %s",
            len(configured),
            consents,
            replay,
            head_seq,
            head.hex()[:16],
        )

    # -- the services, as the servicer calls them ----------------------------

    async def verify(self, caller: Peer, req: VerifyInput) -> Answers:
        return await self.access.verify(caller, req)

    async def get_indicators(self, caller: Peer, req: IndicatorsInput) -> Answers:
        return await self.access.get_indicators(caller, req)

    def register_consent(self, caller: Peer, signed: common_pb2.SignedConsent) -> tuple[str, int]:
        result = self.lifecycle.register(caller, signed)
        for hook in self.on_consent_registered:
            try:
                hook(signed)
            except Exception:  # a hook (matching) never fails a registration
                log.warning("consent registration hook failed", exc_info=True)
        return result

    def consent_status(self, caller: Peer, consent_id: str) -> ConsentStatus:
        return self.lifecycle.status(caller, consent_id)

    def revoke_consent(self, caller: Peer, signed: common_pb2.SignedConsentRevocation) -> RevokeResult:
        return self.lifecycle.revoke(caller, signed)

    def retry_pending_pushes(self, *, force: bool = False) -> int:
        """Retry due (or, with force, all) unacknowledged revocation pushes; returns acks."""
        return self.lifecycle.retry_pending_pushes(force=force)

    def deliver_reconnected(self) -> int:
        """Pending revocations to agents that are reachable again, at once (node.lifecycle)."""
        return self.lifecycle.deliver_reconnected()

    def maintain(self) -> None:
        """Periodic housekeeping: forget expired replay ids and past budget days."""
        now = self.clock()
        self.replay.prune(now, lazy=True)
        self.budget.prune_memory(now)

    # -- access institutions -----------------------------------------------

    def register_institution(self, signed: common_pb2.SignedPartyBinding, name: str, kind: str) -> Institution:
        """Onboard an institution at run time: its CA-signed binding, then its registry row."""
        try:
            binding = self.registry.verify(signed, role=INSTITUTION)
        except SignatureError:
            raise ValidationError("not a valid CA-signed institution binding") from None
        with self.db.transaction() as tx:
            self.registry.upsert(tx, binding, source="registered")
            self.institutions.register(tx, binding.party_id, name, kind)
        self.institutions.refresh()
        inst = self.institutions.get(binding.party_id)
        assert inst is not None
        return inst

    # -- directory ---------------------------------------------------------

    def list_parties(self, caller: Peer, role: int) -> list[common_pb2.SignedPartyBinding]:
        role_name = _ROLE_OF.get(role) if role else None
        if role and role_name is None:
            raise ValidationError(f"unknown role {role}")
        include = [(ENTERPRISE, caller.party_id)] if caller.role == ENTERPRISE else []
        return self.registry.list(role_name, include=include)

    def get_catalog(self) -> tuple[bytes, str]:
        return self.catalog.raw, self.catalog.sha256


def _read_binding(path: Path) -> common_pb2.SignedPartyBinding:
    try:
        return read_binding_file(path)
    except Exception:
        raise ConfigError(f"binding file {path} cannot be read as a SignedPartyBinding") from None


__all__ = [
    "CANCELLED",
    "Answers",
    "ConsentStatus",
    "IndicatorsInput",
    "NodeCore",
    "RevokeResult",
    "VerifyInput",
]
