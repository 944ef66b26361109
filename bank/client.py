"""Institution SDK: verified answers about an enterprise, checked before use.

Nothing is returned to the caller until every provider signature has been
checked against that provider's CA-signed binding (fetched through the node
but verified here against the platform CA, so a curious node cannot swap
keys) and every verdict is bound to this request, this institution, this
enterprise and this consent. A failed check raises ``AnswerRejected``; an
unverified answer is never returned.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc

from xinrong.catalog import Catalog, Form, default_catalog
from xinrong.claims import check_claim, claim_text, parse_claim
from xinrong.errors import SignatureError, XinrongError
from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.layout import PartyCredentials
from xinrong.rpc.channel import DEFAULT_TIMEOUT, secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.serde import FORM_TO_PROTO, PROTO_TO_FORM
from xinrong.tlog.client import LogClient, audit_origin
from xinrong.tlog.note import Checkpoint
from xinrong.tlog.witness import Witness
from xinrong.v1 import common_pb2, node_pb2, node_pb2_grpc, transparency_pb2_grpc

log = logging.getLogger(__name__)

VERDICT_CONTEXT = "xinrong.v1.Verdict"
INDICATOR_CONTEXT = "xinrong.v1.Indicator"
BUNDLE_TYPE = "xinrong.v1.AnswerBundle"

RESULT_NAMES = {
    common_pb2.VERDICT_RESULT_TRUE: "TRUE",
    common_pb2.VERDICT_RESULT_FALSE: "FALSE",
    common_pb2.VERDICT_RESULT_NO_DATA: "NO_DATA",
}


class AnswerRejected(XinrongError):
    """A provider answer failed a signature or binding check; nothing was returned."""


@dataclass(frozen=True)
class CheckedVerdict:
    claim: str
    result: str  # TRUE / FALSE / NO_DATA
    provider: str
    provider_key_id: str
    data_as_of: str
    issued_at: int
    expires_at: int
    signed: common_pb2.SignedVerdict

    @property
    def disputed(self) -> bool:
        """The provider's signed DISPUTED marker: the enterprise objected to this field (异议申诉)."""
        return common_pb2.Verdict.FromString(self.signed.verdict).disputed

    def as_dict(self) -> dict[str, object]:
        return {
            "claim": self.claim,
            "result": self.result,
            "provider": self.provider,
            "provider_key_id": self.provider_key_id,
            "data_as_of": self.data_as_of,
            "expires_at": self.expires_at,
            "signature_ok": True,
        }


@dataclass(frozen=True)
class CheckedIndicator:
    field: str
    form: str
    value: object  # bool | str | {"index", "lower", "upper"} | None (no data)
    provider: str
    provider_key_id: str
    data_as_of: str
    expires_at: int
    signed: common_pb2.SignedIndicator

    @property
    def disputed(self) -> bool:
        """As ``CheckedVerdict.disputed``."""
        return common_pb2.Indicator.FromString(self.signed.indicator).disputed

    def as_dict(self) -> dict[str, object]:
        return {
            "field": self.field,
            "form": self.form,
            "value": self.value,
            "provider": self.provider,
            "data_as_of": self.data_as_of,
            "expires_at": self.expires_at,
            "signature_ok": True,
        }


