"""The enterprise's side of loan products: browse, read its own matches, apply in one step.

Its matches arrive as boxes sealed to its own X25519 key by each provider
with a rule in the product, each signed by that provider: the rules of its
own data that failed, which nobody else sees (the node relays the boxes
unread; the bank never gets them). Applying signs an application naming the
product, the match run and the demand the enterprise chooses to give; that
signature is its agreement that this one bank learns this one eligibility bit.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc

from xinrong.catalog import Catalog, default_catalog
from xinrong.errors import SignatureError, ValidationError, XinrongError
from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.layout import PartyCredentials
from xinrong.modeling import matching as mt
from xinrong.rpc.channel import DEFAULT_TIMEOUT, secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import products_pb2, products_pb2_grpc


class EnterpriseProducts:
    """ProductService as the enterprise (mTLS with its own certificate)."""

    def __init__(
        self,
        node_target: str,
        credentials: PartyCredentials,
        *,
        catalog: Catalog | None = None,
        node_id: str = "node",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.credentials = credentials
        self.catalog = catalog or default_catalog()
        self.timeout = timeout
        self._channel = secure_channel(node_target, credentials, server_role="node", server_id=node_id)
        self._stub = products_pb2_grpc.ProductServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> EnterpriseProducts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: object) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None

    def products(self, bank_id: str = "") -> list[dict[str, object]]:
        resp = self._call("ListProducts", products_pb2.ListProductsRequest(bank_id=bank_id))
        return mt.listing_summaries(self.credentials.ca, self.catalog, resp.products)

    def matches(self) -> list[dict[str, object]]:
        """Per product: eligible or not, and which of its own rules failed (opened and checked here)."""
        key = self.credentials.sealing_key
        if key is None:
            raise ValidationError("these credentials hold no sealing key")
        resp = self._call("ListMyMatches", products_pb2.ListMyMatchesRequest())
        out: list[dict[str, object]] = []
        for m in resp.matches:
            bindings: dict[str, VerifiedBinding] = {}
            for signed in m.provider_bindings:
                try:
                    b = verify_binding(self.credentials.ca, signed, expect_role="provider")
                except SignatureError:
                    continue
                bindings[b.provider] = b
            failed: list[str] = []
            passed: list[str] = []
            providers: list[str] = []
            as_of: dict[str, str] = {}
            ok = True
            for box in m.feedback:
                try:
                    raw = key.open(
                        box,
                        recipient_id=self.credentials.party_id,
                        content_type=mt.FEEDBACK_CONTENT_TYPE,
                        context=f"{m.match_id}/{m.product_id}",
                    )
                    fb = mt.open_feedback(
                        self.credentials.ca, products_pb2.SignedMatchFeedback.FromString(raw), bindings
                    )
                except (XinrongError, ValueError):
                    ok = False
                    continue
                if (
                    fb.enterprise_uscc != self.credentials.party_id
                    or fb.product_id != m.product_id
                    or fb.match_id != m.match_id
                ):
                    ok = False
                    continue
                providers.append(fb.provider)
                as_of[fb.provider] = fb.data_as_of
                failed.extend(fb.failed_rules)
                passed.extend(fb.passed_rules)
            out.append(
                {
                    "product_id": m.product_id,
                    "bank_id": m.bank_id,
                    "match_id": m.match_id,
                    "computed_at": m.computed_at,
                    "verified": ok,
                    "eligible": ok and not failed,
                    "failed_rules": failed,
                    "passed_rules": passed,
                    "providers": sorted(providers),
                    "data_as_of": as_of,
                }
            )
        return out

    def apply(
        self,
        product_id: str,
        *,
        amount: int,
        term_months: int,
        purpose: str = "",
        region: str = "",
        match_id: str = "",
    ) -> str:
        """One step: sign the application (with the latest match run unless given) and send it."""
        if not match_id:
            runs = {m["product_id"]: m for m in self.matches()}
            found = runs.get(product_id)
            if found is None:
                raise ValidationError(
                    "no match for this product yet",
                    public="no match result for this product yet: grant the bank a matching consent first",
                )
            match_id = str(found["match_id"])
        listed = {p["product_id"]: p for p in self.products()}
        product = listed.get(product_id)
        if product is None:
            raise ValidationError("no such product", public="no such product")
        application = products_pb2.ProductApplication(
            application_id=f"a-{uuid.uuid4().hex}",
            enterprise_uscc=self.credentials.party_id,
            product_id=product_id,
            bank_id=str(product["bank_id"]),
            amount=amount,
            term_months=term_months,
            purpose=purpose,
            region=region,
            requested_at=int(time.time()),
            match_id=match_id,
        )
        signed = mt.sign_application(application, self.credentials.signing_key)
        resp = self._call(
            "ApplyToProduct",
            products_pb2.ApplyToProductRequest(application=signed, enterprise_binding=self.credentials.binding.signed),
        )
        return str(resp.application_id)


__all__ = ["EnterpriseProducts"]
