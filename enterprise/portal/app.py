"""The portal's web application (Starlette + Jinja2, server-rendered, no script).

Plain HTML forms with POST-redirect-GET do everything the pages need, so the
page carries no JavaScript at all (``script-src 'none'``): nothing to vendor,
nothing a hostile page could inject into, and it works in any browser. Every
request passes the Host check; every POST also the Origin and CSRF checks
(``security``). Backend calls are blocking gRPC, so they run in the thread pool.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from xinrong import ids
from xinrong.catalog import Catalog, default_catalog
from xinrong.enterprise.portal import i18n
from xinrong.enterprise.portal.backend import ActionError, ApplyForm, CaseForm, GrantForm, NotAvailable, PortalBackend
from xinrong.enterprise.portal.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    CsrfTokens,
    host_ok,
    origin_ok,
)

log = logging.getLogger(__name__)

LANG_COOKIE = "xr_portal_lang"
PURPOSES = ("loan_application", "post_loan_monitoring", "credit_scoring", "joint_modeling", "matching")
# Evidence is capped by the subject-rights contract; the form may add a little text around it.
MAX_EVIDENCE_BYTES = 256 * 1024
ACCESS_PAGE = 50  # access rows per page (each proven before it is shown)
MAX_BODY_BYTES = MAX_EVIDENCE_BYTES + 64 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on POST.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class _Flash:
    """One-shot messages per session, shown on the page a POST redirects to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_session: dict[str, list[tuple[str, str]]] = {}

    def add(self, session: str, kind: str, text: str) -> None:
        with self._lock:
            items = self._by_session.setdefault(session, [])
            items.append((kind, text))
            del items[:-5]
            if len(self._by_session) > 1000:  # a flood of cookie-less requests cannot grow this
                self._by_session.pop(next(iter(self._by_session)))

    def take(self, session: str) -> list[tuple[str, str]]:
        with self._lock:
            return self._by_session.pop(session, [])


