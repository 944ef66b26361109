"""The batching node-agent stream, end to end in process: a real agent, the node's
AgentPool, concurrent calls coalesced into batches, per-call refusals that do
not touch their batch-mates, and a stream that recovers after the agent restarts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xinrong.catalog import Catalog
from xinrong.claims import parse_claim
from xinrong.errors import Reason, XinrongError
from xinrong.keys.layout import party_dir
from xinrong.node.config import ProviderEndpoint
from xinrong.node.routing import AgentPool
from xinrong.v1 import agent_pb2

from support.node_fakes import ACME, consent_id_of, grant

provider_agent_config = pytest.importorskip("xinrong.provider_agent.config")
provider_agent_server = pytest.importorskip("xinrong.provider_agent.server")
provider_agent_importer = pytest.importorskip("xinrong.provider_agent.importer")
provider_agent_store = pytest.importorskip("xinrong.provider_agent.store")

AS_OF = "2026-06-30"
CSV = (
    "uscc,as_of,credit_grade,abnormal_taxpayer,in_arrears,arrears_amount,vat_paid_last_year,cit_paid_last_year,"
    "consecutive_normal_months,last_normal_payment_date,grade_a_taxpayer\n"
    f"{ACME},{AS_OF},A,false,false,0,734512.37,88231.90,27,2026-06-15,true\n"
)


def _config(pki: Any, workdir: Path, port: int = 0) -> Any:
    return provider_agent_config.parse_config(
        {
            "agent": {
                "provider": "tax",
                "bind": f"127.0.0.1:{port}",
                "credentials": str(party_dir(pki.root, "provider", "tax")),
                "ca_cert": str(pki.root / "ca" / "ca.crt"),
                "db": str(workdir / "agent-tax.db"),
                "node_id": "node",
            }
        },
        workdir,
    )


@pytest.fixture
def agent(pki: Any, catalog: Catalog, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    (tmp_path / "tax.csv").write_text(CSV)
    config = _config(pki, tmp_path)
    store = provider_agent_store.DataStore(config.db, "tax")
    try:
        provider_agent_importer.import_csv(store, catalog, "tax", tmp_path / "tax.csv")
    finally:
        store.close()
    server = provider_agent_server.start_agent(provider_agent_config.prepare(config), bind="127.0.0.1:0")
    yield server, tmp_path
    server.stop(0.5)


def _request(pki: Any, consent: Any, claim: str, request_id: str | None = None) -> agent_pb2.EvaluateClaimsRequest:
    return agent_pb2.EvaluateClaimsRequest(
        request_id=request_id or str(uuid.uuid4()),
        requested_at=int(time.time()),
        enterprise_uscc=ACME,
        consent=consent,
        audience_binding=pki.institution("bank-a").binding.signed,
        claims=[parse_claim(claim)],
    )


def test_concurrent_calls_are_batched_and_refusals_stay_per_call(
    agent: tuple[Any, Path], pki: Any, catalog: Catalog
) -> None:
    server, _ = agent
    consent = grant(pki, catalog, ACME)
    replayed = str(uuid.uuid4())

    async def scenario() -> tuple[AgentPool, list[Any]]:
        pool = AgentPool(
            [ProviderEndpoint.model_construct(name="tax", address=f"127.0.0.1:{server.port}", binding=Path("unused"))],
            pki.node,
            timeout=10,
        )
        await pool.evaluate_claims(
            {"tax": _request(pki, consent, "tax.in_arrears == false", replayed)}, recipient_id="bank-a", durable_token=0
        )

        async def call(i: int) -> Any:
            claim = "tax.credit_grade in A,B" if i % 3 else "tax.in_arrears == false"
            request_id = replayed if i == 5 else None  # one replay among many good calls
            try:
                return await pool.evaluate_claims(
                    {"tax": _request(pki, consent, claim, request_id)}, recipient_id="bank-a", durable_token=0
                )
            except XinrongError as exc:
                return exc

        results = await asyncio.gather(*(call(i) for i in range(24)))
        await pool.aclose()
        return pool, results

    pool, results = asyncio.run(scenario())
    assert isinstance(results[5], XinrongError) and results[5].reason is Reason.REQUEST_REPLAYED
    good = [r for i, r in enumerate(results) if i != 5]
    assert all(isinstance(r, list) and r[0][1].recipient_id == "bank-a" for r in good)
    assert pool.batches_sent("tax") < 25, "24 concurrent calls should have shared batches"
    # Group commit: every answered call counted its use, the refused replay did not.
    consent_id = consent_id_of(consent)
    assert server.state.use_count(consent_id) == 1 + len(good)
    assert len(server.state.answer_log(consent_id=consent_id)) == 1 + len(good)
    pool.close()


def test_stream_recovers_after_the_agent_restarts(agent: tuple[Any, Path], pki: Any, catalog: Catalog) -> None:
    server, workdir = agent
    port = server.port
    consent = grant(pki, catalog, ACME)

    async def scenario() -> None:
        pool = AgentPool(
            [ProviderEndpoint.model_construct(name="tax", address=f"127.0.0.1:{port}", binding=Path("unused"))],
            pki.node,
            timeout=3,
        )

        async def ask() -> list[Any]:
            return await pool.evaluate_claims(
                {"tax": _request(pki, consent, "tax.in_arrears == false")}, recipient_id="bank-a", durable_token=0
            )

        assert await ask()
        server.stop(0.2)
        with pytest.raises(XinrongError) as info:
            await ask()
        assert info.value.reason is Reason.PROVIDER_UNAVAILABLE
        restarted = provider_agent_server.start_agent(
            provider_agent_config.prepare(_config(pki, workdir, port)), bind=f"127.0.0.1:{port}"
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    out = await ask()
                    break
                except XinrongError as exc:
                    assert exc.reason is Reason.PROVIDER_UNAVAILABLE
                    assert time.monotonic() < deadline, "the node never reconnected to the restarted agent"
                    await asyncio.sleep(0.2)
            assert out[0][0] == "tax"
        finally:
            restarted.stop(0.2)
            await pool.aclose()
            pool.close()

    asyncio.run(scenario())


def test_a_call_past_its_deadline_fails_alone_and_the_stream_reopens(
    agent: tuple[Any, Path], pki: Any, catalog: Catalog
) -> None:
    """A stuck agent costs its callers the deadline, not the node's loop; the next call opens a new stream."""
    server, _ = agent
    consent = grant(pki, catalog, ACME)

    async def scenario() -> None:
        pool = AgentPool(
            [ProviderEndpoint.model_construct(name="tax", address=f"127.0.0.1:{server.port}", binding=Path("unused"))],
            pki.node,
            timeout=0.000001,
        )
        with pytest.raises(XinrongError) as info:
            await pool.evaluate_claims(
                {"tax": _request(pki, consent, "tax.in_arrears == false")}, recipient_id="bank-a", durable_token=0
            )
        assert info.value.reason is Reason.PROVIDER_UNAVAILABLE
        pool.timeout = 10
        out = await pool.evaluate_claims(
            {"tax": _request(pki, consent, "tax.in_arrears == false")}, recipient_id="bank-a", durable_token=0
        )
        assert out[0][0] == "tax"
        await pool.aclose()
        pool.close()

    asyncio.run(scenario())


