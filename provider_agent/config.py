"""Agent configuration: one TOML file, loaded into a frozen, typed model and
validated before anything binds a port or touches the database.

The file names paths only (credentials directory, CA certificate, database),
never key material. Relative paths resolve against the config file's own
directory, so a deployment directory can be moved as a whole. The one
loader every party uses (``xinrong.config``) refuses unknown tables and
keys and names the nearest valid one: a misspelt ``max_clock_skew_secs``
silently falling back to a default is how a security setting gets lost,
and a ``[modelling]`` table must not be ignored.

    [agent]
    provider = "tax"                    # catalog provider name
    bind = "127.0.0.1:0"                # port 0: ephemeral (tests, demo)
    credentials = "keys/providers/tax"  # keys.layout party directory
    ca_cert = "keys/ca/ca.crt"          # trust anchor (default: <credentials>/ca.crt)
    db = "state/agent-tax.db"           # provider data (periods, records)
    # state_db = "state/agent-tax.state.db"   # serving state; default derived from db
    node_id = "node"                    # the only party id allowed to call
    # node_address = "node.example:7443"  # pull missed revocations and pauses from the node before serving
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

    [metrics]                           # optional: Prometheus metrics, loopback only unless allow_remote
    listen = "127.0.0.1:9465"
    [logging]
    format = "json"                     # or "text" (the default)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from xinrong import ids
from xinrong.catalog import Catalog, load_catalog
from xinrong.config import ConfigError, ConfigPath, Section, parse_file, read_toml
from xinrong.errors import SignatureError
from xinrong.keys.ca import check_party_id
from xinrong.keys.layout import PartyCredentials, load_party
from xinrong.rpc.observe import LoggingConfig, MetricsConfig


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _party_id(value: str) -> str:
    check_party_id(value.strip())
    return value.strip()


def _bind(value: str) -> str:
    host, sep, port = value.rpartition(":")
    number = ids.decimal(port, max_digits=5)
    if not sep or not host or number is None or number > 65535:
        raise ValueError(f"bind {value!r} must look like HOST:PORT")
    return value


def _file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    return path


def _array(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


Text = Annotated[str, AfterValidator(_text)]
PartyId = Annotated[str, AfterValidator(_party_id)]


class ModelingConfig(Section):
    """The optional ``[modeling]`` table: who may run joint-modeling jobs with this provider, on what data.

    ``dataset`` (a CSV with an ``id`` column and numeric feature columns)
    replaces the active period's catalog fields as the features, for the
    real-data benchmark. ``dir`` holds each job's alignment, checkpoints and
    the provider's model share, on the provider's own disk (default: next
    to the data file).
    """

    enabled: bool = False
    allowed_institutions: Annotated[tuple[PartyId, ...], BeforeValidator(_array)] = ()
    dataset: Annotated[ConfigPath, AfterValidator(_file)] | None = None
    dir: ConfigPath | None = None
    allow_insecure: bool = False


class AgentConfig(Section):
    """Validated settings of one provider agent (paths already absolute)."""

    MAIN = ("agent",)

    provider: Text
    bind: Annotated[str, AfterValidator(_bind)]
    credentials: ConfigPath
    ca_cert: ConfigPath  # trust anchor; default: <credentials>/ca.crt
    db: ConfigPath
    state_db: ConfigPath  # serving state; default derived from db (``default_state_db``)
    node_id: PartyId = "node"
    # Where the agent pulls pending revocations and pauses from before it serves (issue 10, A13);
    # unset: it relies on the node's pushes alone.
    node_address: Annotated[str, AfterValidator(_bind)] | None = None
    verdict_ttl_seconds: int = Field(86400, ge=60, le=366 * 86400)
    max_clock_skew_seconds: int = Field(300, ge=1, le=3600)
    catalog: ConfigPath | None = None
    max_workers: int = Field(16, ge=1, le=256)
    # An objection open longer than this is flagged overdue (policy practice: a few working days).
    objection_deadline_days: float = Field(5.0, gt=0, le=365)
    modeling: ModelingConfig = ModelingConfig()
    # Operating: Prometheus metrics on a local port (off by default) and the log format.
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """Defaults that depend on other keys, filled in as if written (paths still relative)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("credentials"), str) and "ca_cert" not in data:
            data["ca_cert"] = str(Path(data["credentials"]) / "ca.crt")
        db = data.get("db")
        if isinstance(db, str) and db.strip():
            data.setdefault("state_db", str(default_state_db(Path(db))))
            modeling = data.get("modeling", {})
            if isinstance(modeling, dict) and "dir" not in modeling:
                data["modeling"] = {**modeling, "dir": str(Path(db).with_name(f"{Path(db).stem}.modeling"))}
        return data

    @model_validator(mode="after")
    def _distinct(self) -> AgentConfig:
        if self.state_db == self.db:
            raise ValueError("[agent] state_db must differ from db")
        return self


