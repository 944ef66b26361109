"""Starting and stopping a node.

Start-up order is what makes health honest: the database is opened (SQLite,
or the PostgreSQL of ``[database]`` shared with other replicas), state
loaded and every configured binding CA-checked *before* the gRPC server
exists; the server then reports SERVING. A background thread retries
revocation pushes that agents have not acknowledged (at start, then every
``revocation_retry_seconds``) and forgets expired replay ids.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xinrong.keys.layout import PartyCredentials, load_party
from xinrong.node.config import NodeConfig
from xinrong.node.db import Database
from xinrong.node.modeling import ModelingHub
from xinrong.node.modeling_links import AgentModelingChannels, Observer
from xinrong.node.modeling_servicer import SERVICE_NAME as MODELING_SERVICE_NAME
from xinrong.node.modeling_servicer import ModelingServicer
from xinrong.node.routing import AgentPool
from xinrong.node.service import NodeCore
from xinrong.node.servicer import SERVICE_NAME, NodeServicer
from xinrong.rpc.observe import Observer as Metrics
from xinrong.rpc.observe import wanted
from xinrong.rpc.server import AsyncioServer, RunningServer, ServiceBinding, build_server
from xinrong.v1 import modeling_pb2_grpc, node_pb2_grpc

log = logging.getLogger(__name__)

ALLOWED_ROLES = frozenset({"institution", "enterprise"})
MODELING_ROLES = frozenset({"institution"})


def open_database(config: NodeConfig) -> Database:
    """SQLite at ``[node].db`` (the embedded default) or the PostgreSQL of ``[database]``."""
    if config.database is not None:
        from xinrong.node.pg import PgDatabase  # psycopg only for nodes that use it

        return PgDatabase(config.database)
    assert config.db is not None
    return Database(config.db, synchronous=config.sqlite_synchronous)


# How often a replica's sequencer looks for staged audit events (PostgreSQL).
SEQUENCER_SECONDS = 0.05


@dataclass
class NodeServer:
    """A running node: core, gRPC server and the maintenance thread."""

    core: NodeCore
    server: RunningServer
    modeling: ModelingHub | None = None
    observer: Metrics | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _checkpointer: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def _maintenance(self) -> None:
        interval = self.core.config.revocation_retry_seconds
        first = True
        while True:
            try:
                # At start every pending push is due, whatever its backoff: the
                # agent may have come back while the node was down.
                self.core.retry_pending_pushes(force=first)
                self.core.maintain()
            except Exception:  # keep the thread alive; the next tick retries
                log.exception("node maintenance failed")
            first = False
            if self._stop.wait(interval):
                return

    def _checkpoints(self) -> None:
        """WAL checkpoints off the request path, every second (see node.db)."""
        while not self._stop.wait(1.0):
            try:
                self.core.db.checkpoint()
            except Exception:  # a busy or failed checkpoint is retried next second
                log.warning("WAL checkpoint failed", exc_info=True)

    def _sequence(self) -> None:
        """Chain staged audit events (shared database): one replica at a time does it."""
        sequence = getattr(self.core.audit, "sequence", None)
        if sequence is None:
            return
        failing = False
        while True:
            try:
                while sequence() > 0:
                    pass
                failing = False
            except Exception:
                if not failing:
                    log.warning("audit sequencer failed; retrying", exc_info=True)
                failing = True
            if self._stop.wait(SEQUENCER_SECONDS):
                try:
                    while sequence() > 0:  # leave nothing of ours behind
                        pass
                except Exception:
                    log.warning("audit sequencer could not drain at stop", exc_info=True)
                return

    def start_maintenance(self) -> None:
        self._thread = threading.Thread(target=self._maintenance, name="node-maintenance", daemon=True)
        self._thread.start()
        if self.core.db.shared:
            self._checkpointer = threading.Thread(target=self._sequence, name="node-audit-sequencer", daemon=True)
        else:
            self._checkpointer = threading.Thread(target=self._checkpoints, name="node-checkpoint", daemon=True)
        self._checkpointer.start()

    def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING, finish in-flight calls, then close agents and the database. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.server.stop(grace)
        if self._thread is not None:
            self._thread.join(timeout=grace + self.core.config.agent_timeout_seconds)
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
        if self.modeling is not None:
            self.modeling.close()
        self.core.agents.close()
        self.core.db.close()
        if self.observer is not None:
            self.observer.close()

    def wait(self) -> None:
        self.server.wait()


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
    creds = credentials or load_party(config.credentials, ca_cert=config.ca_cert)
    if creds.role != "node":
        raise ValueError(f"{config.credentials} holds {creds.role} credentials, not the node's")
    catalog = config.load_catalog()
    db = open_database(config)
    agents = AgentPool(config.providers, creds, timeout=config.agent_timeout_seconds, durable=db.wait_durable)
    hub: ModelingHub | None = None
    try:
        core = NodeCore(config, creds, catalog, db, agents, clock=clock or time.time)
        core.load()
        servicer = NodeServicer(core)
        hub = ModelingHub(core, AgentModelingChannels(config.providers, creds), observer=modeling_observer)
        hub.load()
        modeling_servicer = ModelingServicer(hub, observer=modeling_observer)
        metrics: Metrics | None = None
        if wanted(config.metrics, config.logging.format):
            from xinrong.node.metrics import observe_node

            metrics = Metrics(creds.party_id)
            observe_node(metrics, core, hub)
        running = build_server(
            creds,
            config.bind,
            [
                ServiceBinding(
                    SERVICE_NAME,
                    lambda s: node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, s),
                    allowed_roles=ALLOWED_ROLES,
                ),
                ServiceBinding(
                    MODELING_SERVICE_NAME,
                    lambda s: modeling_pb2_grpc.add_ModelingServiceServicer_to_server(modeling_servicer, s),
                    allowed_roles=MODELING_ROLES,
                ),
            ],
            max_workers=config.max_workers,
            runtime="asyncio",
            observer=metrics,
        )
        if metrics is not None and config.metrics.enabled:
            try:
                metrics.serve_http(config.metrics)
            except BaseException:
                running.stop(0)
                raise
    except BaseException:
        if hub is not None:
            hub.close()
        agents.close()
        db.close()
        raise
    assert isinstance(running, AsyncioServer)
    running.on_stop.append(agents.aclose)
    aclose = getattr(db, "aclose", None)
    if aclose is not None:
        running.on_stop.append(aclose)
    node = NodeServer(core=core, server=running, modeling=hub, observer=metrics)
    running.set_serving(True)
    node.start_maintenance()
    log.info(
        "node %s serving on port %d (%d providers, catalog %s)",
        creds.party_id,
        running.port,
        len(config.providers),
        catalog.sha256[:16],
    )
    return node
