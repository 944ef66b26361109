"""The enterprise's rights, played against a running local platform (``make demo`` and the e2e test).

One enterprise with tax arrears: it reads all its data (``xinrong enterprise
data``), objects to its credit grade (the bank's verdict then carries the
provider's signed DISPUTED marker; the provider resolves with ``xinrong agent
objections resolve`` and the marker goes), applies for repair of the arrears
(approved with ``xinrong agent repairs approve``: the claim then answers
NO_DATA), and pauses its consent (the bank is refused) and resumes it.
Provider and enterprise steps run as real CLI processes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from xinrong.bank.client import BankClient
from xinrong.consent import parse_consent
from xinrong.enterprise.client import ConsentRequest, SubjectClient, grant
from xinrong.keys.layout import load_party, party_dir
from xinrong.rpc.errors import RemoteError
from xinrong.tools.localnet import LocalPlatform
from xinrong.v1 import subject_pb2


@dataclass
class SubjectTally:
    fields_seen: int = 0
    objections_resolved: int = 0
    repairs_applied: int = 0
    paused_refused: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "objections_resolved": self.objections_resolved,
            "repairs_applied": self.repairs_applied,
            "paused_refused": self.paused_refused,
        }


def _expect(tally: SubjectTally, ok: bool, what: str) -> bool:
    if not ok:
        tally.problems.append(what)
    return ok


def play_subject_rights(
    platform: LocalPlatform, tax_rows: dict[str, dict[str, str]], as_of: str, say: Callable[[str], None] = print
) -> SubjectTally:
    """``tax_rows``: the tax CSV by USCC (an enterprise in arrears is picked from it)."""
    tally = SubjectTally()
    in_arrears = sorted(u for u, row in tax_rows.items() if row.get("in_arrears") == "true" and row.get("credit_grade"))
    if not in_arrears:
        tally.problems.append("no enterprise in tax arrears in the generated data")
        return tally
    code = in_arrears[-1]
    creds = platform.enterprise(code)
    creds_dir = str(party_dir(platform.keys_dir, "enterprise", code))
    tax_config = str(platform.agent_configs["tax"])
    period = (f"{int(as_of[:4]) - 1}-01-01", f"{as_of[:4]}-12-31")
    bank_creds = load_party(party_dir(platform.keys_dir, "institution", "bank-a"))
    grade = tax_rows[code]["credit_grade"]
    grade_claim = f"tax.credit_grade in {grade}"

    def cli(args: list[str]) -> dict[str, object]:
        result = platform.group.run_cli(args)
        if result.returncode != 0:
            raise RuntimeError(f"xinrong {' '.join(args[:3])} failed: {result.stderr.strip()[-300:]}")
        doc: dict[str, object] = json.loads(result.stdout)
        return doc

    say(f"\n[subject rights] enterprise {code} (tax arrears) exercises its rights as data subject")
    with SubjectClient(platform.node_address, creds) as me, BankClient(platform.node_address, bank_creds) as bank:
        signed = grant(creds, ConsentRequest("bank-a", "loan_application", ("tax.*",), *period, max_uses=20))
        me.register(signed)
        consent_id = parse_consent(signed).consent_id

        data = cli(["enterprise", "data", "--credentials", creds_dir, "--node", platform.node_address, "--json"])
        providers = data.get("providers")
        assert isinstance(providers, list)
        tally.fields_seen = sum(len(p["fields"]) for p in providers)
        say(f"    my data: {len(providers)} providers, {tally.fields_seen} fields, free and sealed to me")
        _expect(tally, tally.fields_seen > 0, "own data came back empty")

        case = me.file_case(
            kind=subject_pb2.CASE_KIND_OBJECTION, field="tax.credit_grade", statement="grade restored after appeal"
        )
        before = bank.verify(code, [grade_claim], consent_id)
        disputed = _expect(tally, before[0].disputed, "verdict on the objected field is not DISPUTED")
        say(f"    objection {case.case_id[:8]} filed; bank sees {grade_claim} -> {before[0].result} DISPUTED")
        cli(["agent", "objections", "resolve", "--config", tax_config, "--id", case.case_id, "--rejected",
             "--reason", "grade confirmed by the 2026 review"])  # fmt: skip
        after = bank.verify(code, [grade_claim], consent_id)
        if disputed and _expect(tally, not after[0].disputed, "DISPUTED marker still there after resolution"):
            tally.objections_resolved += 1
        say("    provider resolved it (rejected, with reason); the marker is gone")

        repair = me.file_case(
            kind=subject_pb2.CASE_KIND_REPAIR, field="tax.in_arrears", statement="arrears paid in full"
        )
        first = bank.verify(code, ["tax.in_arrears == true"], consent_id)
        today = dt.datetime.now(dt.UTC).date().isoformat()
        cli(["agent", "repairs", "approve", "--config", tax_config, "--id", repair.case_id, "--effective", today])
        hidden = bank.verify(code, ["tax.in_arrears == true"], consent_id)
        if _expect(
            tally,
            first[0].result == "TRUE" and hidden[0].result == "NO_DATA",
            f"repair: in_arrears answered {first[0].result} then {hidden[0].result}",
        ):
            tally.repairs_applied += 1
        say("    repair approved: tax.in_arrears == true now answers NO_DATA")

        me.change_state(consent_id, pause=True)
        try:
            bank.verify(code, [grade_claim], consent_id)
            tally.problems.append("a paused consent was used")
        except RemoteError as err:
            if _expect(tally, err.reason == "CONSENT_PAUSED", f"paused consent refused with {err.reason}"):
                tally.paused_refused += 1
        me.change_state(consent_id, pause=False)
        resumed = bank.verify(code, [grade_claim], consent_id)
        _expect(tally, resumed[0].result == "TRUE", "resumed consent did not answer")
        say("    consent paused: bank refused (CONSENT_PAUSED); resumed: bank answered again")
    return tally


__all__ = ["SubjectTally", "play_subject_rights"]
