"""End to end with real processes on 127.0.0.1: the node and four provider agents
started through the CLI from generated data, a scripted bank session checked
against the CSVs, an adversarial bank, a scan of everything the node stored
and logged, and restarts.
"""

from __future__ import annotations

import csv
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from xinrong.bank.client import BankClient
from xinrong.catalog import Catalog, SharingMode, default_catalog
from xinrong.claims import check_claim, evaluate, parse_claim
from xinrong.consent import parse_consent
from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, grant
from xinrong.keys.layout import load_party, party_dir
from xinrong.rpc.errors import RemoteError
from xinrong.tools.demo import GroundTruth, play_evaluation, play_session
from xinrong.tools.localnet import LocalPlatform, deploy, generate_data
from xinrong.tools.procs import ProcessGroup

pytestmark = pytest.mark.e2e

PROVIDERS = ["tax", "social_insurance", "housing_fund", "electricity", "market"]
AS_OF = "2026-09-30"
NEXT_AS_OF = "2026-10-31"
PERIOD = ("2025-01-01", "2026-12-31")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalPlatform, GroundTruth]]:
    workdir = tmp_path_factory.mktemp("e2e")
    data = workdir / "data"
    generate_data(data, enterprises=2000, seed=7, as_of=AS_OF)
    with ProcessGroup(workdir) as group:
        plat = deploy(
            workdir,
            providers=PROVIDERS,
            institutions=["bank-a", "bank-b", "bank-c"],
            data_dir=data,
            group=group,
            verbose=True,
            node_overrides={"enterprise_daily_budget": 400, "revocation_retry_seconds": 0.5},
        )
        yield plat, GroundTruth(data, default_catalog(), PROVIDERS)


def _bank(platform: LocalPlatform, name: str) -> BankClient:
    return BankClient(platform.node_address, load_party(party_dir(platform.keys_dir, "institution", name)))


def _consent_for(platform: LocalPlatform, code: str, bank: str, scope: tuple[str, ...], uses: int = 100) -> str:
    creds = platform.enterprise(code)
    signed = grant(creds, ConsentRequest(bank, "loan_application", scope, *PERIOD, max_uses=uses))
    with EnterpriseClient(platform.node_address, creds) as ent:
        ent.register(signed)
    return parse_consent(signed).consent_id


def test_scripted_session_matches_the_csvs(platform: tuple[LocalPlatform, GroundTruth]) -> None:
    plat, truth = platform
    tally = play_session(plat, truth, AS_OF)
    assert tally.unexpected == []
    assert tally.mismatches_vs_ground_truth == 0
    assert tally.verified >= 15 and tally.indicators >= 5
    assert tally.denied_as_expected == tally.refusals_attempted >= 9


def test_full_coverage_evaluation_through_the_clis_matches_the_csvs(
    platform: tuple[LocalPlatform, GroundTruth],
) -> None:
    """``xinrong node evaluate`` then ``xinrong enterprise score``, real processes, every score vs the CSVs."""
    plat, truth = platform
    evaluated, mismatches = play_evaluation(plat, truth, "2026-09")
    assert evaluated > 0 and mismatches == 0


_TOKEN = re.compile(r"[A-Za-z0-9_.:\-]+")


def _published_constants(catalog: Catalog) -> set[str]:
    out: set[str] = set()
    for spec in catalog.fields.values():
        for edge in (*spec.edges, *spec.ladder):
            out.update({str(edge), f"{edge:.2f}", str(int(edge))})
        out.update(spec.values)
    return out


