"""Wire enums <-> domain values, for every boundary: one table per enum.

Catalog disclosure forms, party roles, consent states and purposes cross
every service (node, agents, bank, enterprise, tools). Their proto values
map to domain names here and nowhere else, so a new enum value is added in
one place. Proto enum values arrive as plain ints on the Python side; the
``*_from_proto`` functions take either and answer ``None`` for a value the
table does not know (the caller decides which error that is).

Request and response messages of one service are converted in that
service's own serde module (``xinrong.node.serde``,
``xinrong.provider_agent.serde``, ``xinrong.modeling`` for modeling).
"""

from __future__ import annotations

from typing import cast

from xinrong.catalog import Form
from xinrong.v1 import common_pb2

FORM_TO_PROTO: dict[Form, common_pb2.DisclosureForm] = {
    Form.FLAG: common_pb2.DISCLOSURE_FORM_FLAG,
    Form.GRADE: common_pb2.DISCLOSURE_FORM_GRADE,
    Form.BRACKET: common_pb2.DISCLOSURE_FORM_BRACKET,
    Form.LADDER: common_pb2.DISCLOSURE_FORM_LADDER,
}
PROTO_TO_FORM: dict[int, Form] = {int(v): k for k, v in FORM_TO_PROTO.items()}

ROLE_TO_PROTO: dict[str, common_pb2.PartyRole] = {
    "node": common_pb2.PARTY_ROLE_NODE,
    "provider": common_pb2.PARTY_ROLE_PROVIDER,
    "institution": common_pb2.PARTY_ROLE_INSTITUTION,
    "enterprise": common_pb2.PARTY_ROLE_ENTERPRISE,
}
PROTO_TO_ROLE: dict[int, str] = {int(v): k for k, v in ROLE_TO_PROTO.items()}

# The names the CLI and consent files use: loan_application, credit_scoring, ...
PURPOSE_TO_PROTO: dict[str, common_pb2.ConsentPurpose] = {
    name.removeprefix("CONSENT_PURPOSE_").lower(): cast(common_pb2.ConsentPurpose, value)
    for name, value in common_pb2.ConsentPurpose.items()
    if value != common_pb2.CONSENT_PURPOSE_UNSPECIFIED
}
PROTO_TO_PURPOSE: dict[int, str] = {int(v): k for k, v in PURPOSE_TO_PROTO.items()}


def form_from_proto(value: int) -> Form | None:
    return PROTO_TO_FORM.get(int(value))


def role_from_proto(value: int) -> str | None:
    return PROTO_TO_ROLE.get(int(value))


def purpose_name(value: int) -> str:
    """credit_scoring for CONSENT_PURPOSE_CREDIT_SCORING; 'unspecified' for 0 or an unknown value."""
    return PROTO_TO_PURPOSE.get(int(value), "unspecified")


def consent_state_name(value: int) -> str:
    """ACTIVE for CONSENT_STATE_ACTIVE: what operators and enterprises read."""
    try:
        return common_pb2.ConsentState.Name(value).removeprefix("CONSENT_STATE_")
    except ValueError:
        return "UNSPECIFIED"


__all__ = [
    "FORM_TO_PROTO",
    "PROTO_TO_FORM",
    "PROTO_TO_PURPOSE",
    "PROTO_TO_ROLE",
    "PURPOSE_TO_PROTO",
    "ROLE_TO_PROTO",
    "consent_state_name",
    "form_from_proto",
    "purpose_name",
    "role_from_proto",
]
