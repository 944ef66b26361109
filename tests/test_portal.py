"""The enterprise portal's web layer against an in-memory backend: bind, Host, Origin, CSRF, i18n, states."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

from xinrong.enterprise.portal import i18n
from xinrong.enterprise.portal.backend import (
    AccessPage,
    AccessRow,
    ActionError,
    CaseForm,
    CaseRow,
    GrantForm,
    NotAvailable,
)
from xinrong.enterprise.portal.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    BindRefused,
    CsrfTokens,
    check_bind,
    host_ok,
    origin_ok,
)
from xinrong.enterprise.portal.server import bind_socket

from support.portal import BASE, ORIGIN, PORT, FakeBackend, csrf_token, portal_client

# -- bind ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.2", "localhost", "127.0.0.2", ""])
def test_bind_refuses_anything_but_loopback(host: str) -> None:
    with pytest.raises(BindRefused):
        check_bind(host)
    with pytest.raises(BindRefused):
        bind_socket(host, 0)


def test_bind_socket_is_loopback() -> None:
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_cli_refuses_a_public_bind_before_loading_keys(tmp_path: object) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "xinrong.tools.cli",
            "enterprise",
            "portal",
            "--credentials",
            "/nonexistent",
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0
    assert "127.0.0.1 only" in run.stdout + run.stderr


# -- Host and Origin -------------------------------------------------------------------------------


def test_host_check_stops_dns_rebinding() -> None:
    assert host_ok(f"127.0.0.1:{PORT}", PORT) and host_ok(f"localhost:{PORT}", PORT)
    assert host_ok(f"LOCALHOST:{PORT}", PORT)
    for bad in (
        None,
        "",
        "evil.example",
        f"evil.example:{PORT}",
        f"127.0.0.1:{PORT + 1}",
        "127.0.0.1",
        f"[::1]:{PORT}",
    ):
        assert not host_ok(bad, PORT), bad
    client = portal_client(FakeBackend())
    assert client.get("/data").status_code == 200
    assert client.get("/data", headers={"Host": f"localhost:{PORT}"}).status_code == 200
    for bad in ("evil.example", f"evil.example:{PORT}", f"127.0.0.1:{PORT + 1}"):
        resp = client.get("/data", headers={"Host": bad})
        assert resp.status_code == 421, bad
        assert "91130100MA0EXAMPLE" not in resp.text  # nothing of the enterprise leaks to a rebound name


def test_origin_check() -> None:
    assert origin_ok(BASE, None, PORT) and origin_ok(f"http://localhost:{PORT}", None, PORT)
    assert origin_ok(None, f"{BASE}/consents?lang=en", PORT)
    assert not origin_ok("null", None, PORT)
    assert not origin_ok("http://evil.example", f"{BASE}/consents", PORT)  # Origin wins over Referer
    assert not origin_ok(f"https://127.0.0.1:{PORT}", None, PORT)
    assert not origin_ok(None, "http://evil.example/x", PORT)
    assert not origin_ok(None, None, PORT)


# -- CSRF ------------------------------------------------------------------------------------------


def test_tokens_are_bound_to_session_and_process() -> None:
    a, b = CsrfTokens(b"a" * 32), CsrfTokens(b"b" * 32)
    s1, s2 = CsrfTokens.new_session(), CsrfTokens.new_session()
    assert s1 != s2 and len(s1) >= 32
    assert a.check(s1, a.token_for(s1))
    assert not a.check(s2, a.token_for(s1))
    assert not b.check(s1, a.token_for(s1))  # a restarted portal draws a new secret
    assert not a.check(s1, "") and not a.check(None, a.token_for(s1)) and not a.check(s1, None)
    assert CsrfTokens().token_for(s1) != CsrfTokens().token_for(s1)


def test_session_cookie_flags_and_headers() -> None:
    resp = portal_client(FakeBackend()).get("/data")
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(SESSION_COOKIE + "=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script" not in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["x-frame-options"] == "DENY" and resp.headers["referrer-policy"] == "same-origin"
    assert "<script" not in resp.text


def _tampered(token: str) -> str:
    """The token with its first character changed. ("x" + token[1:] was the token itself whenever the
    session's token began with "x": 1 session in 64, which failed this test now and then.)"""
    return ("y" if token[0] == "x" else "x") + token[1:]


def _session_whose_token_starts_with(char: str) -> str:
    """A fixed session id (no randomness) whose CSRF token, under the test secret, begins with ``char``."""
    tokens = CsrfTokens(b"s" * 32)
    sessions = (f"fixed-test-session-{i:016d}" for i in range(100_000))  # 35 characters, as the portal wants
    return next(s for s in sessions if tokens.token_for(s).startswith(char))


@pytest.mark.parametrize("first", ["x", "A"])
def test_state_change_needs_a_valid_token(first: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The session (hence the token) is fixed, one case per kind: a token that begins with the
    # tampering character, and one that does not.
    monkeypatch.setattr(CsrfTokens, "new_session", staticmethod(lambda: _session_whose_token_starts_with(first)))
    backend = FakeBackend()
    client = portal_client(backend)
    token = csrf_token(client)
    assert token.startswith(first)
    url = "/consents/c1/pause"
    assert client.post(url, data={}, headers=ORIGIN, follow_redirects=False).status_code == 403
    assert (
        client.post(url, data={CSRF_FIELD: _tampered(token)}, headers=ORIGIN, follow_redirects=False).status_code == 403
    )
    monkeypatch.undo()  # the other browser below gets a session of its own
    # A token from another browser session does not work in this one.
    other = portal_client(backend)
    other_token = csrf_token(other)
    assert client.post(url, data={CSRF_FIELD: other_token}, headers=ORIGIN, follow_redirects=False).status_code == 403
    assert backend.calls == []
    resp = client.post(url, data={CSRF_FIELD: token}, headers=ORIGIN, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/consents"
    assert backend.calls == [("pause", "c1")]
    assert "c1 → paused" in client.get("/consents").text
    assert "c1 → paused" not in client.get("/consents").text  # a message is shown once


def test_state_change_needs_same_origin_and_a_session() -> None:
    backend = FakeBackend()
    client = portal_client(backend)
    token = csrf_token(client)
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {}, {"Referer": "http://evil.example/"}):
        resp = client.post("/consents/c1/revoke", data={CSRF_FIELD: token}, headers=headers, follow_redirects=False)
        assert resp.status_code == 403, headers
    fresh = portal_client(backend)  # no session cookie yet
    resp = fresh.post("/consents/c1/revoke", data={CSRF_FIELD: token}, headers=ORIGIN, follow_redirects=False)
    assert resp.status_code == 403
    assert client.put("/consents/c1/revoke", headers=ORIGIN).status_code == 405
    assert backend.calls == []
    # Referer stands in for a missing Origin.
    resp = client.post(
        "/consents/c1/revoke", data={CSRF_FIELD: token}, headers={"Referer": f"{BASE}/consents"}, follow_redirects=False
    )
    assert resp.status_code == 303 and backend.calls == [("revoke", "c1")]


def test_grant_and_file_case_forms() -> None:
    backend = FakeBackend()
    client = portal_client(backend)
    token = csrf_token(client)
    data = {
        CSRF_FIELD: token,
        "grantee": "bank-a",
        "purpose": "loan_application",
        "scope": ["tax.credit_grade", "market.registered_capital"],
        "valid_days": "7",
        "max_uses": "3",
    }
    assert client.post("/consents/grant", data=data, headers=ORIGIN, follow_redirects=False).status_code == 303
    kind, form = backend.calls[-1]
    assert kind == "grant" and isinstance(form, GrantForm)
    assert (
        form.scope == ("tax.credit_grade", "market.registered_capital") and form.valid_days == 7 and form.max_uses == 3
    )
    # A refusal is shown, not raised.
    assert (
        "unknown institution" in client.post("/consents/grant", data={**data, "grantee": "nobody"}, headers=ORIGIN).text
    )
    assert (
        "unknown purpose" in client.post("/consents/grant", data={**data, "purpose": "marketing"}, headers=ORIGIN).text
    )
    resp = client.post(
        "/cases/file",
        data={CSRF_FIELD: token, "kind": "objection", "field": "tax.credit_grade", "statement": "grade is B"},
        files={"evidence": ("proof.txt", b"receipt", "text/plain")},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/cases"
    kind, case = backend.calls[-1]
    assert kind == "file_case" and isinstance(case, CaseForm)
    assert (case.field, case.statement, case.evidence, case.evidence_name) == (
        "tax.credit_grade",
        "grade is B",
        b"receipt",
        "proof.txt",
    )


def test_oversized_evidence_is_refused() -> None:
    backend = FakeBackend()
    client = portal_client(backend)
    token = csrf_token(client)
    resp = client.post(
        "/cases/file",
        data={CSRF_FIELD: token, "kind": "objection", "field": "tax.credit_grade", "statement": "x"},
        files={"evidence": ("big.bin", b"\0" * (400 * 1024), "application/octet-stream")},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert resp.status_code == 413 and backend.calls == []


# -- pages, states, i18n ---------------------------------------------------------------------------


def test_pages_render_in_chinese_by_default_and_english_on_request() -> None:
    client = portal_client(FakeBackend())
    zh = client.get("/data").text
    assert "我的数据" in zh and "异议中" in zh and "税务局" in zh and 'lang="zh-CN"' in zh
    assert "类别: 税务" in zh
    assert i18n.category("zh", "utilities") == "水电气" and i18n.category("zh", "new kind") == "new kind"
    assert "judicial" in zh  # the provider that did not answer is named
    en = client.get("/data?lang=en").text
    assert "My data" in en and "disputed" in en and "Tax bureau" in en and "我的数据" not in en
    assert "Category: tax" in en
    # The choice sticks (cookie) until switched back.
    assert "Who accessed my data" in client.get("/accesses").text
    assert "谁查询了我的数据" in client.get("/accesses?lang=zh").text
    assert "谁查询了我的数据" in client.get("/accesses").text
    assert "我的授权" in client.get("/consents?lang=xx").text  # an unknown language falls back, never fails


def test_every_label_used_by_a_template_exists_in_both_languages() -> None:
    used: set[str] = set()
    for entry in (resources.files("xinrong.enterprise.portal") / "templates").iterdir():
        used |= {k for k in re.findall(r"t\('([a-z_.]+)'", entry.read_text(encoding="utf-8")) if not k.endswith(".")}
    # Labels built from a value: t('nav.' ~ page), t('state.' ~ c.state), ...
    used |= {f"nav.{p}" for p in ("data", "accesses", "consents", "cases")}
    used |= {f"state.{s}" for s in ("active", "paused", "revoked", "expired", "unknown")}
    used |= {f"cstate.{s}" for s in ("open", "corrected", "rejected", "approved")}
    used |= {f"status.{s}" for s in ("normal", "disputed", "repaired")}
    assert used - i18n.label_keys() == set()
    for key in i18n.label_keys():
        zh, en = i18n.label("zh", key), i18n.label("en", key)
        assert zh and en and zh != en, key
        if key != "lang.switch":  # the toggle names the other language
            assert re.search(r"[\u4e00-\u9fff]", zh), f"{key}: no Chinese in the zh label"
    assert i18n.label("zh", "no.such.key") == "no.such.key"
    assert (
        i18n.pick_lang(None, None) == "zh" and i18n.pick_lang("en", "zh") == "en" and i18n.pick_lang(None, "en") == "en"
    )


def test_access_rows_show_the_proof_mark_and_hide_own_requests_by_default() -> None:
    client = portal_client(FakeBackend())
    html = client.get("/accesses").text
    assert html.count('class="access"') == 1 and "✓" in html and "bank-a" in html and "GetMyData" not in html
    html = client.get("/accesses?own=1&lang=en").text
    assert html.count('class="access"') == 2 and "this enterprise (own request)" in html
    assert 'href="?own=1&amp;lang=zh"' in html  # the language toggle keeps the view


@pytest.mark.parametrize(
    ("page", "feature"),
    [("/data", "my_data"), ("/accesses", "accesses"), ("/consents", "consents"), ("/cases", "cases")],
)
def test_a_missing_feature_shows_not_available(page: str, feature: str) -> None:
    backend = FakeBackend(unavailable={feature})
    client = portal_client(backend)
    html = client.get(page).text
    assert 'id="not-available"' in html and "此节点暂不提供该功能" in html
    assert "Not available on this node" in client.get(page + "?lang=en").text


def test_an_action_the_node_does_not_offer_is_reported() -> None:
    backend = FakeBackend(unavailable={"pause"})
    client = portal_client(backend)
    client.get("/consents?lang=en")
    html = client.post("/consents/c1/pause", data={CSRF_FIELD: csrf_token(client)}, headers=ORIGIN).text
    assert "does not offer it yet: pause" in html


def test_output_is_escaped() -> None:
    @dataclass
    class Hostile(FakeBackend):
        def cases(self) -> list[CaseRow]:
            return [
                CaseRow("k1", "objection", "tax.credit_grade", "<script>alert(1)</script>", "open", "", "", False, "")
            ]

    html = portal_client(Hostile()).get("/cases").text
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


# -- the adapter's mapping of the node's answers -----------------------------------------------------


def test_adapter_turns_unimplemented_into_not_available_and_refusals_into_messages(tmp_path: Path) -> None:
    import grpc

    from xinrong.enterprise.portal.adapter import ClientBackend
    from xinrong.rpc.errors import RemoteError

    class NoRights:
        def list_consents(self) -> list[object]:
            raise RemoteError(grpc.StatusCode.UNIMPLEMENTED, "UNIMPLEMENTED", "unknown service")

        def my_data(self) -> object:
            raise RemoteError(grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED", "access denied")

        def close(self) -> None:
            pass

    class Creds:
        role = "enterprise"
        party_id = "91130100MA0EXAMPLE"

    backend = ClientBackend("127.0.0.1:1", Creds(), state_dir=tmp_path)  # type: ignore[arg-type]
    backend._client_obj = NoRights()  # type: ignore[assignment]
    # No consent list on the node: the locally kept consent files stand in (none yet).
    assert backend.consents() == []
    with pytest.raises(ActionError, match="ACCESS_DENIED"):
        backend.my_data()
    # A client without a method (an older enterprise client) is "not available" too.
    with pytest.raises(NotAvailable):
        backend.cases()
    with pytest.raises(NotAvailable):
        backend.pause("c1")


def test_every_catalog_category_has_a_chinese_label() -> None:
    from xinrong.catalog import default_catalog

    for provider in default_catalog().providers.values():
        assert re.search(r"[\u4e00-\u9fff]", i18n.category("zh", provider.category)), provider.category


def test_an_access_log_that_does_not_verify_shows_nothing(tmp_path: Path) -> None:
    from xinrong.enterprise.portal.adapter import ClientBackend
    from xinrong.tlog.merkle import ProofError
    from xinrong.tlog.witness import SplitView

    class Forked:
        def __init__(self, err: Exception) -> None:
            self.err = err

        def accesses(self) -> list[object]:
            raise self.err

        def close(self) -> None:
            pass

    class Creds:
        role = "enterprise"
        party_id = "91130100MA0EXAMPLE"

    backend = ClientBackend("127.0.0.1:1", Creds(), state_dir=tmp_path)  # type: ignore[arg-type]
    for err in (ProofError("root mismatch"), SplitView("xinrong.audit/node", "a", "b", "same size, other root")):
        backend._log_obj = Forked(err)  # type: ignore[assignment]
        with pytest.raises(ActionError, match="did not verify, nothing is shown"):
            backend.accesses()

    class Refusing(FakeBackend):
        def accesses(self) -> list[AccessRow]:
            raise ActionError("the node's log did not verify, nothing is shown: split view")

    html = portal_client(Refusing()).get("/accesses?lang=en").text
    assert 'id="load-error"' in html and "split view" in html and 'class="access"' not in html


def test_the_access_list_is_paged_by_cursor_and_every_page_keeps_the_view() -> None:
    """A long access list comes in pages of ACCESS_PAGE, each resumed after the last one's cursor."""
    from xinrong.enterprise.portal.app import ACCESS_PAGE

    class Long(FakeBackend):
        def accesses(self) -> list[AccessRow]:
            base = FakeBackend.accesses(self)[0]
            return [
                dataclasses.replace(base, institution=f"bank-{i:03d}", leaf_index=i, tree_size=200) for i in range(120)
            ]

        def accesses_page(self, cursor: str, limit: int) -> AccessPage:
            self.calls.append(("accesses_page", (cursor, limit)))
            return FakeBackend.accesses_page(self, cursor, limit)

    backend = Long()
    client = portal_client(backend)
    seen: list[str] = []
    url = "/accesses?lang=en"
    pages = 0
    while url:
        html = client.get(url).text
        pages += 1
        seen += re.findall(r'data-institution="(bank-\d+)"', html)
        found = re.search(r'id="next-page" href="([^"]+)"', html)
        url = found.group(1).replace("&amp;", "&") if found else ""
        if pages > 1:
            assert 'id="first-page" href="/accesses?lang=en"' in html
        assert pages < 10
    assert pages == 3 and seen == [f"bank-{i:03d}" for i in range(120)]
    assert [c[1] for c in backend.calls if c[0] == "accesses_page"] == [
        ("", ACCESS_PAGE),
        ("50", ACCESS_PAGE),
        ("100", ACCESS_PAGE),
    ]
    assert client.get("/accesses?after=1%200").status_code == 400
    assert client.get("/accesses?after=" + "9" * 30).status_code == 400
