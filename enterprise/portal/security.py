"""The portal's guards: loopback bind only, Host/Origin checks, CSRF tokens.

The page runs on the enterprise's own machine and acts with its key, so any
other web page the owner has open is the adversary:

* **Bind**: 127.0.0.1 only; nothing on the network can reach the page.
* **DNS rebinding**: a hostile name resolved to 127.0.0.1 reaches the port
  but sends its own name as Host, so every request (reads too, which show
  the enterprise's data) must name ``127.0.0.1:PORT`` or ``localhost:PORT``.
* **CSRF**: every state change needs a synchronizer token, an HMAC under a
  secret drawn at process start over the browser's session cookie (HttpOnly,
  SameSite=Strict), and an Origin (or, failing that, Referer) of this very
  origin. A restart draws a new secret, so no token outlives the process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"
SESSION_COOKIE = "xr_portal_session"
CSRF_FIELD = "csrf_token"


class BindRefused(ValueError):
    """The portal serves on 127.0.0.1 only."""


def check_bind(host: str) -> str:
    if host != LOOPBACK:
        raise BindRefused(f"the portal binds to {LOOPBACK} only (it acts with the enterprise's key), not {host!r}")
    return host


def allowed_hosts(port: int) -> frozenset[str]:
    return frozenset({f"{LOOPBACK}:{port}", f"localhost:{port}"})


def allowed_origins(port: int) -> frozenset[str]:
    return frozenset(f"http://{h}" for h in allowed_hosts(port))


def host_ok(host: str | None, port: int) -> bool:
    return host is not None and host.lower() in allowed_hosts(port)


def origin_ok(origin: str | None, referer: str | None, port: int) -> bool:
    """A state change must come from a page of this origin: Origin, or Referer when a browser sends no Origin."""
    if origin is not None:
        return origin.lower() in allowed_origins(port)
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() in allowed_origins(port)
    return False


class CsrfTokens:
    """Synchronizer tokens bound to a session id under a per-process secret."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    @staticmethod
    def new_session() -> str:
        return secrets.token_urlsafe(32)

    def token_for(self, session: str) -> str:
        mac = hmac.new(self._secret, b"xinrong.portal.csrf\x00" + session.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def check(self, session: str | None, token: str | None) -> bool:
        if not session or not token:
            return False
        return hmac.compare_digest(self.token_for(session), token)
