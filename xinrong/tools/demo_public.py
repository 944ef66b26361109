"""Demo step for Issue 12 §1/§2/§4: public records, a voluntary filing, a verified credit report.

Every provider holding aggregate-mode fields runs ``xinrong agent publish``
(then again, to show the second run is a no-op), one enterprise files a
self-reported item with the credit commitment, and a bank fetches that
enterprise's report and verifies it offline from the CA and the node binding
in its credentials directory (``verify_file`` raises unless the report verifies).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from xinrong.catalog import default_catalog
from xinrong.keys.layout import party_dir
from xinrong.tools.localnet import LocalPlatform


def _head(client: Any) -> int:
    """The log's head as the bank sees it: a subscription no event matches moves the cursor there."""
    from xinrong.bank.push_client import Subscription

    head = 0
    for _events, after in client.batches(Subscription(topics=("none_such",)), 0):
        head = after
    return head


def _new_period_pushed(platform: LocalPlatform, data_dir: Path, enterprise: str, bank_dir: Path) -> int:
    """The market regulator's next period changes one record of ``enterprise``; after ``agent publish`` a bank
    subscribed to its city (region prefix) and the public-record topic receives exactly that change, node-signed."""
    import csv

    from xinrong.bank.push_client import PushClient, Subscription
    from xinrong.keys.layout import load_party
    from xinrong.provider_agent.config import load_agent
    from xinrong.provider_agent.publish import publish

    with open(data_dir / "market.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with PushClient(platform.node_address, load_party(bank_dir), timeout=10.0) as client:
        head = _head(client)
        period = "2099-12-31"
        for row in rows:
            row["as_of"] = period
            if row["uscc"] == enterprise:
                row["admin_penalties"] = str(int(row.get("admin_penalties") or 0) + 1)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "market-next.csv"
            with open(path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            platform.import_data("market", path)
        publish(load_agent(platform.agent_configs["market"]), platform.node_address)
        city = Subscription(regions=(enterprise[2:6],), topics=("public_record",))
        got = [e for events, _after in client.batches(city, head) for e in events]
    assert all(e.enterprise == enterprise for e in got), "a change of another enterprise was pushed"
    assert [e.payload_json()["field"] for e in got] == ["market.admin_penalties"], got
    return len(got)


def play_public(
    platform: LocalPlatform, enterprise: str, *, bank: str = "bank-a", data_dir: Path | None = None
) -> dict[str, float]:
    """Publish, file, fetch, verify (in process, the CLIs' own functions); returns the demo's counters.

    The CLIs themselves are exercised by tests/test_public_e2e.py; here nine
    interpreter start-ups would cost more than the whole step.
    """
    from xinrong.bank.public_cli import NODE_BINDING_FILE, fetch_report, verify_file
    from xinrong.enterprise.public_cli import submit_filing
    from xinrong.provider_agent.config import load_agent
    from xinrong.provider_agent.publish import publish

    started = time.monotonic()
    catalog = default_catalog()
    published = already = 0
    for provider in catalog.public_providers():
        if provider not in platform.agent_configs:
            continue
        setup = load_agent(platform.agent_configs[provider])
        published += publish(setup, platform.node_address).records_changed
        already += publish(setup, platform.node_address).outcome in ("unchanged", "already_applied")
    creds = platform.enterprise(enterprise)  # provisioned from the CA on first use
    submit_filing(
        platform.node_address,
        creds,
        {"self.patents_held": 6, "self.green_certifications": ["ISO 14001", "绿色工厂"]},
    )
    bank_dir = party_dir(platform.keys_dir, "institution", bank)
    envelope: dict[str, Any] = fetch_report(platform.node_address, bank_dir, enterprise)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "report.json"
        saved.write_text(json.dumps(envelope, ensure_ascii=False), encoding="utf-8")
        report = verify_file(saved, ca_cert=bank_dir / "ca.crt", node_binding=bank_dir / NODE_BINDING_FILE)
        # The printable form a loan officer files: A4, Chinese labels, the verification footer.
        from xinrong.bank.report_render import render_pdf

        pdf = Path(tmp) / "report.pdf"
        render_pdf(envelope, pdf, lang="zh")
        rendered = int(pdf.read_bytes().startswith(b"%PDF-") and pdf.stat().st_size > 1000)
    filed = next(s for s in report["sections"] if s["key"] == "self_reported")["items"]
    pushed = _new_period_pushed(platform, data_dir, enterprise, bank_dir) if data_dir is not None else 0
    return {
        "public_changes_pushed": pushed,
        "reports_verified": 1,
        "reports_rendered": rendered,
        "filings_in_report": len(filed),
        "public_records_published": published,
        "republish_noops": already,
        "public_step_seconds": round(time.monotonic() - started, 1),
    }


__all__ = ["play_public"]
