"""``xinrong bench push``: event throughput to one subscriber, and append-to-delivery latency.

A node process serves a log pre-filled with ``--events`` events (all in the
subscription: region 13xxxx, industry C, several cities and classes); one
subscriber (the bank SDK, over mTLS) drains it three times: raw stream
throughput (responses of ``--batch`` events, decoded, nothing checked);
the SDK's default check (one node signature per response, covering the
SHA-256 of every event in it); and the SDK checking every event's own
signature as well (what verifying each event alone costs; over the first
50,000 events only, to keep the run short). Then the
node appends ``--live`` events one at a time at ``--rate`` per second while
the subscriber follows; each payload carries its wall-clock append time, so
the subscriber measures append-to-delivery latency (same host, same clock).

Prints one JSON line. The goal (Issue 12 §3) is >= 10,000 events/s to one
subscriber on the project's 2-core box.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from xinrong.keys.layout import load_party, party_dir

SUBSCRIBER = "bank-a"
# Checking every event's own signature runs at ~10k/s: measured over this many, not the whole log.
EACH_SIGNATURE_EVENTS = 50_000
CITIES = ("130102", "130203", "130302", "130404", "130502", "130602", "130703", "130802", "130902", "131002")
CLASSES = ("C1310", "C2614", "C3011", "C3130", "C3311", "C3484", "C3670", "C3982")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=200_000, help="events pre-filled in the log (default 200,000)")
    p.add_argument("--live", type=int, default=2_000, help="events appended while the subscriber follows")
    p.add_argument("--rate", type=float, default=1_000.0, help="live appends per second (default 1,000)")
    p.add_argument("--batch", type=int, default=500, help="events per stream response (default 500)")
    p.add_argument("--json", action="store_true", help="one JSON line (the only output format)")
    p.add_argument("--workdir", type=Path, default=None, help="keep keys, database and logs here")


def add_node_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="the node's TOML config")
    p.add_argument("--port-file", required=True, type=Path, help="write the bound port here")
    p.add_argument("--go-file", required=True, type=Path, help="start the live appends once this file exists")
    p.add_argument("--live", type=int, default=2_000, help="events to append live")
    p.add_argument("--rate", type=float, default=1_000.0, help="live appends per second")


def node_main(args: argparse.Namespace) -> int:
    """The benchmark's node: a real node plus a producer appending live events on cue."""
    from xinrong.node.config import load_config
    from xinrong.node.server import start_node

    node = start_node(load_config(args.config))
    node.server.install_signal_handlers(grace=1.0)
    tmp = Path(str(args.port_file) + ".tmp")
    tmp.write_text(str(node.port))
    tmp.replace(args.port_file)
    events = node.events
    assert events is not None

    def produce() -> None:
        while not args.go_file.exists():
            time.sleep(0.005)
        interval = 1.0 / args.rate
        start = time.monotonic()
        for i in range(args.live):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            payload = json.dumps({"live": i, "t_ns": time.time_ns()}).encode()
            events.append(
                "public_record", f"LIVE{i:014d}", region=CITIES[i % len(CITIES)], industry="C3011", payload=payload
            )

    threading.Thread(target=produce, name="bench-producer", daemon=True).start()
    node.wait()
    return 0


def _prefill(workdir: Path, keys_dir: Path, n: int) -> float:
    from xinrong.node.db import Database
    from xinrong.node.events import EventLog, NewEvent

    (workdir / "state").mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(workdir / "state" / "node.db")
    try:
        log = EventLog(db, load_party(party_dir(keys_dir, "node", "node")).signing_key, node_id="node")
        t0 = time.perf_counter()
        chunk = 2_000
        for start in range(0, n, chunk):
            log.append_many(
                [
                    NewEvent(
                        "public_record",
                        f"9113{i:014d}",
                        CITIES[i % len(CITIES)],
                        CLASSES[i % len(CLASSES)],
                        json.dumps({"record": "market.registration", "version": i}).encode(),
                    )
                    for i in range(start, min(n, start + chunk))
                ]
            )
        return time.perf_counter() - t0
    finally:
        db.close()


