"""``xinrong agent ...``: import a provider CSV, serve, show status.

    xinrong agent init   --provider tax --keys-dir keys --bind HOST:PORT --out agent-tax.toml
    xinrong agent import --config agent.toml --csv tax.csv [--allow-older]
    xinrong agent serve  --config agent.toml [--port-file PATH]
    xinrong agent info   --config agent.toml [--json]

Every command validates the whole config (catalog, credentials, binding)
before doing anything, and prints errors plainly: a rejected import lists
every problem with its line number, and exits non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

from xinrong.config import ConfigError
from xinrong.provider_agent.config import AgentSetup, load_agent, render_template
from xinrong.provider_agent.importer import import_csv
from xinrong.provider_agent.server import serve
from xinrong.provider_agent.store import DataStore
from xinrong.rpc.observe import add_cli_flags, apply_cli_flags


def _with_setup(run: Callable[[AgentSetup, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Every command validates the whole config (catalog, credentials, binding) first."""

    def wrapped(args: argparse.Namespace) -> int:
        return run(load_agent(args.config), args)

    return wrapped


def _init(args: argparse.Namespace) -> int:
    """Write a commented config that loads as written (checked before it is kept)."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; use --force to replace it")
    text = render_template(
        out=out,
        provider=args.provider,
        keys_dir=Path(args.keys_dir),
        bind=args.bind,
        db=Path(args.db) if args.db else None,
        modeling_for=tuple(args.modeling_for),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    try:
        setup = load_agent(tmp)
        setup.config.db.parent.mkdir(parents=True, exist_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    print(f"wrote {out}: agent {args.provider} on {args.bind}")
    return 0


def _import(setup: AgentSetup, args: argparse.Namespace) -> int:
    cfg = setup.config
    store = DataStore(cfg.db, cfg.provider)
    try:
        result = import_csv(store, setup.catalog, cfg.provider, args.csv, allow_older=args.allow_older)
    finally:
        store.close()
    replaced = f", replacing period {result.previous_as_of}" if result.previous_as_of else ""
    print(
        f"imported {result.rows} enterprises for {result.provider} as of {result.as_of}{replaced} "
        f"in {result.seconds:.1f}s (sha256 {result.sha256})"
    )
    return 0


def _serve(setup: AgentSetup, args: argparse.Namespace) -> int:
    setup = dataclasses.replace(setup, config=apply_cli_flags(setup.config, args))
    return serve(
        setup,
        port_file=Path(args.port_file) if args.port_file else None,
        metrics_port_file=Path(args.metrics_port_file) if args.metrics_port_file else None,
    )


def _info(setup: AgentSetup, args: argparse.Namespace) -> int:
    cfg = setup.config
    store = DataStore(cfg.db, cfg.provider)
    try:
        active = store.active_period()
        periods = store.periods()
    finally:
        store.close()
    doc = {
        "provider": cfg.provider,
        "party_id": setup.credentials.party_id,
        "key_id": setup.credentials.signing_key.key_id,
        "data_as_of": active.as_of if active else "",
        "enterprises": active.rows if active else 0,
        "imported_at": active.imported_at if active else 0,
        "sha256": active.sha256 if active else "",
        "periods_imported": len(periods),
    }
    if args.json:
        print(json.dumps(doc, sort_keys=True))
    elif active is None:
        print(f"{cfg.provider}: no data imported yet (health stays NOT_SERVING)")
    else:
        print(
            f"{cfg.provider}: active period {active.as_of}, {active.rows} enterprises, "
            f"file sha256 {active.sha256}, {len(periods)} imports so far, signing key {doc['key_id']}"
        )
    return 0


def register_cli(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="agent_command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("init", help="write a commented agent config for an existing keys directory")
    p.add_argument("--provider", required=True, help="catalog provider the agent answers for")
    p.add_argument("--keys-dir", required=True, help="keys directory (xinrong keys init)")
    p.add_argument("--bind", default="127.0.0.1:0", help="address the agent listens on (default: any free port)")
    p.add_argument("--db", help="the provider's data file (default: state/agent-PROVIDER.db beside the config)")
    p.add_argument(
        "--modeling-for", action="append", default=[], metavar="ID", help="enable joint modeling for ID; repeatable"
    )
    p.add_argument("--out", required=True, help="config file to write")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=_init)

    p = sub.add_parser("import", help="validate a provider CSV and make it the active data period")
    p.add_argument("--config", required=True, help="agent TOML config")
    p.add_argument("--csv", required=True, help="CSV export: uscc,as_of and this provider's catalog columns")
    p.add_argument("--allow-older", action="store_true", help="accept an as_of older than the active period")
    p.set_defaults(func=_with_setup(_import))

    p = sub.add_parser("serve", help="serve AgentService over mTLS (only the node may call)")
    p.add_argument("--config", required=True, help="agent TOML config")
    p.add_argument("--port-file", help="write the bound port here once serving (for bind port 0)")
    add_cli_flags(p)
    p.set_defaults(func=_with_setup(_serve))

    p = sub.add_parser("info", help="show the active data period")
    p.add_argument("--config", required=True, help="agent TOML config")
    p.add_argument("--json", action="store_true", help="one JSON line")
    p.set_defaults(func=_with_setup(_info))
