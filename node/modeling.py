"""The node's modeling hub: a registry of joint-modeling jobs, each a ``NodeCoordinator``.

What the node does for a job (``xinrong.modeling.vlr`` has the protocol; this is the
transport and the bookkeeping around it). The hub is one class over four modules:

* ``modeling_jobs``: the job registry (ownership, state on disk, audit, failure, fan-out);
* this module: creating a job and relaying its PSI;
* ``modeling_training``: the training steps, on the job's ``NodeCoordinator``;
* ``modeling_scoring``: private scoring of rows and of consented enterprises;
* ``modeling_links``: the gRPC links to the agents.

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
import time
from collections.abc import Sequence
from typing import Any

from xinrong.errors import Reason, ValidationError, XinrongError, provider_not_connected
from xinrong.limits import MAX_PROVIDERS, MAX_PSI_IDS
from xinrong.modeling.he.base import SCHEMES, HESecret, keygen
from xinrong.modeling.vlr.errors import VlrError
from xinrong.modeling.vlr_state import check_id
from xinrong.node import modeling_store as store
from xinrong.node.audit import Decision
from xinrong.node.modeling_jobs import Job, now_ms
from xinrong.node.modeling_scoring import ScoringSteps
from xinrong.node.modeling_training import TrainingSteps
from xinrong.rpc.auth import Peer
from xinrong.v1 import common_pb2, modeling_pb2

log = logging.getLogger(__name__)

PSI_POINT_BYTES = 32
PSI_HEADER_BYTES = 64
_HE_PARAM_KEYS = {
    "ckks": {"poly_modulus_degree", "coeff_mod_bit_sizes", "value_bound"},
    "paillier": {"n_bits"},
    "plain": {"max_degree"},
}


class ModelingHub(TrainingSteps, ScoringSteps):
    """The node's modeling service: jobs by id (``JobRegistry``), created and aligned here, trained
    (``TrainingSteps``) and scored (``ScoringSteps``); every public method takes the certified caller first."""

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
            unroutable = sorted(set(providers) - self.connected_providers)
            if unroutable:
                raise provider_not_connected(unroutable)
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
            created_ms=now_ms(now),
            updated_ms=now_ms(now),
        )
        job = Job(record=record, bank=bank, he_params=he_params, touched=now)
        self.expire_idle()
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
                running = [j for j in self._jobs.values() if j.record.state in (store.CREATED, store.RUNNING)]
                mine = sum(1 for j in running if j.record.institution == caller.party_id and j.job_id != job_id)
                cap = self._config.modeling_max_jobs_per_institution
                if mine >= cap:
                    raise XinrongError(
                        "too many jobs of this institution",
                        reason=Reason.FAILED_PRECONDITION,
                        public=f"institution {caller.party_id} runs {mine} modeling jobs already (the per-institution "
                        f"limit is {cap}); finish one, or wait for an abandoned one to expire",
                    )
                live = len(running)
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
                        timeout=self._timeout,
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

    # -- status ---------------------------------------------------------------------

    def get_job(self, caller: Peer, job_id: str) -> tuple[store.JobRecord, bool, dict[str, int]]:
        job = self._owned(caller, job_id, "GetJob")
        live = self._jobs.get(job_id) is job
        resumable = live and job.coordinator is not None and job.record.state in (store.FAILED, store.RUNNING)
        wire = job.meter.snapshot() if live else dict((job.record.metadata or {}).get("wire_bytes", {}))
        return job.record, resumable, wire


__all__ = ["ModelingHub"]
