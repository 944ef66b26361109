"""The portal's loan-products page: browse with the enterprise's own match, apply in one step (CSRF-guarded)."""

from __future__ import annotations

from dataclasses import dataclass

from xinrong.enterprise.portal.backend import ApplyForm, ProductRow
from xinrong.enterprise.portal.security import CSRF_FIELD

from support.portal import ORIGIN, FakeBackend, csrf_token, portal_client


@dataclass
class ProductsBackend(FakeBackend):
    def products(self) -> list[ProductRow]:
        self._gate("products")
        return [
            ProductRow(
                "p1",
                "bank-a",
                "Tax-credit loan",
                "working_capital",
                "100000-3000000",
                "6-36",
                "350-650",
                ("tax.credit_grade in A,B",),
                matched=True,
                eligible=True,
            ),
            ProductRow(
                "p2",
                "bank-a",
                "Tech loan",
                "technology",
                "100000-3000000",
                "6-36",
                "350-650",
                ("tax.credit_grade in A,B", "social_insurance.in_arrears == false"),
                matched=True,
                eligible=False,
                failed_rules=("social_insurance.in_arrears == false",),
            ),
            ProductRow(
                "p3",
                "bank-b",
                "<script>x</script>",
                "green_credit",
                "1-2",
                "1-2",
                "1-2",
                ("tax.in_arrears == false",),
                matched=False,
                eligible=False,
            ),
        ]

    def apply(self, form: ApplyForm) -> str:
        self._gate("apply")
        self.calls.append(("apply", form))
        return f"application a-1 for {form.product_id}"


def test_products_page_shows_the_own_match_and_failed_rules() -> None:
    client = portal_client(ProductsBackend())
    html = client.get("/products?lang=en").text
    assert "Loan products" in html and html.count('class="product"') == 3
    assert 'id="product-p1" data-eligible="yes"' in html
    assert 'id="product-p2" data-eligible="no"' in html and "failed: social_insurance.in_arrears == false" in html
    assert 'id="product-p3" data-eligible="unmatched"' in html and "<script>x</script>" not in html
    assert html.count('class="apply-form"') == 2  # only matched products can be applied to
    assert "贷款产品" in client.get("/products?lang=zh").text


def test_apply_needs_a_token_and_passes_the_demand() -> None:
    backend = ProductsBackend()
    client = portal_client(backend)
    token = csrf_token(client, "/products")
    data = {
        CSRF_FIELD: token,
        "product_id": "p1",
        "amount": "800000",
        "term_months": "12",
        "purpose": "wc",
        "region": "130100",
    }
    assert client.post("/products/apply", data={**data, CSRF_FIELD: "bad"}, headers=ORIGIN).status_code == 403
    assert backend.calls == []
    resp = client.post("/products/apply", data=data, headers=ORIGIN, follow_redirects=False)
    assert resp.status_code == 303
    kind, form = backend.calls[-1]
    assert kind == "apply" and form == ApplyForm("p1", 800_000, 12, "wc", "130100")
    assert (
        "amount and term must be whole numbers"
        in client.post("/products/apply", data={**data, "amount": "lots"}, headers=ORIGIN).text
    )


def test_a_backend_without_products_shows_not_available() -> None:
    client = portal_client(FakeBackend())
    html = client.get("/products").text
    assert 'id="not-available"' in html
