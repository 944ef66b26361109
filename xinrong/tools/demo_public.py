"""Demo step for Issue 12 §1/§2/§4: public records, a voluntary filing, a verified credit report.

Every provider holding aggregate-mode fields runs ``xinrong agent publish``
(then again, to show the second run is a no-op), one enterprise files a
self-reported item with the credit commitment, and a bank fetches that
enterprise's report and verifies it offline from the CA and the node binding
in its credentials directory - all through the CLIs, as real processes.
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


def _cli(platform: LocalPlatform, args: list[str]) -> str:
    result = platform.group.run_cli(args)
    if result.returncode != 0:
        raise RuntimeError(f"xinrong {' '.join(args[:2])} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def play_public(platform: LocalPlatform, enterprise: str, *, bank: str = "bank-a") -> dict[str, float]:
    """Publish, file, fetch, verify; returns the demo's counters."""
    started = time.monotonic()
    catalog = default_catalog()
    published = already = 0
    for provider in catalog.public_providers():
        if provider not in platform.agent_configs:
            continue
        config = str(platform.agent_configs[provider])
        first = json.loads(
            _cli(platform, ["agent", "publish", "--config", config, "--node", platform.node_address, "--json"])
        )
        published += int(first["records_changed"])
        again = json.loads(
            _cli(platform, ["agent", "publish", "--config", config, "--node", platform.node_address, "--json"])
        )
        already += again["outcome"] in ("unchanged", "already_applied")
    platform.enterprise(enterprise)  # provisioned from the CA on first use
    ent_creds = str(party_dir(platform.keys_dir, "enterprise", enterprise))
    _cli(
        platform,
        [
            "enterprise",
            "filing",
            "submit",
            "--credentials",
            ent_creds,
            "--node",
            platform.node_address,
            "--item",
            "self.patents_held=6",
            "--item",
            "self.green_certifications=ISO 14001,绿色工厂",
            "--accept-commitment",
        ],
    )
    bank_creds = str(party_dir(platform.keys_dir, "institution", bank))
    text = _cli(
        platform,
        [
            "bank",
            "report",
            "--enterprise",
            enterprise,
            "--credentials",
            bank_creds,
            "--node",
            platform.node_address,
            "--json",
        ],
    )
    envelope: dict[str, Any] = json.loads(text)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "report.json"
        saved.write_text(text, encoding="utf-8")
        checked = json.loads(
            _cli(platform, ["bank", "report", "verify", "--in", str(saved), "--credentials", bank_creds])
        )
    filed = next(s for s in envelope["report"]["sections"] if s["key"] == "self_reported")["items"]
    return {
        "reports_verified": int(bool(checked.get("verified"))),
        "filings_in_report": len(filed),
        "public_records_published": published,
        "republish_noops": already,
        "public_step_seconds": round(time.monotonic() - started, 1),
    }


__all__ = ["play_public"]