class BankClient:
    """An institution's connection to the node.

    ``node_target``: the node's address, or several (replicas over one
    database, as a list or "host:port,host:port"): calls are balanced
    round-robin over the healthy ones (``xinrong.rpc.channel``).
    """

    def __init__(
        self,
        node_target: str | Sequence[str],
        credentials: PartyCredentials,
        *,
        node_id: str = "node",
        catalog: Catalog | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        witness: Witness | None = None,
    ) -> None:
        """``witness``: where the newest checkpoint of the node's log is kept (the bank's state dir)."""
        if credentials.role != "institution" or credentials.sealing_key is None:
            raise ValueError("a bank client needs institution credentials with a sealing key")
        self.credentials = credentials
        self.catalog = catalog or default_catalog()
        self.timeout = timeout
        self._ca = credentials.ca
        self._channel = secure_channel(node_target, credentials, server_role="node", server_id=node_id)
        self._stub = node_pb2_grpc.NodeServiceStub(self._channel)
        self._providers: dict[str, VerifiedBinding] = {}
        self._lock = threading.Lock()
        self._node_id = node_id
        self._witness = witness
        self._log: LogClient | None = None
        # The audit leaf of the last Verify / GetIndicators, as the node named it (None: not sequenced yet).
        self.last_audit_leaf: int | None = None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> BankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def party_id(self) -> str:
        return self.credentials.party_id

    def _call(self, method: str, request: object, timeout: float | None = None) -> object:
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None

    # -- registry ------------------------------------------------------------------

    def refresh_providers(self) -> dict[str, VerifiedBinding]:
        """Fetch provider bindings through the node and verify each against the CA."""
        resp = self._call("ListParties", node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_PROVIDER))
        assert isinstance(resp, node_pb2.ListPartiesResponse)
        verified: dict[str, VerifiedBinding] = {}
        for signed in resp.bindings:
            try:
                b = verify_binding(self._ca, signed, expect_role="provider")
            except SignatureError:
                log.warning("ignoring a provider binding that fails the CA check")
                continue
            if b.provider != b.party_id or b.provider not in self.catalog.providers:
                log.warning("ignoring provider binding %s: not a catalog provider", b.party_id)
                continue
            verified[b.provider] = b
        with self._lock:
            self._providers = verified
        return verified

    def provider_binding(self, provider: str) -> VerifiedBinding:
        with self._lock:
            binding = self._providers.get(provider)
        if binding is None:
            binding = self.refresh_providers().get(provider)
        if binding is None:
            raise AnswerRejected(f"no CA-verified binding for provider {provider!r}")
        return binding

    # -- the node's transparency log -------------------------------------------------

    def node_log(self) -> LogClient:
        """The node's log, its checkpoint key from the node's CA-checked binding."""
        if self._log is None:
            resp = self._call("ListParties", node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_NODE))
            assert isinstance(resp, node_pb2.ListPartiesResponse)
            keys = []
            for signed in resp.bindings:
                try:
                    keys.append(verify_binding(self._ca, signed, expect_role="node", expect_party_id=self._node_id))
                except SignatureError:
                    continue
            if not keys:
                raise AnswerRejected(f"no CA-verified binding of the node {self._node_id!r}")
            stub = transparency_pb2_grpc.TransparencyServiceStub(self._channel)
            self._log = LogClient(stub, audit_origin(self._node_id), keys[0].verify_key.raw, self._witness)
        return self._log

    def prove_access(self, leaf_index: int) -> Checkpoint:
        """Prove that audit leaf ``leaf_index`` (the access acted on) is in the node's log, as witnessed."""
        try:
            return self.node_log().prove_leaf(leaf_index)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None

    # -- consents ------------------------------------------------------------------

    def register_consent(self, signed: common_pb2.SignedConsent) -> node_pb2.RegisterConsentResponse:
        resp = self._call("RegisterConsent", node_pb2.RegisterConsentRequest(consent=signed))
        assert isinstance(resp, node_pb2.RegisterConsentResponse)
        return resp

    def consent_status(self, consent_id: str) -> node_pb2.GetConsentStatusResponse:
        resp = self._call("GetConsentStatus", node_pb2.GetConsentStatusRequest(consent_id=consent_id))
        assert isinstance(resp, node_pb2.GetConsentStatusResponse)
        return resp

    # -- verification -----------------------------------------------------------------

    def verify(
        self,
        enterprise: str,
        claims: Sequence[str | common_pb2.Claim],
        consent_id: str,
        *,
        request_id: str | None = None,
        precheck: bool = True,
    ) -> list[CheckedVerdict]:
        """Ask the node to verify claims; return only answers whose signatures check.

        With precheck (the default) a claim the probing policy refuses fails
        here, before anything is sent; precheck=False sends it anyway so the
        node's own refusal can be seen (the demo and the adversarial tests).
        """
        parsed = [parse_claim(c) if isinstance(c, str) else c for c in claims]
        # Canonical texts as the providers will sign them.
        wanted: set[str] = set()
        for c in parsed:
            try:
                wanted.add(check_claim(self.catalog, c).text)
            except XinrongError:
                if precheck:
                    raise
        request_id = request_id or str(uuid.uuid4())
        req = node_pb2.VerifyRequest(
            request_id=request_id,
            requested_at=int(time.time()),
            enterprise_uscc=enterprise,
            consent_id=consent_id,
            claims=parsed,
        )
        resp = self._call("Verify", req)
        assert isinstance(resp, node_pb2.VerifyResponse)
        self.last_audit_leaf = resp.audit_leaf_index if resp.HasField("audit_leaf_index") else None
        out = self._open_verdicts(resp.answers, request_id, enterprise, consent_id)
        answered = {v.claim for v in out}
        if answered != wanted or len(out) != len(wanted):
            raise AnswerRejected("the providers' answers do not match the claims asked")
        return out

    def open_verdicts(
        self, response: node_pb2.VerifyResponse, request_id: str, enterprise: str, consent_id: str
    ) -> list[CheckedVerdict]:
        """Check a VerifyResponse obtained outside ``verify`` (e.g. by a load generator)."""
        return self._open_verdicts(response.answers, request_id, enterprise, consent_id)

    def _open_bundle(self, answer: node_pb2.ProviderAnswer, request_id: str) -> common_pb2.AnswerBundle:
        assert self.credentials.sealing_key is not None
        raw = self.credentials.sealing_key.open(
            answer.sealed, recipient_id=self.party_id, content_type=BUNDLE_TYPE, context=request_id
        )
        bundle = common_pb2.AnswerBundle()
        bundle.ParseFromString(raw)
        return bundle

    def _open_verdicts(
        self, answers: Iterable[node_pb2.ProviderAnswer], request_id: str, enterprise: str, consent_id: str
    ) -> list[CheckedVerdict]:
        now = time.time()
        out: list[CheckedVerdict] = []
        for answer in answers:
            binding = self.provider_binding(answer.provider)
            try:
                bundle = self._open_bundle(answer, request_id)
            except SignatureError:
                raise AnswerRejected(f"answer from {answer.provider} cannot be opened") from None
            for signed in bundle.verdicts:
                try:
                    binding.verify_key.verify(VERDICT_CONTEXT, signed.verdict, signed.signature)
                except SignatureError:
                    raise AnswerRejected(f"a verdict from {answer.provider} has a bad signature") from None
                v = common_pb2.Verdict()
                v.ParseFromString(signed.verdict)
                spec = self.catalog.fields.get(v.claim.field)
                if (
                    v.request_id != request_id
                    or v.audience != self.party_id
                    or v.enterprise_uscc != enterprise
                    or v.consent_id != consent_id
                    or v.provider != binding.provider
                    or v.provider_key_id != binding.key_id
                    or spec is None
                    or spec.provider != binding.provider
                    or v.claim_text != claim_text(v.claim)
                    or v.result not in RESULT_NAMES
                    or v.expires_at <= now
                ):
                    raise AnswerRejected(f"a verdict from {answer.provider} is not bound to this request")
                out.append(
                    CheckedVerdict(
                        claim=v.claim_text,
                        result=RESULT_NAMES[v.result],
                        provider=v.provider,
                        provider_key_id=v.provider_key_id,
                        data_as_of=v.data_as_of,
                        issued_at=v.issued_at,
                        expires_at=v.expires_at,
                        signed=signed,
                    )
                )
        return out

    def indicators(
        self,
        enterprise: str,
        queries: Sequence[tuple[str, Form | str]],
        consent_id: str,
        *,
        request_id: str | None = None,
    ) -> list[CheckedIndicator]:
        """Fields in published forms (flag, grade, bracket), signature-checked."""
        request_id = request_id or str(uuid.uuid4())
        pq = [node_pb2.IndicatorQuery(field=f, form=FORM_TO_PROTO[Form(form)]) for f, form in queries]
        req = node_pb2.GetIndicatorsRequest(
            request_id=request_id,
            requested_at=int(time.time()),
            enterprise_uscc=enterprise,
            consent_id=consent_id,
            queries=pq,
        )
        resp = self._call("GetIndicators", req)
        assert isinstance(resp, node_pb2.GetIndicatorsResponse)
        self.last_audit_leaf = resp.audit_leaf_index if resp.HasField("audit_leaf_index") else None
        now = time.time()
        out: list[CheckedIndicator] = []
        for answer in resp.answers:
            binding = self.provider_binding(answer.provider)
            try:
                bundle = self._open_bundle(answer, request_id)
            except SignatureError:
                raise AnswerRejected(f"answer from {answer.provider} cannot be opened") from None
            for signed in bundle.indicators:
                try:
                    binding.verify_key.verify(INDICATOR_CONTEXT, signed.indicator, signed.signature)
                except SignatureError:
                    raise AnswerRejected(f"an indicator from {answer.provider} has a bad signature") from None
                ind = common_pb2.Indicator()
                ind.ParseFromString(signed.indicator)
                spec = self.catalog.fields.get(ind.field)
                if (
                    ind.request_id != request_id
                    or ind.audience != self.party_id
                    or ind.enterprise_uscc != enterprise
                    or ind.consent_id != consent_id
                    or ind.provider != binding.provider
                    or ind.provider_key_id != binding.key_id
                    or spec is None
                    or spec.provider != binding.provider
                    or ind.expires_at <= now
                ):
                    raise AnswerRejected(f"an indicator from {answer.provider} is not bound to this request")
                kind = ind.WhichOneof("value")
                value: object
                if kind == "no_data" or kind is None:
                    value = None
                elif kind == "bracket":
                    value = {"index": ind.bracket.index, "lower": ind.bracket.lower, "upper": ind.bracket.upper or None}
                else:
                    value = getattr(ind, kind)
                out.append(
                    CheckedIndicator(
                        field=ind.field,
                        form=str(PROTO_TO_FORM.get(ind.form, "")),
                        value=value,
                        provider=ind.provider,
                        provider_key_id=ind.provider_key_id,
                        data_as_of=ind.data_as_of,
                        expires_at=ind.expires_at,
                        signed=signed,
                    )
                )
        asked = {(q.field, q.form) for q in pq}
        got = {(i.field, FORM_TO_PROTO[Form(i.form)]) for i in out}
        if asked != got or len(out) != len(asked):
            raise AnswerRejected("the providers' answers do not match the fields asked")
        return out
