"""``PortalBackend`` over the enterprise client: the only part of the portal that touches keys.

It keeps one mTLS channel to the node with the enterprise's certificate
(and one for the access log, whose witness persists in the state
directory), signs whatever the enterprise must sign (consents, revocations,
pauses, queries, filings) with its Ed25519 key in this process, and turns
the verified answers into plain rows. An access log whose proofs or
checkpoints do not verify is refused whole. A feature the node does not serve (UNIMPLEMENTED),
or that this build of the client does not have yet, is ``NotAvailable``: the
page shows that state instead of an error.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc

from xinrong.catalog import Catalog, default_catalog
from xinrong.consent import parse_consent, read_consent, write_consent
from xinrong.enterprise import client as ent
from xinrong.enterprise.portal.backend import (
    AccessPage,
    AccessRow,
    ActionError,
    ApplyForm,
    CaseEventRow,
    CaseForm,
    CaseRow,
    ConsentRow,
    DataField,
    GrantForm,
    Identity,
    MyData,
    NotAvailable,
    ProductRow,
    ProviderData,
    PublicRow,
)
from xinrong.errors import XinrongError
from xinrong.keys.layout import PartyCredentials
from xinrong.rpc.errors import RemoteError
from xinrong.serde import consent_state_name, purpose_name
from xinrong.tlog.merkle import ProofError
from xinrong.tlog.note import NoteError
from xinrong.tlog.witness import SplitView, Witness
from xinrong.v1 import subject_pb2

T = TypeVar("T")


def _when(ts: int | float) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _enum(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def default_period() -> tuple[str, str]:
    today = dt.date.today()
    return f"{today.year - 1}-01-01", f"{today.year}-12-31"


class ClientBackend:
    """The enterprise's own process: credentials loaded once, a fresh client per request."""

    def __init__(
        self,
        node: str,
        credentials: PartyCredentials,
        *,
        state_dir: Path,
        node_id: str = "node",
        catalog: Catalog | None = None,
    ) -> None:
        if credentials.role != "enterprise":
            raise ValueError("the portal runs with an enterprise's own credentials")
        self._node = node
        self._creds = credentials
        self._node_id = node_id
        self._catalog = catalog or default_catalog()
        # Granted consents (signed files) and the witness's newest checkpoint
        # live here; the default is the credentials directory, as for the CLI.
        self._consents_dir = state_dir / "consents"
        self._witness_path = state_dir / "witness.json"
        self._log_obj: ent.EnterpriseClient | None = None
        # One client (one mTLS channel) for the life of the process: the
        # witness inside it keeps the newest checkpoint seen, so every page
        # load demands a consistency proof from the one before.
        self._client_obj: ent.EnterpriseClient | None = None
        self._lock = threading.Lock()
        self._access_lock = threading.Lock()  # the witness is not meant for concurrent updates

    # -- plumbing ---------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            for client in (self._client_obj, self._log_obj):
                if client is not None:
                    client.close()
            self._client_obj = self._log_obj = None

    def _shared_client(self) -> ent.EnterpriseClient:
        with self._lock:
            if self._client_obj is None:
                self._client_obj = ent.SubjectClient(self._node, self._creds, node_id=self._node_id)
            return self._client_obj

    def _log_client(self) -> ent.EnterpriseClient:
        """The client that reads the access log, with a witness kept on disk across restarts."""
        with self._lock:
            if self._log_obj is None:
                self._log_obj = ent.EnterpriseClient(
                    self._node, self._creds, node_id=self._node_id, witness=Witness(self._witness_path)
                )
            return self._log_obj

    @contextmanager
    def _client(self, feature: str, client: Any = None) -> Iterator[Any]:
        client = client if client is not None else self._shared_client()
        try:
            yield client
        except AttributeError as err:
            # The merged enterprise client has no such method yet.
            raise NotAvailable(feature) from err
        except RemoteError as err:
            if err.code is grpc.StatusCode.UNIMPLEMENTED:
                raise NotAvailable(feature) from None
            raise ActionError(f"{err.reason}: {err.message}") from None
        except XinrongError as err:
            raise ActionError(str(err)) from None

    def _call(self, feature: str, fn: Callable[[Any], T]) -> T:
        with self._client(feature) as client:
            return fn(client)

    # -- reads -------------------------------------------------------------------------------------

    def identity(self) -> Identity:
        return Identity(enterprise=self._creds.party_id, node=self._node)

    def my_data(self) -> MyData:
        def read(client: Any) -> MyData:
            reports, unavailable = client.my_data()
            providers: list[ProviderData] = []
            for item in reports:
                r = item.report
                spec = self._catalog.providers.get(item.provider)
                fields = []
                for f in r.fields:
                    desc = self._catalog.fields[f.field].description if f.field in self._catalog.fields else ""
                    status = _enum(_status_name(f.status), "FIELD_STATUS_")
                    fields.append(DataField(f.field, desc, f.value if f.present else None, status))
                providers.append(
                    ProviderData(
                        provider=item.provider,
                        name=spec.display_name if spec else item.provider,
                        name_zh=spec.display_name_zh if spec else item.provider,
                        category=spec.category if spec else "",
                        data_as_of=r.data_as_of,
                        held=r.held,
                        fields=tuple(fields),
                    )
                )
            providers.sort(key=lambda p: (p.category, p.provider))
            return MyData(tuple(providers), tuple(unavailable), self._public_rows(client))

        return self._call("my data", read)

    def _public_rows(self, client: Any) -> tuple[PublicRow, ...] | None:
        """The node's public records on us (GetPublicRecords as ourselves); None if the node has none to serve."""
        try:
            records, _leaf = client.public_records()
        except AttributeError:  # an enterprise client without public records
            return None
        except RemoteError as err:
            if err.code is grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise
        rows = []
        for r in records:
            spec = self._catalog.providers.get(r.provider)
            desc = self._catalog.fields[r.field].description if r.field in self._catalog.fields else ""
            rows.append(
                PublicRow(
                    field=r.field,
                    description=desc,
                    value=_public_value(r.value),
                    provider=r.provider,
                    provider_name=spec.display_name if spec else r.provider,
                    provider_name_zh=spec.display_name_zh if spec else r.provider,
                    as_of=r.as_of,
                    version=r.version,
                )
            )
        return tuple(rows)

    def accesses(self) -> list[AccessRow]:
        def read(client: Any) -> list[AccessRow]:
            return [_access_row(e) for e in client.accesses()]

        return self._proven_read(read)

    def accesses_page(self, cursor: str, limit: int) -> AccessPage:
        def read(client: Any) -> AccessPage:
            entries, token = client.accesses_page(cursor, limit)
            return AccessPage(tuple(_access_row(e) for e in entries), token)

        return self._proven_read(read)

    def _proven_read(self, read: Callable[[Any], T]) -> T:
        with self._access_lock:
            try:
                with self._client("access log", self._log_client()) as client:
                    return read(client)
            except (ProofError, NoteError, SplitView) as err:
                # Nothing is shown unproven: the whole list is refused, loudly.
                raise ActionError(f"the node's log did not verify, nothing is shown: {err}") from None

    def consents(self) -> list[ConsentRow]:
        try:
            return self._call("consent list", self._listed_consents)
        except NotAvailable:
            return self._local_consents()

    def _listed_consents(self, client: Any) -> list[ConsentRow]:
        rows = [
            ConsentRow(
                consent_id=c.consent_id,
                grantee=c.grantee_id,
                purpose=purpose_name(c.purpose),
                state=consent_state_name(c.state).lower(),
                uses=c.uses,
                max_uses=c.max_uses,
                valid_until=_when(c.valid_until),
                fields=tuple(c.fields),
            )
            for c in client.list_consents()
        ]
        return rows

    def _local_consents(self) -> list[ConsentRow]:
        """The consents this portal granted (signed files), each with its state asked of the node."""
        rows: list[ConsentRow] = []
        files = sorted(self._consents_dir.glob("*.pb")) if self._consents_dir.is_dir() else []
        with self._client("consent status") as client:
            for path in files:
                c = parse_consent(read_consent(path))
                try:
                    status = client.status(c.consent_id)
                    state, uses = consent_state_name(status.state).lower(), int(status.uses)
                except RemoteError:
                    state, uses = "unknown", 0
                rows.append(
                    ConsentRow(
                        consent_id=c.consent_id,
                        grantee=c.grantee_id,
                        purpose=purpose_name(c.purpose),
                        state=state,
                        uses=uses,
                        max_uses=c.max_uses,
                        valid_until=_when(c.valid_until),
                        fields=tuple(i.field for i in c.scope),
                    )
                )
        return rows

    def institutions(self) -> list[str]:
        def read(client: Any) -> list[str]:
            ids: list[str] = client.institution_ids(timeout=10)
            return ids

        try:
            return self._call("institution list", read)
        except (ActionError, grpc.RpcError):
            return []

    def cases(self) -> list[CaseRow]:
        def read(client: Any) -> list[CaseRow]:
            return [_case_row(c) for c in client.cases()]

        rows = self._call("objections and repairs", read)
        return sorted(rows, key=lambda r: r.filed_at, reverse=True)

    # -- actions -----------------------------------------------------------------------------------

    def grant(self, form: GrantForm) -> str:
        period_from, period_to = default_period()
        request = ent.ConsentRequest(
            grantee=form.grantee,
            purpose=form.purpose,
            scope=form.scope,
            data_period_from=form.period_from or period_from,
            data_period_to=form.period_to or period_to,
            valid_days=form.valid_days,
            max_uses=form.max_uses,
        )
        try:
            signed = ent.grant(self._creds, request, catalog=self._catalog)
        except (XinrongError, ValueError) as err:
            raise ActionError(str(err)) from None
        consent_id = parse_consent(signed).consent_id
        with self._client("consent grant") as client:
            client.register(signed)
        # Kept only after the node accepted it: the local list is of consents that exist.
        self._consents_dir.mkdir(parents=True, exist_ok=True)
        write_consent(self._consents_dir / f"{consent_id}.pb", signed)
        return consent_id

    def pause(self, consent_id: str) -> str:
        return self._call("consent pause", lambda c: _state_of(c.change_state(consent_id, pause=True)))

    def resume(self, consent_id: str) -> str:
        return self._call("consent resume", lambda c: _state_of(c.change_state(consent_id, pause=False)))

    def revoke(self, consent_id: str) -> str:
        return self._call("consent revoke", lambda c: _state_of(c.revoke(consent_id)))

    def file_case(self, form: CaseForm) -> str:
        kinds = {"objection": subject_pb2.CASE_KIND_OBJECTION, "repair": subject_pb2.CASE_KIND_REPAIR}
        if form.kind not in kinds:
            raise ActionError(f"unknown kind {form.kind!r}")
        if form.field not in self._catalog.fields:
            raise ActionError(f"unknown field {form.field!r}")

        def send(client: Any) -> str:
            resp = client.file_case(
                kind=kinds[form.kind],
                field=form.field,
                statement=form.statement,
                evidence=form.evidence,
                evidence_name=form.evidence_name,
            )
            return str(resp.case_id)

        return self._call("objections and repairs", send)

    # -- loan products (xinrong.enterprise.products) ----------------------------------------------

    def products(self) -> list[ProductRow]:
        from xinrong.enterprise.products import EnterpriseProducts

        def read(client: Any) -> list[ProductRow]:
            mine = {m["product_id"]: m for m in client.matches()}
            rows = []
            for p in client.products():
                m = mine.get(p["product_id"])
                rows.append(
                    ProductRow(
                        product_id=str(p["product_id"]),
                        bank_id=str(p["bank_id"]),
                        name=str(p["name"]),
                        category=str(p["category"]),
                        amount="{}-{}".format(*p["amount"]),
                        term_months="{}-{}".format(*p["term_months"]),
                        rate_bps="{}-{}".format(*p["rate_bps"]),
                        rules=tuple(p["rules"]),
                        matched=m is not None,
                        eligible=bool(m and m["eligible"]),
                        failed_rules=tuple(m["failed_rules"]) if m else (),
                    )
                )
            return rows

        with (
            EnterpriseProducts(self._node, self._creds, catalog=self._catalog, node_id=self._node_id) as products,
            self._client("products", products) as client,
        ):
            return read(client)

    def apply(self, form: ApplyForm) -> str:
        from xinrong.enterprise.products import EnterpriseProducts

        with (
            EnterpriseProducts(self._node, self._creds, catalog=self._catalog, node_id=self._node_id) as products,
            self._client("apply", products) as client,
        ):
            application_id: str = client.apply(
                form.product_id,
                amount=form.amount,
                term_months=form.term_months,
                purpose=form.purpose,
                region=form.region,
            )
            return application_id


