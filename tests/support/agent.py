"""Helpers shared by the provider-agent tests (no tests here).

Small, hand-written CSVs whose every answer is known, consents signed by
enterprises from the session ``pki``, and a bank-side opener that checks
every provider signature against the provider's CA-signed binding, as a real
bank would.
"""

from __future__ import annotations

import csv
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xinrong import uscc
from xinrong.catalog import Catalog, Form
from xinrong.claims import parse_claim
from xinrong.consent import build_consent, parse_scope, sign_consent, sign_revocation
from xinrong.keys.binding import verify_binding
from xinrong.keys.layout import party_dir
from xinrong.keys.sealing import open_sealed
from xinrong.provider_agent.evaluate import (
    BUNDLE_CONTENT_TYPE,
    INDICATOR_CONTEXT,
    VERDICT_CONTEXT,
    ClaimsRequest,
    IndicatorQuery,
    IndicatorsRequest,
    ProviderAgent,
)
from xinrong.provider_agent.importer import import_csv
from xinrong.provider_agent.store import DataStore, StateStore
from xinrong.serde import FORM_TO_PROTO
from xinrong.v1 import common_pb2

from support.pki import Pki

AS_OF = "2026-09-30"
PERIOD = ("2026-01-01", "2026-12-31")


def make_uscc(n: int) -> str:
    """A valid GB 32100 code, distinct per n."""
    return uscc.make("9", "1", "130100", f"{n:08d}")


E_GOOD = make_uscc(1)  # grade A, no arrears, large VAT
E_POOR = make_uscc(2)  # grade C, in arrears, some cells missing
E_EMPTY = make_uscc(3)  # in the file, every value missing
E_ABSENT = make_uscc(4)  # not in the file at all

TAX_HEADER = [
    "uscc",
    "as_of",
    "credit_grade",
    "abnormal_taxpayer",
    "in_arrears",
    "arrears_amount",
    "vat_paid_last_year",
    "cit_paid_last_year",
    "consecutive_normal_months",
    "last_normal_payment_date",
    "grade_a_taxpayer",
]


def tax_rows(as_of: str = AS_OF) -> list[list[str]]:
    return [
        [E_GOOD, as_of, "A", "false", "false", "0", "1200000.50", "300000", "30", "2026-09-01", "true"],
        [E_POOR, as_of, "C", "true", "true", "250000", "50000", "", "2", "", "false"],
        [E_EMPTY, as_of, "", "", "", "", "", "", "", "", ""],
    ]


SI_HEADER = [
    "uscc",
    "as_of",
    "avg_insured_headcount",
    "avg_employer_contribution",
    "consecutive_months",
    "last_normal_month",
    "in_arrears",
]


def si_rows(as_of: str = AS_OF) -> list[list[str]]:
    return [
        [E_GOOD, as_of, "120", "60000", "40", "2026-08-01", "false"],
        [E_POOR, as_of, "8", "4000.5", "1", "", "true"],
    ]


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


class Clock:
    """A settable clock for the domain: tests move time instead of sleeping."""

    def __init__(self, now: float | None = None) -> None:
        self.now = float(int(time.time())) if now is None else now

    def __call__(self) -> float:
        return self.now


@dataclass
class AgentUnderTest:
    agent: ProviderAgent
    data: DataStore
    state: StateStore
    clock: Clock
    provider: str
    root: Path
    closed: bool = field(default=False)

    def close(self) -> None:
        if not self.closed:
            self.data.close()
            self.state.close()
            self.closed = True


def open_agent(pki: Pki, catalog: Catalog, root: Path, provider: str, clock: Clock) -> AgentUnderTest:
    data = DataStore(root / f"{provider}.db", provider)
    state = StateStore(root / f"{provider}.state.db", provider)
    agent = ProviderAgent(
        catalog=catalog,
        provider=provider,
        credentials=pki.provider(provider),
        data=data,
        state=state,
        verdict_ttl_seconds=3600,
        max_clock_skew_seconds=300,
        clock=clock,
    )
    return AgentUnderTest(agent=agent, data=data, state=state, clock=clock, provider=provider, root=root)


def import_rows(t: AgentUnderTest, catalog: Catalog, header: Sequence[str], rows: list[list[str]]) -> None:
    path = write_csv(t.root / f"{t.provider}-{uuid.uuid4().hex[:8]}.csv", header, rows)
    import_csv(t.data, catalog, t.provider, path)


