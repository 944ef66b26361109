"""ECDH-PSI over X25519: correctness, shared row order, what crosses the wire, decoys."""

from __future__ import annotations

import random

import numpy as np
import pytest

from xinrong.modeling import psi

CTX = b"job-0001"


def make_sets(n_bank: int, n_provider: int, overlap: int, seed: int) -> tuple[list[str], list[str], set[str]]:
    rng = random.Random(seed)
    pool = [f"91{rng.getrandbits(60):016X}" for _ in range(n_bank + n_provider)]
    assert len(set(pool)) == len(pool)
    bank = pool[:n_bank]
    provider = bank[:overlap] + pool[n_bank : n_bank + n_provider - overlap]
    rng.shuffle(provider)
    return bank, provider, set(bank[:overlap])


def run(
    bank_ids: list[str], providers: dict[str, list[str]], decoys: list[str] | None = None
) -> tuple[psi.BankAlignment, dict[str, psi.ProviderAlignment], list[bytes]]:
    """One PSI job; returns both sides' results and every message the node relayed."""
    wire: list[bytes] = []
    bank = psi.BankPsi(bank_ids, context=CTX, decoys=decoys or [], workers=1)
    request = bank.request()
    parties = {name: psi.ProviderPsi(ids, context=CTX, workers=1) for name, ids in providers.items()}
    for name, party in parties.items():
        wire.append(request)
        response = party.respond(request)
        wire.append(response)
        bank.accept(name, response)
    alignment, selections = bank.finish()
    views = {}
    for name, party in parties.items():
        wire.append(selections[name])
        views[name] = party.finish(selections[name])
    return alignment, views, wire


def test_intersection_and_identical_row_order() -> None:
    bank_ids, provider_ids, expected = make_sets(300, 250, 120, seed=1)
    alignment, views, _ = run(bank_ids, {"tax": provider_ids})
    assert set(alignment.ids) == expected and len(alignment) == 120
    assert views["tax"].ids == alignment.ids
    assert [bank_ids[i] for i in alignment.bank_index] == alignment.ids
    assert [provider_ids[i] for i in views["tax"].provider_index] == alignment.ids
    assert not alignment.is_decoy.any()
    # The canonical order is random, not the bank's own order (which could leak its data).
    assert alignment.bank_index.tolist() != sorted(alignment.bank_index.tolist())


def test_several_providers_share_one_order_over_the_joint_intersection() -> None:
    rng = random.Random(2)
    universe = [f"ID{i:06d}" for i in range(1000)]
    bank_ids = rng.sample(universe, 400)
    a = rng.sample(universe, 500)
    b = rng.sample(universe, 450)
    alignment, views, _ = run(bank_ids, {"tax": a, "power": b})
    assert set(alignment.ids) == set(bank_ids) & set(a) & set(b)
    assert views["tax"].ids == views["power"].ids == alignment.ids


@pytest.mark.parametrize("overlap", [0, 80])
def test_empty_and_full_overlap(overlap: int) -> None:
    bank_ids, provider_ids, expected = make_sets(80, 80, overlap, seed=3)
    alignment, views, _ = run(bank_ids, {"tax": provider_ids})
    assert set(alignment.ids) == expected
    assert views["tax"].ids == alignment.ids
    assert len(alignment.is_decoy) == len(alignment.bank_index) == overlap


def test_empty_sets() -> None:
    alignment, views, _ = run([], {"tax": ["A", "B"]})
    assert alignment.ids == [] and views["tax"].ids == []
    alignment, views, _ = run(["A"], {"tax": []})
    assert alignment.ids == [] and views["tax"].ids == []


def test_only_blinded_points_cross_the_wire() -> None:
    bank_ids, provider_ids, expected = make_sets(200, 200, 50, seed=4)
    _, _, wire = run(bank_ids, {"tax": provider_ids})
    digest = psi.context_digest(CTX)
    hashes = {psi.hash_to_u(digest, i) for i in bank_ids + provider_ids}
    blob = b"".join(wire)
    for identifier in bank_ids + provider_ids:
        assert identifier.encode() not in blob
    request, response, selection = wire
    header = psi._HEADER.size
    for msg in (request, response):
        chunks = {msg[i : i + 32] for i in range(header, len(msg), 32)}
        assert not chunks & hashes  # no unblinded H(id)
    # Without the bank's scalar the provider's own blinded ids match nothing the bank sent.
    bank_points = {request[i : i + 32] for i in range(header, len(request), 32)}
    own_points = {response[i : i + 32] for i in range(header + 200 * 32, len(response), 32)}
    assert not bank_points & own_points
    # The selection is positions only: 4 bytes per common row.
    assert len(selection) == header + 4 * len(expected)


