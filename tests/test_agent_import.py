"""CSV import into the agent's store, the config loader and the ``xinrong agent`` CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xinrong.catalog import Catalog
from xinrong.errors import ImportRejected, ValidationError
from xinrong.keys.layout import party_dir
from xinrong.provider_agent.config import default_state_db, load_agent, load_config
from xinrong.provider_agent.importer import import_csv
from xinrong.provider_agent.store import DataStore, StateStore
from xinrong.tools.cli import main as xinrong_main

from support.agent import (
    AS_OF,
    E_EMPTY,
    E_GOOD,
    E_POOR,
    TAX_HEADER,
    make_uscc,
    tax_rows,
    write_config,
    write_csv,
)
from support.pki import Pki


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DataStore]:
    s = DataStore(tmp_path / "tax.db", "tax")
    yield s
    s.close()


def record(store: DataStore, uscc: str) -> dict[str, object] | None:
    """The stored cells of an enterprise in the active period, by column."""
    found = store.lookup(uscc, "0000-01-01", "9999-12-31")
    if found is None or found.data is None:
        return None
    cells = json.loads(found.data)
    return {name: cells[i] for name, i in store.columns(found.period_id).items()}


def test_good_file(store: DataStore, catalog: Catalog, tmp_path: Path) -> None:
    # Columns in another order than the catalog, lower-case USCC, spaces around cells.
    header = list(reversed(TAX_HEADER))
    rows = [list(reversed(r)) for r in tax_rows()]
    rows[0][-1] = f" {E_GOOD.lower()} "
    path = write_csv(tmp_path / "tax.csv", header, rows)
    result = import_csv(store, catalog, "tax", path)
    assert (result.rows, result.as_of, result.previous_as_of) == (3, AS_OF, None)
    assert len(result.sha256) == 64
    period = store.active_period()
    assert period is not None and (period.as_of, period.rows, period.sha256) == (AS_OF, 3, result.sha256)
    assert record(store, E_GOOD) == {
        "credit_grade": "A",
        "abnormal_taxpayer": False,
        "in_arrears": False,
        "arrears_amount": "0",
        "vat_paid_last_year": "1200000.50",
        "cit_paid_last_year": "300000",
        "consecutive_normal_months": 30,
        "last_normal_payment_date": "2026-09-01",
        "grade_a_taxpayer": True,
    }
    poor = record(store, E_POOR)
    assert poor is not None and poor["cit_paid_last_year"] is None and poor["last_normal_payment_date"] is None
    empty = record(store, E_EMPTY)
    assert empty is not None and set(empty.values()) == {None}
    assert record(store, make_uscc(99)) is None


BAD_ROWS = [
    # line 2: fine
    [E_GOOD, AS_OF, "A", "false", "false", "0", "1", "2", "3", "2026-01-01", ""],
    # line 3: bad USCC check character
    [E_GOOD[:-1] + ("0" if E_GOOD[-1] != "0" else "1"), AS_OF, "A", "false", "false", "0", "1", "2", "3", "", ""],
    # line 4: grade not in the catalog, bool not a bool
    [E_POOR, AS_OF, "E", "yes", "false", "0", "1", "2", "3", "", ""],
    # line 5: duplicate of line 2
    [E_GOOD, AS_OF, "B", "false", "false", "0", "1", "2", "3", "", ""],
    # line 6: negative decimal, fractional int, impossible date
    [make_uscc(5), AS_OF, "B", "true", "true", "-5", "1e6", "2", "3.5", "2026-02-30", ""],
    # line 7: a second as_of date
    [make_uscc(6), "2026-10-31", "B", "true", "true", "5", "1", "2", "3", "", ""],
    # line 8: too few cells
    [make_uscc(7), AS_OF, "B"],
    # line 9: NaN and infinity are not numbers here
    [make_uscc(8), AS_OF, "B", "true", "true", "NaN", "Infinity", "2", "3", "", ""],
]


def test_bad_file_rejected_whole_with_every_line(store: DataStore, catalog: Catalog, tmp_path: Path) -> None:
    first = import_csv(store, catalog, "tax", write_csv(tmp_path / "ok.csv", TAX_HEADER, tax_rows()))
    before = store.periods()
    with pytest.raises(ImportRejected) as info:
        import_csv(store, catalog, "tax", write_csv(tmp_path / "bad.csv", TAX_HEADER, BAD_ROWS))
    problems = info.value.problems
    lines = sorted({int(m.group(1)) for p in problems if (m := re.match(r"line (\d+):", p))})
    assert lines == [3, 4, 5, 6, 7, 8, 9]
    text = "\n".join(problems)
    assert "line 3: column uscc" in text
    assert "line 4: column credit_grade" in text and "line 4: column abnormal_taxpayer" in text
    assert "line 5: USCC duplicates line 2" in text
    for column in ("arrears_amount", "vat_paid_last_year", "consecutive_normal_months", "last_normal_payment_date"):
        assert f"line 6: column {column}" in text
    assert "line 7: column as_of" in text and "line 8: expected 11 cells, found 3" in text
    assert "line 9: column arrears_amount" in text and "line 9: column vat_paid_last_year" in text
    # Problems never echo cell contents.
    assert "yes" not in text and "-5" not in text and "2026-02-30" not in text
    # Nothing changed: same periods, same active data.
    assert store.periods() == before
    period = store.active_period()
    assert period is not None and period.id == first.period_id
    assert record(store, E_GOOD) is not None and record(store, make_uscc(5)) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ([*TAX_HEADER, "favourite_colour"], "not tax fields"),
        ([h for h in TAX_HEADER if h != "in_arrears"], "missing columns ['in_arrears']"),
        ([*TAX_HEADER, "in_arrears"], "duplicate columns ['in_arrears']"),
        ([h for h in TAX_HEADER if h != "as_of"], "missing columns ['as_of']"),
    ],
)
def test_header_must_be_exactly_the_providers_columns(
    store: DataStore, catalog: Catalog, tmp_path: Path, header: list[str], expected: str
) -> None:
    path = write_csv(tmp_path / "h.csv", header, [])
    with pytest.raises(ImportRejected) as info:
        import_csv(store, catalog, "tax", path)
    assert any(p.startswith("line 1:") and expected in p for p in info.value.problems)
    assert store.periods() == []


def test_empty_and_header_only_files_are_rejected(store: DataStore, catalog: Catalog, tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ImportRejected):
        import_csv(store, catalog, "tax", tmp_path / "empty.csv")
    with pytest.raises(ImportRejected) as info:
        import_csv(store, catalog, "tax", write_csv(tmp_path / "h.csv", TAX_HEADER, []))
    assert "no data rows" in info.value.problems[0]
    (tmp_path / "latin1.csv").write_bytes((",".join(TAX_HEADER) + "\n").encode() + b"\xff\xfe,\n")
    with pytest.raises(ImportRejected):
        import_csv(store, catalog, "tax", tmp_path / "latin1.csv")
    assert store.periods() == []


def test_new_period_replaces_old_atomically(store: DataStore, catalog: Catalog, tmp_path: Path) -> None:
    import_csv(store, catalog, "tax", write_csv(tmp_path / "q3.csv", TAX_HEADER, tax_rows("2026-09-30")))
    newer = [
        [make_uscc(10), "2026-12-31", "B", "false", "false", "0", "5", "5", "5", "", ""],
        [E_GOOD, "2026-12-31", "D", "true", "true", "7", "5", "5", "5", "", ""],
    ]
    result = import_csv(store, catalog, "tax", write_csv(tmp_path / "q4.csv", TAX_HEADER, newer))
    assert result.previous_as_of == "2026-09-30" and result.rows == 2
    period = store.active_period()
    assert period is not None and period.as_of == "2026-12-31"
    assert record(store, E_GOOD) is not None and record(store, E_GOOD)["credit_grade"] == "D"  # type: ignore[index]
    assert record(store, E_POOR) is None  # not in the new period
    assert len(store.periods()) == 2 and sum(p.active for p in store.periods()) == 1
    # Only the active period's records are kept.
    n = store._reader().execute("SELECT COUNT(*) FROM records").fetchone()[0]
    assert n == 2
    # An older period is refused unless asked for; the same as_of replaces.
    older = write_csv(tmp_path / "q2.csv", TAX_HEADER, tax_rows("2026-06-30"))
    with pytest.raises(ImportRejected) as info:
        import_csv(store, catalog, "tax", older)
    assert "older than the active period 2026-12-31" in info.value.problems[0]
    assert store.active_period().as_of == "2026-12-31"  # type: ignore[union-attr]
    again = import_csv(store, catalog, "tax", write_csv(tmp_path / "q4b.csv", TAX_HEADER, newer[:1]))
    assert again.previous_as_of == "2026-12-31" and store.active_period().rows == 1  # type: ignore[union-attr]
    import_csv(store, catalog, "tax", older, allow_older=True)
    assert store.active_period().as_of == "2026-06-30"  # type: ignore[union-attr]


def test_readers_keep_the_old_period_until_commit(store: DataStore, catalog: Catalog, tmp_path: Path) -> None:
    import_csv(store, catalog, "tax", write_csv(tmp_path / "a.csv", TAX_HEADER, tax_rows("2026-09-30")))
    writer = store.begin_import(source="b.csv", columns=["credit_grade"], catalog_sha256="x", now=0)
    try:
        writer.add([(E_GOOD, 2, '["D"]')])
        # Mid-import, a reader (the serving agent) still sees the old period.
        assert store.active_period().as_of == "2026-09-30"  # type: ignore[union-attr]
        assert record(store, E_GOOD)["credit_grade"] == "A"  # type: ignore[index]
    finally:
        writer.abort()
    assert record(store, E_GOOD)["credit_grade"] == "A"  # type: ignore[index]


def test_store_state_survives_reopen_and_refuses_another_provider(catalog: Catalog, tmp_path: Path) -> None:
    s = DataStore(tmp_path / "tax.db", "tax")
    result = import_csv(s, catalog, "tax", write_csv(tmp_path / "a.csv", TAX_HEADER, tax_rows()))
    s.close()
    reopened = DataStore(tmp_path / "tax.db", "tax")
    try:
        assert reopened.active_period().sha256 == result.sha256  # type: ignore[union-attr]
        assert record(reopened, E_GOOD) is not None
    finally:
        reopened.close()
    with pytest.raises(ValidationError):
        DataStore(tmp_path / "tax.db", "electricity")
    with pytest.raises(ValidationError):
        StateStore(tmp_path / "tax.db", "tax")  # a data file is not a state file


# -------------------------------------------------------------------- config


def test_config_loads_and_resolves_paths(pki: Pki, tmp_path: Path) -> None:
    setup = load_agent(write_config(tmp_path, pki))
    cfg = setup.config
    assert cfg.db == tmp_path / "state" / "agent.db"
    assert cfg.state_db == tmp_path / "state" / "agent.state.db" == default_state_db(cfg.db)
    assert (cfg.node_id, cfg.verdict_ttl_seconds, cfg.max_clock_skew_seconds) == ("node", 86400, 300)
    assert setup.credentials.binding.provider == "tax"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"max_clock_skew": 5}, "unknown keys"),
        ({"provider": "bakery"}, "not in the catalog"),
        ({"bind": "localhost"}, "HOST:PORT"),
        ({"verdict_ttl_seconds": "1 day"}, "verdict_ttl_seconds"),
        ({"node_id": "no spaces please"}, "node_id"),
    ],
)
def test_config_is_validated(pki: Pki, tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_agent(write_config(tmp_path, pki, **extra))
    assert message in str(info.value)


def test_config_refuses_another_providers_or_roles_credentials(pki: Pki, tmp_path: Path) -> None:
    other = write_config(tmp_path, pki, credentials=str(party_dir(pki.root, "provider", "electricity")))
    with pytest.raises(ValidationError, match="bound to provider 'electricity'"):
        load_agent(other)
    bank = write_config(tmp_path, pki, credentials=str(party_dir(pki.root, "institution", "bank-a")))
    with pytest.raises(ValidationError, match="role 'institution'"):
        load_agent(bank)
    assert load_config(other).provider == "tax"  # structure is fine; prepare() catches the mix-up


# ----------------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    return xinrong_main(["agent", *argv])


def test_cli_import_and_info(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, pki)
    assert run_cli(["info", "--config", str(config)]) == 0
    assert "no data imported yet" in capsys.readouterr().out
    good = write_csv(tmp_path / "tax.csv", TAX_HEADER, tax_rows())
    assert run_cli(["import", "--config", str(config), "--csv", str(good)]) == 0
    assert f"imported 3 enterprises for tax as of {AS_OF}" in capsys.readouterr().out
    bad = write_csv(tmp_path / "bad.csv", TAX_HEADER, BAD_ROWS)
    assert run_cli(["import", "--config", str(config), "--csv", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "import rejected, nothing was imported" in err
    for line in (3, 4, 5, 6, 7, 8, 9):
        assert f"line {line}:" in err
    assert run_cli(["info", "--config", str(config), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["provider"], doc["data_as_of"], doc["enterprises"]) == ("tax", AS_OF, 3)


def test_cli_reports_a_bad_config(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, pki, provider="bakery")
    assert run_cli(["info", "--config", str(config)]) == 2
    assert "not in the catalog" in capsys.readouterr().err
    assert run_cli(["info", "--config", str(tmp_path / "missing.toml")]) == 2
