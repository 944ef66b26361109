"""The node's registry of modeling jobs: who owns each, its state on disk, and how a failure is recorded.

``JobRegistry`` holds the jobs in memory (a job's HE key and coordinator
live only here, and only while it trains) and in the node's database
(``xinrong.node.modeling_store``), checks that only a job's institution
drives or reads it, fans calls out to the job's agents, and turns any
failure of a step into a FAILED job with an audit entry and a precise
status for the bank. ``xinrong.node.modeling`` builds the hub on it:
creation and PSI there, training in ``modeling_training``, scoring in
``modeling_scoring``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from xinrong import ids
from xinrong.errors import Reason, XinrongError
from xinrong.keys.binding import VerifiedBinding
from xinrong.modeling.he.base import HESecret
from xinrong.modeling.vlr.errors import ProtocolViolation, VlrError
from xinrong.modeling.vlr.node import NodeCoordinator
from xinrong.node import modeling_store as store
from xinrong.node.audit import AuditEvent, Decision
from xinrong.node.modeling_links import AgentModelingChannels, AgentStepError, Observer, WireMeter, call_agent
from xinrong.node.service import NodeCore
from xinrong.rpc.auth import Peer
from xinrong.rpc.errors import RemoteError
from xinrong.v1 import modeling_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

INSTITUTION = "institution"
# OpenJob waits this long for an agent that is (re)connecting; the call itself then
# gets the full step deadline, since opening a job reads the provider's dataset
# (minutes for a large one from a cold page cache: issue 10, A15).
OPEN_TIMEOUT_SECONDS = 10.0
# Telling an agent to drop an expired job: a small call, in the background.
ABORT_TIMEOUT_SECONDS = 5.0


def now_ms(now: float) -> int:
    return int(now * 1000)


@dataclass
class Job:
    """A job the node holds in memory (``coordinator`` and the key only while training)."""

    record: store.JobRecord
    bank: VerifiedBinding | None
    he_params: dict[str, Any]
    meter: WireMeter = field(default_factory=WireMeter)
    lock: threading.RLock = field(default_factory=threading.RLock)
    keygen: Future[HESecret] | None = None
    coordinator: NodeCoordinator | None = None
    aligned_rows: int = 0
    job_start: bytes = b""
    # Lease: when the job's institution last drove or read it (node clock).
    touched: float = 0.0

    @property
    def job_id(self) -> str:
        return self.record.job_id

    @property
    def providers(self) -> tuple[str, ...]:
        return self.record.providers

    def drop_key(self) -> None:
        """Forget the HE secret key and the coordinator's thread pool."""
        if self.coordinator is not None:
            self.coordinator.close()
        self.coordinator = None
        self.keygen = None


