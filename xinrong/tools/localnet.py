"""A whole platform on one machine: keys, configs, data import, agents and node
as separate processes on 127.0.0.1 over mTLS.

The demo, the verification benchmark and the end-to-end tests all deploy
through here, so they exercise exactly the CLI and config files an operator
would use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xinrong.keys.layout import PartyCredentials, create_ca, load_ca, load_party, party_dir, provision_party
from xinrong.rpc.channel import secure_channel, wait_healthy
from xinrong.tools.procs import ProcessGroup


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _toml_table(name: str, values: dict[str, Any], *, array: bool = False) -> str:
    head = f"[[{name}]]" if array else f"[{name}]"
    return "\n".join([head, *(f"{k} = {_toml_value(v)}" for k, v in values.items())]) + "\n"


def generate_data(out: Path, *, enterprises: int, seed: int, as_of: str | None = None) -> Path:
    """Synthetic provider CSVs and a loan book, written by the real ``xinrong data generate``."""
    args = ["data", "generate", "--enterprises", str(enterprises), "--out", str(out), "--seed", str(seed)]
    gen = subprocess.run(
        [sys.executable, "-m", "xinrong.tools.cli", *args, *(["--as-of", as_of] if as_of else [])],
        capture_output=True,
        text=True,
        check=False,
    )
    if gen.returncode != 0:
        raise RuntimeError(f"data generation failed:\n{gen.stdout}{gen.stderr}")
    return out


def first_enterprise(data_dir: Path, provider: str) -> str:
    """The first enterprise of a provider's CSV (benchmarks ask about one enterprise all along)."""
    with open(data_dir / f"{provider}.csv", newline="") as fh:
        fh.readline()
        return fh.readline().split(",")[0]


def provision_keys(keys_dir: Path, providers: Iterable[str], institutions: Iterable[str]) -> None:
    ca = create_ca(keys_dir, overwrite=True)
    provision_party(ca, keys_dir, role="node", party_id="node", overwrite=True)
    for name in providers:
        provision_party(ca, keys_dir, role="provider", party_id=name, provider=name, overwrite=True)
    for inst in institutions:
        provision_party(ca, keys_dir, role="institution", party_id=inst, overwrite=True)


def write_agent_config(
    workdir: Path, keys_dir: Path, provider: str, *, modeling: dict[str, Any] | None = None, **overrides: Any
) -> Path:
    """The agent's TOML; ``modeling`` (if given) becomes its ``[modeling]`` table."""
    values: dict[str, Any] = {
        "provider": provider,
        "bind": "127.0.0.1:0",
        "credentials": str(party_dir(keys_dir, "provider", provider).resolve()),
        "ca_cert": str((keys_dir / "ca" / "ca.crt").resolve()),
        "db": str((workdir / "state" / f"agent-{provider}.db").resolve()),
        "node_id": "node",
    }
    values.update(overrides)
    path = workdir / "config" / f"agent-{provider}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    text = _toml_table("agent", values)
    if modeling is not None:
        text += "\n" + _toml_table("modeling", modeling)
    path.write_text(text)
    return path


def write_node_config(
    workdir: Path,
    keys_dir: Path,
    providers: dict[str, int],
    institutions: Iterable[str],
    database: dict[str, Any] | None = None,
    **overrides: Any,
) -> Path:
    """The node's TOML; ``database`` (if given) becomes its ``[database]`` table (PostgreSQL)."""
    values: dict[str, Any] = {
        "bind": "127.0.0.1:0",
        "credentials": str(party_dir(keys_dir, "node", "node").resolve()),
        "ca_cert": str((keys_dir / "ca" / "ca.crt").resolve()),
        "db": str((workdir / "state" / "node.db").resolve()),
    }
    values.update(overrides)
    parts = [_toml_table("node", values)]
    if database is not None:
        parts.append(_toml_table("database", database))
    for name, port in providers.items():
        parts.append(
            _toml_table(
                "providers",
                {
                    "name": name,
                    "address": f"127.0.0.1:{port}",
                    "binding": str((party_dir(keys_dir, "provider", name) / "binding.pb").resolve()),
                },
                array=True,
            )
        )
    for inst in institutions:
        parts.append(
            _toml_table(
                "institutions",
                {
                    "id": inst,
                    "binding": str((party_dir(keys_dir, "institution", inst) / "binding.pb").resolve()),
                },
                array=True,
            )
        )
    path = workdir / "config" / "node.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