@dataclass(frozen=True)
class AgentSetup:
    """A config plus what it points at, loaded and cross-checked: the catalog
    and the provider's own credentials (whose CA-signed binding must name
    this provider, so an agent cannot sign as another provider by mistake)."""

    config: AgentConfig
    catalog: Catalog
    credentials: PartyCredentials


def default_state_db(db: Path) -> Path:
    """Serving state lives in its own SQLite file next to the data file, so a
    long import (which holds the data file's write lock) never blocks the
    replay and use-count writes of a running agent."""
    suffix = db.suffix or ".db"
    return db.with_name(f"{db.stem if db.suffix else db.name}.state{suffix}")


def parse_config(doc: dict[str, Any], base: Path) -> AgentConfig:
    """Structural validation of an already-parsed TOML document."""
    if not isinstance(doc.get("agent"), dict):
        raise ConfigError("config needs an [agent] table")
    return parse_file(AgentConfig, doc, base=base)


def load_config(path: str | Path) -> AgentConfig:
    """Read and structurally validate a config file."""
    doc, resolved = read_toml(path)
    return parse_config(doc, resolved.parent)


def prepare(config: AgentConfig) -> AgentSetup:
    """Load the catalog and credentials and check they fit the config."""
    try:
        catalog = load_catalog(config.catalog)
    except OSError as exc:
        raise ConfigError(f"[agent] catalog {config.catalog}: {exc.strerror or exc}") from None
    if config.provider not in catalog.providers:
        raise ConfigError(f"[agent] provider {config.provider!r} is not in the catalog {sorted(catalog.providers)}")
    if not catalog.provider_fields(config.provider):
        raise ConfigError(f"catalog declares no fields for provider {config.provider!r}")
    try:
        credentials = load_party(config.credentials, ca_cert=config.ca_cert)
    except SignatureError:
        raise ConfigError(
            f"credentials in {config.credentials}: binding.pb is not signed by the CA in {config.ca_cert} "
            "or is outside its validity window"
        ) from None
    except OSError as exc:
        raise ConfigError(f"credentials in {config.credentials}: {exc.strerror or exc}") from None
    if credentials.role != "provider":
        raise ConfigError(f"credentials in {config.credentials} are for role {credentials.role!r}, not provider")
    if credentials.binding.provider != config.provider:
        raise ConfigError(
            f"credentials in {config.credentials} are bound to provider {credentials.binding.provider!r}, "
            f"not {config.provider!r}"
        )
    return AgentSetup(config=config, catalog=catalog, credentials=credentials)


def load_agent(path: str | Path) -> AgentSetup:
    return prepare(load_config(path))


def render_template(
    *,
    out: Path,
    provider: str,
    keys_dir: Path,
    bind: str,
    db: Path | None = None,
    modeling_for: tuple[str, ...] = (),
) -> str:
    """A commented agent config (``xinrong agent init``); paths relative to ``out``'s folder."""
    base = out.resolve().parent

    def rel(path: Path) -> str:
        return os.path.relpath(path.resolve(), base)

    db = db or base / "state" / f"agent-{provider}.db"
    institutions = ", ".join(f'"{i}"' for i in modeling_for)
    return f"""# xinrong provider agent for {provider!r}, written by `xinrong agent init`.
# Paths are relative to this file. Secrets are paths to key files, never values.
# `xinrong agent import --config THIS --csv EXPORT.csv` loads a data period;
# `xinrong agent serve --config THIS` serves the node (and only the node).

[agent]
provider = "{provider}"                  # the catalog provider this agent answers for
bind = "{bind}"                  # where the node reaches this agent (port 0: any free port)
credentials = "{rel(keys_dir / "providers" / provider)}"   # the provider's keys (xinrong keys init / issue)
ca_cert = "{rel(keys_dir / "ca" / "ca.crt")}"           # trust anchor: the platform CA certificate
db = "{rel(db)}"                # the provider's data: imported periods, created 0600
# state_db = "..."                     # serving state (replay ids, uses); default: beside db
node_id = "node"                       # the only party allowed to call this agent
# node_address = "host:port"           # pull missed revocations and pauses from the node before serving
verdict_ttl_seconds = 86400            # how long a signed verdict stays valid for the bank
max_clock_skew_seconds = 300           # requests further off the agent's clock are refused
# catalog = "catalog.toml"             # default: the packaged shared-information catalog
# max_workers = 16                     # gRPC handler threads

[modeling]                             # joint modeling (联合建模): off unless enabled
enabled = {"true" if modeling_for else "false"}
allowed_institutions = [{institutions}]      # institutions whose jobs this provider joins
# dir = "..."                          # alignment, checkpoints, model shares; default: beside db

# [metrics]                            # Prometheus metrics on a local port (off unless listen is set)
# listen = "127.0.0.1:9465"            # loopback only unless allow_remote = true
# [logging]
# format = "json"                      # one JSON object per line (default "text")
"""
