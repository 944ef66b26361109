"""Sealed-box lengths say nothing about the answer (issue 10, A1).

The node relays every sealed answer and knows what it routed (the field, the
form, how many items), so every possible answer to one request shape must
seal to the same length. These tests run the agent's real build / sign /
seal path with each possible stored value injected, for every catalog field
and form: brackets, grades, ladders, flags and NO_DATA.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from xinrong.catalog import Catalog, FieldSpec, FieldType, Form
from xinrong.claims import FieldValue, format_decimal
from xinrong.errors import SignatureError
from xinrong.keys.sealing import SealingKey, SessionSealer, pad, padded_length, seal, unpad
from xinrong.provider_agent.store import Lookup
from xinrong.v1 import common_pb2

from support.agent import (
    AS_OF,
    E_GOOD,
    RESULT_NAMES,
    AgentUnderTest,
    Clock,
    claims_request,
    indicators_request,
    open_agent,
    open_bundle,
    signed_consent,
    verified_indicators,
    verified_verdicts,
)
from support.pki import Pki

E = E_GOOD


def _values(spec: FieldSpec) -> list[FieldValue]:
    """Every stored value that gives a different answer in some form, and none."""
    if spec.type is FieldType.BOOL:
        return [True, False, None]
    if spec.type is FieldType.ENUM:
        return [*spec.values, None]
    if spec.numeric:
        edges = list(spec.edges) or list(spec.ladder)
        # Each bracket's lower edge, a value inside the last (open) bracket, very large values.
        return [*edges, edges[-1] * 7 + Decimal("0.01"), Decimal(10) ** 15, None]
    return ["2026-09-01", None]


def _claims(spec: FieldSpec) -> list[str]:
    out = []
    if Form.FLAG in spec.forms:
        out += [f"{spec.key} == true", f"{spec.key} == false"]
    if Form.GRADE in spec.forms:
        out += [f"{spec.key} in {spec.values[0]}", f"{spec.key} in {','.join(spec.values)}"]
    if Form.LADDER in spec.forms:
        out += [f"{spec.key} >= {format_decimal(spec.ladder[0])}", f"{spec.key} < {format_decimal(spec.ladder[-1])}"]
    if Form.BRACKET in spec.forms:
        e = [format_decimal(x) for x in spec.edges]
        out += [f"{spec.key} in [{e[0]},{e[1]})", f"{spec.key} in [{e[-2]},{e[-1]})"]
    return out


@pytest.fixture
def agents(pki: Pki, catalog: Catalog, tmp_path: Path) -> Iterator[dict[str, AgentUnderTest]]:
    out = {p: open_agent(pki, catalog, tmp_path, p, Clock()) for p in catalog.providers}
    yield out
    for t in out.values():
        t.close()


def _inject(monkeypatch: pytest.MonkeyPatch, t: AgentUnderTest, value: FieldValue | dict[str, FieldValue]) -> None:
    """The agent reads ``value`` (or ``value[field]``) for a field; the rest of its path is real."""
    monkeypatch.setattr(t.data, "lookup", lambda *_a: Lookup(period_id=1, as_of=AS_OF, data="[]"))
    if isinstance(value, dict):
        monkeypatch.setattr(t.agent, "_cell", lambda _l, _c, spec, *_rest: value[spec.key])
    else:
        monkeypatch.setattr(t.agent, "_cell", lambda *_a: value)


def test_every_verdict_seals_to_one_length(
    pki: Pki, catalog: Catalog, agents: dict[str, AgentUnderTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    lengths: dict[int, set[int]] = {}
    for provider, t in agents.items():
        consent = signed_consent(pki, catalog, E, scope=(f"{provider}.*",), max_uses=100_000)
        for spec in catalog.provider_fields(provider):
            for claim in _claims(spec):
                results = set()
                for value in _values(spec):
                    _inject(monkeypatch, t, value)
                    req = claims_request(pki, consent, E, [claim])
                    box = t.agent.evaluate_claims(req)
                    (verdict,) = verified_verdicts(pki, open_bundle(pki, box, req.request_id), provider)
                    results.add(RESULT_NAMES[verdict.result])
                    lengths.setdefault(1, set()).add(len(box.ciphertext))
                assert "NO_DATA" in results and len(results) >= 2, (claim, results)
        # A request of three claims: one length for every combination of answers.
        specs = [s for s in catalog.provider_fields(provider) if _claims(s)][:3]
        for value_index in range(3):
            _inject(monkeypatch, t, {s.key: _values(s)[value_index % len(_values(s))] for s in specs})
            req = claims_request(pki, consent, E, [_claims(s)[0] for s in specs])
            lengths.setdefault(len(specs), set()).add(len(t.agent.evaluate_claims(req).ciphertext))
    assert lengths[1] and all(len(v) == 1 for v in lengths.values()), lengths


def test_every_indicator_seals_to_one_length(
    pki: Pki, catalog: Catalog, agents: dict[str, AgentUnderTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Brackets with edges of different lengths, grades of different names,
    flags and NO_DATA (proto3 drops index 0 and false): one sealed length."""
    lengths: set[int] = set()
    forms_seen: set[Form] = set()
    for provider, t in agents.items():
        consent = signed_consent(pki, catalog, E, scope=(f"{provider}.*",), max_uses=100_000)
        for spec in catalog.provider_fields(provider):
            if spec.verification_only:
                continue
            for form in sorted(spec.forms - {Form.LADDER}):
                answers = set()
                for value in _values(spec):
                    _inject(monkeypatch, t, value)
                    req = indicators_request(pki, consent, E, [(spec.key, form)])
                    box = t.agent.evaluate_indicators(req)
                    (ind,) = verified_indicators(pki, open_bundle(pki, box, req.request_id), provider)
                    which = str(ind.WhichOneof("value"))
                    answers.add(f"{which}={getattr(ind, which)}")
                    lengths.add(len(box.ciphertext))
                forms_seen.add(form)
                assert len(answers) >= 3, (spec.key, form, answers)
    assert forms_seen == {Form.FLAG, Form.GRADE, Form.BRACKET}
    assert len(lengths) == 1, sorted(lengths)


