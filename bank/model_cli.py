"""``xinrong model``: joint modeling jobs, driven by the institution.

    xinrong model train  --config job.toml [--resume] [--json] [--no-progress]
    xinrong model status --config job.toml [--json]

``train`` runs PSI, training (progress bar with epochs, batches and loss),
the bank's model share, private scoring of the held-out split and the
reports, then prints a one-line summary (``--json``: one JSON object). If
the job fails, the command exits non-zero with the node's reason: which
provider failed at which step, and whether ``--resume`` can continue it.

A job file::

    [job]
    id = "sme-default-2026q3"
    node = "127.0.0.1:7443"
    credentials = "keys/institutions/bank-a"
    providers = ["tax", "electricity", "social_insurance"]
    backend = "ckks"                      # ckks | paillier | plain (plain needs allow_plain = true)
    output = "models/sme-default-2026q3"

    [data]
    labels = "bank_loans.csv"             # id (or uscc) column, label column, optional features
    label_column = "defaulted"
    features = ["loan_amount", "term_months", "years_with_bank"]

    [train]                               # modeling.vlr.TrainConfig fields
    epochs = 10
    batch_size = 4096
    learning_rate = 0.5
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from xinrong.modeling.serde import job_state_from_proto
from xinrong.v1 import modeling_pb2

if TYPE_CHECKING:
    from xinrong.bank.modeling import JobFile, TrainOutcome


def _outcome_json(outcome: TrainOutcome) -> dict[str, Any]:
    m = outcome.metrics
    return {
        "job_id": outcome.job_id,
        "auc": round(outcome.auc, 6),
        "ks": round(outcome.ks, 6),
        "rows_bank": outcome.rows_bank,
        "rows_aligned": outcome.rows_aligned,
        "rows_train": outcome.rows_train,
        "rows_test": outcome.rows_test,
        "epochs": m.epochs_run,
        "stopped_early": m.stopped_early,
        "epoch_losses": [round(v, 6) for v in m.epoch_losses],
        "guard_levels": {str(k): v for k, v in sorted(m.guard_levels.items())},
        "guard_shrinks": len(m.guard_shrinks),
        "seconds_total": round(outcome.seconds_total, 3),
        "seconds_psi": round(outcome.seconds_psi, 3),
        "seconds_train": round(outcome.seconds_train, 3),
        "seconds_per_epoch": [round(s, 3) for s in outcome.epoch_seconds],
        "seconds_scoring_test": round(outcome.seconds_scoring, 3),
        "resumed_from": outcome.resumed_from,
        "wire_bytes": outcome.wire_bytes,
        "files": outcome.files,
    }


def _with_node(job: JobFile, node: str | None) -> JobFile:
    """--node overrides the job file's node address (a network on another port, a replica)."""
    return job.model_copy(update={"node": node}) if node else job


def cmd_train(args: argparse.Namespace) -> int:
    from xinrong.bank.modeling import load_job, tqdm_progress, train  # numpy, HE libraries: only for this verb

    job = _with_node(load_job(args.config), args.node)
    progress = None if (args.no_progress or args.json) else tqdm_progress
    outcome = train(job, resume=args.resume, progress=progress)
    if args.json:
        print(json.dumps(_outcome_json(outcome)))
    else:
        print(outcome.summary())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from xinrong.bank.modeling import ModelingClient, load_job
    from xinrong.keys.layout import load_party

    job = _with_node(load_job(args.config), args.node)
    with ModelingClient(job.node, load_party(job.credentials), node_id=job.node_id, timeout=30.0) as client:
        status = client.call("GetJob", modeling_pb2.GetJobRequest(job_id=job.job_id))
    body = {
        "job_id": status.job_id,
        "state": job_state_from_proto(status.state),
        "providers": list(status.provider_ids),
        "backend": status.backend,
        "epochs_done": status.epochs_done,
        "resumable": status.resumable,
        "failure_reason": status.failure_reason,
        "wire_bytes": dict(status.wire_bytes),
    }
    if args.json:
        print(json.dumps(body))
    else:
        reason = f" - {body['failure_reason']}" if body["failure_reason"] else ""
        print(
            f"job {body['job_id']}: {body['state']}, {body['epochs_done']} epochs done, "
            f"resumable {'yes' if body['resumable'] else 'no'}{reason}"
        )
    return 0


def register_cli(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model_cmd", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("train", help="run a joint modeling job (PSI, training, reports)")
    p.add_argument("--config", required=True, help="the job file (TOML)")
    p.add_argument("--resume", action="store_true", help="continue a FAILED job from the last common checkpoint")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary line")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--node", help="node address host:port, instead of the job file's")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("status", help="the node's view of a job: state, epochs, failure, wire bytes")
    p.add_argument("--config", required=True, help="the job file (TOML)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--node", help="node address host:port, instead of the job file's")
    p.set_defaults(func=cmd_status)
