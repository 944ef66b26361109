"""Sealed-box lengths say nothing about the answer (issue 10, A1).

The node relays every sealed answer and knows what it routed (the field, the
form, how many items), so every possible answer to one request shape must
seal to the same length. These tests run the agent's real build / sign /
seal path with each possible stored value injected, for every catalog field
and form: brackets, grades, ladders, flags and NO_DATA.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from xinrong import subject as subj
from xinrong.catalog import Catalog, FieldSpec, FieldType, Form
from xinrong.claims import FieldValue, format_decimal
from xinrong.errors import SignatureError
from xinrong.keys.sealing import SealingKey, SessionSealer, pad, padded_length, seal, unpad
from xinrong.provider_agent.store import Lookup
from xinrong.provider_agent.subject import SubjectDesk, SubjectStore
from xinrong.v1 import common_pb2, subject_pb2

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
        monkeypatch.setattr(t.agent, "cell", lambda _l, _c, spec, *_rest: value[spec.key])
    else:
        monkeypatch.setattr(t.agent, "cell", lambda *_a: value)


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


# -- subject rights: an enterprise's own report and its case filings ---------------


class _Cells:
    """A data store whose one period holds ``cells`` for every enterprise (the desk's read path is real)."""

    def __init__(self, columns: dict[str, int], cells: list[object] | None) -> None:
        self._columns, self._cells = columns, cells

    def lookup(self, *_a: object) -> Lookup:
        return Lookup(period_id=1, as_of=AS_OF, data=None if self._cells is None else json.dumps(self._cells))

    def columns(self, _period_id: int) -> dict[str, int]:
        return self._columns


def _extreme_cells(catalog: Catalog, provider: str, which: int) -> tuple[dict[str, int], list[object]]:
    """Column indexes and one row: 0 = short values, 1 = the longest values the field can hold."""
    specs = catalog.provider_fields(provider)
    columns = {s.column: i for i, s in enumerate(specs)}
    row: list[object] = []
    for s in specs:
        if s.type is FieldType.BOOL:
            row.append(which == 0)
        elif s.type is FieldType.ENUM:
            row.append(min(s.values, key=len) if which == 0 else max(s.values, key=len))
        elif s.numeric:
            row.append("0" if which == 0 else "-123456789012345.67")
        else:
            row.append("2026-09-01")
    return columns, row


def _filing(pki: Pki, provider: str, field: str, statement: str, evidence: bytes) -> common_pb2.SealedBox:
    creds = pki.enterprise(E)
    filing = subj.build_filing(
        kind=subject_pb2.CASE_KIND_OBJECTION,
        enterprise_uscc=E,
        provider=provider,
        field=field,
        statement=statement,
        evidence=evidence,
        evidence_name="扫描件" * 60 if evidence else "",
    )
    signed = subj.sign_filing(filing, creds.signing_key)
    binding = pki.provider(provider).binding
    return subj.seal_filing(
        signed, provider=provider, sealing_public_raw=binding.sealing_public_raw, case_id=filing.case_id
    )


def test_every_case_filing_seals_to_one_length(pki: Pki) -> None:
    """The node relays filings: a one-word objection and the largest statement with the largest evidence
    seal to one length, and the provider opens each."""
    shapes = [
        ("x", b""),
        ("异" * subj.MAX_STATEMENT_CHARS, b""),
        ("short", b"\x00" * 10),
        ("\U0001f600" * subj.MAX_STATEMENT_CHARS, b"\xff" * subj.MAX_EVIDENCE_BYTES),
    ]
    boxes = [_filing(pki, "tax", "tax.credit_grade", st, ev) for st, ev in shapes]
    assert len({len(b.ciphertext) for b in boxes}) == 1, [len(b.ciphertext) for b in boxes]
    key = pki.provider("tax").sealing_key
    assert key is not None
    for box, (statement, _ev) in zip(boxes, shapes):
        raw = key.open(box, recipient_id="tax", content_type=subj.FILING_CONTENT_TYPE, context=box.context)
        assert subject_pb2.CaseFiling.FromString(subject_pb2.SignedCaseFiling.FromString(raw).filing).statement == (
            statement
        )


def test_every_subject_report_seals_to_one_length(pki: Pki, catalog: Catalog, tmp_path: Path) -> None:
    """An enterprise's own report: for one provider and one number of cases (what the node knows), short
    values, the longest values, no record at all, and cases of any statement length seal to one length."""
    creds = pki.enterprise(E)
    per_shape: dict[tuple[str, int], set[int]] = {}
    variants = [(0, which, "") for which in (0, 1, None)]
    variants += [(1, which, st) for which in (0, 1, None) for st in ("x", "申" * subj.MAX_STATEMENT_CHARS)]
    for provider in catalog.providers:
        spec = catalog.provider_fields(provider)[0]
        for i, (n_cases, which, statement) in enumerate(variants):
            store = SubjectStore(tmp_path / f"{provider}-{i}.subject.db")
            try:
                if n_cases:
                    filing = subj.build_filing(
                        kind=subject_pb2.CASE_KIND_OBJECTION,
                        enterprise_uscc=E,
                        provider=provider,
                        field=spec.key,
                        statement=statement,
                    )
                    store.add_case(filing, subj.sign_filing(filing, creds.signing_key), int(time.time()))
                columns, row = _extreme_cells(catalog, provider, which or 0)
                desk = SubjectDesk(
                    catalog=catalog,
                    provider=provider,
                    credentials=pki.provider(provider),
                    data=_Cells(columns, None if which is None else row),  # type: ignore[arg-type]
                    store=store,
                )
                box = desk.report(subj.sign_query(E, creds.signing_key), creds.binding.signed)
                key = creds.sealing_key
                assert key is not None
                raw = key.open(box, recipient_id=E, content_type=subj.REPORT_CONTENT_TYPE, context=box.context)
                report = subject_pb2.SubjectReport.FromString(subject_pb2.SignedSubjectReport.FromString(raw).report)
                assert len(report.cases) == n_cases and report.held == (which is not None)
                per_shape.setdefault((provider, n_cases), set()).add(len(box.ciphertext))
            finally:
                store.close()
    assert len(per_shape) == 2 * len(catalog.providers), per_shape
    assert all(len(v) == 1 for v in per_shape.values()), per_shape
    # Every report fits its budget: the padded length is the budget itself.
    for (provider, n_cases), (length,) in per_shape.items():
        assert length == subj.report_pad_to(len(catalog.provider_fields(provider)), n_cases) + 48, (
            provider,
            length,
        )  # HPKE: enc and tag
