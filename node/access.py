"""Verify and GetIndicators: what is asked, one admission, then the agents.

Each method turns its request into an ``Ask`` (the catalog's probing
policy: published ladders, brackets and forms only), has ``Admission``
decide (``xinrong.node.admission`` documents the order of checks and why
the early ones are no oracle), and fans the admitted request out to the
providers concerned. The answers are sealed by each agent to the caller;
the node relays bytes it cannot open.

Runs on the node's event loop: the admission blocks the loop for its
fraction of a millisecond, which is cheaper than handing the request to a
thread and back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xinrong.cache import BoundedCache, digest_key
from xinrong.catalog import Catalog, Form
from xinrong.claims import (
    CLAIM_CACHE_BYTES,
    CheckedClaim,
    check_claim,
    check_indicator,
    checked_claim_weight,
    claim_text,
)
from xinrong.errors import Reason, XinrongError, invalid
from xinrong.node.admission import INDICATORS, VERIFICATION, AccessRequest, Admission, Admitted, Ask, Purpose, Subject
from xinrong.node.audit import claims_digest
from xinrong.node.routing import AgentPool
from xinrong.rpc.auth import Peer
from xinrong.serde import FORM_TO_PROTO, PROTO_TO_FORM
from xinrong.v1 import agent_pb2, common_pb2, node_pb2

# Audit reason of an admitted request whose caller went away before the answer.
CANCELLED = "CANCELLED"

# Proto enum values as plain ints (requests carry ints on the Python side).
_FORM_OF: dict[int, Form] = {int(k): v for k, v in PROTO_TO_FORM.items()}

FanOut = Callable[..., Awaitable[list[tuple[str, common_pb2.SealedBox]]]]


@dataclass(frozen=True)
class VerifyInput:
    request_id: str
    requested_at: int
    enterprise_uscc: str
    consent_id: str
    claims: tuple[common_pb2.Claim, ...]


@dataclass(frozen=True)
class IndicatorsInput:
    request_id: str
    requested_at: int
    enterprise_uscc: str
    consent_id: str
    queries: tuple[tuple[str, int], ...]  # (field, DisclosureForm)


@dataclass(frozen=True)
class Answers:
    request_id: str
    answers: tuple[tuple[str, common_pb2.SealedBox], ...]
    audit_leaf_index: int | None = None  # the ALLOWED entry's leaf in the transparency log


def _ask(needs: list[tuple[str, Form]], texts: list[str], items: dict[str, list[Any]]) -> Ask:
    return Ask(
        needs=tuple(needs),
        fields=tuple(sorted({field for field, _form in needs})),
        claims_sha256=claims_digest(texts),
        items=items,
    )


@dataclass(frozen=True)
class ClaimsAsk:
    """Verify's claims against the probing policy; accepted claims are cached by their exact bytes."""

    claims: tuple[common_pb2.Claim, ...]
    catalog: Catalog
    limit: int
    cache: BoundedCache[bytes, CheckedClaim]

    def check(self) -> Ask:
        if not self.claims or len(self.claims) > self.limit:
            raise invalid(f"{len(self.claims)} claims: a request carries 1 to {self.limit}")
        needs: list[tuple[str, Form]] = []
        texts: list[str] = []
        items: dict[str, list[Any]] = {}
        for claim in self.claims:
            # A digest, not the bytes: a claim may carry megabytes of unknown
            # fields, and the key would keep them (A3: 40 calls took 361 MB).
            key = digest_key(claim.SerializeToString(deterministic=True))
            checked = self.cache.get(key)
            if checked is None:
                # Banks ask the same published ladder steps all day. A refused
                # claim is re-checked every time, so junk cannot fill the cache.
                checked = check_claim(self.catalog, claim)
                self.cache.put(key, checked)
            needs.append((checked.spec.key, checked.form))
            texts.append(checked.text)
            items.setdefault(checked.spec.provider, []).append(checked.claim)
        return _ask(needs, texts, items)

    def raw_digest(self) -> str:
        return claims_digest([claim_text(c) for c in self.claims])


