"""Full-coverage evaluation end to end, in process over mTLS: nine real agents on generated data,
the node's coordinator, the enterprise reading its own score and breakdown.

Must-never-see: the node holds the evaluation key, so the test keeps that key
and decrypts every single part the node received, as a curious node could:
each is uniform noise mod M, never the provider's part.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from xinrong.catalog import Catalog
from xinrong.enterprise.evaluation import own_evaluation
from xinrong.errors import Reason
from xinrong.index import default_index
from xinrong.keys.layout import party_dir
from xinrong.modeling import evaluation as ev
from xinrong.node.config import load_config, render_config
from xinrong.node.evaluation import EvaluationAgents, EvaluationCoordinator, EvaluationStore
from xinrong.node.server import NodeServer, start_node
from xinrong.provider_agent import config as agent_config
from xinrong.provider_agent import importer, server, store
from xinrong.rpc.errors import RemoteError
from xinrong.tools.datagen.config import GenerateConfig
from xinrong.tools.datagen.generator import generate
from xinrong.tools.demo import GroundTruth
from xinrong.v1 import evaluation_pb2

FIRMS = 300


@pytest.fixture(scope="module")
def network(
    pki: Any, catalog: Catalog, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[NodeServer, dict[str, Any], Path]]:
    work = tmp_path_factory.mktemp("evaluation")
    generate(work / "data", GenerateConfig(enterprises=FIRMS, seed=13, as_of=dt.date(2026, 6, 30)), catalog)
    agents: dict[str, Any] = {}
    try:
        for provider in catalog.providers:
            cfg = agent_config.parse_config(
                {
                    "agent": {
                        "provider": provider,
                        "bind": "127.0.0.1:0",
                        "credentials": str(party_dir(pki.root, "provider", provider)),
                        "ca_cert": str(pki.root / "ca" / "ca.crt"),
                        "db": str(work / f"agent-{provider}.db"),
                        "node_id": "node",
                    }
                },
                work,
            )
            data = store.DataStore(cfg.db, provider)
            try:
                importer.import_csv(data, catalog, provider, work / "data" / f"{provider}.csv")
            finally:
                data.close()
            agents[provider] = server.start_agent(agent_config.prepare(cfg), bind="127.0.0.1:0")
        config_path = work / "node.toml"
        config_path.write_text(
            render_config(
                bind="127.0.0.1:0",
                credentials=party_dir(pki.root, "node", "node"),
                ca_cert=pki.root / "ca" / "ca.crt",
                db="node.db",
                providers=[
                    (p, f"127.0.0.1:{a.port}", party_dir(pki.root, "provider", p) / "binding.pb")
                    for p, a in agents.items()
                ],
                institutions=[],
            )
        )
        node = start_node(load_config(config_path))
        try:
            yield node, agents, config_path
        finally:
            node.stop(0.5)
    finally:
        for agent in agents.values():
            agent.stop(0.5)


def _truth(agents: dict[str, Any], catalog: Catalog, data_dir: Path) -> dict[str, dict[str, int]]:
    """Per provider, per USCC: its plaintext part, from the generated CSVs (not from the agents' code)."""
    index = default_index()
    csvs = GroundTruth(data_dir, catalog, sorted(agents))
    return {
        provider: {u: sum(i.points(csvs.value(i.field, u)) for i in index.provider_items(provider)) for u in rows}
        for provider, rows in csvs.rows.items()
    }


def test_a_period_is_evaluated_stored_and_read_by_the_enterprise(
    network: tuple[NodeServer, dict[str, Any], Path], pki: Any, catalog: Catalog
) -> None:
    node, agents, config_path = network
    config = load_config(config_path)
    transcript: list[tuple[str, str, str, bytes]] = []
    keys: list[Any] = []

    def keygen() -> Any:
        keys.append(ev.evaluation_keygen())
        return keys[-1]

    links = EvaluationAgents(config, pki.node)
    try:
        coordinator = EvaluationCoordinator(
            links,
            EvaluationStore(config.evaluation_path()),
            observer=lambda *m: transcript.append(m),
            keygen=keygen,
        )
        summary = coordinator.run("2026-06")
    finally:
        links.close()
    truth = _truth(agents, catalog, config_path.parent / "data")
    index = default_index()
    universe = sorted(truth["market"])
    assert summary.enterprises == len(universe) == FIRMS
    counts = {u: sum(u in truth[p] for p in truth) for u in universe}
    totals = {u: sum(truth[p].get(u, 0) for p in truth) for u in universe}
    store_ = EvaluationStore(config.evaluation_path())
    eligible = [u for u in universe if counts[u] >= index.min_providers]
    assert summary.evaluated == len(eligible) and len(eligible) > 0
    for u in universe:
        record = store_.lookup(u)
        assert record is not None and record.period == "2026-06"
        assert record.scored == (counts[u] >= index.min_providers), u
        if record.scored:
            assert record.score == index.score(totals[u]) and record.grade == index.grade(record.score)

    # Must never see: every part the node received, decrypted with the node's own key, is noise.
    secret = keys[0]
    parts = [
        (peer, m)
        for peer, direction, method, m in transcript
        if direction == "in" and method == "ComputeEvaluationPart"
    ]
    assert len(parts) == 2 * len(agents)
    pos = {u: i for i, u in enumerate(universe)}
    for peer, raw in parts:
        resp = evaluation_pb2.ComputeEvaluationPartResponse.FromString(raw)
        alone = ev.unmask(ev.decrypt_sums(secret, ev.aggregate_parts(secret, [resp.payload], kind=_kind(resp))).values)
        own = np.zeros(len(universe), dtype=np.int64)
        for u, pts in truth[peer].items():
            own[pos[u]] = pts
        presence = np.zeros(len(universe), dtype=np.int64)
        presence[[pos[u] for u in truth[peer]]] = 1
        assert not np.array_equal(alone, own) and not np.array_equal(alone, presence)
        assert np.mean(alone) > ev.MASK_MODULUS / 4  # parts are < 1000 and presence <= 1; noise is ~M/2
    # What the node keeps: the register's order and a score per enterprise, no count, no part.
    with np.load(config.evaluation_path() / "2026-06.npz", allow_pickle=False) as stored:
        assert sorted(stored.files) == ["scores", "universe"]
    assert (config.evaluation_path() / "2026-06.npz").stat().st_mode & 0o077 == 0

    # The enterprise reads its own score, grade and breakdown over gRPC.
    scored = next(u for u in universe if counts[u] >= 3)
    view = own_evaluation(f"127.0.0.1:{node.port}", pki.enterprise(scored))
    assert (
        view["scored"] and view["score"] == index.score(totals[scored]) and view["grade"] == index.grade(view["score"])
    )
    assert view["breakdown_points"] == totals[scored]
    assert {b["provider"] for b in view["breakdown"]} == set(agents)
    single = [u for u in universe if counts[u] == 1]
    if single:
        alone_view = own_evaluation(f"127.0.0.1:{node.port}", pki.enterprise(single[0]))
        assert not alone_view["scored"] and alone_view["score"] is None
        assert alone_view["breakdown_points"] == totals[single[0]]  # its own data, shown to itself only


def _kind(resp: evaluation_pb2.ComputeEvaluationPartResponse) -> str:
    import json

    from xinrong.modeling.he import base

    return str(json.loads(base.unpack_blobs(resp.payload)[0])["kind"])


def test_an_agent_answers_a_round_once_and_only_with_its_own_binding_among_the_participants(
    network: tuple[NodeServer, dict[str, Any], Path], pki: Any
) -> None:
    config = load_config(network[2])
    links = EvaluationAgents(config, pki.node)
    try:
        universe = (
            links.stubs["market"]
            .GetEvaluationUniverse(evaluation_pb2.GetEvaluationUniverseRequest(evaluation_id="x"), timeout=30)
            .usccs
        )
        key = ev.evaluation_keygen()
        request = evaluation_pb2.ComputeEvaluationPartRequest(
            evaluation_id="replay-1",
            round=evaluation_pb2.EVALUATION_ROUND_PRESENCE,
            index_sha256=default_index().sha256,
            public_key=key.public_bytes(with_relin_keys=False),
            universe=universe,
            universe_sha256=ev.universe_digest(np.frombuffer(universe, dtype="S18")),
            participants=[links.bindings["tax"], links.bindings["gas"]],
        )
        links.stubs["tax"].ComputeEvaluationPart(request, timeout=30)
        with pytest.raises(grpc.RpcError) as replay:
            links.stubs["tax"].ComputeEvaluationPart(request, timeout=30)
        assert replay.value.code() == grpc.StatusCode.ALREADY_EXISTS or "REPLAY" in str(replay.value.details())
        request.evaluation_id = "replay-2"
        del request.participants[:]
        request.participants.extend([links.bindings["gas"], links.bindings["water"]])
        with pytest.raises(grpc.RpcError) as missing:
            links.stubs["tax"].ComputeEvaluationPart(request, timeout=30)
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for field, value, code in (
            ("universe_sha256", "0" * 64, grpc.StatusCode.INVALID_ARGUMENT),
            ("universe", universe[18:] + universe[:18], grpc.StatusCode.INVALID_ARGUMENT),  # not sorted
            ("universe", universe[:-1], grpc.StatusCode.INVALID_ARGUMENT),  # not whole codes
            ("index_sha256", "f" * 64, grpc.StatusCode.FAILED_PRECONDITION),
        ):
            bad = evaluation_pb2.ComputeEvaluationPartRequest()
            bad.CopyFrom(request)
            del bad.participants[:]
            bad.participants.extend([links.bindings["tax"], links.bindings["gas"]])
            bad.evaluation_id = f"bad-{field}-{len(value)}"
            setattr(bad, field, value)
            with pytest.raises(grpc.RpcError) as refused:
                links.stubs["tax"].ComputeEvaluationPart(bad, timeout=30)
            assert refused.value.code() == code, field
        del request.participants[:]
        request.participants.extend([links.bindings["tax"], links.bindings["tax"]])
        request.evaluation_id = "twice"
        with pytest.raises(grpc.RpcError) as twice:  # one provider listed twice
            links.stubs["tax"].ComputeEvaluationPart(request, timeout=30)
        assert twice.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as not_register:
            links.stubs["tax"].GetEvaluationUniverse(evaluation_pb2.GetEvaluationUniverseRequest(), timeout=30)
        assert not_register.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        links.close()


def test_an_enterprise_cannot_read_another_enterprises_evaluation(
    network: tuple[NodeServer, dict[str, Any], Path], pki: Any
) -> None:
    node, agents, _ = network
    from xinrong.enterprise import evaluation as ent

    # A caller presenting another enterprise's binding is refused uniformly.
    first, second = _two_usccs(agents)
    intruder = pki.enterprise(second)
    target = pki.enterprise(first)
    forged = type(intruder)(**{**intruder.__dict__, "binding": target.binding})
    with pytest.raises(RemoteError) as denied:
        ent.own_evaluation(f"127.0.0.1:{node.port}", forged)
    assert denied.value.reason == Reason.ACCESS_DENIED.value
    with pytest.raises(RemoteError) as never:
        ent.own_evaluation(f"127.0.0.1:{node.port}", target, period="1999-01")
    assert never.value.reason == Reason.NOT_FOUND.value


def _two_usccs(agents: dict[str, Any]) -> tuple[str, str]:
    import sqlite3

    conn = sqlite3.connect(f"file:{agents['market'].data.path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT uscc FROM records ORDER BY uscc LIMIT 2").fetchall()
    finally:
        conn.close()
    return str(rows[0][0]), str(rows[1][0])


def test_enterprises_known_to_one_provider_are_withheld_over_grpc(
    network: tuple[NodeServer, dict[str, Any], Path], pki: Any, catalog: Catalog
) -> None:
    """Three participants (the register plus two utilities): firms only the register knows get nothing."""
    node, agents, config_path = network
    full = load_config(config_path)
    config = full.model_copy(
        update={"providers": tuple(p for p in full.providers if p.name in {"market", "gas", "water"})}
    )
    links = EvaluationAgents(config, pki.node)
    try:
        summary = EvaluationCoordinator(links, EvaluationStore(config.evaluation_path())).run("2026-06-subset")
    finally:
        links.close()
    truth = {
        p: t for p, t in _truth(agents, catalog, config_path.parent / "data").items() if p in {"market", "gas", "water"}
    }
    universe = sorted(truth["market"])
    counts = {u: sum(u in truth[p] for p in truth) for u in universe}
    withheld = [u for u in universe if counts[u] < 2]
    assert summary.withheld == len(withheld) > 0 and summary.providers == ("gas", "market", "water")
    store_ = EvaluationStore(config.evaluation_path())
    index = default_index()
    for u in universe:
        record = store_.lookup(u, "2026-06-subset")
        assert record is not None and record.scored == (counts[u] >= 2)
        if record.scored:
            assert record.score == index.score(sum(truth[p].get(u, 0) for p in truth))
    view = own_evaluation(f"127.0.0.1:{node.port}", pki.enterprise(withheld[0]), period="2026-06-subset")
    assert not view["scored"] and view["grade"] is None