def test_decoys_are_in_the_intersection_but_flagged_only_for_the_bank() -> None:
    bank_ids, provider_ids, expected = make_sets(100, 300, 40, seed=5)
    decoys = [*[i for i in provider_ids if i not in expected][:25], "NOT-HELD-BY-ANYONE"]
    alignment, views, wire = run(bank_ids, {"tax": provider_ids}, decoys=decoys + bank_ids[:3])
    assert set(alignment.ids) == expected | set(decoys[:25])
    flagged = {i for i, d in zip(alignment.ids, alignment.is_decoy) if d}
    assert flagged == set(decoys[:25])  # real ids passed as decoys stay real
    assert all(alignment.bank_index[alignment.is_decoy] == -1)
    provider_view = views["tax"]
    assert provider_view.ids == alignment.ids
    assert not hasattr(provider_view, "is_decoy")
    assert len(wire[2]) == psi._HEADER.size + 4 * len(alignment)  # nothing but positions


def test_per_job_keys_make_blinded_values_unlinkable() -> None:
    ids = [f"ID{i}" for i in range(100)]
    first = psi.BankPsi(ids, context=CTX, workers=1).request()
    second = psi.BankPsi(ids, context=CTX, workers=1).request()
    header = psi._HEADER.size

    def points(message: bytes) -> set[bytes]:
        return {message[i : i + 32] for i in range(header, len(message), 32)}

    assert not points(first) & points(second)


def test_messages_are_bound_to_their_job_and_kind() -> None:
    bank = psi.BankPsi(["A", "B"], context=CTX, workers=1)
    other_job = psi.ProviderPsi(["A"], context=b"job-0002", workers=1)
    with pytest.raises(ValueError, match="another job"):
        other_job.respond(bank.request())
    provider = psi.ProviderPsi(["A"], context=CTX, workers=1)
    with pytest.raises(ValueError, match="kind"):
        bank.accept("tax", bank.request())
    response = provider.respond(bank.request())
    with pytest.raises(ValueError):
        bank.accept("tax", response[:-1])
    bank.accept("tax", response)
    _, selections = bank.finish()
    tag = psi.context_digest(CTX)[:16]
    out_of_range = psi._HEADER.pack(psi._MAGIC, psi._VERSION, psi._KIND_SELECTION, tag, 1, 0) + (5).to_bytes(
        4, "little"
    )
    with pytest.raises(ValueError, match="positions"):
        provider.finish(out_of_range)
    with pytest.raises(ValueError, match="length"):
        provider.finish(selections["tax"] + b"\x00")
    assert provider.finish(selections["tax"]).ids == ["A"]


def test_a_version_1_peer_is_refused_not_misread() -> None:
    """Version 1 sent selection positions big-endian; a version-2 party must not read them as little-endian."""
    bank = psi.BankPsi(["A", "B"], context=CTX, workers=1)
    provider = psi.ProviderPsi(["A", "B"], context=CTX, workers=1)
    bank.accept("tax", provider.respond(bank.request()))
    _, selections = bank.finish()
    tag = psi.context_digest(CTX)[:16]
    count = (len(selections["tax"]) - psi._HEADER.size) // 4
    old = psi._HEADER.pack(psi._MAGIC, 1, psi._KIND_SELECTION, tag, count, 0)
    old += b"".join(p.to_bytes(4, "big") for p in range(count))
    with pytest.raises(ValueError, match="version"):
        provider.finish(old)
    old_request = psi._HEADER.pack(psi._MAGIC, 1, psi._KIND_REQUEST, tag, 0, 0)
    with pytest.raises(ValueError, match="version"):
        psi.ProviderPsi(["A"], context=CTX, workers=1).respond(old_request)
    assert sorted(provider.finish(selections["tax"]).ids) == ["A", "B"]


def test_low_order_points_are_rejected() -> None:
    provider = psi.ProviderPsi(["A"], context=CTX, workers=1)
    header = psi._HEADER.pack(psi._MAGIC, psi._VERSION, psi._KIND_REQUEST, psi.context_digest(CTX)[:16], 1, 0)
    with pytest.raises(ValueError, match="low-order"):
        provider.respond(header + (1).to_bytes(32, "little"))  # u = 1 has order 4


