"""Two node processes (replicas) on one real PostgreSQL, a tax agent behind both: the ``replicas`` fixture.

Registered in tests/conftest.py; used by test_replicas and test_institutions_e2e."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xinrong.catalog import Catalog
from xinrong.keys.layout import party_dir
from xinrong.node.config import render_config
from xinrong.rpc.channel import secure_channel, wait_healthy
from xinrong.tools.procs import ProcessGroup
from xinrong.v1 import node_pb2_grpc

from support.node_fakes import AgentHandle, start_agent
from support.pg import database_table
from support.pki import Pki


@dataclass
class Replicas:
    """The running replicas: their process group, ports and config files, and the shared tax agent."""

    group: ProcessGroup
    ports: list[int]
    configs: list[Path]
    agent: AgentHandle

    def stub(self, pki: Pki, i: int, who: str = "bank-a", role: str = "institution") -> Any:
        """A NodeService stub to replica ``i`` as party ``who``."""
        channel = secure_channel(
            f"127.0.0.1:{self.ports[i]}", pki.party(role, who), server_role="node", server_id="node"
        )
        return node_pb2_grpc.NodeServiceStub(channel)


@pytest.fixture
def replicas(pki: Pki, catalog: Catalog, pg_cluster: Any, tmp_path: Path) -> Iterator[Replicas]:
    """Two ``xinrong node serve`` processes on one PostgreSQL table, healthy before the test starts."""
    table = database_table(pg_cluster, pool_size=4)
    agent = start_agent(pki, catalog, "tax")
    root = pki.root
    group = ProcessGroup(tmp_path)
    configs: list[Path] = []
    try:
        for i in range(2):
            config = tmp_path / f"node{i}.toml"
            config.write_text(
                render_config(
                    bind="127.0.0.1:0",
                    credentials=party_dir(root, "node", "node"),
                    ca_cert=root / "ca" / "ca.crt",
                    db=tmp_path / "unused.db",
                    providers=[("tax", agent.address, party_dir(root, "provider", "tax") / "binding.pb")],
                    institutions=[(b, party_dir(root, "institution", b) / "binding.pb") for b in ("bank-a", "bank-b")],
                    database=table,
                    enterprise_daily_budget=1_000_000,  # the load below outruns any smaller day on a quiet machine
                )
            )
            configs.append(config)
            port_file = tmp_path / f"node{i}.port"
            group.start(
                f"node{i}",
                ["node", "serve", "--config", str(config), "--port-file", str(port_file)],
                port_file=port_file,
            )
        ports = [group.wait_port(f"node{i}") for i in range(2)]
        for port in ports:
            with secure_channel(
                f"127.0.0.1:{port}", pki.institution("bank-a"), server_role="node", server_id="node"
            ) as ch:
                wait_healthy(ch, timeout=30)
        yield Replicas(group, ports, configs, agent)
    finally:
        group.stop_all()
        agent.stop()
