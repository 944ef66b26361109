"""Starting and stopping a node.

Start-up order is what makes health honest: the database is opened (SQLite,
or the PostgreSQL of ``[database]`` shared with other replicas), state
loaded and every configured binding CA-checked *before* the gRPC server
exists; the server then reports SERVING. A background thread retries
revocation pushes that agents have not acknowledged (at start, then every
``revocation_retry_seconds``) and forgets expired replay ids.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xinrong.keys.layout import PartyCredentials, load_party
from xinrong.node.agent_sync import AGENT_SYNC_ROLES, AgentSync, AgentSyncServicer
from xinrong.node.agent_sync import SERVICE_NAME as AGENT_SYNC_SERVICE_NAME
from xinrong.node.config import NodeConfig
from xinrong.node.db import Database
from xinrong.node.demand_servicer import ALLOWED_ROLES as DEMAND_ROLES
from xinrong.node.demand_servicer import SERVICE_NAME as DEMAND_SERVICE_NAME
from xinrong.node.demand_servicer import Demands, DemandServicer
from xinrong.node.demands import DemandStore, Threshold, Whitelist
from xinrong.node.evaluation import EvaluationAgents, EvaluationStore
from xinrong.node.evaluation_servicer import ALLOWED_ROLES as EVALUATION_ROLES
from xinrong.node.evaluation_servicer import SERVICE_NAME as EVALUATION_SERVICE_NAME
from xinrong.node.evaluation_servicer import EvaluationServicer
from xinrong.node.events import EventLog, NewEvent, region_of
from xinrong.node.institutions import InstitutionWatch
from xinrong.node.institutions_servicer import ALLOWED_ROLES as INSTITUTION_ADMIN_ROLES
from xinrong.node.institutions_servicer import SERVICE_NAME as INSTITUTION_ADMIN_SERVICE_NAME
from xinrong.node.institutions_servicer import InstitutionAdminServicer
from xinrong.node.lifecycle import WATCH_SECONDS
from xinrong.node.modeling import ModelingHub
from xinrong.node.modeling_links import AgentModelingChannels, Observer
from xinrong.node.modeling_servicer import SERVICE_NAME as MODELING_SERVICE_NAME
from xinrong.node.modeling_servicer import ModelingServicer
from xinrong.node.monitoring import Monitoring
from xinrong.node.monitoring_servicer import ALLOWED_ROLES as MONITORING_ROLES
from xinrong.node.monitoring_servicer import SERVICE_NAME as MONITORING_SERVICE_NAME
from xinrong.node.monitoring_servicer import MonitoringServicer
from xinrong.node.products import MatchingChannels, ProductDesk
from xinrong.node.products_servicer import ALLOWED_ROLES as PRODUCT_ROLES
from xinrong.node.products_servicer import SERVICE_NAME as PRODUCT_SERVICE_NAME
from xinrong.node.products_servicer import ProductServicer
from xinrong.node.public import ChangedRecord, PublicStore
from xinrong.node.public_servicer import ALLOWED_ROLES as PUBLIC_ROLES
from xinrong.node.public_servicer import SERVICE_NAME as PUBLIC_SERVICE_NAME
from xinrong.node.public_servicer import PublicServicer
from xinrong.node.push_servicer import ALLOWED_ROLES as PUSH_ROLES
from xinrong.node.push_servicer import SERVICE_NAME as PUSH_SERVICE_NAME
from xinrong.node.push_servicer import PushServicer
from xinrong.node.routing import AgentPool
from xinrong.node.service import NodeCore
from xinrong.node.servicer import SERVICE_NAME, NodeServicer
from xinrong.node.subject import SubjectRights
from xinrong.node.subject_servicer import SERVICE_NAME as SUBJECT_SERVICE_NAME
from xinrong.node.subject_servicer import SubjectServicer
from xinrong.node.transparency_servicer import SERVICE_NAME as TRANSPARENCY_SERVICE_NAME
from xinrong.node.transparency_servicer import TransparencyServicer
from xinrong.rpc.observe import Observer as Metrics
from xinrong.rpc.observe import wanted
from xinrong.rpc.server import AsyncioServer, RunningServer, ServiceBinding, build_server
from xinrong.v1 import (
    agent_pb2_grpc,
    demand_pb2_grpc,
    evaluation_pb2_grpc,
    modeling_pb2_grpc,
    node_pb2_grpc,
    products_pb2_grpc,
    public_pb2_grpc,
    push_pb2_grpc,
    subject_pb2_grpc,
    transparency_pb2_grpc,
)
from xinrong.v1 import institutions_pb2_grpc as institutions_grpc
from xinrong.v1 import monitoring_pb2_grpc as monitoring_grpc  # post-loan monitoring (issue 13 §4)

log = logging.getLogger(__name__)

ALLOWED_ROLES = frozenset({"institution", "enterprise"})
MODELING_ROLES = frozenset({"institution"})
SUBJECT_ROLES = frozenset({"enterprise"})
# How often the node asks the agents for overdue objections (counts only).
CASE_STATS_SECONDS = 600.0


def subject_rights(core: NodeCore) -> SubjectRights:
    """The enterprise's SubjectService over the core's stores and one admission path."""
    return SubjectRights(
        db=core.db,
        ca=core.ca,
        catalog=core.catalog,
        registry=core.registry,
        consents=core.consents,
        replay=core.replay,
        audit=core.audit,
        admission=core.admission,
        endpoints=tuple(core.config.providers),
        credentials=core.credentials,
        timeout=core.config.agent_timeout_seconds,
        max_clock_skew_seconds=core.config.max_clock_skew_seconds,
        clock=core.clock,
        retry_seconds=core.config.revocation_retry_seconds,
    )


def monitoring_of(core: NodeCore) -> Monitoring:
    """Post-loan watches and the banks' alert queue over the core's stores and one admission path."""
    return Monitoring(
        db=core.db,
        admission=core.admission,
        audit=core.audit,
        registry=core.registry,
        catalog=core.catalog,
        endpoints=tuple(core.config.providers),
        credentials=core.credentials,
        timeout=core.config.agent_timeout_seconds,
        clock=core.clock,
    )


# Checkpoints and proofs are hashes only: every authenticated role may check the log.
TRANSPARENCY_ROLES = frozenset({"institution", "enterprise", "provider"})


def open_database(config: NodeConfig) -> Database:
    """SQLite at ``[node].db`` (the embedded default) or the PostgreSQL of ``[database]``."""
    if config.database is not None:
        from xinrong.node.pg import PgDatabase  # psycopg only for nodes that use it

        return PgDatabase(config.database)
    assert config.db is not None
    return Database(config.db, synchronous=config.sqlite_synchronous)


def push_public_changes(public: PublicStore, events: EventLog) -> None:
    """Public-record and filing changes become push events (Issue 12 §3) for every institution.

    The payload says what changed where (field, provider, version, self-reported, removed), not the value:
    a subscriber reads the record itself with GetPublicRecords, which is an audited read.
    """

    def forward(changes: Sequence[ChangedRecord]) -> None:
        events.append_many(
            [
                NewEvent(
                    topic=c.topic,
                    enterprise=c.enterprise,
                    region=c.region or region_of(c.enterprise),
                    industry=c.industry,
                    payload=json.dumps(
                        {
                            "field": c.field,
                            "provider": c.provider,
                            "version": c.version,
                            "self_reported": c.self_reported,
                            "removed": c.removed,
                        },
                        sort_keys=True,
                        separators=(",", ":"),
                    ).encode(),
                )
                for c in changes
            ]
        )

    public.on_change(forward)


def public_store(core: NodeCore) -> PublicStore:
    """Public records, filings and credit reports (``node.public``) over the core's stores."""
    return PublicStore(
        db=core.db,
        audit=core.audit,
        catalog=core.catalog,
        registry=core.registry,
        ca=core.ca,
        signing_key=core.credentials.signing_key,
        node_id=core.credentials.party_id,
        max_clock_skew_seconds=core.config.max_clock_skew_seconds,
        clock=core.clock,
    )


