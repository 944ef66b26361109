"""Node configuration: one TOML file, loaded into frozen dataclasses and
validated before anything starts.

Secrets are paths (the node's credentials directory, see ``xinrong.keys.layout``),
never key material. Relative paths resolve against the config file's
directory, so a config and its keys can move together. Unknown keys are
errors: a misspelt ``enterprise_daily_budgte`` must not silently fall back
to a default in a system whose limits are a privacy control.

    [node]
    bind = "127.0.0.1:7443"
    credentials = "keys/node/node"
    ca_cert = "keys/ca/ca.crt"
    db = "node.db"
    max_clock_skew_seconds = 300
    agent_timeout_seconds = 5
    max_claims_per_request = 32
    enterprise_daily_budget = 200
    modeling_step_timeout_seconds = 300   # joint modeling: deadline per agent call
    modeling_max_jobs = 4                 # modeling jobs held in memory at once
    # modeling_allow_insecure = false     # plain backend / short keys: tests only

    [[providers]]
    name = "tax"
    address = "127.0.0.1:7501"
    binding = "keys/providers/tax/binding.pb"

    [[institutions]]
    id = "bank-a"
    binding = "keys/institutions/bank-a/binding.pb"
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xinrong.catalog import Catalog, default_catalog, load_catalog
from xinrong.errors import ValidationError
from xinrong.keys.ca import check_party_id

SYNCHRONOUS_MODES = ("NORMAL", "FULL")

_NODE_KEYS = {
    "bind",
    "credentials",
    "ca_cert",
    "db",
    "catalog",
    "max_clock_skew_seconds",
    "agent_timeout_seconds",
    "max_claims_per_request",
    "enterprise_daily_budget",
    "revocation_retry_seconds",
    "sqlite_synchronous",
    "max_workers",
    "modeling_step_timeout_seconds",
    "modeling_allow_insecure",
    "modeling_max_jobs",
}
_PROVIDER_KEYS = {"name", "address", "binding"}
_INSTITUTION_KEYS = {"id", "binding"}


class ConfigError(ValidationError):
    """The config file is missing, malformed or names something that does not exist."""


@dataclass(frozen=True)
class ProviderEndpoint:
    """A provider agent the node routes claims to."""

    name: str
    address: str
    binding: Path


@dataclass(frozen=True)
class InstitutionEntry:
    """An institution allowed to call Verify / GetIndicators."""

    id: str
    binding: Path


@dataclass(frozen=True)
class NodeConfig:
    bind: str
    credentials: Path
    ca_cert: Path
    db: Path
    providers: tuple[ProviderEndpoint, ...]
    institutions: tuple[InstitutionEntry, ...]
    catalog_path: Path | None = None
    max_clock_skew_seconds: int = 300
    agent_timeout_seconds: float = 5.0
    max_claims_per_request: int = 32
    enterprise_daily_budget: int = 200
    # How often pending revocation pushes to agents that were down are retried.
    revocation_retry_seconds: float = 30.0
    # NORMAL (WAL): a power loss may roll back the last commits; a process
    # crash loses nothing. FULL: fsync on every commit.
    sqlite_synchronous: str = "NORMAL"
    max_workers: int = 16
    # Joint modeling: deadline of every call to an agent for one protocol step
    # (a CKKS step over a large batch takes seconds, a PSI over 1M ids minutes).
    modeling_step_timeout_seconds: float = 300.0
    # Plain (unencrypted) backend and short test keys: for tests only.
    modeling_allow_insecure: bool = False
    # Jobs held in memory at once (each holds an HE secret key and its working state).
    modeling_max_jobs: int = 4
    source: Path | None = None

    def load_catalog(self) -> Catalog:
        return load_catalog(self.catalog_path) if self.catalog_path else default_catalog()


def _require(table: dict[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing required key {key!r}")
    return table[key]


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (allowed: {sorted(allowed)})")


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string")
    return value


def _path(value: Any, base: Path, where: str, *, must_exist: bool = True) -> Path:
    path = Path(_str(value, where)).expanduser()
    if not path.is_absolute():
        path = base / path
    if must_exist and not path.exists():
        raise ConfigError(f"{where}: {path} does not exist")
    return path


def _int(value: Any, where: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer")
    if value < minimum:
        raise ConfigError(f"{where} must be >= {minimum}")
    return value


def _float(value: Any, where: str, *, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number")
    if value < minimum:
        raise ConfigError(f"{where} must be >= {minimum}")
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false")
    return value


def check_address(address: str, where: str, *, allow_port_zero: bool) -> str:
    """host:port (IPv6 as [::1]:port); the port must be numeric."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{where}: {address!r} is not host:port")
    number = int(port)
    if number > 65535 or (number == 0 and not allow_port_zero):
        raise ConfigError(f"{where}: port {port} is out of range")
    return address


