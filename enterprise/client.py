"""Enterprise client: sign consents and revocations, and register them at the node.

The enterprise's Ed25519 key signs every consent; the node and every agent
check that signature against the enterprise's CA-signed binding, so neither
the node nor a bank can forge or widen a consent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import grpc

from xinrong import subject as subj
from xinrong.catalog import Catalog, SharingMode, default_catalog
from xinrong.consent import build_consent, parse_scope, sign_consent, sign_revocation
from xinrong.errors import SignatureError, ValidationError
from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.layout import PartyCredentials
from xinrong.rpc.channel import DEFAULT_TIMEOUT, secure_channel
from xinrong.rpc.errors import RemoteError, decode_rpc_error
from xinrong.tlog.client import LogClient, VerifiedAccess, audit_origin
from xinrong.tlog.witness import Witness
from xinrong.v1 import (
    common_pb2,
    node_pb2,
    node_pb2_grpc,
    public_pb2,
    public_pb2_grpc,
    subject_pb2,
    subject_pb2_grpc,
    transparency_pb2_grpc,
)

# A consent that ends sooner than this is refused when it is signed: it would
# be expired, or nearly, by the time anyone could use it.
MIN_VALIDITY_SECONDS = 60


@dataclass(frozen=True)
class ConsentRequest:
    grantee: str
    purpose: str
    scope: tuple[str, ...]
    data_period_from: str
    data_period_to: str
    valid_days: float = 30.0
    max_uses: int = 10
    max_uses_per_day: int = 0
    retention_days: int = 90
    fetch_type: str = "one_time"
    valid_from: int | None = None


def grant(
    credentials: PartyCredentials, request: ConsentRequest, *, catalog: Catalog | None = None
) -> common_pb2.SignedConsent:
    """Build and sign a consent with the enterprise's own key (no network)."""
    if credentials.role != "enterprise":
        raise ValueError("only an enterprise's credentials can sign its consents")
    catalog = catalog or default_catalog()
    now = int(time.time())
    # A minute of slack for clocks a little behind the node's.
    valid_from = request.valid_from if request.valid_from is not None else now - 60
    valid_until = int(valid_from + request.valid_days * 86400)
    if valid_until < now + MIN_VALIDITY_SECONDS:
        raise ValidationError(
            f"the consent would be valid only until {valid_until} (now {now}): give a validity that ends at least "
            f"{MIN_VALIDITY_SECONDS} s from now (--valid-days {request.valid_days:g} is too short)"
        )
    if request.max_uses < 1:
        raise ValidationError("a consent must allow at least one use (--max-uses >= 1)")
    consent = build_consent(
        enterprise_uscc=credentials.party_id,
        enterprise_key_id=credentials.signing_key.key_id,
        grantee_id=request.grantee,
        purpose=request.purpose,
        scope=parse_scope(catalog, request.scope),
        data_period_from=request.data_period_from,
        data_period_to=request.data_period_to,
        valid_from=valid_from,
        valid_until=valid_until,
        max_uses=request.max_uses,
        max_uses_per_day=request.max_uses_per_day,
        retention_days=request.retention_days,
        fetch_type=request.fetch_type,
        now=now,
    )
    return sign_consent(consent, credentials.signing_key, credentials.binding.signed)


