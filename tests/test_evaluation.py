"""Full-coverage evaluation: the key holder learns counts and eligible totals, never a part."""

from __future__ import annotations

import numpy as np
import pytest

from xinrong.modeling import evaluation as ev
from xinrong.modeling.he import base


@pytest.fixture(scope="module")
def keys() -> tuple[base.HESecret, base.HEPublic]:
    secret = ev.evaluation_keygen()
    return secret, base.load_public("ckks", secret.public_bytes(with_relin_keys=False))


def test_two_rounds_give_counts_then_only_eligible_totals(keys: tuple[base.HESecret, base.HEPublic]) -> None:
    secret, public = keys
    rng = np.random.default_rng(5)
    universe = np.array(sorted(f"E{i:05d}" for i in range(9000)), dtype="S6")
    held = {p: rng.choice(universe, size=int(rng.integers(2000, 7000)), replace=False) for p in ("tax", "gas", "water")}
    points = {p: rng.integers(0, 200, ids.size) for p, ids in held.items()}
    positions = {p: ev.universe_positions(universe, ids) for p, ids in held.items()}
    n = universe.size
    presence = [
        ev.encrypt_part(public, kind=ev.KIND_PRESENCE, evaluation_id="e1", index_sha256="i", provider=p,
                        values=ev.presence(n, positions[p]))
        for p in held
    ]  # fmt: skip
    counts = ev.decrypt_sums(secret, ev.aggregate_parts(public, presence, kind=ev.KIND_PRESENCE)).values
    truth = np.sum([ev.presence(n, positions[p]) for p in held], axis=0).astype(int)
    assert np.array_equal(counts, truth)
    mask = ev.unpack_mask(ev.pack_mask(ev.eligible(counts, 2)), n)
    parts = [
        ev.encrypt_part(public, kind=ev.KIND_POINTS, evaluation_id="e1", index_sha256="i", provider=p,
                        values=np.where(mask, ev.lay_out(n, positions[p], points[p]), 0))
        for p in held
    ]  # fmt: skip
    totals = ev.decrypt_sums(secret, ev.aggregate_parts(public, parts, kind=ev.KIND_POINTS, min_parts=2))
    plain = np.sum([ev.lay_out(n, positions[p], points[p]) for p in held], axis=0).astype(int)
    assert np.array_equal(totals.values[mask], plain[mask])
    # A firm one provider knows shows no points at all: its part never reaches a decryption.
    single = truth == 1
    assert single.any() and np.all(totals.values[single] == 0)
    assert totals.providers == ("gas", "tax", "water")


def test_aggregation_refuses_mixed_duplicate_or_foreign_parts(keys: tuple[base.HESecret, base.HEPublic]) -> None:
    secret, public = keys
    ones = np.ones(10)
    part = ev.encrypt_part(public, kind=ev.KIND_POINTS, evaluation_id="e1", index_sha256="i", provider="a", values=ones)
    other_round = ev.encrypt_part(
        public, kind=ev.KIND_POINTS, evaluation_id="e2", index_sha256="i", provider="b", values=ones
    )
    other_index = ev.encrypt_part(
        public, kind=ev.KIND_POINTS, evaluation_id="e1", index_sha256="j", provider="b", values=ones
    )
    for bad in ([part, other_round], [part, other_index], [part, part]):
        with pytest.raises(ValueError):
            ev.aggregate_parts(public, bad, kind=ev.KIND_POINTS)
    with pytest.raises(ValueError):
        ev.aggregate_parts(public, [part], kind=ev.KIND_PRESENCE)
    stranger = base.load_public("ckks", ev.evaluation_keygen().public_bytes(with_relin_keys=False))
    with pytest.raises(ValueError):
        ev.aggregate_parts(stranger, [part], kind=ev.KIND_POINTS)
    with pytest.raises(ValueError):  # a part is never decrypted alone
        ev.decrypt_sums(secret, part)
    half = ev.encrypt_part(public, kind=ev.KIND_POINTS, evaluation_id="e3", index_sha256="i", provider="a",
                           values=np.full(10, 0.5))  # fmt: skip
    with pytest.raises(ValueError, match="not integers"):
        ev.decrypt_sums(secret, ev.aggregate_parts(public, [half], kind=ev.KIND_POINTS))