def test_node_stores_and_logs_no_raw_provider_value(platform: tuple[LocalPlatform, GroundTruth]) -> None:
    """After a demo-sized session, nothing the node wrote - every table of its SQLite
    database and its log - contains a raw value from any provider CSV. (Runs right
    after the session, before the adversarial tests send thresholds of their own
    that may coincide with CSV values.)"""
    plat, truth = platform
    # Public records (Issue 12 §1) reach the node by design: every provider with
    # aggregate-mode fields publishes first, so the scan also proves that no
    # non-aggregate value travels with them. Public values are not leaks.
    for provider in truth.catalog.public_providers():
        if provider in plat.agent_configs:
            published = plat.group.run_cli(
                ["agent", "publish", "--config", str(plat.agent_configs[provider]), "--node", plat.node_address]
            )
            assert published.returncode == 0, published.stderr
    constants = _published_constants(truth.catalog)
    public_cells: set[str] = set()
    raw: set[str] = set()
    for provider in truth.rows:
        with open(plat.workdir / "data" / f"{provider}.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                for column, cell in row.items():
                    if column in ("uscc", "as_of") or len(cell) < 5 or cell in constants:
                        continue
                    spec = truth.catalog.fields.get(f"{provider}.{column}")
                    if spec is not None and spec.mode is SharingMode.AGGREGATE:
                        public_cells.add(cell)
                    else:
                        raw.add(cell)
    raw -= public_cells
    assert len(raw) > 5000  # the scan has something to find
    db_path = plat.workdir / "state" / "node.db"
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    tokens: set[str] = set()
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert tables
    for table in tables:
        for row in conn.execute(f'SELECT * FROM "{table}"'):
            for cell in row:
                text = cell.decode("latin-1") if isinstance(cell, bytes) else str(cell)
                tokens.update(_TOKEN.findall(text))
    conn.close()
    for wal in plat.workdir.glob("state/node.db*"):
        tokens.update(_TOKEN.findall(wal.read_bytes().decode("latin-1")))
    log_text = (plat.workdir / "logs" / "node.log").read_text(errors="replace")
    assert "INFO" in log_text  # the node ran verbosely, so its log is worth scanning
    tokens.update(_TOKEN.findall(log_text))
    assert public_cells & tokens  # the public records did arrive
    leaked = sorted(raw & tokens)
    assert leaked == [], f"raw provider values found at the node: {leaked[:10]}"
    # The scan works: a raw value planted in a copy of the log is found.
    planted = next(iter(raw))
    assert planted in set(_TOKEN.findall(log_text + f" verdict {planted} "))


def _numeric_field_holders(truth: GroundTruth, field: str) -> list[str]:
    spec = truth.catalog.field(field)
    return sorted(u for u, row in truth.rows[spec.provider].items() if row[spec.column] not in ("",))


def test_adversarial_banks_learn_nothing_finer_than_a_bracket(platform: tuple[LocalPlatform, GroundTruth]) -> None:
    """Binary search, differencing across brackets and two colluding banks, all against
    the real node and agent: the set of values consistent with everything they learn
    always contains the enterprise's whole published bracket."""
    plat, truth = platform
    catalog = truth.catalog
    field = "tax.vat_paid_last_year"
    spec = catalog.field(field)
    target = _numeric_field_holders(truth, field)[17]
    true_value = truth.value(field, target)
    consent_a = _consent_for(plat, target, "bank-a", ("tax.*",), uses=200)
    consent_b = _consent_for(plat, target, "bank-b", ("tax.*",), uses=200)
    answers: list[tuple[Any, bool]] = []  # (checked claim, result) pooled by the colluding banks
    refused_thresholds = 0
    with _bank(plat, "bank-a") as a, _bank(plat, "bank-b") as b:
        # 1. Binary search with free thresholds: every off-ladder probe is refused.
        lo, hi = Decimal(0), Decimal(20_000_000)
        for _ in range(12):
            mid = (lo + hi) / 2
            mid = mid.quantize(Decimal(1))
            try:
                (v,) = a.verify(target, [f"{field} >= {mid}"], consent_a, precheck=False)
            except RemoteError as exc:
                assert exc.reason == "THRESHOLD_NOT_PUBLISHED"
                refused_thresholds += 1
                # fall back to the nearest published threshold (what a real attacker can do)
                published = [t for t in spec.ladder if lo < t < hi] or list(spec.ladder)
                mid = min(published, key=lambda t: abs(t - mid))
                (v,) = a.verify(target, [f"{field} >= {mid}"], consent_a)
            claim = check_claim(catalog, parse_claim(f"{field} >= {mid}"))
            answers.append((claim, v.result == "TRUE"))
            if v.result == "TRUE":
                lo = mid
            else:
                hi = mid
        # 2. Differencing across brackets: every published bracket and half-open range.
        edges = list(spec.edges)
        for i, e_lo in enumerate(edges):
            for e_hi in [*edges[i + 1 :], None]:
                text = f"{field} in [{e_lo},{e_hi if e_hi is not None else ''})"
                bank, consent = (a, consent_a) if i % 2 else (b, consent_b)  # 3. split across colluders
                (v,) = bank.verify(target, [text], consent)
                answers.append((check_claim(catalog, parse_claim(text)), v.result == "TRUE"))
        # Indicators give the bracket itself: the most any bank may learn.
        (ind,) = b.indicators(target, [(field, "bracket")], consent_b)
        assert isinstance(ind.value, dict)
    assert refused_thresholds >= 5
    # Everything learned is consistent with every value in the true bracket ...
    idx = spec.bracket_index(true_value)
    b_lo, b_hi = spec.bracket_bounds(idx)
    upper = b_hi if b_hi is not None else b_lo * 4 + 1
    grid = [b_lo + (upper - b_lo) * Decimal(k) / 200 for k in range(200)]
    for value in grid:
        assert all(evaluate(c, value) == res for c, res in answers), f"learned something finer than [{b_lo},{b_hi})"
    # ... and the answers are not vacuous: they exclude every other bracket.
    for j in range(len(spec.edges)):
        if j == idx:
            continue
        o_lo, o_hi = spec.bracket_bounds(j)
        probe = (o_lo + (o_hi if o_hi is not None else o_lo * 2 + 1)) / 2
        assert not all(evaluate(c, probe) == res for c, res in answers)
    assert ind.value["index"] == idx


def test_answers_are_fixed_per_data_period(platform: tuple[LocalPlatform, GroundTruth]) -> None:
    """Within a data period the same claim gets the same answer; a newly imported
    period (with the enterprise's spend across the published step) changes it,
    and is then fixed again."""
    plat, truth = platform
    field = "electricity.avg_spend_6m"
    target = _numeric_field_holders(truth, field)[3]
    consent = _consent_for(plat, target, "bank-c", ("electricity.*",))
    claims = ["electricity.avg_spend_6m >= 5000", "electricity.in_arrears == false"]
    with _bank(plat, "bank-c") as c:
        first = [(v.claim, v.result, v.data_as_of) for v in c.verify(target, claims, consent)]
        for _ in range(3):
            assert [(v.claim, v.result, v.data_as_of) for v in c.verify(target, claims, consent)] == first
        assert {as_of for _c, _r, as_of in first} == {AS_OF}

        # The next period: every row re-dated, the target's spend moved across 5000.
        column = truth.catalog.field(field).column
        source = plat.workdir / "data" / "electricity.csv"
        with source.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header, rows = list(reader.fieldnames or []), list(reader)
        for row in rows:
            row["as_of"] = NEXT_AS_OF
            if row["uscc"] == target:
                row[column] = "1000" if Decimal(row[column]) >= 5000 else "9000"
        following = plat.workdir / "data" / "electricity-next.csv"
        with following.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        plat.import_data("electricity", following)
        truth.rows["electricity"] = {row["uscc"]: row for row in rows}  # later tests read the new period

        second = [(v.claim, v.result, v.data_as_of) for v in c.verify(target, claims, consent)]
        assert {as_of for _c, _r, as_of in second} == {NEXT_AS_OF}
        flipped = {"TRUE": "FALSE", "FALSE": "TRUE"}
        assert second[0][1] == flipped[first[0][1]], (first, second)
        assert second[1][1] == first[1][1]
        for _ in range(3):
            assert [(v.claim, v.result, v.data_as_of) for v in c.verify(target, claims, consent)] == second


def test_enterprise_budget_spans_institutions(platform: tuple[LocalPlatform, GroundTruth]) -> None:
    """The per-enterprise daily budget counts every institution's requests together."""
    plat, truth = platform
    target = _numeric_field_holders(truth, "tax.vat_paid_last_year")[40]
    consents = {b: _consent_for(plat, target, b, ("tax.*",), uses=1000) for b in ("bank-a", "bank-b")}
    used = 0
    with _bank(plat, "bank-a") as a, _bank(plat, "bank-b") as b:
        clients = {"bank-a": a, "bank-b": b}
        with pytest.raises(RemoteError) as info:
            for i in range(1000):
                name = "bank-a" if i % 2 else "bank-b"
                clients[name].verify(target, ["tax.in_arrears == false"], consents[name])
                used += 1
    assert info.value.reason == "ENTERPRISE_BUDGET_EXHAUSTED"
    assert 0 < used <= 400


def test_node_restart_keeps_consents_uses_and_the_audit_chain(
    platform: tuple[LocalPlatform, GroundTruth],
) -> None:
    plat, truth = platform
    target = _numeric_field_holders(truth, "tax.vat_paid_last_year")[60]
    consent = _consent_for(plat, target, "bank-a", ("tax.*",), uses=3)
    with _bank(plat, "bank-a") as a:
        a.verify(target, ["tax.in_arrears == false"], consent)
        a.verify(target, ["tax.in_arrears == false"], consent)
    replay = str(uuid.uuid4())
    with _bank(plat, "bank-a") as a:
        a.verify(target, ["tax.in_arrears == false"], consent, request_id=replay)
    plat.group.stop("node")
    plat.start_node()
    plat.wait_healthy()
    assert plat.node_config is not None
    audit = plat.group.run_cli(["node", "audit", "verify", "--config", str(plat.node_config)])
    assert audit.returncode == 0, audit.stdout + audit.stderr
    with _bank(plat, "bank-a") as a:
        status = a.consent_status(consent)
        assert (status.uses, status.max_uses) == (3, 3)
        with pytest.raises(RemoteError) as info:
            a.verify(target, ["tax.in_arrears == false"], consent, request_id=replay)
        assert info.value.reason == "REQUEST_REPLAYED"
        with pytest.raises(RemoteError) as info:
            a.verify(target, ["tax.in_arrears == false"], consent)
        assert info.value.reason == "CONSENT_USES_EXHAUSTED"


def test_a_dead_agent_fails_cleanly_and_revocations_reach_it_later(
    platform: tuple[LocalPlatform, GroundTruth],
) -> None:
    plat, truth = platform
    target = _numeric_field_holders(truth, "electricity.avg_spend_6m")[25]
    creds = plat.enterprise(target)
    signed = grant(creds, ConsentRequest("bank-b", "loan_application", ("electricity.*", "tax.*"), *PERIOD))
    consent = parse_consent(signed).consent_id
    with EnterpriseClient(plat.node_address, creds) as ent:
        ent.register(signed)
    old_port = plat.provider_ports["electricity"]
    plat.group.kill("agent-electricity")
    with _bank(plat, "bank-b") as b:
        with pytest.raises(RemoteError) as info:
            b.verify(target, ["electricity.in_arrears == false"], consent)
        assert info.value.reason == "PROVIDER_UNAVAILABLE"
        assert b.verify(target, ["tax.in_arrears == false"], consent)  # other providers still answer
        with EnterpriseClient(plat.node_address, creds) as ent:
            resp = ent.revoke(consent)
        assert "electricity" not in resp.providers_notified
        # The agent comes back at its address (same data, same state db) and must learn of
        # the revocation from the node's retry, not from the node refusing on its behalf.
        config = plat.agent_configs["electricity"]
        config.write_text(config.read_text().replace('bind = "127.0.0.1:0"', f'bind = "127.0.0.1:{old_port}"'))
        plat.start_agents(["electricity"])
        assert plat.provider_ports["electricity"] == old_port
    agent_state = plat.workdir / "state" / "agent-electricity.state.db"
    deadline_ok = False
    for _ in range(100):
        conn = sqlite3.connect(f"file:{agent_state}?mode=ro", uri=True)
        try:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            table = next(n for n in names if "revo" in n)
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
        finally:
            conn.close()
        if any(consent in [str(c) for c in row] for row in rows):
            deadline_ok = True
            break
        time.sleep(0.2)
    assert deadline_ok, "the restarted agent never received the pending revocation"


def test_verify_benchmark_runs_end_to_end_and_checks_every_answer(tmp_path: Path) -> None:
    """`xinrong bench verify` in miniature: real processes, both loads in
    alternating windows, every answer opened and its signatures checked.
    Figures are not asserted (no timed tests): that it measured, did."""
    from xinrong.tools import placement
    from xinrong.tools.bench import verify

    before = placement.affinity(os.getpid()) if placement.supported() else None
    result = verify.run(
        seconds=1.0, concurrency=2, enterprises=100, warmup=0.3, slices=2, workdir=tmp_path, tree_ab=True
    )
    assert result["errors"] == 0
    # --tree-ab: the same calls with the node's tree building paused, alternating; the knob is gone after.
    assert isinstance(result["qps_no_tree"], float) and result["qps_no_tree"] > 0
    assert isinstance(result["tree_cost"], float)
    if placement.supported():
        assert isinstance(result["node_cpu_us_per_call"], float) and result["node_cpu_us_per_call"] > 0
    assert "XINRONG_BENCH_TREE_PAUSE_FILE" not in os.environ
    assert isinstance(result["signatures_checked"], int) and result["signatures_checked"] > 0
    assert result["slices"] == 2
    for key in ("qps", "ceiling_qps", "ratio", "p50_ms", "p99_ms"):
        value = result[key]
        assert isinstance(value, float) and value > 0, key
    if placement.split() is None:
        assert result["placement"] == "shared"
    else:
        # Pinned: the ceiling is the higher of its pinned and free measurements.
        assert result["placement"] == "pinned"
        pinned, shared = result["ceiling_pinned_qps"], result["ceiling_shared_qps"]
        assert isinstance(pinned, float) and isinstance(shared, float)
        assert result["ceiling_qps"] == max(pinned, shared)
    if before is not None:
        # The load generator (this test process) got its CPUs back, every thread of it.
        after = placement.affinity(os.getpid())
        assert all(after[tid] == mask for tid, mask in before.items() if tid in after)
        assert set(after.values()) <= set(before.values())


def test_verify_benchmark_on_postgres_reports_flushes_and_what_the_server_spent(tmp_path: Path) -> None:
    """`bench verify --database postgres --pg-statements` in miniature: its own throwaway
    PostgreSQL, every answer checked, the WAL flushes per call, and the statements the
    load cost the server (the admission batches among them)."""
    from xinrong.tools.bench import verify

    result = verify.run(
        seconds=1.0,
        concurrency=2,
        enterprises=100,
        warmup=0.3,
        slices=2,
        workdir=tmp_path,
        database="postgres",
        pg_statements=True,
    )
    assert result["errors"] == 0 and result["database"] == "postgres"
    assert isinstance(result["signatures_checked"], int) and result["signatures_checked"] > 0
    assert isinstance(result["pg_wal_syncs_per_call"], float) and result["pg_wal_syncs_per_call"] > 0
    statements = result["pg_statements"]
    assert isinstance(statements, list) and statements
    batches = [s for s in statements if "xinrong_admit_batch" in s["query"]]
    assert batches and batches[0]["calls"] > 0 and batches[0]["calls_per_verify"] > 0
    assert all("pg_stat_statements" not in s["query"] for s in statements)
