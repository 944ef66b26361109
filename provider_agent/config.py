"""Agent configuration: one TOML file, loaded into frozen dataclasses and
validated before anything binds a port or touches the database.

The file names paths only (credentials directory, CA certificate, database),
never key material. Relative paths resolve against the config file's own
directory, so a deployment directory can be moved as a whole. Unknown keys
are refused: a misspelt ``max_clock_skew_secs`` silently falling back to a
default is how a security setting gets lost.

    [agent]
    provider = "tax"                    # catalog provider name
    bind = "127.0.0.1:0"                # port 0: ephemeral (tests, demo)
    credentials = "keys/providers/tax"  # keys.layout party directory
    ca_cert = "keys/ca/ca.crt"          # trust anchor (default: <credentials>/ca.crt)
    db = "state/agent-tax.db"           # provider data (periods, records)
    # state_db = "state/agent-tax.state.db"   # serving state; default derived from db
    node_id = "node"                    # the only party id allowed to call
    verdict_ttl_seconds = 86400
    max_clock_skew_seconds = 300
    # catalog = "catalog.toml"          # default: the packaged catalog
    # max_workers = 16                  # gRPC handler threads

    [modeling]                          # optional: joint modeling (off by default)
    enabled = true
    allowed_institutions = ["bank-a"]   # anyone else's job is refused (PERMISSION_DENIED)
    dir = "state/modeling-tax"          # checkpoints and model shares (default: next to db)
    # dataset = "features.csv"          # id + numeric columns; default: the active period's catalog fields
    # allow_insecure = false            # plain backend: tests only
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xinrong.catalog import Catalog, load_catalog
from xinrong.errors import SignatureError, ValidationError
from xinrong.keys.ca import check_party_id
from xinrong.keys.layout import PartyCredentials, load_party

_KEYS = {
    "provider",
    "bind",
    "credentials",
    "ca_cert",
    "db",
    "state_db",
    "node_id",
    "verdict_ttl_seconds",
    "max_clock_skew_seconds",
    "catalog",
    "max_workers",
}


_MODELING_KEYS = {"enabled", "allowed_institutions", "dataset", "dir", "allow_insecure"}


@dataclass(frozen=True)
class ModelingConfig:
    """The optional ``[modeling]`` table: who may run joint-modeling jobs with this provider, on what data.

    ``dataset`` (a CSV with an ``id`` column and numeric feature columns)
    replaces the active period's catalog fields as the features, for the
    real-data benchmark. ``dir`` holds each job's alignment, checkpoints and
    the provider's model share, on the provider's own disk.
    """

    enabled: bool = False
    allowed_institutions: tuple[str, ...] = ()
    dataset: Path | None = None
    dir: Path | None = None
    allow_insecure: bool = False


@dataclass(frozen=True)
class AgentConfig:
    """Validated settings of one provider agent (paths already absolute)."""

    provider: str
    bind: str
    credentials: Path
    ca_cert: Path
    db: Path
    state_db: Path
    node_id: str = "node"
    verdict_ttl_seconds: int = 86400
    max_clock_skew_seconds: int = 300
    catalog: Path | None = None
    max_workers: int = 16
    modeling: ModelingConfig = field(default_factory=ModelingConfig)


@dataclass(frozen=True)
class AgentSetup:
    """A config plus what it points at, loaded and cross-checked: the catalog
    and the provider's own credentials (whose CA-signed binding must name
    this provider, so an agent cannot sign as another provider by mistake)."""

    config: AgentConfig
    catalog: Catalog
    credentials: PartyCredentials


def _require_str(table: dict[str, Any], key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"[agent] {key} must be a non-empty string")
    return value.strip()


def _int_in(table: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(f"[agent] {key} must be an integer in [{lo}, {hi}]")
    return value


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def default_state_db(db: Path) -> Path:
    """Serving state lives in its own SQLite file next to the data file, so a
    long import (which holds the data file's write lock) never blocks the
    replay and use-count writes of a running agent."""
    suffix = db.suffix or ".db"
    return db.with_name(f"{db.stem if db.suffix else db.name}.state{suffix}")


def parse_modeling(doc: dict[str, Any], base: Path, db: Path) -> ModelingConfig:
    """The optional ``[modeling]`` table (absent: modeling disabled)."""
    table = doc.get("modeling")
    if table is None:
        return ModelingConfig()
    if not isinstance(table, dict):
        raise ValidationError("[modeling] must be a table")
    unknown = sorted(set(table) - _MODELING_KEYS)
    if unknown:
        raise ValidationError(f"[modeling] has unknown keys {unknown}; allowed: {sorted(_MODELING_KEYS)}")
    enabled = table.get("enabled", False)
    insecure = table.get("allow_insecure", False)
    if not isinstance(enabled, bool) or not isinstance(insecure, bool):
        raise ValidationError("[modeling] enabled and allow_insecure must be true or false")
    allowed = table.get("allowed_institutions", [])
    if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
        raise ValidationError("[modeling] allowed_institutions must be a list of institution ids")
    for ident in allowed:
        try:
            check_party_id(ident)
        except ValueError as exc:
            raise ValidationError(f"[modeling] allowed_institutions: {exc}") from None
    dataset = None
    if "dataset" in table:
        dataset = _resolve(base, _require_str(table, "dataset"))
        if not dataset.is_file():
            raise ValidationError(f"[modeling] dataset {dataset} does not exist")
    directory = _resolve(base, _require_str(table, "dir")) if "dir" in table else db.with_name(f"{db.stem}.modeling")
    return ModelingConfig(
        enabled=enabled,
        allowed_institutions=tuple(allowed),
        dataset=dataset,
        dir=directory,
        allow_insecure=insecure,
    )


def parse_config(doc: dict[str, Any], base: Path) -> AgentConfig:
    """Structural validation of an already-parsed TOML document."""
    table = doc.get("agent")
    if not isinstance(table, dict):
        raise ValidationError("config needs an [agent] table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ValidationError(f"[agent] has unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    provider = _require_str(table, "provider")
    bind = _require_str(table, "bind")
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValidationError(f"[agent] bind {bind!r} must look like HOST:PORT")
    credentials = _resolve(base, _require_str(table, "credentials"))
    ca_cert = _resolve(base, _require_str(table, "ca_cert")) if "ca_cert" in table else credentials / "ca.crt"
    db = _resolve(base, _require_str(table, "db"))
    state_db = _resolve(base, _require_str(table, "state_db")) if "state_db" in table else default_state_db(db)
    if state_db == db:
        raise ValidationError("[agent] state_db must differ from db")
    node_id = _require_str(table, "node_id", "node")
    try:
        check_party_id(node_id)
    except ValueError as exc:
        raise ValidationError(f"[agent] node_id: {exc}") from None
    catalog = _resolve(base, _require_str(table, "catalog")) if "catalog" in table else None
    return AgentConfig(
        provider=provider,
        bind=bind,
        credentials=credentials,
        ca_cert=ca_cert,
        db=db,
        state_db=state_db,
        node_id=node_id,
        verdict_ttl_seconds=_int_in(table, "verdict_ttl_seconds", 86400, 60, 366 * 86400),
        max_clock_skew_seconds=_int_in(table, "max_clock_skew_seconds", 300, 1, 3600),
        catalog=catalog,
        max_workers=_int_in(table, "max_workers", 16, 1, 256),
        modeling=parse_modeling(doc, base, db),
    )


def load_config(path: str | Path) -> AgentConfig:
    """Read and structurally validate a config file."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError(f"config file {path} does not exist") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValidationError(f"config file {path} is not valid TOML: {exc}") from None
    return parse_config(doc, path.resolve().parent)


def prepare(config: AgentConfig) -> AgentSetup:
    """Load the catalog and credentials and check they fit the config."""
    try:
        catalog = load_catalog(config.catalog)
    except OSError as exc:
        raise ValidationError(f"[agent] catalog {config.catalog}: {exc.strerror or exc}") from None
    if config.provider not in catalog.providers:
        raise ValidationError(f"[agent] provider {config.provider!r} is not in the catalog {sorted(catalog.providers)}")
    if not catalog.provider_fields(config.provider):
        raise ValidationError(f"catalog declares no fields for provider {config.provider!r}")
    try:
        credentials = load_party(config.credentials, ca_cert=config.ca_cert)
    except SignatureError:
        raise ValidationError(
            f"credentials in {config.credentials}: binding.pb is not signed by the CA in {config.ca_cert} "
            "or is outside its validity window"
        ) from None
    except OSError as exc:
        raise ValidationError(f"credentials in {config.credentials}: {exc.strerror or exc}") from None
    if credentials.role != "provider":
        raise ValidationError(f"credentials in {config.credentials} are for role {credentials.role!r}, not provider")
    if credentials.binding.provider != config.provider:
        raise ValidationError(
            f"credentials in {config.credentials} are bound to provider {credentials.binding.provider!r}, "
            f"not {config.provider!r}"
        )
    return AgentSetup(config=config, catalog=catalog, credentials=credentials)


def load_agent(path: str | Path) -> AgentSetup:
    return prepare(load_config(path))
