"""What the portal needs from the platform, as one small interface.

The web layer (``app``) only ever talks to a ``PortalBackend``: it renders
plain view rows and passes form values back. The one real implementation
(``adapter.ClientBackend``) signs with the enterprise's key and calls the node
over mTLS through the enterprise client; tests use an in-memory fake. Keeping
the interface this narrow is what lets the page never hold key material: no
method takes or returns a key, a signature or a sealed box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class NotAvailable(Exception):
    """The node (or this build of the client) does not offer a feature: the page says so instead of failing."""

    def __init__(self, feature: str) -> None:
        super().__init__(f"{feature} is not available on this node")
        self.feature = feature


class ActionError(Exception):
    """A refusal worth showing to the user as is (validation, a node's public reason)."""


@dataclass(frozen=True)
class DataField:
    field: str
    description: str
    value: str | None
    status: str  # normal | disputed | repaired


@dataclass(frozen=True)
class ProviderData:
    provider: str
    name: str
    name_zh: str
    category: str
    data_as_of: str
    held: bool
    fields: tuple[DataField, ...]


@dataclass(frozen=True)
class PublicRow:
    """One public (aggregate-mode) record the node holds on the enterprise: what any bank may read."""

    field: str
    description: str
    value: str
    provider: str
    provider_name: str
    provider_name_zh: str
    as_of: str
    version: int


@dataclass(frozen=True)
class MyData:
    providers: tuple[ProviderData, ...]
    unavailable: tuple[str, ...] = ()
    # The node's public records on the enterprise; None: the node does not serve them.
    public: tuple[PublicRow, ...] | None = ()


@dataclass(frozen=True)
class AccessRow:
    at: str
    caller_role: str  # institution, or enterprise for the owner's own requests
    institution: str
    method: str
    consent_id: str
    providers: tuple[str, ...]
    fields: tuple[str, ...]
    decision: str
    reason: str
    leaf_index: int
    tree_size: int
    # True only when the client rebuilt the leaf and checked its inclusion proof
    # against a signed checkpoint its witness accepted.
    proof_verified: bool


@dataclass(frozen=True)
class ConsentRow:
    consent_id: str
    grantee: str
    purpose: str
    state: str  # active | paused | revoked | expired | exhausted | ...
    uses: int
    max_uses: int
    valid_until: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class CaseEventRow:
    at: str
    state: str
    note: str


@dataclass(frozen=True)
class CaseRow:
    case_id: str
    kind: str  # objection | repair
    field: str
    statement: str
    state: str  # open | corrected | rejected | approved
    filed_at: str
    reason: str
    overdue: bool
    effective_date: str
    history: tuple[CaseEventRow, ...] = ()


@dataclass(frozen=True)
class GrantForm:
    grantee: str
    purpose: str
    scope: tuple[str, ...]
    valid_days: float = 30.0
    max_uses: int = 10
    period_from: str = ""
    period_to: str = ""


@dataclass(frozen=True)
class CaseForm:
    kind: str  # objection | repair
    field: str
    statement: str
    evidence: bytes = b""
    evidence_name: str = ""


@dataclass(frozen=True)
class ProductRow:
    """A bank's published product (signature checked) and this enterprise's own match, if any."""

    product_id: str
    bank_id: str
    name: str
    category: str
    amount: str
    term_months: str
    rate_bps: str
    rules: tuple[str, ...]
    matched: bool
    eligible: bool
    failed_rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApplyForm:
    product_id: str
    amount: int
    term_months: int
    purpose: str = ""
    region: str = ""


@dataclass(frozen=True)
class AccessPage:
    """One page of the access list, oldest first; ``next_cursor`` resumes after it ("" on the last page).

    The cursor is the node's page token (the last leaf's sequence number), so
    a page costs one indexed range read however long the list is.
    """

    rows: tuple[AccessRow, ...]
    next_cursor: str


@dataclass(frozen=True)
class Identity:
    enterprise: str
    node: str
    extra: dict[str, str] = field(default_factory=dict)


class PortalBackend(Protocol):
    """Everything the enterprise can see and do from its page (NotAvailable / ActionError on refusal)."""

    def identity(self) -> Identity: ...

    def my_data(self) -> MyData: ...

    def accesses(self) -> list[AccessRow]: ...

    def accesses_page(self, cursor: str, limit: int) -> AccessPage: ...

    def consents(self) -> list[ConsentRow]: ...

    def institutions(self) -> list[str]: ...

    def grant(self, form: GrantForm) -> str: ...

    def pause(self, consent_id: str) -> str: ...

    def resume(self, consent_id: str) -> str: ...

    def revoke(self, consent_id: str) -> str: ...

    def cases(self) -> list[CaseRow]: ...

    def file_case(self, form: CaseForm) -> str: ...

    # Loan products (optional: a backend without them shows "not available"):
    # ``products() -> list[ProductRow]`` and ``apply(form: ApplyForm) -> str``.
