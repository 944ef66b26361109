"""``xinrong agent ...``: import a provider CSV, serve, show status.

    xinrong agent init   --provider tax --keys-dir keys --bind HOST:PORT --out agent-tax.toml
    xinrong agent import --config agent.toml --csv tax.csv [--allow-older]
    xinrong agent serve  --config agent.toml [--port-file PATH]
    xinrong agent info   --config agent.toml [--json]
    xinrong agent publish --config agent.toml --node HOST:PORT [--json]
    xinrong agent objections list|resolve|evidence --config agent.toml [--id X --corrected | --rejected --reason R | --out DIR]
    xinrong agent repairs list|approve|reject|evidence --config agent.toml [--id X [--effective DATE] [--reason R] [--out DIR]]

Every command validates the whole config (catalog, credentials, binding)
before doing anything, and prints errors plainly: a rejected import lists
every problem with its line number, and exits non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from xinrong.config import ConfigError
from xinrong.provider_agent.config import AgentSetup, load_agent, render_template
from xinrong.provider_agent.importer import import_csv
from xinrong.provider_agent.server import serve
from xinrong.provider_agent.store import DataStore
from xinrong.provider_agent.subject import (
    APPROVED,
    CORRECTED,
    OBJECTION,
    OPEN,
    REJECTED,
    REPAIR,
    SubjectStore,
    current_cell_sha256,
    subject_db_path,
)
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


def _publish(setup: AgentSetup, args: argparse.Namespace) -> int:
    from xinrong.provider_agent.publish import publish

    report = publish(setup, args.node)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        print(
            f"{report.provider}: {report.outcome}, period {report.period or '-'}, {report.batches} batches "
            f"({report.already_applied} already applied), {report.records_changed} changes, "
            f"node version {report.version}"
        )
    return 0


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


# -- the enterprises' objections and repair applications (xinrong.provider_agent.subject) --


def _subject_store(setup: AgentSetup) -> SubjectStore:
    cfg = setup.config
    return SubjectStore(subject_db_path(cfg.state_db), deadline_days=cfg.objection_deadline_days)


def _list_cases(setup: AgentSetup, args: argparse.Namespace, kind: int) -> int:
    store = _subject_store(setup)
    try:
        cases = store.cases(kind=kind)
    finally:
        store.close()
    if args.open:
        cases = [c for c in cases if c.state == OPEN]
    doc = {"cases": [c.summary() for c in cases], "overdue": sum(1 for c in cases if c.overdue)}
    print(json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=None if args.json else 2))
    return 0


def _resolve(setup: AgentSetup, args: argparse.Namespace) -> int:
    """An upheld objection is corrected by a normal re-import of the value (xinrong agent import)."""
    if args.corrected == args.rejected:
        raise ConfigError("give exactly one of --corrected or --rejected")
    if args.rejected and not args.reason:
        raise ConfigError("a rejection needs --reason")
    state = CORRECTED if args.corrected else REJECTED
    store = _subject_store(setup)
    try:
        case = store.resolve(args.id, kind=OBJECTION, state=state, reason=args.reason or "")
    finally:
        store.close()
    print(json.dumps(case.summary(), ensure_ascii=False, sort_keys=True))
    return 0


def _export_evidence(setup: AgentSetup, args: argparse.Namespace, kind: int) -> int:
    """The case's evidence file and signed filing, written for the provider's review."""
    store = _subject_store(setup)
    try:
        doc = store.export_case(args.id, kind=kind, out_dir=Path(args.out))
    finally:
        store.close()
    print(
        json.dumps(
            {k: doc[k] for k in ("case_id", "evidence_file", "evidence_bytes", "evidence_sha256", "manifest_file")},
            ensure_ascii=False,
            sort_keys=True,
        )
    )
    return 0


def _decide_repair(setup: AgentSetup, args: argparse.Namespace, approve: bool) -> int:
    store = _subject_store(setup)
    try:
        if approve:
            case = next((c for c in store.cases(kind=REPAIR) if c.case_id == args.id), None)
            if case is None:
                raise ConfigError(f"no repair application with id {args.id}")
            data = DataStore(setup.config.db, setup.config.provider)
            try:
                value_sha = current_cell_sha256(data, setup.catalog, case.enterprise, case.field)
            finally:
                data.close()
            effective = args.effective or dt.datetime.now(dt.UTC).date().isoformat()
            dt.date.fromisoformat(effective)
            result = store.resolve(
                args.id,
                kind=REPAIR,
                state=APPROVED,
                reason=args.reason or "",
                effective_date=effective,
                value_sha256=value_sha,
            )
        else:
            if not args.reason:
                raise ConfigError("a rejection needs --reason")
            result = store.resolve(args.id, kind=REPAIR, state=REJECTED, reason=args.reason)
    finally:
        store.close()
    print(json.dumps(result.summary(), ensure_ascii=False, sort_keys=True))
    return 0


def _repair_decision(setup: AgentSetup, args: argparse.Namespace, *, approve: bool) -> int:
    return _decide_repair(setup, args, approve)


def _register_cases(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("objections", help="enterprises' objections (异议申诉): list, resolve")
    gsub = group.add_subparsers(dest="objections_cmd", metavar="COMMAND")
    gsub.required = True
    p = gsub.add_parser("list", help="objections with state; open ones past the deadline are overdue")
    p.add_argument("--config", required=True, help="agent TOML config")
    p.add_argument("--open", action="store_true", help="only open objections")
    p.add_argument("--json", action="store_true", help="one JSON line")
    p.set_defaults(func=_with_setup(lambda s, a: _list_cases(s, a, OBJECTION)))
    p = gsub.add_parser("resolve", help="close an objection: --corrected (after re-importing) or --rejected --reason")
    p.add_argument("--config", required=True, help="agent TOML config")
    p.add_argument("--id", required=True, help="objection id")
    p.add_argument("--corrected", action="store_true", help="the value was wrong and has been re-imported")
    p.add_argument("--rejected", action="store_true", help="the value stands")
    p.add_argument("--reason", help="why (required with --rejected)")
    p.set_defaults(func=_with_setup(_resolve))
    _register_evidence(gsub, "objection", OBJECTION)

    group = sub.add_parser("repairs", help="credit-repair applications (信用修复): list, approve, reject")
    gsub = group.add_subparsers(dest="repairs_cmd", metavar="COMMAND")
    gsub.required = True
    p = gsub.add_parser("list", help="repair applications with state")
    p.add_argument("--config", required=True, help="agent TOML config")
    p.add_argument("--open", action="store_true", help="only open applications")
    p.add_argument("--json", action="store_true", help="one JSON line")
    p.set_defaults(func=_with_setup(lambda s, a: _list_cases(s, a, REPAIR)))
    for name, approve in (("approve", True), ("reject", False)):
        p = gsub.add_parser(
            name,
            help="approve: the item answers NO_DATA from --effective on" if approve else "reject with --reason",
        )
        p.add_argument("--config", required=True, help="agent TOML config")
        p.add_argument("--id", required=True, help="application id")
        p.add_argument("--reason", help="why (required to reject)")
        if approve:
            p.add_argument("--effective", help="YYYY-MM-DD from which the item is hidden (default today, UTC)")
        p.set_defaults(func=_with_setup(functools.partial(_repair_decision, approve=approve)))
    _register_evidence(gsub, "application", REPAIR)


def _register_evidence(gsub: argparse._SubParsersAction, noun: str, kind: int) -> None:  # type: ignore[type-arg]
    p = gsub.add_parser("evidence", help=f"export the {noun}'s evidence file and the enterprise's signed filing")
    p.add_argument("--config", required=True, help="agent TOML config")
    p.add_argument("--id", required=True, help=f"{noun} id")
    p.add_argument("--out", required=True, help="directory to write <id>-<name> and <id>.json into (never overwrites)")
    p.set_defaults(func=_with_setup(functools.partial(_export_evidence, kind=kind)))


def _answer_doc(setup: AgentSetup) -> dict[str, object]:
    from contextlib import closing

    from xinrong.provider_agent.store import answer_export, open_state_readonly
    from xinrong.tlog.client import answers_origin
    from xinrong.tlog.note import verifier_key

    cfg = setup.config
    with closing(open_state_readonly(cfg.state_db)) as conn:
        latest, entries = answer_export(conn)
    origin = answers_origin(setup.credentials.party_id)
    return {
        "provider": cfg.provider,
        "origin": origin,
        "verifier_key": verifier_key(origin, setup.credentials.signing_key.public_raw),
        "checkpoint": latest.note if latest else "",
        "entries": entries,
    }


def _audit_export(setup: AgentSetup, args: argparse.Namespace) -> int:
    """The agent's signed answer log (metadata only), for ``xinrong node audit reconcile``."""
    text = json.dumps(_answer_doc(setup), sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def _audit_checkpoint(setup: AgentSetup, args: argparse.Namespace) -> int:
    note = str(_answer_doc(setup)["checkpoint"])
    if not note:
        print("no checkpoint of the answer log yet", file=sys.stderr)
        return 1
    sys.stdout.write(note)
    return 0


def _audit_witness(setup: AgentSetup, args: argparse.Namespace) -> int:
    """What this agent holds of the node's log; with --node, fetch and check the newest first."""
    from xinrong.tlog.witness import Witness, held_summary

    path = Path(setup.config.state_db).parent / "witness.json"
    if args.node:
        from xinrong.keys.binding import verify_binding
        from xinrong.keys.layout import read_binding_file
        from xinrong.rpc.channel import secure_channel
        from xinrong.tlog.client import LogClient, audit_origin
        from xinrong.v1 import transparency_pb2_grpc

        if not args.node_binding:
            raise ConfigError("--node needs --node-binding FILE (the node's CA-signed binding)")
        node_id = setup.config.node_id
        binding = verify_binding(
            setup.credentials.ca, read_binding_file(args.node_binding), expect_role="node", expect_party_id=node_id
        )
        channel = secure_channel(args.node, setup.credentials, server_role="node", server_id=node_id)
        try:
            stub = transparency_pb2_grpc.TransparencyServiceStub(channel)
            LogClient(stub, audit_origin(node_id), binding.verify_key.raw, Witness(path)).checkpoint()
        finally:
            channel.close()
    print(json.dumps(held_summary(path), indent=2))
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

    p = sub.add_parser(
        "publish", help="push the active period's public (aggregate-mode) fields to the node: incremental, idempotent"
    )
    p.add_argument("--config", required=True, help="agent TOML config")
    p.add_argument("--node", required=True, help="node address host:port")
    p.add_argument("--json", action="store_true", help="one JSON line")
    p.set_defaults(func=_with_setup(_publish))
    _register_cases(sub)

    audit = sub.add_parser("audit", help="the agent's own answer log, and what it holds of the node's")
    asub = audit.add_subparsers(dest="audit_command", metavar="COMMAND")
    asub.required = True
    p = asub.add_parser("export", help="the signed answer log as JSON (for xinrong node audit reconcile)")
    p.add_argument("--config", required=True, help="agent TOML config")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=_with_setup(_audit_export))
    p = asub.add_parser("checkpoint", help="print the newest signed checkpoint of the answer log")
    p.add_argument("--config", required=True, help="agent TOML config")
    p.set_defaults(func=_with_setup(_audit_checkpoint))
    p = asub.add_parser("witness", help="the newest checkpoint of the node's log this agent holds")
    p.add_argument("--config", required=True, help="agent TOML config")
    p.add_argument("--node", default="", help="node address: fetch its newest checkpoint and check it first")
    p.add_argument("--node-binding", default="", help="the node's binding.pb (with --node)")
    p.set_defaults(func=_with_setup(_audit_witness))
