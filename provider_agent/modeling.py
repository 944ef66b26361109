"""The provider agent's side of joint modeling: PSI responder, ``ProviderParty`` host, private scoring.

Everything the node asks for is checked here again, because the node is
honest-but-curious and this agent holds the raw data:

* ``[modeling] enabled`` must be true, and the institution running a job
  must be in ``allowed_institutions``; its binding (handed over by the node)
  is verified against the platform CA, so partial logits are sealed to the
  real bank's key, never to one the node chose.
* Partial logits and square terms leave sealed (HPKE) to that bank; the
  residual arrives sealed to this provider and is opened here
  (``xinrong.modeling.vlr.provider.ProviderEndpoint``, the code the in-process
  simulator runs too). The node relays boxes it cannot open.
* Scoring encrypts partial scores under the *bank's* scoring key, and only
  if the bank signed that key for this job and request
  (``scoring_key_statement``): a key slipped in by the node would let it
  read per-provider partial scores. Scoring enterprises by USCC also
  re-verifies every consent (enterprise signature, grantee, revocation,
  validity, purpose ``credit_scoring``, scope covering this provider).

Durable state per job, under ``[modeling] dir/<job id>/`` on the
provider's own disk: ``job.json`` (institution, backend, data fingerprint),
``alignment.npy`` (which of its rows are aligned, in the canonical order),
the protocol's checkpoints, and at the end ``share.json`` (written
atomically by ``ProviderParty.finish``) and this provider's private weights
report. After a restart the agent rebuilds a job from these files, which is
what makes ``--resume`` possible; a changed dataset is refused. Only sizes,
counts and ids are logged.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from xinrong.consent import check_consent_use, verify_signed_consent
from xinrong.errors import ConsentError, Reason, SignatureError, ValidationError, XinrongError
from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.layout import PartyCredentials
from xinrong.limits import MAX_PSI_POINTS, MAX_SCORE_ROWS
from xinrong.modeling import scoring
from xinrong.modeling.he.base import load_public
from xinrong.modeling.psi import ProviderPsi, psi_context
from xinrong.modeling.scoring import SCORING_KEY_CONTEXT, scoring_key_statement
from xinrong.modeling.serde import ScoringKey, positions_from_proto
from xinrong.modeling.vlr.messages import (
    BoundRequest,
    EncryptRequest,
    EpochEnd,
    FinishRequest,
    GradientRequest,
    JobSetup,
    RestoreRequest,
    ResumeQuery,
    UpdateRequest,
)
from xinrong.modeling.vlr.provider import ProviderEndpoint, ProviderParty
from xinrong.modeling.vlr.sealing import HpkeSealer
from xinrong.modeling.vlr_state import ModelShare, atomic_write_bytes, check_id
from xinrong.modeling.vlr_wire import decode_for_job, encode
from xinrong.provider_agent.config import ModelingConfig
from xinrong.provider_agent.modeling_data import FeatureSource, FeatureTable
from xinrong.provider_agent.store import StateStore
from xinrong.v1 import common_pb2

log = logging.getLogger(__name__)

M = TypeVar("M")
IntArray = npt.NDArray[np.int64]

JOB_FORMAT = "xinrong.agent.modeling_job/1"
SCORING_SCHEMES = ("ckks", "paillier")


class _Job:
    """One job at this agent; ``lock`` serializes its steps."""

    def __init__(
        self, job_id: str, bank: VerifiedBinding, backend: str, directory: Path, features: FeatureTable
    ) -> None:
        self.job_id = job_id
        self.bank = bank
        self.backend = backend
        self.dir = directory
        self.features = features
        self.lock = threading.Lock()
        self.psi: ProviderPsi | None = None
        self.rows: IntArray | None = None
        self.endpoint: ProviderEndpoint | None = None

    @property
    def share_path(self) -> Path:
        return self.dir / "share.json"


def _refused(detail: str, public: str, reason: Reason = Reason.FAILED_PRECONDITION) -> XinrongError:
    return XinrongError(detail, reason=reason, public=public)


class AgentModeling:
    """Jobs of this provider, by id."""

    def __init__(
        self,
        *,
        provider: str,
        credentials: PartyCredentials,
        config: ModelingConfig,
        features: FeatureSource,
        state: StateStore,
        max_clock_skew_seconds: int = 300,
        clock: Callable[[], float] = time.time,
        paused: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.provider = provider
        # (consent id, enterprise) paused by the enterprise (xinrong.provider_agent.subject).
        self._paused = paused
        self._party_id = credentials.party_id
        self._sealing = credentials.sealing_key
        self._ca = credentials.ca
        self._config = config
        self._features = features
        self._state = state
        self._skew = max_clock_skew_seconds
        self._clock = clock
        self._dir = config.dir or Path(".")
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        if config.enabled:
            threading.Thread(target=self._warm_up, name="modeling-warm-up", daemon=True).start()

    def job_count(self) -> int:
        """How many joint-modeling jobs this agent holds (for metrics)."""
        with self._lock:
            return len(self._jobs)

    def _warm_up(self) -> None:
        """Read the features and load the report module now, not inside a job's first or last step."""
        try:
            import xinrong.modeling.report  # noqa: F401 - matplotlib takes a while to import

            self._features.load()
        except Exception as exc:
            log.warning("modeling warm-up: %s", getattr(exc, "detail", None) or type(exc).__name__)

    # -- checks ---------------------------------------------------------------------

    def _enabled(self) -> None:
        if not self._config.enabled:
            raise _refused("modeling disabled", f"joint modeling is not enabled on provider {self.provider}")
        if self._sealing is None:
            raise _refused("no sealing key", f"provider {self.provider} has no sealing key for joint modeling")

    def _institution(self, signed: common_pb2.SignedPartyBinding) -> VerifiedBinding:
        try:
            bank = verify_binding(self._ca, signed, expect_role="institution")
        except SignatureError:
            raise _refused(
                "institution binding fails the CA check",
                "the institution's binding is not CA-signed",
                Reason.CALLER_NOT_ALLOWED,
            ) from None
        if len(bank.sealing_public_raw) != 32:
            raise _refused(
                "institution without sealing key",
                "the institution's binding has no sealing key",
                Reason.CALLER_NOT_ALLOWED,
            )
        if bank.party_id not in self._config.allowed_institutions:
            raise _refused(
                f"institution {bank.party_id} not allowed",
                f"institution {bank.party_id} may not run modeling jobs with provider {self.provider}",
                Reason.CALLER_NOT_ALLOWED,
            )
        return bank

    def _backend(self, scheme: str) -> None:
        if scheme == "plain" and not self._config.allow_insecure:
            raise _refused("plain refused", f"provider {self.provider} refuses the plain (unencrypted) backend")
        if scheme not in ("ckks", "paillier", "plain"):
            raise ValidationError(f"unknown backend {scheme!r}")

    def _job_dir(self, job_id: str) -> Path:
        return self._dir / check_id(job_id, "job id")

    def _job(self, job_id: str) -> _Job:
        """The job in memory, or rebuilt from its files after a restart."""
        self._enabled()
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            return job
        return self._reload(job_id)

    def _reload(self, job_id: str) -> _Job:
        directory = self._job_dir(job_id)
        meta_path = directory / "job.json"
        if not meta_path.is_file():
            raise _refused(
                f"job {job_id} unknown", f"provider {self.provider} has no modeling job {job_id}", Reason.NOT_FOUND
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != JOB_FORMAT or meta.get("job_id") != job_id:
            raise _refused("job file malformed", f"provider {self.provider}: job {job_id} state is unreadable")
        signed = common_pb2.SignedPartyBinding.FromString(bytes.fromhex(meta["institution_binding"]))
        bank = self._institution(signed)
        features = self._features.load()
        if features.fingerprint != meta.get("fingerprint"):
            raise _refused(
                "dataset changed",
                f"provider {self.provider}'s data changed since job {job_id} aligned it; the job cannot resume",
            )
        job = _Job(job_id, bank, str(meta["backend"]), directory, features)
        job.rows = self._load_rows(directory / "alignment.npy", len(features.ids))
        with self._lock:
            job = self._jobs.setdefault(job_id, job)
        log.info(
            "modeling job %s reloaded from disk: %d aligned rows", job_id, job.rows.size if job.rows is not None else 0
        )
        return job

    @staticmethod
    def _load_rows(path: Path, n_ids: int) -> IntArray:
        rows = np.asarray(np.load(path, allow_pickle=False), dtype=np.int64)
        if rows.ndim != 1 or rows.size == 0 or rows.min() < 0 or rows.max() >= n_ids:
            raise _refused("alignment malformed", "the job's stored alignment does not fit the provider's data")
        return rows

    def _run(self, job_id: str, fn: Callable[[_Job], M]) -> M:
        job = self._job(job_id)
        with job.lock:
            return fn(job)

    @staticmethod
    def _endpoint(job: _Job) -> ProviderEndpoint:
        if job.endpoint is None:
            raise _refused("not set up", f"job {job.job_id} is not set up at this provider (resume it from the bank)")
        return job.endpoint

    # -- open and PSI -------------------------------------------------------------------

    def open_job(self, job_id: str, institution: common_pb2.SignedPartyBinding, backend: str, resume: bool) -> int:
        self._enabled()
        check_id(job_id, "job id")
        bank = self._institution(institution)
        self._backend(backend)
        directory = self._job_dir(job_id)
        meta_path = directory / "job.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("institution") != bank.party_id:
                raise _refused(
                    "job of another institution",
                    f"job id {job_id} belongs to another institution here",
                    Reason.CALLER_NOT_ALLOWED,
                )
        if resume:
            with self._lock:
                job = self._jobs.get(job_id)
            if job is None:
                job = self._reload(job_id)
            if job.bank.party_id != bank.party_id:
                raise _refused(
                    "job of another institution",
                    f"job id {job_id} belongs to another institution here",
                    Reason.CALLER_NOT_ALLOWED,
                )
            if job.rows is None:
                raise _refused("not aligned", f"job {job_id} was never aligned here; start it again without --resume")
            log.info("modeling job %s re-opened for %s", job_id, bank.party_id)
            return int(job.rows.size)
        if (directory / "share.json").exists():
            raise _refused("job finished", f"job {job_id} already finished at provider {self.provider}")
        features = self._features.load()
        with self._lock:
            old = self._jobs.pop(job_id, None)
            if old is not None:
                old.endpoint = None
            if directory.exists():
                shutil.rmtree(directory)  # an earlier attempt of the same job id, same institution: start over
            self._jobs[job_id] = _Job(job_id, bank, backend, directory, features)
        log.info(
            "modeling job %s opened for %s: %d rows offered (%s)",
            job_id,
            bank.party_id,
            len(features.ids),
            features.source,
        )
        return len(features.ids)

    def respond_psi(self, job_id: str, body: bytes) -> bytes:
        def run(job: _Job) -> bytes:
            if job.rows is not None or job.psi is not None:
                raise _refused("PSI repeated", f"job {job_id} already ran its PSI at this provider")
            n_points = max(0, (len(body) - 64) // 32) + len(job.features.ids)
            if n_points > MAX_PSI_POINTS:
                raise _refused("PSI too large", f"a PSI answer of {n_points:,} points exceeds the 64 MiB message limit")
            job.psi = ProviderPsi(job.features.ids, context=psi_context(job_id))
            try:
                out = job.psi.respond(body)
            except ValueError as exc:
                raise ValidationError(f"PSI request refused: {exc}") from None
            log.info("modeling job %s: PSI answered (%d bytes)", job_id, len(out))
            return out

        return self._run(job_id, run)

    def select_psi(self, job_id: str, body: bytes) -> int:
        def run(job: _Job) -> int:
            if job.psi is None:
                raise _refused("no PSI", f"job {job_id}: selection before the PSI request")
            try:
                alignment = job.psi.finish(body)
            except (ValueError, RuntimeError) as exc:
                raise ValidationError(f"PSI selection refused: {exc}") from None
            rows = np.asarray(alignment.provider_index, dtype=np.int64)
            job.dir.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.save(buf, rows, allow_pickle=False)
            atomic_write_bytes(job.dir / "alignment.npy", buf.getvalue())
            meta = {
                "format": JOB_FORMAT,
                "job_id": job_id,
                "institution": job.bank.party_id,
                "institution_binding": job.bank.signed.SerializeToString(deterministic=True).hex(),
                "backend": job.backend,
                "fingerprint": job.features.fingerprint,
                "source": job.features.source,
                "aligned_rows": int(rows.size),
                "created_at": int(self._clock()),
            }
            atomic_write_bytes(job.dir / "job.json", json.dumps(meta, sort_keys=True, indent=1).encode())
            job.rows, job.psi = rows, None
            log.info("modeling job %s: %d rows aligned", job_id, rows.size)
            return int(rows.size)

        return self._run(job_id, run)

    # -- training steps ---------------------------------------------------------------

    def setup(self, job_id: str, body: bytes) -> bytes:
        msg = decode_for_job(JobSetup, body, job_id)

        def run(job: _Job) -> bytes:
            if job.rows is None:
                raise _refused("not aligned", f"job {job_id}: set-up before the PSI")
            if msg.scheme != job.backend:
                raise ValidationError("set-up names another backend than the job")
            self._backend(msg.scheme)
            assert self._sealing is not None  # checked by _enabled
            party = ProviderParty(
                self._party_id, job.features.x[job.rows], job.features.columns, checkpoint_dir=job.dir / "checkpoints"
            )
            sealer = HpkeSealer(self._party_id, self._sealing, {job.bank.party_id: job.bank.sealing_public_raw})
            endpoint = ProviderEndpoint(party, sealer=sealer, bank_id=job.bank.party_id)
            ack = endpoint.setup(msg)
            job.endpoint = endpoint
            return encode(ack)

        return self._run(job_id, run)

    def bound(self, job_id: str, body: bytes) -> bytes:
        msg = decode_for_job(BoundRequest, body, job_id)
        return self._run(job_id, lambda job: encode(self._endpoint(job).bound(msg)))

    def encrypt(self, job_id: str, body: bytes) -> bytes:
        msg = decode_for_job(EncryptRequest, body, job_id)
        return self._run(job_id, lambda job: self._endpoint(job).encrypt(msg))

    def gradient(self, job_id: str, body: bytes) -> bytes:
        msg = decode_for_job(GradientRequest, body, job_id)
        return self._run(job_id, lambda job: encode(self._endpoint(job).gradient(msg)))

    def update(self, job_id: str, body: bytes) -> bytes:
        msg = decode_for_job(UpdateRequest, body, job_id)
        return self._run(job_id, lambda job: encode(self._endpoint(job).update(msg)))

    def end_epoch(self, job_id: str, body: bytes) -> bytes:
        msg = decode_for_job(EpochEnd, body, job_id)
        return self._run(job_id, lambda job: encode(self._endpoint(job).end_epoch(msg)))

    def finish(self, job_id: str, body: bytes) -> bytes:
        msg = decode_for_job(FinishRequest, body, job_id)

        def run(job: _Job) -> bytes:
            from xinrong.modeling.report import write_weights_report  # matplotlib: imported only when needed

            endpoint = self._endpoint(job)
            ack = endpoint.finish(msg, job.share_path)
            share = endpoint.party.model_share(msg.epochs)
            write_weights_report(
                job.dir,
                model_id=job_id,
                party_id=self._party_id,
                feature_names=share.feature_names,
                weights=share.weights,
            )
            job.endpoint = None  # the share is on disk; the training state is no longer needed
            log.info("modeling job %s finished: share written (%d weights)", job_id, len(share.weights))
            return encode(ack)

        return self._run(job_id, run)

    def resume_state(self, job_id: str, body: bytes) -> bytes:
        msg = decode_for_job(ResumeQuery, body, job_id)
        return self._run(job_id, lambda job: encode(self._endpoint(job).resume_state(msg)))

    def restore(self, job_id: str, body: bytes) -> bytes:
        msg = decode_for_job(RestoreRequest, body, job_id)
        return self._run(job_id, lambda job: encode(self._endpoint(job).restore(msg)))

    # -- scoring -------------------------------------------------------------------------

    def _share(self, job: _Job) -> ModelShare:
        if not job.share_path.is_file():
            raise _refused("no share", f"job {job.job_id} has no finished model at provider {self.provider}")
        return ModelShare.load(job.share_path)

    def _public_key(self, job_id: str, request_id: str, key: ScoringKey, bank: VerifiedBinding) -> Any:
        allowed = SCORING_SCHEMES + (("plain",) if self._config.allow_insecure else ())
        if key.scheme not in allowed:
            raise ValidationError(f"scoring scheme must be one of {allowed}")
        statement = scoring_key_statement(job_id, request_id, key.scheme, key.public_key)
        try:
            bank.verify_key.verify(SCORING_KEY_CONTEXT, statement, key.signature)
        except SignatureError:
            raise _refused(
                "scoring key not signed by the bank",
                f"the scoring key is not signed by {bank.party_id} for this job and request",
                Reason.ACCESS_DENIED,
            ) from None
        try:
            return load_public(key.scheme, key.public_key)
        except ValueError as exc:
            raise ValidationError(f"scoring key unreadable: {exc}") from None

    def _encrypt_scores(self, job: _Job, request_id: str, public: Any, raw: npt.NDArray[np.float64]) -> bytes:
        share = self._share(job)
        if share.transform.n_inputs != raw.shape[1]:
            raise _refused("share shape", "the model share does not fit this provider's data")
        features = share.transform.apply(raw)
        return scoring.provider_encrypt(public, request_id, self._party_id, features, np.asarray(share.weights))

    def score_rows(self, job_id: str, request_id: str, positions: bytes, key: ScoringKey) -> bytes:
        job = self._job(job_id)
        public = self._public_key(job_id, request_id, key, job.bank)
        if len(positions) % 4 or not 0 < len(positions) // 4 <= MAX_SCORE_ROWS:
            raise ValidationError(f"positions must be 1..{MAX_SCORE_ROWS:,} uint32 values")
        with job.lock:
            if job.rows is None:
                raise _refused("not aligned", f"job {job_id} has no alignment here")
            pos = positions_from_proto(positions)
            if pos.max() >= job.rows.size:
                raise ValidationError("positions out of range")
            raw = job.features.x[job.rows[pos]]
            payload = self._encrypt_scores(job, request_id, public, raw)
        log.info("modeling job %s: encrypted %d partial scores (request %s)", job_id, pos.size, request_id)
        return payload

    def score_enterprises(
        self,
        job_id: str,
        request_id: str,
        requested_at: int,
        usccs: Sequence[str],
        consents: Sequence[common_pb2.SignedConsent],
        audience_binding: common_pb2.SignedPartyBinding,
        key: ScoringKey,
    ) -> bytes:
        now = self._clock()
        if abs(now - requested_at) > self._skew:
            raise ValidationError(f"requested_at is {now - requested_at:.0f}s from now", reason=Reason.REQUEST_STALE)
        job = self._job(job_id)
        audience = self._institution(audience_binding)
        if audience.party_id != job.bank.party_id:
            raise _refused(
                "audience is not the job's institution",
                "only the institution that trained the model may score with it",
                Reason.CALLER_NOT_ALLOWED,
            )
        public = self._public_key(job_id, request_id, key, audience)
        if len(usccs) != len(consents) or not 0 < len(usccs) <= MAX_SCORE_ROWS:
            raise ValidationError("one consent per enterprise expected")
        revoked = {(r.consent_id, r.enterprise_uscc) for r in self._state.revocations()}
        for uscc, signed in zip(usccs, consents):
            verified = verify_signed_consent(self._ca, signed)
            state = (
                common_pb2.CONSENT_STATE_REVOKED
                if (verified.consent_id, uscc) in revoked
                else common_pb2.CONSENT_STATE_PAUSED
                if self._paused is not None and self._paused(verified.consent_id, uscc)
                else common_pb2.CONSENT_STATE_ACTIVE
            )
            check_consent_use(
                verified, enterprise_uscc=uscc, audience_id=audience.party_id, needs=(), now=now, state=state
            )
            if verified.consent.purpose != common_pb2.CONSENT_PURPOSE_CREDIT_SCORING:
                raise ConsentError(
                    "purpose", reason=Reason.CLAIM_OUT_OF_SCOPE, public="the consent's purpose is not credit_scoring"
                )
            if not any(k.split(".", 1)[0] == self.provider for k in verified.scope):
                raise ConsentError(
                    "scope",
                    reason=Reason.CLAIM_OUT_OF_SCOPE,
                    public=f"the consent's scope does not cover provider {self.provider}",
                )
        with job.lock:
            raw = job.features.rows_of(list(usccs))
            payload = self._encrypt_scores(job, request_id, public, raw)
        log.info(
            "modeling job %s: encrypted partial scores of %d consented enterprises (request %s)",
            job_id,
            len(usccs),
            request_id,
        )
        return payload