# How often a replica's sequencer looks for staged audit events (PostgreSQL).
SEQUENCER_SECONDS = 0.05
SEQUENCER_BATCH = 2000  # staged events chained per transaction
TREE_SECONDS = 1.0  # the sequencer thread integrates the Merkle tree this often (shared database)


@dataclass
class NodeServer:
    """A running node: core, gRPC server and the maintenance thread."""

    core: NodeCore
    server: RunningServer
    modeling: ModelingHub | None = None
    subject: SubjectRights | None = None
    observer: Metrics | None = None
    # Public records and filings; ``public.on_change(callback)`` is the change hook.
    public: PublicStore | None = None
    institutions_watch: InstitutionWatch | None = None
    # The event log the push service streams (producers append to it).
    events: EventLog | None = None
    # Financing demands and the whitelist pushed on the event log.
    whitelist: Whitelist | None = None
    # The push service (a suspension ends its streams through ``core.gate``, as any stream).
    push: PushServicer | None = None
    products: ProductDesk | None = None
    monitoring: Monitoring | None = None  # post-loan watches and alert queue (node.monitoring)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _checkpointer: threading.Thread | None = None
    _watcher: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def _maintenance(self) -> None:
        interval = self.core.config.revocation_retry_seconds
        first = True
        next_cases = time.monotonic() + CASE_STATS_SECONDS
        while True:
            try:
                # At start every pending push is due, whatever its backoff: the
                # agent may have come back while the node was down.
                self.core.retry_pending_pushes(force=first)
                if self.subject is not None:
                    self.subject.push_pending(force=first)
                    if time.monotonic() >= next_cases:
                        next_cases = time.monotonic() + CASE_STATS_SECONDS
                        self.subject.watch_overdue()
                self.core.maintain()
                if self.modeling is not None:
                    self.modeling.expire_idle()  # leases run out on time, not only at the next CreateJob (A10)
            except Exception:  # keep the thread alive; the next tick retries
                log.exception("node maintenance failed")
            first = False
            if self._stop.wait(interval):
                return

    def _watch_revocations(self) -> None:
        """Revocations reach an agent within about a second of its return (node.lifecycle, A13)."""
        while not self._stop.wait(WATCH_SECONDS):
            try:
                self.core.deliver_reconnected()
                if self.subject is not None:
                    self.subject.deliver_reconnected()  # pauses and resumes, the same way
            except Exception:  # the next tick retries
                log.warning("revocation delivery to returning agents failed", exc_info=True)

    def _checkpoints(self) -> None:
        """WAL checkpoints off the request path, every second (see node.db); tree and signed checkpoint too."""
        while not self._stop.wait(1.0):
            try:
                self.core.db.checkpoint()
            except Exception:  # a busy or failed checkpoint is retried next second
                log.warning("WAL checkpoint failed", exc_info=True)
            self._tlog_tick()

    def _tlog_tick(self) -> None:
        try:
            self.core.tlog.tick()
        except Exception:  # retried next tick; a refused checkpoint is logged loudly where refused
            log.warning("transparency log tick failed", exc_info=True)

    def _sequence(self) -> None:
        """Chain staged audit events (shared database): one replica at a time does it.

        The Merkle tree follows once a second (``TREE_SECONDS``), as on SQLite,
        not after every round: folding a second's entries in one integration
        costs a fraction of folding each round's few (see ``docs/ENGINEERING.md``).
        Proofs never wait for it: a proof past the tree integrates on demand.
        """
        sequence = getattr(self.core.audit, "sequence", None)
        if sequence is None:
            return
        failing = False
        next_tree = time.monotonic()
        while True:
            try:
                # Again at once only while a full batch came back: a tick that took what
                # there was waits for the next one, so the staged events of a tick are chained
                # in one transaction (one flush) rather than a few at a time, back to back.
                while sequence(batch=SEQUENCER_BATCH) >= SEQUENCER_BATCH:
                    pass
                failing = False
            except Exception:
                if not failing:
                    log.warning("audit sequencer failed; retrying", exc_info=True)
                failing = True
            if time.monotonic() >= next_tree:
                self._tlog_tick()
                # From its end: the next tick is a whole checkpoint interval after this one
                # signed (``TransparencyLog.tick`` signs when that much has passed).
                next_tree = time.monotonic() + TREE_SECONDS
            if self._stop.wait(SEQUENCER_SECONDS):
                try:
                    while sequence() > 0:  # leave nothing of ours behind
                        pass
                except Exception:
                    log.warning("audit sequencer could not drain at stop", exc_info=True)
                self._tlog_tick()  # and the tree holding all of it
                return

    def start_maintenance(self) -> None:
        self._thread = threading.Thread(target=self._maintenance, name="node-maintenance", daemon=True)
        self._thread.start()
        if self.core.db.shared:
            self._checkpointer = threading.Thread(target=self._sequence, name="node-audit-sequencer", daemon=True)
        else:
            self._checkpointer = threading.Thread(target=self._checkpoints, name="node-checkpoint", daemon=True)
        self._checkpointer.start()
        self._watcher = threading.Thread(target=self._watch_revocations, name="node-revocations", daemon=True)
        self._watcher.start()

    def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING, finish in-flight calls, then close agents and the database. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self.institutions_watch is not None:
            self.institutions_watch.stop()
        self.server.stop(grace)
        if self._thread is not None:
            self._thread.join(timeout=grace + self.core.config.agent_timeout_seconds)
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self.modeling is not None:
            self.modeling.close()
        if self.subject is not None:
            self.subject.close()
        if self.whitelist is not None:
            self.whitelist.close()
        if self.events is not None:
            self.events.close()
        if self.products is not None:
            self.products.close()
        if self.monitoring is not None:
            self.monitoring.close()
        self.core.agents.close()
        self.core.db.close()
        if self.observer is not None:
            self.observer.close()

    def wait(self) -> None:
        self.server.wait()


