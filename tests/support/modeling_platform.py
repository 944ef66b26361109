"""A modeling platform in process: two provider agents holding the breast dataset's columns, and a node.

Shared by tests/test_modeling_grpc.py and tests/test_faults_modeling.py (a test module must not import
another's fixtures).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xinrong import uscc
from xinrong.bank.modeling import JobFile, parse_job
from xinrong.keys.layout import load_party, party_dir
from xinrong.modeling import data
from xinrong.node.config import load_config, render_config
from xinrong.node.server import NodeServer, start_node
from xinrong.provider_agent import config as agent_config
from xinrong.provider_agent import server as agent_server

PROVIDERS = ("tax", "electricity")
LABEL = "loan_defaulted_flag"  # a distinctive label column name, to look for in the node's view


@dataclasses.dataclass
class Platform:
    root: Path
    keys: Path
    node: NodeServer
    agents: dict[str, Any]
    setups: dict[str, Any]
    captured: list[tuple[str, str, str, bytes]]
    guest: Path
    hosts: dict[str, Path]
    node_config: Path

    def job(self, job_id: str, *, bank: str = "bank-a", backend: str = "plain", **train_cfg: Any) -> JobFile:
        cfg = {"epochs": 6, "batch_size": 100, **train_cfg}
        return parse_job(
            {
                "job": {
                    "id": job_id,
                    "node": f"127.0.0.1:{self.node.port}",
                    "credentials": str(party_dir(self.keys, "institution", bank)),
                    "providers": list(PROVIDERS),
                    "backend": backend,
                    "allow_plain": True,
                    "output": str(self.root / "out" / job_id),
                },
                "data": {"labels": str(self.guest), "label_column": LABEL},
                "train": cfg,
            },
            self.root,
        )

    def share(self, provider: str, job_id: str) -> Path:
        return self.root / "agents" / provider / job_id / "share.json"

    def restart_agent(self, provider: str) -> None:
        port = self.agents[provider].port
        self.agents[provider] = agent_server.start_agent(self.setups[provider], bind=f"127.0.0.1:{port}")


def _write(path: Path, table: data.PartyTable, label: str | None = None) -> Path:
    with path.open("w") as fh:
        fh.write(",".join(["id", *([label] if label else []), *table.columns]) + "\n")
        for k, (ident, row) in enumerate(zip(table.ids, table.x)):
            lab = [str(int(table.y[k]))] if label and table.y is not None else []
            fh.write(",".join([ident, *lab, *[repr(float(v)) for v in row]]) + "\n")
    return path


def _uscc(ident: str) -> str:
    """The breast rows as enterprises: a valid USCC per id, so they can be scored by USCC too."""
    return uscc.make("9", "1", "130100", f"MA{int(ident):06d}")


def breast_tables() -> tuple[data.PartyTable, list[data.PartyTable]]:
    g, h = data.dataset_paths("breast")
    bank = data.read_table(g, label=True, name="bank-a")
    bank = dataclasses.replace(bank, ids=tuple(_uscc(i) for i in bank.ids))
    host = data.read_table(h, label=False)
    host = dataclasses.replace(host, ids=tuple(_uscc(i) for i in host.ids))
    return bank, [dataclasses.replace(t, name=p) for t, p in zip(data.split_columns(host, 2), PROVIDERS)]


def start_modeling_node(config: Path, captured: list[tuple[str, str, str, bytes]]) -> NodeServer:
    def observe(peer: str, direction: str, rpc: str, blob: bytes) -> None:
        captured.append((peer, direction, rpc, blob))

    return start_node(load_config(config), modeling_observer=observe)


@contextlib.contextmanager
def modeling_platform(pki: Any, tmp_path: Path) -> Iterator[Platform]:
    """Two modeling agents over the breast dataset split in columns and a node routing to them."""
    bank, hosts = breast_tables()
    guest = _write(tmp_path / "guest.csv", bank, LABEL)
    host_paths = {t.name: _write(tmp_path / f"{t.name}.csv", t) for t in hosts}
    agents: dict[str, Any] = {}
    setups: dict[str, Any] = {}
    for p in PROVIDERS:
        cfg = agent_config.parse_config(
            {
                "agent": {
                    "provider": p,
                    "bind": "127.0.0.1:0",
                    "credentials": str(party_dir(pki.root, "provider", p)),
                    "ca_cert": str(pki.root / "ca" / "ca.crt"),
                    "db": str(tmp_path / f"agent-{p}.db"),
                    "node_id": "node",
                },
                "modeling": {
                    "enabled": True,
                    "allowed_institutions": ["bank-a"],
                    "dataset": str(host_paths[p]),
                    "dir": str(tmp_path / "agents" / p),
                    "allow_insecure": True,
                },
            },
            tmp_path,
        )
        setups[p] = agent_config.prepare(cfg)
        agents[p] = agent_server.start_agent(setups[p], bind="127.0.0.1:0")
    node_config = tmp_path / "node.toml"
    node_config.write_text(
        render_config(
            bind="127.0.0.1:0",
            credentials=party_dir(pki.root, "node", "node"),
            ca_cert=pki.root / "ca" / "ca.crt",
            db=tmp_path / "node.db",
            providers=[
                (p, f"127.0.0.1:{a.port}", party_dir(pki.root, "provider", p) / "binding.pb") for p, a in agents.items()
            ],
            institutions=[(b, party_dir(pki.root, "institution", b) / "binding.pb") for b in ("bank-a", "bank-b")],
            modeling_allow_insecure=True,
            modeling_step_timeout_seconds=30,
        )
    )
    captured: list[tuple[str, str, str, bytes]] = []
    node = start_modeling_node(node_config, captured)
    plat = Platform(tmp_path, pki.root, node, agents, setups, captured, guest, host_paths, node_config)
    try:
        yield plat
    finally:
        plat.node.stop(0.2)
        for agent in plat.agents.values():
            agent.stop(0.2)


def platform_creds(platform: Platform, bank: str) -> Any:
    return load_party(party_dir(platform.keys, "institution", bank))
