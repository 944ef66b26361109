"""Test support for the node tests.

``FakeAgent`` is a small AgentService that behaves like a provider agent on
the wire: it accepts only the node's certificate, re-verifies the consent
and the institution's binding, enforces the probing policy, evaluates
claims on an in-memory table, signs every verdict with the provider's
Ed25519 key and seals the bundle to the institution with HPKE. Nothing is
canned: the bank-side helpers here open the box and check each signature
against the provider's CA-signed binding, so a node that altered a byte
would fail the tests.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest

from xinrong import uscc as uscc_mod
from xinrong.catalog import Catalog, Form
from xinrong.claims import check_claim, check_indicator, evaluate, parse_claim
from xinrong.consent import (
    build_consent,
    check_consent_use,
    check_data_period,
    parse_scope,
    sign_consent,
    sign_revocation,
    verify_revocation,
    verify_signed_consent,
)
from xinrong.errors import Reason, XinrongError
from xinrong.keys.binding import verify_binding
from xinrong.keys.layout import PartyCredentials, party_dir
from xinrong.keys.sealing import seal
from xinrong.node.config import load_config, render_config
from xinrong.node.db import open_for_tools
from xinrong.node.server import NodeServer, start_node
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error, status_fields
from xinrong.rpc.server import RunningServer, ServiceBinding, build_server
from xinrong.serde import FORM_TO_PROTO, PROTO_TO_FORM
from xinrong.v1 import agent_pb2, agent_pb2_grpc, common_pb2, node_pb2, node_pb2_grpc

BUNDLE_TYPE = "xinrong.v1.AnswerBundle"
VERDICT_CONTEXT = "xinrong.v1.Verdict"
INDICATOR_CONTEXT = "xinrong.v1.Indicator"
DATA_AS_OF = "2026-06-30"

# Valid USCCs (GB 32100 check characters computed by xinrong.uscc).
ACME = uscc_mod.make("9", "1", "130100", "MA0ACME1")
BETA = uscc_mod.make("9", "1", "130200", "MA0BETA2")
GAMMA = uscc_mod.make("9", "1", "130300", "MA0GAMM3")

# Distinctive raw values: a test scans the node's database for them.
RAW_VALUES: dict[tuple[str, str], Any] = {
    (ACME, "tax.credit_grade"): "A",
    (ACME, "tax.in_arrears"): False,
    (ACME, "tax.vat_paid_last_year"): Decimal("734512.37"),
    (ACME, "tax.consecutive_normal_months"): Decimal("27"),
    (ACME, "social_insurance.consecutive_months"): Decimal("19"),
    (ACME, "social_insurance.avg_insured_headcount"): Decimal("83"),
    (ACME, "social_insurance.avg_employer_contribution"): Decimal("48213.77"),
    (ACME, "social_insurance.in_arrears"): False,
    (BETA, "tax.credit_grade"): "C",
    (BETA, "tax.vat_paid_last_year"): Decimal("91234.56"),
    (GAMMA, "tax.credit_grade"): "B",
}


class FakeAgent(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    """A provider agent for node tests: real checks, real signatures, real sealing."""

    def __init__(self, creds: PartyCredentials, catalog: Catalog, values: dict[tuple[str, str], Any]) -> None:
        self.creds = creds
        self.provider = creds.binding.provider
        self.catalog = catalog
        self.ca = creds.ca
        self.values = {k: v for k, v in values.items() if k[1].split(".")[0] == self.provider}
        self.seen: set[tuple[str, str]] = set()
        self.revoked: set[str] = set()
        self.calls: list[str] = []
        self.delay = 0.0
        self.refuse_with: Reason | None = None
        self._lock = threading.Lock()

    def _prepare(self, req: Any, context: grpc.ServicerContext, method: str) -> tuple[Any, Any]:
        audience = verify_binding(self.ca, req.audience_binding, expect_role="institution")
        with self._lock:
            self.calls.append(method)
            # Like the real agent: request ids are per institution.
            if (audience.party_id, req.request_id) in self.seen:
                raise XinrongError("replay", reason=Reason.REQUEST_REPLAYED)
            self.seen.add((audience.party_id, req.request_id))
        if self.delay:
            time.sleep(self.delay)
        if self.refuse_with is not None:
            raise XinrongError("configured refusal", reason=self.refuse_with)
        verified = verify_signed_consent(self.ca, req.consent)
        return audience, verified

    def _seal(self, bundle: common_pb2.AnswerBundle, audience: Any, request_id: str) -> common_pb2.SealedBox:
        return seal(
            bundle.SerializeToString(deterministic=True),
            recipient_id=audience.party_id,
            recipient_public_raw=audience.sealing_public_raw,
            content_type=BUNDLE_TYPE,
            context=request_id,
        )

    def _state(self, consent_id: str) -> int:
        with self._lock:
            return common_pb2.CONSENT_STATE_REVOKED if consent_id in self.revoked else common_pb2.CONSENT_STATE_ACTIVE

    def EvaluateClaims(
        self, req: agent_pb2.EvaluateClaimsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EvaluateClaimsResponse:
        audience, verified = self._prepare(req, context, "EvaluateClaims")
        checked = [check_claim(self.catalog, c) for c in req.claims]
        if any(c.spec.provider != self.provider for c in checked):
            raise XinrongError("claim for another provider", reason=Reason.INVALID_ARGUMENT)
        now = time.time()
        check_consent_use(
            verified,
            enterprise_uscc=req.enterprise_uscc,
            audience_id=audience.party_id,
            needs=[(c.spec.key, c.form) for c in checked],
            now=now,
            state=self._state(verified.consent_id),
        )
        check_data_period(verified, DATA_AS_OF)
        bundle = common_pb2.AnswerBundle()
        for c in checked:
            truth = evaluate(c, self.values.get((req.enterprise_uscc, c.spec.key)))
            result = (
                common_pb2.VERDICT_RESULT_NO_DATA
                if truth is None
                else common_pb2.VERDICT_RESULT_TRUE
                if truth
                else common_pb2.VERDICT_RESULT_FALSE
            )
            verdict = common_pb2.Verdict(
                request_id=req.request_id,
                enterprise_uscc=req.enterprise_uscc,
                claim=c.claim,
                claim_text=c.text,
                result=result,
                data_as_of=DATA_AS_OF,
                consent_id=verified.consent_id,
                audience=audience.party_id,
                issued_at=int(now),
                expires_at=int(now) + 86_400,
                provider=self.provider,
                provider_key_id=self.creds.signing_key.key_id,
            )
            raw = verdict.SerializeToString(deterministic=True)
            bundle.verdicts.add(verdict=raw, signature=self.creds.signing_key.sign(VERDICT_CONTEXT, raw))
        return agent_pb2.EvaluateClaimsResponse(sealed=self._seal(bundle, audience, req.request_id))

    def EvaluateIndicators(
        self, req: agent_pb2.EvaluateIndicatorsRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EvaluateIndicatorsResponse:
        audience, verified = self._prepare(req, context, "EvaluateIndicators")
        now = time.time()
        needs = []
        for q in req.queries:
            form = PROTO_TO_FORM[q.form]
            check_indicator(self.catalog, q.field, form)
            needs.append((q.field, form))
        check_consent_use(
            verified,
            enterprise_uscc=req.enterprise_uscc,
            audience_id=audience.party_id,
            needs=needs,
            now=now,
            state=self._state(verified.consent_id),
        )
        bundle = common_pb2.AnswerBundle()
        for q in req.queries:
            spec = self.catalog.fields[q.field]
            value = self.values.get((req.enterprise_uscc, q.field))
            ind = common_pb2.Indicator(
                request_id=req.request_id,
                enterprise_uscc=req.enterprise_uscc,
                field=q.field,
                form=q.form,
                data_as_of=DATA_AS_OF,
                consent_id=verified.consent_id,
                audience=audience.party_id,
                issued_at=int(now),
                expires_at=int(now) + 86_400,
                provider=self.provider,
                provider_key_id=self.creds.signing_key.key_id,
            )
            if value is None:
                ind.no_data = True
            elif PROTO_TO_FORM[q.form] is Form.FLAG:
                ind.flag = bool(value)
            elif PROTO_TO_FORM[q.form] is Form.GRADE:
                ind.grade = str(value)
            else:
                index = spec.bracket_index(value)
                lower, upper = spec.bracket_bounds(index)
                ind.bracket.index, ind.bracket.lower = index, str(lower)
                ind.bracket.upper = "" if upper is None else str(upper)
            raw = ind.SerializeToString(deterministic=True)
            bundle.indicators.add(indicator=raw, signature=self.creds.signing_key.sign(INDICATOR_CONTEXT, raw))
        return agent_pb2.EvaluateIndicatorsResponse(sealed=self._seal(bundle, audience, req.request_id))

    def UpdateConsentStatus(
        self, req: agent_pb2.UpdateConsentStatusRequest, context: grpc.ServicerContext
    ) -> agent_pb2.UpdateConsentStatusResponse:
        with self._lock:
            self.calls.append("UpdateConsentStatus")
        revocation = verify_revocation(self.ca, req.revocation, req.enterprise_binding)
        with self._lock:
            self.revoked.add(revocation.consent_id)
        return agent_pb2.UpdateConsentStatusResponse(
            consent_id=revocation.consent_id, state=common_pb2.CONSENT_STATE_REVOKED
        )

    def GetAgentInfo(
        self, req: agent_pb2.GetAgentInfoRequest, context: grpc.ServicerContext
    ) -> agent_pb2.GetAgentInfoResponse:
        return agent_pb2.GetAgentInfoResponse(
            provider=self.provider, data_as_of=DATA_AS_OF, enterprises=len({k[0] for k in self.values})
        )

    def EvaluateStream(self, batches: Any, context: grpc.ServicerContext) -> Any:
        """Each call of each batch answered like the unary method, refusals per call."""
        for batch in batches:
            results = []
            for call in batch.calls:
                try:
                    if call.WhichOneof("call") == "claims":
                        sealed = self.EvaluateClaims(call.claims, context).sealed
                    else:
                        sealed = self.EvaluateIndicators(call.indicators, context).sealed
                    results.append(agent_pb2.AgentCallResult(call_id=call.call_id, sealed=sealed))
                except Exception as exc:
                    code, reason, message = status_fields(exc)
                    results.append(
                        agent_pb2.AgentCallResult(
                            call_id=call.call_id, error=agent_pb2.CallError(code=code, reason=reason, message=message)
                        )
                    )
            yield agent_pb2.EvaluateStreamResponse(results=results)


@dataclass
class AgentHandle:
    name: str
    fake: FakeAgent
    server: RunningServer | None
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0.5)
            self.server = None

    def start(self, pki: Any) -> None:
        """(Re)start on the same port, keeping the fake's memory (seen ids, revocations)."""
        assert self.server is None
        self.server = _serve_fake(pki.provider(self.name), self.fake, f"127.0.0.1:{self.port}")


