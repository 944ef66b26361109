"""Demo step: managing access institutions on a running platform (Issue 12 section 5).

A third bank is onboarded at run time with ``xinrong node institutions add``
(credentials issued with the CA, binding registered at the running node, no
config edited, no restart) and verifies a claim with an enterprise's
consent; a per-institution rate limit refuses one call (RESOURCE_EXHAUSTED
with RetryInfo); the operator suspends the bank mid-run and its next call
is refused (PERMISSION_DENIED ``INSTITUTION_SUSPENDED``), then resumes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from xinrong.bank.client import BankClient
from xinrong.consent import parse_consent
from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, grant
from xinrong.keys.layout import load_party, party_dir
from xinrong.rpc.errors import RemoteError
from xinrong.tools.localnet import LocalPlatform

NEW_BANK = "bank-c"
CLAIM = "tax.credit_grade in A,B"


def _cli(platform: LocalPlatform, verb: str, *args: str) -> dict[str, Any]:
    """One ``xinrong node institutions`` command against the running node; its JSON output."""
    result = platform.group.run_cli(
        [
            "node",
            "institutions",
            verb,
            "--config",
            str(platform.node_config),
            "--address",
            platform.node_address,
            "--json",
            *args,
        ],
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"xinrong node institutions {verb} failed: {result.stderr.strip() or result.stdout.strip()}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _refusal(call: Callable[[], object]) -> str:
    """The reason a call was refused with, or '' if it was answered."""
    try:
        call()
    except RemoteError as exc:
        return exc.reason
    return ""


def play_institutions(
    platform: LocalPlatform, enterprise: str, as_of: str, say: Callable[[str], None] = print
) -> dict[str, int]:
    """Onboard, verify, one quota refusal, one suspension refusal; the demo's counters."""
    say("\n[i] access institutions: a third bank onboarded at run time, a rate limit, a suspension")
    added = _cli(
        platform,
        "add",
        "--keys",
        str(platform.keys_dir),
        "--id",
        NEW_BANK,
        "--name",
        "Demo Bank C",
        "--type",
        "bank",
        "--force",
    )
    say(
        f"    xinrong node institutions add --id {NEW_BANK}: {added.get('status')}, credentials in {added.get('credentials')}"
    )
    creds = platform.enterprise(enterprise)
    period = (f"{int(as_of[:4]) - 1}-01-01", f"{as_of[:4]}-12-31")
    signed = grant(creds, ConsentRequest(NEW_BANK, "loan_application", ("tax.*",), *period, max_uses=20))
    with EnterpriseClient(platform.node_address, creds) as ent:
        ent.register(signed)
    consent_id = parse_consent(signed).consent_id
    bank_creds = load_party(party_dir(platform.keys_dir, "institution", NEW_BANK))
    suspended_refused = quota_refused = 0
    with BankClient(platform.node_address, bank_creds) as bank:

        def verify() -> object:
            return bank.verify(enterprise, [CLAIM], consent_id)

        verdicts = bank.verify(enterprise, [CLAIM], consent_id)
        say(f"    {NEW_BANK} verifies '{CLAIM}' about {enterprise}: {verdicts[0].result} (provider-signed, checked)")
        _cli(platform, "quota", "--id", NEW_BANK, "--method", "Verify", "--rate", "0.05", "--burst", "1")
        first, second = _refusal(verify), _refusal(verify)
        if first == "" and second == "QUOTA_EXHAUSTED":
            quota_refused += 1
        say(f"    rate limit Verify 1 per 20 s: first call answered, second refused {second or 'NOT'}")
        _cli(platform, "quota", "--id", NEW_BANK, "--method", "Verify", "--clear")
        _cli(platform, "suspend", "--id", NEW_BANK, "--reason", "demo: security review pending")
        reason = _refusal(verify)
        if reason == "INSTITUTION_SUSPENDED":
            suspended_refused += 1
        say(f"    suspended by the operator: next Verify refused {reason or 'NOT'}")
        _cli(platform, "resume", "--id", NEW_BANK)
        resumed = _refusal(verify)
        say(f"    resumed: Verify {'answered' if not resumed else 'refused ' + resumed}")
        if resumed:
            raise RuntimeError(f"{NEW_BANK} still refused after resume: {resumed}")
    return {
        "suspended_refused": suspended_refused,
        "quota_refused": quota_refused,
        "institutions_onboarded": 1 if added.get("status") == "active" else 0,
    }


__all__ = ["play_institutions"]