def _evaluation_service(config: NodeConfig, creds: PartyCredentials) -> tuple[EvaluationServicer, ServiceBinding]:
    """Enterprises read their own evaluation (``node.evaluation_servicer``)."""
    servicer = EvaluationServicer(
        EvaluationStore(config.evaluation_path() if config.evaluation_dir or config.db else None),
        EvaluationAgents(config, creds, strict=False),
        creds,
        timeout=config.agent_timeout_seconds,
    )
    binding = ServiceBinding(
        EVALUATION_SERVICE_NAME,
        lambda s: evaluation_pb2_grpc.add_EvaluationServiceServicer_to_server(servicer, s),
        allowed_roles=EVALUATION_ROLES,
    )
    return servicer, binding


def product_desk(core: NodeCore) -> ProductDesk:
    """Loan products and matching (``node.products``) over the core's stores and one admission path."""
    desk = ProductDesk(
        db=core.db,
        ca=core.ca,
        catalog=core.catalog,
        registry=core.registry,
        consents=core.consents,
        admission=core.admission,
        audit=core.audit,
        channels=MatchingChannels(core.config, core.credentials),
        node_id=core.credentials.party_id,
        timeout=core.config.agent_timeout_seconds,
        max_clock_skew_seconds=core.config.max_clock_skew_seconds,
        clock=core.clock,
    )
    core.on_consent_registered.append(desk.on_consent)
    desk.start_period_watch()
    return desk


