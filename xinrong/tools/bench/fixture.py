"""The one-provider platform the verification benchmarks load: tax agent, node, one bank, one consent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xinrong.consent import parse_consent
from xinrong.enterprise.client import ConsentRequest, grant
from xinrong.keys.layout import PartyCredentials
from xinrong.tools.localnet import LocalPlatform, deploy, first_enterprise, generate_data
from xinrong.tools.procs import ProcessGroup
from xinrong.v1 import common_pb2

# Budgets a benchmark never reaches: it measures throughput, not policy.
UNLIMITED_USES = 4_000_000_000
UNLIMITED_BUDGET = 1_000_000_000


@dataclass(frozen=True)
class BenchPlatform:
    platform: LocalPlatform
    enterprise: str
    bank: PartyCredentials
    consent: common_pb2.SignedConsent

    @property
    def consent_id(self) -> str:
        return parse_consent(self.consent).consent_id


def one_provider_platform(
    workdir: Path,
    group: ProcessGroup,
    *,
    enterprises: int,
    seed: int,
    database: dict[str, Any] | None = None,
    node_overrides: dict[str, Any] | None = None,
) -> BenchPlatform:
    """Data, the tax agent and the node as processes, and a consent of one enterprise for bank-a.

    ``database``: the node's ``[database]`` table (PostgreSQL); None keeps SQLite.
    ``node_overrides``: more ``[node]`` settings (the soak's clock-skew window).
    """
    generate_data(workdir / "data", enterprises=enterprises, seed=seed)
    platform = deploy(
        workdir,
        providers=["tax"],
        institutions=["bank-a"],
        data_dir=workdir / "data",
        group=group,
        node_overrides={"enterprise_daily_budget": UNLIMITED_BUDGET, **(node_overrides or {})},
        node_database=database,
    )
    enterprise = first_enterprise(workdir / "data", "tax")
    consent = grant(
        platform.enterprise(enterprise),
        ConsentRequest("bank-a", "loan_application", ("tax.*",), "2025-01-01", "2026-12-31", max_uses=UNLIMITED_USES),
    )
    return BenchPlatform(platform, enterprise, platform.party("institution", "bank-a"), consent)
