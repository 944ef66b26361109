"""Joint modeling through the real node and provider agents over mTLS, in one process (ports 0).

The node (``ModelingService``) and two agents (``AgentModelingService``)
are the real servers; the bank is ``xinrong.bank.modeling.train``. Checked here:
the model equals the in-process simulator's on the same data; a provider that
stops mid-training fails the job with its name and step and ``--resume``
finishes it; a node restart makes a resume impossible (the HE key is gone)
and says so; who may create, drive and serve a job; and, from a capture of
every message the node handled, that sealed payloads are opaque to the
node and that no label or raw feature value reaches it or its database.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from xinrong.bank.modeling import ModelingClient, parse_job, read_bank_table, train
from xinrong.errors import SignatureError
from xinrong.keys.layout import party_dir, provision_party
from xinrong.keys.sealing import SealingKey
from xinrong.modeling import data, metrics
from xinrong.modeling.he.base import load_public
from xinrong.modeling.vlr.messages import (
    SEALED_PARTIAL,
    SEALED_RESIDUAL,
    SEALED_SQUARE,
    BackwardReply,
    BackwardRequest,
    ForwardReply,
    GradientReply,
    GradientRequest,
    JobStarted,
    PartialLogits,
)
from xinrong.modeling.vlr_state import ModelShare
from xinrong.modeling.vlr_wire import decode
from xinrong.node.modeling_store import RESTARTED_REASON
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import RemoteError, decode_rpc_error
from xinrong.tools.federation_job import run_job
from xinrong.v1 import common_pb2, modeling_pb2, modeling_pb2_grpc

from support.byte_scan import found, searchable
from support.modeling_platform import (
    LABEL,
    PROVIDERS,
    Platform,
    breast_tables,
    modeling_platform,
    platform_creds,
    start_modeling_node,
)
from support.tamper import MISADDRESSED_RESIDUAL, misaddress_residuals


@pytest.fixture
def platform(pki: Any, tmp_path: Path) -> Iterator[Platform]:
    with modeling_platform(pki, tmp_path) as plat:
        yield plat


# -- training --------------------------------------------------------------------------------


def test_training_over_grpc_matches_the_in_process_driver(platform: Platform, tmp_path: Path) -> None:
    job = platform.job("breast-grpc", epochs=8)
    outcome = train(job)
    assert outcome.rows_aligned == 569 and outcome.rows_test == 171 and outcome.metrics.epochs_run == 8
    # the same job in one process (xinrong.tools.federation_job) on the same data, split and configuration
    bank, hosts = breast_tables()
    local = run_job(bank, hosts, job.train, backend="plain", workdir=tmp_path / "local")
    local_auc = metrics.auc(local.y_test, local.test_logits)
    assert np.array_equal(np.sort(local.y_test), np.sort(outcome.y_test))
    assert abs(outcome.auc - local_auc) < 2e-3, (outcome.auc, local_auc)
    assert outcome.auc > 0.97
    np.testing.assert_allclose(outcome.bank_share.weights, local.train.bank_share.weights, atol=1e-3)
    np.testing.assert_allclose(np.sort(outcome.test_logits), np.sort(local.test_logits), atol=1e-2)
    # KS moves in steps of 1/58 positives on 171 rows: a rank swap or two
    assert abs(outcome.ks - metrics.ks(local.y_test, local.test_logits)) < 0.04
    # every party wrote its share; the node kept metadata only, and counted the wire bytes
    for p in PROVIDERS:
        share = json.loads(platform.share(p, job.job_id).read_text())
        assert share["party_id"] == p and len(share["weights"]) == len(share["feature_names"])
    assert (job.output / "bank.share.json").is_file() and (job.output / "model_card.md").is_file()
    assert (job.output / "roc.png").read_bytes()[:4] == b"\x89PNG"
    meta = outcome.metadata
    assert meta["parties"] == {"bank-a": "bank", "tax": "provider", "electricity": "provider"}
    assert set(meta["share_sha256"]) == {"bank-a", *PROVIDERS} - {"bank-a"} | set(PROVIDERS)
    assert outcome.wire_bytes["node"] == sum(v for k, v in outcome.wire_bytes.items() if k != "node")
    assert min(outcome.wire_bytes[p] for p in ("bank-a", *PROVIDERS)) > 100_000
    conn = sqlite3.connect(f"file:{platform.root / 'node.db'}?mode=ro", uri=True)
    row = conn.execute("SELECT state, metadata FROM modeling_jobs WHERE job_id = ?", (job.job_id,)).fetchone()
    conn.close()
    assert row[0] == "SUCCEEDED" and json.loads(row[1])["epochs"] == 8


def test_ckks_over_grpc(platform: Platform, tmp_path: Path) -> None:
    """Real ciphertexts and sealed boxes on the wire: a short CKKS run learns the same model."""
    job = platform.job("breast-ckks", backend="ckks", epochs=2, batch_size=200)
    outcome = train(job)
    assert outcome.metadata["scheme"] == "ckks"
    assert outcome.auc > 0.97
    # the same job (same id: same batches) in one process, in the clear, with the surrogate CKKS evaluates
    bank, hosts = breast_tables()
    degree = int(outcome.bank_share.sigmoid["degree"])
    plain = run_job(bank, hosts, job.train, backend="plain", he_params={"max_degree": degree}, workdir=tmp_path / "p")
    # CKKS releases flooded sums: the weights agree to CKKS's noise after four steps
    np.testing.assert_allclose(outcome.bank_share.weights, plain.train.bank_share.weights, atol=1e-2)
    for p in PROVIDERS:
        share = json.loads(platform.share(p, job.job_id).read_text())
        np.testing.assert_allclose(share["weights"], plain.train.provider_shares[p].weights, atol=1e-2)


def test_a_stopped_provider_fails_the_job_and_resume_finishes_it(platform: Platform) -> None:
    job = platform.job("breast-resume", epochs=6, batch_size=100)

    class StopAfter:
        def __init__(self, total: int, initial: int) -> None:
            self.batches = 0

        def update(self, n: int = 1) -> None:
            self.batches += n
            if self.batches == 9:  # two epochs of four batches checkpointed, a ninth batch done
                platform.agents["electricity"].stop(0.2)

        def set_postfix_str(self, s: str) -> None:
            return None

        def close(self) -> None:
            return None

    with pytest.raises(RemoteError) as info:
        train(job, progress=StopAfter)
    err = info.value
    assert err.code is grpc.StatusCode.UNAVAILABLE and err.reason == "PROVIDER_UNAVAILABLE"
    assert "provider electricity did not answer at step ComputeBound (epoch 2, batch 1)" in err.message
    assert "--resume" in err.message
    with ModelingClient(job.node, platform_creds(platform, "bank-a")) as client:
        status = client.call("GetJob", modeling_pb2.GetJobRequest(job_id=job.job_id))
    assert status.state == modeling_pb2.MODELING_JOB_STATE_FAILED and status.resumable
    assert status.epochs_done == 2 and "electricity" in status.failure_reason
    # nothing half-written: no party has a model share
    assert not (job.output / "bank.share.json").exists()
    assert not any(platform.share(p, job.job_id).exists() for p in PROVIDERS)
    platform.restart_agent("electricity")
    outcome = train(job, resume=True)
    assert outcome.resumed_from == 2 and outcome.metrics.epochs_run == 6
    assert len(outcome.metrics.epoch_losses) == 6
    assert all(platform.share(p, job.job_id).exists() for p in PROVIDERS)
    # resuming from the checkpoint gives the model an uninterrupted run gives
    full = train(platform.job("breast-resume-ref", epochs=6, batch_size=100))
    assert abs(outcome.auc - full.auc) < 2e-3


def test_an_agent_refuses_a_residual_for_another_batch(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The tampering of ``test_vlr``'s in-process test, over the wire: the agent refuses it with the same error."""
    misaddress_residuals(monkeypatch, "batch")
    caplog.set_level(logging.INFO, logger="xinrong.rpc.server")
    with pytest.raises(RemoteError) as info:
        train(platform.job("breast-misaddressed", epochs=1))
    assert info.value.reason == "JOB_FAILED"
    assert "provider tax refused step ComputeGradient (epoch 0, batch 0)" in info.value.message
    refusals = [r.getMessage() for r in caplog.records if "ComputeGradient] refused" in r.getMessage()]
    assert refusals and all(m.endswith(f"refused INVALID_ARGUMENT: {MISADDRESSED_RESIDUAL}") for m in refusals)


