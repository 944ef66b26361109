"""Training steps at the node: each bank call decoded, run on the job's ``NodeCoordinator``, recorded.

``StartTraining`` wires the coordinator: the job's fresh HE key and a
``GrpcProviderLink`` per agent (providers are called in parallel: separate
processes, so their HE work overlaps). Every later step runs under the
job's lock and fails the job on any error (``JobRegistry._step``). The
protocol itself -- what is checked, relayed and decrypted -- is
``xinrong.modeling.vlr.node``, the code the in-process simulator runs too.
"""

from __future__ import annotations

import json
import logging

from xinrong.errors import Reason, ValidationError, XinrongError
from xinrong.modeling.he.base import provider_public_bytes
from xinrong.modeling.vlr.errors import VlrError
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
from xinrong.modeling.vlr_wire import decode_for_job, encode
from xinrong.node import modeling_store as store
from xinrong.node.audit import Decision
from xinrong.node.modeling_jobs import INSTITUTION, Job, JobRegistry, now_ms
from xinrong.node.modeling_links import GrpcProviderLink
from xinrong.rpc.auth import Peer
from xinrong.v1 import modeling_pb2

log = logging.getLogger(__name__)


class TrainingSteps(JobRegistry):
    """The bank's training calls: start, every batch step, epochs, finish, resume and restore."""

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

        def run(job: Job, c: NodeCoordinator) -> bytes:
            ack = c.end_epoch(msg)
            self._save(job, store.RUNNING, epochs_done=msg.epoch)
            return encode(ack)

        return self._step(caller, job_id, f"EndEpoch (epoch {msg.epoch})", run)

    def finish(self, caller: Peer, job_id: str, body: bytes) -> str:
        self._owned(caller, job_id, "FinishJob")  # who asks comes before what is asked
        msg = decode_for_job(FinishRequest, body, job_id)

        def run(job: Job, c: NodeCoordinator) -> str:
            metadata = c.finish(msg)
            metadata["institution"] = job.record.institution
            metadata["backend"] = job.record.backend
            metadata["created_ms"] = job.record.created_ms
            metadata["finished_ms"] = now_ms(self._core.clock())
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
                        timeout=self._timeout,
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

        def run(job: Job, c: NodeCoordinator) -> int:
            c.restore(msg)  # epoch 0: every provider is fresh after the resume's set-up
            self._save(job, store.RUNNING, epochs_done=msg.epoch)
            return msg.epoch

        return self._step(caller, job_id, f"RestoreJob (epoch {msg.epoch})", run)
