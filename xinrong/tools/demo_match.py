"""Demo step: a bank publishes two loan products, enterprises are matched without raw data, one applies.

Against the running demo platform (real node and agent processes):

1. bank-a publishes two products (one Paillier key, 2048 bits, made here);
2. a few enterprises each grant bank-a a consent of purpose ``matching`` and
   register it (the node matches them in the background);
3. ``xinrong node matching run`` (the operator's trigger) runs every product;
4. each enterprise opens its own sealed results; every eligible-or-not is
   compared with the ground truth computed straight from the generated CSVs;
5. one enterprise applies with ``xinrong enterprise apply``; ``xinrong bank
   applications`` shows it with the eligibility verified offline (and it must
   equal the ground truth too).

Returns ``{"matches_correct", "matches_total", "applications"}`` for the demo's last line.
"""

from __future__ import annotations

import json
import time
from typing import Any

from xinrong.bank.products import BankProducts, key_path
from xinrong.catalog import Catalog
from xinrong.claims import check_claim, evaluate, parse_claim
from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, grant
from xinrong.enterprise.products import EnterpriseProducts
from xinrong.keys.layout import party_dir
from xinrong.tools.localnet import LocalPlatform

BANK = "bank-a"
PRODUCTS: dict[str, tuple[str, str, list[str]]] = {
    "demo-tax-credit": ("Tax-credit working-capital loan", "working_capital", ["tax.credit_grade in A,B"]),
    "demo-tech-growth": (
        "Technology growth loan",
        "technology",
        [
            "tax.credit_grade in A,B",
            "tax.consecutive_normal_months >= 24",
            "social_insurance.in_arrears == false",
            "social_insurance.avg_insured_headcount >= 10",
        ],
    ),
}


def _say(text: str) -> None:
    print(text, flush=True)


def _eligible(truth: Any, catalog: Catalog, enterprise: str, rules: list[str]) -> bool:
    """Ground truth from the CSVs: every rule holds (a missing value fails it)."""
    for text in rules:
        checked = check_claim(catalog, parse_claim(text))
        if evaluate(checked, truth.value(checked.spec.key, enterprise)) is not True:
            return False
    return True


def play_matching(platform: LocalPlatform, truth: Any, as_of: str, *, enterprises: int = 4) -> dict[str, int]:
    catalog: Catalog = truth.catalog
    products = {
        pid: spec
        for pid, spec in PRODUCTS.items()
        if all(check_claim(catalog, parse_claim(r)).spec.provider in platform.provider_ports for r in spec[2])
    }
    if not products:
        _say("\n[9] product matching skipped: it needs the tax agent")
        return {"matches_correct": 0, "matches_total": 0, "applications": 0}
    started = time.monotonic()
    bank_dir = party_dir(platform.keys_dir, "institution", BANK)
    with BankProducts(platform.node_address, platform.party("institution", BANK), key_file=key_path(bank_dir)) as bank:
        for pid, (name, category, rules) in products.items():
            bank.publish(
                product_id=pid,
                name=name,
                category=category,
                amount=(100_000, 3_000_000),
                term_months=(6, 36),
                rate_bps=(350, 650),
                rules=rules,
            )
        _say(f"\n[9] {BANK} published {len(products)} loan products: " + ", ".join(products))
        # A few known everywhere, and one the social insurance agent does not know (its rules fail: no data).
        chosen = (
            truth.enterprises_present_everywhere()[:enterprises]
            + truth.enterprises_with_gap("tax", "social_insurance")[:1]
        )
        year = as_of[:4]
        for code in chosen:
            creds = platform.enterprise(code)
            signed = grant(
                creds,
                ConsentRequest(
                    grantee=BANK,
                    purpose="matching",
                    scope=("tax.*", "social_insurance.*"),
                    data_period_from=f"{year}-01-01",
                    data_period_to=f"{year}-12-31",
                    max_uses=100,
                ),
            )
            with EnterpriseClient(platform.node_address, creds) as client:
                client.register(signed)
        run = platform.group.run_cli(
            ["node", "matching", "run", "--config", str(platform.node_config), "--node", platform.node_address]
        )
        if run.returncode != 0:
            raise RuntimeError(f"node matching run failed: {run.stderr.strip()}")
        stats = json.loads(run.stdout.strip().splitlines()[-1])
        _say(
            f"    xinrong node matching run: {stats['pairs']} (enterprise, product) pairs in {stats['seconds']} s "
            f"({stats['seconds'] / max(stats['pairs'], 1) * 1000:.0f} ms per pair, agents included)"
        )
        correct = total = 0
        applicant: tuple[str, str] | None = None
        for code in chosen:
            with EnterpriseProducts(platform.node_address, platform.enterprise(code)) as ent:
                matches = {m["product_id"]: m for m in ent.matches()}
            for pid, (_name, _category, rules) in products.items():
                m = matches.get(pid)
                expected = _eligible(truth, catalog, code, rules)
                total += 1
                got = bool(m and m["verified"] and m["eligible"])
                correct += m is not None and got == expected
                failed = m["failed_rules"] if m else "no result"
                _say(
                    f"    {code} {pid:18s} eligible={got!s:5s} (CSV: {expected!s:5s}) failed rules, seen only by it: {failed}"
                )
                if applicant is None and got:
                    applicant = (code, pid)
        if applicant is None:
            applicant = (chosen[0], next(iter(products)))
        code, pid = applicant
        creds_dir = party_dir(platform.keys_dir, "enterprise", code)
        applied = platform.group.run_cli(
            [
                "enterprise",
                "apply",
                "--credentials",
                str(creds_dir),
                "--node",
                platform.node_address,
                "--product",
                pid,
                "--demand",
                "amount=800000,term_months=12,purpose=working capital,region=130100",
            ]
        )
        if applied.returncode != 0:
            raise RuntimeError(f"enterprise apply failed: {applied.stderr.strip()}")
        listed = platform.group.run_cli(
            ["bank", "applications", "--node", platform.node_address, "--credentials", str(bank_dir)]
        )
        if listed.returncode != 0:
            raise RuntimeError(f"bank applications failed: {listed.stderr.strip()}")
        apps = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
        expected = _eligible(truth, catalog, code, products[pid][2])
        verified = [a for a in apps if a.get("verified") and a.get("eligible") == expected and a["enterprise"] == code]
        for a in apps:
            _say(
                f"    {BANK} received application {a.get('application_id')} from {a.get('enterprise')} for "
                f"{a.get('product_id')}: eligible={a.get('eligible')} (verified offline: {a.get('verified')}), "
                f"demand {a.get('demand')}"
            )
        _say(f"    products step: {time.monotonic() - started:.1f} s")
    return {"matches_correct": correct, "matches_total": total, "applications": len(verified)}


__all__ = ["play_matching"]