class _Guard(BaseHTTPMiddleware):
    def __init__(self, app: Any, *, port: int, tokens: CsrfTokens) -> None:
        super().__init__(app)
        self.port = port
        self.tokens = tokens

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if not host_ok(request.headers.get("host"), self.port):
            return _refuse(421, "unknown host: this portal answers only to 127.0.0.1 and localhost on its port")
        session = request.cookies.get(SESSION_COOKIE)
        fresh = session is None or len(session) < 32 or len(session) > 64
        if request.method not in ("GET", "HEAD"):
            if request.method != "POST":
                return _refuse(405, "method not allowed")
            if not origin_ok(request.headers.get("origin"), request.headers.get("referer"), self.port):
                return _refuse(403, "cross-origin request refused")
            if fresh:
                return _refuse(403, "no session: reload the page and try again")
            length = request.headers.get("content-length")
            size = ids.decimal(length) if length is not None else None
            if size is None or size > MAX_BODY_BYTES:
                return _refuse(413, "request too large or without a length")
        if fresh:
            session = CsrfTokens.new_session()
        assert session is not None
        request.state.session = session
        response = await call_next(request)
        if fresh:
            response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", path="/")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _refuse(status: int, text: str) -> Response:
    response = PlainTextResponse(text, status_code=status)
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("xinrong.enterprise.portal", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    return env


def create_app(
    backend: PortalBackend, *, port: int, catalog: Catalog | None = None, secret: bytes | None = None
) -> Starlette:
    """The ASGI app for a portal listening on 127.0.0.1:``port`` (the Host check needs the real port)."""
    catalog = catalog or default_catalog()
    tokens = CsrfTokens(secret)
    flash = _Flash()
    env = _env()
    scope_choices = [
        (provider, [f for f in catalog.provider_fields(provider) if f.forms]) for provider in sorted(catalog.providers)
    ]
    scope_choices = [(p, fs) for p, fs in scope_choices if fs]

    def lang_of(request: Request) -> str:
        return i18n.pick_lang(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))

    def render(request: Request, template: str, page: str, **values: Any) -> Response:
        lang = lang_of(request)
        session: str = request.state.session

        def t(key: str, **kw: object) -> str:
            return i18n.label(lang, key, **kw)

        html = env.get_template(template).render(
            t=t,
            category=lambda name: i18n.category(lang, name),
            lang=lang,
            # The toggle keeps the page's other query parameters (e.g. ?own=1).
            toggle_query=urlencode({**request.query_params, "lang": "en" if lang == "zh" else "zh"}),
            page=page,
            csrf_field=CSRF_FIELD,
            csrf_token=tokens.token_for(session),
            flashes=flash.take(session),
            identity=backend.identity(),
            catalog=catalog,
            **values,
        )
        response = HTMLResponse(html)
        if request.query_params.get("lang") in i18n.LANGS:
            response.set_cookie(LANG_COOKIE, lang, httponly=True, samesite="strict", path="/")
        return response

    async def load(fn: Callable[[], Any]) -> tuple[Any, str | None, str | None]:
        """(value, unavailable feature, error) of one backend read."""
        try:
            return await run_in_threadpool(fn), None, None
        except NotAvailable as err:
            return None, err.feature, None
        except ActionError as err:
            return None, None, str(err)

    async def index(request: Request) -> Response:
        return RedirectResponse("/data", status_code=303)

    async def data_page(request: Request) -> Response:
        value, missing, error = await load(backend.my_data)
        return render(request, "data.html", "data", data=value, missing=missing, error=error)

    async def accesses_page(request: Request) -> Response:
        # Cursor pagination: ``after`` is the node's page token (a leaf sequence number), oldest first.
        cursor = request.query_params.get("after", "")
        if not (cursor == "" or ids.decimal(cursor) is not None):
            return PlainTextResponse("bad cursor", status_code=400)
        page, missing, error = await load(lambda: backend.accesses_page(cursor, ACCESS_PAGE))
        value = list(page.rows) if page is not None else None
        # The owner's own requests (reads, filings) are logged too; shown on request only.
        own = request.query_params.get("own") == "1"
        hidden = 0
        if value is not None and not own:
            kept = [r for r in value if r.caller_role != "enterprise"]
            hidden, value = len(value) - len(kept), kept
        keep = {k: v for k, v in request.query_params.items() if k in ("own", "lang")}
        next_query = urlencode({**keep, "after": page.next_cursor}) if page is not None and page.next_cursor else ""
        return render(
            request,
            "accesses.html",
            "accesses",
            rows=value,
            missing=missing,
            error=error,
            own=own,
            hidden=hidden,
            next_query=next_query,
            first_href=("/accesses?" + urlencode(keep) if keep else "/accesses") if cursor else "",
        )

    async def consents_page(request: Request) -> Response:
        value, missing, error = await load(backend.consents)
        institutions, _, _ = await load(backend.institutions)
        return render(
            request,
            "consents.html",
            "consents",
            rows=value,
            missing=missing,
            error=error,
            institutions=institutions or [],
            purposes=PURPOSES,
            scope_choices=scope_choices,
        )

    async def cases_page(request: Request) -> Response:
        value, missing, error = await load(backend.cases)
        fields = sorted(catalog.fields)
        return render(
            request,
            "cases.html",
            "cases",
            rows=value,
            missing=missing,
            error=error,
            fields=fields,
            selected_field=request.query_params.get("field", ""),
            selected_kind=request.query_params.get("kind", "objection"),
        )

    async def _post(request: Request, back: str, action: Callable[[dict[str, Any]], Awaitable[str] | str]) -> Response:
        session: str = request.state.session
        form = await request.form(max_files=1, max_fields=200, max_part_size=MAX_EVIDENCE_BYTES + 1)
        values: dict[str, Any] = {}
        for key in form:
            items = form.getlist(key)
            values[key] = items if len(items) > 1 or key == "scope" else items[0]
        token = values.get(CSRF_FIELD)
        if not isinstance(token, str) or not tokens.check(session, token):
            return _refuse(403, "CSRF token missing or wrong: reload the page and try again")
        lang = lang_of(request)
        try:
            result = action(values)
            done = await result if not isinstance(result, str) else result
            flash.add(session, "ok", f"{i18n.label(lang, 'done')}: {done}")
        except NotAvailable as err:
            flash.add(session, "error", i18n.label(lang, "not_available.detail", feature=err.feature))
        except (ActionError, ValueError) as err:
            flash.add(session, "error", f"{i18n.label(lang, 'error')}: {err}")
        finally:
            await form.close()
        return RedirectResponse(back, status_code=303)

    def _text(values: dict[str, Any], key: str) -> str:
        raw = values.get(key, "")
        if not isinstance(raw, str):
            raise ActionError(f"field {key!r} must be text")
        return raw.strip()

    async def grant(request: Request) -> Response:
        async def act(values: dict[str, Any]) -> str:
            scope = [s for s in values.get("scope", []) if isinstance(s, str) and s]
            if not scope:
                raise ActionError("pick at least one field")
            try:
                valid_days = float(_text(values, "valid_days") or "30")
                max_uses = int(_text(values, "max_uses") or "10")
            except ValueError:
                raise ActionError("validity and uses must be numbers") from None
            form = GrantForm(
                grantee=_text(values, "grantee"),
                purpose=_text(values, "purpose"),
                scope=tuple(scope),
                valid_days=valid_days,
                max_uses=max_uses,
            )
            if form.purpose not in PURPOSES:
                raise ActionError("unknown purpose")
            result: str = await run_in_threadpool(backend.grant, form)
            return result

        return await _post(request, "/consents", act)

    def _change(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            consent_id = request.path_params["consent_id"]

            async def act(values: dict[str, Any]) -> str:
                fn = getattr(backend, name)
                state: str = await run_in_threadpool(fn, consent_id)
                return f"{consent_id} → {state}"

            return await _post(request, "/consents", act)

        return handler

    async def file_case(request: Request) -> Response:
        async def act(values: dict[str, Any]) -> str:
            evidence = b""
            evidence_name = ""
            upload = values.get("evidence")
            if isinstance(upload, UploadFile) and upload.filename:
                evidence = await upload.read(MAX_EVIDENCE_BYTES + 1)
                if len(evidence) > MAX_EVIDENCE_BYTES:
                    raise ActionError(f"evidence larger than {MAX_EVIDENCE_BYTES} bytes")
                evidence_name = upload.filename
            form = CaseForm(
                kind=_text(values, "kind"),
                field=_text(values, "field"),
                statement=_text(values, "statement"),
                evidence=evidence,
                evidence_name=evidence_name,
            )
            result: str = await run_in_threadpool(backend.file_case, form)
            return result

        return await _post(request, "/cases", act)

    def _products_backend(name: str) -> Callable[..., Any]:
        fn = getattr(backend, name, None)
        if fn is None:
            raise NotAvailable("products")
        result: Callable[..., Any] = fn
        return result

    async def products_page(request: Request) -> Response:
        def read() -> Any:
            return _products_backend("products")()

        value, missing, error = await load(read)
        return render(request, "products.html", "products", rows=value, missing=missing, error=error)

    async def apply_product(request: Request) -> Response:
        async def act(values: dict[str, Any]) -> str:
            try:
                form = ApplyForm(
                    product_id=_text(values, "product_id"),
                    amount=int(_text(values, "amount")),
                    term_months=int(_text(values, "term_months")),
                    purpose=_text(values, "purpose"),
                    region=_text(values, "region"),
                )
            except ValueError:
                raise ActionError("amount and term must be whole numbers") from None
            result: str = await run_in_threadpool(_products_backend("apply"), form)
            return result

        return await _post(request, "/products", act)

    static = resources.files("xinrong.enterprise.portal") / "static"
    routes = [
        Route("/", index),
        Route("/data", data_page),
        Route("/accesses", accesses_page),
        Route("/consents", consents_page),
        Route("/consents/grant", grant, methods=["POST"]),
        Route("/consents/{consent_id}/pause", _change("pause"), methods=["POST"]),
        Route("/consents/{consent_id}/resume", _change("resume"), methods=["POST"]),
        Route("/consents/{consent_id}/revoke", _change("revoke"), methods=["POST"]),
        Route("/cases", cases_page),
        Route("/cases/file", file_case, methods=["POST"]),
        Route("/products", products_page),
        Route("/products/apply", apply_product, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(static)), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_Guard, port=port, tokens=tokens)
    return app