def test_blinding_commutes_on_the_curve_and_on_its_twist() -> None:
    digest = psi.context_digest(CTX)
    us = [psi.hash_to_u(digest, f"ID{i}") for i in range(64)]
    p = psi.P25519

    def on_curve(u: bytes) -> bool:
        x = int.from_bytes(u, "little")
        rhs = (x * x * x + 486662 * x * x + x) % p
        return pow(rhs, (p - 1) // 2, p) in (0, 1)

    kinds = [on_curve(u) for u in us]
    assert any(kinds) and not all(kinds)  # both the curve and its twist occur
    a, b = bytes(range(32)), bytes(range(32, 64))
    ab = psi.blind(b, psi.blind(a, us))
    ba = psi.blind(a, psi.blind(b, us))
    assert ab == ba
    assert len(set(ab)) == len(us)


def test_worker_processes_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psi, "PARALLEL_MIN", 100)
    monkeypatch.setattr(psi, "CHUNK", 150)
    monkeypatch.setattr(psi, "MIN_CHUNK", 50)
    bank_ids, provider_ids, expected = make_sets(500, 400, 123, seed=6)
    with (
        psi.BankPsi(bank_ids, context=CTX, workers=2) as bank,
        psi.ProviderPsi(provider_ids, context=CTX, workers=2) as provider,
    ):
        bank.accept("tax", provider.respond(bank.request()))
        alignment, selections = bank.finish()
        view = provider.finish(selections["tax"])
    assert set(alignment.ids) == expected and view.ids == alignment.ids
    assert bank.cpu_seconds > 0 and provider.cpu_seconds > 0


def test_shared_pool_concurrent_providers_and_early_prepare(monkeypatch: pytest.MonkeyPatch) -> None:
    """How one process runs a job (``xinrong.tools.federation_job.align_psi``): one worker pool for every party,
    providers blinding their own ids before the request exists and answering on their own threads."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(psi, "SHARED_MIN", 100)
    monkeypatch.setattr(psi, "MIN_CHUNK", 60)
    bank_ids, tax_ids, expected = make_sets(400, 300, 150, seed=8)
    power_ids = bank_ids[100:260] + [f"X{i}" for i in range(90)]
    expected &= set(power_ids)
    assert len(expected) == 50
    with psi.worker_pool(2) as pool:
        bank = psi.BankPsi(bank_ids, context=CTX, workers=2, executor=pool)
        parties = {
            n: psi.ProviderPsi(ids, context=CTX, workers=2, executor=pool)
            for n, ids in (("tax", tax_ids), ("power", power_ids))
        }
        with ThreadPoolExecutor(2) as threads:
            for party in parties.values():
                threads.submit(party.prepare)
            request = bank.request()
            answers = {n: threads.submit(p.respond, request) for n, p in parties.items()}
            for name, answer in answers.items():
                bank.accept(name, answer.result())
        alignment, selections = bank.finish()  # closes nothing it does not own: the pool still works
        views = {n: p.finish(selections[n]) for n, p in parties.items()}
        assert pool.submit(len, "abc").result() == 3
    assert set(alignment.ids) == expected
    assert all(v.ids == alignment.ids for v in views.values())
    # the same job without any worker gives the same intersection (row order is random per job)
    serial, _, _ = run(bank_ids, {"tax": tax_ids, "power": power_ids})
    assert set(serial.ids) == expected
    assert bank.cpu_seconds > 0 and all(p.cpu_seconds > 0 for p in parties.values())


def test_prepare_is_idempotent_and_matches_respond() -> None:
    bank_ids, provider_ids, _ = make_sets(60, 50, 20, seed=9)
    bank = psi.BankPsi(bank_ids, context=CTX, workers=1)
    early = psi.ProviderPsi(provider_ids, context=CTX, workers=1)
    early.prepare()
    own = early._own
    early.prepare()
    assert early._own is own
    response = early.respond(bank.request())
    assert own is not None and response.endswith(own)  # {H(y)^b} close the response, as prepared


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicates"):
        psi.BankPsi(["A", "A"], context=CTX)
    with pytest.raises(ValueError, match="duplicates"):
        psi.ProviderPsi(["B", "B"], context=CTX)
    np.testing.assert_array_equal(psi._random_permutation(0), np.zeros(0, dtype=np.int64))


def test_benchmark_reports_a_correct_run() -> None:
    from xinrong.tools.bench import psi as bench

    result = bench.run(300, 200, 0.5, providers=2, decoys=20, workers=1, seed=1)
    assert result["correct"] is True
    assert result["intersection"] == 100 and result["decoys_in_intersection"] == 20
    assert result["bytes"]["providers_to_bank"] == 2 * (psi._HEADER.size + (300 + 20 + 200) * 32)
    assert set(result["cpu_seconds"]) == {"bank", "provider0", "provider1"}
