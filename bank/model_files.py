"""The bank's files of a finished model: the model card, plots, its weights report and ``model.json``.

``model.json`` is what ``xinrong bank score`` needs later: the node and
credentials to use, the bank's share file, its own data file and columns,
the metrics and the node's metadata. Everything is written atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xinrong.bank.job_file import JobFile
from xinrong.modeling.data import PartyTable
from xinrong.modeling.he.base import load_public
from xinrong.modeling.report import ModelCard, PartyInfo, he_description, plot_ks, plot_roc, write_weights_report
from xinrong.modeling.vlr_state import ModelShare, atomic_write_bytes

if TYPE_CHECKING:
    from xinrong.bank.training import TrainOutcome

MODEL_FORMAT = "xinrong.bank.model/1"


def write_reports(
    outcome: TrainOutcome, job: JobFile, table: PartyTable, scheme: str, he_public: bytes
) -> dict[str, str]:
    """Plots, model card, the bank's private weights report and ``model.json``; all written atomically."""
    out = job.output
    files: dict[str, str] = {}
    files["roc"] = str(plot_roc(outcome.y_test, outcome.test_logits, out / "roc.png", title=f"ROC - {job.job_id}"))
    files["ks"] = str(plot_ks(outcome.y_test, outcome.test_logits, out / "ks.png", title=f"KS - {job.job_id}"))
    names = outcome.metadata.get("feature_names", {})
    parties = [PartyInfo(outcome.bank_share.party_id, "bank", tuple(outcome.bank_share.feature_names))]
    parties += [PartyInfo(p, "provider", tuple(names.get(p, ()))) for p in outcome.providers]
    he: dict[str, Any] = {"scheme": scheme}
    with contextlib.suppress(ValueError):
        he = he_description(load_public(scheme, he_public))
    cfg = dataclasses.asdict(job.train)
    cfg["sigmoid_degree"] = outcome.bank_share.sigmoid.get("degree", cfg["sigmoid_degree"])
    card = ModelCard(
        model_id=job.job_id,
        parties=tuple(parties),
        metrics={"auc": outcome.auc, "ks": outcome.ks},
        training={
            **cfg,
            "epochs_run": outcome.metrics.epochs_run,
            "stopped_early": outcome.metrics.stopped_early,
            "epoch_losses": [round(v, 6) for v in outcome.metrics.epoch_losses],
            "guard_levels": {str(k): v for k, v in sorted(outcome.metrics.guard_levels.items())},
            "guard_shrinks": len(outcome.metrics.guard_shrinks),
        },
        he=he,
        data={
            "rows_bank": outcome.rows_bank,
            "rows_aligned": outcome.rows_aligned,
            "rows_train": outcome.rows_train,
            "rows_test": outcome.rows_test,
            "test_positive_rate": round(float(outcome.y_test.mean()), 6),
            "alignment": "ECDH-PSI (X25519) through the node",
            "split": f"stratified {1 - job.test_fraction:.0%}/{job.test_fraction:.0%}, seed {job.split_seed}",
            "evaluation": "private scoring (CKKS, bank's key)",
        },
    )
    json_path, md_path = card.write(out)
    files["model_card_json"], files["model_card_md"] = str(json_path), str(md_path)
    w_json, w_md = write_weights_report(
        out,
        model_id=job.job_id,
        party_id=outcome.bank_share.party_id,
        feature_names=outcome.bank_share.feature_names,
        weights=outcome.bank_share.weights,
        intercept=outcome.bank_share.intercept,
    )
    files["weights_json"], files["weights_md"] = str(w_json), str(w_md)
    model = {
        "format": MODEL_FORMAT,
        "job_id": job.job_id,
        "bank_id": outcome.bank_share.party_id,
        "providers": list(outcome.providers),
        "node": job.node,
        "node_id": job.node_id,
        "credentials": str(job.credentials),
        "share": "bank.share.json",
        "bank_data": str(job.labels),
        "id_column": job.id_column,
        "bank_columns": list(table.columns),
        "metrics": {"auc": outcome.auc, "ks": outcome.ks, "rows_test": outcome.rows_test},
        "metadata": outcome.metadata,
    }
    atomic_write_bytes(out / "model.json", (json.dumps(model, indent=1, sort_keys=True) + "\n").encode())
    files["model"] = str(out / "model.json")
    files["share"] = str(out / "bank.share.json")
    return files


def load_model(directory: Path) -> tuple[dict[str, Any], ModelShare]:
    path = directory / "model.json"
    if not path.is_file():
        raise ValueError(f"{directory} holds no model.json (train one with `xinrong model train`)")
    model = json.loads(path.read_text())
    if model.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a model of this version")
    return model, ModelShare.load(directory / str(model.get("share", "bank.share.json")))
