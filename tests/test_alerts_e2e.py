"""No alert lost across kill -9 of the bank, the node and the agent (issue 13 §4), with real processes.

One tax agent, the node and ``xinrong bank alerts --follow`` run as
processes. A bank watches K borrowers' ``tax.in_arrears``; four new periods
each flip every watched borrower's arrears flag, so each period must raise
exactly K alerts at the bank. Around the imports each party in turn is
killed with SIGKILL and restarted:

* period 2: the bank is killed as the import lands;
* period 3: the node is down while the agent imports (updates wait in the
  agent's outbox);
* period 4: the agent is down during the import (its pass runs on restart);
* period 5: the bank is down, the node queues the updates and is killed
  with them queued, then both come back.

The bank's durable state must hold exactly 4K alerts (none lost, none twice).
"""

from __future__ import annotations

import csv
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xinrong.bank.alerts_client import AlertsClient
from xinrong.consent import parse_consent
from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, grant
from xinrong.keys.layout import load_party, party_dir
from xinrong.tools.localnet import LocalPlatform, deploy, generate_data
from xinrong.tools.procs import ProcessGroup

from support.node_fakes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AS_OF = "2026-06-30"
PERIOD = ("2025-01-01", "2026-12-31")
K = 8
CLAIM = "tax.in_arrears == true"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    workdir = tmp_path_factory.mktemp("alerts-e2e")
    data = workdir / "data"
    generate_data(data, enterprises=100, seed=13, as_of=AS_OF)
    with ProcessGroup(workdir) as group:
        yield deploy(
            workdir,
            providers=["tax"],
            institutions=["bank-a"],
            data_dir=data,
            group=group,
            node_overrides={"bind": f"127.0.0.1:{free_port()}", "enterprise_daily_budget": 100_000},
        )


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, list(reader)


def _write_period(plat: LocalPlatform, n: int, watched: set[str], arrears: bool) -> Path:
    """The tax export of period n: the watched borrowers' arrears flag set to ``arrears``."""
    header, rows = _rows(plat.workdir / "data" / "tax.csv")
    col_as_of, col_arrears, col_uscc = header.index("as_of"), header.index("in_arrears"), header.index("uscc")
    as_of = f"2026-{6 + n:02d}-28"
    for row in rows:
        row[col_as_of] = as_of
        if row[col_uscc] in watched:
            row[col_arrears] = "true" if arrears else "false"
    path = plat.workdir / "data" / f"tax-p{n}.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _start_bank(plat: LocalPlatform) -> None:
    creds = party_dir(plat.keys_dir, "institution", "bank-a")
    plat.group.start(
        "bank",
        [
            "bank",
            "alerts",
            "--follow",
            "--node",
            plat.node_address,
            "--credentials",
            str(creds),
            "--state-dir",
            str(plat.workdir / "bank-state"),
        ],
    )


def _bank_count(plat: LocalPlatform, sql: str) -> int:
    db = plat.workdir / "bank-state" / "alerts.db"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        conn.close()


def _node_queued(plat: LocalPlatform) -> int:
    conn = sqlite3.connect(f"file:{plat.workdir / 'state' / 'node.db'}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM alert_queue").fetchone()[0])
    finally:
        conn.close()


def _wait(what: str, done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _restart_agent(plat: LocalPlatform, port: int) -> None:
    config = plat.agent_configs["tax"]
    config.write_text(config.read_text().replace('bind = "127.0.0.1:0"', f'bind = "127.0.0.1:{port}"'))
    plat.start_agents(["tax"])
    assert plat.provider_ports["tax"] == port


def test_no_alert_is_lost_across_kill_9_of_bank_node_and_agent(platform: LocalPlatform) -> None:
    plat = platform
    _header, rows = _rows(plat.workdir / "data" / "tax.csv")
    header = _header
    arrears_col = header.index("in_arrears")
    # Borrowers not in arrears now (and with a value): period 2 puts every one of them in arrears.
    watched = sorted(r[0] for r in rows if r[arrears_col] == "false")[:K]
    assert len(watched) == K
    creds = load_party(party_dir(plat.keys_dir, "institution", "bank-a"))
    with AlertsClient(plat.node_address, creds, plat.workdir / "registrar-state") as client:
        for code in watched:
            ent = plat.enterprise(code)
            signed = grant(ent, ConsentRequest("bank-a", "post_loan_monitoring", ("tax.*",), *PERIOD, max_uses=5))
            with EnterpriseClient(plat.node_address, ent) as ec:
                ec.register(signed)
            client.register_watch(code, [CLAIM], parse_consent(signed).consent_id)
    _start_bank(plat)
    _wait("baselines", lambda: _bank_count(plat, "SELECT COUNT(*) FROM seen") == K)
    alerts = "SELECT COUNT(*) FROM alerts"
    assert _bank_count(plat, alerts) == 0
    watched_set = set(watched)

    # Period 2: the bank dies as the import lands.
    plat.import_data("tax", _write_period(plat, 2, watched_set, True))
    plat.group.kill("bank")
    _start_bank(plat)
    _wait("period 2 alerts", lambda: _bank_count(plat, alerts) == K)

    # Period 3: the node is down while the agent imports; the outbox holds the updates.
    plat.group.kill("node")
    plat.import_data("tax", _write_period(plat, 3, watched_set, False))
    time.sleep(0.5)  # the agent's pass runs while the node is down
    plat.start_node()
    _wait("period 3 alerts", lambda: _bank_count(plat, alerts) == 2 * K)

    # Period 4: the agent is down during the import; its pass runs when it is back.
    port = plat.provider_ports["tax"]
    plat.group.kill("agent-tax")
    plat.import_data("tax", _write_period(plat, 4, watched_set, True))
    _restart_agent(plat, port)
    _wait("period 4 alerts", lambda: _bank_count(plat, alerts) == 3 * K)

    # Period 5: the bank is down, the node queues the updates and is killed holding them.
    plat.group.kill("bank")
    before = _node_queued(plat)
    plat.import_data("tax", _write_period(plat, 5, watched_set, False))
    _wait("the node's queue", lambda: _node_queued(plat) >= before + K)
    plat.group.kill("node")
    plat.start_node()
    _start_bank(plat)
    _wait("period 5 alerts", lambda: _bank_count(plat, alerts) == 4 * K)

    time.sleep(1.0)  # nothing more arrives: no alert twice
    assert _bank_count(plat, alerts) == 4 * K
    assert _bank_count(plat, "SELECT COUNT(DISTINCT update_id) FROM alerts") == 4 * K
    assert _bank_count(plat, "SELECT COUNT(*) FROM seen") == 5 * K


def test_bench_alerts_small(tmp_path: Path) -> None:
    """``xinrong bench alerts`` end to end at a small N: every bank holds every alert."""
    from xinrong.tools.bench import alerts

    result = alerts.run(200, 0.1, 1, 120.0, tmp_path)
    assert result["alerts_held"] == result["alerts_expected"] == 20
    assert result["single_watch_alerts"] == 1
    assert 0 < result["latency_p50_s"] <= result["latency_p99_s"] <= result["seconds"] + 0.5
    assert result["update_bytes"] == 1024
