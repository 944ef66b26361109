"""The evaluation index is checked against the catalog and computes points as published."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from xinrong.catalog import Catalog
from xinrong.errors import CatalogError
from xinrong.index import default_index, parse_index, provider_points
from xinrong.tools.cli import main


def test_the_published_index_covers_every_provider_and_maps_to_grades() -> None:
    index = default_index()
    assert set(index.providers) == {
        "tax", "social_insurance", "housing_fund", "electricity", "water", "gas", "market", "judicial", "real_estate"
    }  # fmt: skip
    assert index.score(index.max_total) == 1000 and index.score(0) == 0
    assert (
        index.grade(1000) == "AAA" and index.grade(0) == "C" and index.grade(index.score(index.max_total / 2)) == "BB"
    )
    assert index.grade_rank("AAA") < index.grade_rank("BBB")


def test_points_follow_the_published_forms() -> None:
    index = default_index()
    items = {i.field: i for i in index.items}
    ladder = items["tax.consecutive_normal_months"]  # steps 3, 6, 12, 24, 36
    assert [ladder.points(v) for v in (None, 0, 2, 3, 11, 12, 36, 100)] == [0, 0, 0, 10, 20, 35, 60, 60]
    bracket = items["judicial.enforcement_cases"]  # edges 0, 1, 3, 10 -> [30, 15, 5, 0]
    assert [bracket.points(v) for v in (0, 1, 2, 3, 9, 10, 99)] == [30, 15, 15, 5, 5, 0, 0]
    assert items["tax.credit_grade"].points("B") == 110 and items["tax.in_arrears"].points(True) == 0
    for item in index.items:  # the vectorised form agrees with the one-value form
        samples: list[object]
        if item.by_value:
            samples = [None, *([True, False] if item.form.value == "flag" else item.spec.values)]
        else:
            cuts = item.spec.ladder if item.form.value == "ladder" else item.spec.edges
            samples = [None, Decimal(-1), *cuts, *(c + 1 for c in cuts), Decimal(10**9)]
        assert item.column_points(samples).tolist() == [item.points(v) for v in samples], item.field


def test_provider_part_is_the_sum_of_its_items() -> None:
    index = default_index()
    columns: dict[str, list[object]] = {
        "tax.credit_grade": ["A", None],
        "tax.in_arrears": [False, True],
        "tax.consecutive_normal_months": [40, 4],
    }
    assert provider_points(index, "tax", columns, 2).tolist() == [150 + 60 + 60, 0 + 0 + 10]
    assert np.all(provider_points(index, "gas", {}, 3) == 0)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ('field = "tax.nope"\nform = "flag"\npoints = { "true" = 1, "false" = 0 }', "not a catalog field"),
        ('field = "tax.in_arrears"\nform = "bracket"\npoints = [1, 2]', "does not publish"),
        ('field = "tax.consecutive_normal_months"\nform = "ladder"\npoints = [0, 1, 2]', "6 non-negative"),
        ('field = "tax.credit_grade"\nform = "grade"\npoints = { A = 1, B = 1 }', "for each of"),
        ('field = "tax.in_arrears"\nform = "flag"\npoints = { "true" = -1, "false" = 0 }', "non-negative"),
    ],
)
def test_an_index_that_does_not_fit_the_catalog_is_refused(catalog: Catalog, item: str, message: str) -> None:
    raw = f'version = "t"\nname = "t"\n[[grade]]\nname = "A"\nmin_score = 0\n[[item]]\n{item}\n'.encode()
    with pytest.raises(CatalogError, match=message):
        parse_index(raw, catalog)


def test_index_show_prints_the_published_definition(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["node", "index", "show"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == default_index().version and doc["sha256"] == default_index().sha256
    assert len(doc["items"]) == len(default_index().items)