def test_each_batch_is_made_durable_before_it_leaves(agent: tuple[Any, Path], pki: Any, catalog: Catalog) -> None:
    """The node's group commit follows the batches: the hook sees every call's token before
    the agent sees the call, and a call whose commit fails never reaches the agent."""
    server, _ = agent
    consent = grant(pki, catalog, ACME)
    consent_id = consent_id_of(consent)
    committed: list[tuple[int, int]] = []  # (token, answers the agent had logged at that moment)
    failing = {"on": False}

    def durable(token: int) -> None:
        if failing["on"]:
            raise RuntimeError("disk full")
        committed.append((token, len(server.state.answer_log(consent_id=consent_id))))

    async def scenario() -> list[Any]:
        pool = AgentPool(
            [ProviderEndpoint.model_construct(name="tax", address=f"127.0.0.1:{server.port}", binding=Path("unused"))],
            pki.node,
            timeout=10,
            durable=durable,
        )

        async def call(token: int) -> Any:
            try:
                return await pool.evaluate_claims(
                    {"tax": _request(pki, consent, "tax.in_arrears == false")},
                    recipient_id="bank-a",
                    durable_token=token,
                )
            except Exception as exc:
                return exc

        results = list(await asyncio.gather(*(call(t) for t in range(1, 13))))
        failing["on"] = True
        results.append(await call(99))
        await pool.aclose()
        pool.close()
        return results

    results = asyncio.run(scenario())
    assert all(isinstance(r, list) for r in results[:12])
    assert isinstance(results[12], RuntimeError)
    # Every token was committed (the largest of its batch covers the others), before its answer existed.
    assert max(t for t, _ in committed) == 12 and len(committed) <= 12
    before = 0
    for token, answers_then in committed:
        assert answers_then <= token - 1 and answers_then >= before
        before = answers_then
    assert len(server.state.answer_log(consent_id=consent_id)) == 12, "the failed commit's call never left"
