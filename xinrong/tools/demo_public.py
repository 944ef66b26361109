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


def play_public(platform: LocalPlatform, enterprise: str, *, bank: str = "bank-a") -> dict[str, float]:
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
    filed = next(s for s in report["sections"] if s["key"] == "self_reported")["items"]
    return {
        "reports_verified": 1,
        "filings_in_report": len(filed),
        "public_records_published": published,
        "republish_noops": already,
        "public_step_seconds": round(time.monotonic() - started, 1),
    }


__all__ = ["play_public"]
