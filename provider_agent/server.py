"""Running an agent: stores, domain, servicer, and the mTLS server around them.

Health tells the truth: NOT_SERVING until keys are loaded *and* a data period
is active, and NOT_SERVING while the state store cannot be written (a
read-only remount, a full disk: every answer must record its request id and
use, so an agent that cannot write cannot answer). The watcher probes the
state store with one small write every poll and flips health back once
writes succeed. The import runs as a separate process, so a watcher thread polls
the data store (one indexed query a second) and flips health to SERVING as
soon as the first import commits. The same thread checkpoints the state
store's WAL (so no request ever pays for an fsync) and prunes old request ids.
An agent whose ``[modeling]`` table names a dataset is also ready without
any imported period: it serves joint modeling on that dataset.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from xinrong.heap import settle_after_start
from xinrong.keys.signing import SigningKey
from xinrong.provider_agent.config import AgentSetup
from xinrong.provider_agent.consent_sync import pull_consent_updates
from xinrong.provider_agent.evaluate import ProviderAgent
from xinrong.provider_agent.monitoring import AgentMonitor, WatchStore, monitor_db_path
from xinrong.provider_agent.monitoring_servicer import SERVICE_NAME as MONITORING_SERVICE_NAME
from xinrong.provider_agent.monitoring_servicer import AgentMonitoringServicer
from xinrong.provider_agent.servicer import SERVICE_NAME, AgentServicer
from xinrong.provider_agent.store import DataStore, StateStore
from xinrong.provider_agent.subject import SubjectDesk, SubjectStore, subject_db_path
from xinrong.provider_agent.subject_servicer import SERVICE_NAME as SUBJECT_SERVICE_NAME
from xinrong.provider_agent.subject_servicer import AgentSubjectServicer
from xinrong.rpc.observe import Observer, wanted
from xinrong.rpc.server import RunningServer, ServiceBinding, build_server
from xinrong.tlog.client import answers_origin
from xinrong.v1 import agent_pb2_grpc, modeling_pb2_grpc, subject_pb2_grpc
from xinrong.v1 import monitoring_pb2_grpc as monitoring_grpc  # post-loan monitoring (issue 13 §4)

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 60.0


@dataclass
class RunningAgent:
    """A started agent; ``stop`` is idempotent and closes the stores last."""

    agent: ProviderAgent
    server: RunningServer
    data: DataStore
    state: StateStore
    poll_seconds: float
    subject: SubjectStore | None = None
    modeling_ready: Callable[[], bool] | None = None
    # (origin, key) of the agent's own answer log; None: not kept (tests of the bare server).
    answer_log: tuple[str, SigningKey] | None = None
    observer: Observer | None = None
    # Joint-modeling jobs held (``AgentModeling.job_count``), for gauges and tests.
    modeling_jobs: Callable[[], int] | None = None
    monitor: AgentMonitor | None = None  # post-loan watches (provider_agent.monitoring)
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None
    _ready: bool = False
    _closed: bool = False
    _close_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ready(self) -> bool:
        """Whether health says SERVING (as last set by ``refresh_health``)."""
        return self._ready

    def refresh_health(self) -> bool:
        """Re-evaluate readiness now (the watcher also does this every poll)."""
        ready = self.agent.ready() or (self.modeling_ready is not None and self.modeling_ready())
        ready = ready and self.state.healthy()
        if ready != self._ready and not self._stop.is_set():
            self._ready = ready
            self.server.set_serving(ready)
            why = "" if ready or self.state.healthy() else f" (state store: {self.state.failure})"
            log.info("agent %s health: %s%s", self.agent.provider, "SERVING" if ready else "NOT_SERVING", why)
        return ready

    def _watch(self) -> None:
        next_housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS
        failing = False
        while not self._stop.wait(self.poll_seconds):
            try:
                writable = self.state.probe()
                self.refresh_health()
                if not writable:
                    continue  # said once by the store; no checkpoint or pruning on a store that cannot write
                self.state.checkpoint()
                self.integrate_answers()
                failing = False
                if time.monotonic() >= next_housekeeping:
                    next_housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS
                    pruned = self.agent.housekeeping()
                    if pruned:
                        log.debug("pruned %d expired request ids", pruned)
            except Exception:
                if not failing:  # once per failure, not every poll
                    log.exception("agent watcher failed")
                failing = True

    def integrate_answers(self) -> None:
        """The agent's own Merkle log of what it answered: fold new answers, sign a checkpoint if it grew."""
        if self.answer_log is not None:
            origin, key = self.answer_log
            self.state.integrate_answers(origin, key, int(time.time() * 1000))

    def start_watcher(self) -> None:
        self._watcher = threading.Thread(target=self._watch, name="agent-health", daemon=True)
        self._watcher.start()

    def stop(self, grace: float = 5.0) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5.0)
        self.server.stop(grace)
        if self.monitor is not None:
            self.monitor.stop()
        try:
            self.integrate_answers()  # the last answers get into the signed log before the store closes
        except Exception:
            log.warning("could not fold the last answers into the answer log", exc_info=True)
        if self.observer is not None:
            self.observer.close()
        self.data.close()
        self.state.close()
        if self.subject is not None:
            self.subject.close()

    def wait(self) -> None:
        self.server.wait()