class EnterpriseClient:
    """Talks to the node as the enterprise (mTLS with the enterprise's certificate)."""

    def __init__(
        self,
        node_target: str,
        credentials: PartyCredentials,
        *,
        node_id: str = "node",
        witness: Witness | None = None,
    ) -> None:
        self.credentials = credentials
        self._node_id = node_id
        self._channel = secure_channel(node_target, credentials, server_role="node", server_id=node_id)
        self._stub = node_pb2_grpc.NodeServiceStub(self._channel)
        self._witness = witness
        self._log: LogClient | None = None

    def node_log(self) -> LogClient:
        """The node's transparency log, its key taken from the node's CA-checked binding."""
        if self._log is None:
            try:
                listed = self._stub.ListParties(
                    node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_NODE), timeout=DEFAULT_TIMEOUT
                )
            except grpc.RpcError as err:
                raise decode_rpc_error(err) from None
            keys = []
            for signed in listed.bindings:
                try:
                    keys.append(
                        verify_binding(
                            self.credentials.ca, signed, expect_role="node", expect_party_id=self._node_id
                        ).verify_key.raw
                    )
                except Exception:
                    continue
            if not keys:
                raise ValidationError(f"the node {self._node_id!r} served no valid binding of its own")
            stub = transparency_pb2_grpc.TransparencyServiceStub(self._channel)
            self._log = LogClient(stub, audit_origin(self._node_id), keys[0], self._witness)
        return self._log

    def accesses(self) -> list[VerifiedAccess]:
        """Who accessed this enterprise's data: every entry proven in a witnessed checkpoint."""
        try:
            return self.node_log().accesses(self.credentials.party_id)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None

    def accesses_page(self, page_token: str = "", page_size: int = 50) -> tuple[list[VerifiedAccess], str]:
        """One page of ``accesses`` and the token of the next ("" on the last)."""
        try:
            return self.node_log().accesses_page(self.credentials.party_id, page_token=page_token, page_size=page_size)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> EnterpriseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(self, signed: common_pb2.SignedConsent) -> node_pb2.RegisterConsentResponse:
        try:
            resp: node_pb2.RegisterConsentResponse = self._stub.RegisterConsent(
                node_pb2.RegisterConsentRequest(consent=signed), timeout=DEFAULT_TIMEOUT
            )
            return resp
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None

    def revoke(self, consent_id: str) -> node_pb2.RevokeConsentResponse:
        revocation = sign_revocation(consent_id, self.credentials.party_id, self.credentials.signing_key)
        try:
            resp: node_pb2.RevokeConsentResponse = self._stub.RevokeConsent(
                node_pb2.RevokeConsentRequest(revocation=revocation), timeout=DEFAULT_TIMEOUT * 2
            )
            return resp
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None

    def status(self, consent_id: str) -> node_pb2.GetConsentStatusResponse:
        try:
            resp: node_pb2.GetConsentStatusResponse = self._stub.GetConsentStatus(
                node_pb2.GetConsentStatusRequest(consent_id=consent_id), timeout=DEFAULT_TIMEOUT
            )
            return resp
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None


# -- subject rights (xinrong.v1.SubjectService) ---------------------------------------


@dataclass(frozen=True)
class ProviderReport:
    """One provider's verified report on the enterprise itself."""

    provider: str
    report: subject_pb2.SubjectReport

    def to_json(self) -> dict[str, object]:
        r = self.report
        return {
            "provider": self.provider,
            "data_as_of": r.data_as_of,
            "held": r.held,
            "fields": [
                {
                    "field": f.field,
                    "value": f.value if f.present else None,
                    "status": subject_pb2.FieldStatus.Name(f.status).removeprefix("FIELD_STATUS_").lower(),
                }
                for f in r.fields
            ],
            "cases": [case_json(c) for c in r.cases],
        }


@dataclass(frozen=True)
class PublicRecordView:
    """One public (aggregate-mode) record the node holds on the enterprise, as the node serves it.

    Unlike a provider's sealed report this is not signed per record: the
    provider signed the whole batch it published, and the node answers every
    institution with the same value, so the enterprise sees exactly what any
    bank reading its public records sees.
    """

    provider: str
    field: str
    value: object
    as_of: str
    version: int

    def to_json(self) -> dict[str, object]:
        return {
            "field": self.field,
            "value": self.value,
            "provider": self.provider,
            "as_of": self.as_of,
            "version": self.version,
            "public": True,
        }


@dataclass(frozen=True)
class OwnData:
    """Everything held on the enterprise: providers' sealed reports plus the node's public records.

    ``public`` is None when the node does not serve public records at all
    (an older node: UNIMPLEMENTED), which the views show as such rather than
    as "no public record".
    """

    reports: tuple[ProviderReport, ...]
    unavailable: tuple[str, ...]
    public: tuple[PublicRecordView, ...] | None
    public_audit_leaf: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "providers": [r.to_json() for r in self.reports],
            "unavailable": list(self.unavailable),
            "public_at_node": {
                "title": PUBLIC_SECTION_TITLE,
                "public": True,
                "available": self.public is not None,
                "records": [r.to_json() for r in self.public or ()],
                "audit_leaf_index": self.public_audit_leaf,
            },
        }


PUBLIC_SECTION_TITLE = "节点公开信息 / Public records at the node"