def _node_credentials(config: NodeConfig, credentials: PartyCredentials | None) -> PartyCredentials:
    """The node's own credentials (given, or from ``[node].credentials``); a party of another role is refused."""
    creds = credentials or load_party(config.credentials, ca_cert=config.ca_cert)
    if creds.role != "node":
        raise ValueError(f"{config.credentials} holds {creds.role} credentials, not the node's")
    return creds


Closers = list[Callable[[], object]]  # what start_node opened so far, closed in order if a later step fails


def _modeling_hub(core: NodeCore, observer: Observer | None, closers: Closers) -> ModelingHub:
    """Joint modeling (``node.modeling``); jobs left unfinished by a previous process are failed at load."""
    hub = ModelingHub(core, AgentModelingChannels(core.config.providers, core.credentials), observer=observer)
    closers.append(hub.close)
    hub.load()
    return hub


def _whitelist(core: NodeCore, events: EventLog) -> Whitelist:
    """The financing whitelist, pushed on the event log and recomputed when an enterprise's consents change."""
    config = core.config
    whitelist = Whitelist(
        core.db,
        events,
        DemandStore(core.db, core.ca),
        core.consents,
        core.registry,
        EvaluationStore(config.evaluation_path() if config.evaluation_dir or config.db else None),
        Threshold(config.whitelist_min_grade, config.whitelist_valid_days),
        clock=core.clock,
        audit=core.audit,
    )
    core.consents.on_change(whitelist.mark)
    return whitelist


def _demands(core: NodeCore, whitelist: Whitelist) -> Demands:
    """Financing demands (``node.demand_servicer``) over the whitelist's demand store."""
    return Demands(
        core.db, core.ca, whitelist.demands, whitelist, core.consents, core.lifecycle, core.audit, core.clock
    )


def _public(core: NodeCore, events: EventLog) -> PublicStore:
    """Public records and filings, whose changes become push events."""
    public = public_store(core)
    push_public_changes(public, events)
    return public