def test_padding_round_trip_and_malformed_padding_is_refused() -> None:
    for n in (0, 1, 254, 255, 256, 1000, 70_000):
        padded = pad(b"\x80" * n)
        assert len(padded) == padded_length(n) and unpad(padded) == b"\x80" * n
    assert len(pad(b"x" * 10, 1024)) == 1024 and len(pad(b"x" * 1024, 1024)) == 2048
    assert padded_length(0) == 256 and padded_length(300) == 512 and padded_length(65_536) == 131_072
    for bad in (b"", b"\x00" * 32, b"abc", b"abc\x80\x00\x01", b"abc\x81"):
        with pytest.raises(SignatureError):
            unpad(bad)


@pytest.mark.parametrize("scheme", ["hpke", "session"])
def test_every_sealed_payload_is_padded(scheme: str) -> None:
    """Modeling boxes and anything sealed later go through the same padding:
    plaintexts of different lengths in one bucket seal to one length."""
    key = SealingKey.generate()
    sealer = SessionSealer()

    def box(plaintext: bytes) -> common_pb2.SealedBox:
        kwargs = {"recipient_id": "bank-a", "recipient_public_raw": key.public_raw, "content_type": "t", "context": "c"}
        return seal(plaintext, **kwargs) if scheme == "hpke" else sealer.seal(plaintext, **kwargs)  # type: ignore[arg-type]

    boxes = [box(b"y" * n) for n in (0, 1, 17, 200, 255)]
    assert len({len(b.ciphertext) for b in boxes}) == 1
    for n, b in zip((0, 1, 17, 200, 255), boxes):
        assert key.open(b, recipient_id="bank-a", content_type="t", context="c") == b"y" * n
