"""The synthetic data generator: catalog-shaped files, valid values, realism, determinism."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from xinrong import uscc
from xinrong.catalog import Catalog, FieldType, parse_catalog
from xinrong.tools import datagen
from xinrong.tools.cli import build_parser, main

from support.datagen_readers import joined_training_frame, load_training_frame, read_csv_rows

SMALL_N = 2_000
SMALL_SEED = 7
AUC_N = 20_000
AUC_SEED = 1
AS_OF = dt.date(2026, 9, 30)

_INT = re.compile(r"\A(0|[1-9][0-9]*)\Z")
_DECIMAL = re.compile(r"\A(0|[1-9][0-9]*)(\.[0-9]{1,2})?\Z")
_DATE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")

# Catalog fields the generator has no model for: a new provider, and new
# fields of existing ones of every type.
_EXTRA_FIELDS = b"""
[providers.environment]
name = "Ecology and environment department"
category = "environment"
policy_item = 6

[[fields]]
key = "environment.credit_grade"
type = "enum"
values = ["green", "blue", "yellow", "red", "black"]
unit = ""
mode = "aggregate"
forms = ["grade"]

[[fields]]
key = "environment.penalties"
type = "int"
unit = "cases"
mode = "interface"
forms = ["bracket", "ladder"]
edges = [0, 1, 3]
ladder = [1]

[[fields]]
key = "tax.rd_deduction"
type = "decimal"
unit = "CNY"
mode = "interface_consent"
forms = ["bracket"]
edges = [0, 100000, 1000000]

[[fields]]
key = "tax.hi_tech"
type = "bool"
unit = ""
mode = "interface_consent"
forms = ["flag"]

