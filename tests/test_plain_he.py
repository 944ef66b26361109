"""The plain (no-encryption) backend honours the HE interface the protocol is written against."""

from __future__ import annotations

import numpy as np
import pytest

from xinrong.modeling.he import base, plain


@pytest.fixture()
def secret() -> plain.PlainSecret:
    return plain.keygen(max_degree=5)


def test_protocol_conformance(secret: plain.PlainSecret) -> None:
    public = base.load_public("plain", secret.public_bytes())
    assert isinstance(secret, base.HESecret)
    assert isinstance(public, base.HEPublic)
    assert public.key_id() == secret.key_id()
    assert public.max_degree == 5
    assert base.keygen("plain").scheme == "plain"


def test_arithmetic(secret: plain.PlainSecret) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=50)
    ea, eb = secret.encrypt(a), secret.encrypt(b)
    assert secret.length(ea) == 50
    np.testing.assert_allclose(secret.decrypt(secret.add(ea, eb)), a + b)
    np.testing.assert_allclose(secret.decrypt(secret.add_plain(ea, b)), a + b)
    np.testing.assert_allclose(secret.decrypt(secret.add_plain(ea, 2.5)), a + 2.5)
    np.testing.assert_allclose(secret.decrypt(secret.mul_plain(ea, b)), a * b)
    np.testing.assert_allclose(secret.decrypt(secret.mul_plain(ea, -3.0)), -3 * a)
    coeffs = [0.5, 0.2, 0.0, -0.01, 0.0, 0.001]
    np.testing.assert_allclose(secret.decrypt(secret.polyval(ea, coeffs)), np.polynomial.polynomial.polyval(a, coeffs))
    with pytest.raises(ValueError, match="max_degree"):
        secret.polyval(ea, [0.0] * 7)
    with pytest.raises(ValueError, match="length"):
        secret.add(ea, secret.encrypt(np.ones(3)))
    with pytest.raises(ValueError, match="NaN"):
        secret.encrypt(np.array([1.0, np.nan]))


def test_serialization_is_bound_to_the_key(secret: plain.PlainSecret) -> None:
    x = np.arange(10.0)
    data = secret.serialize(secret.rerandomize(secret.encrypt(x)))
    np.testing.assert_array_equal(secret.decrypt(secret.deserialize(data)), x)
    other = plain.keygen()
    with pytest.raises(ValueError, match="another key"):
        other.deserialize(data)
    with pytest.raises(ValueError):
        secret.deserialize(data[:-3])


def test_masked_column_sums_roundtrip_and_hide(secret: plain.PlainSecret) -> None:
    rng = np.random.default_rng(2)
    d = rng.normal(size=200)
    x = rng.normal(size=(200, 4))
    public = plain.load_public(secret.public_bytes())
    payload, mask = public.masked_column_sums(public.encrypt(d), x)
    released = secret.decrypt_column_sums(payload)
    truth = x.T @ d
    np.testing.assert_allclose(public.unmask_column_sums(released, mask), truth, atol=1e-8)
    # what the key owner sees is the truth plus masks far larger than the values
    assert np.all(np.abs(released - truth) > 1e-3)
    payload2, _ = public.masked_column_sums(public.encrypt(d), x)
    assert not np.allclose(secret.decrypt_column_sums(payload2), released)  # fresh masks every time
    with pytest.raises(ValueError, match="shape"):
        public.masked_column_sums(public.encrypt(d), x[:10])
    with pytest.raises(ValueError, match=r"another|not a masked"):
        plain.keygen().decrypt_column_sums(payload)


def test_masked_total(secret: plain.PlainSecret) -> None:
    v = np.linspace(-1, 1, 33)
    payload, mask = secret.masked_total(secret.encrypt(v))
    released = secret.decrypt_total(payload)
    assert abs(released - v.sum()) > 1e-3
    assert secret.unmask_total(released, mask) == pytest.approx(v.sum(), abs=1e-8)
    with pytest.raises(ValueError):
        secret.decrypt_column_sums(payload)  # a total is not a column-sum payload


def test_masks_are_uniform_and_unpredictable() -> None:
    masks = plain._uniform_masks(20000)
    assert masks.min() >= -plain.MASK_BOUND and masks.max() < plain.MASK_BOUND
    # uniform on [-B, B): mean ~0, std ~B/sqrt(3)
    assert abs(masks.mean()) < 0.03 * plain.MASK_BOUND
    assert masks.std() == pytest.approx(plain.MASK_BOUND / np.sqrt(3), rel=0.03)
    assert not np.array_equal(plain._uniform_masks(8), plain._uniform_masks(8))


def test_public_key_parsing() -> None:
    with pytest.raises(ValueError):
        plain.load_public(b"garbage")
    with pytest.raises(ValueError):
        plain.PlainPublic(b"short")


def test_public_bytes_keyword_and_row_weights(secret: plain.PlainSecret) -> None:
    # no relinearization keys exist: the providers' variant is the same key
    assert secret.public_bytes(with_relin_keys=False) == secret.public_bytes()
    a = np.linspace(-1, 1, 20)
    w = np.where(np.arange(20) % 4 == 0, 0.0, 1.5)
    coeffs = [0.5, 0.2, 0.0, -0.01]
    got = secret.decrypt(secret.polyval(secret.encrypt(a), coeffs, row_weights=w))
    np.testing.assert_allclose(got, w * np.polynomial.polynomial.polyval(a, coeffs))
    with pytest.raises(ValueError):
        secret.polyval(secret.encrypt(a), coeffs, row_weights=w[:-1])
