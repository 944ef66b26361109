"""Enterprise client: sign consents and revocations, and register them at the node.

The enterprise's Ed25519 key signs every consent; the node and every agent
check that signature against the enterprise's CA-signed binding, so neither
the node nor a bank can forge or widen a consent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc

from xinrong.catalog import Catalog, default_catalog
from xinrong.consent import build_consent, parse_scope, sign_consent, sign_revocation
from xinrong.errors import ValidationError
from xinrong.keys.binding import verify_binding
from xinrong.keys.layout import PartyCredentials
from xinrong.rpc.channel import DEFAULT_TIMEOUT, secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.tlog.client import LogClient, VerifiedAccess, audit_origin
from xinrong.tlog.witness import Witness
from xinrong.v1 import common_pb2, node_pb2, node_pb2_grpc, transparency_pb2_grpc

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
