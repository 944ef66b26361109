"""Public records end to end with real processes: ``xinrong agent publish`` from generated data,
``xinrong bank report --json`` and its offline verification, the enterprise's filing and own report,
incremental and idempotent re-publishing after a new period."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xinrong.catalog import SharingMode, default_catalog
from xinrong.keys.layout import party_dir
from xinrong.tools.demo_public import play_public
from xinrong.tools.localnet import LocalPlatform, deploy, generate_data
from xinrong.tools.procs import ProcessGroup

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROVIDERS = ["market", "judicial", "tax"]
AS_OF = "2026-09-30"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    workdir = tmp_path_factory.mktemp("public-e2e")
    generate_data(workdir / "data", enterprises=300, seed=11, as_of=AS_OF)
    with ProcessGroup(workdir) as group:
        yield deploy(workdir, providers=PROVIDERS, institutions=["bank-a"], data_dir=workdir / "data", group=group)


def _cli(plat: LocalPlatform, *args: str) -> Any:
    result = plat.group.run_cli(list(args))
    assert result.returncode == 0, result.stderr
    return result.stdout


def _rows(plat: LocalPlatform, provider: str) -> dict[str, dict[str, str]]:
    with open(plat.workdir / "data" / f"{provider}.csv", newline="") as fh:
        return {row["uscc"]: row for row in csv.DictReader(fh)}


def test_publish_report_verify_filing_and_republish(platform: LocalPlatform, tmp_path: Path) -> None:
    plat = platform
    catalog = default_catalog()
    market = _rows(plat, "market")
    code = sorted(market)[0]
    counters = play_public(plat, code)
    assert counters["reports_verified"] == 1 and counters["filings_in_report"] == 2
    assert counters["republish_noops"] == len(PROVIDERS)
    bank = str(party_dir(plat.keys_dir, "institution", "bank-a"))
    text = _cli(
        plat, "bank", "report", "--enterprise", code, "--credentials", bank, "--node", plat.node_address, "--json"
    )
    envelope = json.loads(text)
    report = envelope["report"]
    items = {i["field"]: i for s in report["sections"] for i in s["items"]}
    # Every public field the CSV holds for the firm is in the report, with its CSV value; nothing else.
    for column, cell in market[code].items():
        key = f"market.{column}"
        if key not in catalog.fields or not cell:
            continue
        if catalog.field(key).mode is SharingMode.AGGREGATE:
            assert str(items[key]["value"]).lower() == cell.lower(), key
            assert items[key]["as_of"] == AS_OF and items[key]["source"] == "market"
        else:
            assert key not in items
    assert all(i["self_reported"] for i in items.values() if i["field"].startswith("self."))
    # The printable form through the bank CLI (renderer: bank.report_render), from the same node.
    html = tmp_path / "report.html"
    _cli(
        plat,
        "bank",
        "report",
        "--enterprise",
        code,
        "--credentials",
        bank,
        "--node",
        plat.node_address,
        "--html",
        str(html),
        "--lang",
        "en",
    )
    assert code in html.read_text(encoding="utf-8")
    # Offline verification: a tampered copy is refused with a non-zero exit.
    saved = tmp_path / "report.json"
    saved.write_text(text)
    assert json.loads(_cli(plat, "bank", "report", "verify", "--in", str(saved), "--credentials", bank))["verified"]
    envelope["report"]["sections"][1]["items"].append({"field": "judicial.dishonest_debtor", "value": True})
    saved.write_text(json.dumps(envelope, ensure_ascii=False))
    refused = plat.group.run_cli(["bank", "report", "verify", "--in", str(saved), "--credentials", bank])
    assert refused.returncode != 0
    # The enterprise gets its own report through its own role; its filing shows there too.
    ent = str(party_dir(plat.keys_dir, "enterprise", code))
    own = json.loads(_cli(plat, "enterprise", "report", "--credentials", ent, "--node", plat.node_address))
    assert own["report"]["enterprise"]["uscc"] == code and own["report"]["commitment"] is not None
    filings = json.loads(_cli(plat, "enterprise", "filing", "list", "--credentials", ent, "--node", plat.node_address))
    _cli(
        plat,
        "enterprise",
        "filing",
        "withdraw",
        "--credentials",
        ent,
        "--node",
        plat.node_address,
        "--id",
        filings[0]["filing_id"],
    )
    again = json.loads(_cli(plat, "enterprise", "report", "--credentials", ent, "--node", plat.node_address))
    assert next(s for s in again["report"]["sections"] if s["key"] == "self_reported")["items"] == []
    # A new period with one change: the next publish sends only that enterprise.
    rows = [dict(row, as_of="2026-10-31") for row in market.values()]
    changed = next(row for row in rows if row["uscc"] == code)
    changed["admin_penalties"] = str(int(changed["admin_penalties"] or 0) + 1)
    path = tmp_path / "market-next.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plat.import_data("market", path)
    config = str(plat.agent_configs["market"])
    out = json.loads(_cli(plat, "agent", "publish", "--config", config, "--node", plat.node_address, "--json"))
    assert (out["outcome"], out["records_sent"], out["records_changed"], out["batches"]) == ("published", 1, 1, 1)
    newer = json.loads(
        _cli(plat, "bank", "report", "--enterprise", code, "--credentials", bank, "--node", plat.node_address, "--json")
    )["report"]
    penalties = next(i for s in newer["sections"] for i in s["items"] if i["field"] == "market.admin_penalties")
    assert penalties["value"] == int(changed["admin_penalties"]) and penalties["as_of"] == "2026-10-31"