def _products(core: NodeCore, demands: Demands, closers: Closers) -> ProductDesk:
    """Loan products and matching, told of every change of a financing demand."""
    products = product_desk(core)
    closers.append(products.close)
    demands.on_change(products.on_demand_changed)
    return products


def _monitoring(core: NodeCore, closers: Closers) -> Monitoring:
    """Post-loan watches and the alert queue, loaded from the database."""
    monitoring = monitoring_of(core)
    closers.append(monitoring.close)
    monitoring.load()
    return monitoring


def _metrics(config: NodeConfig, core: NodeCore, hub: ModelingHub) -> Metrics | None:
    """The node's metrics observer, if metrics or structured logs want one."""
    if not wanted(config.metrics, config.logging.format):
        return None
    from xinrong.node.metrics import observe_node

    metrics = Metrics(core.credentials.party_id)
    observe_node(metrics, core, hub)
    return metrics


@dataclass(frozen=True)
class _Servicers:
    """The servicers built before the server; the others are made when the server registers them."""

    node: NodeServicer
    modeling: ModelingServicer
    subject: SubjectServicer
    evaluation: ServiceBinding
    public: PublicServicer
    push: PushServicer
    demand: DemandServicer
    products: ProductServicer
    monitoring: MonitoringServicer


def _bindings(core: NodeCore, rights: SubjectRights, servicers: _Servicers) -> list[ServiceBinding]:
    """Every service of the node with the roles allowed to call it."""
    return [
        ServiceBinding(
            SERVICE_NAME,
            lambda s: node_pb2_grpc.add_NodeServiceServicer_to_server(servicers.node, s),
            allowed_roles=ALLOWED_ROLES,
        ),
        ServiceBinding(
            TRANSPARENCY_SERVICE_NAME,
            lambda s: transparency_pb2_grpc.add_TransparencyServiceServicer_to_server(
                TransparencyServicer(core.tlog), s
            ),
            allowed_roles=TRANSPARENCY_ROLES,
        ),
        ServiceBinding(
            MODELING_SERVICE_NAME,
            lambda s: modeling_pb2_grpc.add_ModelingServiceServicer_to_server(servicers.modeling, s),
            allowed_roles=MODELING_ROLES,
        ),
        ServiceBinding(
            SUBJECT_SERVICE_NAME,
            lambda s: subject_pb2_grpc.add_SubjectServiceServicer_to_server(servicers.subject, s),
            allowed_roles=SUBJECT_ROLES,
        ),
        servicers.evaluation,
        ServiceBinding(
            PUBLIC_SERVICE_NAME,
            lambda s: public_pb2_grpc.add_PublicServiceServicer_to_server(servicers.public, s),
            allowed_roles=PUBLIC_ROLES,
        ),
        ServiceBinding(
            INSTITUTION_ADMIN_SERVICE_NAME,
            lambda s: institutions_grpc.add_InstitutionAdminServiceServicer_to_server(
                InstitutionAdminServicer(core), s
            ),
            allowed_roles=INSTITUTION_ADMIN_ROLES,
        ),
        ServiceBinding(
            AGENT_SYNC_SERVICE_NAME,
            lambda s: agent_pb2_grpc.add_AgentSyncServiceServicer_to_server(
                AgentSyncServicer(AgentSync(core, rights)), s
            ),
            allowed_roles=AGENT_SYNC_ROLES,
        ),
        ServiceBinding(
            PUSH_SERVICE_NAME,
            lambda s: push_pb2_grpc.add_PushServiceServicer_to_server(servicers.push, s),
            allowed_roles=PUSH_ROLES,
            unbudgeted=frozenset({"Subscribe"}),  # bounded per institution by the servicer
        ),
        ServiceBinding(
            DEMAND_SERVICE_NAME,
            lambda s: demand_pb2_grpc.add_DemandServiceServicer_to_server(servicers.demand, s),
            allowed_roles=DEMAND_ROLES,
        ),
        ServiceBinding(
            PRODUCT_SERVICE_NAME,
            lambda s: products_pb2_grpc.add_ProductServiceServicer_to_server(servicers.products, s),
            allowed_roles=PRODUCT_ROLES,
        ),
        ServiceBinding(
            MONITORING_SERVICE_NAME,
            lambda s: monitoring_grpc.add_MonitoringServiceServicer_to_server(servicers.monitoring, s),
            allowed_roles=MONITORING_ROLES,
        ),
    ]