def _serve_fake(creds: PartyCredentials, fake: FakeAgent, bind: str) -> RunningServer:
    server = build_server(
        creds,
        bind,
        [
            ServiceBinding(
                "xinrong.v1.AgentService",
                lambda s: agent_pb2_grpc.add_AgentServiceServicer_to_server(fake, s),
                allowed_roles=frozenset({"node"}),
            )
        ],
        max_workers=8,
    )
    server.set_serving(True)
    return server


def free_port() -> int:
    """An ephemeral port nobody listens on (for an agent that is down at first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_agent(
    pki: Any, catalog: Catalog, name: str, *, values: dict[tuple[str, str], Any] | None = None, running: bool = True
) -> AgentHandle:
    fake = FakeAgent(pki.provider(name), catalog, RAW_VALUES if values is None else values)
    if not running:
        return AgentHandle(name, fake, None, free_port())
    server = _serve_fake(pki.provider(name), fake, "127.0.0.1:0")
    return AgentHandle(name, fake, server, server.port)


# -- node harness --------------------------------------------------------------


@dataclass
class NodeHarness:
    pki: Any
    catalog: Catalog
    workdir: Path
    agents: dict[str, AgentHandle]
    institutions: tuple[str, ...]
    options: dict[str, object]
    clock: Callable[[], float] | None = None
    node: NodeServer | None = None
    _channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.workdir / "node.toml"

    @property
    def db_path(self) -> Path:
        return self.workdir / "node.db"

    def write_config(self) -> Path:
        root = self.pki.root
        text = render_config(
            bind="127.0.0.1:0",
            credentials=party_dir(root, "node", "node"),
            ca_cert=root / "ca" / "ca.crt",
            db="node.db",
            providers=[
                (a.name, a.address, party_dir(root, "provider", a.name) / "binding.pb") for a in self.agents.values()
            ],
            institutions=[(i, party_dir(root, "institution", i) / "binding.pb") for i in self.institutions],
            **self.options,
        )
        self.config_path.write_text(text)
        return self.config_path

    def start(self) -> NodeServer:
        self.write_config()
        self.node = start_node(load_config(self.config_path), clock=self.clock)
        return self.node

    @property
    def backend(self) -> str:
        return "postgres" if "database" in self.options else "sqlite"

    def flush_audit(self) -> None:
        """Chain every staged audit event now (PostgreSQL; a no-op on SQLite).

        Another replica's sequencer may hold the lock mid-round (then ``sequence()``
        is 0 with events still staged): wait until nothing is staged, so its round has
        committed too.
        """
        assert self.node is not None
        audit = self.node.core.audit
        sequence = getattr(audit, "sequence", None)
        pending = getattr(audit, "pending", None)
        if sequence is None or pending is None:
            return
        deadline = time.monotonic() + 10
        while sequence() > 0 or pending() > 0:
            if time.monotonic() > deadline:
                raise AssertionError("staged audit events were not chained within 10 s")
            time.sleep(0.005)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read the running node's database (either backend; ``?`` placeholders)."""
        assert self.node is not None
        return self.node.core.db.query(sql, params)

    def tools_connection(self) -> Any:
        """A read-only connection to the node's database (either backend), audit log sequenced first."""
        if self.node is not None:
            self.flush_audit()
        return open_for_tools(load_config(self.write_config()))

    def stop(self) -> None:
        for ch in self._channels:
            ch.close()
        self._channels.clear()
        if self.node is not None:
            self.node.stop(0.5)
            self.node = None

    def restart(self) -> NodeServer:
        self.stop()
        return self.start()

    def stub(self, creds: PartyCredentials) -> Any:
        assert self.node is not None
        channel = secure_channel(f"127.0.0.1:{self.node.port}", creds, server_role="node", server_id="node")
        self._channels.append(channel)
        return node_pb2_grpc.NodeServiceStub(channel)

    def bank(self, name: str = "bank-a") -> Any:
        return self.stub(self.pki.institution(name))

    def enterprise(self, uscc: str) -> Any:
        return self.stub(self.pki.enterprise(uscc))