def test_after_a_node_restart_the_job_cannot_resume_and_says_why(platform: Platform) -> None:
    job = platform.job("breast-node-restart", epochs=4)

    class StopNode:
        def __init__(self, total: int, initial: int) -> None:
            self.batches = 0

        def update(self, n: int = 1) -> None:
            self.batches += n
            if self.batches == 5:
                platform.agents["tax"].stop(0.2)

        def set_postfix_str(self, s: str) -> None:
            return None

        def close(self) -> None:
            return None

    with pytest.raises(RemoteError):
        train(job, progress=StopNode)
    platform.restart_agent("tax")
    platform.node.stop(0.2)
    platform.node = start_modeling_node(platform.node_config, platform.captured)
    job = job.model_copy(update={"node": f"127.0.0.1:{platform.node.port}"})
    with pytest.raises(RemoteError) as info:
        train(job, resume=True)
    assert info.value.reason == "FAILED_PRECONDITION"
    assert "HE secret key" in info.value.message and "without --resume" in info.value.message
    conn = sqlite3.connect(f"file:{platform.root / 'node.db'}?mode=ro", uri=True)
    state, reason = conn.execute(
        "SELECT state, failure_reason FROM modeling_jobs WHERE job_id = ?", (job.job_id,)
    ).fetchone()
    conn.close()
    assert state == "FAILED" and "provider tax did not answer" in reason  # the original cause stays on record
    with ModelingClient(job.node, platform_creds(platform, "bank-a")) as client:
        assert not client.call("GetJob", modeling_pb2.GetJobRequest(job_id=job.job_id)).resumable
    # starting it again from scratch (same job id) works
    assert train(job).metrics.epochs_run == 4


