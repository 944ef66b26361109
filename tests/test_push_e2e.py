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
