"""Push end to end with real processes: the node killed (-9) and restarted while a
bank follows, and ``xinrong bank subscribe`` resuming from its cursor file.

Events are appended straight into the node's database while the node is down
(the producers are other issues' stores; the log is what is under test).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from xinrong.bank.push_client import PushClient, Subscription
from xinrong.keys.layout import load_party, party_dir
from xinrong.node.db import Database
from xinrong.node.events import EventLog, NewEvent
from xinrong.tools.localnet import LocalPlatform, provision_keys, write_node_config
from xinrong.tools.procs import ProcessGroup

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BANK = "bank-a"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _append_offline(workdir: Path, keys: Path, start: int, n: int) -> None:
    """Events while the node is down: half in Shijiazhuang manufacturing, half elsewhere."""
    db = Database(workdir / "state" / "node.db")
    try:
        log = EventLog(db, load_party(party_dir(keys, "node", "node")).signing_key, node_id="node")
        log.append_many(
            [
                NewEvent(
                    "public_record",
                    f"91130100{i:010d}",
                    "130102" if i % 2 == 0 else "110101",
                    "C3011" if i % 2 == 0 else "I6510",
                    json.dumps({"i": i}).encode(),
                )
                for i in range(start, start + n)
            ]
        )
    finally:
        db.close()


def test_follow_and_cli_resume_across_node_kill(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    provision_keys(keys, [], [BANK])
    port = _free_port()
    (tmp_path / "state").mkdir(mode=0o700)
    config = write_node_config(tmp_path, keys, {}, [BANK], bind=f"127.0.0.1:{port}")
    _append_offline(tmp_path, keys, 0, 1000)
    creds_dir = party_dir(keys, "institution", BANK)
    out = tmp_path / "events.jsonl"
    with ProcessGroup(tmp_path) as group:
        platform = LocalPlatform(workdir=tmp_path, keys_dir=keys, group=group, node_config=config)
        platform.start_node()
        address = platform.node_address
        cli = ["bank", "subscribe", "--node", address, "--credentials", str(creds_dir)]
        first = group.run_cli([*cli, "--region", "1301", "--industry", "C", "--out", str(out)], timeout=120)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout.strip().splitlines()[-1])["events"] == 500

        received: list[int] = []
        done = threading.Event()
        with PushClient(address, load_party(creds_dir)) as client:

            def follow() -> None:
                for event in client.events(Subscription(regions=("13",)), follow=True, stop=done.is_set):
                    received.append(event.seq)
                    if len(received) == 1000:
                        done.set()

            thread = threading.Thread(target=follow, daemon=True)
            thread.start()
            deadline = time.monotonic() + 30
            while len(received) < 500 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(received) == 500
            group.kill("node")  # SIGKILL: no goodbye to the stream
            _append_offline(tmp_path, keys, 1000, 1000)
            platform.start_node()
            assert platform.node_address == address
            thread.join(timeout=60)
            assert client.reconnects >= 1
        # Every matching event exactly in order: none missed across the kill.
        assert received == list(range(1, 2001, 2))

        second = group.run_cli([*cli, "--region", "1301", "--industry", "C", "--out", str(out)], timeout=120)
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout.strip().splitlines()[-1])["events"] == 500
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, 2001, 2))
    assert len({line["event_id"] for line in lines}) == 1000
    assert all(line["signature_ok"] and line["region"].startswith("1301") for line in lines)
    assert (tmp_path / "events.jsonl.cursor").read_text().strip() == "2000"


def test_whitelist_through_the_clis(tmp_path: Path) -> None:
    """Enterprise grants a matching consent and registers a demand, the bank's subscription
    gets the addition, the enterprise revokes, the bank's next read gets the removal."""
    import numpy as np

    from xinrong import uscc as uscc_mod
    from xinrong.index import default_index
    from xinrong.node.evaluation import EvaluationStore

    code = uscc_mod.make("9", "1", "130102", "MA0E2E01")
    keys = tmp_path / "keys"
    provision_keys(keys, [], [BANK, "bank-b"])
    (tmp_path / "state").mkdir(mode=0o700)
    config = write_node_config(tmp_path, keys, {}, [BANK, "bank-b"])
    index = default_index()
    EvaluationStore(tmp_path / "state" / "evaluations").save(
        {
            "period": "2026-11",
            "evaluation_id": "ev-e2e",
            "index_version": index.version,
            "index_sha256": index.sha256,
            "evaluated_at": int(time.time()),
            "grades": [g.name for g in index.grades],
            "grade_min_scores": [g.min_score for g in index.grades],
        },
        np.array([code.encode()], dtype="S18"),
        np.array([800], dtype=np.int64),
    )
    with ProcessGroup(tmp_path) as group:
        platform = LocalPlatform(workdir=tmp_path, keys_dir=keys, group=group, node_config=config)
        platform.start_node()
        platform.enterprise(code)
        ent = ["--credentials", str(party_dir(keys, "enterprise", code)), "--node", platform.node_address]

        def cli(*args: str) -> str:
            result = group.run_cli(list(args), timeout=120)
            assert result.returncode == 0, result.stderr
            return result.stdout

        threshold = json.loads(cli("node", "whitelist", "threshold", "--config", str(config)))
        assert threshold["min_grade"] == "A" and "AA" in threshold["grades_meeting_it"]
        consent = tmp_path / "matching.pb"
        cli(
            "enterprise", "consent", "grant", "--credentials", ent[1], "--grantee", BANK, "--purpose", "matching",
            "--scope", "tax.credit_grade", "--out", str(consent),
        )  # fmt: skip
        registered = json.loads(
            cli("enterprise", "demand", "register", *ent, "--amount", "1500000", "--term-months", "6",
                "--purpose", "orders from a state-owned buyer", "--industry", "C3011", "--consent", str(consent))
        )  # fmt: skip
        assert registered["whitelisted"] and registered["pushed_to"] == [BANK]
        out = tmp_path / "whitelist.jsonl"
        bank = ["bank", "subscribe", "--node", platform.node_address, "--topic", "whitelist", "--region", "1301"]
        cli(*bank, "--credentials", str(party_dir(keys, "institution", BANK)), "--out", str(out))
        cli("enterprise", "consent", "revoke", *ent, "--consent", str(consent))
        time.sleep(1.5)  # the whitelist worker picks the revocation up within a second
        cli(*bank, "--credentials", str(party_dir(keys, "institution", BANK)), "--out", str(out))
        other = tmp_path / "bank-b.jsonl"
        cli(*bank, "--credentials", str(party_dir(keys, "institution", "bank-b")), "--out", str(other))
        listed = [json.loads(line) for line in cli("enterprise", "demand", "list", *ent).splitlines()]
        entries = cli("node", "whitelist", "list", "--config", str(config))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["payload"]["action"] for line in lines] == ["add", "remove"]
    assert lines[0]["payload"]["grade"] == "AA" and lines[0]["payload"]["demand"]["amount_yuan"] == 1_500_000
    assert all(line["signature_ok"] and line["restricted"] for line in lines)
    assert other.read_text() == ""
    assert listed[0]["state"] == "active" and listed[0]["pushed_to"] == []
    assert entries == ""
