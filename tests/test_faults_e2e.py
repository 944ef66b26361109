"""Fault tests with real processes (issue 10, section B): kill -9 an agent under load,
kill -9 the node mid-load and restart it, revoke while an agent is down.

Kept small (two providers, a few hundred enterprises) so the module runs in well
under a minute. Killing a provider mid-training is covered by
``tests/test_modeling_e2e.py`` (processes) and ``tests/test_modeling_grpc.py``
(``--resume``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from xinrong.bank.client import BankClient
from xinrong.catalog import default_catalog
from xinrong.consent import parse_consent
from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, grant
from xinrong.keys.layout import load_party, party_dir
from xinrong.rpc.errors import RemoteError
from xinrong.tools.demo import GroundTruth
from xinrong.tools.localnet import LocalPlatform, deploy, generate_data
from xinrong.tools.procs import ProcessGroup

pytestmark = pytest.mark.e2e

PROVIDERS = ["tax", "electricity"]
AS_OF = "2026-09-30"
PERIOD = ("2025-01-01", "2026-12-31")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalPlatform, GroundTruth]]:
    workdir = tmp_path_factory.mktemp("faults")
    data = workdir / "data"
    generate_data(data, enterprises=300, seed=11, as_of=AS_OF)
    with ProcessGroup(workdir) as group:
        plat = deploy(
            workdir,
            providers=PROVIDERS,
            institutions=["bank-a"],
            data_dir=data,
            group=group,
            # A long retry interval: only the reconnect watch can deliver revocations in time.
            node_overrides={"enterprise_daily_budget": 100_000, "revocation_retry_seconds": 600},
        )
        yield plat, GroundTruth(data, default_catalog(), PROVIDERS)


def _bank(plat: LocalPlatform) -> BankClient:
    return BankClient(plat.node_address, load_party(party_dir(plat.keys_dir, "institution", "bank-a")))


def _holder(truth: GroundTruth, provider: str, k: int) -> str:
    return sorted(truth.rows[provider])[k]


def _consent(plat: LocalPlatform, code: str, scope: tuple[str, ...], uses: int = 5000) -> str:
    creds = plat.enterprise(code)
    signed = grant(creds, ConsentRequest("bank-a", "loan_application", scope, *PERIOD, max_uses=uses))
    with EnterpriseClient(plat.node_address, creds) as ent:
        ent.register(signed)
    return parse_consent(signed).consent_id


def _restart_agent(plat: LocalPlatform, provider: str, port: int) -> None:
    config = plat.agent_configs[provider]
    config.write_text(config.read_text().replace('bind = "127.0.0.1:0"', f'bind = "127.0.0.1:{port}"'))
    plat.start_agents([provider])
    assert plat.provider_ports[provider] == port


class _Load:
    """Threads looping Verify; every outcome with its latency and wall time."""

    def __init__(self, plat: LocalPlatform, target: str, consent: str, claim: str, threads: int = 3) -> None:
        self.outcomes: list[tuple[float, float, str]] = []  # (end time, latency, "OK" or reason)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(plat, target, consent, claim), daemon=True) for _ in range(threads)
        ]

    def _run(self, plat: LocalPlatform, target: str, consent: str, claim: str) -> None:
        with _bank(plat) as bank:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    bank.verify(target, [claim], consent)
                    outcome = "OK"
                except RemoteError as exc:
                    outcome = f"{exc.reason}|{exc.message}"
                except Exception as exc:  # the node itself is down
                    outcome = f"CLIENT|{type(exc).__name__}"
                t1 = time.monotonic()
                with self._lock:
                    self.outcomes.append((t1, t1 - t0, outcome))
                if outcome != "OK":
                    time.sleep(0.02)

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def since(self, t: float) -> list[tuple[float, float, str]]:
        with self._lock:
            return [o for o in self.outcomes if o[0] >= t]


def test_kill_9_an_agent_under_load(platform: tuple[LocalPlatform, GroundTruth]) -> None:
    plat, truth = platform
    target = _holder(truth, "tax", 3)
    consent = _consent(plat, target, ("tax.*",))
    port = plat.provider_ports["tax"]
    with _Load(plat, target, consent, "tax.in_arrears == false") as load:
        time.sleep(1.0)
        assert any(o[2] == "OK" for o in load.since(0)), "the load must be served before the kill"
        killed = time.monotonic()
        plat.group.kill("agent-tax")
        time.sleep(1.5)
        down = load.since(killed + 0.05)
        assert down and all(o[2].startswith("PROVIDER_UNAVAILABLE|") for o in down), {o[2] for o in down}
        assert max(o[1] for o in down) <= 1.0, "a dead agent must be reported within a second"
        assert any("tax" in o[2] for o in down), "the refusal names the provider"
        _restart_agent(plat, "tax", port)
        plat.wait_healthy(timeout=30)
        healthy = time.monotonic()
        deadline = healthy + 5
        while not any(o[2] == "OK" for o in load.since(healthy)) and time.monotonic() < deadline:
            time.sleep(0.02)
        first_ok = min((o[0] for o in load.since(healthy) if o[2] == "OK"), default=None)
    assert first_ok is not None and first_ok - healthy <= 1.0, (
        f"first OK {first_ok and first_ok - healthy}s after health"
    )


def test_kill_9_the_node_mid_load_loses_nothing(platform: tuple[LocalPlatform, GroundTruth]) -> None:
    plat, truth = platform
    target = _holder(truth, "electricity", 5)
    consent = _consent(plat, target, ("electricity.*",))
    revoked_target = _holder(truth, "tax", 9)
    revoked = _consent(plat, revoked_target, ("tax.*",))
    creds = plat.enterprise(revoked_target)
    with EnterpriseClient(plat.node_address, creds) as ent:
        ent.revoke(revoked)
    replay = str(uuid.uuid4())
    with _bank(plat) as bank:
        bank.verify(target, ["electricity.in_arrears == false"], consent, request_id=replay)
    with _Load(plat, target, consent, "electricity.in_arrears == false") as load:
        time.sleep(1.0)
        plat.group.kill("node")
        time.sleep(0.3)
        plat.start_node()
        plat.wait_healthy(timeout=30)
        time.sleep(0.5)
    assert any(o[2] == "OK" for o in load.outcomes)
    assert plat.node_config is not None
    audit = plat.group.run_cli(["node", "audit", "verify", "--config", str(plat.node_config)])
    assert audit.returncode == 0, audit.stdout + audit.stderr
    with _bank(plat) as bank:
        uses = bank.consent_status(consent).uses
        with pytest.raises(RemoteError) as info:
            bank.verify(target, ["electricity.in_arrears == false"], consent, request_id=replay)
        assert info.value.reason == "REQUEST_REPLAYED"
        with pytest.raises(RemoteError) as info:
            bank.verify(revoked_target, ["tax.in_arrears == false"], revoked)
        assert info.value.reason == "CONSENT_REVOKED"
    db = Path(plat.workdir) / "state" / "node.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (allowed,) = conn.execute(
            "SELECT count(*) FROM audit_log WHERE consent_id = ? AND decision = 'ALLOWED' AND method = 'Verify'",
            (consent,),
        ).fetchone()
        (stored,) = conn.execute("SELECT sum(uses) FROM consent_daily_uses WHERE consent_id = ?", (consent,)).fetchone()
    finally:
        conn.close()
    assert uses == stored == allowed > 1, (uses, stored, allowed)


def test_revoke_while_an_agent_is_down_is_enforced_within_seconds_of_its_return(
    platform: tuple[LocalPlatform, GroundTruth],
) -> None:
    plat, truth = platform
    target = _holder(truth, "electricity", 17)
    consent = _consent(plat, target, ("electricity.*",))
    port = plat.provider_ports["electricity"]
    plat.group.kill("agent-electricity")
    with EnterpriseClient(plat.node_address, plat.enterprise(target)) as ent:
        assert "electricity" not in ent.revoke(consent).providers_notified
    time.sleep(1.0)
    _restart_agent(plat, "electricity", port)
    back = time.monotonic()
    state = Path(plat.workdir) / "state" / "agent-electricity.state.db"
    while True:
        conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT * FROM revocations").fetchall()
        finally:
            conn.close()
        if any(consent in [str(c) for c in row] for row in rows):
            break
        assert time.monotonic() - back < 5.0, "the returning agent did not learn of the revocation within 5 s"
        time.sleep(0.1)


def _records(plat: LocalPlatform, provider: str) -> tuple[int, int]:
    """(periods, records of the newest period) in the agent's data store."""
    db = Path(plat.workdir) / "state" / f"agent-{provider}.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (periods,) = conn.execute("SELECT count(*) FROM periods").fetchone()
        (rows,) = conn.execute(
            "SELECT count(*) FROM records WHERE period_id = (SELECT max(id) FROM periods)"
        ).fetchone()
    finally:
        conn.close()
    return int(periods), int(rows)