@contextmanager
def harness_factory(
    pki: Any, catalog: Catalog, tmp_path: Path, *, database: Callable[[], dict[str, Any]] | None = None
) -> Iterator[Callable[..., NodeHarness]]:
    """Makes node harnesses with fake agents; stops them all on exit (the ``make_harness`` fixture).

    ``database``: makes the ``[database]`` table of a fresh PostgreSQL database
    for each harness (the node on PostgreSQL); None keeps SQLite.
    """
    made: list[NodeHarness] = []
    handles: list[AgentHandle] = []

    def make(
        providers: Sequence[str] = ("tax", "social_insurance"),
        *,
        down: Sequence[str] = (),
        institutions: Sequence[str] = ("bank-a", "bank-b"),
        clock: Callable[[], float] | None = None,
        start: bool = True,
        **options: object,
    ) -> NodeHarness:
        if database is not None and "database" not in options:
            options["database"] = database()
        agents = {}
        for name in providers:
            handle = start_agent(pki, catalog, name, running=name not in down)
            handles.append(handle)
            agents[name] = handle
        workdir = tmp_path / f"node{len(made)}"
        workdir.mkdir()
        harness = NodeHarness(pki, catalog, workdir, agents, tuple(institutions), dict(options), clock)
        made.append(harness)
        if start:
            harness.start()
        return harness

    yield make
    for h in made:
        h.stop()
    for a in handles:
        a.stop()


