"""Paillier backend: fixed-point arithmetic, masking, randomization, serialization.

Most tests use a 1024-bit test key because they are about logic; the tests
marked "real size" use 2048 bits.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import gmpy2
import numpy as np
import pytest
from phe import paillier as phe_paillier

from xinrong.modeling.he import HEPublic, HESecret, paillier, paillier_pool
from xinrong.modeling.he import keygen as base_keygen
from xinrong.modeling.he import load_public as base_load_public
from xinrong.modeling.he import paillier_math as pm

F = paillier.DEFAULT_FRAC_BITS


@pytest.fixture(scope="module")
def sk() -> paillier.PaillierSecret:
    return paillier.keygen(1024, allow_small_key=True, workers=1)


@pytest.fixture(scope="module")
def pk(sk: paillier.PaillierSecret) -> paillier.PaillierPublic:
    return paillier.load_public(sk.public_bytes(), workers=1)


@pytest.fixture(scope="module")
def big() -> paillier.PaillierSecret:
    return paillier.keygen(workers=1)


def ciphertext_ints(pk: paillier.PaillierPublic, data: bytes) -> list[int]:
    """What an eavesdropper with the public key parses out of a serialized vector."""
    return [int(c) for c in pm.unpack_ints(data[paillier._VEC_HEADER.size :], pk.ct_bytes)]


# -- keys ----------------------------------------------------------------------


def test_keys_are_blum_and_at_least_2048_bits(big: paillier.PaillierSecret) -> None:
    assert big.n_bits == 2048
    assert big._crt.p % 4 == 3 and big._crt.q % 4 == 3
    with pytest.raises(ValueError, match="2048"):
        paillier.keygen(1024)


def test_small_key_only_loads_when_generated_as_test_key(sk: paillier.PaillierSecret) -> None:
    data = bytearray(sk.public_bytes())
    data[5] &= ~paillier._FLAG_TEST_KEY  # flags byte: pretend it is a production key
    with pytest.raises(ValueError, match="2048"):
        paillier.load_public(bytes(data))


def test_public_key_round_trip_and_interfaces(sk: paillier.PaillierSecret, pk: paillier.PaillierPublic) -> None:
    assert pk.key_id() == sk.key_id()
    assert isinstance(sk, HESecret) and isinstance(pk, HEPublic)
    # The public side has no way to decrypt.
    assert not isinstance(pk, HESecret)
    for name in ("decrypt", "decrypt_column_sums", "decrypt_total", "_crt"):
        assert not hasattr(pk, name)
    via_base = base_load_public("paillier", sk.public_bytes())
    assert via_base.key_id() == sk.key_id()
    with pytest.raises(ValueError):
        paillier.load_public(sk.public_bytes()[:-1])


def test_public_bytes_keyword_and_weighted_polyval(sk: paillier.PaillierSecret, pk: paillier.PaillierPublic) -> None:
    """No relinearization keys exist, so both public-key variants are one key; row weights fold into c0, c1."""
    assert sk.public_bytes(with_relin_keys=False) == sk.public_bytes() == pk.public_bytes(with_relin_keys=False)
    t = np.linspace(-1, 1, 30)
    w = np.where(np.arange(30) % 5 == 0, 0.0, 1.25)
    got = sk.decrypt(pk.polyval(pk.encrypt(t), (0.5, 2.5), row_weights=w))
    np.testing.assert_allclose(got, w * (0.5 + 2.5 * t), atol=1e-5)
    with pytest.raises(ValueError):
        pk.polyval(pk.encrypt(t), (0.5, 2.5), row_weights=w[:-1])


def test_base_keygen_dispatches() -> None:
    secret = base_keygen("paillier", n_bits=1024, allow_small_key=True, workers=1)
    assert secret.scheme == "paillier" and secret.max_degree == 1


# -- encoding and arithmetic ---------------------------------------------------


def test_round_trip_with_negatives_and_fixed_point_precision(
    sk: paillier.PaillierSecret, pk: paillier.PaillierPublic
) -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(scale=50, size=40), [0.0, -0.0, 1e-9, -1e-9, 4095.5, -4095.5]])
    out = sk.decrypt(pk.encrypt(values))
    assert np.max(np.abs(out - values)) <= 2.0 ** -(F + 1)
    assert np.all(np.sign(out[np.abs(values) > 1e-3]) == np.sign(values[np.abs(values) > 1e-3]))


def test_values_outside_the_encoding_range_raise(pk: paillier.PaillierPublic) -> None:
    with pytest.raises(ValueError, match="encoding range"):
        pk.encrypt(np.array([1.0, 2.0**pk.value_bits]))
    with pytest.raises(ValueError, match="finite"):
        pk.encrypt(np.array([np.nan]))


def test_add_add_plain_mul_plain_polyval(sk: paillier.PaillierSecret, pk: paillier.PaillierPublic) -> None:
    rng = np.random.default_rng(2)
    a, b, w = rng.normal(size=30), rng.normal(size=30), rng.normal(scale=3, size=30)
    ea, eb = pk.encrypt(a), pk.encrypt(b)
    tol = 1e-5
    assert np.allclose(sk.decrypt(pk.add(ea, eb)), a + b, atol=tol)
    assert np.allclose(sk.decrypt(pk.add_plain(ea, w)), a + w, atol=tol)
    assert np.allclose(sk.decrypt(pk.add_plain(ea, -1.5)), a - 1.5, atol=tol)
    assert np.allclose(sk.decrypt(pk.mul_plain(ea, w)), a * w, atol=tol)  # mixed signs
    assert np.allclose(sk.decrypt(pk.mul_plain(ea, -0.25)), -0.25 * a, atol=tol)
    assert np.allclose(sk.decrypt(pk.mul_plain(ea, -3.7)), -3.7 * a, atol=tol)
    assert np.allclose(sk.decrypt(pk.mul_plain(ea, 0.0)), 0.0, atol=tol)
    # Different scales are aligned before adding.
    mixed = pk.add(pk.mul_plain(ea, w), eb)
    assert np.allclose(sk.decrypt(mixed), a * w + b, atol=tol)
    assert np.allclose(sk.decrypt(pk.polyval(ea, [0.5, 0.25])), 0.5 + 0.25 * a, atol=tol)
    assert np.allclose(sk.decrypt(pk.polyval(ea, [2.0])), 2.0, atol=tol)
    with pytest.raises(ValueError, match="degree"):
        pk.polyval(ea, [0.5, 0.25, 0.1])
    with pytest.raises(ValueError, match="length"):
        pk.add(ea, pk.encrypt(a[:3]))


def test_first_order_taylor_residual_end_to_end(sk: paillier.PaillierSecret, pk: paillier.PaillierPublic) -> None:
    """The Paillier training step: d = 0.25 * (u_1 + u_2) + (0.25 u_b + 0.5 - y), then X^T d."""
    rng = np.random.default_rng(3)
    n = 200
    y = (rng.random(n) < 0.3).astype(float)
    u1, u2, ub = rng.normal(size=(3, n))
    x = rng.normal(size=(n, 4))
    provider = paillier.load_public(sk.public_bytes(), workers=1)
    wire = provider.serialize(provider.encrypt(u1)), provider.serialize(provider.encrypt(u2))
    s = pk.add(pk.deserialize(wire[0]), pk.deserialize(wire[1]))
    d = pk.add(pk.mul_plain(s, 0.25), pk.encrypt(0.25 * ub + 0.5 - y))
    d_true = 0.25 * (u1 + u2 + ub) + 0.5 - y
    received = provider.deserialize(pk.serialize(d))
    payload, mask = provider.masked_column_sums(received, x)
    got = provider.unmask_column_sums(sk.decrypt_column_sums(payload), mask)
    assert np.allclose(got, x.T @ d_true, atol=1e-4)
    total_payload, total_mask = provider.masked_total(received)
    assert provider.unmask_total(sk.decrypt_total(total_payload), total_mask) == pytest.approx(d_true.sum(), abs=1e-4)


def test_masked_column_sums_many_columns_and_distinct_values(
    sk: paillier.PaillierSecret, pk: paillier.PaillierPublic
) -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=300)
    x = np.column_stack(
        [
            rng.normal(scale=5, size=300),  # continuous: windowed multi-exponentiation
            rng.integers(-3, 4, size=300).astype(float),  # few distinct values: one bucket each
            np.zeros(300),
            -np.abs(rng.normal(size=300)),  # all negative
        ]
    )
    payload, mask = pk.masked_column_sums(pk.encrypt(a), x)
    assert len(payload) < 4 * pk.ct_bytes + 200  # k ciphertexts, no per-row products
    got = pk.unmask_column_sums(sk.decrypt_column_sums(payload), mask)
    assert np.allclose(got, x.T @ a, atol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        pk.masked_column_sums(pk.encrypt(a), x[:10])


def test_overflow_is_an_error_not_a_wrap(pk: paillier.PaillierPublic) -> None:
    e = pk.encrypt(np.ones(2))
    w = np.full(2, 2000.0)
    with pytest.raises(OverflowError):
        for _ in range(40):
            e = pk.mul_plain(e, w)


# -- randomization -----------------------------------------------------------------


def test_equal_plaintexts_never_give_equal_ciphertexts(pk: paillier.PaillierPublic) -> None:
    values = np.zeros(200)
    first = pk.encrypt(values)
    second = pk.encrypt(values)
    cts = [int(c) for c in first.cts + second.cts]
    assert len(set(cts)) == len(cts)
    again = pk.rerandomize(pk.deserialize(pk.serialize(first)))
    assert not set(map(int, again.cts)) & set(cts)


def test_rerandomize_after_encrypt_reuses_nothing_that_left(pk: paillier.PaillierPublic) -> None:
    e = pk.encrypt(np.zeros(8))
    issued = pk.pool.issued
    moved = pk.rerandomize(e)  # the common rerandomize(encrypt(x)): no second obfuscator needed
    assert pk.pool.issued == issued and [int(c) for c in moved.cts] == [int(c) for c in e.cts]
    with pytest.raises(ValueError, match="rerandomize"):
        pk.serialize(e)  # the input was moved: its randomness can leave only once
    other = pk.rerandomize(e)  # now pays for new obfuscators
    assert pk.pool.issued == issued + 8
    assert not {int(c) for c in other.cts} & {int(c) for c in moved.cts}
    sent = pk.encrypt(np.zeros(8))
    wire = pk.serialize(sent)
    again = pk.rerandomize(sent)  # after its randomness went out, a copy gets new obfuscators
    assert not {int(c) for c in again.cts} & set(ciphertext_ints(pk, wire))


def test_fate_style_decoding_of_captured_ciphertexts_reveals_nothing(pk: paillier.PaillierPublic) -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random(600) < 0.4).astype(float)
    wire = pk.serialize(pk.encrypt(labels))
    n = int(pk.n)
    captured = ciphertext_ints(pk, wire)
    decoded = np.array([((c - 1) // n) % n for c in captured], dtype=object)
    # On an unobfuscated ciphertext (what FATE 2.2 sends) the attack works:
    leaky = [(1 + int(v * 2**F) * n) % (n * n) for v in labels]
    assert [((c - 1) // n) / 2**F for c in leaky] == labels.tolist()
    # On ours: no ciphertext has the 1 + m*n form, no decoded value is 0/1
    # (or the fixed-point encoding of 0/1), and the decoded values carry no
    # information about the labels.
    assert all((c - 1) % n != 0 for c in captured)
    assert not {int(v) for v in decoded} & {0, 1, 2**F}
    top_bits = np.array([float(int(v) >> (pk.n_bits - 53)) for v in decoded])
    low_bits = np.array([float(int(v) & 0xFFFF) for v in decoded])
    for feature in (top_bits, low_bits):
        assert abs(np.corrcoef(feature, labels)[0, 1]) < 0.15


def test_obfuscators_are_encryptions_of_zero(sk: paillier.PaillierSecret) -> None:
    for mode in paillier_pool.OBFUSCATION_MODES:
        public = paillier.load_public(sk.public_bytes(), obfuscation=mode, workers=1)
        rhos = public.pool.take(5)
        assert [int(v) for v in sk._crt.decrypt(rhos)] == [0] * 5
        assert len({int(r) for r in rhos}) == 5


def test_pool_never_hands_out_an_obfuscator_twice(sk: paillier.PaillierSecret) -> None:
    public = paillier.load_public(sk.public_bytes(), workers=1)
    public.prefill(50)
    assert public.pool.available == 50
    seen: list[int] = []
    for count in (10, 30, 25, 1, 40):  # drains the prefilled 50, then runs dry and computes fresh
        seen.extend(int(v) for v in public.pool.take(count))
    assert public.pool.available == 0
    assert len(seen) == len(set(seen)) == 106
    assert public.pool.issued == 106


def test_pool_worker_processes_give_fresh_values(sk: paillier.PaillierSecret, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paillier_pool, "PARALLEL_MIN_OBFUSCATORS", 16)
    monkeypatch.setattr(paillier_pool, "TASK_CHUNK", 16)
    public = paillier.load_public(sk.public_bytes(), workers=2)
    try:
        public.prefill(64)  # queued in the workers
        values = public.pool.take(100)  # 64 from the workers, 36 computed in parallel on demand
        assert len({int(v) for v in values}) == 100
        assert [int(v) for v in sk._crt.decrypt(values[:4] + values[-4:])] == [0] * 8
        assert public.pool.worker_cpu_seconds > 0
    finally:
        paillier_pool.shutdown_executor()


def test_parallel_kernels_match_the_plaintext(sk: paillier.PaillierSecret, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paillier, "PARALLEL_MIN_TERMS", 10)
    public = paillier.load_public(sk.public_bytes(), workers=2)
    rng = np.random.default_rng(8)
    a, w = rng.normal(size=40), rng.normal(size=40)
    enc = public.encrypt(a)
    try:
        for k in (2, 5):  # rows split across workers, then columns split
            x = rng.normal(size=(40, k))
            payload, mask = public.masked_column_sums(enc, x)
            assert np.allclose(public.unmask_column_sums(sk.decrypt_column_sums(payload), mask), x.T @ a, atol=1e-4)
        assert np.allclose(sk.decrypt(public.mul_plain(enc, w)), a * w, atol=1e-5)
    finally:
        paillier_pool.shutdown_executor()


def test_serialize_refuses_vectors_without_own_fresh_randomness(pk: paillier.PaillierPublic) -> None:
    e = pk.encrypt(np.arange(4.0))
    received = pk.deserialize(pk.serialize(e))
    assert not received.fresh
    with pytest.raises(ValueError, match="rerandomize"):
        pk.serialize(received)
    with pytest.raises(ValueError, match="rerandomize"):
        pk.serialize(pk.mul_plain(e, 2.0))
    assert pk.add(received, pk.encrypt(np.ones(4))).fresh  # own fresh obfuscator in every element
    assert pk.add_plain(e, 1.0).fresh
    pk.serialize(pk.rerandomize(received))


class _SeededSecrets:
    """Stands in for ``secrets`` in the module under test so the masks are reproducible."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)


