"""Enterprise SDK: register, withdraw and list financing demands at the node.

The demand is built and signed here with the enterprise's own key
(``xinrong.demand``); the node checks the signature against the CA-bound
binding and pushes the demand only to the institutions its matching
consents name.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from xinrong.demand import build_demand, sign_demand
from xinrong.keys.layout import PartyCredentials
from xinrong.rpc.channel import DEFAULT_TIMEOUT, secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import common_pb2, demand_pb2, demand_pb2_grpc


class DemandClient:
    def __init__(
        self,
        node_target: str | Sequence[str],
        credentials: PartyCredentials,
        *,
        node_id: str = "node",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if credentials.role != "enterprise":
            raise ValueError("a demand client needs enterprise credentials")
        self.credentials = credentials
        self.timeout = timeout
        self._channel = secure_channel(node_target, credentials, server_role="node", server_id=node_id)
        self._stub = demand_pb2_grpc.DemandServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DemandClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: object) -> object:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise decode_rpc_error(err) from None

    def sign(
        self,
        *,
        amount_yuan: int,
        term_months: int,
        purpose: str,
        region: str,
        consents: Sequence[common_pb2.SignedConsent],
        industry: str = "",
        show_grade: bool = True,
        valid_until: int | None = None,
        demand_id: str | None = None,
    ) -> demand_pb2.SignedDemand:
        from xinrong.consent import parse_consent

        demand = build_demand(
            enterprise_uscc=self.credentials.party_id,
            enterprise_key_id=self.credentials.signing_key.key_id,
            amount_yuan=amount_yuan,
            term_months=term_months,
            purpose=purpose,
            region=region,
            industry=industry,
            consent_ids=[parse_consent(c).consent_id for c in consents],
            show_grade=show_grade,
            valid_until=valid_until,
            demand_id=demand_id,
        )
        return sign_demand(demand, self.credentials.signing_key, self.credentials.binding.signed)

    def register(
        self, signed: demand_pb2.SignedDemand, consents: Sequence[common_pb2.SignedConsent] = ()
    ) -> demand_pb2.RegisterDemandResponse:
        resp = self._call("RegisterDemand", demand_pb2.RegisterDemandRequest(demand=signed, consents=list(consents)))
        assert isinstance(resp, demand_pb2.RegisterDemandResponse)
        return resp

    def withdraw(self, demand_id: str) -> demand_pb2.WithdrawDemandResponse:
        resp = self._call("WithdrawDemand", demand_pb2.WithdrawDemandRequest(demand_id=demand_id))
        assert isinstance(resp, demand_pb2.WithdrawDemandResponse)
        return resp

    def list(self) -> list[demand_pb2.DemandStatus]:
        resp = self._call("ListMyDemands", demand_pb2.ListMyDemandsRequest())
        assert isinstance(resp, demand_pb2.ListMyDemandsResponse)
        return list(resp.demands)


__all__ = ["DemandClient"]
