"""``xinrong bank``: verify claims, read indicators and score enterprises with a joint model."""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from typing import Any

from xinrong.bank.client import BankClient
from xinrong.consent import parse_consent, read_consent
from xinrong.keys.layout import load_party


def node_connection(args: argparse.Namespace) -> tuple[str, Path]:
    """Node address and credentials from flags, or from a [bank] table in --config."""
    node, creds = args.node, args.credentials
    if args.config:
        doc: dict[str, Any] = tomllib.loads(Path(args.config).read_text())
        table = doc.get("bank", {})
        base = Path(args.config).parent
        node = node or table.get("node", "")
        creds = creds or (str(base / table["credentials"]) if "credentials" in table else "")
    if not node or not creds:
        raise ValueError("give --node and --credentials, or --config with a [bank] table")
    return str(node), Path(creds)


def _witness_path(args: argparse.Namespace, creds: Path) -> Path:
    return Path(getattr(args, "state_dir", "") or creds) / "witness.json"


def _client(args: argparse.Namespace) -> BankClient:
    from xinrong.tlog.witness import Witness

    node, creds = node_connection(args)
    return BankClient(node, load_party(creds), timeout=args.timeout, witness=Witness(_witness_path(args, creds)))


def _proven(client: BankClient) -> dict[str, object]:
    """The audit leaf of the request just made, proven in the node's log (witnessed)."""
    leaf = client.last_audit_leaf
    if leaf is None:
        return {"audit_leaf_index": None, "audit_leaf_proven": False}
    checkpoint = client.prove_access(leaf)
    return {"audit_leaf_index": leaf, "audit_leaf_proven": True, "audit_tree_size": checkpoint.size}


def cmd_audit_witness(args: argparse.Namespace) -> int:
    from xinrong.tlog.witness import SplitView, held_summary

    _node, creds = node_connection(args)
    if args.gossip_from:
        peer = Path(args.gossip_from).read_text()
        with _client(args) as client:
            try:
                print(json.dumps(client.node_log().gossip(peer), sort_keys=True))
            except SplitView as alarm:
                print(json.dumps({"split_view": alarm.evidence()}, sort_keys=True))
                return 2
        return 0
    print(json.dumps(held_summary(_witness_path(args, creds)), indent=2))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    signed = read_consent(args.consent)
    consent_id = parse_consent(signed).consent_id
    with _client(args) as client:
        client.register_consent(signed)  # idempotent: the node may already hold it
        verdicts = client.verify(args.enterprise, args.claim, consent_id)
        audit = _proven(client) if args.prove_audit else {"audit_leaf_index": client.last_audit_leaf}
    if args.json:
        print(
            json.dumps(
                {
                    "enterprise": args.enterprise,
                    "consent_id": consent_id,
                    "verdicts": [v.as_dict() for v in verdicts],
                    **audit,
                },
                ensure_ascii=False,
            )
        )
    else:
        for v in verdicts:
            print(f"{v.result:8s} {v.claim}   [{v.provider}, data as of {v.data_as_of}, signature ok]")
    return 0


def cmd_indicators(args: argparse.Namespace) -> int:
    signed = read_consent(args.consent)
    consent_id = parse_consent(signed).consent_id
    with _client(args) as client:
        client.register_consent(signed)
        queries = []
        for item in args.field:
            field, _, form = item.partition(":")
            spec = client.catalog.field(field)
            if not form:
                allowed = sorted(str(f) for f in spec.forms if f.value != "ladder")
                if not allowed:
                    raise ValueError(f"{field} has no indicator form")
                form = allowed[0]
            queries.append((field, form))
        indicators = client.indicators(args.enterprise, queries, consent_id)
    if args.json:
        print(
            json.dumps(
                {
                    "enterprise": args.enterprise,
                    "consent_id": consent_id,
                    "indicators": [i.as_dict() for i in indicators],
                },
                ensure_ascii=False,
            )
        )
    else:
        for i in indicators:
            print(f"{i.field:45s} {i.form:8s} {json.dumps(i.value)}   [{i.provider}, as of {i.data_as_of}]")
    return 0


def cmd_parties(args: argparse.Namespace) -> int:
    with _client(args) as client:
        providers = client.refresh_providers()
    for name, b in sorted(providers.items()):
        print(f"{name:20s} key {b.key_id}  (CA-verified)")
    return 0