def test_masked_values_seen_by_key_owner_are_uncorrelated_with_true_sums(
    sk: paillier.PaillierSecret, pk: paillier.PaillierPublic, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fixed seeds (data and masks) keep the statistic reproducible; the masks
    # are still uniform on [2^b, n - 2^b) exactly as in production.
    monkeypatch.setattr(paillier, "secrets", _SeededSecrets(6))
    rng = np.random.default_rng(6)
    enc = pk.encrypt(rng.normal(size=4))
    plain = sk.decrypt(enc)
    seen: list[float] = []
    truth: list[float] = []
    for _ in range(120):
        x = rng.normal(scale=2, size=(4, 25))
        payload, mask = pk.masked_column_sums(enc, x)
        opened = sk.decrypt_column_sums(payload)
        seen.extend(opened.tolist())
        truth.extend((x.T @ plain).tolist())
        assert np.allclose(pk.unmask_column_sums(opened, mask), x.T @ plain, atol=1e-4)
    corr = np.corrcoef(np.array(seen), np.array(truth))[0, 1]
    # The key is fresh per run (keygen is random), so the statistic is too: under
    # independence it is ~N(0, 1/len), and 4 standard errors (0.073 for 3,000 values)
    # fail an honest masking once in ~16,000 runs. 0.05 (2.7 of them) failed ~1 in 150.
    # Unmasked values correlate at ~1.
    assert abs(corr) < 4 / np.sqrt(len(seen))
    # The window is spread over its whole range, not concentrated near the sums.
    assert np.min(seen) >= 0 and np.max(seen) < 2.0**paillier.WINDOW_BITS
    assert np.median(seen) > 2.0 ** (paillier.WINDOW_BITS - 3)


def test_masked_payload_is_bound_to_kind_and_key(sk: paillier.PaillierSecret, pk: paillier.PaillierPublic) -> None:
    enc = pk.encrypt(np.ones(3))
    cols, mask = pk.masked_column_sums(enc, np.ones((3, 2)))
    total, total_mask = pk.masked_total(enc)
    with pytest.raises(ValueError, match="kind"):
        sk.decrypt_total(cols)
    with pytest.raises(ValueError, match="kind"):
        sk.decrypt_column_sums(total)
    other = paillier.keygen(1024, allow_small_key=True, workers=1)
    with pytest.raises(ValueError, match="different public key"):
        other.decrypt_column_sums(cols)
    with pytest.raises(ValueError):
        pk.unmask_column_sums(sk.decrypt_column_sums(cols), total_mask)
    with pytest.raises(ValueError, match="window"):
        pk.unmask_column_sums(np.array([0.5, 1.0]), mask)


# -- serialization -------------------------------------------------------------------


def test_serialization_round_trip_and_rejections(sk: paillier.PaillierSecret, pk: paillier.PaillierPublic) -> None:
    values = np.array([-2.5, 0.0, 3.25, 1e-3])
    data = pk.serialize(pk.encrypt(values))
    assert len(data) == paillier._VEC_HEADER.size + 4 * pk.ct_bytes
    back = sk.deserialize(data)
    assert np.allclose(sk.decrypt(back), values, atol=1e-6)
    assert (back.scale, back.bound_bits) == (F, pk.value_bits + F)
    with pytest.raises(ValueError, match="length"):
        pk.deserialize(data[:-1])
    with pytest.raises(ValueError, match="supported"):
        pk.deserialize(b"XXXX" + data[4:])
    other = paillier.keygen(1024, allow_small_key=True, workers=1)
    with pytest.raises(ValueError, match="different public key"):
        other.deserialize(data)
    too_big = data[: paillier._VEC_HEADER.size] + b"\xff" * (4 * pk.ct_bytes)
    with pytest.raises(ValueError, match="range"):
        pk.deserialize(too_big)
    assert "cts" not in repr(back) and str(int(back.cts[0])) not in repr(back)


def test_ciphertexts_are_standard_paillier_that_phe_decrypts(sk: paillier.PaillierSecret) -> None:
    public = phe_paillier.PaillierPublicKey(int(sk.n))
    private = phe_paillier.PaillierPrivateKey(public, int(sk._crt.p), int(sk._crt.q))
    values = np.array([1.5, -2.0, 0.0])
    enc = sk.encrypt(values)
    decoded = [private.raw_decrypt(int(c)) for c in enc.cts]
    n = int(sk.n)
    expected = [round(v * 2**F) % n for v in values]
    assert decoded == expected
    assert [int(v) for v in sk._crt.decrypt(enc.cts, threads=2)] == expected


# -- kernels -------------------------------------------------------------------------


def test_multiexp_and_batch_invert_match_naive() -> None:
    rng = np.random.default_rng(7)
    modulus = gmpy2.next_prime(gmpy2.mpz(2) ** 255) * gmpy2.next_prime(gmpy2.mpz(2) ** 250)
    bases = [gmpy2.mpz(int(v)) for v in rng.integers(2, 2**62, size=64)]
    exps = np.column_stack(
        [rng.integers(-(2**30), 2**30, size=64), rng.integers(-2, 3, size=64), np.zeros(64, dtype=np.int64)]
    ).astype(np.int64)
    got = pm.signed_column_products(bases, exps, modulus)
    for j in range(exps.shape[1]):
        expected = gmpy2.mpz(1)
        for b, e in zip(bases, exps[:, j].tolist()):
            expected = expected * gmpy2.powmod(b, e, modulus) % modulus
        assert got[j] == expected
    inverses = pm.batch_invert(bases, modulus)
    assert all(b * i % modulus == 1 for b, i in zip(bases, inverses))
    table = pm.FixedBaseTable(bases[0], modulus, 100, 7)
    for e in (0, 1, 2**100 - 1, 123456789123456789):
        assert table.pow(e) == gmpy2.powmod(bases[0], e, modulus)


# -- real size -------------------------------------------------------------------------


def test_real_size_key_randomizes_and_masks(big: paillier.PaillierSecret) -> None:
    public = paillier.load_public(big.public_bytes(), workers=1)
    labels = np.array([0.0, 1.0] * 16)
    wire = public.serialize(public.encrypt(labels))
    n = int(public.n)
    assert all((c - 1) % n != 0 for c in ciphertext_ints(public, wire))
    enc = big.deserialize(wire)
    assert np.allclose(big.decrypt(enc), labels, atol=1e-6)
    x = np.arange(64.0).reshape(32, 2) / 10
    payload, mask = public.masked_column_sums(enc, x)
    assert np.allclose(public.unmask_column_sums(big.decrypt_column_sums(payload), mask), x.T @ labels, atol=1e-4)


@pytest.fixture(autouse=True, scope="module")
def _no_leftover_workers() -> Iterator[None]:
    yield
    paillier_pool.shutdown_executor()
