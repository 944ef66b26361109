"""``xinrong node``: serve, check the audit chain, inspect consents.

    xinrong node init --keys-dir keys --provider tax=HOST:PORT --institution bank-a --out node.toml
    xinrong node serve --config node.toml [--port-file PATH]
    xinrong node db migrate --config node.toml
    xinrong node audit verify --config node.toml
    xinrong node audit tail --config node.toml [-n N]
    xinrong node consents list --config node.toml
    xinrong node models list --config node.toml [--state failed]

The operator tools open the database read-only, so they are safe beside a
running node. They print metadata only; the node holds nothing else.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

from xinrong.heap import settle_after_start
from xinrong.node.audit import tail, verify_chain
from xinrong.node.config import ConfigError, load_config, render_template
from xinrong.node.db import open_for_tools
from xinrong.serde import consent_state_name
from xinrong.v1 import common_pb2

log = logging.getLogger(__name__)


def _write_port_file(path: Path, port: int) -> None:
    """Atomic write, so a waiting script never reads a half-written port."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{port}\n")
    os.replace(tmp, path)


def _open_db(config_path: str) -> Any:
    """The node's database, read-only (safe beside a running node): SQLite or PostgreSQL."""
    return open_for_tools(load_config(config_path))


def _init(args: argparse.Namespace) -> int:
    """Write a commented config that loads as written (checked before it is kept)."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; use --force to replace it")
    providers = []
    for item in args.provider:
        name, sep, address = item.partition("=")
        if not sep or not name or not address:
            raise ConfigError(f"--provider {item!r}: give NAME=HOST:PORT")
        providers.append((name, address))
    text = render_template(
        out=out,
        keys_dir=Path(args.keys_dir),
        bind=args.bind,
        providers=providers,
        institutions=args.institution,
        db=Path(args.db) if args.db else None,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    try:
        config = load_config(tmp)
        if config.db is not None:
            config.db.parent.mkdir(parents=True, exist_ok=True)
        load_config(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    print(f"wrote {out}: node on {args.bind}, {len(providers)} providers, {len(args.institution)} institutions")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from xinrong.node.server import start_node  # grpc start-up only for this verb
    from xinrong.rpc.observe import apply_cli_flags

    node = start_node(apply_cli_flags(load_config(args.config), args))
    node.server.install_signal_handlers()
    settle_after_start()
    if args.metrics_port_file and node.observer is not None and node.observer.metrics_port:
        _write_port_file(Path(args.metrics_port_file), node.observer.metrics_port)
    if args.port_file:
        _write_port_file(Path(args.port_file), node.port)
    print(f"node serving on port {node.port}", flush=True)
    try:
        node.wait()
    finally:
        node.stop()
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    conn = _open_db(args.config)
    with closing(conn):
        report = verify_chain(conn)
        pending = _pending(conn)
    if report.ok:
        waiting = f"; {pending} decisions waiting for the sequencer" if pending else ""
        print(f"audit chain OK: {report.entries} entries, head {report.head or '-'}{waiting}")
        return 0
    print(
        f"audit chain BROKEN at seq {report.first_bad_seq}: {report.problem} "
        f"({report.entries} entries verified before it, last good head {report.head})",
        file=sys.stderr,
    )
    return 1


def _pending(conn: Any) -> int:
    """Audit events staged by replicas and not yet chained (PostgreSQL only)."""
    if not hasattr(conn, "pgconn"):
        return 0
    return int(conn.execute("SELECT count(*) FROM audit_pending").fetchone()[0])


def _db_migrate(args: argparse.Namespace) -> int:
    """Bring the node's database to this release's schema (PostgreSQL: once, for all replicas)."""
    config = load_config(args.config)
    if config.database is None:
        from xinrong.node.db import Database

        assert config.db is not None
        db = Database(config.db, synchronous=config.sqlite_synchronous)  # SQLite migrates on open
        version = int(db.query("PRAGMA user_version")[0][0])
        db.close()
        print(f"node database {config.db}: schema version {version} (SQLite migrates itself at start)")
        return 0
    from xinrong.node.pg import migrate, redacted

    before, applied = migrate(config.database)
    after = applied[-1] if applied else before
    steps = ", ".join(str(v) for v in applied) if applied else "none"
    print(f"node database {redacted(config.database.url)}: schema version {before} -> {after} (steps applied: {steps})")
    return 0


def _audit_tail(args: argparse.Namespace) -> int:
    conn = _open_db(args.config)
    with closing(conn):
        for entry in tail(conn, args.n):
            print(json.dumps(entry.to_json(), sort_keys=True))
    return 0


def _consents_list(args: argparse.Namespace) -> int:
    conn = _open_db(args.config)
    now = dt.datetime.now(dt.UTC).timestamp()
    with closing(conn):
        pushes: dict[str, list[str]] = {}
        for cid, provider, acked in conn.execute("SELECT consent_id, provider, acked_ms FROM revocation_pushes"):
            if acked is None:
                pushes.setdefault(cid, []).append(provider)
        totals = dict(conn.execute("SELECT consent_id, SUM(uses) FROM consent_daily_uses GROUP BY consent_id"))
        rows = conn.execute(
            "SELECT consent_id, enterprise, grantee, signed, state FROM consents ORDER BY registered_ms"
        ).fetchall()
        for cid, enterprise, grantee, signed_raw, state in rows:
            uses = int(totals.get(cid, 0))
            signed = common_pb2.SignedConsent()
            signed.ParseFromString(bytes(signed_raw))
            consent = common_pb2.Consent()
            consent.ParseFromString(signed.consent)
            shown = state
            if state != common_pb2.CONSENT_STATE_REVOKED and now >= consent.valid_until:
                shown = common_pb2.CONSENT_STATE_EXPIRED
            print(
                json.dumps(
                    {
                        "consent_id": cid,
                        "enterprise": enterprise,
                        "grantee": grantee,
                        "state": consent_state_name(shown),
                        "uses": uses,
                        "max_uses": consent.max_uses,
                        "valid_until": dt.datetime.fromtimestamp(consent.valid_until, dt.UTC).isoformat(),
                        "pending_revocation_pushes": sorted(pushes.get(cid, [])),
                    },
                    sort_keys=True,
                )
            )
    return 0


def _index_show(args: argparse.Namespace) -> int:
    from xinrong.index import load_index

    index = load_index(args.index) if args.index else load_index()
    print(json.dumps(index.to_json(), ensure_ascii=False, indent=None if args.compact else 2))
    return 0


def register_cli(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="node_verb", metavar="COMMAND")
    sub.required = True

    init = sub.add_parser("init", help="write a commented node config for an existing keys directory")
    init.add_argument("--keys-dir", required=True, help="keys directory (xinrong keys init)")
    init.add_argument("--bind", default="127.0.0.1:50051", help="address the node listens on (default 127.0.0.1:50051)")
    init.add_argument(
        "--provider", action="append", default=[], metavar="NAME=HOST:PORT", help="an agent to route to; repeatable"
    )
    init.add_argument(
        "--institution", action="append", default=[], metavar="ID", help="an institution allowed in; repeatable"
    )
    init.add_argument("--db", help="node database (default: state/node.db beside the config)")
    init.add_argument("--out", required=True, help="config file to write")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(func=_init)

    serve = sub.add_parser("serve", help="serve the node over mTLS")
    serve.add_argument("--config", required=True, help="node TOML config")
    serve.add_argument("--port-file", help="write the bound port here once serving (for port 0)")
    from xinrong.rpc.observe import add_cli_flags

    add_cli_flags(serve)
    serve.set_defaults(func=_serve)

    audit_p = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit_p.add_subparsers(dest="audit_verb", metavar="COMMAND")
    audit_sub.required = True
    verify = audit_sub.add_parser("verify", help="check the whole hash chain")
    verify.add_argument("--config", required=True, help="node TOML config (its database is opened read-only)")
    verify.set_defaults(func=_audit_verify)
    tail_p = audit_sub.add_parser("tail", help="print the last entries as JSON lines")
    tail_p.add_argument("--config", required=True, help="node TOML config (its database is opened read-only)")
    tail_p.add_argument("-n", type=int, default=20, help="number of entries (default 20)")
    tail_p.set_defaults(func=_audit_tail)

    db_p = sub.add_parser("db", help="the node's database")
    db_sub = db_p.add_subparsers(dest="db_verb", metavar="COMMAND")
    db_sub.required = True
    migrate_p = db_sub.add_parser("migrate", help="apply the schema steps this release needs (PostgreSQL: run once)")
    migrate_p.add_argument("--config", required=True, help="node TOML config")
    migrate_p.set_defaults(func=_db_migrate)

    consents_p = sub.add_parser("consents", help="consent registry tools")
    consents_sub = consents_p.add_subparsers(dest="consents_verb", metavar="COMMAND")
    consents_sub.required = True
    list_p = consents_sub.add_parser("list", help="registered consents, their state and uses")
    list_p.add_argument("--config", required=True, help="node TOML config (its database is opened read-only)")
    list_p.set_defaults(func=_consents_list)

    index_p = sub.add_parser("index", help="the SME credit-evaluation index the platform publishes")
    index_sub = index_p.add_subparsers(dest="index_verb", metavar="COMMAND")
    index_sub.required = True
    show = index_sub.add_parser("show", help="print the published index definition (JSON)")
    show.add_argument("--index", help="an index file instead of the packaged one")
    show.add_argument("--compact", action="store_true", help="one JSON line")
    show.set_defaults(func=_index_show)

    from xinrong.node.modeling_cli import register_cli as register_models

    register_models(sub)