# -- enterprise and bank helpers ----------------------------------------------


def grant(
    pki: Any,
    catalog: Catalog,
    enterprise: str = ACME,
    grantee: str = "bank-a",
    *,
    scope: Sequence[str] = ("tax.*", "social_insurance.*"),
    valid_from: int | None = None,
    valid_until: int | None = None,
    max_uses: int = 50,
    max_uses_per_day: int = 0,
    consent_id: str | None = None,
    signer: str | None = None,
    purpose: str = "loan_application",
) -> common_pb2.SignedConsent:
    """A consent signed by the enterprise (or, to forge one, by another enterprise's key)."""
    now = int(time.time())
    creds = pki.enterprise(enterprise)
    consent = build_consent(
        enterprise_uscc=enterprise,
        enterprise_key_id=creds.signing_key.key_id,
        grantee_id=grantee,
        purpose=purpose,
        scope=parse_scope(catalog, scope),
        data_period_from="2026-01-01",
        data_period_to="2026-12-31",
        valid_from=now - 60 if valid_from is None else valid_from,
        valid_until=now + 3600 if valid_until is None else valid_until,
        max_uses=max_uses,
        max_uses_per_day=max_uses_per_day,
        consent_id=consent_id,
        fetch_type="periodic" if max_uses_per_day else "one_time",
    )
    key_creds = pki.enterprise(signer) if signer else creds
    return sign_consent(consent, key_creds.signing_key, creds.binding.signed)


