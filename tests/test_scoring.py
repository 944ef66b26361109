"""Private scoring: end to end with three providers, who-sees-what, and the scorecard math."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xinrong.modeling import scoring
from xinrong.modeling.he import base, ckks

PROVIDERS = ("tax", "social-insurance", "utilities")


@pytest.fixture(scope="module")
def bank_secret() -> base.HESecret:
    return scoring.bank_keygen()


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    n = 5000  # two ciphertexts at the scoring parameters (4096 slots)
    data = {name: rng.normal(0, 1, (n, 3 + i)) for i, name in enumerate(PROVIDERS)}
    data.update({f"w:{name}": rng.normal(0, 0.4, 3 + i) for i, name in enumerate(PROVIDERS)})
    data["bank_x"] = rng.normal(0, 1, (n, 2))
    data["bank_w"] = np.array([0.3, -0.2])
    return data


def _contributions(public: base.HEPublic, batch: dict[str, np.ndarray], request: str = "req-1") -> list[bytes]:
    return [scoring.provider_encrypt(public, request, name, batch[name], batch[f"w:{name}"]) for name in PROVIDERS]


def test_scoring_end_to_end(bank_secret: base.HESecret, batch: dict[str, np.ndarray]) -> None:
    published = scoring.bank_public_bytes(bank_secret)
    provider_side = base.load_public("ckks", published)
    node_side = base.load_public("ckks", published)
    summed = scoring.aggregate(node_side, _contributions(provider_side, batch))
    result = scoring.bank_score(
        bank_secret,
        summed,
        request_id="req-1",
        expected_providers=PROVIDERS,
        bank_partial=scoring.partial_scores(batch["bank_x"], batch["bank_w"]),
        intercept=-1.5,
    )
    z = sum(batch[n] @ batch[f"w:{n}"] for n in PROVIDERS) + batch["bank_x"] @ batch["bank_w"] - 1.5
    np.testing.assert_allclose(result.logit, z, atol=1e-6)
    np.testing.assert_allclose(result.probability, 1 / (1 + np.exp(-z)), atol=1e-7)
    card = scoring.Scorecard()
    expected_points = np.round(card.offset - card.factor * z).astype(int)
    assert np.mean(np.array(result.points) == expected_points) > 0.999  # rounding ties aside
    assert set(result.grade) <= {"A", "B", "C", "D", "E"}
    assert result.rows()[0].keys() == {"probability", "score", "grade"}
    assert result.providers == tuple(sorted(PROVIDERS))


def test_node_cannot_decrypt(bank_secret: base.HESecret, batch: dict[str, np.ndarray]) -> None:
    node_side = base.load_public("ckks", scoring.bank_public_bytes(bank_secret))
    assert not isinstance(node_side, base.HESecret)
    assert not hasattr(node_side, "decrypt")
    summed = scoring.aggregate(node_side, _contributions(node_side, batch))
    enc = node_side.deserialize(base.unpack_blobs(summed)[1])
    # the node's key object holds no secret key or decryptor; a SEAL ciphertext cannot decrypt itself
    import tenseal.sealapi as seal

    assert not any(isinstance(v, (seal.SecretKey, seal.Decryptor)) for v in vars(node_side).values())
    assert not hasattr(enc.parts[0], "decrypt")


def test_bank_receives_only_the_sum(bank_secret: base.HESecret, batch: dict[str, np.ndarray]) -> None:
    """What reaches the bank is the node's sum: no provider's partial score, in the clear or encrypted."""
    public = base.load_public("ckks", scoring.bank_public_bytes(bank_secret))
    contributions = _contributions(public, batch)
    summed = scoring.aggregate(public, contributions)
    received = base.unpack_blobs(summed)[1]
    decrypted = bank_secret.decrypt(bank_secret.deserialize(received))
    partials = {n: batch[n] @ batch[f"w:{n}"] for n in PROVIDERS}
    np.testing.assert_allclose(decrypted, sum(partials.values()), atol=1e-6)
    for partial in partials.values():
        assert np.max(np.abs(decrypted - partial)) > 1.0  # not any single provider's scores
        assert abs(np.corrcoef(decrypted - partial, partial)[0, 1]) < 0.05  # nor separable from the sum
    for blob in contributions:
        assert base.unpack_blobs(blob)[1] != received  # the node added, it did not forward
    # The bank refuses anything but a node aggregate (e.g. a forwarded provider payload).
    with pytest.raises(ValueError, match="aggregate"):
        scoring.bank_score(bank_secret, contributions[0], request_id="req-1", expected_providers=PROVIDERS[:1])


def test_contributions_are_randomized(bank_secret: base.HESecret, batch: dict[str, np.ndarray]) -> None:
    public = base.load_public("ckks", scoring.bank_public_bytes(bank_secret))
    name = PROVIDERS[0]
    first = scoring.provider_encrypt(public, "r", name, batch[name], batch[f"w:{name}"])
    second = scoring.provider_encrypt(public, "r", name, batch[name], batch[f"w:{name}"])
    assert base.unpack_blobs(first)[1] != base.unpack_blobs(second)[1]


def test_binding_checks(bank_secret: base.HESecret, batch: dict[str, np.ndarray]) -> None:
    public = base.load_public("ckks", scoring.bank_public_bytes(bank_secret))
    contributions = _contributions(public, batch)
    other = _contributions(public, batch, request="req-2")
    with pytest.raises(ValueError, match="different requests"):
        scoring.aggregate(public, [contributions[0], other[1]])
    with pytest.raises(ValueError, match="duplicate"):
        scoring.aggregate(public, [contributions[0], contributions[0]])
    with pytest.raises(ValueError, match="at least 2"):
        scoring.aggregate(public, contributions[:1], min_providers=2)
    foreign = ckks.keygen(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 60))
    foreign_public = ckks.load_public(foreign.public_bytes(with_relin_keys=False))
    stranger = scoring.provider_encrypt(foreign_public, "req-1", "court", batch["tax"], batch["w:tax"])
    with pytest.raises(ValueError, match="another key"):
        scoring.aggregate(public, [contributions[0], stranger])
    summed = scoring.aggregate(public, contributions[:2])
    with pytest.raises(ValueError, match="model's providers"):
        scoring.bank_score(bank_secret, summed, request_id="req-1", expected_providers=PROVIDERS)
    with pytest.raises(ValueError, match="another request"):
        scoring.bank_score(bank_secret, summed, request_id="req-2", expected_providers=PROVIDERS[:2])


def test_scorecard_points_to_double_odds() -> None:
    card = scoring.Scorecard()
    # 600 points at good:bad 50:1, i.e. P(bad) = 1/51.
    assert card.score_from_probability(np.array([1 / 51]))[0] == pytest.approx(600.0)
    assert card.score_from_logit(np.array([math.log(1 / 50)]))[0] == pytest.approx(600.0)
    # +20 points doubles the odds, everywhere on the scale.
    for odds in (0.5, 3.0, 50.0, 400.0):
        p = 1 / (1 + odds)
        p2 = 1 / (1 + 2 * odds)
        s, s2 = card.score_from_probability(np.array([p, p2]))
        assert s2 - s == pytest.approx(20.0)
    assert card.odds_at(620.0) == pytest.approx(100.0)
    assert card.odds_at(580.0) == pytest.approx(25.0)
    assert [card.grade(s) for s in (700, 620, 619.9, 580, 540, 500, 499.9)] == ["A", "A", "B", "B", "C", "D", "E"]
    custom = scoring.Scorecard(base_score=500, base_odds=20, pdo=50)
    assert custom.score_from_probability(np.array([1 / 41]))[0] == pytest.approx(550.0)
    with pytest.raises(ValueError):
        scoring.Scorecard(bands=((500.0, "A"), (600.0, "B")))


@pytest.mark.slow
def test_batch_goal_measurement() -> None:
    """100,000 enterprises x 3 providers: correct to 1e-6 (the time goes to the JSON benchmark)."""
    result = scoring.measure_batch(rows=100_000, providers=3)
    assert result["max_abs_logit_error"] < 1e-6
    assert result["max_abs_points_error"] <= 1
    print(result)