def _public_value(value: object) -> str:
    """A public record's JSON value as text: true/false as the subject report spells them, lists joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _state_of(resp: Any) -> str:
    return consent_state_name(resp.state).lower()


def _status_name(value: int) -> str:
    return subject_pb2.FieldStatus.Name(value)


def _case_row(c: Any) -> CaseRow:
    return CaseRow(
        case_id=c.case_id,
        kind=_enum(subject_pb2.CaseKind.Name(c.kind), "CASE_KIND_"),
        field=c.field,
        statement=c.statement,
        state=_enum(subject_pb2.CaseState.Name(c.state), "CASE_STATE_"),
        filed_at=_when(c.filed_at),
        reason=c.reason,
        overdue=c.overdue,
        effective_date=c.effective_date,
        history=tuple(
            CaseEventRow(_when(e.at), _enum(subject_pb2.CaseState.Name(e.state), "CASE_STATE_"), e.note)
            for e in c.history
        ),
    )


def _access_row(e: Any) -> AccessRow:
    return AccessRow(
        at=_when(e.ts_ms / 1000),
        caller_role=e.caller_role,
        institution=e.caller_id,
        method=e.method.rsplit("/", 1)[-1],
        consent_id=e.consent_id,
        providers=tuple(e.providers),
        fields=tuple(e.fields),
        decision=e.decision,
        reason=e.reason,
        leaf_index=e.leaf_index,
        tree_size=e.tree_size,
        # VerifiedAccess is only ever built after its inclusion proof checked out.
        proof_verified=True,
    )