def revocation(
    pki: Any, consent: common_pb2.SignedConsent, *, signer: str | None = None
) -> common_pb2.SignedConsentRevocation:
    parsed = common_pb2.Consent()
    parsed.ParseFromString(consent.consent)
    key = pki.enterprise(signer or parsed.enterprise_uscc).signing_key
    return sign_revocation(parsed.consent_id, parsed.enterprise_uscc, key)


def consent_id_of(signed: common_pb2.SignedConsent) -> str:
    parsed = common_pb2.Consent()
    parsed.ParseFromString(signed.consent)
    return parsed.consent_id


def register(stub: Any, signed: common_pb2.SignedConsent) -> Any:
    return stub.RegisterConsent(node_pb2.RegisterConsentRequest(consent=signed), timeout=10)


def verify_request(
    consent: str | common_pb2.SignedConsent,
    claims: Sequence[str] = ("tax.credit_grade in A,B",),
    *,
    enterprise: str = ACME,
    request_id: str | None = None,
    requested_at: float | None = None,
) -> node_pb2.VerifyRequest:
    cid = consent if isinstance(consent, str) else consent_id_of(consent)
    return node_pb2.VerifyRequest(
        request_id=request_id or str(uuid.uuid4()),
        requested_at=int(time.time() if requested_at is None else requested_at),
        enterprise_uscc=enterprise,
        consent_id=cid,
        claims=[parse_claim(c) for c in claims],
    )


def indicators_request(
    consent: str | common_pb2.SignedConsent, queries: Sequence[tuple[str, str]], *, enterprise: str = ACME
) -> node_pb2.GetIndicatorsRequest:
    cid = consent if isinstance(consent, str) else consent_id_of(consent)
    return node_pb2.GetIndicatorsRequest(
        request_id=str(uuid.uuid4()),
        requested_at=int(time.time()),
        enterprise_uscc=enterprise,
        consent_id=cid,
        queries=[node_pb2.IndicatorQuery(field=f, form=FORM_TO_PROTO[Form(form)]) for f, form in queries],
    )


def open_verdicts(pki: Any, bank: str, response: Any, request_id: str) -> dict[str, str]:
    """Bank side: open each sealed box and check every signature; {claim text: result}."""
    creds = pki.institution(bank)
    out: dict[str, str] = {}
    for answer in response.answers:
        provider = verify_binding(creds.ca, pki.provider(answer.provider).binding.signed, expect_role="provider")
        raw = creds.sealing_key.open(answer.sealed, recipient_id=bank, content_type=BUNDLE_TYPE, context=request_id)
        bundle = common_pb2.AnswerBundle()
        bundle.ParseFromString(raw)
        for signed in bundle.verdicts:
            provider.verify_key.verify(VERDICT_CONTEXT, signed.verdict, signed.signature)
            verdict = common_pb2.Verdict()
            verdict.ParseFromString(signed.verdict)
            assert verdict.request_id == request_id and verdict.audience == bank
            assert verdict.provider == answer.provider
            out[verdict.claim_text] = common_pb2.VerdictResult.Name(verdict.result).removeprefix("VERDICT_RESULT_")
    return out


def open_indicators(pki: Any, bank: str, response: Any, request_id: str) -> dict[str, object]:
    creds = pki.institution(bank)
    out: dict[str, object] = {}
    for answer in response.answers:
        provider = pki.provider(answer.provider).binding
        raw = creds.sealing_key.open(answer.sealed, recipient_id=bank, content_type=BUNDLE_TYPE, context=request_id)
        bundle = common_pb2.AnswerBundle()
        bundle.ParseFromString(raw)
        for signed in bundle.indicators:
            provider.verify_key.verify(INDICATOR_CONTEXT, signed.indicator, signed.signature)
            ind = common_pb2.Indicator()
            ind.ParseFromString(signed.indicator)
            kind = ind.WhichOneof("value")
            out[ind.field] = (
                (ind.bracket.lower, ind.bracket.upper) if kind == "bracket" else getattr(ind, kind or "no_data")
            )
    return out


def refusal(call: Callable[[], Any]) -> grpc.RpcError:
    """Run a call that must fail; return its RpcError."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def assert_refused(call: Callable[[], Any], code: grpc.StatusCode, reason: Reason) -> grpc.RpcError:
    err = refusal(call)
    remote = decode_rpc_error(err)
    assert (err.code(), remote.reason) == (code, reason.value), f"got {err.code()} {remote.reason}: {remote.message}"
    return err
