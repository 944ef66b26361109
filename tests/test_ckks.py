"""CKKS backend: correctness of the HE operations, masking, flooding and serialization.

Most tests run at the real default parameters (N = 16384, 320-bit chain):
the level budget and the mask room are the point. Layout-only tests use a
small but valid N = 8192 key.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as seal

from xinrong.modeling.he import base, ckks
from xinrong.modeling.he.ckks.evaluator import primes_of
from xinrong.modeling.he.ckks.serialization import COL_FIELDS, HEADER, PUBLIC_MAGIC, seal_save


@pytest.fixture(scope="module")
def secret() -> ckks.CKKSSecret:
    return ckks.keygen()


@pytest.fixture(scope="module")
def public(secret: ckks.CKKSSecret) -> ckks.CKKSPublic:
    return ckks.load_public(secret.public_bytes())


@pytest.fixture(scope="module")
def small() -> ckks.CKKSSecret:
    # N = 8192 (4096 slots), three data primes: one plaintext product, then masks.
    return ckks.keygen(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 40, 40, 60))


def _sigmoid_fit(degree: int, half_width: float) -> list[float]:
    """Least-squares sigmoid fit on t = z / half_width in [-1, 1] (normalized inputs)."""
    t = np.linspace(-1.0, 1.0, 2001)
    coeffs = np.polynomial.polynomial.polyfit(t, 1.0 / (1.0 + np.exp(-half_width * t)), degree)
    return [float(c) for c in coeffs]


# -- parameters -------------------------------------------------------------


def test_default_level_budget() -> None:
    params = ckks.CKKSParams()
    params.validate()
    assert sum(params.coeff_mod_bit_sizes) <= 438
    assert params.mask_primes() == 2  # 60 + 40 bits hold 2**40-sized masks
    assert params.max_degree == 7  # 3 polyval levels (weights ride on them) + features + mask room
    # one more 40-bit prime doubles the reachable degree
    assert ckks.CKKSParams(coeff_mod_bit_sizes=(60,) + (40,) * 6 + (60,)).max_degree == 15


@pytest.mark.parametrize(
    "overrides",
    [
        {"coeff_mod_bit_sizes": (60, 40, 40, 40, 40, 40, 40, 40, 40, 60)},  # 440 bits > 438
        {"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": (50, 30, 50)},  # 130 bits > 109 at N = 4096
        {"coeff_mod_bit_sizes": (61, 40, 40, 60)},  # prime above SEAL's 60 bits
        {"coeff_mod_bit_sizes": (60, 30, 40, 60)},  # rescaling prime != scale
        {"poly_modulus_degree": 12000},
        {"value_bound": 0.0},
        {"mask_bits": 60},
    ],
)
def test_rejects_bad_parameters(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ckks.keygen(**overrides)  # type: ignore[arg-type]


def test_dispatch_through_base(secret: ckks.CKKSSecret) -> None:
    public = base.load_public("ckks", secret.public_bytes(with_relin_keys=False))
    assert isinstance(public, base.HEPublic)
    assert isinstance(secret, base.HESecret)
    assert public.key_id() == secret.key_id()


# -- arithmetic -------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 1000, 4096, 10000])
def test_encrypt_decrypt_layouts(small: ckks.CKKSSecret, n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.normal(0, 3, n)
    enc = small.encrypt(values)
    assert small.length(enc) == n
    assert len(enc.parts) == math.ceil(n / small.slots)
    np.testing.assert_allclose(small.decrypt(enc), values, atol=1e-6)


def test_add_add_plain_mul_plain_multi_ciphertext(small: ckks.CKKSSecret) -> None:
    rng = np.random.default_rng(1)
    n = 9000  # three ciphertexts of 4096 slots
    a, b, w = rng.normal(0, 2, n), rng.normal(0, 2, n), rng.uniform(-1, 1, n)
    ea, eb = small.encrypt(a), small.encrypt(b)
    np.testing.assert_allclose(small.decrypt(small.add(ea, eb)), a + b, atol=1e-6)
    np.testing.assert_allclose(small.decrypt(small.add_plain(ea, b)), a + b, atol=1e-6)
    np.testing.assert_allclose(small.decrypt(small.add_plain(ea, 2.5)), a + 2.5, atol=1e-6)
    # Plaintext factors are encoded at the scale of the prime the rescale drops: no scale error.
    np.testing.assert_allclose(small.decrypt(small.mul_plain(ea, w)), a * w, rtol=1e-8, atol=1e-6)
    np.testing.assert_allclose(small.decrypt(small.mul_plain(ea, -0.5)), a * -0.5, rtol=1e-8, atol=1e-6)
    # A zero factor is a fresh encryption of zero (SEAL refuses transparent products), one level down.
    zero = small.mul_plain(ea, np.zeros(n))
    np.testing.assert_allclose(small.decrypt(zero), 0.0, atol=1e-6)
    assert primes_of(zero.parts[0]) == primes_of(ea.parts[0]) - 1
    with pytest.raises(ValueError):
        small.add(ea, small.encrypt(a[:100]))
    with pytest.raises(ValueError):
        small.mul_plain(ea, w[:-1])
    with pytest.raises(ValueError):
        small.encrypt(np.array([1.0, np.nan]))


def test_tiled_vectors_keep_every_copy_consistent(small: ckks.CKKSSecret) -> None:
    # 1000 values fit four times in 4096 slots; every op must act on all copies.
    rng = np.random.default_rng(2)
    a, w = rng.normal(0, 1, 1000), rng.normal(0, 1, 1000)
    enc = small.mul_plain(small.add_plain(small.encrypt(a), w), w)
    slots = small._real_slots_of(enc.parts[0])
    expected = (a + w) * w
    for copy in range(4):
        np.testing.assert_allclose(slots[copy * 1000 : (copy + 1) * 1000], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("degree", "half_width"), [(3, 8.0), (5, 10.0), (7, 12.0)])
def test_polyval_sigmoid_fits(secret: ckks.CKKSSecret, public: ckks.CKKSPublic, degree: int, half_width: float) -> None:
    rng = np.random.default_rng(degree)
    t = rng.uniform(-1, 1, 10000)
    coeffs = _sigmoid_fit(degree, half_width)
    enc = public.polyval(public.encrypt(t), coeffs)
    got = secret.decrypt(enc)
    np.testing.assert_allclose(got, np.polynomial.polynomial.polyval(t, coeffs), atol=1e-4)
    # Depth ceil(log2(degree + 1)): the rest of the chain stays for the features and the masks.
    depth = math.ceil(math.log2(degree + 1))
    assert primes_of(enc.parts[0]) == secret.params.data_primes - depth


def test_polyval_row_weights_cost_no_level(secret: ckks.CKKSSecret, public: ckks.CKKSPublic) -> None:
    """w * p(t) at the depth of p alone, for every degree the default chain evaluates."""
    rng = np.random.default_rng(21)
    n = 9000  # two ciphertexts
    t = rng.uniform(-1, 1, n)
    w = np.where(rng.random(n) < 0.2, 0.0, 1.25)  # decoys zeroed, real rows up-weighted
    for degree in (1, 3, 5, 7):
        coeffs = _sigmoid_fit(degree, 10.0)
        enc = public.polyval(public.encrypt(t), coeffs, row_weights=w)
        truth = w * np.polynomial.polynomial.polyval(t, coeffs)
        np.testing.assert_allclose(secret.decrypt(enc), truth, atol=1e-4)
        depth = math.ceil(math.log2(degree + 1))
        assert all(primes_of(p) == secret.params.data_primes - depth for p in enc.parts)
    # the constant polynomial with weights is the weight vector itself, encrypted
    const = public.polyval(public.encrypt(t), [0.5], row_weights=w)
    np.testing.assert_allclose(secret.decrypt(const), 0.5 * w, atol=1e-6)
    with pytest.raises(ValueError):
        public.polyval(public.encrypt(t), coeffs, row_weights=w[:-1])


def test_second_polyval_reuses_powers(secret: ckks.CKKSSecret, public: ckks.CKKSPublic) -> None:
    """The bank's loss polynomial shares x**2 and x**4 with its sigmoid; results stay exact."""
    t = np.random.default_rng(22).uniform(-1, 1, 3000)
    enc = public.encrypt(t)
    first = public.polyval(enc, _sigmoid_fit(7, 10.0))
    squares = list(enc._powers[0])
    assert len(squares) == 3  # x, x**2, x**4
    loss = [0.1, 0.0, 0.3, 0.0, -0.05, 0.0, 0.01]
    second = public.polyval(enc, loss)
    assert all(a is b for a, b in zip(enc._powers[0], squares))  # nothing recomputed
    np.testing.assert_allclose(secret.decrypt(second), np.polynomial.polynomial.polyval(t, loss), atol=1e-5)
    np.testing.assert_allclose(
        secret.decrypt(first), np.polynomial.polynomial.polyval(t, _sigmoid_fit(7, 10.0)), atol=1e-4
    )


