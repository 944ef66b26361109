"""Node config: parsing, validation at start, relative paths, binding checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xinrong.errors import ValidationError
from xinrong.keys.layout import party_dir
from xinrong.node.config import ConfigError, load_config, render_config
from xinrong.node.server import start_node


def _write(
    tmp_path: Path,
    pki: Any,
    *,
    providers: list[tuple[str, str, Path]] | None = None,
    institutions: list[tuple[str, Path]] | None = None,
    extra: str = "",
    **options: object,
) -> Path:
    root = pki.root
    text = render_config(
        bind="127.0.0.1:0",
        credentials=party_dir(root, "node", "node"),
        ca_cert=root / "ca" / "ca.crt",
        db="state/node.db",
        providers=providers
        if providers is not None
        else [("tax", "127.0.0.1:7501", party_dir(root, "provider", "tax") / "binding.pb")],
        institutions=institutions
        if institutions is not None
        else [("bank-a", party_dir(root, "institution", "bank-a") / "binding.pb")],
        **options,
    )
    (tmp_path / "state").mkdir(exist_ok=True)
    path = tmp_path / "node.toml"
    path.write_text(text + extra)
    return path


def test_valid_config_loads_with_defaults_and_relative_paths(tmp_path: Path, pki: Any) -> None:
    config = load_config(_write(tmp_path, pki))
    assert config.db == tmp_path.resolve() / "state" / "node.db"
    assert config.max_clock_skew_seconds == 300
    assert config.agent_timeout_seconds == 5.0
    assert config.max_claims_per_request == 32
    assert config.enterprise_daily_budget == 200
    assert [p.name for p in config.providers] == ["tax"]
    assert [i.id for i in config.institutions] == ["bank-a"]
    tuned = load_config(
        _write(tmp_path, pki, enterprise_daily_budget=5, agent_timeout_seconds=0.5, sqlite_synchronous="full")
    )
    assert (tuned.enterprise_daily_budget, tuned.agent_timeout_seconds, tuned.sqlite_synchronous) == (5, 0.5, "FULL")


@pytest.mark.parametrize(
    ("options", "extra", "message"),
    [
        ({}, "\n[node2]\nx = 1\n", "unknown keys"),
        ({"enterprise_daily_budgte": 5}, "", "unknown"),
        ({"enterprise_daily_budget": 0}, "", ">= 1"),
        ({"max_claims_per_request": "32"}, "", "integer"),
        ({"sqlite_synchronous": "OFF"}, "", "sqlite_synchronous"),
        ({"agent_timeout_seconds": 0}, "", ">= 0.05"),
    ],
)
def test_invalid_options_are_refused(
    tmp_path: Path, pki: Any, options: dict[str, Any], extra: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        if "budgte" in str(options):
            # render_config refuses unknown options itself; write the TOML by hand.
            path = _write(tmp_path, pki)
            path.write_text(path.read_text().replace("[node]\n", "[node]\nenterprise_daily_budgte = 5\n"))
            load_config(path)
        else:
            load_config(_write(tmp_path, pki, extra=extra, **options))


def test_providers_and_institutions_are_validated(tmp_path: Path, pki: Any) -> None:
    tax = party_dir(pki.root, "provider", "tax") / "binding.pb"
    with pytest.raises(ConfigError, match="not catalog providers"):
        load_config(_write(tmp_path, pki, providers=[("bakery", "127.0.0.1:1", tax)]))
    with pytest.raises(ConfigError, match="appears twice"):
        load_config(_write(tmp_path, pki, providers=[("tax", "127.0.0.1:1", tax), ("tax", "127.0.0.1:2", tax)]))
    with pytest.raises(ConfigError, match="host:port"):
        load_config(_write(tmp_path, pki, providers=[("tax", "localhost", tax)]))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_write(tmp_path, pki, providers=[("tax", "127.0.0.1:1", tmp_path / "missing.pb")]))
    with pytest.raises(ConfigError, match="party id"):
        load_config(_write(tmp_path, pki, institutions=[("bank a", tax)]))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_start_refuses_bindings_that_are_not_what_the_config_says(tmp_path: Path, pki: Any) -> None:
    water = party_dir(pki.root, "provider", "water") / "binding.pb"
    bank_b = party_dir(pki.root, "institution", "bank-b") / "binding.pb"
    with pytest.raises(ValidationError, match="provider binding"):
        start_node(load_config(_write(tmp_path, pki, providers=[("tax", "127.0.0.1:1", water)])))
    with pytest.raises(ValidationError, match="institution binding"):
        start_node(load_config(_write(tmp_path, pki, institutions=[("bank-a", bank_b)])))
    tax = party_dir(pki.root, "provider", "tax") / "binding.pb"
    with pytest.raises(ValidationError, match="institution binding"):
        start_node(load_config(_write(tmp_path, pki, institutions=[("bank-a", tax)])))
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xff not a binding")
    with pytest.raises(ValidationError):
        start_node(load_config(_write(tmp_path, pki, providers=[("tax", "127.0.0.1:1", garbage)])))