def start_agent(
    setup: AgentSetup,
    *,
    bind: str | None = None,
    clock: Callable[[], float] = time.time,
    poll_seconds: float = 1.0,
) -> RunningAgent:
    """Open the stores, build the domain agent and start the mTLS server."""
    # Joint modeling pulls in numpy and the HE libraries: load it when an agent starts,
    # not whenever the `xinrong` command line is built.
    from xinrong.provider_agent.modeling import AgentModeling
    from xinrong.provider_agent.modeling_data import FeatureSource
    from xinrong.provider_agent.modeling_servicer import SERVICE_NAME as MODELING_SERVICE_NAME
    from xinrong.provider_agent.modeling_servicer import AgentModelingServicer

    cfg = setup.config
    data = DataStore(cfg.db, cfg.provider)
    try:
        state = StateStore(cfg.state_db, cfg.provider, background_checkpoint=True)
    except BaseException:
        data.close()
        raise
    try:
        subject = SubjectStore(subject_db_path(cfg.state_db), deadline_days=cfg.objection_deadline_days)
    except BaseException:
        data.close()
        state.close()
        raise
    try:
        agent = ProviderAgent(
            catalog=setup.catalog,
            provider=cfg.provider,
            credentials=setup.credentials,
            data=data,
            state=state,
            verdict_ttl_seconds=cfg.verdict_ttl_seconds,
            max_clock_skew_seconds=cfg.max_clock_skew_seconds,
            clock=clock,
            subject=subject,
        )
        desk = SubjectDesk(
            catalog=setup.catalog,
            provider=cfg.provider,
            credentials=setup.credentials,
            data=data,
            store=subject,
            max_clock_skew_seconds=cfg.max_clock_skew_seconds,
            clock=clock,
        )
        subject_servicer = AgentSubjectServicer(desk, cfg.node_id)
        if cfg.node_address is not None:  # before the port opens: no answer on a revocation it missed (A13)
            pull_consent_updates(cfg.node_address, cfg.node_id, setup.credentials, agent, desk)
        period = data.active_period()
        if period is not None and period.catalog_sha256 != setup.catalog.sha256:
            log.warning(
                "active period %s was imported under another catalog version; re-import to be safe", period.as_of
            )
        servicer = AgentServicer(agent, cfg.node_id)
        features = FeatureSource(dataset=cfg.modeling.dataset, db=cfg.db, catalog=setup.catalog, provider=cfg.provider)
        modeling = AgentModeling(
            provider=cfg.provider,
            credentials=setup.credentials,
            config=cfg.modeling,
            features=features,
            state=state,
            max_clock_skew_seconds=cfg.max_clock_skew_seconds,
            clock=clock,
            paused=lambda consent_id, uscc: (consent_id, uscc) in subject.view().paused,
        )
        modeling_servicer = AgentModelingServicer(modeling, cfg.node_id)
        evaluation_binding = _evaluation_binding(setup, cfg.node_id)
        monitor = AgentMonitor(agent, setup.credentials, WatchStore(monitor_db_path(cfg.state_db)), clock=clock)
        monitoring_servicer = AgentMonitoringServicer(monitor, cfg.node_id)

        def register(server: grpc.Server) -> None:
            agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)

        def register_modeling(server: grpc.Server) -> None:
            modeling_pb2_grpc.add_AgentModelingServiceServicer_to_server(modeling_servicer, server)

        observer = Observer(setup.credentials.party_id) if wanted(cfg.metrics, cfg.logging.format) else None
        server = build_server(
            setup.credentials,
            bind or cfg.bind,
            [
                ServiceBinding(SERVICE_NAME, register, allowed_roles=frozenset({"node"})),
                ServiceBinding(MODELING_SERVICE_NAME, register_modeling, allowed_roles=frozenset({"node"})),
                ServiceBinding(
                    SUBJECT_SERVICE_NAME,
                    lambda s: subject_pb2_grpc.add_AgentSubjectServiceServicer_to_server(subject_servicer, s),
                    allowed_roles=frozenset({"node"}),
                ),
                evaluation_binding,
                _matching_binding(agent, cfg.node_id, cfg.max_clock_skew_seconds),
                ServiceBinding(
                    MONITORING_SERVICE_NAME,
                    lambda s: monitoring_grpc.add_AgentMonitoringServiceServicer_to_server(monitoring_servicer, s),
                    allowed_roles=frozenset({"node"}),
                ),
            ],
            max_workers=cfg.max_workers,
            observer=observer,
        )
    except BaseException:
        data.close()
        state.close()
        subject.close()
        raise
    running = RunningAgent(
        agent=agent,
        server=server,
        data=data,
        state=state,
        poll_seconds=poll_seconds,
        subject=subject,
        modeling_ready=features.ready if cfg.modeling.enabled else None,
        answer_log=(answers_origin(setup.credentials.party_id), setup.credentials.signing_key),
        observer=observer,
        modeling_jobs=modeling.job_count,
        monitor=monitor,
    )
    monitor.start()
    if observer is not None:
        observe_agent(observer, running)
        observer.gauges.add(
            "xinrong_agent_modeling_jobs", "Joint-modeling jobs held", (), lambda: [((), float(modeling.job_count()))]
        )
        if cfg.metrics.enabled:
            try:
                observer.serve_http(cfg.metrics)
            except BaseException:
                running.stop(0)
                raise
    running.refresh_health()
    running.start_watcher()
    log.info("agent %s listening on port %d", cfg.provider, server.port)
    return running


