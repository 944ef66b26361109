"""Reports: plots, model card, per-party weights; metrics checked against scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve

from xinrong.modeling import report
from xinrong.modeling.he import ckks

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scored() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(0, 1, (n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ np.array([1.0, -0.5, 0.3, 0.0]) - 1.2)))).astype(int)
    ref = LogisticRegression().fit(x, y).decision_function(x)
    model = ref + rng.normal(0, 0.05, n)  # a "federated" model close to the reference
    return {"y": y, "model": model, "ref": ref, "rounded": np.round(model, 1)}


def test_metrics_match_sklearn(scored: dict[str, np.ndarray]) -> None:
    y = scored["y"]
    for key in ("model", "ref", "rounded"):  # "rounded" has many ties
        got = report.evaluation_metrics(y, scored[key])
        assert got["auc"] == pytest.approx(roc_auc_score(y, scored[key]), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, scored[key])
        assert got["ks"] == pytest.approx(float(np.max(tpr - fpr)), abs=1e-12)
    both = report.evaluation_metrics(y, scored["model"], scored["ref"])
    assert both["delta_auc"] == pytest.approx(both["auc"] - both["auc_sklearn"])
    assert abs(both["delta_auc"]) < 0.01


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    image = imread(str(path))
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert float(image[..., :3].std()) > 0.05  # something is drawn, not a blank canvas


def test_roc_and_ks_plots(tmp_path: Path, scored: dict[str, np.ndarray]) -> None:
    roc = report.plot_roc(scored["y"], scored["model"], tmp_path / "plots" / "roc.png", reference_scores=scored["ref"])
    ks = report.plot_ks(scored["y"], scored["model"], tmp_path / "plots" / "ks.png")
    _assert_png(roc)
    _assert_png(ks)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["ks.png", "roc.png"]  # no temp files left


def _card(**overrides: object) -> report.ModelCard:
    secret = ckks.keygen(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 40, 40, 60))
    fields: dict[str, object] = {
        "model_id": "m-2024-001",
        "parties": (
            report.PartyInfo("bank-a", "bank", ("loan_amount",)),
            report.PartyInfo("tax", "provider", ("vat_paid", "tax_grade")),
            report.PartyInfo("utilities", "provider", ("power_kwh",)),
        ),
        "metrics": {"auc": 0.7164, "ks": 0.3712, "auc_sklearn": 0.7166, "ks_sklearn": 0.3730},
        "training": {
            "epochs": 20,
            "batch_size": 2048,
            "l2": 0.01,
            "learning_rate": {"schedule": "step", "initial": 0.3},
        },
        "he": report.he_description(secret),
        "data": {"rows_train": 21000, "rows_test": 9000, "positive_rate": 0.221},
    }
    fields.update(overrides)
    return report.ModelCard(**fields)  # type: ignore[arg-type]


def test_model_card_json_and_markdown(tmp_path: Path) -> None:
    card = _card()
    json_path, md_path = card.write(tmp_path)
    loaded = json.loads(json_path.read_text())
    for key in ("parties", "metrics", "training", "he", "data", "version", "created", "limitations", "model_id"):
        assert key in loaded
    assert loaded["parties"][1] == {"party_id": "tax", "role": "provider", "features": ["vat_paid", "tax_grade"]}
    assert loaded["he"]["scheme"] == "ckks" and loaded["he"]["parameters"]["poly_modulus_degree"] == 8192
    assert loaded["version"] == "0.1.0"
    text = md_path.read_text()
    assert "| AUC | 0.7164 | 0.7166 | -0.0002 |" in text
    assert "`vat_paid`" in text and "## Limitations" in text
    # Key material never reaches the card: it is a few hundred bytes of parameters.
    assert len(json_path.read_bytes()) < 4000


@pytest.mark.parametrize(
    "overrides",
    [
        {"training": {"epochs": 20, "weights": [0.1, 0.2]}},
        {"training": {"init": {"coef": [0.0]}}},
        {"data": {"sample": np.zeros(3)}},
        {"parties": (report.PartyInfo("tax", "provider", ("a",)),)},  # no bank
        {"metrics": {"auc": float("nan")}},
    ],
)
def test_model_card_refuses_weights_and_bad_fields(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _card(**overrides)


def test_weights_report_is_one_partys_own(tmp_path: Path) -> None:
    json_path, md_path = report.write_weights_report(
        tmp_path / "tax",
        model_id="m-2024-001",
        party_id="tax",
        feature_names=["vat_paid", "tax_grade", "arrears"],
        weights=np.array([0.12, -0.80, 0.35]),
    )
    loaded = json.loads(json_path.read_text())
    assert loaded["party_id"] == "tax" and "intercept" not in loaded
    assert [w["feature"] for w in loaded["weights"]] == ["tax_grade", "arrears", "vat_paid"]  # by |weight|
    assert "private to tax" in loaded["visibility"]
    assert "`tax_grade` | -0.800000" in md_path.read_text()
    bank_json, _ = report.write_weights_report(
        tmp_path / "bank", model_id="m", party_id="bank-a", feature_names=["loan_amount"], weights=[0.2], intercept=-1.3
    )
    assert json.loads(bank_json.read_text())["intercept"] == -1.3
    with pytest.raises(ValueError):
        report.write_weights_report(tmp_path, model_id="m", party_id="tax", feature_names=["a", "b"], weights=[0.1])
    with pytest.raises(ValueError):
        report.write_weights_report(tmp_path, model_id="m", party_id="tax", feature_names=["a"], weights=[float("nan")])
