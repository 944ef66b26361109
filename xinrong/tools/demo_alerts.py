"""The demo's post-loan monitoring step (issue 13 §4): a borrower falls into tax arrears.

Bank A watches two tax-paying borrowers that are not in arrears, under
their post-loan monitoring consents. The tax bureau then imports a new
period (``xinrong agent import``, as an operator would) in which the first
has fallen into arrears. Every watch gets its sealed update, changed or
not; the bank's SDK raises exactly one alert: ``tax.in_arrears == true``
FALSE -> TRUE for the first borrower, signed by the tax bureau.
"""

from __future__ import annotations

import csv
import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path

from xinrong.bank.alerts_client import AlertsClient
from xinrong.consent import parse_consent
from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, grant
from xinrong.keys.layout import load_party, party_dir
from xinrong.tools.localnet import LocalPlatform

CLAIMS = ["tax.in_arrears == true", "judicial.dishonest_debtor == true"]
TIMEOUT_SECONDS = 30.0


def _next_period(as_of: str) -> str:
    """The as-of date one month later (the new period's export)."""
    return (dt.date.fromisoformat(as_of) + dt.timedelta(days=31)).isoformat()


def play_alerts(platform: LocalPlatform, data_dir: Path, as_of: str, say: Callable[[str], None]) -> dict[str, int]:
    if "tax" not in platform.agent_configs:
        return {}
    say("\npost-loan monitoring: bank-a watches two borrowers; the tax bureau imports a new period")
    with (data_dir / "tax.csv").open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    col_uscc, col_as_of, col_arrears = header.index("uscc"), header.index("as_of"), header.index("in_arrears")
    calm = sorted(r[col_uscc] for r in rows if r[col_arrears] == "false")[:2]
    if len(calm) < 2:
        return {"alerts_delivered": 0, "alerts_expected": 1}
    falling, steady = calm
    new_as_of = _next_period(as_of)
    period = (f"{int(as_of[:4]) - 1}-01-01", f"{int(new_as_of[:4]) + 1}-12-31")
    providers = [p for p in ("tax", "judicial") if p in platform.agent_configs]
    claims = [c for c in CLAIMS if c.split(".", 1)[0] in providers]
    bank = load_party(party_dir(platform.keys_dir, "institution", "bank-a"))
    state_dir = platform.workdir / "bank-a-alerts"
    with AlertsClient(platform.node_address, bank, state_dir) as client:
        for code in (falling, steady):
            ent = platform.enterprise(code)
            scope = tuple(f"{p}.*" for p in providers)
            signed = grant(ent, ConsentRequest("bank-a", "post_loan_monitoring", scope, *period, max_uses=5))
            with EnterpriseClient(platform.node_address, ent) as ec:
                ec.register(signed)
            watch = client.register_watch(code, claims, parse_consent(signed).consent_id)
            say(f"    watch {watch.watch_id} on {code}: {', '.join(claims)}")
        stop = threading.Event()
        follower = threading.Thread(target=client.follow, kwargs={"stop": stop}, daemon=True)
        follower.start()
        try:
            baselines = 2 * len(providers)
            _wait(lambda: client.state.updates_seen() >= baselines)
            for row in rows:
                row[col_as_of] = new_as_of
                if row[col_uscc] == falling:
                    row[col_arrears] = "true"
            export = data_dir / f"tax-{new_as_of}.csv"
            with export.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(header)
                writer.writerows(rows)
            imported = time.monotonic()
            platform.import_data("tax", export)
            _wait(lambda: client.state.alert_count() >= 1 and client.state.updates_seen() >= baselines + 2)
            took = time.monotonic() - imported
        finally:
            stop.set()
            follower.join(timeout=5)
        alerts = client.state.alerts()
    for alert in alerts:
        say(
            f"    ALERT {alert.enterprise}: {alert.claim}  {alert.old} -> {alert.new}  "
            f"(data as of {alert.data_as_of}, signed by {alert.provider} key {alert.provider_key_id})"
        )
    say(
        f"    {len(alerts)} alert(s) at the bank {took:.1f}s after the import command started; the steady one raised none"
    )
    delivered = sum(1 for a in alerts if a.enterprise == falling and a.claim == CLAIMS[0] and a.new == "TRUE")
    return {"alerts_delivered": delivered if delivered == len(alerts) else -len(alerts), "alerts_expected": 1}


def _wait(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
