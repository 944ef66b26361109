"""Demo step: financing demands, the whitelist and the push stream (Issue 12 §3, Issue 13 §2).

After the full-coverage evaluation, two enterprises register financing
demands with a matching consent for bank-a: one whose grade meets the
published threshold (pushed), one below it (not pushed). bank-a then runs
``xinrong bank subscribe`` as an operator would: every event of the log it
may receive (region 13, Hebei), node signatures checked, written to a JSONL
file with a resumable cursor; bank-b, not named by either consent, receives
no whitelist event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from xinrong.enterprise.client import ConsentRequest, grant
from xinrong.enterprise.demand_client import DemandClient
from xinrong.keys.layout import party_dir
from xinrong.tools.localnet import LocalPlatform


def _pick(platform: LocalPlatform, codes: Iterable[str], period: str) -> tuple[str | None, str | None]:
    """(an enterprise at or above the threshold, one below), from the stored evaluation."""
    from xinrong.index import default_index
    from xinrong.node.config import load_config
    from xinrong.node.evaluation import EvaluationStore

    assert platform.node_config is not None
    config = load_config(platform.node_config)
    store = EvaluationStore(config.evaluation_path())
    grades = [g.name for g in default_index().grades]
    cut = grades.index(config.whitelist_min_grade)
    above = below = None
    for code in sorted(codes):
        record = store.lookup(code, period)
        if record is None or not record.scored:
            continue
        if grades.index(record.grade) <= cut and above is None:
            above = code
        elif grades.index(record.grade) > cut and below is None:
            below = code
        if above and below:
            break
    return above, below


def _subscribe(platform: LocalPlatform, bank: str, out: Path, *extra: str) -> list[dict[str, Any]]:
    result = platform.group.run_cli(
        [
            "bank",
            "subscribe",
            "--node",
            platform.node_address,
            "--credentials",
            str(party_dir(platform.keys_dir, "institution", bank)),
            "--out",
            str(out),
            *extra,
        ],
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bank subscribe failed: {result.stderr.strip()}")
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def play_push(
    platform: LocalPlatform, enterprises: Iterable[str], period: str, say: Callable[[str], None]
) -> dict[str, int]:
    """Returns {"pushed_events": n, "whitelist_pushed": n} (plus what the demo checks)."""
    above, below = _pick(platform, enterprises, period)
    registered = 0
    for code in (above, below):
        if code is None:
            continue
        creds = platform.enterprise(code)
        consent = grant(
            creds,
            ConsentRequest(
                grantee="bank-a",
                purpose="matching",
                scope=("tax.credit_grade",),
                data_period_from="2025-01-01",
                data_period_to="2026-12-31",
            ),
        )
        with DemandClient(platform.node_address, creds) as client:
            signed = client.sign(
                amount_yuan=2_000_000 if code == above else 500_000,
                term_months=12,
                purpose="working capital",
                region=code[2:8],
                consents=[consent],
            )
            resp = client.register(signed, [consent])
        registered += 1
        say(
            f"    enterprise {code} registers a financing demand for bank-a: "
            + ("whitelisted, pushed to " + ", ".join(resp.pushed_to) if resp.whitelisted else "below the threshold")
        )
    out_dir = platform.workdir / "push"
    out_dir.mkdir(exist_ok=True)
    events = _subscribe(platform, "bank-a", out_dir / "bank-a.jsonl", "--region", "13")
    whitelist = [e for e in events if e["topic"] == "whitelist" and e["payload"].get("action") == "add"]
    other = _subscribe(platform, "bank-b", out_dir / "bank-b.jsonl", "--topic", "whitelist")
    say(
        f"    bank-a's subscription (region 13): {len(events)} node-signed events, {len(whitelist)} whitelist "
        f"additions (grade {', '.join(str(e['payload'].get('grade', '-')) for e in whitelist) or '-'}); "
        f"bank-b, not named: {len(other)}"
    )
    return {
        "pushed_events": len(events),
        "whitelist_pushed": len(whitelist),
        "whitelist_expected": 1 if above is not None else 0,
        "whitelist_leaked": len(other),
        "demands_registered": registered,
    }


__all__ = ["play_push"]