def test_a_job_running_when_the_node_stops_is_failed_at_restart(platform: Platform) -> None:
    job = platform.job("breast-interrupted", epochs=2)
    with ModelingClient(job.node, platform_creds(platform, "bank-a")) as client:
        client.call(
            "CreateJob", modeling_pb2.CreateJobRequest(job_id=job.job_id, provider_ids=list(PROVIDERS), backend="plain")
        )
    platform.node.stop(0.2)
    platform.node = start_modeling_node(platform.node_config, platform.captured)
    conn = sqlite3.connect(f"file:{platform.root / 'node.db'}?mode=ro", uri=True)
    state, reason = conn.execute(
        "SELECT state, failure_reason FROM modeling_jobs WHERE job_id = ?", (job.job_id,)
    ).fetchone()
    conn.close()
    assert (state, reason) == ("FAILED", RESTARTED_REASON)


# -- who may do what ---------------------------------------------------------------------------


def _create(platform: Platform, bank: str, job_id: str) -> Any:
    with ModelingClient(f"127.0.0.1:{platform.node.port}", platform_creds(platform, bank)) as client:
        return client.call(
            "CreateJob", modeling_pb2.CreateJobRequest(job_id=job_id, provider_ids=list(PROVIDERS), backend="plain")
        )


def test_authorization(platform: Platform, pki: Any) -> None:
    # a bank not in the agents' allowed_institutions is refused by the providers
    with pytest.raises(RemoteError) as info:
        _create(platform, "bank-b", "bank-b-job")
    assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert "bank-b may not run modeling jobs" in info.value.message
    # a second bank can neither read nor drive nor take over another bank's job
    _create(platform, "bank-a", "bank-a-job")
    with ModelingClient(f"127.0.0.1:{platform.node.port}", platform_creds(platform, "bank-b")) as other:
        for method, request in [
            ("GetJob", modeling_pb2.GetJobRequest(job_id="bank-a-job")),
            ("ExchangePsi", modeling_pb2.ExchangePsiRequest(job_id="bank-a-job", body=b"x")),
            ("Forward", modeling_pb2.ForwardRequest(job_id="bank-a-job", body=b"x")),
            (
                "CreateJob",
                modeling_pb2.CreateJobRequest(job_id="bank-a-job", provider_ids=list(PROVIDERS), backend="plain"),
            ),
        ]:
            with pytest.raises(RemoteError) as info:
                other.call(method, request)
            assert info.value.code is grpc.StatusCode.PERMISSION_DENIED, method
            assert info.value.reason == "CALLER_NOT_ALLOWED", method
    # enterprises and providers may not call the modeling service at all
    ent = pki.enterprise("911301001234567883")
    with ModelingClient(f"127.0.0.1:{platform.node.port}", ent) as client, pytest.raises(RemoteError) as info:
        client.call("GetJob", modeling_pb2.GetJobRequest(job_id="bank-a-job"))
    assert info.value.reason == "CALLER_NOT_ALLOWED"
    # an agent refuses modeling calls from any certificate but the configured node's
    if not (party_dir(pki.root, "node", "node-2") / "binding.pb").exists():
        provision_party(pki.ca, pki.root, role="node", party_id="node-2")
    for creds in (pki.party("node", "node-2"), pki.institution("bank-a")):
        channel = secure_channel(
            f"127.0.0.1:{platform.agents['tax'].port}", creds, server_role="provider", server_id="tax"
        )
        stub = modeling_pb2_grpc.AgentModelingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as rpc:
            stub.OpenJob(
                modeling_pb2.AgentOpenJobRequest(
                    job_id="rogue", institution_binding=pki.institution("bank-a").binding.signed, backend="plain"
                ),
                timeout=10,
            )
        channel.close()
        remote = decode_rpc_error(rpc.value)
        assert remote.code is grpc.StatusCode.PERMISSION_DENIED and remote.reason == "CALLER_NOT_ALLOWED"
    assert not (platform.root / "agents" / "tax" / "rogue").exists()
    # the plain backend needs the bank's explicit opt-in
    with pytest.raises(ValueError, match="allow_plain"):
        parse_job(
            {
                "job": {"id": "x", "node": "n:1", "credentials": "c", "providers": ["tax"], "backend": "plain"},
                "data": {"labels": "l.csv"},
            },
            platform.root,
        )