def test_polyval_limits(secret: ckks.CKKSSecret) -> None:
    enc = secret.encrypt(np.linspace(-1, 1, 100))
    with pytest.raises(ValueError, match="max_degree"):
        secret.polyval(enc, [0.0] * 8 + [1.0])  # degree 8 > 7
    constant = secret.polyval(enc, [0.25, 0.0])
    np.testing.assert_allclose(secret.decrypt(constant), 0.25, atol=1e-6)
    linear = secret.polyval(enc, [1.0, 2.0])
    np.testing.assert_allclose(secret.decrypt(linear), 1.0 + 2.0 * np.linspace(-1, 1, 100), atol=2e-5)
    # A ciphertext that has already spent its levels is refused, not wrapped.
    spent = enc
    for _ in range(4):
        spent = secret.mul_plain(spent, 1.0)
    assert primes_of(spent.parts[0]) == 2
    with pytest.raises(ValueError):
        secret.polyval(spent, _sigmoid_fit(3, 8.0))
    with pytest.raises(ValueError, match="chain"):
        secret.mul_plain(secret.mul_plain(spent, 1.0), 1.0)


def test_public_context_without_relin_keys(secret: ckks.CKKSSecret) -> None:
    full = secret.public_bytes()
    light = secret.public_bytes(with_relin_keys=False)
    assert len(light) < len(full) / 4
    assert ckks.load_public(full).max_degree == 7
    public = ckks.load_public(light)
    assert public.key_id() == secret.key_id()
    assert public.max_degree == 1
    enc = public.encrypt(np.linspace(-1, 1, 50))
    with pytest.raises(ValueError, match="relinearization"):
        public.polyval(enc, _sigmoid_fit(3, 8.0))
    got = secret.decrypt(public.polyval(enc, [0.5, 0.25]))
    np.testing.assert_allclose(got, 0.5 + 0.25 * np.linspace(-1, 1, 50), atol=1e-5)


