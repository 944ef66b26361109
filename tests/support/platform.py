"""A real platform in process: provider agents over their own CSVs and a node routing to them, all over mTLS.

Shared by the integration tests (tests/test_node_integration.py, tests/test_subject_rights.py, ...): each
module passes its own CSV text per provider; nothing here knows a test's data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from xinrong.catalog import Catalog
from xinrong.keys.layout import party_dir
from xinrong.node.config import load_config, render_config
from xinrong.node.server import NodeServer, start_node
from xinrong.provider_agent import config as agent_config
from xinrong.provider_agent import importer
from xinrong.provider_agent import server as agent_server
from xinrong.provider_agent import store as agent_store

from support.node_fakes import ACME, BETA

BANKS = ("bank-a", "bank-b")

# Two providers' exports of the node integration tests (ACME everywhere, BETA at the tax bureau only).
AS_OF = "2026-06-30"
CSV = {
    "tax": (
        "uscc,as_of,credit_grade,abnormal_taxpayer,in_arrears,arrears_amount,vat_paid_last_year,cit_paid_last_year,"
        "consecutive_normal_months,last_normal_payment_date,grade_a_taxpayer\n"
        f"{ACME},{AS_OF},A,false,false,0,734512.37,88231.90,27,2026-06-15,true\n"
        f"{BETA},{AS_OF},C,true,true,51234.11,,,2,,false\n"
    ),
    "social_insurance": (
        "uscc,as_of,avg_insured_headcount,avg_employer_contribution,consecutive_months,last_normal_month,in_arrears\n"
        f"{ACME},{AS_OF},83,48213.77,19,2026-06-01,false\n"
    ),
}
RAW = ["734512.37", "88231.90", "48213.77", "51234.11"]


def agent_setup(
    root: Path, workdir: Path, provider: str, agent_table: Mapping[str, Any] | None = None
) -> agent_config.AgentSetup:
    """The agent's checked setup (state under ``workdir``); ``agent_table`` adds to its ``[agent]`` config."""
    config = agent_config.parse_config(
        {
            "agent": {
                "provider": provider,
                "bind": "127.0.0.1:0",
                "credentials": str(party_dir(root, "provider", provider)),
                "ca_cert": str(root / "ca" / "ca.crt"),
                "db": str(workdir / f"agent-{provider}.db"),
                "node_id": "node",
                **(agent_table or {}),
            }
        },
        workdir,
    )
    return agent_config.prepare(config)


def start_agent(
    root: Path,
    workdir: Path,
    catalog: Catalog,
    provider: str,
    csv_text: str,
    *,
    agent_table: Mapping[str, Any] | None = None,
    **options: Any,
) -> agent_server.RunningAgent:
    """An agent for ``provider`` on port 0 with ``csv_text`` imported; ``agent_table`` adds to its
    ``[agent]`` config, ``options`` go to ``start_agent``."""
    csv_path = workdir / f"{provider}.csv"
    csv_path.write_text(csv_text)
    setup = agent_setup(root, workdir, provider, agent_table)
    data = agent_store.DataStore(setup.config.db, provider)
    try:
        importer.import_csv(data, catalog, provider, csv_path)
    finally:
        data.close()
    return agent_server.start_agent(setup, bind="127.0.0.1:0", **options)


@contextlib.contextmanager
def real_platform(
    pki: Any,
    catalog: Catalog,
    tmp_path: Path,
    csv: Mapping[str, str],
    *,
    database: dict[str, Any] | None = None,
    **agent_options: Any,
) -> Iterator[tuple[NodeServer, dict[str, agent_server.RunningAgent]]]:
    """One agent per provider in ``csv`` and a node routing to them (banks: ``BANKS``); stopped on exit."""
    agents: dict[str, agent_server.RunningAgent] = {}
    try:
        for provider, text in csv.items():
            agents[provider] = start_agent(pki.root, tmp_path, catalog, provider, text, **agent_options)
        root = pki.root
        config_path = tmp_path / "node.toml"
        config_path.write_text(
            render_config(
                bind="127.0.0.1:0",
                credentials=party_dir(root, "node", "node"),
                ca_cert=root / "ca" / "ca.crt",
                db="node.db",
                providers=[
                    (p, f"127.0.0.1:{a.port}", party_dir(root, "provider", p) / "binding.pb") for p, a in agents.items()
                ],
                institutions=[(b, party_dir(root, "institution", b) / "binding.pb") for b in BANKS],
                database=database,
            )
        )
        node = start_node(load_config(config_path))
        try:
            yield node, agents
        finally:
            node.stop(0.5)
    finally:
        for agent in agents.values():
            agent.stop(0.5)