# -- privacy over the wire ----------------------------------------------------------------------


def _sealed_payloads(captured: list[tuple[str, str, str, bytes]]) -> list[bytes]:
    """Every sealed payload in the node's view, taken out of the messages exactly as the protocol nests them."""
    out: list[bytes] = []
    for _, direction, rpc, blob in captured:
        if (rpc, direction) == ("EncryptPartial", "in"):
            out.append(modeling_pb2.AgentEncryptPartialResponse.FromString(blob).sealed)
        elif (rpc, direction) == ("ComputeGradient", "out"):
            body = modeling_pb2.AgentComputeGradientRequest.FromString(blob).body
            out.append(decode(GradientRequest, body).sealed_residual)
        elif (rpc, direction) == ("ComputeGradient", "in"):
            square = decode(GradientReply, modeling_pb2.AgentComputeGradientResponse.FromString(blob).body)
            out += [square.sealed_square] if square.sealed_square else []
        elif (rpc, direction) == ("Forward", "out"):
            out += decode(ForwardReply, modeling_pb2.ForwardResponse.FromString(blob).body).sealed_partials
        elif (rpc, direction) == ("Backward", "in"):
            out += decode(BackwardRequest, modeling_pb2.BackwardRequest.FromString(blob).body).sealed_residuals
        elif (rpc, direction) == ("Backward", "out"):
            out += decode(BackwardReply, modeling_pb2.BackwardResponse.FromString(blob).body).sealed_squares
    return out


