"""``xinrong node``: serve, check the audit chain, inspect consents.

    xinrong node init --keys-dir keys --provider tax=HOST:PORT --institution bank-a --out node.toml
    xinrong node serve --config node.toml [--port-file PATH]
    xinrong node db migrate --config node.toml
    xinrong node audit verify --config node.toml
    xinrong node audit key --config node.toml
    xinrong node audit checkpoint --config node.toml
    xinrong node audit prove --config node.toml --index N [--size S] | --consistency OLD NEW
    xinrong node audit reconcile --config node.toml --agent-export FILE [--agent-export FILE ...]
    xinrong node audit tail --config node.toml [-n N]
    xinrong node consents list --config node.toml
    xinrong node models list --config node.toml [--state failed]
    xinrong node institutions add|list|show|suspend|resume|assess|due|quota|usage --config node.toml ...

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


def _node_note_key(config_path: str) -> tuple[str, bytes]:
    """(log origin, Ed25519 public key) from the node's own CA-checked binding (no private key read)."""
    from xinrong.keys.binding import verify_binding
    from xinrong.keys.ca import CaVerifier
    from xinrong.keys.layout import read_binding_file
    from xinrong.node.tlog import origin_of

    config = load_config(config_path)
    ca = CaVerifier(Path(config.ca_cert).read_bytes())
    binding = verify_binding(ca, read_binding_file(Path(config.credentials) / "binding.pb"), expect_role="node")
    return origin_of(binding.party_id), binding.verify_key.raw


def _reader(conn: Any) -> Any:
    from xinrong.node.audit import dialect_sql
    from xinrong.node.tlog import TreeReader

    return TreeReader(lambda sql, params: list(conn.execute(dialect_sql(conn, sql), tuple(params)).fetchall()))


def _audit_verify(args: argparse.Namespace) -> int:
    from xinrong.node.audit import dialect_sql
    from xinrong.node.tlog import verify_log

    origin, public_raw = _node_note_key(args.config)
    conn = _open_db(args.config)
    with closing(conn):
        report = verify_chain(conn)
        pending = _pending(conn)
        tree = verify_log(
            lambda sql, p: list(conn.execute(dialect_sql(conn, sql), tuple(p)).fetchall()), origin, public_raw
        )
    if report.ok and tree.ok:
        waiting = f"; {pending} decisions waiting for the sequencer" if pending else ""
        print(
            f"audit log OK: {tree.size} leaves, Merkle root {tree.root}, signed checkpoint of {tree.checkpoint_size} "
            f"matches the recomputed tree ({origin})"
        )
        print(f"audit chain OK: {report.entries} entries, head {report.head or '-'}{waiting}")
        return 0
    if report.ok:
        print(
            f"audit log BROKEN: {tree.problem} ({tree.size} leaves recomputed, checkpoint {tree.checkpoint_size})",
            file=sys.stderr,
        )
        return 1
    print(
        f"audit chain BROKEN at seq {report.first_bad_seq}: {report.problem} "
        f"({report.entries} entries verified before it, last good head {report.head})",
        file=sys.stderr,
    )
    return 1


def _audit_key(args: argparse.Namespace) -> int:
    from xinrong.tlog.note import verifier_key

    origin, public_raw = _node_note_key(args.config)
    print(verifier_key(origin, public_raw))
    return 0


def _audit_checkpoint(args: argparse.Namespace) -> int:
    conn = _open_db(args.config)
    with closing(conn):
        latest = _reader(conn).latest()
    if latest is None:
        print("no checkpoint signed yet (the node signs one when its log has entries)", file=sys.stderr)
        return 1
    sys.stdout.write(latest.note)
    return 0


