"""Model reports (issue 3, item 6): ROC and KS plots, the model card, per-party weights.

Who writes what, and why it is split this way:

* The **model card** (JSON + Markdown) is shared metadata: parties, feature
  *names* by party, AUC/KS next to scikit-learn's on the same split,
  training parameters, HE scheme and parameters, data sizes, version,
  creation time and limitations. It never holds a weight: ``ModelCard``
  refuses training parameters that look like coefficients.
* The **weights report** is private to one party: ``write_weights_report``
  takes a single party's weights and writes them where that party keeps its
  model share. Nothing in this module accepts, or assembles, the weights of
  several parties; a joint weight table would be exactly the model the
  protocol keeps split.
* **Plots** are drawn with matplotlib's Agg canvas directly (no pyplot, no
  global backend switch), so reports render in servers and CI alike.

AUC and KS come from ``xinrong.modeling.metrics`` (tie-aware, sklearn-free); tests
check them against scikit-learn. Every file is written atomically (temp file
then rename): a crashed report never leaves a half-written file behind.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xinrong.modeling import metrics
from xinrong.modeling.he.base import HEPublic

CARD_VERSION = 1

# Training parameters with these names would put coefficients into shared metadata.
_FORBIDDEN_KEYS = ("weight", "weights", "coef", "coefs", "coefficients", "intercept", "theta", "w")

DEFAULT_LIMITATIONS = (
    "Logistic regression: a linear score in the standardized, clipped features; no interactions.",
    "The sigmoid is a polynomial surrogate under encryption (Paillier: first order); metrics are "
    "measured on the federated model itself, next to scikit-learn on the same split.",
    "Each party holds only its own weights and preprocessing: scoring needs every party of the model online.",
    "Trained on the aligned (PSI) population of the training date; re-validate before scoring other populations.",
    "Metrics are from one 70/30 stratified split with a fixed seed; no confidence intervals.",
)


def _software_version() -> str:
    try:
        return importlib.metadata.version("xinrong")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _atomic_write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _save_png(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)  # attach the Agg canvas: no pyplot, no global backend
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# -- plots ------------------------------------------------------------------------


def plot_roc(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    path: Path,
    *,
    reference_scores: npt.ArrayLike | None = None,
    label: str = "federated",
    reference_label: str = "scikit-learn",
    title: str = "ROC",
) -> Path:
    """ROC curve as PNG; with ``reference_scores`` (e.g. sklearn's) drawn on the same axes."""
    fig = Figure(figsize=(5.5, 5.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    curve = metrics.roc_curve(y_true, scores)
    ax.plot(curve.fpr, curve.tpr, lw=1.8, label=f"{label} (AUC {metrics.auc(y_true, scores):.4f})")
    if reference_scores is not None:
        ref = metrics.roc_curve(y_true, reference_scores)
        ref_auc = metrics.auc(y_true, reference_scores)
        ax.plot(ref.fpr, ref.tpr, lw=1.2, ls="--", label=f"{reference_label} (AUC {ref_auc:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.005)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_png(fig, path)


def plot_ks(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    path: Path,
    *,
    title: str = "KS",
    positive_label: str = "bad (y=1)",
    negative_label: str = "good (y=0)",
) -> Path:
    """KS chart as PNG: cumulative share of each class over the population ranked riskiest first."""
    chart = metrics.ks_curve(y_true, scores)
    fig = Figure(figsize=(6.0, 4.5), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(chart.population, chart.cum_pos, lw=1.8, label=positive_label)
    ax.plot(chart.population, chart.cum_neg, lw=1.8, label=negative_label)
    i = int(np.argmax(chart.cum_pos - chart.cum_neg))
    ax.vlines(chart.ks_at, chart.cum_neg[i], chart.cum_pos[i], colors="black", linestyles="--", lw=1.0)
    ax.annotate(
        f"KS {chart.ks:.4f}",
        (chart.ks_at, (chart.cum_pos[i] + chart.cum_neg[i]) / 2),
        xytext=(6, 0),
        textcoords="offset points",
        va="center",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.005)
    ax.set_xlabel("share of population (riskiest first)")
    ax.set_ylabel("cumulative share of class")
    ax.set_title(f"{title} (KS {chart.ks:.4f} at {chart.ks_at:.1%})")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_png(fig, path)


# -- model card --------------------------------------------------------------------


@dataclass(frozen=True)
class PartyInfo:
    """A party of the model as the card shows it: id, role and feature *names* only."""

    party_id: str
    role: str  # "bank" (labels, maybe features) or "provider"
    features: tuple[str, ...] = ()


def evaluation_metrics(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, reference_scores: npt.ArrayLike | None = None
) -> dict[str, float]:
    """AUC and KS of the model and, when given, of the reference (scikit-learn) scores."""
    out = {"auc": metrics.auc(y_true, scores), "ks": metrics.ks(y_true, scores)}
    if reference_scores is not None:
        out["auc_sklearn"] = metrics.auc(y_true, reference_scores)
        out["ks_sklearn"] = metrics.ks(y_true, reference_scores)
        out["delta_auc"] = out["auc"] - out["auc_sklearn"]
        out["delta_ks"] = out["ks"] - out["ks_sklearn"]
    return out


def he_description(public: HEPublic) -> dict[str, Any]:
    """Scheme and public parameters of a key: what the card records (never key material)."""
    out: dict[str, Any] = {"scheme": public.scheme, "max_degree": public.max_degree, "key_id": public.key_id()}
    params = getattr(public, "params", None)
    to_json = getattr(params, "to_json", None)
    if callable(to_json):
        out["parameters"] = json.loads(to_json())
    return out


def _check_no_coefficients(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if str(key).lower() in _FORBIDDEN_KEYS:
                raise ValueError(f"{where}.{key}: model weights never go into shared metadata")
            _check_no_coefficients(inner, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, inner in enumerate(value):
            _check_no_coefficients(inner, f"{where}[{i}]")
    elif not (value is None or isinstance(value, (str, bool, int, float))):
        raise ValueError(f"{where}: only JSON scalars, lists and objects belong on the card")


@dataclass(frozen=True)
class ModelCard:
    """Shared model metadata (the node keeps it; every party may read it)."""

    model_id: str
    parties: tuple[PartyInfo, ...]
    metrics: Mapping[str, float]
    training: Mapping[str, Any]
    he: Mapping[str, Any]
    data: Mapping[str, Any]
    limitations: tuple[str, ...] = DEFAULT_LIMITATIONS
    version: str = field(default_factory=_software_version)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    title: str = "Joint credit model (vertical federated logistic regression)"

    def __post_init__(self) -> None:
        if not self.model_id:
            raise ValueError("model_id is required")
        if not self.parties or sum(p.role == "bank" for p in self.parties) != 1:
            raise ValueError("a model card lists exactly one bank (label holder) among its parties")
        ids = [p.party_id for p in self.parties]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate party id")
        for name in ("training", "he", "data"):
            _check_no_coefficients(getattr(self, name), name)
        for key, value in self.metrics.items():
            if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise ValueError(f"metric {key} must be a finite number")

    def to_dict(self) -> dict[str, Any]:
        return {
            "card_version": CARD_VERSION,
            "title": self.title,
            "model_id": self.model_id,
            "version": self.version,
            "created": self.created,
            "parties": [{**asdict(p), "features": list(p.features)} for p in self.parties],
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "training": dict(self.training),
            "he": dict(self.he),
            "data": dict(self.data),
            "limitations": list(self.limitations),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"

    def to_markdown(self) -> str:
        m = self.metrics
        lines = [
            f"# {self.title}",
            "",
            f"- Model id: `{self.model_id}`",
            f"- Created: {self.created}",
            f"- Software version: xinrong {self.version}",
            "",
            "## Metrics (test split)",
            "",
            "| metric | federated | scikit-learn | difference |",
            "|---|---|---|---|",
        ]
        for name in ("auc", "ks"):
            if name in m:
                ref = m.get(f"{name}_sklearn")
                ref_text = f"{ref:.4f}" if ref is not None else "n/a"
                diff = f"{m[name] - ref:+.4f}" if ref is not None else "n/a"
                lines.append(f"| {name.upper()} | {m[name]:.4f} | {ref_text} | {diff} |")
        others = {
            k: v for k, v in m.items() if k not in {"auc", "ks", "auc_sklearn", "ks_sklearn", "delta_auc", "delta_ks"}
        }
        for key, value in others.items():
            lines.append(f"| {key} | {value:.6g} | | |")
        lines += ["", "## Parties and features", "", "| party | role | features |", "|---|---|---|"]
        for party in self.parties:
            feats = ", ".join(f"`{_cell(f)}`" for f in party.features) if party.features else "(labels only)"
            lines.append(f"| {_cell(party.party_id)} | {_cell(party.role)} | {feats} |")
        lines += [
            "",
            "Weights are not part of this card: each party keeps its own share and its own weights report.",
            "",
            "## Training",
            "",
        ]
        lines += _kv_lines(self.training)
        lines += ["", "## Homomorphic encryption", ""]
        lines += _kv_lines(self.he)
        lines += ["", "## Data", ""]
        lines += _kv_lines(self.data)
        lines += ["", "## Limitations", ""]
        lines += [f"- {item}" for item in self.limitations]
        return "\n".join(lines) + "\n"

    def write(self, directory: Path, stem: str = "model_card") -> tuple[Path, Path]:
        directory = Path(directory)
        json_path = _atomic_write(directory / f"{stem}.json", self.to_json().encode())
        md_path = _atomic_write(directory / f"{stem}.md", self.to_markdown().encode())
        return json_path, md_path


def _cell(text: str) -> str:
    """Markdown table cell: a name with a pipe or newline must not break the table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _kv_lines(values: Mapping[str, Any]) -> list[str]:
    if not values:
        return ["(none)"]
    out = []
    for key, value in values.items():
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, (Mapping, list, tuple)) else str(value)
        out.append(f"- **{key}**: {text}")
    return out


# -- per-party weights ---------------------------------------------------------------


@dataclass(frozen=True)
class WeightsReport:
    """One party's weights, for that party's eyes only."""

    model_id: str
    party_id: str
    features: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float | None = None  # the bank's, when it holds the intercept
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if len(self.features) != len(self.weights):
            raise ValueError("one weight per feature")
        if len(set(self.features)) != len(self.features):
            raise ValueError("duplicate feature name")
        if not all(math.isfinite(w) for w in self.weights):
            raise ValueError("weights must be finite")

    def ranked(self) -> list[tuple[str, float]]:
        """Features by decreasing |weight| (standardized inputs: comparable magnitudes)."""
        return sorted(zip(self.features, self.weights), key=lambda fw: -abs(fw[1]))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_id": self.model_id,
            "party_id": self.party_id,
            "created": self.created,
            "visibility": f"private to {self.party_id}",
            "weights": [{"feature": f, "weight": w} for f, w in self.ranked()],
        }
        if self.intercept is not None:
            out["intercept"] = self.intercept
        return out

    def to_markdown(self) -> str:
        lines = [
            f"# Weights of {self.party_id} (model `{self.model_id}`)",
            "",
            f"Private to {self.party_id}: the other parties' weights are not known here and are not needed.",
            "Inputs are standardized by this party, so magnitudes are comparable within the table.",
            "",
            "| rank | feature | weight | odds ratio per +1 sd |",
            "|---|---|---|---|",
        ]
        for rank, (feature, weight) in enumerate(self.ranked(), 1):
            lines.append(f"| {rank} | `{_cell(feature)}` | {weight:+.6f} | {math.exp(weight):.4f} |")
        if self.intercept is not None:
            lines += ["", f"Intercept: {self.intercept:+.6f}"]
        lines += ["", f"Created: {self.created}"]
        return "\n".join(lines) + "\n"


def write_weights_report(
    directory: Path,
    *,
    model_id: str,
    party_id: str,
    feature_names: Sequence[str],
    weights: npt.ArrayLike,
    intercept: float | None = None,
) -> tuple[Path, Path]:
    """Write one party's own weights report (JSON + Markdown) into that party's directory."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    report = WeightsReport(
        model_id=model_id,
        party_id=party_id,
        features=tuple(feature_names),
        weights=tuple(float(v) for v in w),
        intercept=None if intercept is None else float(intercept),
    )
    directory = Path(directory)
    json_path = _atomic_write(
        directory / "weights_report.json", (json.dumps(report.to_dict(), indent=2) + "\n").encode()
    )
    md_path = _atomic_write(directory / "weights_report.md", report.to_markdown().encode())
    return json_path, md_path