@dataclass
class LocalPlatform:
    workdir: Path
    keys_dir: Path
    group: ProcessGroup
    node_port: int = 0
    provider_ports: dict[str, int] = field(default_factory=dict)
    node_config: Path | None = None
    agent_configs: dict[str, Path] = field(default_factory=dict)
    verbose: bool = False

    def _verbosity(self) -> list[str]:
        return ["-v"] if self.verbose else []

    @property
    def node_address(self) -> str:
        return f"127.0.0.1:{self.node_port}"

    def import_data(self, provider: str, csv_path: Path) -> None:
        result = self.group.run_cli(
            ["agent", "import", "--config", str(self.agent_configs[provider]), "--csv", str(csv_path)]
        )
        if result.returncode != 0:
            raise RuntimeError(f"import for {provider} failed:\n{result.stdout}\n{result.stderr}")

    def start_agents(self, providers: Iterable[str]) -> None:
        """Start agents together (their start-up overlaps), then wait for each port."""
        names = list(providers)
        for provider in names:
            port_file = self.workdir / "state" / f"agent-{provider}.port"
            self.group.start(
                f"agent-{provider}",
                [
                    *self._verbosity(),
                    "agent",
                    "serve",
                    "--config",
                    str(self.agent_configs[provider]),
                    "--port-file",
                    str(port_file),
                ],
                port_file=port_file,
            )
        for provider in names:
            self.provider_ports[provider] = self.group.wait_port(f"agent-{provider}")

    def start_node(self) -> int:
        assert self.node_config is not None
        port_file = self.workdir / "state" / "node.port"
        self.group.start(
            "node",
            [*self._verbosity(), "node", "serve", "--config", str(self.node_config), "--port-file", str(port_file)],
            port_file=port_file,
        )
        self.node_port = self.group.wait_port("node")
        self._tell_agents_the_node()
        return self.node_port

    def _tell_agents_the_node(self) -> None:
        """Agents restarted from now on pull missed revocations from the node before serving (A13)."""
        for path in self.agent_configs.values():
            text = path.read_text()
            lines = [line for line in text.splitlines(keepends=True) if not line.startswith("node_address = ")]
            at = lines.index("[agent]\n") + 1
            lines.insert(at, f'node_address = "127.0.0.1:{self.node_port}"\n')
            path.write_text("".join(lines))

    def party(self, role: str, party_id: str) -> PartyCredentials:
        return load_party(party_dir(self.keys_dir, role, party_id))

    def enterprise(self, code: str) -> PartyCredentials:
        """An enterprise's credentials, provisioned from the platform CA on first use."""
        directory = party_dir(self.keys_dir, "enterprise", code)
        if not (directory / "binding.pb").exists():
            ca = load_ca(self.keys_dir)
            provision_party(ca, self.keys_dir, role="enterprise", party_id=code)
        return load_party(directory)

    def wait_healthy(self, *, timeout: float = 60.0) -> None:
        """Every agent and the node answer health SERVING over mTLS."""
        node_creds = load_party(party_dir(self.keys_dir, "node", "node"))
        for provider, port in self.provider_ports.items():
            with secure_channel(f"127.0.0.1:{port}", node_creds, server_role="provider", server_id=provider) as ch:
                wait_healthy(ch, timeout=timeout)
        inst_dirs = sorted((self.keys_dir / "institutions").iterdir())
        inst = load_party(inst_dirs[0])
        with secure_channel(self.node_address, inst, server_role="node", server_id="node") as ch:
            wait_healthy(ch, timeout=timeout)


def deploy(
    workdir: Path,
    *,
    providers: list[str],
    institutions: list[str],
    data_dir: Path | None,
    node_overrides: dict[str, Any] | None = None,
    group: ProcessGroup | None = None,
    verbose: bool = False,
    agent_modeling: dict[str, dict[str, Any]] | None = None,
    node_database: dict[str, Any] | None = None,
) -> LocalPlatform:
    """Keys, configs, imports, then agents and node as processes; returns when all are healthy.

    ``agent_modeling`` maps a provider to its ``[modeling]`` table (joint
    modeling; with a ``dataset`` the agent needs no import). With
    ``data_dir`` None nothing is imported. ``node_database``: the node's
    ``[database]`` table (PostgreSQL) instead of SQLite.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    keys_dir = workdir / "keys"
    provision_keys(keys_dir, providers, institutions)
    platform = LocalPlatform(workdir=workdir, keys_dir=keys_dir, group=group or ProcessGroup(workdir), verbose=verbose)
    for name in providers:
        modeling = (agent_modeling or {}).get(name)
        platform.agent_configs[name] = write_agent_config(workdir, keys_dir, name, modeling=modeling)
        if data_dir is not None:
            platform.import_data(name, data_dir / f"{name}.csv")
    platform.start_agents(providers)
    platform.node_config = write_node_config(
        workdir, keys_dir, platform.provider_ports, institutions, database=node_database, **(node_overrides or {})
    )
    platform.start_node()
    platform.wait_healthy()
    return platform