# -- randomization and serialization ----------------------------------------


def test_equal_plaintexts_give_different_ciphertexts(public: ckks.CKKSPublic) -> None:
    values = np.arange(100, dtype=np.float64)
    assert public.serialize(public.encrypt(values)) != public.serialize(public.encrypt(values))


def test_rerandomize_changes_bytes_not_value(secret: ckks.CKKSSecret, public: ckks.CKKSPublic) -> None:
    values = np.random.default_rng(3).normal(0, 1, 3000)
    enc = public.add_plain(public.encrypt(values), 0.5)  # a computed vector: not pristine
    fresh = public.rerandomize(enc)
    assert public.serialize(fresh) != public.serialize(enc)
    np.testing.assert_allclose(secret.decrypt(fresh), values + 0.5, atol=1e-6)
    # at a low level the fresh randomness is drawn at that level, and the level is kept
    low = public.mul_plain(public.mul_plain(public.mul_plain(enc, 1.0), 1.0), 1.0)
    again = public.rerandomize(low)
    assert primes_of(again.parts[0]) == primes_of(low.parts[0]) == 3
    assert public.serialize(again) != public.serialize(low)
    np.testing.assert_allclose(secret.decrypt(again), values + 0.5, atol=1e-5)


def test_pristine_randomness_leaves_at_most_once(secret: ckks.CKKSSecret, public: ckks.CKKSPublic) -> None:
    """rerandomize(encrypt(x)) costs no second encryption, yet no two sent ciphertexts share randomness."""
    values = np.random.default_rng(31).normal(0, 1, 1000)
    enc = public.encrypt(values)
    first = public.rerandomize(enc)  # hands the unseen encryption randomness over ...
    assert first.parts[0] is enc.parts[0]
    second = public.rerandomize(enc)  # ... so the input must get new randomness now
    assert second.parts[0] is not enc.parts[0]
    sent = [public.serialize(first), public.serialize(second)]
    third = public.rerandomize(first)  # first's randomness has left: new randomness again
    sent.append(public.serialize(third))
    assert len(set(sent)) == 3
    for blob in sent:
        np.testing.assert_allclose(secret.decrypt(secret.deserialize(blob)), values, atol=1e-6)
    # a serialized vector has lost its pristine randomness too
    other = public.encrypt(values)
    blob = public.serialize(other)
    assert public.serialize(public.rerandomize(other)) != blob


