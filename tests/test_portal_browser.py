"""The enterprise portal in a real headless Chromium, against real processes on 127.0.0.1.

Node and two agents run through the CLI, the portal as ``xinrong enterprise
portal`` on port 0; Playwright drives Debian's chromium. The flow is the one
an owner would follow: grant a consent from the catalog, see the data, see a
bank's Verify appear with its proof checked, pause (the bank is refused),
resume, object to a field (the bank sees DISPUTED; the badge shows), have the
provider resolve it (the badge goes), apply to repair a negative record (once
approved: badge "repaired", the bank's claim answers NO_DATA), revoke. On the way: a page of another
origin cannot change anything (CSRF), and a rebound host name gets nothing.

``XINRONG_PORTAL_SCREENSHOTS=DIR`` keeps a PNG of each page there (``make screenshots``).
"""

from __future__ import annotations

import csv
import datetime as dt
import http.client
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xinrong.bank.client import BankClient
from xinrong.keys.layout import load_party, party_dir
from xinrong.rpc.errors import RemoteError
from xinrong.tools.localnet import LocalPlatform, deploy, generate_data
from xinrong.tools.procs import ProcessGroup

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
AS_OF = "2026-09-30"

if not Path(CHROMIUM).exists():  # the Makefile's install step puts it there (apt-get install chromium)
    pytest.skip(
        f"{CHROMIUM} is missing: run `make install` as root (apt-get install -y chromium)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency: make install")


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("portal-e2e")
    data = workdir / "data"
    generate_data(data, enterprises=300, seed=11, as_of=AS_OF)
    with open(data / "tax.csv", newline="") as fh:
        tax = {row["uscc"]: row for row in csv.DictReader(fh)}
    # An enterprise with a negative record (tax arrears), so it has something to apply to repair.
    code = sorted(u for u, row in tax.items() if row.get("in_arrears") == "true" and row.get("credit_grade"))[0]
    with ProcessGroup(workdir) as group:
        plat = deploy(
            workdir, providers=["tax", "social_insurance"], institutions=["bank-a"], data_dir=data, group=group
        )
        plat.enterprise(code)  # keys provisioned by the platform CA, as keygen would
        creds_dir = party_dir(plat.keys_dir, "enterprise", code)
        port_file = workdir / "state" / "portal.port"
        group.start(
            "portal",
            [
                "enterprise",
                "portal",
                "--credentials",
                str(creds_dir),
                "--node",
                plat.node_address,
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--state-dir",
                str(workdir / "portal-state"),
            ],
            port_file=port_file,
        )
        port = group.wait_port("portal")
        yield {"plat": plat, "code": code, "grade": tax[code]["credit_grade"], "base": f"http://127.0.0.1:{port}"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        # --no-sandbox: tests run as root in CI, where Chromium's sandbox refuses to start.
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class _Shots:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def take(self, page: Any, name: str) -> None:
        page.screenshot(path=str(self.dir / f"{name}.png"), full_page=True)


@pytest.fixture
def shots(tmp_path: Path) -> _Shots:
    return _Shots(Path(os.environ.get("XINRONG_PORTAL_SCREENSHOTS") or tmp_path / "screenshots"))


def _attacker_site(target: str, consent_id: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Another origin on this machine (another port) with a form aimed at the portal."""
    html = (
        f'<form method="post" action="{target}/consents/{consent_id}/revoke">'
        '<input type="hidden" name="csrf_token" value="guessed"><button id="go">win a prize</button></form>'
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _reload_until(page: Any, url: str, selector: str, at_least: int = 1, timeout: float = 20.0) -> Any:
    """The log lists an entry once a signed checkpoint covers it (the node signs about every second)."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        found = page.locator(selector)
        if found.count() >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _click_and_land(page: Any, target: Any) -> None:
    """Click something that navigates (a link, or a form's POST-redirect-GET) and wait until the new page has loaded.

    A bare click returns once the event is dispatched; reading the page then races the navigation and, on a
    loaded machine, reads the old page.
    """
    with page.expect_navigation(wait_until="load", timeout=30_000):
        if isinstance(target, str):
            page.click(target)
        else:
            target.click()


def _field_row(page: Any, key: str) -> Any:
    return page.locator(f'[id="field-{key}"]')


def test_owner_flow_in_a_real_browser(portal: dict[str, Any], browser: Any, shots: _Shots) -> None:
    plat: LocalPlatform = portal["plat"]
    base, code, grade = portal["base"], portal["code"], portal["grade"]
    claim = f"tax.credit_grade in {grade}"
    bank = BankClient(plat.node_address, load_party(party_dir(plat.keys_dir, "institution", "bank-a")))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        # Chinese by default, English by the toggle.
        page.goto(f"{base}/")
        assert page.url.endswith("/data") and page.locator("h1").inner_text() == "我的数据"
        _click_and_land(page, "#lang-toggle")
        assert page.locator("h1").inner_text() == "My data"
        shots.take(page, "data-en")
        _click_and_land(page, "#lang-toggle")
        assert page.locator("h1").inner_text() == "我的数据"

        # Grant: institution and scope picked from the catalog; the local process signs.
        page.goto(f"{base}/consents")
        page.select_option("#grantee", "bank-a")
        page.check('input[name="scope"][value="tax.credit_grade"]')
        page.check('input[name="scope"][value="tax.in_arrears"]')
        _click_and_land(page, "#grant-submit")
        assert page.locator(".flash.ok").count() == 1, page.content()
        row = page.locator("tr.consent")
        assert row.count() == 1 and row.get_attribute("data-state") == "active"
        consent_id = (row.get_attribute("id") or "").removeprefix("consent-")
        assert consent_id

        # My data: the tax report, verified and opened here; nothing disputed yet.
        page.goto(f"{base}/data")
        assert page.locator("#provider-tax").count() == 1
        assert _field_row(page, "tax.credit_grade").get_attribute("data-status") == "normal"
        assert grade in _field_row(page, "tax.credit_grade").inner_text()
        shots.take(page, "data")

        # A bank's Verify appears in "who accessed my data", its proof checked.
        assert bank.verify(code, [claim], consent_id)[0].result == "TRUE"
        allowed = _reload_until(
            page, f"{base}/accesses", 'tr.access[data-institution="bank-a"][data-decision="ALLOWED"]'
        )
        assert allowed.count() >= 1, page.content()
        assert "✓" in allowed.first.inner_text()
        assert consent_id[:8] in allowed.first.inner_text()

        # Another origin's page cannot revoke (no token, wrong Origin), even with the owner's cookies.
        attacker, attacker_url = _attacker_site(base, consent_id)
        try:
            evil = browser.new_page()
            evil.goto(attacker_url)
            with evil.expect_navigation():
                evil.click("#go")
            assert "cross-origin request refused" in evil.content()
            evil.close()
        finally:
            attacker.shutdown()
        # ... and a rebound host name gets nothing.
        conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
        conn.request("GET", "/data", headers={"Host": "rebind.attacker.example"})
        resp = conn.getresponse()
        assert resp.status == 421 and code.encode() not in resp.read()
        conn.close()

        # Pause: the bank is refused; resume: it answers again.
        page.goto(f"{base}/consents")
        assert page.locator(f'[id="consent-{consent_id}"]').get_attribute("data-state") == "active"
        _click_and_land(page, f'[id="consent-{consent_id}"] button.pause')
        assert page.locator(f'[id="consent-{consent_id}"]').get_attribute("data-state") == "paused"
        shots.take(page, "consents")
        with pytest.raises(RemoteError) as refused:
            bank.verify(code, [claim], consent_id)
        assert refused.value.reason == "CONSENT_PAUSED"
        _click_and_land(page, f'[id="consent-{consent_id}"] button.resume')
        assert page.locator(f'[id="consent-{consent_id}"]').get_attribute("data-state") == "active"
        assert bank.verify(code, [claim], consent_id)[0].result == "TRUE"

        # Object to the grade from its row: the badge shows, the bank's verdict is DISPUTED.
        page.goto(f"{base}/data")
        _click_and_land(page, _field_row(page, "tax.credit_grade").locator("a").first)
        assert page.locator("#case-field").input_value() == "tax.credit_grade"
        page.fill("#case-statement", "The grade was restored after our appeal.")
        _click_and_land(page, "#case-submit")
        case = page.locator('tr.case[data-field="tax.credit_grade"]')
        assert case.count() == 1 and case.get_attribute("data-state") == "open", page.content()
        case_id = (case.get_attribute("id") or "").removeprefix("case-")
        page.goto(f"{base}/data")
        assert _field_row(page, "tax.credit_grade").get_attribute("data-status") == "disputed"
        assert _field_row(page, "tax.credit_grade").locator(".badge.disputed").count() == 1
        shots.take(page, "data-disputed")
        assert bank.verify(code, [claim], consent_id)[0].disputed

        # The provider resolves it: the badge goes, the history shows it.
        result = plat.group.run_cli(
            [
                "agent",
                "objections",
                "resolve",
                "--config",
                str(plat.agent_configs["tax"]),
                "--id",
                case_id,
                "--rejected",
                "--reason",
                "grade confirmed by the 2026 review",
            ]
        )
        assert result.returncode == 0, result.stderr
        page.goto(f"{base}/data")
        assert _field_row(page, "tax.credit_grade").get_attribute("data-status") == "normal"
        assert not bank.verify(code, [claim], consent_id)[0].disputed
        page.goto(f"{base}/cases")
        assert page.locator(f'[id="case-{case_id}"]').get_attribute("data-state") == "rejected"
        assert "grade confirmed by the 2026 review" in page.locator(f'[id="case-{case_id}"]').inner_text()

        # Apply to repair the arrears record: once the provider approves, the badge says repaired
        # and the bank's claim on it answers NO_DATA.
        page.goto(f"{base}/data")
        _click_and_land(page, _field_row(page, "tax.in_arrears").locator("a").nth(1))
        assert page.locator("#case-kind").input_value() == "repair"
        assert page.locator("#case-field").input_value() == "tax.in_arrears"
        page.fill("#case-statement", "Arrears paid in full on 2026-11-20.")
        page.set_input_files(
            'input[name="evidence"]', files=[{"name": "receipt.txt", "mimeType": "text/plain", "buffer": b"paid"}]
        )
        _click_and_land(page, "#case-submit")
        repair = page.locator('tr.case[data-field="tax.in_arrears"]')
        assert repair.count() == 1 and repair.get_attribute("data-state") == "open", page.content()
        repair_id = (repair.get_attribute("id") or "").removeprefix("case-")
        assert bank.verify(code, ["tax.in_arrears == true"], consent_id)[0].result == "TRUE"
        result = plat.group.run_cli(
            [
                "agent",
                "repairs",
                "approve",
                "--config",
                str(plat.agent_configs["tax"]),
                "--id",
                repair_id,
                "--effective",
                dt.datetime.now(dt.UTC).date().isoformat(),
            ]
        )
        assert result.returncode == 0, result.stderr
        page.goto(f"{base}/data")
        assert _field_row(page, "tax.in_arrears").get_attribute("data-status") == "repaired"
        assert _field_row(page, "tax.in_arrears").locator(".badge.repaired").count() == 1
        shots.take(page, "data-repaired")
        assert bank.verify(code, ["tax.in_arrears == true"], consent_id)[0].result == "NO_DATA"
        page.goto(f"{base}/cases")
        assert page.locator(f'[id="case-{repair_id}"]').get_attribute("data-state") == "approved"
        shots.take(page, "cases")

        # Every access so far is listed and proven, the refused one included.
        listed = _reload_until(page, f"{base}/accesses", 'tr.access[data-institution="bank-a"]', at_least=7)
        # Seven Verify calls: six allowed, the one while paused refused; the owner's own requests are hidden.
        assert listed.count() == 7, "\n".join(r.inner_text() for r in page.locator("tr.access").all())
        assert page.locator("tr.access").count() == 7
        assert page.locator('tr.access[data-institution="bank-a"][data-decision="REFUSED"]').count() >= 1
        assert page.locator("tr.access .proof.bad").count() == 0
        assert page.locator("tr.access .proof.ok").count() == page.locator("tr.access").count()
        shots.take(page, "accesses")
        _click_and_land(page, "#show-own")
        assert page.locator('tr.access[data-institution="bank-a"]').count() == 7
        assert page.locator("tr.access").count() > 7  # the owner's own reads and filings are logged too

        # Revoke: for good.
        page.goto(f"{base}/consents")
        _click_and_land(page, f'[id="consent-{consent_id}"] button.revoke')
        assert page.locator(f'[id="consent-{consent_id}"]').get_attribute("data-state") == "revoked"
        with pytest.raises(RemoteError):
            bank.verify(code, [claim], consent_id)
        page.goto(f"{base}/consents?lang=zh")
        shots.take(page, "consents-revoked")
    finally:
        page.close()
        bank.close()