def test_the_node_sees_sealed_boxes_and_no_labels_or_features(platform: Platform, pki: Any) -> None:
    platform.captured.clear()
    job = platform.job("breast-privacy", epochs=3)
    train(job)
    blobs = [b for *_, b in platform.captured]
    rpcs = {rpc for _, _, rpc, _ in platform.captured}
    assert {"Forward", "Backward", "EncryptPartial", "ComputeGradient", "ExchangePsi", "RespondPsi"} <= rpcs
    assert sum(len(b) for b in blobs) > 1_000_000
    # 1. every sealed payload is addressed to the bank or a provider, never to the node, and the
    #    node's own sealing key cannot open any of them, while the recipient's can
    node_key = SealingKey.load(party_dir(pki.root, "node", "node") / "sealing.key")
    keys = {p: SealingKey.load(party_dir(pki.root, "provider", p) / "sealing.key") for p in PROVIDERS}
    keys["bank-a"] = SealingKey.load(party_dir(pki.root, "institution", "bank-a") / "sealing.key")
    sealed = _sealed_payloads(platform.captured)
    partials: list[bytes] = []
    assert len(sealed) >= 12 * 2 * 4  # 12 batches: per provider a partial and a residual, each in and out
    for blob in sealed:
        box = common_pb2.SealedBox.FromString(blob)
        assert box.recipient_id in keys and box.recipient_id != "node"
        assert box.content_type in (SEALED_PARTIAL, SEALED_RESIDUAL, SEALED_SQUARE)
        for recipient in (box.recipient_id, "node"):
            with pytest.raises(SignatureError):
                node_key.open(box, recipient_id=recipient, content_type=box.content_type, context=box.context)
        inner = keys[box.recipient_id].open(
            box, recipient_id=box.recipient_id, content_type=box.content_type, context=box.context
        )
        if box.content_type == SEALED_PARTIAL:
            partials.append(decode(PartialLogits, inner).ciphertext)
    # what the boxes hide is readable to their recipient (plain backend: the partial logits
    # themselves), and the node's bytes never hold any of it outside a box
    started = next(
        decode(JobStarted, modeling_pb2.StartTrainingResponse.FromString(b).body)
        for _, d, rpc, b in platform.captured
        if (rpc, d) == ("StartTraining", "out")
    )
    public = load_public("plain", started.he_public)
    taus = searchable(np.concatenate([public.deserialize(c).values for c in partials]))
    assert taus.size > 1000 and found(taus, partials) > 0
    assert found(taus, [b for *_, b in platform.captured]) == 0, "partial logits visible to the node"
    # 2. no raw feature value of any party, in any encoding at any alignment, and no label
    bank = read_bank_table(platform.guest, party_id="bank-a", label_column=LABEL)
    host_x = np.hstack([data.read_table(platform.hosts[p], label=False).x for p in PROVIDERS])
    features = searchable(np.concatenate([bank.x.ravel(), host_x.ravel()]))
    assert features.size > 5000
    assert found(features, blobs) == 0, "raw features visible to the node"
    planted = bytes(blobs[0]) + np.asarray(bank.x[:3, 0], dtype="<f8").tobytes()
    assert found(features, [planted]) >= 3  # the scan does find a value when there is one
    text = [b.decode("latin-1") for b in blobs]
    assert not any(LABEL in t for t in text)
    assert bank.y is not None
    for dtype in ("<f8", np.uint8):  # labels as numbers or bytes, in runs of 64 rows of the bank's file
        encoded = bank.y.astype(dtype).tobytes()
        width = len(encoded) // bank.y.size
        runs = [encoded[k * width : (k + 64) * width] for k in range(0, bank.y.size - 64, 32)]
        assert not any(run in b for run in runs for b in blobs)
    # 3. nor in what the node stored
    stored = b"".join(p.read_bytes() for p in platform.root.glob("node.db*"))
    assert found(features, [stored]) == 0
    assert LABEL.encode() not in stored
    cells = {c for line in platform.guest.read_text().splitlines()[1:] for c in line.split(",")[2:] if len(c) > 5}
    cells |= {
        c
        for p in PROVIDERS
        for line in platform.hosts[p].read_text().splitlines()[1:]
        for c in line.split(",")[1:]
        if len(c) > 5
    }
    stored_text = stored.decode("latin-1")
    assert len(cells) > 5000 and not [c for c in cells if c in stored_text]


