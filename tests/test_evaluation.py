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


def _pair_keys(names: list[str], kind: str, seed: int = 3) -> dict[str, dict[str, bytes]]:
    rng = np.random.default_rng(seed)
    shared = {(a, b): rng.bytes(32) for a in names for b in names if a < b}
    return {
        own: {
            peer: ev.mask_key(shared[tuple(sorted((own, peer)))], evaluation_id="e1", kind=kind, a=own, b=peer)  # type: ignore[index]
            for peer in names
            if peer != own
        }
        for own in names
    }


def test_masked_parts_sum_to_the_plaintext_and_each_part_alone_is_uniform(
    keys: tuple[base.HESecret, base.HEPublic],
) -> None:
    """The node holds the key: what it can decrypt of one provider's ciphertext must say nothing."""
    secret, public = keys
    rng = np.random.default_rng(11)
    names = ["electricity", "gas", "tax", "water"]
    n = 6000
    values = {p: rng.integers(0, 300, n) * (rng.random(n) < 0.6) for p in names}
    keys_by = _pair_keys(names, ev.KIND_POINTS)
    masked = {p: ev.mask_values(values[p], ev.zero_sum_mask(n, p, keys_by[p])) for p in names}
    parts = [
        ev.encrypt_part(public, kind=ev.KIND_POINTS, evaluation_id="e1", index_sha256="i", provider=p, values=masked[p])
        for p in names
    ]
    total = ev.unmask(ev.decrypt_sums(secret, ev.aggregate_parts(public, parts, kind=ev.KIND_POINTS)).values)
    assert np.array_equal(total, np.sum([values[p] for p in names], axis=0))
    # One part decrypted alone (the node could): uniform on [0, M), uncorrelated with the part.
    alone = ev.unmask(ev.decrypt_sums(secret, ev.aggregate_parts(public, parts[:1], kind=ev.KIND_POINTS)).values)
    assert not np.array_equal(alone, values[names[0]])
    assert abs(float(np.mean(alone)) / ev.MASK_MODULUS - 0.5) < 0.02
    assert abs(float(np.corrcoef(alone, values[names[0]])[0, 1])) < 0.05
    # Every sum of fewer than all parts is masked too.
    three = ev.unmask(ev.decrypt_sums(secret, ev.aggregate_parts(public, parts[:3], kind=ev.KIND_POINTS)).values)
    assert abs(float(np.corrcoef(three, np.sum([values[p] for p in names[:3]], axis=0))[0, 1])) < 0.05


def test_masks_differ_per_round_and_refuse_bad_input() -> None:
    shared = bytes(range(32))
    a = ev.mask_key(shared, evaluation_id="e1", kind=ev.KIND_PRESENCE, a="gas", b="tax")
    assert a == ev.mask_key(shared, evaluation_id="e1", kind=ev.KIND_PRESENCE, a="tax", b="gas")
    assert a != ev.mask_key(shared, evaluation_id="e1", kind=ev.KIND_POINTS, a="gas", b="tax")
    assert a != ev.mask_key(shared, evaluation_id="e2", kind=ev.KIND_PRESENCE, a="gas", b="tax")
    with pytest.raises(ValueError):
        ev.mask_key(shared, evaluation_id="e1", kind=ev.KIND_PRESENCE, a="gas", b="gas")
    # Bound to the round's inputs: another eligible set (or key, universe, participants) gives other masks.
    base_ctx = {"public_key": b"k", "universe_sha256": "u", "providers": ["gas", "tax"], "eligible": b"\x80"}
    ctx = ev.round_context(**base_ctx)  # type: ignore[arg-type]
    assert ctx == ev.round_context(**{**base_ctx, "providers": ["tax", "gas"]})  # type: ignore[arg-type]
    for change in ({"eligible": b"\xc0"}, {"public_key": b"j"}, {"universe_sha256": "v"}, {"providers": ["gas"]}):
        assert ev.round_context(**{**base_ctx, **change}) != ctx  # type: ignore[arg-type]
    assert ev.mask_key(shared, evaluation_id="e1", kind=ev.KIND_POINTS, a="gas", b="tax", context=ctx) != (
        ev.mask_key(shared, evaluation_id="e1", kind=ev.KIND_POINTS, a="gas", b="tax", context=ev.round_context(
            **{**base_ctx, "eligible": b"\xc0"}))  # type: ignore[arg-type]
    )  # fmt: skip
    mask = ev.zero_sum_mask(4, "gas", {"tax": a})
    with pytest.raises(ValueError):
        ev.mask_values([0, 1, 2, ev.MASK_MODULUS], mask)
    with pytest.raises(ValueError):
        ev.mask_values([0.5, 1, 2, 3], mask)
    with pytest.raises(ValueError):
        ev.zero_sum_mask(4, "gas", {"gas": a})


def test_an_enterprise_at_one_provider_is_withheld_even_with_masks(keys: tuple[base.HESecret, base.HEPublic]) -> None:
    secret, public = keys
    names = ["gas", "tax", "water"]
    n = 5
    held = {"gas": [1, 1, 0, 0, 1], "tax": [1, 0, 0, 1, 0], "water": [0, 0, 0, 1, 1]}
    points = {"gas": [10, 20, 0, 0, 30], "tax": [5, 0, 0, 7, 0], "water": [0, 0, 0, 9, 11]}

    def round_(kind: str, values: dict[str, np.ndarray]) -> np.ndarray:
        keys_by = _pair_keys(names, kind)
        parts = [
            ev.encrypt_part(public, kind=kind, evaluation_id="e1", index_sha256="i", provider=p,
                            values=ev.mask_values(values[p], ev.zero_sum_mask(n, p, keys_by[p])))
            for p in names
        ]  # fmt: skip
        return ev.unmask(ev.decrypt_sums(secret, ev.aggregate_parts(public, parts, kind=kind)).values)

    counts = round_(ev.KIND_PRESENCE, {p: np.array(v) for p, v in held.items()})
    assert counts.tolist() == [2, 1, 0, 2, 2]
    mask = ev.eligible(counts, 2)
    totals = round_(ev.KIND_POINTS, {p: np.where(mask, np.array(v), 0) for p, v in points.items()})
    assert totals.tolist() == [15, 0, 0, 16, 41]  # #1 (gas alone) and #2 (nobody) show nothing


def test_vectorised_scores_and_grades_agree_with_the_published_index() -> None:
    from xinrong.index import default_index
    from xinrong.node.evaluation import grades_of, scores_of

    index = default_index()
    totals = np.arange(index.max_total + 1, dtype=np.int64)
    scores = scores_of(index, totals)
    assert scores.tolist() == [index.score(int(t)) for t in totals]
    names = [g.name for g in index.grades]
    assert [names[r] for r in grades_of(index, np.arange(1001))] == [index.grade(s) for s in range(1001)]


def test_bench_evaluate_engine_mode_is_correct_at_small_size(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from xinrong.tools.cli import main

    assert (
        main(["bench", "evaluate", "--enterprises", "3000", "--providers", "4", "--workers", "1", "--seed", "5"]) == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["correct"] is True and line["enterprises"] == 3000 and line["withheld"] > 0
    assert line["eligible"] + line["withheld"] == 3000 and set(line["phases"]) >= {"presence_parts", "points_parts"}