def _audit_prove(args: argparse.Namespace) -> int:
    import base64

    def b64(items: list[bytes]) -> list[str]:
        return [base64.b64encode(h).decode() for h in items]

    conn = _open_db(args.config)
    with closing(conn):
        reader = _reader(conn)
        latest = reader.latest()
        size = reader.size()
        if args.consistency:
            old, new = args.consistency
            if not 0 < old <= new <= size:
                print(f"no consistency proof from {old} to {new} (the tree has {size} leaves)", file=sys.stderr)
                return 2
            print(json.dumps({"size1": old, "size2": new, "proof": b64(reader.consistency(old, new))}))
            return 0
        tree_size = args.size or (latest.size if latest else 0)
        if args.index is None or not 0 <= args.index < tree_size <= size:
            print(f"leaf {args.index} is not in a tree of {tree_size} (signed checkpoint)", file=sys.stderr)
            return 2
        doc = {
            "leaf_index": args.index,
            "tree_size": tree_size,
            "leaf_hash": base64.b64encode(reader.leaf_hash(args.index)).decode(),
            "proof": b64(reader.inclusion(args.index, tree_size)),
        }
    print(json.dumps(doc))
    return 0


def _audit_reconcile(args: argparse.Namespace) -> int:
    from xinrong.node.reconcile import reconcile

    config = load_config(args.config)
    exports = [json.loads(Path(path).read_text()) for path in args.agent_export]
    conn = _open_db(args.config)
    with closing(conn):
        report = reconcile(conn, config, exports)
    print(json.dumps(report.to_json(), sort_keys=True))
    return 0 if report.mismatches == 0 else 1


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
                        "valid_until": iso_time(consent.valid_until),
                        "pending_revocation_pushes": sorted(pushes.get(cid, [])),
                    },
                    sort_keys=True,
                )
            )
    return 0


def iso_time(seconds: int) -> str:
    """ISO text of a Unix time; the bare number if it is outside what a
    datetime holds (consents stored before the node bounded timestamps)."""
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def _index_show(args: argparse.Namespace) -> int:
    from xinrong.index import load_index

    index = load_index(args.index) if args.index else load_index()
    print(json.dumps(index.to_json(), ensure_ascii=False, indent=None if args.compact else 2))
    return 0


def _whitelist_threshold(args: argparse.Namespace) -> int:
    """The published whitelist rule: the config's threshold against the index's grades."""
    from xinrong.index import default_index

    config = load_config(args.config)
    index = default_index()
    grades = [g.name for g in index.grades]
    if config.whitelist_min_grade not in grades:
        raise ValueError(
            f"[node].whitelist_min_grade {config.whitelist_min_grade!r} is not a grade of the index {grades}"
        )
    cut = next(g.min_score for g in index.grades if g.name == config.whitelist_min_grade)
    doc = {
        "min_grade": config.whitelist_min_grade,
        "min_score": cut,
        "grades_meeting_it": grades[: grades.index(config.whitelist_min_grade) + 1],
        "valid_days": config.whitelist_valid_days,
        "index_version": index.version,
        "rule": "latest evaluation grade at or above min_grade, evaluated within valid_days, and an active "
        "financing demand with an active matching consent naming the institution",
    }
    print(json.dumps(doc, ensure_ascii=False, indent=2))
    return 0


def _whitelist_list(args: argparse.Namespace) -> int:
    """Current whitelist entries (who was pushed what), one JSON line each; no grade or score."""
    conn = _open_db(args.config)
    with closing(conn):
        rows = conn.execute(
            "SELECT enterprise, institution, demand_id, valid_until FROM whitelist ORDER BY enterprise, institution"
        ).fetchall()
    for enterprise, institution, demand_id, valid_until in rows:
        print(
            json.dumps(
                {
                    "enterprise": enterprise,
                    "institution": institution,
                    "demand_id": demand_id,
                    "valid_until": valid_until,
                }
            )
        )
    return 0


