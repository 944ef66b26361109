"""The node's modeling hub: a registry of joint-modeling jobs, each a ``NodeCoordinator``.

What the node does for a job (``xinrong.modeling.vlr`` has the protocol; this is the
transport and the bookkeeping around it):

* **Create.** Only a registered institution may create a job, and only it
  may drive the job afterwards (every RPC checks the caller's certificate
  against the job's institution). The node opens the job at each provider
  agent, handing it the institution's CA-signed binding (the agent checks it
  against the CA and its own ``allowed_institutions``), and starts
  generating the job's fresh HE key in the background, so key generation
  overlaps the PSI.
* **PSI.** The node relays the bank's blinded ids to every provider and the
  providers' blinded answers back, then each provider's selection; it sees
  blinded curve points and row positions only.
* **Training.** ``NodeCoordinator`` with ``GrpcProviderLink``s (providers are
  called in parallel: separate processes, so their HE work overlaps). The
  secret key never leaves this process and is never written anywhere; it is
  dropped when the job finishes.
* **Failure.** Any error during a step fails the job: state FAILED, the
  failing provider and step recorded, an audit entry, and a precise status
  to the bank (UNAVAILABLE / PROVIDER_UNAVAILABLE when a provider did not
  answer, ABORTED / JOB_FAILED when it refused or the protocol failed).
  Nothing is half-written: parties write their model shares only when the
  job finishes, atomically, and the node writes the model metadata then.
* **Resume.** While the node process lives, a FAILED job keeps its
  coordinator and key: ``ResumeJob`` re-opens it at every agent, sets every
  provider up again and asks for their checkpoints; the bank picks the
  newest epoch all parties share and ``RestoreJob`` restores it. After a
  node restart the key is gone and the job can only start from scratch:
  ``fail_interrupted`` marks such jobs FAILED with that explanation.
* **Scoring.** Providers encrypt partial scores under the *bank's* key
  (signed by the bank, checked by each provider); the node only adds
  ciphertexts (``xinrong.modeling.scoring.aggregate``). Scoring enterprises needs
  each enterprise's consent to the bank for ``credit_scoring``: the node
  checks it as Verify does (uniform denial, grantee, state, validity,
  scope, uses, budgets), counts a use, and reports per enterprise why a
  refused one was refused.

Logs and audit entries hold ids, states, reasons and sizes, never a value,
a ciphertext or a gradient. ``observer`` (tests only) receives every
serialized message the hub handles, to prove exactly that.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from xinrong import uscc as uscc_mod
from xinrong.consent import check_consent_use
from xinrong.errors import ConsentError, Reason, ValidationError, XinrongError
from xinrong.keys.binding import VerifiedBinding
from xinrong.modeling import scoring
from xinrong.modeling.he.base import SCHEMES, HESecret, keygen, load_public, provider_public_bytes
from xinrong.modeling.serde import ScoringKey, SubjectOutcome, scoring_key_to_proto
from xinrong.modeling.vlr.errors import ProtocolViolation, VlrError
from xinrong.modeling.vlr.messages import (
    BackwardRequest,
    EpochEnd,
    FinishRequest,
    ForwardRequest,
    JobStart,
    LossRequest,
    RestoreRequest,
    ResumeQuery,
)
from xinrong.modeling.vlr.node import NodeCoordinator
from xinrong.modeling.vlr_state import check_id
from xinrong.modeling.vlr_wire import decode_for_job, encode
from xinrong.node import modeling_store as store
from xinrong.node.audit import AuditEvent, Decision
from xinrong.node.limits import utc_day
from xinrong.node.modeling_links import (
    AgentModelingChannels,
    AgentStepError,
    GrpcProviderLink,
    Observer,
    WireMeter,
    call_agent,
)
from xinrong.node.service import NodeCore
from xinrong.rpc.auth import Peer
from xinrong.v1 import common_pb2, modeling_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

INSTITUTION = "institution"
MAX_PROVIDERS = 16
MAX_PSI_IDS = 1_000_000  # 32 bytes per blinded id: a 32 MB request, a 64 MB response at most
PSI_POINT_BYTES = 32
PSI_HEADER_BYTES = 64
MAX_SCORE_ROWS = 200_000  # per ScoreJobRows call (the bank chunks larger sets)
MAX_SCORE_SUBJECTS = 20_000  # the agents get every signed consent (~0.6 kB each): 12 MB at most
OPEN_TIMEOUT_SECONDS = 10.0  # OpenJob waits this long for an agent that is (re)connecting
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_HE_PARAM_KEYS = {
    "ckks": {"poly_modulus_degree", "coeff_mod_bit_sizes", "value_bound"},
    "paillier": {"n_bits"},
    "plain": {"max_degree"},
}


def _now_ms(now: float) -> int:
    return int(now * 1000)


@dataclass
class _Job:
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


ScoringKeyInput = ScoringKey  # the bank's signed scoring key, as the servicer hands it over


@dataclass(frozen=True)
class ScoreResult:
    request_id: str
    outcomes: tuple[SubjectOutcome, ...]
    aggregate: bytes


class ModelingHub:
    """Jobs by id; every public method takes the certified caller first."""

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
        self._jobs: dict[str, _Job] = {}
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
                    store.save(tx, record.with_state(store.FAILED, _now_ms(now), reason=store.RESTARTED_REASON))
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
                        _now_ms(now),
                    )
            log.warning("%d modeling jobs were unfinished at the last stop and are now FAILED", len(stale))
        return len(stale)

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
            self._core.audit.append(tx, event, _now_ms(now))

    def _refuse(
        self, caller: Peer, method: str, job_id: str, error: XinrongError, providers: Sequence[str] = ()
    ) -> XinrongError:
        safe_id = job_id if _REQUEST_ID.match(job_id) else ""
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

    def _owned(self, caller: Peer, job_id: str, method: str) -> _Job:
        """The caller's job: in memory, or (finished or failed) from the database."""
        job = self._jobs.get(job_id)
        record = job.record if job is not None else store.get(self._core.db.query, job_id)
        if record is None:
            shown = job_id if _REQUEST_ID.match(job_id) else "(malformed id)"
            raise self._refuse(
                caller,
                method,
                job_id,
                XinrongError(f"no job {shown}", reason=Reason.NOT_FOUND, public=f"no modeling job {shown!r}"),
            )
        if caller.role != INSTITUTION or record.institution != caller.party_id:
            raise self._refuse(
                caller,
                method,
                job_id,
                XinrongError(
                    f"job {job_id} belongs to {record.institution}",
                    reason=Reason.CALLER_NOT_ALLOWED,
                    public=f"modeling job {job_id!r} belongs to another institution; only it may drive or read the job",
                ),
            )
        if job is None:
            job = _Job(record=record, bank=self._core.registry.get(INSTITUTION, record.institution), he_params={})
        return job

    def _save(
        self,
        job: _Job,
        state: str,
        *,
        reason: str = "",
        epochs_done: int | None = None,
        metadata: dict[str, Any] | None = None,
        audit: AuditEvent | None = None,
    ) -> None:
        now = self._core.clock()
        record = job.record.with_state(state, _now_ms(now), reason=reason, epochs_done=epochs_done, metadata=metadata)
        with self._core.db.transaction() as tx:
            store.save(tx, record)
            if audit is not None:
                self._core.audit.append(tx, audit, _now_ms(now))
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
        job: _Job,
        provider: str,
        method: str,
        request: Any,
        step: str,
        *,
        wait_for_ready: bool = False,
        timeout: float | None = None,
    ) -> Any:
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

    def _fail(self, job: _Job, step: str, exc: BaseException) -> XinrongError:
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

    def _require(self, job: _Job, *states: str) -> None:
        if job.record.state not in states:
            detail = f" ({job.record.failure_reason})" if job.record.failure_reason else ""
            raise XinrongError(
                f"job {job.job_id} is {job.record.state}",
                reason=Reason.FAILED_PRECONDITION,
                public=f"modeling job {job.job_id} is {job.record.state}{detail}; this step needs it "
                f"{' or '.join(states)}",
            )

    def _step(self, caller: Peer, job_id: str, step: str, fn: Callable[[_Job, NodeCoordinator], T]) -> T:
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

    # -- create and PSI ---------------------------------------------------------

    def _he_params(self, backend: str, text: str) -> dict[str, Any]:
        if backend not in SCHEMES:
            raise ValidationError(f"backend must be one of {SCHEMES}")
        if backend == "plain" and not self._config.modeling_allow_insecure:
            raise XinrongError(
                "plain backend refused",
                reason=Reason.FAILED_PRECONDITION,
                public="this node refuses the plain (unencrypted) backend; use ckks or paillier",
            )
        try:
            params = json.loads(text) if text else {}
        except json.JSONDecodeError:
            raise ValidationError("he_params_json is not JSON") from None
        if not isinstance(params, dict):
            raise ValidationError("he_params_json must be a JSON object")
        unknown = set(params) - _HE_PARAM_KEYS[backend]
        if unknown:
            raise ValidationError(
                f"unknown {backend} parameters {sorted(unknown)}; allowed: {sorted(_HE_PARAM_KEYS[backend])}",
                public=f"unknown {backend} parameters {sorted(unknown)}",
            )
        try:
            if backend == "ckks":
                from xinrong.modeling.he.ckks import CKKSParams

                if "coeff_mod_bit_sizes" in params:
                    params["coeff_mod_bit_sizes"] = tuple(int(b) for b in params["coeff_mod_bit_sizes"])
                CKKSParams(**params).validate()
            elif backend == "paillier":
                bits = int(params.get("n_bits", 2048))
                if bits < 2048:
                    if not self._config.modeling_allow_insecure:
                        raise ValueError("Paillier keys need at least 2048 bits")
                    params["allow_small_key"] = True
                params["n_bits"] = bits
            elif "max_degree" in params:  # otherwise the backend's default
                degree = int(params["max_degree"])
                if not 1 <= degree <= 15:
                    raise ValueError("plain max_degree must be within 1..15")
                params["max_degree"] = degree
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"bad {backend} parameters: {exc}", public=f"bad {backend} parameters: {exc}"
            ) from None
        return params

    def create_job(
        self, caller: Peer, job_id: str, provider_ids: Sequence[str], backend: str, he_params_json: str
    ) -> tuple[store.JobRecord, list[common_pb2.SignedPartyBinding]]:
        method = "ModelJobCreate"
        bank = self._institution(caller, method, job_id)
        providers = tuple(provider_ids)
        try:
            check_id(job_id, "job id")
            if not providers or len(providers) > MAX_PROVIDERS or len(set(providers)) != len(providers):
                raise ValidationError(f"a job needs 1..{MAX_PROVIDERS} distinct providers")
            unroutable = sorted(set(providers) - self._channels.providers)
            if unroutable:
                raise XinrongError(
                    f"no agent configured for {unroutable}",
                    reason=Reason.PROVIDER_UNAVAILABLE,
                    public=f"providers {unroutable} are not configured at this node",
                )
            bindings = []
            for p in providers:
                b = self._core.registry.get("provider", p)
                if b is None:
                    raise XinrongError(
                        f"no binding for {p}",
                        reason=Reason.PROVIDER_UNAVAILABLE,
                        public=f"provider {p} is not registered at this node",
                    )
                bindings.append(b.signed)
            he_params = self._he_params(backend, he_params_json)
        except ValueError as exc:
            raise self._refuse(caller, method, job_id, ValidationError(str(exc), public=str(exc)), providers) from None
        except XinrongError as exc:
            raise self._refuse(caller, method, job_id, exc, providers) from None
        now = self._core.clock()
        record = store.JobRecord(
            job_id=job_id,
            institution=caller.party_id,
            providers=providers,
            backend=backend,
            state=store.CREATED,
            failure_reason="",
            epochs_done=0,
            created_ms=_now_ms(now),
            updated_ms=_now_ms(now),
        )
        job = _Job(record=record, bank=bank, he_params=he_params)
        with self._lock:
            try:
                existing = self._jobs.get(job_id)
                previous = existing.record if existing is not None else store.get(self._core.db.query, job_id)
                if previous is not None:
                    if previous.institution != caller.party_id:
                        raise XinrongError(
                            f"job id {job_id} belongs to {previous.institution}",
                            reason=Reason.CALLER_NOT_ALLOWED,
                            public=f"job id {job_id!r} is taken by another institution",
                        )
                    if previous.state == store.SUCCEEDED:
                        raise XinrongError(
                            "job finished",
                            reason=Reason.FAILED_PRECONDITION,
                            public=f"job {job_id!r} already produced a model; choose a new job id",
                        )
                    if previous.state != store.FAILED and existing is not None:
                        raise XinrongError(
                            "job is live",
                            reason=Reason.FAILED_PRECONDITION,
                            public=f"job {job_id!r} is {previous.state}; resume it (--resume) or choose a new job id",
                        )
                live = sum(1 for j in self._jobs.values() if j.record.state in (store.CREATED, store.RUNNING))
                if live >= self._config.modeling_max_jobs:
                    raise XinrongError(
                        "too many jobs",
                        reason=Reason.FAILED_PRECONDITION,
                        public=f"the node runs {live} modeling jobs already (its limit); try later",
                    )
            except XinrongError as exc:
                raise self._refuse(caller, method, job_id, exc, providers) from None
            if existing is not None:
                existing.drop_key()
            # Finished jobs live on in the database; only unfinished ones need memory.
            for done in [k for k, j in self._jobs.items() if j.record.state == store.SUCCEEDED]:
                del self._jobs[done]
            self._jobs[job_id] = job
        with job.lock:
            request = modeling_pb2.AgentOpenJobRequest(job_id=job_id, institution_binding=bank.signed, backend=backend)
            try:
                self._each(
                    providers,
                    lambda p: self._call(
                        job,
                        p,
                        "OpenJob",
                        request,
                        "OpenJob",
                        wait_for_ready=True,
                        timeout=min(self._timeout, OPEN_TIMEOUT_SECONDS),
                    ),
                )
            except XinrongError as exc:
                with self._lock:
                    self._jobs.pop(job_id, None)
                raise self._refuse(caller, method, job_id, exc, providers) from None
            job.keygen = self._keygen.submit(self._generate_key, job_id, backend, he_params)
            self._save(
                job,
                store.CREATED,
                audit=self._event(caller.role, caller.party_id, method, Decision.ALLOWED, job_id, providers),
            )
        log.info(
            "modeling job %s created by %s: %d providers, backend %s", job_id, caller.party_id, len(providers), backend
        )
        return job.record, bindings

    @staticmethod
    def _generate_key(job_id: str, backend: str, params: dict[str, Any]) -> HESecret:
        started = time.perf_counter()
        secret = keygen(backend, **params)
        log.info("modeling job %s: %s key generated in %.2fs", job_id, backend, time.perf_counter() - started)
        return secret

    def exchange_psi(self, caller: Peer, job_id: str, provider: str, body: bytes) -> bytes:
        """Relay the bank's blinded ids to one provider and its answer back.

        One call per provider (not under the job's lock, so the bank's calls
        to several providers run concurrently): each message stays under the
        size limit, and the providers blind in parallel.
        """
        job = self._owned(caller, job_id, "ExchangePsi")
        self._require(job, store.CREATED)
        if provider not in job.providers:
            raise ValidationError(f"{provider!r} is not a provider of job {job_id}")
        if len(body) > PSI_HEADER_BYTES + PSI_POINT_BYTES * MAX_PSI_IDS:
            raise ValidationError(
                "PSI request too large",
                public=f"a PSI over more than {MAX_PSI_IDS:,} bank ids "
                "exceeds the 64 MiB message limit; split the bank's population into several jobs",
            )
        request = modeling_pb2.AgentRespondPsiRequest(job_id=job_id, body=body)
        try:
            answer = self._call(job, provider, "RespondPsi", request, "RespondPsi")
        except Exception as exc:
            with job.lock:
                raise self._fail(job, "ExchangePsi", exc) from None
        log.info("modeling job %s: PSI request of %d bytes relayed to %s", job_id, len(body), provider)
        return bytes(answer.body)

    def select_psi(self, caller: Peer, job_id: str, selections: dict[str, bytes]) -> int:
        job = self._owned(caller, job_id, "SelectPsi")
        with job.lock:
            self._require(job, store.CREATED)
            if set(selections) != set(job.providers):
                raise ValidationError("one selection per provider of the job expected")
            try:
                counts = self._each(
                    job.providers,
                    lambda p: self._call(
                        job,
                        p,
                        "SelectPsi",
                        modeling_pb2.AgentSelectPsiRequest(job_id=job_id, body=selections[p]),
                        "SelectPsi",
                    ),
                )
                sizes = {int(r.aligned_rows) for r in counts.values()}
                if len(sizes) != 1 or 0 in sizes:
                    raise VlrError("providers aligned different or no rows")
            except Exception as exc:
                raise self._fail(job, "SelectPsi", exc) from None
            job.aligned_rows = sizes.pop()
            return job.aligned_rows

    # -- training -----------------------------------------------------------------

    def start_training(self, caller: Peer, job_id: str, body: bytes) -> bytes:
        job = self._owned(caller, job_id, "StartTraining")
        msg = decode_for_job(JobStart, body, job_id)
        with job.lock:
            self._require(job, store.CREATED)
            if msg.bank_id != caller.party_id:
                raise ValidationError("JobStart names another bank")
            if tuple(sorted(msg.provider_ids)) != tuple(sorted(job.providers)):
                raise ValidationError("JobStart names other providers than the job")
            if job.aligned_rows == 0 or msg.n_rows != job.aligned_rows:
                raise ValidationError("JobStart row count differs from the PSI's aligned rows")
            try:
                if job.keygen is None:
                    raise VlrError("no key generation started")
                secret = job.keygen.result(timeout=self._timeout)
                links = [
                    GrpcProviderLink(
                        p,
                        self._channels.stub(p),
                        job_id=job_id,
                        timeout=self._timeout,
                        meter=job.meter,
                        observer=self._observer,
                        executor=self._fanout,
                    )
                    for p in msg.provider_ids
                ]
                job.coordinator = NodeCoordinator(
                    secret, links, public_for_providers=provider_public_bytes(secret), parallel=len(links) > 1
                )
                started = job.coordinator.start(msg)
            except Exception as exc:
                raise self._fail(job, "StartTraining", exc) from None
            job.job_start = body
            self._save(job, store.RUNNING)
            return encode(started)

    def forward(self, caller: Peer, job_id: str, body: bytes) -> bytes:
        self._owned(caller, job_id, "Forward")  # who asks comes before what is asked
        msg = decode_for_job(ForwardRequest, body, job_id)
        step = f"Forward (epoch {msg.epoch}, batch {msg.batch})"
        return self._step(caller, job_id, step, lambda job, c: encode(c.forward(msg)))

    def backward(self, caller: Peer, job_id: str, body: bytes) -> bytes:
        self._owned(caller, job_id, "Backward")  # who asks comes before what is asked
        msg = decode_for_job(BackwardRequest, body, job_id)
        step = f"Backward (epoch {msg.epoch}, batch {msg.batch})"
        return self._step(caller, job_id, step, lambda job, c: encode(c.backward(msg)))

    def compute_loss(self, caller: Peer, job_id: str, body: bytes) -> bytes:
        self._owned(caller, job_id, "ComputeLoss")  # who asks comes before what is asked
        msg = decode_for_job(LossRequest, body, job_id)
        step = f"ComputeLoss (epoch {msg.epoch}, batch {msg.batch})"
        return self._step(caller, job_id, step, lambda job, c: encode(c.loss(msg)))

    def end_epoch(self, caller: Peer, job_id: str, body: bytes) -> bytes:
        self._owned(caller, job_id, "EndEpoch")  # who asks comes before what is asked
        msg = decode_for_job(EpochEnd, body, job_id)

        def run(job: _Job, c: NodeCoordinator) -> bytes:
            ack = c.end_epoch(msg)
            self._save(job, store.RUNNING, epochs_done=msg.epoch)
            return encode(ack)

        return self._step(caller, job_id, f"EndEpoch (epoch {msg.epoch})", run)

    def finish(self, caller: Peer, job_id: str, body: bytes) -> str:
        self._owned(caller, job_id, "FinishJob")  # who asks comes before what is asked
        msg = decode_for_job(FinishRequest, body, job_id)

        def run(job: _Job, c: NodeCoordinator) -> str:
            metadata = c.finish(msg)
            metadata["institution"] = job.record.institution
            metadata["backend"] = job.record.backend
            metadata["created_ms"] = job.record.created_ms
            metadata["finished_ms"] = _now_ms(self._core.clock())
            metadata["wire_bytes"] = job.meter.snapshot()
            text = json.dumps(metadata, sort_keys=True, allow_nan=False)
            self._save(
                job,
                store.SUCCEEDED,
                epochs_done=msg.epochs,
                metadata=json.loads(text),
                audit=self._event(
                    INSTITUTION, caller.party_id, "ModelJobFinish", Decision.ALLOWED, job_id, job.providers
                ),
            )
            job.drop_key()  # the model is finished: the node has no further use for the HE secret key
            log.info("modeling job %s SUCCEEDED after %d epochs", job_id, msg.epochs)
            return text

        return self._step(caller, job_id, "FinishJob", run)

    # -- resume -------------------------------------------------------------------

    def resume(self, caller: Peer, job_id: str, body: bytes) -> tuple[bytes, tuple[int, ...]]:
        job = self._owned(caller, job_id, "ResumeJob")
        if job_id not in self._jobs or job.record.failure_reason == store.RESTARTED_REASON:
            raise XinrongError(
                "job not in memory",
                reason=Reason.FAILED_PRECONDITION,
                public=f"modeling job {job_id} cannot resume: {store.RESTARTED_REASON}",
            )
        msg = decode_for_job(JobStart, body, job_id)
        with job.lock:
            self._require(job, store.FAILED, store.RUNNING)
            coordinator = job.coordinator
            if coordinator is None or not job.job_start:
                raise XinrongError(
                    "no coordinator",
                    reason=Reason.FAILED_PRECONDITION,
                    public=f"modeling job {job_id} failed before training started; run "
                    "`xinrong model train` without --resume to start over",
                )
            if body != job.job_start:
                raise XinrongError(
                    "different JobStart",
                    reason=Reason.FAILED_PRECONDITION,
                    public="a resume must send the job's original JobStart (same data, split and configuration)",
                )
            assert job.bank is not None
            request = modeling_pb2.AgentOpenJobRequest(
                job_id=job_id, institution_binding=job.bank.signed, backend=job.record.backend, resume=True
            )
            try:
                self._each(
                    job.providers,
                    lambda p: self._call(
                        job,
                        p,
                        "OpenJob",
                        request,
                        "OpenJob (resume)",
                        wait_for_ready=True,
                        timeout=min(self._timeout, OPEN_TIMEOUT_SECONDS),
                    ),
                )
                started = coordinator.start(msg)
                epochs = coordinator.resume(ResumeQuery(job_id))
            except Exception as exc:
                raise self._fail(job, "ResumeJob", exc) from None
            self._save(
                job,
                store.RUNNING,
                audit=self._event(
                    INSTITUTION, caller.party_id, "ModelJobResume", Decision.ALLOWED, job_id, job.providers
                ),
            )
            log.info("modeling job %s resumed; providers hold checkpoints of %d epochs", job_id, len(epochs))
            return encode(started), epochs

    def restore(self, caller: Peer, job_id: str, body: bytes) -> int:
        self._owned(caller, job_id, "RestoreJob")  # who asks comes before what is asked
        msg = decode_for_job(RestoreRequest, body, job_id)

        def run(job: _Job, c: NodeCoordinator) -> int:
            c.restore(msg)  # epoch 0: every provider is fresh after the resume's set-up
            self._save(job, store.RUNNING, epochs_done=msg.epoch)
            return msg.epoch

        return self._step(caller, job_id, f"RestoreJob (epoch {msg.epoch})", run)

    # -- scoring ------------------------------------------------------------------

    def _scoring_key(self, key: ScoringKeyInput) -> modeling_pb2.ScoringKey:
        allowed = ("ckks", "paillier", "plain") if self._config.modeling_allow_insecure else ("ckks", "paillier")
        if key.scheme not in allowed or not key.public_key or not key.signature:
            raise ValidationError(f"a signed scoring key of scheme {allowed} is required")
        return scoring_key_to_proto(key)

    def _aggregate(self, job: _Job, key: ScoringKeyInput, payloads: dict[str, bytes]) -> bytes:
        public = load_public(key.scheme, key.public_key)
        return scoring.aggregate(public, [payloads[p] for p in job.providers], min_providers=len(job.providers))

    def score_rows(self, caller: Peer, job_id: str, request_id: str, positions: bytes, key: ScoringKeyInput) -> bytes:
        job = self._owned(caller, job_id, "ScoreJobRows")
        self._require(job, store.SUCCEEDED)
        if not _REQUEST_ID.match(request_id):
            raise ValidationError("request id missing or malformed")
        if len(positions) % 4 or not 0 < len(positions) // 4 <= MAX_SCORE_ROWS:
            raise ValidationError(f"positions must be 1..{MAX_SCORE_ROWS:,} uint32 values")
        request = modeling_pb2.AgentScoreRowsRequest(
            job_id=job_id, request_id=request_id, positions=positions, scoring_key=self._scoring_key(key)
        )
        payloads = self._each(
            job.providers, lambda p: bytes(self._call(job, p, "ScoreRows", request, "ScoreRows").payload)
        )
        try:
            aggregate = self._aggregate(job, key, payloads)
        except ValueError as exc:
            raise XinrongError(
                f"aggregate failed: {exc}",
                reason=Reason.FAILED_PRECONDITION,
                public=f"provider contributions do not add up: {exc}",
            ) from None
        self._audit(
            self._event(
                caller.role,
                caller.party_id,
                "ModelScoreRows",
                Decision.ALLOWED,
                f"{job_id}:{request_id}"[:128],
                job.providers,
            )
        )
        log.info("modeling job %s: scored %d rows (request %s)", job_id, len(positions) // 4, request_id)
        return aggregate

    def score_enterprises(
        self,
        caller: Peer,
        job_id: str,
        request_id: str,
        requested_at: int,
        subjects: Sequence[tuple[str, str]],
        key: ScoringKeyInput,
    ) -> ScoreResult:
        """Consent-checked private scoring; a refused subject is reported, never silently scored."""
        method = "ScoreEnterprises"
        now = self._core.clock()
        audience = self._institution(caller, method, job_id)
        safe_request = request_id if _REQUEST_ID.match(request_id) else ""
        if not safe_request:
            raise self._refuse(caller, method, job_id, ValidationError("request id missing or malformed"))
        if abs(now - requested_at) > self._config.max_clock_skew_seconds:
            raise self._refuse(
                caller,
                method,
                job_id,
                XinrongError(f"requested_at off by {now - requested_at:.0f}s", reason=Reason.REQUEST_STALE),
            )
        job = self._owned(caller, job_id, method)
        try:
            self._require(job, store.SUCCEEDED)
            if not 1 <= len(subjects) <= MAX_SCORE_SUBJECTS:
                raise ValidationError(f"1..{MAX_SCORE_SUBJECTS:,} enterprises per request")
            if len({u for u, _ in subjects}) != len(subjects):
                raise ValidationError("an enterprise appears twice in one request")
            scoring_key = self._scoring_key(key)
            unroutable = sorted(set(job.providers) - self._channels.providers)
            if unroutable:
                raise XinrongError(f"no agent for {unroutable}", reason=Reason.PROVIDER_UNAVAILABLE)
        except XinrongError as exc:
            raise self._refuse(caller, method, job_id, exc) from None
        core = self._core
        day = utc_day(now)
        ts_ms = _now_ms(now)
        outcomes: list[SubjectOutcome] = []
        admitted: list[tuple[str, Any]] = []  # (uscc, consent record)
        with core.db.lock:
            if core.replay.seen(request_id):
                raise self._refuse(
                    caller, method, job_id, XinrongError("request id seen before", reason=Reason.REQUEST_REPLAYED)
                )
            with core.db.transaction() as tx:
                core.replay.record(tx, request_id, now)
                for uscc, consent_id in subjects:
                    safe_uscc = uscc if len(uscc) == 18 and uscc_mod.is_valid(uscc) else ""
                    safe_consent = consent_id if _REQUEST_ID.match(consent_id or "-") and consent_id else ""
                    try:
                        record = self._check_subject(job, audience, uscc, safe_uscc, consent_id, now, day)
                    except XinrongError as refusal:
                        outcomes.append(SubjectOutcome(uscc, False, refusal.reason.value, refusal.public_message))
                        core.audit.append(
                            tx,
                            self._event(
                                caller.role,
                                caller.party_id,
                                method,
                                Decision.REFUSED,
                                safe_request,
                                job.providers,
                                refusal.reason.value,
                                safe_uscc,
                                safe_consent,
                            ),
                            ts_ms,
                        )
                        continue
                    core.consents.consume(tx, record, day)
                    core.budget.consume(tx, uscc, day)
                    core.audit.append(
                        tx,
                        self._event(
                            caller.role,
                            caller.party_id,
                            method,
                            Decision.ALLOWED,
                            safe_request,
                            job.providers,
                            "",
                            safe_uscc,
                            safe_consent,
                        ),
                        ts_ms,
                    )
                    outcomes.append(SubjectOutcome(uscc, True))
                    admitted.append((uscc, record))
        if not admitted:
            return ScoreResult(request_id, tuple(outcomes), b"")
        assert job.bank is not None
        request = modeling_pb2.AgentScoreEnterprisesRequest(
            job_id=job_id,
            request_id=request_id,
            requested_at=requested_at,
            enterprise_usccs=[u for u, _ in admitted],
            consents=[r.verified.signed for _, r in admitted],
            audience_binding=audience.signed,
            scoring_key=scoring_key,
        )
        try:
            payloads = self._each(
                job.providers,
                lambda p: bytes(self._call(job, p, "ScoreEnterprises", request, "ScoreEnterprises").payload),
            )
            aggregate = self._aggregate(job, key, payloads)
        except (XinrongError, ValueError) as exc:
            failure = (
                exc if isinstance(exc, XinrongError) else XinrongError(str(exc), reason=Reason.FAILED_PRECONDITION)
            )
            self._audit(
                self._event(
                    caller.role,
                    caller.party_id,
                    method,
                    Decision.FAILED,
                    safe_request,
                    job.providers,
                    failure.reason.value,
                )
            )
            raise failure from None
        log.info(
            "modeling job %s: scored %d of %d enterprises (request %s)",
            job_id,
            len(admitted),
            len(subjects),
            request_id,
        )
        return ScoreResult(request_id, tuple(outcomes), aggregate)

    def _check_subject(
        self, job: _Job, audience: VerifiedBinding, uscc: str, safe_uscc: str, consent_id: str, now: float, day: int
    ) -> Any:
        """Verify's consent checks for one enterprise, in Verify's order (see ``xinrong.node.service``)."""
        core = self._core
        if not safe_uscc:
            raise ValidationError("enterprise USCC malformed")
        record = core.consents.get(consent_id) if consent_id else None
        if record is None or record.enterprise != uscc or record.enterprise_binding.not_after < now:
            raise ConsentError("no usable consent for this enterprise")  # the uniform denial
        check_consent_use(
            record.verified, enterprise_uscc=uscc, audience_id=audience.party_id, needs=(), now=now, state=record.state
        )
        consent = record.verified.consent
        if consent.purpose != common_pb2.CONSENT_PURPOSE_CREDIT_SCORING:
            raise ConsentError(
                "purpose is not credit scoring",
                reason=Reason.CLAIM_OUT_OF_SCOPE,
                public="the consent's purpose is not credit_scoring",
            )
        covered = {key.split(".", 1)[0] for key in record.verified.scope}
        missing = sorted(set(job.providers) - covered)
        if missing:
            raise ConsentError(
                f"scope lacks {missing}",
                reason=Reason.CLAIM_OUT_OF_SCOPE,
                public=f"the consent's scope does not cover providers {missing} of the model",
            )
        if record.uses >= consent.max_uses:
            raise XinrongError("max uses reached", reason=Reason.CONSENT_USES_EXHAUSTED)
        if consent.max_uses_per_day and record.uses_on(day) >= consent.max_uses_per_day:
            raise XinrongError("daily uses reached", reason=Reason.CONSENT_DAILY_LIMIT)
        if core.budget.exhausted(uscc, day):
            raise XinrongError("enterprise daily budget reached", reason=Reason.ENTERPRISE_BUDGET_EXHAUSTED)
        return record

    # -- status ---------------------------------------------------------------------

    def get_job(self, caller: Peer, job_id: str) -> tuple[store.JobRecord, bool, dict[str, int]]:
        job = self._owned(caller, job_id, "GetJob")
        live = self._jobs.get(job_id) is job
        resumable = live and job.coordinator is not None and job.record.state in (store.FAILED, store.RUNNING)
        wire = job.meter.snapshot() if live else dict((job.record.metadata or {}).get("wire_bytes", {}))
        return job.record, resumable, wire


__all__ = ["ModelingHub", "ScoreResult", "ScoringKeyInput", "SubjectOutcome"]