class JobRegistry:
    """Jobs by id; every public method of the hub takes the certified caller first."""

    def __init__(
        self,
        core: NodeCore,
        channels: AgentModelingChannels,
        *,
        observer: Observer | None = None,
    ) -> None:
        self._core = core
        self._config = core.config
        self._channels = channels
        self._timeout = core.config.modeling_step_timeout_seconds
        self._observer = observer
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._keygen = ThreadPoolExecutor(max_workers=1, thread_name_prefix="he-keygen")
        self._fanout = ThreadPoolExecutor(
            max_workers=max(4, 2 * len(channels.providers)), thread_name_prefix="modeling"
        )

    # -- lifecycle ------------------------------------------------------------

    def load(self) -> int:
        """At start: every job left unfinished by a previous process is FAILED for good (the key is gone)."""
        now = self._core.clock()
        stale = store.unfinished(self._core.db.query)
        if stale:
            with self._core.db.transaction() as tx:
                for record in stale:
                    store.save(tx, record.with_state(store.FAILED, now_ms(now), reason=store.RESTARTED_REASON))
                    self._core.audit.append(
                        tx,
                        self._event(
                            "node",
                            self._core.credentials.party_id,
                            "ModelJobFail",
                            Decision.FAILED,
                            record.job_id,
                            record.providers,
                            Reason.JOB_FAILED.value,
                        ),
                        now_ms(now),
                    )
            log.warning("%d modeling jobs were unfinished at the last stop and are now FAILED", len(stale))
        return len(stale)

    @property
    def connected_providers(self) -> frozenset[str]:
        """Providers the node has a modeling channel to: a job naming any other cannot run."""
        return self._channels.providers

    def jobs_by_state(self) -> dict[str, int]:
        """How many jobs are held in memory, by state (for metrics)."""
        with self._lock:
            states = [str(j.record.state) for j in self._jobs.values()]
        counts: dict[str, int] = {}
        for state in states:
            counts[state] = counts.get(state, 0) + 1
        return counts

    def expire_idle(self) -> int:
        """Jobs whose lease ran out (nobody drove them for ``modeling_job_idle_seconds``) leave memory.

        A CREATED or RUNNING job becomes FAILED with the reason and an audit
        entry; any job's HE key is dropped (so a FAILED one can no longer be
        resumed). A job whose lock is held is running a step and is not idle.
        Run before every CreateJob, so abandoned jobs never block new ones,
        and by the node's maintenance loop (every ``revocation_retry_seconds``),
        so a lease runs out on time even when nobody creates jobs. The job's
        agents are told (``AgentModelingService.AbortJob``, in the background,
        best effort) so they free its training state too.
        """
        now = self._core.clock()
        idle = self._config.modeling_job_idle_seconds
        with self._lock:
            stale = [j for j in self._jobs.values() if j.record.state != store.SUCCEEDED and now - j.touched > idle]
        expired = 0
        for job in stale:
            if not job.lock.acquire(blocking=False):
                continue
            try:
                if now - job.touched <= idle:
                    continue
                if job.record.state in (store.CREATED, store.RUNNING):
                    reason = f"expired: not driven for more than {idle:g} s (lease ran out)"
                    self._save(
                        job,
                        store.FAILED,
                        reason=reason,
                        audit=self._event(
                            "node",
                            self._core.credentials.party_id,
                            "ModelJobExpire",
                            Decision.FAILED,
                            job.job_id,
                            job.providers,
                            Reason.JOB_FAILED.value,
                        ),
                    )
                    log.warning("modeling job %s expired after %.0f s idle", job.job_id, now - job.touched)
                    self._abort_at_agents(job.job_id, job.providers, reason)
                job.drop_key()
                expired += 1
            finally:
                job.lock.release()
            with self._lock:
                if self._jobs.get(job.job_id) is job:
                    del self._jobs[job.job_id]
        return expired

    def _abort_at_agents(self, job_id: str, providers: tuple[str, ...], reason: str) -> None:
        """Tell each of the job's agents to drop it; off the caller's thread, failures only logged
        (an agent that is down has lost the job's memory state anyway, and refuses to resume it)."""

        def abort(provider: str) -> None:
            try:
                call_agent(
                    self._channels.stub(provider),
                    "AbortJob",
                    modeling_pb2.AgentAbortJobRequest(job_id=job_id, reason=reason),
                    provider=provider,
                    step="AbortJob",
                    timeout=min(ABORT_TIMEOUT_SECONDS, self._timeout),
                    meter=None,
                    observer=self._observer,
                )
            except Exception as exc:
                log.warning("modeling job %s: agent %s was not told of the abort (%s)", job_id, provider, exc)

        for provider in providers:
            try:
                self._fanout.submit(abort, provider)
            except RuntimeError:  # the node is stopping
                return

    def close(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            job.drop_key()
        self._keygen.shutdown(wait=False, cancel_futures=True)
        self._fanout.shutdown(wait=False, cancel_futures=True)
        self._channels.close()

    def count_bank_bytes(self, job_id: str, party: str, n: int) -> None:
        """The servicer reports each bank message pair's serialized size here."""
        job = self._jobs.get(job_id)
        if job is not None:
            job.meter.add(party, n)

    # -- helpers --------------------------------------------------------------

    @staticmethod
    def _event(
        role: str,
        caller_id: str,
        method: str,
        decision: Decision,
        job_id: str,
        providers: Sequence[str] = (),
        reason: str = "",
        enterprise: str = "",
        consent_id: str = "",
    ) -> AuditEvent:
        return AuditEvent(
            caller_role=role,
            caller_id=caller_id,
            method=method,
            decision=decision,
            reason=reason,
            request_id=job_id,
            providers=tuple(sorted(providers)),
            enterprise=enterprise,
            consent_id=consent_id,
        )

    def _audit(self, event: AuditEvent) -> None:
        now = self._core.clock()
        with self._core.db.transaction() as tx:
            self._core.audit.append(tx, event, now_ms(now))

    def _refuse(
        self, caller: Peer, method: str, job_id: str, error: XinrongError, providers: Sequence[str] = ()
    ) -> XinrongError:
        safe_id = ids.safe_request_id(job_id)
        self._audit(
            self._event(caller.role, caller.party_id, method, Decision.REFUSED, safe_id, providers, error.reason.value)
        )
        return error

    def _institution(self, caller: Peer, method: str, job_id: str) -> VerifiedBinding:
        binding = self._core.registry.get(INSTITUTION, caller.party_id) if caller.role == INSTITUTION else None
        if binding is None:
            raise self._refuse(
                caller,
                method,
                job_id,
                XinrongError(
                    f"{caller.role} {caller.party_id} is not a registered institution", reason=Reason.CALLER_NOT_ALLOWED
                ),
            )
        return binding

    def _owned(self, caller: Peer, job_id: str, method: str) -> Job:
        """The caller's job: in memory, or (finished or failed) from the database; a refusal is audited."""
        try:
            return self._find_owned(caller, job_id)
        except XinrongError as exc:
            raise self._refuse(caller, method, job_id, exc) from None

    def _find_owned(self, caller: Peer, job_id: str) -> Job:
        """The caller's job, or the error saying why not (no audit: the caller records the decision)."""
        job = self._jobs.get(job_id)
        record = job.record if job is not None else store.get(self._core.db.query, job_id)
        if record is None:
            shown = job_id if ids.is_request_id(job_id) else "(malformed id)"
            raise XinrongError(f"no job {shown}", reason=Reason.NOT_FOUND, public=f"no modeling job {shown!r}")
        if caller.role != INSTITUTION or record.institution != caller.party_id:
            raise XinrongError(
                f"job {job_id} belongs to {record.institution}",
                reason=Reason.CALLER_NOT_ALLOWED,
                public=f"modeling job {job_id!r} belongs to another institution; only it may drive or read the job",
            )
        if job is None:
            job = Job(record=record, bank=self._core.registry.get(INSTITUTION, record.institution), he_params={})
        job.touched = self._core.clock()
        return job

    def _save(
        self,
        job: Job,
        state: str,
        *,
        reason: str = "",
        epochs_done: int | None = None,
        metadata: dict[str, Any] | None = None,
        audit: AuditEvent | None = None,
    ) -> None:
        now = self._core.clock()
        record = job.record.with_state(state, now_ms(now), reason=reason, epochs_done=epochs_done, metadata=metadata)
        with self._core.db.transaction() as tx:
            store.save(tx, record)
            if audit is not None:
                self._core.audit.append(tx, audit, now_ms(now))
        job.record = record

    def _each(self, providers: Sequence[str], fn: Callable[[str], T]) -> dict[str, T]:
        """Call fn for every provider concurrently; all results, or the first failure in provider order."""
        futures = [(p, self._fanout.submit(fn, p)) for p in providers]
        results: dict[str, T] = {}
        failure: BaseException | None = None
        for provider, future in futures:
            try:
                results[provider] = future.result()
            except BaseException as exc:
                if failure is None or (
                    isinstance(failure, AgentStepError)
                    and failure.unavailable
                    and not (isinstance(exc, AgentStepError) and exc.unavailable)
                ):
                    failure = exc
        if failure is not None:
            raise failure
        return results

    def _call(
        self,
        job: Job,
        provider: str,
        method: str,
        request: Any,
        step: str,
        *,
        wait_for_ready: bool = False,
        timeout: float | None = None,
    ) -> Any:
        if wait_for_ready and not self._channels.reachable(provider, OPEN_TIMEOUT_SECONDS):
            raise AgentStepError(
                provider,
                step,
                RemoteError(grpc.StatusCode.UNAVAILABLE, Reason.PROVIDER_UNAVAILABLE.value, "not reachable"),
            )
        return call_agent(
            self._channels.stub(provider),
            method,
            request,
            provider=provider,
            step=step,
            timeout=timeout or self._timeout,
            meter=job.meter,
            observer=self._observer,
            wait_for_ready=wait_for_ready,
        )

    def _fail(self, job: Job, step: str, exc: BaseException) -> XinrongError:
        """Mark the job FAILED (state, reason, audit) and return the error the bank gets."""
        resumable = job.coordinator is not None
        hint = (
            "restart the failed party, then run `xinrong model train --config <job file> --resume`"
            if resumable
            else "run `xinrong model train` again (without --resume) to start over"
        )
        if isinstance(exc, AgentStepError):
            reason = Reason.PROVIDER_UNAVAILABLE if exc.unavailable else Reason.JOB_FAILED
            what = exc.public_message
        elif isinstance(exc, ProtocolViolation):
            reason, what = Reason.FAILED_PRECONDITION, f"protocol violation at step {step}: {exc.detail}"
        elif isinstance(exc, VlrError):
            reason, what = Reason.JOB_FAILED, f"step {step}: {exc.detail}"
        elif isinstance(exc, XinrongError):
            reason, what = (
                (exc.reason if exc.reason is not Reason.INTERNAL else Reason.JOB_FAILED),
                f"step {step}: {exc.public_message}",
            )
        else:
            log.exception("modeling job %s: internal error at %s", job.job_id, step, exc_info=exc)
            reason, what = Reason.JOB_FAILED, f"internal error at the node at step {step}"
        failure = f"{what}"
        try:
            self._save(
                job,
                store.FAILED,
                reason=failure,
                audit=self._event(
                    INSTITUTION,
                    job.record.institution,
                    "ModelJobFail",
                    Decision.FAILED,
                    job.job_id,
                    job.providers,
                    reason.value,
                ),
            )
        except Exception:  # the job is failed in memory regardless; the bank still gets the real cause
            log.exception("could not record the failure of job %s", job.job_id)
        log.warning("modeling job %s FAILED at %s: %s", job.job_id, step, reason.value)
        return XinrongError(failure, reason=reason, public=f"modeling job {job.job_id} FAILED: {failure}; {hint}")

    def _require(self, job: Job, *states: str) -> None:
        if job.record.state not in states:
            detail = f" ({job.record.failure_reason})" if job.record.failure_reason else ""
            raise XinrongError(
                f"job {job.job_id} is {job.record.state}",
                reason=Reason.FAILED_PRECONDITION,
                public=f"modeling job {job.job_id} is {job.record.state}{detail}; this step needs it "
                f"{' or '.join(states)}",
            )

    def _step(self, caller: Peer, job_id: str, step: str, fn: Callable[[Job, NodeCoordinator], T]) -> T:
        """Run one training step under the job's lock; any failure fails the job."""
        job = self._owned(caller, job_id, step)
        with job.lock:
            self._require(job, store.RUNNING)
            coordinator = job.coordinator
            if coordinator is None:
                raise XinrongError(
                    "no coordinator", reason=Reason.FAILED_PRECONDITION, public=f"modeling job {job_id} is not training"
                )
            try:
                return fn(job, coordinator)
            except Exception as exc:
                raise self._fail(job, step, exc) from None