def cmd_subscribe(args: argparse.Namespace) -> int:
    """Pushed events by region / industry / topic, appended to a JSONL file, resumable."""
    import os

    from xinrong.bank.push_client import CursorFile, PushClient, Subscription

    node, creds = node_connection(args)
    out = Path(args.out)
    cursor_file = Path(args.cursor_file) if args.cursor_file else out.with_name(out.name + ".cursor")
    subscription = Subscription(tuple(args.region or ()), tuple(args.industry or ()), tuple(args.topic or ()))
    written = 0
    with PushClient(node, load_party(creds), timeout=args.timeout) as client, open(out, "a", encoding="utf-8") as f:
        store = CursorFile(cursor_file)
        try:
            for events, after in client.batches(subscription, store.read(), follow=args.follow):
                for event in events:
                    f.write(json.dumps(event.as_dict(), ensure_ascii=False, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())  # the events are on disk before the cursor moves past them
                store.write(after)
                written += len(events)
        except KeyboardInterrupt:
            pass
    print(json.dumps({"events": written, "cursor": store.read(), "out": str(out), "cursor_file": str(cursor_file)}))
    return 0


def _alerts_client(args: argparse.Namespace) -> Any:
    from xinrong.bank.alerts_client import AlertsClient

    node, creds = node_connection(args)
    return AlertsClient(node, load_party(creds), Path(args.state_dir or creds), timeout=args.timeout)


def cmd_alerts(args: argparse.Namespace) -> int:
    """Alerts held in the state dir (after --after), then, with --follow, new ones as they come."""
    import signal
    import threading

    with _alerts_client(args) as client:
        for alert in client.state.alerts(args.after):
            print(json.dumps(alert.as_dict(), ensure_ascii=False), flush=True)
        if not args.follow:
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            client.follow(lambda a: print(json.dumps(a.as_dict(), ensure_ascii=False), flush=True), stop=stop)
        except KeyboardInterrupt:
            stop.set()
    return 0


def cmd_watch_add(args: argparse.Namespace) -> int:
    signed = read_consent(args.consent)
    consent_id = parse_consent(signed).consent_id
    with _alerts_client(args) as client:
        client.bank.register_consent(signed)  # idempotent: the node may already hold it
        resp = client.register_watch(args.enterprise, args.claim, consent_id, valid_until=args.valid_until)
    print(json.dumps({"watch_id": resp.watch_id, "valid_until": resp.valid_until, "providers": list(resp.providers)}))
    return 0


def cmd_watch_cancel(args: argparse.Namespace) -> int:
    with _alerts_client(args) as client:
        resp = client.cancel_watch(args.watch_id)
    print(json.dumps({"watch_id": resp.watch_id, "state": int(resp.state)}))
    return 0


def cmd_watch_list(args: argparse.Namespace) -> int:
    with _alerts_client(args) as client:
        for w in client.list_watches():
            print(
                json.dumps(
                    {
                        "watch_id": w.watch_id,
                        "enterprise": w.enterprise_uscc,
                        "claims": list(w.claims),
                        "providers": list(w.providers),
                        "valid_until": w.valid_until,
                        "state": int(w.state),
                    }
                )
            )
    return 0


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file with [bank] node = 'host:port', credentials = 'dir'")
    p.add_argument("--node", default="", help="node address host:port")
    p.add_argument("--credentials", default="", help="the institution's credentials directory")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per call")


def register_cli(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bank_cmd", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("verify", help="verify claims about an enterprise (signed by each provider)")
    add_connection_args(p)
    p.add_argument("--enterprise", required=True, help="USCC")
    p.add_argument("--claim", action="append", required=True, help="e.g. 'tax.credit_grade in A,B'; repeatable")
    p.add_argument("--consent", required=True, type=Path, help="the enterprise's signed consent file")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.add_argument("--prove-audit", action="store_true", help="prove the request's audit leaf in the node's log")
    p.add_argument("--state-dir", default="", help="where the witness state lives (default: the credentials dir)")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("indicators", help="fields in published forms: flags, grades, brackets")
    add_connection_args(p)
    p.add_argument("--enterprise", required=True, help="the enterprise's USCC")
    p.add_argument("--field", action="append", required=True, help="catalog field[:form]; repeatable")
    p.add_argument("--consent", required=True, type=Path, help="the signed consent file the enterprise gave you")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.set_defaults(func=cmd_indicators)
    p = sub.add_parser("score", help="score enterprises with a joint model (consent: credit_scoring)")
    add_connection_args(p)
    from xinrong.bank.modeling_score import add_score_arguments, run_score

    add_score_arguments(p)
    p.set_defaults(func=run_score)
    from xinrong.bank.public_cli import register_report

    register_report(sub, add_connection_args)
    p = sub.add_parser("parties", help="list providers with CA-verified keys")
    add_connection_args(p)
    p.set_defaults(func=cmd_parties)
    p = sub.add_parser(
        "subscribe",
        help="pushed events by region and industry, node-signed, to a JSONL file (resumable cursor)",
    )
    add_connection_args(p)
    p.add_argument("--region", action="append", help="division code prefix: 13 (province), 1301, 130102; repeatable")
    p.add_argument("--industry", action="append", help="GB/T 4754 section letter or class prefix (C, C13); repeatable")
    p.add_argument("--topic", action="append", help="public_record, filing, whitelist, ...; repeatable")
    p.add_argument("--out", required=True, help="JSONL file the events are appended to")
    p.add_argument("--cursor-file", default="", help="where the resume cursor is kept (default: OUT.cursor)")
    p.add_argument("--follow", action="store_true", help="keep the stream open for new events (Ctrl-C stops)")
    p.set_defaults(func=cmd_subscribe)
    audit = sub.add_parser("audit", help="the node's transparency log as this bank sees it")
    asub = audit.add_subparsers(dest="audit_cmd", metavar="COMMAND")
    asub.required = True
    p = asub.add_parser("witness", help="the newest checkpoint of each log this bank holds")
    add_connection_args(p)
    p.add_argument("--state-dir", default="", help="where the witness state lives (default: the credentials dir)")
    p.add_argument(
        "--gossip-from",
        default="",
        help="another party's witness file or signed note: checked for consistency (exit 2 on a split view)",
    )
    p.set_defaults(func=cmd_audit_witness)

    from xinrong.bank.products_cli import register_cli as register_products

    register_products(sub)
    p = sub.add_parser("alerts", help="post-loan risk alerts: changes of watched claims, provider-signed")
    add_connection_args(p)
    p.add_argument("--follow", action="store_true", help="keep streaming new alerts (resumes after the last one)")
    p.add_argument("--after", type=int, default=0, help="print held alerts after this alert id (default: all)")
    p.add_argument("--state-dir", default="", help="where cursor and verdicts live (default: the credentials dir)")
    p.set_defaults(func=cmd_alerts)
    watch = sub.add_parser("watch", help="post-loan watches on borrowers (consent: post_loan_monitoring)")
    wsub = watch.add_subparsers(dest="watch_cmd", metavar="COMMAND")
    wsub.required = True
    p = wsub.add_parser("add", help="watch claims of a borrower for the loan's term")
    add_connection_args(p)
    p.add_argument("--enterprise", required=True, help="the borrower's USCC")
    p.add_argument("--claim", action="append", required=True, help="e.g. 'tax.in_arrears == true'; repeatable")
    p.add_argument("--consent", required=True, type=Path, help="the enterprise's signed monitoring consent file")
    p.add_argument("--valid-until", type=int, default=0, help="Unix seconds the loan ends (default: the consent's)")
    p.add_argument("--state-dir", default="", help="the alerts state dir (default: the credentials dir)")
    p.set_defaults(func=cmd_watch_add)
    p = wsub.add_parser("cancel", help="end a watch of this bank's")
    add_connection_args(p)
    p.add_argument("watch_id", help="the watch id RegisterWatch returned")
    p.add_argument("--state-dir", default="", help="the alerts state dir (default: the credentials dir)")
    p.set_defaults(func=cmd_watch_cancel)
    p = wsub.add_parser("list", help="this bank's watches")
    add_connection_args(p)
    p.add_argument("--state-dir", default="", help="the alerts state dir (default: the credentials dir)")
    p.set_defaults(func=cmd_watch_list)