def _serve(core: NodeCore, bindings: list[ServiceBinding], metrics: Metrics | None) -> RunningServer:
    """The gRPC server (mTLS, the institution gate) and, if enabled, the metrics endpoint."""
    config = core.config
    running = build_server(
        core.credentials,
        config.bind,
        bindings,
        max_workers=config.max_workers,
        runtime="asyncio",
        observer=metrics,
        gate=core.gate,
    )
    if metrics is not None and config.metrics.enabled:
        try:
            metrics.serve_http(config.metrics)
        except BaseException:
            running.stop(0)
            raise
    return running


def _close_on_stop(running: AsyncioServer, agents: AgentPool, evaluation: EvaluationServicer, db: Database) -> None:
    """What the server releases when it stops: agent streams, the evaluation agents, the database pool."""
    running.on_stop.append(agents.aclose)

    async def close_evaluation() -> None:
        evaluation.close()

    running.on_stop.append(close_evaluation)
    aclose = getattr(db, "aclose", None)
    if aclose is not None:
        running.on_stop.append(aclose)


def _institutions_watch(core: NodeCore) -> InstitutionWatch:
    """Registry refresh, assessment checks and the risk monitor (started once the node serves)."""
    return InstitutionWatch(
        core.institutions,
        core.config,
        risk_tick=core.risk.tick,
        quotas=core.quotas,
        shared=core.db.shared,
        monotonic=time.monotonic,
    )


def start_node(
    config: NodeConfig,
    *,
    credentials: PartyCredentials | None = None,
    clock: Callable[[], float] | None = None,
    modeling_observer: Observer | None = None,
) -> NodeServer:
    """Open, load, serve. Raises (and releases everything) if any step fails.

    ``modeling_observer`` (tests only) sees every serialized message of the
    modeling service and of the node's modeling calls to agents.
    """
    creds = _node_credentials(config, credentials)
    catalog = config.load_catalog()
    db = open_database(config)
    agents = AgentPool(config.providers, creds, timeout=config.agent_timeout_seconds, durable=db.wait_durable)
    closers: Closers = []
    try:
        core = NodeCore(config, creds, catalog, db, agents, clock=clock or time.time)
        core.load()
        node_servicer = NodeServicer(core)
        hub = _modeling_hub(core, modeling_observer, closers)
        modeling_servicer = ModelingServicer(hub, observer=modeling_observer)
        rights = subject_rights(core)
        closers.append(rights.close)
        subject_servicer = SubjectServicer(rights)
        evaluation_servicer, evaluation_binding = _evaluation_service(config, creds)
        events = EventLog(db, creds.signing_key, node_id=creds.party_id, clock=core.clock)
        push_servicer = PushServicer(events, core.registry, core.audit, db, clock=core.clock)
        whitelist = _whitelist(core, events)
        demands = _demands(core, whitelist)
        demand_servicer = DemandServicer(demands)
        public = _public(core, events)
        public_servicer = PublicServicer(public)
        products = _products(core, demands, closers)
        products_servicer = ProductServicer(products, creds.party_id)
        monitoring = _monitoring(core, closers)
        monitoring_servicer = MonitoringServicer(monitoring)
        metrics = _metrics(config, core, hub)
        servicers = _Servicers(
            node=node_servicer,
            modeling=modeling_servicer,
            subject=subject_servicer,
            evaluation=evaluation_binding,
            public=public_servicer,
            push=push_servicer,
            demand=demand_servicer,
            products=products_servicer,
            monitoring=monitoring_servicer,
        )
        running = _serve(core, _bindings(core, rights, servicers), metrics)
    except BaseException:
        for close in closers:
            close()
        agents.close()
        db.close()
        raise
    assert isinstance(running, AsyncioServer)
    _close_on_stop(running, agents, evaluation_servicer, db)
    node = NodeServer(
        core=core,
        server=running,
        modeling=hub,
        subject=rights,
        observer=metrics,
        events=events,
        whitelist=whitelist,
        push=push_servicer,
        public=public,
        products=products,
        monitoring=monitoring,
    )
    node.institutions_watch = _institutions_watch(core)
    running.set_serving(True)
    node.start_maintenance()
    node.institutions_watch.start()
    whitelist.start()
    monitoring.start()
    log.info(
        "node %s serving on port %d (%d providers, catalog %s)",
        creds.party_id,
        running.port,
        len(config.providers),
        catalog.sha256[:16],
    )
    return node