def case_json(c: subject_pb2.SubjectCase) -> dict[str, object]:
    return {
        "id": c.case_id,
        "kind": subject_pb2.CaseKind.Name(c.kind).removeprefix("CASE_KIND_").lower(),
        "field": c.field,
        "state": subject_pb2.CaseState.Name(c.state).removeprefix("CASE_STATE_").lower(),
        "statement": c.statement,
        "filed_at": c.filed_at,
        "updated_at": c.updated_at,
        "reason": c.reason,
        "overdue": c.overdue,
        "effective_date": c.effective_date,
        "evidence_bytes": c.evidence_bytes,
        "history": [
            {
                "at": e.at,
                "state": subject_pb2.CaseState.Name(e.state).removeprefix("CASE_STATE_").lower(),
                "note": e.note,
            }
            for e in c.history
        ],
    }


class SubjectClient(EnterpriseClient):
    """The enterprise's own rights: everything it reads is checked (provider signature) and opened here."""

    def __init__(self, node_target: str, credentials: PartyCredentials, *, node_id: str = "node") -> None:
        if credentials.role != "enterprise":
            raise ValidationError("subject rights need the enterprise's own credentials")
        super().__init__(node_target, credentials, node_id=node_id)
        self._subject = subject_pb2_grpc.SubjectServiceStub(self._channel)
        self._providers: dict[str, VerifiedBinding] | None = None

    def __enter__(self) -> SubjectClient:
        return self

    def _call(self, method: str, request: object, timeout: float = DEFAULT_TIMEOUT) -> Any:
        try:
            return getattr(self._subject, method)(request, timeout=timeout)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None

    def institution_ids(self, *, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
        """The node's institutions whose bindings the CA signed, sorted (checked here; a
        ``grpc.RpcError`` is left to the caller, as the portal's action wrapper expects)."""
        resp = self._stub.ListParties(
            node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_INSTITUTION), timeout=timeout
        )
        out = []
        for signed in resp.bindings:
            try:
                out.append(verify_binding(self.credentials.ca, signed, expect_role="institution").party_id)
            except Exception:  # a binding the CA did not sign is not offered
                continue
        return sorted(out)

    def providers(self) -> dict[str, VerifiedBinding]:
        """Provider bindings, each checked against the CA here (the node could otherwise swap keys)."""
        if self._providers is None:
            try:
                resp = self._stub.ListParties(
                    node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_PROVIDER), timeout=DEFAULT_TIMEOUT
                )
            except grpc.RpcError as err:
                raise decode_rpc_error(err) from None
            found: dict[str, VerifiedBinding] = {}
            for signed in resp.bindings:
                try:
                    b = verify_binding(self.credentials.ca, signed, expect_role="provider")
                except SignatureError:
                    continue
                found[b.provider] = b
            self._providers = found
        return self._providers

    def _query(self) -> subject_pb2.SignedSubjectQuery:
        return subj.sign_query(self.credentials.party_id, self.credentials.signing_key)

    def my_data(self) -> tuple[list[ProviderReport], list[str]]:
        """Every provider's report (verified, opened), and the providers that did not answer."""
        key = self.credentials.sealing_key
        if key is None:
            raise ValidationError(
                "these credentials have no sealing key: re-run `xinrong enterprise keygen --force` to read your data"
            )
        query = self._query()
        request_id = subject_pb2.SubjectQuery.FromString(query.query).request_id
        resp = self._call(
            "GetMyData",
            subject_pb2.GetMyDataRequest(query=query, enterprise_binding=self.credentials.binding.signed),
            timeout=DEFAULT_TIMEOUT * 2,
        )
        bindings = self.providers()
        reports: list[ProviderReport] = []
        for answer in resp.answers:
            binding = bindings.get(answer.provider)
            if binding is None:
                raise SignatureError(f"no CA-bound binding for provider {answer.provider}")
            raw = key.open(
                answer.sealed,
                recipient_id=self.credentials.party_id,
                content_type=subj.REPORT_CONTENT_TYPE,
                context=request_id,
            )
            signed = subject_pb2.SignedSubjectReport.FromString(raw)
            binding.verify_key.verify(subj.REPORT_CONTEXT, signed.report, signed.signature)
            report = subject_pb2.SubjectReport.FromString(signed.report)
            if (
                report.enterprise_uscc != self.credentials.party_id
                or report.request_id != request_id
                or report.provider != answer.provider
            ):
                raise SignatureError(f"report from {answer.provider} is not the answer to this request")
            reports.append(ProviderReport(answer.provider, report))
        return reports, list(resp.unavailable)

    def public_records(self) -> tuple[list[PublicRecordView], int | None]:
        """The node's public records on this enterprise (GetPublicRecords as itself: audited, free).

        A record naming another enterprise cannot come back (the request names
        only our own code and the node refuses any other for the enterprise
        role); a field that is not an aggregate field of the provider it is
        attributed to is refused here, so a node cannot pass a private value
        off as public.
        """
        stub = public_pb2_grpc.PublicServiceStub(self._channel)
        try:
            resp = stub.GetPublicRecords(
                public_pb2.GetPublicRecordsRequest(enterprise_uscc=self.credentials.party_id), timeout=DEFAULT_TIMEOUT
            )
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None
        catalog = default_catalog()
        out: list[PublicRecordView] = []
        for r in resp.records:
            spec = catalog.fields.get(r.field)
            if spec is None or spec.provider != r.provider or spec.mode is not SharingMode.AGGREGATE:
                raise ValidationError(f"the node served {r.field!r} of {r.provider!r} as a public record")
            try:
                value = json.loads(r.value_json)
            except ValueError:
                raise ValidationError(f"the node served a public record {r.field!r} that is not JSON") from None
            out.append(PublicRecordView(r.provider, r.field, value, r.as_of, int(r.version)))
        out.sort(key=lambda v: (v.provider, v.field))
        return out, (resp.audit_leaf_index if resp.HasField("audit_leaf_index") else None)

    def own_data(self) -> OwnData:
        """All data held on the enterprise (Issue 11 §2.1): every provider's report and the node's public records."""
        reports, unavailable = self.my_data()
        public: tuple[PublicRecordView, ...] | None
        try:
            records, leaf = self.public_records()
            public = tuple(records)
        except RemoteError as err:
            if err.code is not grpc.StatusCode.UNIMPLEMENTED:
                raise
            public, leaf = None, None
        return OwnData(tuple(reports), tuple(unavailable), public, leaf)

    def file_case(
        self, *, kind: int, field: str, statement: str, evidence: bytes = b"", evidence_name: str = ""
    ) -> subject_pb2.FileCaseResponse:
        """Sign the filing, seal it to the owning provider, and send it through the node."""
        provider = field.split(".", 1)[0]
        binding = self.providers().get(provider)
        if binding is None or len(binding.sealing_public_raw) != 32:
            raise ValidationError(f"no provider {provider!r} with a sealing key is registered")
        filing = subj.build_filing(
            kind=kind,
            enterprise_uscc=self.credentials.party_id,
            provider=provider,
            field=field,
            statement=statement,
            evidence=evidence,
            evidence_name=evidence_name,
        )
        signed = subj.sign_filing(filing, self.credentials.signing_key)
        box = subj.seal_filing(
            signed, provider=binding.party_id, sealing_public_raw=binding.sealing_public_raw, case_id=filing.case_id
        )
        resp: subject_pb2.FileCaseResponse = self._call(
            "FileCase",
            subject_pb2.FileCaseRequest(
                query=self._query(),
                enterprise_binding=self.credentials.binding.signed,
                provider=provider,
                field=field,
                kind=kind,  # type: ignore[arg-type]
                case_id=filing.case_id,
                sealed=box,
            ),
        )
        return resp

    def cases(self, kind: int | None = None) -> list[subject_pb2.SubjectCase]:
        reports, _ = self.my_data()
        return [c for r in reports for c in r.report.cases if kind is None or c.kind == kind]

    def list_consents(self) -> list[subject_pb2.ConsentListing]:
        resp: subject_pb2.ListMyConsentsResponse = self._call("ListMyConsents", subject_pb2.ListMyConsentsRequest())
        return list(resp.consents)

    def change_state(self, consent_id: str, *, pause: bool) -> subject_pb2.ChangeConsentStateResponse:
        action = subject_pb2.CONSENT_ACTION_PAUSE if pause else subject_pb2.CONSENT_ACTION_RESUME
        change = subj.sign_state_change(consent_id, self.credentials.party_id, action, self.credentials.signing_key)
        resp: subject_pb2.ChangeConsentStateResponse = self._call(
            "ChangeConsentState", subject_pb2.ChangeConsentStateRequest(change=change), timeout=DEFAULT_TIMEOUT * 2
        )
        return resp