# -- scoring enterprises ---------------------------------------------------------------------------


def test_scoring_needs_a_consent_for_credit_scoring_and_counts_its_uses(platform: Platform, pki: Any) -> None:
    from xinrong.bank.modeling import bank_features_for, load_model, score_enterprises
    from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, grant

    job = platform.job("breast-score", epochs=3)
    train(job)
    model, share = load_model(job.output)
    bank, hosts = breast_tables()
    period = ("2025-01-01", "2026-12-31")
    scope = ("tax.*", "electricity.*")
    targets = list(bank.ids[:6])
    consents: dict[str, str] = {}
    with EnterpriseClient(job.node, pki.enterprise(targets[0])) as ent:  # valid, one use
        consents[targets[0]] = ent.register(
            grant(pki.enterprise(targets[0]), ConsentRequest("bank-a", "credit_scoring", scope, *period, max_uses=1))
        ).consent_id
    with EnterpriseClient(job.node, pki.enterprise(targets[1])) as ent:  # revoked
        consents[targets[1]] = ent.register(
            grant(pki.enterprise(targets[1]), ConsentRequest("bank-a", "credit_scoring", scope, *period))
        ).consent_id
        ent.revoke(consents[targets[1]])
    with EnterpriseClient(job.node, pki.enterprise(targets[2])) as ent:  # another purpose
        consents[targets[2]] = ent.register(
            grant(pki.enterprise(targets[2]), ConsentRequest("bank-a", "loan_application", scope, *period))
        ).consent_id
    with EnterpriseClient(job.node, pki.enterprise(targets[3])) as ent:  # for another bank
        consents[targets[3]] = ent.register(
            grant(pki.enterprise(targets[3]), ConsentRequest("bank-b", "credit_scoring", scope, *period))
        ).consent_id
    with EnterpriseClient(job.node, pki.enterprise(targets[4])) as ent:  # a scope without one provider
        consents[targets[4]] = ent.register(
            grant(pki.enterprise(targets[4]), ConsentRequest("bank-a", "credit_scoring", ("tax.*",), *period))
        ).consent_id
    subjects = [(u, consents.get(u, "")) for u in targets]  # the sixth has none
    creds = platform_creds(platform, "bank-a")
    with ModelingClient(job.node, creds) as client:
        results = score_enterprises(client, creds, model, share, subjects, bank_features_for(model, share, targets))
        again = score_enterprises(
            client, creds, model, share, subjects[:1], bank_features_for(model, share, targets[:1])
        )
    outcome = {r.enterprise: (r.scored, r.reason) for r in results}
    assert outcome == {
        targets[0]: (True, ""),
        targets[1]: (False, "CONSENT_REVOKED"),
        targets[2]: (False, "CLAIM_OUT_OF_SCOPE"),
        targets[3]: (False, "ACCESS_DENIED"),
        targets[4]: (False, "CLAIM_OUT_OF_SCOPE"),
        targets[5]: (False, "ACCESS_DENIED"),
    }
    assert [(r.scored, r.reason) for r in again] == [(False, "CONSENT_USES_EXHAUSTED")]
    # the one score is the model's: every party's share applied to that enterprise's own rows
    logit = share.partial_scores(bank.x[:1])[0]
    for host in hosts:
        provider_share = ModelShare.load(platform.share(host.name, job.job_id))
        logit += provider_share.partial_scores(host.x[[host.ids.index(targets[0])]])[0]
    assert results[0].probability is not None
    assert abs(results[0].probability - 1 / (1 + np.exp(-logit))) < 1e-5
    assert results[0].grade in {"A", "B", "C", "D", "E"}
    # every decision is in the node's audit log, as metadata
    conn = sqlite3.connect(f"file:{platform.root / 'node.db'}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT decision, reason, enterprise FROM audit_log WHERE method = 'ScoreEnterprises'"
    ).fetchall()
    conn.close()
    assert sorted(r[0] for r in rows) == ["ALLOWED"] + ["REFUSED"] * 6