def _cases(args: argparse.Namespace) -> int:
    """Open and overdue objections and repair applications per provider (counts only, asked live)."""
    from xinrong.keys.layout import load_party
    from xinrong.node.subject import case_stats_from_config

    config = load_config(args.config)
    creds = load_party(config.credentials, ca_cert=config.ca_cert)
    stats = case_stats_from_config(tuple(config.providers), creds, config.agent_timeout_seconds)
    doc = {
        name: None
        if s is None
        else {
            "open_objections": s.open_objections,
            "overdue_objections": s.overdue_objections,
            "open_repairs": s.open_repairs,
            "overdue_repairs": s.overdue_repairs,
        }
        for name, s in stats.items()
    }
    print(json.dumps({"providers": doc, "overdue": sum(s.overdue_objections for s in stats.values() if s)}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from xinrong.keys.layout import load_party
    from xinrong.node.config import load_config
    from xinrong.node.evaluation import check_period, default_period, run_evaluation

    config = load_config(args.config)
    creds = load_party(config.credentials, ca_cert=config.ca_cert)
    summary = run_evaluation(config, creds, check_period(args.period or default_period()))
    print(json.dumps(summary.to_json(), ensure_ascii=False))
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

    evaluate = sub.add_parser(
        "evaluate", help="full-coverage evaluation of every registered enterprise for a period (all agents up)"
    )
    evaluate.add_argument("--config", required=True, help="node TOML config (agents, credentials, evaluation_dir)")
    evaluate.add_argument("--period", default="", help="period label, e.g. 2026-12 (default: this UTC month)")
    evaluate.set_defaults(func=_evaluate)

    audit_p = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit_p.add_subparsers(dest="audit_verb", metavar="COMMAND")
    audit_sub.required = True
    verify = audit_sub.add_parser("verify", help="recompute the Merkle log and match its signed checkpoint")
    verify.add_argument("--config", required=True, help="node TOML config (its database is opened read-only)")
    verify.set_defaults(func=_audit_verify)
    key_p = audit_sub.add_parser("key", help="print the node's checkpoint verifier key (C2SP note key)")
    key_p.add_argument("--config", required=True, help="node TOML config")
    key_p.set_defaults(func=_audit_key)
    cp_p = audit_sub.add_parser("checkpoint", help="print the newest signed checkpoint, as served")
    cp_p.add_argument("--config", required=True, help="node TOML config (its database is opened read-only)")
    cp_p.set_defaults(func=_audit_checkpoint)
    prove_p = audit_sub.add_parser("prove", help="print an inclusion or consistency proof as JSON")
    prove_p.add_argument("--config", required=True, help="node TOML config (its database is opened read-only)")
    prove_p.add_argument("--index", type=int, help="leaf index to prove")
    prove_p.add_argument("--size", type=int, default=0, help="tree size (default: the newest checkpoint's)")
    prove_p.add_argument("--consistency", type=int, nargs=2, metavar=("OLD", "NEW"), help="consistency proof")
    prove_p.set_defaults(func=_audit_prove)
    rec_p = audit_sub.add_parser("reconcile", help="match ALLOWED entries with the agents' signed answer logs")
    rec_p.add_argument("--config", required=True, help="node TOML config (its database is opened read-only)")
    rec_p.add_argument(
        "--agent-export",
        action="append",
        required=True,
        metavar="FILE",
        help="an agent's signed answer log (xinrong agent audit export); repeatable",
    )
    rec_p.set_defaults(func=_audit_reconcile)
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

    cases_p = sub.add_parser("cases", help="enterprises' objections and repairs open / overdue at each provider")
    cases_p.add_argument("--config", required=True, help="node TOML config")
    cases_p.set_defaults(func=_cases)

    wl_p = sub.add_parser("whitelist", help="the whitelist of good-credit enterprises pushed to banks")
    wl_sub = wl_p.add_subparsers(dest="whitelist_verb", metavar="COMMAND")
    wl_sub.required = True
    p_thr = wl_sub.add_parser("threshold", help="print the published whitelist threshold (JSON)")
    p_thr.add_argument("--config", required=True, help="node TOML config")
    p_thr.set_defaults(func=_whitelist_threshold)
    p_wl = wl_sub.add_parser("list", help="current entries: enterprise, institution, demand, valid-until")
    p_wl.add_argument("--config", required=True, help="node TOML config (its database is opened read-only)")
    p_wl.set_defaults(func=_whitelist_list)

    index_p = sub.add_parser("index", help="the SME credit-evaluation index the platform publishes")
    index_sub = index_p.add_subparsers(dest="index_verb", metavar="COMMAND")
    index_sub.required = True
    show = index_sub.add_parser("show", help="print the published index definition (JSON)")
    show.add_argument("--index", help="an index file instead of the packaged one")
    show.add_argument("--compact", action="store_true", help="one JSON line")
    show.set_defaults(func=_index_show)

    from xinrong.node.modeling_cli import register_cli as register_models

    register_models(sub)
    from xinrong.node.institutions_cli import register_cli as register_institutions

    register_institutions(sub)

    from xinrong.node.products_cli import register_cli as register_matching

    register_matching(sub)
