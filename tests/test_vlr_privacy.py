"""Privacy of the training and scoring protocols, checked on what each party actually receives.

The node is honest-but-curious: it follows the protocol and keeps everything
it sees. ``LocalFederation(capture=True)`` records every byte string the
node receives or sends; these tests show that nothing in it is a raw
feature, a label, a partial logit or an unmasked gradient; that the values
the node does decrypt are masked (uncorrelated with the truth across runs),
so it cannot replay the optimizer to rebuild anyone's weights; that
providers only ever get label-derived data as ciphertexts under the node's
key; and that the bank only gets partial logits as ciphertexts. Flow tests
run on the plain backend (no HE: what is tested is the protocol's message
flow, sealing and masking); the tests about ciphertexts run small real
CKKS and Paillier keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xinrong.modeling.he import base
from xinrong.modeling.vlr.bank import BankParty
from xinrong.modeling.vlr.config import TrainConfig
from xinrong.modeling.vlr.messages import (
    SEALED_PARTIAL,
    SEALED_RESIDUAL,
    BackwardReply,
    BackwardRequest,
    ForwardReply,
    GradientRequest,
    JobSetup,
    UpdateRequest,
)
from xinrong.modeling.vlr.node import NodeCoordinator
from xinrong.modeling.vlr.party import Optimizer
from xinrong.modeling.vlr.provider import ProviderParty
from xinrong.modeling.vlr_wire import decode
from xinrong.tools.federation import LocalFederation, Traffic
from xinrong.tools.federation_job import score_rows
from xinrong.v1 import common_pb2

from support.byte_scan import found, searchable

# -- data and runs -----------------------------------------------------------------------------


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)) * np.array([1e3, 1, 5, 1, 1e2, 1, 1, 3]) + 10
    y = (rng.random(n) < 1 / (1 + np.exp(-(x - 10) @ (rng.normal(size=8) / [1e3, 1, 5, 1, 1e2, 1, 1, 3])))).astype(
        float
    )
    return x[:, :2], y, {"tax": x[:, 2:5], "power": x[:, 5:]}


def _federation(
    tmp: Path, *, n: int = 200, seed: int = 0, secret: Any = None, epochs: int = 1, batch: int = 50
) -> LocalFederation:
    bx, y, prov = _data(n, seed)
    config = TrainConfig(job_id="priv", epochs=epochs, batch_size=batch, seed=seed, missing_indicators=False)
    bank = BankParty("bank-a", config, bx, ["b0", "b1"], y)
    providers = [ProviderParty(p, x, [f"{p}{i}" for i in range(x.shape[1])], min_batch_rows=8) for p, x in prov.items()]
    fed = LocalFederation(bank, providers, secret or base.keygen("plain"), workdir=tmp, capture=True)
    fed.start(n, np.arange(n))
    return fed


@pytest.fixture()
def spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Record, inside the parties, the secrets the node must never see."""
    seen: dict[str, list[Any]] = {"grads": [], "taus": [], "node_sums": []}
    step = Optimizer.step

    def spy_step(self: Optimizer, grad_sum: np.ndarray, *a: Any, **k: Any) -> None:
        seen["grads"].append((id(self), np.array(grad_sum)))
        step(self, grad_sum, *a, **k)

    encrypt = ProviderParty.encrypt

    def spy_encrypt(self: ProviderParty, msg: Any) -> Any:
        out = encrypt(self, msg)
        seen["taus"].append((self.party_id, msg.epoch, msg.batch, np.array(self._tau)))
        return out

    decrypt = NodeCoordinator._decrypt_sums

    def spy_decrypt(self: NodeCoordinator, batch: Any, party: str, payload: bytes) -> bytes:
        out = decrypt(self, batch, party, payload)
        seen["node_sums"].append((party, np.frombuffer(out, dtype="<f8").copy()))
        return out

    monkeypatch.setattr(Optimizer, "step", spy_step)
    monkeypatch.setattr(ProviderParty, "encrypt", spy_encrypt)
    monkeypatch.setattr(NodeCoordinator, "_decrypt_sums", spy_decrypt)
    return seen


