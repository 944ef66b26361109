"""Loan products and privacy-preserving matching (issue 13 §3): the shared rules and arithmetic."""

from __future__ import annotations

import time

import pytest

from xinrong.catalog import Catalog, Form
from xinrong.claims import parse_claim
from xinrong.errors import XinrongError
from xinrong.modeling import matching as mt
from xinrong.v1 import products_pb2

from support.matching_key import bank_key


def make_product(
    catalog: Catalog, rules: list[str], *, product_id: str = "p1", bank: str = "bank-a"
) -> products_pb2.LoanProduct:
    return mt.build_product(
        catalog,
        product_id=product_id,
        bank_id=bank,
        name="Tax-credit loan",
        category="working_capital",
        amount=(100_000, 3_000_000),
        term_months=(6, 36),
        rate_bps=(350, 600),
        regions=["130100"],
        rules=[parse_claim(r) for r in rules],
        paillier_n=bank_key().n,
        published_at=int(time.time()),
    )


def test_sum_is_zero_exactly_when_every_rule_holds() -> None:
    key = bank_key()
    for failed in ([0, 0], [0, 1], [2, 0], [1, 3], [0, 0, 0]):
        cts = [mt.encrypt_failed(key.n, f) for f in failed]
        assert len({len(c) for c in cts}) == 1 and len(cts[0]) == mt.ciphertext_width(key.n)
        total = key.decrypt(mt.add_ciphertexts(key.n, cts))
        assert (total == 0) == (sum(failed) == 0)
    # Enc(0) is fresh each time: two parts of an eligible enterprise never repeat.
    assert mt.encrypt_failed(key.n, 0) != mt.encrypt_failed(key.n, 0)


def test_a_failed_sum_says_nothing_about_how_many_failed() -> None:
    """One failed rule or three: the decrypted sum is uniform on the non-zero residues (top bits look alike)."""
    key = bank_key()
    ones = [key.decrypt(mt.encrypt_failed(key.n, 1)) for _ in range(40)]
    threes = [key.decrypt(mt.encrypt_failed(key.n, 3)) for _ in range(40)]
    half = key.n // 2
    assert 8 < sum(v > half for v in ones) < 32 and 8 < sum(v > half for v in threes) < 32


def test_product_rules_are_published_claims_only(catalog: Catalog) -> None:
    product = make_product(catalog, ["tax.credit_grade in A,B", "social_insurance.in_arrears == false"])
    assert [r.field for r in product.rules] == ["tax.credit_grade", "social_insurance.in_arrears"]
    with pytest.raises(XinrongError) as err:
        make_product(catalog, ["tax.vat_paid_last_year >= 123456"])
    assert err.value.reason.value == "THRESHOLD_NOT_PUBLISHED"
    with pytest.raises(XinrongError):
        make_product(catalog, ["tax.credit_grade in A", "tax.credit_grade in A"])
    with pytest.raises(XinrongError):
        make_product(catalog, ["tax.in_arrears == false"], product_id="bad id")


def test_signed_product_verifies_against_the_banks_binding(pki: object, catalog: Catalog) -> None:
    bank = pki.institution("bank-a")  # type: ignore[attr-defined]
    other = pki.institution("bank-b")  # type: ignore[attr-defined]
    signed = mt.sign_product(make_product(catalog, ["tax.in_arrears == false"]), bank.signing_key)
    checked = mt.verify_product(bank.ca, catalog, signed, bank.binding.signed)
    assert checked.providers == ("tax",) and checked.n == bank_key().n
    with pytest.raises(XinrongError):
        mt.verify_product(bank.ca, catalog, signed, other.binding.signed)
    forged = products_pb2.SignedLoanProduct(
        product=signed.product, signature=other.signing_key.sign(mt.PRODUCT_CONTEXT, signed.product)
    )
    with pytest.raises(XinrongError):
        mt.verify_product(bank.ca, catalog, forged, bank.binding.signed)


def test_the_feedback_box_holds_every_rule_failed_at_its_fixed_length(catalog: Catalog) -> None:
    """Padding to 512 + 256 per rule must hold the longest canonical rule texts, all failed."""
    from xinrong.claims import check_claim as check
    from xinrong.v1 import common_pb2

    longest: dict[str, str] = {}
    for spec in catalog.fields.values():
        texts = []
        if spec.values and Form.GRADE in spec.forms:
            texts.append(
                check(
                    catalog, common_pb2.Claim(field=spec.key, op=common_pb2.CLAIM_OPERATOR_IN, values=list(spec.values))
                ).text
            )
        if len(spec.edges) >= 2 and Form.BRACKET in spec.forms:
            lo, hi = spec.edges[-2], spec.edges[-1]
            texts.append(check(catalog, parse_claim(f"{spec.key} in [{lo},{hi})")).text)
        if spec.ladder:
            texts.append(check(catalog, parse_claim(f"{spec.key} >= {spec.ladder[-1]}")).text)
        if texts:
            longest[spec.provider] = max([longest.get(spec.provider, ""), *texts], key=len)
    for provider, text in longest.items():
        for rules in (1, mt.MAX_RULES):
            feedback = products_pb2.MatchFeedback(
                match_id="m-" + "f" * 24,
                product_id="p" * 64,
                enterprise_uscc="9" * 18,
                provider=provider,
                data_as_of="2026-12-31",
                failed_rules=[text] * rules,
                issued_at=4_102_444_800,
            )
            signed = products_pb2.SignedMatchFeedback(feedback=feedback.SerializeToString(), signature=b"s" * 64)
            assert signed.ByteSize() + 1 <= mt.FEEDBACK_PAD_BASE + mt.FEEDBACK_PAD_PER_RULE * rules, (provider, text)