def test_serialization_round_trip_public_side_cannot_decrypt(secret: ckks.CKKSSecret) -> None:
    public = ckks.load_public(secret.public_bytes())
    values = np.random.default_rng(4).normal(0, 1, 20000)  # three ciphertexts
    data = public.serialize(public.encrypt(values))
    back = public.deserialize(data)
    assert public.length(back) == 20000
    # The public side holds no secret key: it has no decryptor and no decrypt.
    assert not hasattr(public, "decrypt") and not hasattr(public, "_decryptor")
    assert not any(isinstance(v, (seal.SecretKey, seal.Decryptor)) for v in vars(public).values())
    assert len(back.parts) == 3
    np.testing.assert_allclose(secret.decrypt(secret.deserialize(data)), values, atol=1e-6)


def test_deserialize_rejects_foreign_and_malformed(secret: ckks.CKKSSecret, small: ckks.CKKSSecret) -> None:
    data = secret.serialize(secret.encrypt(np.ones(10)))
    with pytest.raises(ValueError, match="another key"):
        small.deserialize(data)
    with pytest.raises(ValueError):
        secret.deserialize(data[:-10])
    with pytest.raises(ValueError):
        secret.deserialize(data[:30])
    with pytest.raises(ValueError):
        secret.decrypt_total(data)  # wrong kind


def test_load_public_refuses_secret_material_and_junk(secret: ckks.CKKSSecret, small: ckks.CKKSSecret) -> None:
    # a "public key" that carries the secret key, or is the secret key, does not load
    params, pk, relin = base.unpack_blobs(secret.public_bytes()[len(PUBLIC_MAGIC) :])
    secret_blob = seal_save(secret._secret_key)
    with pytest.raises(ValueError):
        ckks.load_public(PUBLIC_MAGIC + base.pack_blobs([params, pk, relin, secret_blob]))
    with pytest.raises(ValueError):
        ckks.load_public(PUBLIC_MAGIC + base.pack_blobs([params, secret_blob, b""]))
    with pytest.raises(ValueError, match="not a CKKS public key"):
        ckks.load_public(secret.secret_bytes())
    # keys are checked against the declared parameters
    other_params = small.params.to_json()
    with pytest.raises(ValueError):
        ckks.load_public(PUBLIC_MAGIC + base.pack_blobs([other_params, pk, b""]))
    with pytest.raises(ValueError):
        ckks.load_public(PUBLIC_MAGIC + base.pack_blobs([params, pk[:-100], b""]))


def test_secret_bytes_round_trip(small: ckks.CKKSSecret) -> None:
    restored = ckks.load_secret(small.secret_bytes())
    assert restored.key_id() == small.key_id()
    assert restored.public_bytes() == small.public_bytes()
    enc = small.encrypt(np.arange(5.0))
    np.testing.assert_allclose(restored.decrypt(enc), np.arange(5.0), atol=1e-6)


def test_loaded_ciphertexts_are_checked(secret: ckks.CKKSSecret, public: ckks.CKKSPublic) -> None:
    """An all-zero (unencrypted) ciphertext or one of another scale is refused on load."""
    enc = public.add_plain(public.encrypt(np.ones(10)), 0.0)
    transparent = seal.Ciphertext()
    transparent.resize(public._context, public._pids[2], 2)  # two zero polynomials
    assert transparent.is_transparent()
    with pytest.raises(ValueError):
        public._load_part(seal_save(transparent))
    odd_scale = public._mul_plain(enc.parts[0], 1.0)
    odd_scale.scale = 2.0**41
    with pytest.raises(ValueError, match="scale"):
        public._load_part(seal_save(odd_scale))
    with pytest.raises(ValueError):
        public._load_part(b"\x00" * 64)
    assert secret._real_slots_of(public._load_part(seal_save(enc.parts[0])))[0] == pytest.approx(1.0, abs=1e-6)


# -- masked column sums -----------------------------------------------------