def _evaluation_binding(setup: AgentSetup, node_id: str) -> ServiceBinding:
    """Full-coverage evaluation (``provider_agent.evaluation``) on the agent's own data store."""
    from xinrong.index import default_index
    from xinrong.provider_agent.evaluation import AgentEvaluation
    from xinrong.provider_agent.evaluation_servicer import SERVICE_NAME as EVALUATION_SERVICE_NAME
    from xinrong.provider_agent.evaluation_servicer import AgentEvaluationServicer
    from xinrong.v1 import evaluation_pb2_grpc

    cfg = setup.config
    evaluation = AgentEvaluation(
        provider=cfg.provider,
        credentials=setup.credentials,
        catalog=setup.catalog,
        index=default_index(),
        db=cfg.db,
        max_clock_skew_seconds=cfg.max_clock_skew_seconds,
    )
    servicer = AgentEvaluationServicer(evaluation, node_id)
    return ServiceBinding(
        EVALUATION_SERVICE_NAME,
        lambda s: evaluation_pb2_grpc.add_EvaluationAgentServiceServicer_to_server(servicer, s),
        allowed_roles=frozenset({"node"}),
    )


def _matching_binding(agent: ProviderAgent, node_id: str, skew: float) -> ServiceBinding:
    """Product matching (``provider_agent.matching``) over the agent's own consent checks and data."""
    from xinrong.provider_agent.matching import AgentMatching
    from xinrong.provider_agent.matching_servicer import SERVICE_NAME as MATCHING_SERVICE_NAME
    from xinrong.provider_agent.matching_servicer import AgentMatchingServicer
    from xinrong.v1 import products_pb2_grpc

    servicer = AgentMatchingServicer(AgentMatching(agent, clock=agent.clock, skew=skew), node_id)
    return ServiceBinding(
        MATCHING_SERVICE_NAME,
        lambda s: products_pb2_grpc.add_MatchingAgentServiceServicer_to_server(servicer, s),
        allowed_roles=frozenset({"node"}),
    )


def observe_agent(observer: Observer, running: RunningAgent) -> None:
    """The agent's own gauges: readiness and the joint-modeling jobs it holds."""
    observer.gauges.add(
        "xinrong_agent_serving", "1 while health says SERVING", (), lambda: [((), 1.0 if running.ready else 0.0)]
    )


def write_port_file(path: Path, port: int) -> None:
    """Atomically, so a watcher never reads a half-written number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def serve(setup: AgentSetup, *, port_file: Path | None = None, metrics_port_file: Path | None = None) -> int:
    """Serve until SIGTERM / SIGINT, then stop gracefully. Returns an exit code."""
    running = start_agent(setup)
    try:
        running.server.install_signal_handlers()
        settle_after_start()
        if metrics_port_file is not None and running.observer is not None and running.observer.metrics_port:
            write_port_file(metrics_port_file, running.observer.metrics_port)
        if port_file is not None:
            write_port_file(port_file, running.port)
        period = running.agent.info()
        state = f"serving period {period.data_as_of}" if period.data_as_of else "NOT_SERVING until the first import"
        print(f"agent {period.provider} listening on port {running.port}, {state}", flush=True)
        running.wait()
    finally:
        running.stop()
    return 0
