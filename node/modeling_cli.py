"""``xinrong node models list``: the node's modeling jobs and model metadata.

Reads the node's database read-only (safe beside a running node) and prints
one JSON line per job: institution, providers, backend, state (FAILED jobs
with the failing party and step), epochs done and, for finished jobs, the
model metadata (party ids, feature names, share hashes, losses; never a
weight).
"""

from __future__ import annotations

import argparse
import json
from contextlib import closing

from xinrong.node.config import load_config
from xinrong.node.db import open_for_tools
from xinrong.node.modeling_store import list_jobs


def _models_list(args: argparse.Namespace) -> int:
    conn = open_for_tools(load_config(args.config))
    with closing(conn):
        records = list_jobs(conn)
    for record in records:
        if args.state and record.state != args.state.upper():
            continue
        print(json.dumps(record.to_json(), sort_keys=True))
    return 0


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser("models", help="joint modeling jobs and their model metadata")
    models_sub = models.add_subparsers(dest="models_verb", metavar="COMMAND")
    models_sub.required = True
    list_p = models_sub.add_parser("list", help="every job with its state, as JSON lines")
    list_p.add_argument("--config", required=True, help="node TOML config (its database is opened read-only)")
    list_p.add_argument(
        "--state", choices=["created", "running", "succeeded", "failed"], help="only jobs in this state"
    )
    list_p.set_defaults(func=_models_list)