def _drain(client: Any, subscription: Any, batch: int, limit: int | None = None) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    for events, _cursor in client.batches(subscription, 0, follow=False, max_batch=batch):
        n += len(events)
        if limit is not None and n >= limit:
            break
    return n, time.perf_counter() - t0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from xinrong.bank.push_client import PushClient, Subscription
    from xinrong.tools.localnet import provision_keys, write_node_config
    from xinrong.tools.procs import ProcessGroup

    keys_dir = workdir / "keys"
    provision_keys(keys_dir, [], [SUBSCRIBER])
    config = write_node_config(workdir, keys_dir, {}, [SUBSCRIBER])
    prefill_seconds = _prefill(workdir, keys_dir, args.events)
    go = workdir / "live.go"
    port_file = workdir / "node.port"
    subscription = Subscription(regions=("13",), industries=("C",))
    creds = load_party(party_dir(keys_dir, "institution", SUBSCRIBER))
    with ProcessGroup(workdir) as group:
        group.start(
            "node",
            [
                "bench",
                "push-node",
                "--config",
                str(config),
                "--port-file",
                str(port_file),
                "--go-file",
                str(go),
                "--live",
                str(args.live),
                "--rate",
                str(args.rate),
            ],
            port_file=port_file,
        )
        target = f"127.0.0.1:{group.wait_port('node')}"
        with PushClient(target, creds, verify=False) as raw:
            for i, _batch in enumerate(raw.batches(subscription, 0, max_batch=args.batch)):
                if i >= 20:  # warm-up: connection, the node's page cache, the stream's first pages
                    break
            raw_n, raw_s = _drain(raw, subscription, args.batch)
        with PushClient(target, creds, verify="event") as each:
            each_n, each_s = _drain(each, subscription, args.batch, EACH_SIGNATURE_EVENTS)
        with PushClient(target, creds) as sdk:
            sdk_n, sdk_s = _drain(sdk, subscription, args.batch)
            latencies: list[float] = []
            done = threading.Event()

            def follow() -> None:
                for events, _cursor in sdk.batches(subscription, raw_n, follow=True, stop=done.is_set):
                    now = time.time_ns()
                    for event in events:
                        latencies.append((now - int(event.payload_json()["t_ns"])) / 1e6)
                    if len(latencies) >= args.live:
                        done.set()

            thread = threading.Thread(target=follow, daemon=True)
            thread.start()
            time.sleep(0.2)  # the stream is open and caught up
            go.write_text("go")
            t0 = time.perf_counter()
            thread.join(timeout=args.live / args.rate + 30)
            live_s = time.perf_counter() - t0
    stream_rate = raw_n / raw_s if raw_s else 0.0
    return {
        "bench": "push",
        "prefill_events": args.events,
        "prefill_append_events_per_s": round(args.events / prefill_seconds),
        "batch": args.batch,
        "stream_events": raw_n,
        "stream_events_per_s": round(stream_rate),
        "sdk_verified_events": sdk_n,
        "sdk_verified_events_per_s": round(sdk_n / sdk_s) if sdk_s else 0,
        "sdk_each_signature_events": each_n,
        "sdk_each_signature_events_per_s": round(each_n / each_s) if each_s else 0,
        "live_events": len(latencies),
        "live_rate_per_s": args.rate,
        "live_seconds": round(live_s, 2),
        "latency_ms_p50": round(statistics.median(latencies), 2) if latencies else None,
        "latency_ms_p99": round(_percentile(latencies, 0.99), 2) if latencies else None,
        "goal_events_per_s": 10_000,
        "goal_met": stream_rate >= 10_000 and sdk_n / max(sdk_s, 1e-9) >= 10_000,
    }


def main(args: argparse.Namespace) -> int:
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
            result = run(args, Path(tmp))
    print(json.dumps(result))
    return 0


__all__ = ["add_arguments", "add_node_arguments", "main", "node_main", "run"]