def _pairs(fed: LocalFederation, seen: dict[str, list[Any]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(what the node decrypted, the true gradient sum) per party and batch, in protocol order."""
    owner = {id(fed.bank.opt): "bank-a", **{id(p.opt): p.party_id for p in fed.providers}}
    truth: dict[str, list[np.ndarray]] = {}
    for opt_id, g in seen["grads"]:
        truth.setdefault(owner[opt_id], []).append(g)
    node: dict[str, list[np.ndarray]] = {}
    for party, v in seen["node_sums"]:
        node.setdefault(party, []).append(v)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for party in truth:
        assert len(truth[party]) == len(node[party])
        out.extend(zip(node[party], truth[party]))
    return out


# -- the node's view -----------------------------------------------------------------------------


def test_node_sees_only_sealed_boxes_masked_sums_and_control(tmp_path: Path, spies: dict[str, list[Any]]) -> None:
    fed = _federation(tmp_path, epochs=2)
    result = fed.run()
    view = result.traffic.node_view
    kinds = {c.kind for c in view}
    assert kinds <= {
        "JobStart",
        "JobStarted",
        "JobSetup",
        "SetupAck",
        "ForwardRequest",
        "BoundRequest",
        "BoundReport",
        "EncryptRequest",
        "SealedPartialLogits",
        "ForwardReply",
        "BackwardRequest",
        "GradientRequest",
        "GradientReply",
        "UpdateRequest",
        "UpdateAck",
        "BackwardReply",
        "EpochEnd",
        "EpochAck",
        "FinishRequest",
        "FinishAck",
    }, kinds
    sealed: list[bytes] = []
    for c in view:
        if c.kind == "SealedPartialLogits":
            sealed.append(c.data)
        elif c.kind == "ForwardReply":
            sealed.extend(decode(ForwardReply, c.data).sealed_partials)
        elif c.kind == "BackwardRequest":
            sealed.extend(decode(BackwardRequest, c.data).sealed_residuals)
        elif c.kind == "GradientRequest":
            sealed.append(decode(GradientRequest, c.data).sealed_residual)
    assert sealed
    for blob in sealed:
        box = common_pb2.SealedBox.FromString(blob)
        assert box.recipient_id in {"bank-a", "tax", "power"}  # never the node, which has no sealing key
        assert box.content_type in {SEALED_PARTIAL, SEALED_RESIDUAL}
    # No raw feature, partial logit or unmasked gradient appears anywhere in the node's bytes,
    # at any alignment (the plain backend's "ciphertexts" are plaintext inside the sealed boxes).
    bx, _y, prov = _data(200, 0)
    blobs = [c.data for c in view]
    secrets = {
        "raw features": searchable(np.concatenate([bx.ravel(), *[x.ravel() for x in prov.values()]])),
        "partial logits": searchable(np.concatenate([t for *_, t in spies["taus"]])),
        "unmasked gradients": searchable(np.concatenate([g for _, g in spies["grads"]])),
        "standardized features": searchable(np.concatenate([p.x.ravel() for p in fed.providers])),
    }
    for what, values in secrets.items():
        assert values.size > 50, what
        assert found(values, blobs) == 0, f"{what} visible to the node"
    # the node's own decryptions are the masked sums it returns, nothing else
    returned = [decode(UpdateRequest, c.data).masked_sums for c in view if c.kind == "UpdateRequest"]
    returned += [decode(BackwardReply, c.data).masked_sums for c in view if c.kind == "BackwardReply"]
    assert sorted(returned) == sorted(v.astype("<f8").tobytes() for _, v in spies["node_sums"])


def test_decrypted_values_are_uncorrelated_with_true_gradients(tmp_path: Path, spies: dict[str, list[Any]]) -> None:
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for run in range(40):  # repeated runs on different data: 9,000 released coordinates
        spies["grads"].clear()
        spies["node_sums"].clear()
        fed = _federation(tmp_path / str(run), seed=run, n=400, batch=16)
        fed.run()
        pairs.extend(_pairs(fed, spies))
    released = np.concatenate([a for a, _ in pairs])
    truth = np.concatenate([b for _, b in pairs])
    assert released.size >= 9_000  # |corr| < 0.05 is 4.7 standard errors of independent samples
    assert truth.std() > 0.1  # the gradients really vary
    corr = np.corrcoef(released, truth)[0, 1]
    assert abs(corr) < 0.05, corr
    # and a released value is nowhere near its true value
    assert np.median(np.abs(released - truth)) > 1e3 * np.median(np.abs(truth))


def test_node_cannot_rebuild_any_weights(tmp_path: Path, spies: dict[str, list[Any]]) -> None:
    """FATE's arbiter ends up holding the model; replaying our node's view gives noise."""
    errors, true_all, hat_all = [], [], []
    for run in range(30):
        spies["grads"].clear()
        spies["node_sums"].clear()
        fed = _federation(tmp_path / str(run), seed=100 + run, epochs=2, batch=50)
        result = fed.run()
        cfg = fed.node.config
        assert cfg is not None
        by_party: dict[str, list[np.ndarray]] = {}
        for party, v in spies["node_sums"]:
            by_party.setdefault(party, []).append(v)
        final = {"bank-a": np.r_[result.bank_share.weights, result.bank_share.intercept]}
        final.update({p: np.asarray(s.weights) for p, s in result.provider_shares.items()})
        for party, sums in by_party.items():
            # the node knows lr, momentum, l2 (the config), batch sizes and every shrink: replay them
            w = np.zeros_like(sums[0])
            v = np.zeros_like(sums[0])
            for _i, s in enumerate(sums):
                la = w + cfg.momentum * v
                v = cfg.momentum * v - cfg.learning_rate * (s / 50 + cfg.l2 * la)
                w = w + v
            errors.append(np.median(np.abs(w - final[party]) / (np.abs(final[party]) + 1e-9)))
            true_all.append(final[party])
            hat_all.append(w)
    assert np.median(errors) > 1e3
    corr = np.corrcoef(np.concatenate(hat_all), np.concatenate(true_all))[0, 1]
    assert abs(corr) < 0.2, corr


# -- providers and the bank ------------------------------------------------------------------------


def _sent_to(view: list[Any], party: str) -> list[Any]:
    return [c for c in view if c.direction == "out" and c.peer == party]


def test_providers_get_labels_only_as_ciphertexts_they_cannot_open(tmp_path: Path) -> None:
    """Everything a provider receives, by kind; the only label-derived item is [[d]] under the node key."""
    fed = _federation(tmp_path, secret=base.keygen("ckks"), n=120, batch=60)
    result = fed.run()
    for provider in fed.providers:
        got = _sent_to(result.traffic.node_view, provider.party_id)
        kinds = {c.kind for c in got}
        assert kinds == {
            "JobSetup",
            "BoundRequest",
            "EncryptRequest",
            "GradientRequest",
            "UpdateRequest",
            "EpochEnd",
            "FinishRequest",
        }
        setup = decode(JobSetup, next(c.data for c in got if c.kind == "JobSetup"))
        # labels never travel in the clear: the config and row list carry none
        assert "y" not in TrainConfig.from_json(setup.config_json).to_json().split('"')
        for c in got:
            if c.kind == "GradientRequest":
                box = common_pb2.SealedBox.FromString(decode(GradientRequest, c.data).sealed_residual)
                assert box.recipient_id == provider.party_id and box.content_type == SEALED_RESIDUAL
        # the provider holds only a public CKKS context: it can compute on [[d]] but never decrypt it
        he = provider.he
        assert he is not None and not hasattr(he, "decrypt")
        assert not isinstance(he, base.HESecret)


def _paillier_decode(public: Any, data: bytes) -> np.ndarray:
    """FATE's bug as an attack: read m = (c - 1) / n from each captured ciphertext, as a float."""
    vec = public.deserialize(data)
    n = int(public.n)
    out = []
    for c in vec.cts:
        m = ((int(c) - 1) // n) % n
        m = m - n if m > n // 2 else m
        out.append(m / 2.0**vec.scale)
    return np.array(out)


def test_paillier_ciphertexts_are_randomized_and_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal plaintexts never give equal ciphertexts; (c-1)/n says nothing about logits or labels."""
    secret = base.keygen("paillier", n_bits=1024, allow_small_key=True)
    received: list[tuple[str, bytes]] = []
    backward = BankParty.backward

    def spy_backward(self: BankParty, reply: Any, partials: Any) -> Any:
        received.extend(("partial", p.ciphertext) for p in partials)
        out = backward(self, reply, partials)
        received.extend(("residual", r.ciphertext) for r in out.residuals)
        return out

    monkeypatch.setattr(BankParty, "backward", spy_backward)
    fed = _federation(tmp_path, secret=secret, n=120, batch=60, epochs=1)
    fed.run()
    public: Any = fed.providers[0].he
    first_partial = _paillier_decode(public, received[0][1])
    assert received[0][0] == "partial"
    # batch 0, epoch 0: every provider weight is 0, so every plaintext is 0 -- yet ...
    raw = public.deserialize(received[0][1]).cts
    assert len({int(c) for c in raw}) == len(raw)  # ... no two ciphertexts are equal
    assert np.all(first_partial != 0.0)  # ... and (c-1)/n is not the plaintext
    _bx, y, _ = _data(120, 0)
    rows = fed.bank.batches(0)[0]
    residuals = [d for k, d in received if k == "residual"]
    decoded = _paillier_decode(public, residuals[0])
    ranks = np.argsort(np.argsort(decoded))  # rank correlation: the decoded values are huge
    assert abs(np.corrcoef(ranks, y[rows])[0, 1]) < 0.4  # 60 rows: noise level ~0.13
    all_cts = [int(c) for _, d in received for c in public.deserialize(d).cts]
    assert len(set(all_cts)) == len(all_cts)


def test_bank_never_holds_a_plaintext_partial_logit(tmp_path: Path, spies: dict[str, list[Any]]) -> None:
    fed = _federation(tmp_path, secret=base.keygen("ckks"), n=120, batch=60, epochs=2)
    result = fed.run()
    bank_he = fed.bank.he
    assert bank_he is not None and not hasattr(bank_he, "decrypt") and not isinstance(bank_he, base.HESecret)
    # what reaches the bank: sealed partials (CKKS ciphertexts inside), masked sums, control
    got = _sent_to(result.traffic.node_view, "bank-a")
    assert {c.kind for c in got} == {"JobStarted", "ForwardReply", "BackwardReply", "EpochAck"}
    taus = searchable(np.concatenate([t for *_, t in spies["taus"]]))
    assert taus.size > 100 and found(taus, [c.data for c in got]) == 0


def test_scoring_node_view(tmp_path: Path) -> None:
    """Scoring: the node adds ciphertexts under the bank's key; the bank gets only the sum."""
    fed = _federation(tmp_path, n=200, batch=100, epochs=1)
    result = fed.run()
    bx, _y, prov = _data(200, 0)
    traffic = Traffic(capture=True)
    logits = score_rows(
        result.bank_share,
        bx,
        {p: (result.provider_shares[p], x) for p, x in prov.items()},
        request_id="score-1",
        traffic=traffic,
    )
    partial = {p: result.provider_shares[p].partial_scores(x) for p, x in prov.items()}
    np.testing.assert_allclose(logits, result.bank_share.partial_scores(bx) + sum(partial.values()), atol=1e-6)
    view = traffic.node_view
    assert {c.kind for c in view} == {"ScoringKey", "PartialScores", "AggregateScores"}
    to_bank = [c for c in view if c.direction == "out" and c.peer == "bank-a"]
    assert [c.kind for c in to_bank] == ["AggregateScores"]  # one aggregate, never a partial
    for p, s in partial.items():
        assert found(searchable(s), [c.data for c in view]) == 0, f"{p} partial scores visible"
