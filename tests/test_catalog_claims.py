"""Catalog invariants and the claim grammar / probing policy shared by node and agent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from xinrong.catalog import Catalog, Form, SharingMode, parse_catalog
from xinrong.claims import check_claim, check_indicator, claim_text, evaluate, parse_claim
from xinrong.errors import CatalogError, ClaimError, PolicyError, Reason

POLICY_CATEGORIES = {"market", "judicial", "tax", "housing_fund", "social_insurance", "water", "electricity", "gas"}


def test_catalog_covers_the_policy_list(catalog: Catalog) -> None:
    assert set(catalog.providers) >= POLICY_CATEGORIES
    for provider in POLICY_CATEGORIES:
        assert catalog.provider_fields(provider), provider


def test_social_insurance_and_real_estate_are_verification_only(catalog: Catalog) -> None:
    """The policy: social insurance (pension) and real estate are data verification with consent."""
    for key in (
        "social_insurance.avg_insured_headcount",
        "social_insurance.avg_employer_contribution",
        "social_insurance.consecutive_months",
        "real_estate.property_count",
        "real_estate.mortgaged",
    ):
        assert catalog.field(key).mode is SharingMode.VERIFICATION_CONSENT


def test_every_ladder_is_nested_in_its_brackets(catalog: Catalog) -> None:
    for spec in catalog.fields.values():
        assert set(spec.ladder) <= set(spec.edges), spec.key


def test_loader_refuses_a_ladder_finer_than_the_brackets() -> None:
    bad = b"""
[providers.tax]
name = "Tax"
[[fields]]
key = "tax.x"
type = "int"
mode = "interface_consent"
forms = ["bracket", "ladder"]
edges = [0, 10, 20]
ladder = [10, 15]
"""
    with pytest.raises(CatalogError, match="not bracket edges"):
        parse_catalog(bad)


def test_loader_refuses_forms_that_do_not_fit_the_type() -> None:
    bad = b"""
[providers.tax]
[[fields]]
key = "tax.flag"
type = "bool"
mode = "interface_consent"
forms = ["bracket"]
"""
    with pytest.raises(CatalogError, match="do not fit"):
        parse_catalog(bad)


@pytest.mark.parametrize(
    "text, canonical, form",
    [
        ("tax.credit_grade in B,A", "tax.credit_grade in A,B", Form.GRADE),
        ("tax.credit_grade == A", "tax.credit_grade in A", Form.GRADE),
        ("social_insurance.consecutive_months >= 12", "social_insurance.consecutive_months >= 12", Form.LADDER),
        ("social_insurance.consecutive_months >= 12.0", "social_insurance.consecutive_months >= 12", Form.LADDER),
        ("social_insurance.in_arrears == FALSE", "social_insurance.in_arrears == false", Form.FLAG),
        ("electricity.avg_spend_6m in [1000,5000)", "electricity.avg_spend_6m in [1000,5000)", Form.BRACKET),
        ("electricity.avg_spend_6m in [5000,)", "electricity.avg_spend_6m in [5000,)", Form.BRACKET),
        ("tax.vat_paid_last_year < 500000", "tax.vat_paid_last_year < 500000", Form.LADDER),
    ],
)
def test_claims_parse_to_canonical_form(catalog: Catalog, text: str, canonical: str, form: Form) -> None:
    checked = check_claim(catalog, parse_claim(text))
    assert checked.text == canonical
    assert checked.form is form
    assert claim_text(checked.claim) == canonical


@pytest.mark.parametrize(
    "text, reason",
    [
        ("social_insurance.consecutive_months >= 13", Reason.THRESHOLD_NOT_PUBLISHED),
        ("electricity.avg_spend_6m in [1234,5000)", Reason.THRESHOLD_NOT_PUBLISHED),
        ("electricity.avg_spend_6m in [5000,1000)", Reason.THRESHOLD_NOT_PUBLISHED),
        ("tax.last_normal_payment_date >= 3", Reason.FORM_NOT_ALLOWED),
        ("tax.no_such_field == true", Reason.UNKNOWN_FIELD),
        ("tax.credit_grade in A,Z", Reason.INVALID_CLAIM),
        ("tax.in_arrears >= 1", Reason.INVALID_CLAIM),
        ("tax.vat_paid_last_year == 100", Reason.INVALID_CLAIM),
    ],
)
def test_probing_policy_refuses(catalog: Catalog, text: str, reason: Reason) -> None:
    with pytest.raises((ClaimError, PolicyError)) as info:
        check_claim(catalog, parse_claim(text))
    assert info.value.reason is reason


def test_unparseable_claims_are_refused() -> None:
    for text in ("", "tax.credit_grade", "tax.credit_grade ~ A", "in A,B"):
        with pytest.raises(ClaimError):
            parse_claim(text)


def test_evaluate(catalog: Catalog) -> None:
    def ev(text: str, value: object) -> bool | None:
        return evaluate(check_claim(catalog, parse_claim(text)), value)  # type: ignore[arg-type]

    assert ev("tax.credit_grade in A,B", "B") is True
    assert ev("tax.credit_grade in A,B", "M") is False
    assert ev("tax.in_arrears == false", False) is True
    assert ev("social_insurance.consecutive_months >= 12", Decimal(12)) is True
    assert ev("social_insurance.consecutive_months >= 12", Decimal(11)) is False
    assert ev("social_insurance.consecutive_months < 12", Decimal(11)) is True
    assert ev("electricity.avg_spend_6m in [1000,5000)", Decimal(5000)) is False
    assert ev("electricity.avg_spend_6m in [1000,5000)", Decimal(1000)) is True
    assert ev("electricity.avg_spend_6m in [100000,)", Decimal(10**9)) is True
    assert ev("tax.in_arrears == true", None) is None


def test_indicators_refused_on_verification_only_fields(catalog: Catalog) -> None:
    with pytest.raises(PolicyError) as info:
        check_indicator(catalog, "social_insurance.avg_insured_headcount", Form.BRACKET)
    assert info.value.reason is Reason.FORM_NOT_ALLOWED
    assert check_indicator(catalog, "electricity.avg_spend_12m", Form.BRACKET).key == "electricity.avg_spend_12m"
    with pytest.raises(PolicyError):
        check_indicator(catalog, "electricity.avg_spend_12m", Form.LADDER)


def test_no_claim_combination_is_finer_than_the_finest_bracket(catalog: Catalog) -> None:
    """Every allowed predicate on a numeric field is constant on each published bracket,
    so the answers to *all* allowed claims together determine at most the bracket."""
    for spec in catalog.fields.values():
        if not spec.numeric or not spec.forms:
            continue
        texts = [f"{spec.key} >= {t}" for t in spec.ladder] + [f"{spec.key} < {t}" for t in spec.ladder]
        edges = list(spec.edges)
        texts += [f"{spec.key} in [{lo},{hi})" for i, lo in enumerate(edges) for hi in edges[i + 1 :]]
        texts += [f"{spec.key} in [{lo},)" for lo in edges]
        checked = [check_claim(catalog, parse_claim(t)) for t in texts]
        for i, lo in enumerate(edges):
            hi = edges[i + 1] if i + 1 < len(edges) else lo * 10 + 1000
            probes = [lo, (lo + hi) / 2, hi - Decimal("0.01")]
            answers = {tuple(evaluate(c, p) for c in checked) for p in probes}
            assert len(answers) == 1, f"{spec.key}: claims split bracket [{lo},{hi})"