def signed_consent(
    pki: Pki,
    catalog: Catalog,
    enterprise: str,
    *,
    grantee: str = "bank-a",
    scope: Sequence[str] = ("tax.*",),
    valid_from: int | None = None,
    valid_until: int | None = None,
    max_uses: int = 100,
    max_uses_per_day: int = 0,
    period: tuple[str, str] = PERIOD,
    signer: str | None = None,
    purpose: str = "loan_application",
) -> common_pb2.SignedConsent:
    """A consent signed by the enterprise (or, to forge one, by ``signer``'s
    key while carrying the enterprise's genuine binding)."""
    now = int(time.time())
    creds = pki.enterprise(enterprise)
    consent = build_consent(
        enterprise_uscc=enterprise,
        enterprise_key_id=creds.signing_key.key_id,
        grantee_id=grantee,
        purpose=purpose,
        scope=parse_scope(catalog, scope),
        data_period_from=period[0],
        data_period_to=period[1],
        valid_from=now - 3600 if valid_from is None else valid_from,
        valid_until=now + 86400 if valid_until is None else valid_until,
        max_uses=max_uses,
        max_uses_per_day=max_uses_per_day,
    )
    key = pki.enterprise(signer).signing_key if signer else creds.signing_key
    return sign_consent(consent, key, creds.binding.signed)


def revocation_for(
    pki: Pki, consent: common_pb2.SignedConsent, *, by: str | None = None
) -> tuple[common_pb2.SignedConsentRevocation, common_pb2.SignedPartyBinding]:
    parsed = common_pb2.Consent()
    parsed.ParseFromString(consent.consent)
    who = by or parsed.enterprise_uscc
    creds = pki.enterprise(who)
    return sign_revocation(parsed.consent_id, who, creds.signing_key), creds.binding.signed


def claims_request(
    pki: Pki,
    consent: common_pb2.SignedConsent,
    enterprise: str,
    claims: Sequence[str],
    *,
    audience: str = "bank-a",
    request_id: str | None = None,
    requested_at: int | None = None,
) -> ClaimsRequest:
    return ClaimsRequest(
        request_id=request_id or f"req-{uuid.uuid4()}",
        requested_at=int(time.time()) if requested_at is None else requested_at,
        enterprise_uscc=enterprise,
        consent=consent,
        audience_binding=pki.institution(audience).binding.signed,
        claims=tuple(parse_claim(c) for c in claims),
    )


def indicators_request(
    pki: Pki,
    consent: common_pb2.SignedConsent,
    enterprise: str,
    queries: Sequence[tuple[str, Form]],
    *,
    audience: str = "bank-a",
    request_id: str | None = None,
    requested_at: int | None = None,
) -> IndicatorsRequest:
    return IndicatorsRequest(
        request_id=request_id or f"req-{uuid.uuid4()}",
        requested_at=int(time.time()) if requested_at is None else requested_at,
        enterprise_uscc=enterprise,
        consent=consent,
        audience_binding=pki.institution(audience).binding.signed,
        queries=tuple(IndicatorQuery(field=f, form=FORM_TO_PROTO[form]) for f, form in queries),
    )


def open_bundle(pki: Pki, box: common_pb2.SealedBox, request_id: str, bank: str = "bank-a") -> common_pb2.AnswerBundle:
    """What the bank does: open the box with its own sealing key."""
    creds = pki.institution(bank)
    assert creds.sealing_key is not None
    raw = open_sealed(creds.sealing_key, box, recipient_id=bank, content_type=BUNDLE_CONTENT_TYPE, context=request_id)
    bundle = common_pb2.AnswerBundle()
    bundle.ParseFromString(raw)
    return bundle


def verified_verdicts(pki: Pki, bundle: common_pb2.AnswerBundle, provider: str) -> list[common_pb2.Verdict]:
    """Check each verdict signature against the provider's CA-verified binding."""
    binding = verify_binding(pki.node.ca, pki.provider(provider).binding.signed, expect_role="provider")
    assert binding.provider == provider
    out = []
    for sv in bundle.verdicts:
        binding.verify_key.verify(VERDICT_CONTEXT, sv.verdict, sv.signature)
        verdict = common_pb2.Verdict()
        verdict.ParseFromString(sv.verdict)
        assert verdict.provider_key_id == binding.key_id
        out.append(verdict)
    return out


def verified_indicators(pki: Pki, bundle: common_pb2.AnswerBundle, provider: str) -> list[common_pb2.Indicator]:
    binding = verify_binding(pki.node.ca, pki.provider(provider).binding.signed, expect_role="provider")
    out = []
    for si in bundle.indicators:
        binding.verify_key.verify(INDICATOR_CONTEXT, si.indicator, si.signature)
        indicator = common_pb2.Indicator()
        indicator.ParseFromString(si.indicator)
        out.append(indicator)
    return out


RESULT_NAMES = {
    common_pb2.VERDICT_RESULT_TRUE: "TRUE",
    common_pb2.VERDICT_RESULT_FALSE: "FALSE",
    common_pb2.VERDICT_RESULT_NO_DATA: "NO_DATA",
}


def write_config(tmp_path: Path, pki: Pki, provider: str = "tax", **extra: Any) -> Path:
    """An agent TOML config using the session PKI; ``db`` is relative to the file."""
    keys = pki.root
    values: dict[str, object] = {
        "provider": provider,
        "bind": "127.0.0.1:0",
        "credentials": str(party_dir(keys, "provider", provider)),
        "ca_cert": str(keys / "ca" / "ca.crt"),
        "db": "state/agent.db",
    }
    values.update(extra)
    lines = ["[agent]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