[[fields]]
key = "gas.last_bill_date"
type = "date"
unit = ""
mode = "interface_consent"
forms = []
"""

# The bytes of every file for SMALL_SEED / SMALL_N, measured before the
# generator was split into modules: a refactor must not move a single byte.
# Change them only with a deliberate change to the generated data.
_SMALL_SHA256 = {
    "bank_loans.csv": "871c5e42a8670e0fc00f091d10aa57e34498d4671afe521fa04c9675ee929f5e",
    "electricity.csv": "40bc6deaa932187aab3eb3eb855572d1862eee1f5f0a094bf6502b804a71a995",
    "gas.csv": "5d39a509d1651eb377c105aa365644c36e8c08644ebacd97d37b45ba290e7dea",
    "housing_fund.csv": "4fea5e8ab2b0f2f4aaa779c45858b325a5ad23c9fcd47a01775abf0385540092",
    "judicial.csv": "35fc15d95aa6e238d115ba6d8683a30299c831b6015ab94e606bd5a50ecd8a4a",
    "manifest.json": "78092d2c935c67eeb5226016a6887d3ec4a99d5630bffae199b48296d37a521b",
    "market.csv": "f1f399a3d28a104121408b278959059dd615b4d1a1ad9846fc07d33cbe335aa2",
    "real_estate.csv": "63e4f389f8b19e935525c1bdc88bb33ef9d24abbbd8c5ecb71a1f370efc33569",
    "social_insurance.csv": "3b47758ab5a3639a13537e065ac1eed3e25207799a1f1cb23601782df11290da",
    "tax.csv": "9d97af39ec62a58246967ab9762ca8c0d2b00cabab64c1db3b141ea303651004",
    "water.csv": "5dbe32bc4161422e6e1a09f2357720565b9139a3c2a4442c3b9689ab434d9421",
}
# The same for the generic generators: _EXTRA_FIELDS, 300 enterprises, seed 5
# (sha256 over each file's name, a NUL and the sha256 of its bytes, by name).
_GENERIC_SHA256 = "6179baf0df3754d4075101cc5198d4644fbeaa4a91f6a966656e5c5da8652e02"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small")
    datagen.generate(out, datagen.GenerateConfig(enterprises=SMALL_N, seed=SMALL_SEED))
    return out


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("big")
    datagen.generate(out, datagen.GenerateConfig(enterprises=AUC_N, seed=AUC_SEED))
    return out


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="ascii") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, list(reader)


def _column(directory: Path, provider: str, column: str) -> dict[str, str]:
    return {u: row[column] for u, row in read_csv_rows(directory / f"{provider}.csv").items()}


# ------------------------------------------------------------------ shape


def test_files_and_headers_match_catalog(small: Path, catalog: Catalog) -> None:
    expected = {f"{p}.csv" for p in catalog.providers} | {datagen.BANK_FILE, datagen.MANIFEST_FILE}
    assert {p.name for p in small.iterdir()} == expected
    for provider in catalog.providers:
        header, _ = _rows(small / f"{provider}.csv")
        assert header == ["uscc", "as_of", *(spec.column for spec in catalog.provider_fields(provider))]
    header, _ = _rows(small / datagen.BANK_FILE)
    assert header == ["uscc", "defaulted", "loan_amount", "term_months", "years_with_bank"]


def test_every_value_parses_per_catalog(small: Path, catalog: Catalog) -> None:
    for provider in catalog.providers:
        header, rows = _rows(small / f"{provider}.csv")
        specs = catalog.provider_fields(provider)
        assert rows, provider
        for row in rows:
            assert len(row) == len(header)
            assert row[1] == AS_OF.isoformat()  # one as_of per file
            for spec, cell in zip(specs, row[2:]):
                if cell == "":
                    continue
                if spec.type is FieldType.BOOL:
                    assert cell in ("true", "false"), (spec.key, cell)
                elif spec.type is FieldType.ENUM:
                    assert cell in spec.values, (spec.key, cell)
                elif spec.type is FieldType.INT:
                    assert _INT.match(cell), (spec.key, cell)
                elif spec.type is FieldType.DECIMAL:
                    assert _DECIMAL.match(cell), (spec.key, cell)
                else:
                    assert _DATE.match(cell), (spec.key, cell)
                    assert dt.date.fromisoformat(cell) <= AS_OF, (spec.key, cell)


def test_usccs_valid_unique_and_hebei(small: Path, catalog: Catalog) -> None:
    _, market = _rows(small / "market.csv")
    codes = [row[0] for row in market]
    assert len(codes) == SMALL_N == len(set(codes))
    for code in codes:
        assert uscc.is_valid(code), code
        assert code[0] == "9" and code[1] in "123" and code[2:4] == "13", code
        # The vectorized generator agrees with the reference implementation.
        assert uscc.make(code[0], code[1], code[2:8], code[8:16]) == code
    assert sum(code[1] == "1" for code in codes) > 0.9 * SMALL_N
    everyone = set(codes)
    for name in [f"{p}.csv" for p in catalog.providers] + [datagen.BANK_FILE]:
        _, rows = _rows(small / name)
        keys = [row[0] for row in rows]
        assert len(keys) == len(set(keys)), name
        assert set(keys) <= everyone, name


def test_manifest_matches_files(small: Path) -> None:
    manifest = json.loads((small / datagen.MANIFEST_FILE).read_text())
    assert manifest["seed"] == SMALL_SEED
    assert manifest["enterprises"] == SMALL_N
    assert manifest["as_of"] == AS_OF.isoformat()
    assert set(manifest["files"]) == {p.name for p in small.iterdir()} - {datagen.MANIFEST_FILE}
    for name, info in manifest["files"].items():
        data = (small / name).read_bytes()
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        assert info["rows"] == data.count(b"\n") - 1
        assert info["bytes"] == len(data)


def test_deterministic_for_a_seed(small: Path, tmp_path: Path) -> None:
    datagen.generate(tmp_path / "again", datagen.GenerateConfig(enterprises=SMALL_N, seed=SMALL_SEED))
    for path in small.iterdir():
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name
    datagen.generate(tmp_path / "other", datagen.GenerateConfig(enterprises=SMALL_N, seed=SMALL_SEED + 1))
    assert (tmp_path / "other" / "market.csv").read_bytes() != (small / "market.csv").read_bytes()


def test_output_bytes_are_pinned_for_a_seed(small: Path) -> None:
    got = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in small.iterdir()}
    assert got == _SMALL_SHA256


def test_generic_output_bytes_are_pinned_for_a_seed(tmp_path: Path, catalog: Catalog) -> None:
    extended = parse_catalog(catalog.raw + _EXTRA_FIELDS)
    datagen.generate(tmp_path, datagen.GenerateConfig(enterprises=300, seed=5), catalog=extended)
    digest = hashlib.sha256()
    for path in sorted(tmp_path.iterdir()):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    assert digest.hexdigest() == _GENERIC_SHA256


def test_as_of_and_borrower_share_are_honoured(tmp_path: Path) -> None:
    as_of = dt.date(2025, 3, 31)
    datagen.generate(tmp_path, datagen.GenerateConfig(enterprises=500, seed=3, as_of=as_of, borrower_share=0.2))
    _, bank = _rows(tmp_path / datagen.BANK_FILE)
    assert len(bank) == 100
    header, tax = _rows(tmp_path / "tax.csv")
    assert {row[1] for row in tax} == {"2025-03-31"}
    last = header.index("last_normal_payment_date")
    dates = [row[last] for row in tax if row[last]]
    assert dates and max(dates) <= "2025-03-31"


# ---------------------------------------------------------------- realism


def test_coverage_and_blank_rates_plausible(small: Path, catalog: Catalog) -> None:
    coverage_range = {
        "market": (1.0, 1.0),
        "judicial": (1.0, 1.0),
        "tax": (0.95, 0.995),
        "social_insurance": (0.78, 0.93),
        "housing_fund": (0.6, 0.78),
        "real_estate": (0.3, 0.48),
        "water": (0.8, 0.92),
        "electricity": (0.9, 0.98),
        "gas": (0.42, 0.58),
    }
    assert set(coverage_range) == set(catalog.providers)
    for provider, (lo, hi) in coverage_range.items():
        _, rows = _rows(small / f"{provider}.csv")
        assert lo <= len(rows) / SMALL_N <= hi, provider
        blank = np.array([[cell == "" for cell in row[2:]] for row in rows])
        per_column = blank.mean(axis=0)
        assert (per_column > 0).all(), provider  # some scattered gaps everywhere
        assert (per_column < 0.06).all(), provider
        assert 0.002 <= blank.mean() <= 0.04, provider


def test_every_bracket_and_ladder_side_is_populated(big: Path, catalog: Catalog) -> None:
    for spec in catalog.fields.values():
        if not spec.edges:
            continue
        # Values have at most 2 decimals and edges are whole numbers, so float
        # comparison against the edges is exact here.
        values = np.array([float(v) for v in _column(big, spec.provider, spec.column).values() if v])
        edges = np.array([float(e) for e in spec.edges])
        assert values.min() >= edges[0], spec.key
        counts = np.bincount(np.searchsorted(edges, values, side="right") - 1, minlength=len(edges))
        assert (counts > 0).all(), (spec.key, counts.tolist())
        for threshold in spec.ladder:
            below = int((values < float(threshold)).sum())
            assert 0 < below < len(values), (spec.key, threshold)


def test_correlations_are_plausible(big: Path) -> None:
    frame = load_training_frame(big)
    names = frame.feature_names

    def col(name: str) -> np.ndarray:
        return frame.X[:, names.index(name)]

    def observed(*keys: str) -> np.ndarray:
        mask = np.ones(len(frame.y), dtype=bool)
        for key in keys:
            if f"{key}__missing" in names:
                mask &= col(f"{key}__missing") == 0
        return mask

    def corr(a: str, b: str) -> float:
        m = observed(a, b)
        return float(np.corrcoef(col(a)[m], col(b)[m])[0, 1])

    # A bigger firm uses more electricity and pays more contributions and VAT.
    assert corr("social_insurance.avg_insured_headcount", "electricity.avg_spend_12m") > 0.5
    assert corr("social_insurance.avg_insured_headcount", "housing_fund.avg_contributors") > 0.7
    assert corr("market.annual_revenue", "tax.vat_paid_last_year") > 0.4
    # An unhealthy firm has arrears at several providers and broken payment runs.
    assert corr("tax.in_arrears", "social_insurance.in_arrears") > 0.2
    assert corr("tax.in_arrears", "tax.consecutive_normal_months") < -0.3
    y = frame.y
    for flag in (
        "tax.in_arrears",
        "social_insurance.in_arrears",
        "electricity.in_arrears",
        "judicial.dishonest_debtor",
    ):
        m = observed(flag)
        rate_with = y[m & (col(flag) == 1)].mean()
        rate_without = y[m & (col(flag) == 0)].mean()
        assert rate_with > 2 * rate_without, flag
    assert y[col("tax.credit_grade=A") == 1].mean() < y[col("tax.credit_grade=D") == 1].mean() / 4


def test_ground_truth_is_internally_consistent(big: Path) -> None:
    tax = read_csv_rows(big / "tax.csv")
    market = read_csv_rows(big / "market.csv")
    for code, row in tax.items():
        if row["in_arrears"] and row["arrears_amount"]:
            assert (row["in_arrears"] == "true") == (Decimal(row["arrears_amount"]) > 0), code
        if row["in_arrears"] == "true" and row["consecutive_normal_months"]:
            assert row["consecutive_normal_months"] == "0", code
        years = market[code]["years_in_operation"]
        if years and row["consecutive_normal_months"]:
            assert int(row["consecutive_normal_months"]) <= 12 * (int(years) + 1), code
    bank = read_csv_rows(big / datagen.BANK_FILE)
    for code, row in bank.items():
        years = market[code]["years_in_operation"]
        if years:
            assert int(row["years_with_bank"]) <= int(years), code


def test_bank_loan_book(big: Path) -> None:
    _header, rows = _rows(big / datagen.BANK_FILE)
    assert len(rows) == round(0.4 * AUC_N)
    defaulted = [row[1] for row in rows]
    assert set(defaulted) == {"0", "1"}
    rate = defaulted.count("1") / len(rows)
    assert 0.08 <= rate <= 0.15
    for row in rows:
        assert all(_INT.match(cell) for cell in row[1:]), row
        assert row[3] in {"6", "12", "24", "36", "60"}


def test_logistic_regression_auc_in_window(big: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y, names = joined_training_frame(big)
    assert X.shape == (len(y), len(names)) and np.isfinite(X).all()
    assert any(n.startswith("bank.") for n in names) and any(n.endswith("__missing") for n in names)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(X_train), y_train)
    auc = roc_auc_score(y_test, model.predict_proba(scaler.transform(X_test))[:, 1])
    assert 0.70 <= auc <= 0.85, auc


def test_training_frame_owners_and_ordinal_encoding(small: Path, catalog: Catalog) -> None:
    onehot = load_training_frame(small)
    ordinal = load_training_frame(small, enum_encoding="ordinal")
    assert set(onehot.owners) == set(catalog.providers) | {datagen.BANK_OWNER}
    for name, owner in zip(onehot.feature_names, onehot.owners):
        assert name.split(".")[0] == owner
    assert ordinal.X.shape[1] < onehot.X.shape[1]
    assert "tax.credit_grade" in ordinal.feature_names
    assert "tax.credit_grade=A" in onehot.feature_names
    assert onehot.usccs == list(read_csv_rows(small / datagen.BANK_FILE))


# ------------------------------------------------------------- catalog-driven


def test_new_catalog_fields_get_generic_values(tmp_path: Path, catalog: Catalog) -> None:
    extended = parse_catalog(catalog.raw + _EXTRA_FIELDS)
    datagen.generate(tmp_path, datagen.GenerateConfig(enterprises=300, seed=5), catalog=extended)
    header, rows = _rows(tmp_path / "environment.csv")
    assert header == ["uscc", "as_of", "credit_grade", "penalties"]
    assert rows and all(row[2] in ("", "green", "blue", "yellow", "red", "black") for row in rows)
    assert all(row[3] == "" or _INT.match(row[3]) for row in rows)
    header, rows = _rows(tmp_path / "tax.csv")
    assert header[-2:] == ["rd_deduction", "hi_tech"]
    assert all(row[-2] == "" or _DECIMAL.match(row[-2]) for row in rows)
    assert all(row[-1] in ("", "true", "false") for row in rows)
    _, rows = _rows(tmp_path / "gas.csv")
    assert all(row[-1] == "" or dt.date.fromisoformat(row[-1]) <= AS_OF for row in rows)
    manifest = json.loads((tmp_path / datagen.MANIFEST_FILE).read_text())
    assert manifest["catalog_sha256"] == extended.sha256


def test_training_frame_rejects_values_outside_the_catalog(small: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "corrupt"
    shutil.copytree(small, copy)
    at_grid = read_csv_rows(small / "electricity.csv")
    borrower = next(u for u in read_csv_rows(small / datagen.BANK_FILE) if u in at_grid)
    lines = (copy / "electricity.csv").read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    grade = header.index("risk_grade")
    for i, line in enumerate(lines):
        if line.startswith(borrower + ","):
            cells = line.rstrip("\n").split(",")
            cells[grade] = "catastrophic"
            lines[i] = ",".join(cells) + "\n"
            break
    (copy / "electricity.csv").write_text("".join(lines))
    with pytest.raises(ValueError, match="risk_grade"):
        load_training_frame(copy)


def test_read_csv_rows_refuses_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("uscc,as_of,x\n91350100M000100Y43,2026-09-30,1\n91350100M000100Y43,2026-09-30,2\n")
    with pytest.raises(ValueError, match="duplicate"):
        read_csv_rows(path)


# -------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs",
    [
        {"enterprises": 99},
        {"enterprises": 1_000_001},
        {"enterprises": True},
        {"enterprises": 1000.0},
        {"enterprises": 1000, "borrower_share": 0.0},
        {"enterprises": 1000, "borrower_share": 1.5},
        {"enterprises": 1000, "borrower_share": math.nan},
        {"enterprises": 1000, "seed": -1},
        {"enterprises": 1000, "as_of": dt.date(1999, 12, 31)},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        datagen.GenerateConfig(**kwargs)  # type: ignore[arg-type]


def test_config_bounds_accepted() -> None:
    assert datagen.GenerateConfig(enterprises=100).borrowers == 40
    assert datagen.GenerateConfig(enterprises=1_000_000, borrower_share=1.0).borrowers == 1_000_000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--enterprises", "99"], "between 100 and 1,000,000"),
        (["--enterprises", "1000001"], "between 100 and 1,000,000"),
        (["--enterprises", "many"], "not a whole number"),
        (["--enterprises", "1000", "--as-of", "2026-02-30"], "YYYY-MM-DD"),
        (["--enterprises", "1000", "--as-of", "20260930"], "YYYY-MM-DD"),
        (["--enterprises", "1000", "--borrower-share", "0"], "(0, 1]"),
        (["--enterprises", "1000", "--borrower-share", "nan"], "(0, 1]"),
        (["--enterprises", "1000", "--seed", "-3"], "[0, 2^63)"),
    ],
)
def test_cli_rejects_bad_arguments(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["data", "generate", "--out", str(tmp_path / "x"), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_generates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    code = main(
        [
            "data",
            "generate",
            "--enterprises",
            "100",
            "--out",
            str(out),
            "--seed",
            "11",
            "--as-of",
            "2026-06-30",
            "--borrower-share",
            "0.5",
        ]
    )
    assert code == 0
    manifest = json.loads((out / datagen.MANIFEST_FILE).read_text())
    assert manifest["enterprises"] == 100 and manifest["seed"] == 11 and manifest["as_of"] == "2026-06-30"
    assert manifest["files"][datagen.BANK_FILE]["rows"] == 50
    assert "wrote" in capsys.readouterr().out
    assert main(["data"]) == 2  # no sub-command: usage, non-zero