def _training_like_residual(public: ckks.CKKSPublic, n: int, seed: int) -> tuple[ckks.CKKSVec, np.ndarray]:
    """[[d]] as the bank forms it: cubic sigmoid of normalized logits, minus labels, times row weights."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1, 1, n)
    y = rng.integers(0, 2, n).astype(np.float64)
    weights = np.where(rng.random(n) < 0.1, 0.0, 1.0)  # 10% decoy rows, zeroed
    coeffs = _sigmoid_fit(3, 8.0)
    enc = public.polyval(public.encrypt(t), coeffs)
    enc = public.mul_plain(public.add_plain(enc, -y), weights)
    truth = (np.polynomial.polynomial.polyval(t, coeffs) - y) * weights
    return enc, truth


@pytest.mark.parametrize(("n", "k"), [(1000, 12), (5000, 3), (21000, 12), (7000, 1)])
def test_masked_column_sums_recover_xt_a(secret: ckks.CKKSSecret, public: ckks.CKKSPublic, n: int, k: int) -> None:
    enc, d = _training_like_residual(public, n, seed=n)
    x = np.clip(np.random.default_rng(n + 1).normal(0, 1, (n, k)), -3, 3)
    x[:, -1] = 0.0 if k > 2 else x[:, -1]  # an all-zero column (a constant feature) is fine too
    payload, mask = public.masked_column_sums(enc, x)
    # two columns per product ciphertext (real and imaginary parts), 2 * copies when tiled
    _k, _block, per_ct, count = COL_FIELDS.unpack_from(payload, HEADER.size)
    copies = max(1, public.slots // n) if n <= public.slots else 1
    assert per_ct == 2 * copies and count == math.ceil(k / per_ct)
    released = secret.decrypt_column_sums(payload)
    sums = public.unmask_column_sums(released, mask)
    truth = x.T @ d
    # Error budget: flooding sigma (0.25 for 1000-slot blocks, 0.7 for 8192)
    # plus the float64 decoding residue of 2**42-sized masks.
    np.testing.assert_allclose(sums, truth, atol=5.0)
    # On gradient means (sums / n) the cost is negligible.
    assert np.max(np.abs(sums - truth)) / n < 3e-3


def test_masked_column_sums_refuses_without_room(secret: ckks.CKKSSecret) -> None:
    enc = secret.encrypt(np.ones(100))
    for _ in range(4):
        enc = secret.mul_plain(enc, 1.0)  # 2 primes left, 1 after the feature product
    with pytest.raises(ValueError, match="modulus"):
        secret.masked_column_sums(enc, np.ones((100, 2)))
    # one level more is exactly enough: the product runs at 3 primes and lands on the 2-prime mask level
    enc = secret.encrypt(np.ones(100))
    for _ in range(3):
        enc = secret.mul_plain(enc, 1.0)
    payload, mask = secret.masked_column_sums(enc, np.ones((100, 2)))
    np.testing.assert_allclose(secret.unmask_column_sums(secret.decrypt_column_sums(payload), mask), 100.0, atol=2.0)


def test_column_products_run_at_the_lowest_usable_level(public: ckks.CKKSPublic) -> None:
    """A fresh residual is mod-switched to mask level + 1 before the product: payloads are 2-prime ciphertexts."""
    enc = public.encrypt(np.linspace(-1, 1, 500))
    payload, _ = public.masked_column_sums(enc, np.ones((500, 3)))
    blobs = base.unpack_blobs(payload[HEADER.size + COL_FIELDS.size :])
    assert all(primes_of(public._load_part(b)) == public.params.mask_primes() for b in blobs)


def test_key_owner_view_is_uncorrelated(small: ckks.CKKSSecret) -> None:
    """Slots the key owner decrypts and sums it releases: |corr| < 0.05 with the truth."""
    public = ckks.load_public(small.public_bytes(with_relin_keys=False))
    rng = np.random.default_rng(11)
    n, k, trials = 64, 128, 63  # 128 columns packed in one 4096-slot ciphertext: 8064 sums
    slot_seen, slot_true, sums_seen, sums_true, unmasked = [], [], [], [], []
    for _ in range(trials):
        a = rng.normal(0, 0.5, n)
        x = rng.normal(0, 1, (n, k))
        payload, mask = public.masked_column_sums(public.encrypt(a), x)
        # Everything the key owner can look at: the decrypted slots (both parts) ...
        blob = base.unpack_blobs(payload[HEADER.size + COL_FIELDS.size :])
        assert len(blob) == 1
        seen = small._slots_of(small._load_part(blob[0]))
        slot_seen.append(np.concatenate([seen.real, seen.imag]))
        products = a[:, None] * x  # block b holds columns 2b (real part) and 2b + 1 (imaginary part)
        slot_true.append(np.concatenate([products[:, 0::2].T.reshape(-1), products[:, 1::2].T.reshape(-1)]))
        # ... and the sums it returns.
        released = small.decrypt_column_sums(payload)
        sums_seen.append(released)
        sums_true.append(x.T @ a)
        unmasked.append(public.unmask_column_sums(released, mask))
    seen_slots, true_slots = np.concatenate(slot_seen), np.concatenate(slot_true)
    seen_sums, true_sums = np.concatenate(sums_seen), np.concatenate(sums_true)
    assert abs(np.corrcoef(seen_slots, true_slots)[0, 1]) < 0.05
    assert abs(np.corrcoef(seen_sums, true_sums)[0, 1]) < 0.05
    # The test has power: the unmasked values are what we claim they are.
    np.testing.assert_allclose(np.concatenate(unmasked), true_sums, atol=1.5)
    assert np.corrcoef(np.concatenate(unmasked), true_sums)[0, 1] > 0.99
    assert np.max(np.abs(seen_slots)) > 2.0**38  # masks are 2**40-sized, not cosmetic
    assert np.percentile(np.abs(seen_slots), 10) > 2.0**36  # in both parts of every slot


def test_masked_total(secret: ckks.CKKSSecret, public: ckks.CKKSPublic) -> None:
    rng = np.random.default_rng(5)
    for n in (300, 5000, 20000):
        t = rng.uniform(-1, 1, n)
        # polyval leaves p(0) in the padding slots: the total must ignore them.
        enc = public.polyval(public.encrypt(t), _sigmoid_fit(3, 8.0))
        truth = float(np.sum(np.polynomial.polynomial.polyval(t, _sigmoid_fit(3, 8.0))))
        payload, mask = public.masked_total(enc)
        released = secret.decrypt_total(payload)
        assert abs(released - truth) > 1e6  # the key owner sees a masked total
        assert public.unmask_total(released, mask) == pytest.approx(truth, abs=1.0)


def test_flooding_noise_and_grid(secret: ckks.CKKSSecret, public: ckks.CKKSPublic) -> None:
    n = 8192
    enc, _ = _training_like_residual(public, n, seed=9)
    x = np.random.default_rng(10).normal(0, 1, (n, 1))
    payload, _ = public.masked_column_sums(enc, x)
    blob = base.unpack_blobs(payload[HEADER.size + COL_FIELDS.size :])[0]
    block = secret._slots_of(secret._load_part(blob)).real
    sigma, grid = ckks.flood_parameters(secret.params, block)
    # Honest masks set sigma by the float64 decoding term, above the floor
    # and ~2**17 times the secret-dependent CKKS error (1e-6..4e-6, measured).
    assert 2.0**secret.params.flood_floor_log2 < sigma < 1.0
    releases = np.array([secret.decrypt_column_sums(payload)[0] for _ in range(40)])
    assert len(set(releases.tolist())) > 5  # every release is freshly flooded
    assert 0.6 * sigma < np.std(releases, ddof=1) < 1.5 * sigma
    np.testing.assert_array_equal(np.round(releases / grid), releases / grid)  # on the grid


def test_payload_bound_to_key(secret: ckks.CKKSSecret, public: ckks.CKKSPublic, small: ckks.CKKSSecret) -> None:
    enc = public.encrypt(np.ones(64))
    payload, mask = public.masked_column_sums(enc, np.ones((64, 2)))
    with pytest.raises(ValueError, match="another key"):
        small.decrypt_column_sums(payload)
    with pytest.raises(ValueError, match="mask"):
        small.unmask_column_sums(np.zeros(2), mask)
    with pytest.raises(ValueError):
        secret.decrypt_column_sums(payload[:-1])


def test_tenseal_is_the_pinned_version_and_computes() -> None:
    """The TenSEAL the project pins is the one installed, and it really computes under encryption."""
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    pins = {}
    for dep in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", dep)
        assert match is not None, f"unpinned dependency {dep}"
        pins[match.group(1)] = match.group(2)
    assert ts.__version__ == pins["tenseal"]
    context = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    context.global_scale = 2**40
    vector = ts.ckks_vector(context, [1.0, -2.5, 3.25])
    assert np.allclose((vector * 2 + 1).decrypt(), [3.0, -4.0, 7.5], atol=1e-4)