def parse_config(doc: dict[str, Any], base: Path, *, source: Path | None = None) -> NodeConfig:
    """Validate a parsed TOML document; paths resolve against base."""
    _check_keys(doc, {"node", "providers", "institutions"}, "config")
    node = doc.get("node")
    if not isinstance(node, dict):
        raise ConfigError("config: missing [node] table")
    _check_keys(node, _NODE_KEYS, "[node]")
    bind = check_address(_str(_require(node, "bind", "[node]"), "[node].bind"), "[node].bind", allow_port_zero=True)
    credentials = _path(_require(node, "credentials", "[node]"), base, "[node].credentials")
    ca_cert = _path(_require(node, "ca_cert", "[node]"), base, "[node].ca_cert")
    db = _path(_require(node, "db", "[node]"), base, "[node].db", must_exist=False)
    if not db.parent.is_dir():
        raise ConfigError(f"[node].db: directory {db.parent} does not exist")
    catalog_path = _path(node["catalog"], base, "[node].catalog") if "catalog" in node else None
    synchronous = str(node.get("sqlite_synchronous", "NORMAL")).upper()
    if synchronous not in SYNCHRONOUS_MODES:
        raise ConfigError(f"[node].sqlite_synchronous must be one of {SYNCHRONOUS_MODES}")

    providers: list[ProviderEndpoint] = []
    raw_providers = doc.get("providers", [])
    if not isinstance(raw_providers, list):
        raise ConfigError("[[providers]] must be an array of tables")
    for i, entry in enumerate(raw_providers):
        where = f"[[providers]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        _check_keys(entry, _PROVIDER_KEYS, where)
        name = _str(_require(entry, "name", where), f"{where}.name")
        address = check_address(
            _str(_require(entry, "address", where), f"{where}.address"), f"{where}.address", allow_port_zero=False
        )
        providers.append(
            ProviderEndpoint(
                name=name, address=address, binding=_path(_require(entry, "binding", where), base, f"{where}.binding")
            )
        )
    _unique((p.name for p in providers), "[[providers]] name")

    institutions: list[InstitutionEntry] = []
    raw_institutions = doc.get("institutions", [])
    if not isinstance(raw_institutions, list):
        raise ConfigError("[[institutions]] must be an array of tables")
    for i, entry in enumerate(raw_institutions):
        where = f"[[institutions]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        _check_keys(entry, _INSTITUTION_KEYS, where)
        ident = _str(_require(entry, "id", where), f"{where}.id")
        try:
            check_party_id(ident)
        except ValueError as exc:
            raise ConfigError(f"{where}.id: {exc}") from None
        institutions.append(
            InstitutionEntry(id=ident, binding=_path(_require(entry, "binding", where), base, f"{where}.binding"))
        )
    _unique((i.id for i in institutions), "[[institutions]] id")

    config = NodeConfig(
        bind=bind,
        credentials=credentials,
        ca_cert=ca_cert,
        db=db,
        providers=tuple(providers),
        institutions=tuple(institutions),
        catalog_path=catalog_path,
        max_clock_skew_seconds=_int(
            node.get("max_clock_skew_seconds", 300), "[node].max_clock_skew_seconds", minimum=1
        ),
        agent_timeout_seconds=_float(
            node.get("agent_timeout_seconds", 5.0), "[node].agent_timeout_seconds", minimum=0.05
        ),
        max_claims_per_request=_int(node.get("max_claims_per_request", 32), "[node].max_claims_per_request", minimum=1),
        enterprise_daily_budget=_int(
            node.get("enterprise_daily_budget", 200), "[node].enterprise_daily_budget", minimum=1
        ),
        revocation_retry_seconds=_float(
            node.get("revocation_retry_seconds", 30.0), "[node].revocation_retry_seconds", minimum=0.05
        ),
        sqlite_synchronous=synchronous,
        max_workers=_int(node.get("max_workers", 16), "[node].max_workers", minimum=2),
        modeling_step_timeout_seconds=_float(
            node.get("modeling_step_timeout_seconds", 300.0), "[node].modeling_step_timeout_seconds", minimum=1.0
        ),
        modeling_allow_insecure=_bool(node.get("modeling_allow_insecure", False), "[node].modeling_allow_insecure"),
        modeling_max_jobs=_int(node.get("modeling_max_jobs", 4), "[node].modeling_max_jobs", minimum=1),
        source=source,
    )
    # Catalog consistency: every routed provider must exist in the catalog the
    # node enforces, or claims could never reach it.
    catalog = config.load_catalog()
    unknown = sorted(p.name for p in config.providers if p.name not in catalog.providers)
    if unknown:
        raise ConfigError(f"[[providers]]: {unknown} are not catalog providers {sorted(catalog.providers)}")
    return config


def _unique(values: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"{what} {v!r} appears twice")
        seen.add(v)


def load_config(path: str | Path) -> NodeConfig:
    path = Path(path).expanduser().resolve()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(doc, path.parent, source=path)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # JSON string escaping is valid TOML basic-string escaping for these values.
    return json.dumps(str(value))


def render_config(
    *,
    bind: str,
    credentials: str | Path,
    ca_cert: str | Path,
    db: str | Path,
    providers: Iterable[tuple[str, str, str | Path]],
    institutions: Iterable[tuple[str, str | Path]],
    **node_options: object,
) -> str:
    """TOML text of a node config (for the demo, tests and operators' templates).

    providers: (name, address, binding path); institutions: (id, binding path).
    """
    lines = [
        "[node]",
        f"bind = {_toml_value(bind)}",
        f"credentials = {_toml_value(credentials)}",
        f"ca_cert = {_toml_value(ca_cert)}",
        f"db = {_toml_value(db)}",
    ]
    for key, value in node_options.items():
        if key not in _NODE_KEYS:
            raise ConfigError(f"unknown [node] option {key!r}")
        lines.append(f"{key} = {_toml_value(value)}")
    for name, address, binding in providers:
        lines += [
            "",
            "[[providers]]",
            f"name = {_toml_value(name)}",
            f"address = {_toml_value(address)}",
            f"binding = {_toml_value(binding)}",
        ]
    for ident, binding in institutions:
        lines += ["", "[[institutions]]", f"id = {_toml_value(ident)}", f"binding = {_toml_value(binding)}"]
    return "\n".join(lines) + "\n"