def test_kill_9_during_csv_import_is_all_or_nothing(platform: tuple[LocalPlatform, GroundTruth]) -> None:
    import csv
    import subprocess
    import sys

    from xinrong import uscc

    plat, truth = platform
    source = Path(plat.workdir) / "data" / "tax.csv"
    big = Path(plat.workdir) / "tax-big.csv"
    with source.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        template = next(reader)
    column = header.index("uscc")
    with big.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for n in range(150_000):
            row = list(template)
            row[column] = uscc.make("9", "1", "130100", f"{n:08d}")
            writer.writerow(row)
    before = _records(plat, "tax")
    command = [sys.executable, "-m", "xinrong.tools.cli", "agent", "import"]
    command += ["--config", str(plat.agent_configs["tax"]), "--csv", str(big)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wal = Path(plat.workdir) / "state" / "agent-tax.db-wal"
    start = wal.stat().st_size if wal.exists() else 0
    try:
        # Kill once rows are streaming into the import's open transaction (its
        # WAL has grown by a megabyte), not after a fixed sleep: a fast machine
        # finishes 150k rows in less time than a slow one starts up.
        deadline = time.monotonic() + 60.0
        while (wal.stat().st_size if wal.exists() else 0) < start + 1_000_000:
            assert proc.poll() is None, "the import finished before any of its writes were seen"
            assert time.monotonic() < deadline, "the import wrote nothing within 60 s"
            time.sleep(0.005)
        assert proc.poll() is None, "the import finished before it could be killed; make the file larger"
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _records(plat, "tax") == before, "a killed import must leave the previous period untouched"
    # The agent still serves the previous period.
    target = _holder(truth, "tax", 21)
    consent = _consent(plat, target, ("tax.*",))
    with _bank(plat) as bank:
        assert bank.verify(target, ["tax.in_arrears == false"], consent) is not None
