"""The enterprise portal's web layer driven in process: an in-memory backend, a test client, CSRF tokens.

Shared by the portal's test modules (pages, products)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from starlette.testclient import TestClient

from xinrong.enterprise.portal.app import create_app
from xinrong.enterprise.portal.backend import (
    AccessPage,
    AccessRow,
    ActionError,
    CaseForm,
    CaseRow,
    ConsentRow,
    DataField,
    GrantForm,
    Identity,
    MyData,
    NotAvailable,
    ProviderData,
)
from xinrong.enterprise.portal.security import CSRF_FIELD

PORT = 18765  # never bound: the app is driven in-process, the number only feeds the Host check
BASE = f"http://127.0.0.1:{PORT}"


@dataclass
class FakeBackend:
    """Every portal backend call answered from fixed rows; actions are recorded in ``calls``."""

    calls: list[tuple[str, object]] = field(default_factory=list)
    unavailable: set[str] = field(default_factory=set)
    consent_state: str = "active"

    def _gate(self, name: str) -> None:
        if name in self.unavailable:
            raise NotAvailable(name)

    def identity(self) -> Identity:
        return Identity("91130100MA0EXAMPLE", "127.0.0.1:7443")

    def my_data(self) -> MyData:
        self._gate("my_data")
        return MyData(
            (
                ProviderData(
                    "tax",
                    "Tax bureau",
                    "税务局",
                    "tax",
                    "2026-09-30",
                    True,
                    (
                        DataField("tax.credit_grade", "tax credit grade", "A", "disputed"),
                        DataField("tax.arrears_amount", "arrears", "0", "normal"),
                    ),
                ),
            ),
            ("judicial",),
        )

    def accesses(self) -> list[AccessRow]:
        self._gate("accesses")
        return [
            AccessRow(
                "2026-12-02 07:00:00 UTC",
                "institution",
                "bank-a",
                "Verify",
                "c1",
                ("tax",),
                ("tax.credit_grade",),
                "ALLOWED",
                "",
                7,
                9,
                True,
            ),
            AccessRow(
                "2026-12-02 07:00:01 UTC",
                "enterprise",
                "91130100MA0EXAMPLE",
                "GetMyData",
                "",
                (),
                (),
                "ALLOWED",
                "",
                8,
                9,
                True,
            ),
        ]

    def accesses_page(self, cursor: str, limit: int) -> AccessPage:
        """Pages of ``accesses`` as the node pages them: after the cursor's sequence number (leaf + 1)."""
        after = int(cursor or 0)
        rows = [r for r in self.accesses() if r.leaf_index + 1 > after]
        page = rows[:limit]
        more = len(rows) > limit
        return AccessPage(tuple(page), str(page[-1].leaf_index + 1) if more and page else "")

    def consents(self) -> list[ConsentRow]:
        self._gate("consents")
        return [
            ConsentRow(
                "c1", "bank-a", "loan_application", self.consent_state, 1, 10, "2027-01-01", ("tax.credit_grade",)
            )
        ]

    def institutions(self) -> list[str]:
        return ["bank-a"]

    def grant(self, form: GrantForm) -> str:
        self.calls.append(("grant", form))
        if form.grantee == "nobody":
            raise ActionError("unknown institution")
        return "c2"

    def pause(self, consent_id: str) -> str:
        self._gate("pause")
        self.calls.append(("pause", consent_id))
        return "paused"

    def resume(self, consent_id: str) -> str:
        self.calls.append(("resume", consent_id))
        return "active"

    def revoke(self, consent_id: str) -> str:
        self.calls.append(("revoke", consent_id))
        return "revoked"

    def cases(self) -> list[CaseRow]:
        self._gate("cases")
        return [CaseRow("k1", "objection", "tax.credit_grade", "wrong grade", "open", "2026-12-01", "", True, "")]

    def file_case(self, form: CaseForm) -> str:
        self._gate("cases")
        self.calls.append(("file_case", form))
        return "k2"


def portal_client(backend: FakeBackend, **kw: object) -> TestClient:
    """The portal app over ``backend``, driven in process (nothing is bound)."""
    return TestClient(create_app(backend, port=PORT, secret=b"s" * 32), base_url=BASE, **kw)  # type: ignore[arg-type]


def csrf_token(client: TestClient, page: str = "/consents") -> str:
    """The CSRF token the page at ``page`` carries for this client's session."""
    html = client.get(page).text
    m = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', html)
    assert m, "the page carries no CSRF token"
    return m.group(1)


ORIGIN = {"Origin": BASE}
