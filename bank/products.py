"""The bank's side of loan products: publish, withdraw, list, and applications verified offline.

The bank's Paillier key for eligibility (``matching_paillier.json`` beside
its credentials, 0600) is created on first publish; its public modulus goes
into every product, which the bank signs. An application arrives with the
providers' signed contributions for that enterprise, product and run; the
bank checks each signature against the provider's CA-signed binding, that
every provider with a rule in the product contributed, re-adds the
ciphertexts itself and decrypts: 0 is "eligible". It never relies on the
node's sum or on anything the node says about eligibility.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from xinrong.catalog import Catalog, default_catalog
from xinrong.claims import parse_claim
from xinrong.errors import SignatureError, XinrongError
from xinrong.keys.layout import PartyCredentials
from xinrong.modeling import matching as mt
from xinrong.rpc.channel import DEFAULT_TIMEOUT, secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import products_pb2, products_pb2_grpc

KEY_FILE = "matching_paillier.json"


def key_path(credentials_dir: str | Path) -> Path:
    return Path(credentials_dir) / KEY_FILE


class BankProducts:
    """ProductService as a bank: every product and attestation checked before use."""

    def __init__(
        self,
        node_target: str,
        credentials: PartyCredentials,
        *,
        key_file: Path,
        key_bits: int = mt.DEFAULT_KEY_BITS,
        catalog: Catalog | None = None,
        node_id: str = "node",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.credentials = credentials
        self.catalog = catalog or default_catalog()
        self._key_file = key_file
        self._key_bits = key_bits
        self._key: mt.MatchingKey | None = None
        self.timeout = timeout
        self._channel = secure_channel(node_target, credentials, server_role="node", server_id=node_id)
        self._stub = products_pb2_grpc.ProductServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> BankProducts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: object) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None

    @property
    def key(self) -> mt.MatchingKey:
        if self._key is None:
            self._key = mt.load_or_create_key(self._key_file, self._key_bits)
        return self._key

    # -- products ----------------------------------------------------------------

    def publish(
        self,
        *,
        product_id: str,
        name: str,
        category: str,
        amount: tuple[int, int],
        term_months: tuple[int, int],
        rate_bps: tuple[int, int],
        regions: Sequence[str] = (),
        rules: Sequence[str],
    ) -> dict[str, object]:
        product = mt.build_product(
            self.catalog,
            product_id=product_id,
            bank_id=self.credentials.party_id,
            name=name,
            category=category,
            amount=amount,
            term_months=term_months,
            rate_bps=rate_bps,
            regions=regions,
            rules=[parse_claim(r) for r in rules],
            paillier_n=self.key.n,
            published_at=int(time.time()),
        )
        signed = mt.sign_product(product, self.credentials.signing_key)
        self._call("PublishProduct", products_pb2.PublishProductRequest(product=signed))
        checked = mt.verify_product(self.credentials.ca, self.catalog, signed, self.credentials.binding)
        return mt.product_summary(checked)

    def withdraw(self, product_id: str) -> int:
        resp = self._call("WithdrawProduct", products_pb2.WithdrawProductRequest(product_id=product_id))
        return int(resp.withdrawn_at)

    def products(self, bank_id: str = "", *, include_withdrawn: bool = False) -> list[dict[str, object]]:
        return list_products(self._call, self.credentials, self.catalog, bank_id, include_withdrawn)

    def _own_products(self) -> dict[str, mt.CheckedProduct]:
        resp = self._call(
            "ListProducts",
            products_pb2.ListProductsRequest(bank_id=self.credentials.party_id, include_withdrawn=True),
        )
        out: dict[str, mt.CheckedProduct] = {}
        for listing in resp.products:
            try:
                checked = mt.verify_product(
                    self.credentials.ca, self.catalog, listing.product, self.credentials.binding
                )
            except XinrongError:
                continue  # not signed by this bank's key: the node cannot make the bank accept it
            out[checked.product_id] = checked
        return out

    # -- applications ------------------------------------------------------------

    def applications(self, product_id: str = "") -> list[dict[str, object]]:
        """Every application, its demand and its eligibility as verified here, offline."""
        resp = self._call("ListApplications", products_pb2.ListApplicationsRequest(product_id=product_id))
        products = self._own_products()
        out: list[dict[str, object]] = []
        for record in resp.applications:
            out.append(self.check_application(record, products))
        return out

    def check_application(
        self, record: products_pb2.ApplicationRecord, products: dict[str, mt.CheckedProduct]
    ) -> dict[str, object]:
        doc: dict[str, object] = {"received_at": record.received_at, "verified": False}
        try:
            app = mt.verify_application(self.credentials.ca, record.application, record.enterprise_binding)
        except XinrongError:
            doc["error"] = "the application is not signed by the enterprise"
            return doc
        doc.update(
            {
                "application_id": app.application_id,
                "enterprise": app.enterprise_uscc,
                "product_id": app.product_id,
                "demand": {
                    "amount": app.amount,
                    "term_months": app.term_months,
                    "purpose": app.purpose,
                    "region": app.region,
                },
            }
        )
        product = products.get(app.product_id)
        if product is None or app.bank_id != self.credentials.party_id:
            doc["error"] = "not a product of this bank"
            return doc
        contributions = [mt.parse_contribution(c) for c in record.attestation.contributions]
        match_id = app.match_id or (contributions[0].match_id if contributions else "")
        try:
            result = mt.verify_attestation(
                self.credentials.ca,
                product,
                self.key,
                enterprise=app.enterprise_uscc,
                match_id=match_id,
                attestation=record.attestation,
            )
        except (SignatureError, XinrongError) as exc:
            doc["error"] = f"eligibility attestation rejected: {exc.detail or exc.reason.value}"
            return doc
        doc.update(
            {
                "verified": True,
                "eligible": result.eligible,
                "match_id": result.match_id,
                "providers": list(result.providers),
                "data_as_of": result.data_as_of,
            }
        )
        return doc


def list_products(
    call: Any, credentials: PartyCredentials, catalog: Catalog, bank_id: str = "", include_withdrawn: bool = False
) -> list[dict[str, object]]:
    """Public listing; each product's bank signature checked against the bank's CA-signed binding."""
    resp = call("ListProducts", products_pb2.ListProductsRequest(bank_id=bank_id, include_withdrawn=include_withdrawn))
    return mt.listing_summaries(credentials.ca, catalog, resp.products)


__all__ = ["KEY_FILE", "BankProducts", "key_path", "list_products"]