@dataclass(frozen=True)
class _IndicatorsAsk:
    queries: tuple[tuple[str, int], ...]
    catalog: Catalog
    limit: int

    def check(self) -> Ask:
        if not self.queries or len(self.queries) > self.limit:
            raise invalid(f"{len(self.queries)} queries: a request carries 1 to {self.limit}")
        needs: list[tuple[str, Form]] = []
        texts: list[str] = []
        items: dict[str, list[Any]] = {}
        for field, proto_form in self.queries:
            form = _FORM_OF.get(proto_form)
            if form is None:
                raise XinrongError("indicator without a disclosure form", reason=Reason.INVALID_CLAIM)
            spec = check_indicator(self.catalog, field, form)
            needs.append((spec.key, form))
            texts.append(f"{spec.key}:{form.value}")
            items.setdefault(spec.provider, []).append(
                node_pb2.IndicatorQuery(field=spec.key, form=FORM_TO_PROTO[form])
            )
        return _ask(needs, texts, items)

    def raw_digest(self) -> str:
        return claims_digest([f"{field}:{form}" for field, form in self.queries])


class AccessService:
    """Verify and GetIndicators for institutions."""

    def __init__(self, admission: Admission, agents: AgentPool, catalog: Catalog, *, max_claims: int) -> None:
        self._admission = admission
        self._agents = agents
        self._catalog = catalog
        self._max_claims = max_claims
        self.claim_cache: BoundedCache[bytes, CheckedClaim] = BoundedCache(
            4096, max_bytes=CLAIM_CACHE_BYTES, weigh=checked_claim_weight
        )

    async def verify(self, caller: Peer, req: VerifyInput) -> Answers:
        asking = ClaimsAsk(req.claims, self._catalog, self._max_claims, self.claim_cache)
        admitted = await self._admit(VERIFICATION, caller, req, asking)

        def build(items: list[Any]) -> agent_pb2.EvaluateClaimsRequest:
            return agent_pb2.EvaluateClaimsRequest(
                request_id=req.request_id,
                requested_at=req.requested_at,
                enterprise_uscc=req.enterprise_uscc,
                consent=admitted.admitted[0].record.verified.signed,
                audience_binding=admitted.audience.signed,
                claims=items,
            )

        return await self._fan_out(admitted, build, self._agents.evaluate_claims)

    async def get_indicators(self, caller: Peer, req: IndicatorsInput) -> Answers:
        asking = _IndicatorsAsk(req.queries, self._catalog, self._max_claims)
        admitted = await self._admit(INDICATORS, caller, req, asking)

        def build(items: list[Any]) -> agent_pb2.EvaluateIndicatorsRequest:
            return agent_pb2.EvaluateIndicatorsRequest(
                request_id=req.request_id,
                requested_at=req.requested_at,
                enterprise_uscc=req.enterprise_uscc,
                consent=admitted.admitted[0].record.verified.signed,
                audience_binding=admitted.audience.signed,
                queries=items,
            )

        return await self._fan_out(admitted, build, self._agents.evaluate_indicators)

    async def _admit(
        self, purpose: Purpose, caller: Peer, req: VerifyInput | IndicatorsInput, asking: ClaimsAsk | _IndicatorsAsk
    ) -> Admitted:
        subject = Subject(enterprise=req.enterprise_uscc, consent_id=req.consent_id)
        request = AccessRequest(purpose, caller, req.request_id, req.requested_at, (subject,), asking)
        return await self._admission.admit_on_loop(request)

    async def _fan_out(self, admitted: Admitted, build: Callable[[list[Any]], object], fan_out: FanOut) -> Answers:
        """Ask the agents outside the lock: they answer concurrently for many requests.

        The admission's unit is committed by each agent stream right before
        the batch carrying this request is written (node.routing), one
        COMMIT per batch.
        """
        requests = {provider: build(items) for provider, items in admitted.ask.items.items()}
        try:
            answers: Sequence[tuple[str, common_pb2.SealedBox]] = await fan_out(
                requests, recipient_id=admitted.request.caller.party_id, durable_token=admitted.token
            )
        except XinrongError as failure:
            self._admission.failed(admitted, failure.reason.value, data_read=failure.data_read)
            raise
        except asyncio.CancelledError:
            # The institution hung up (or its deadline passed) while agents
            # were answering: the use stays consumed, and the log says the
            # answer never left.
            self._admission.failed(admitted, CANCELLED)
            raise
        leaf = admitted.admitted[0].leaf_index if admitted.admitted else None
        return Answers(request_id=admitted.request.request_id, answers=tuple(answers), audit_leaf_index=leaf)


__all__ = ["CANCELLED", "AccessService", "Answers", "ClaimsAsk", "IndicatorsInput", "VerifyInput"]
