"""CA-signed party bindings: party id + role -> signing and sealing keys.

A party that receives another party's binding through the node checks the
CA signature itself, so the honest-but-curious node cannot substitute a key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from xinrong.errors import SignatureError
from xinrong.keys.ca import CaVerifier, CertificateAuthority, check_party_id
from xinrong.keys.signing import VerifyKey, key_id_of
from xinrong.serde import PROTO_TO_ROLE, ROLE_TO_PROTO
from xinrong.v1 import common_pb2


@dataclass(frozen=True)
class VerifiedBinding:
    """A binding whose CA signature and validity window were checked."""

    party_id: str
    role: str
    provider: str
    verify_key: VerifyKey
    sealing_public_raw: bytes
    not_after: int
    signed: common_pb2.SignedPartyBinding

    @property
    def key_id(self) -> str:
        return self.verify_key.key_id


def issue_binding(
    ca: CertificateAuthority,
    *,
    party_id: str,
    role: str,
    signing_public_raw: bytes,
    sealing_public_raw: bytes = b"",
    provider: str = "",
    days: int = 825,
) -> common_pb2.SignedPartyBinding:
    now = int(time.time())
    binding = common_pb2.PartyBinding(
        party_id=check_party_id(party_id),
        role=ROLE_TO_PROTO[role],
        signing_public_key=signing_public_raw,
        sealing_public_key=sealing_public_raw,
        provider=provider,
        not_before=now - 300,
        not_after=now + days * 86400,
        key_id=key_id_of(signing_public_raw),
    )
    raw = binding.SerializeToString(deterministic=True)
    return common_pb2.SignedPartyBinding(binding=raw, ca_signature=ca.sign_binding(raw))


def verify_binding(
    ca: CaVerifier,
    signed: common_pb2.SignedPartyBinding,
    *,
    expect_role: str | None = None,
    expect_party_id: str | None = None,
    now: float | None = None,
) -> VerifiedBinding:
    """Check the CA signature, validity window and expected identity; one opaque error on failure."""
    ca.verify_binding_signature(signed.binding, signed.ca_signature)
    binding = common_pb2.PartyBinding()
    try:
        binding.ParseFromString(signed.binding)
    except Exception:
        raise SignatureError("binding does not parse") from None
    role = PROTO_TO_ROLE.get(binding.role)
    t = time.time() if now is None else now
    if role is None or not (binding.not_before <= t <= binding.not_after):
        raise SignatureError("binding role unknown or outside its validity window")
    if expect_role is not None and role != expect_role:
        raise SignatureError("binding has another role")
    if expect_party_id is not None and binding.party_id != expect_party_id:
        raise SignatureError("binding is for another party")
    return VerifiedBinding(
        party_id=binding.party_id,
        role=role,
        provider=binding.provider,
        verify_key=VerifyKey(binding.signing_public_key),
        sealing_public_raw=bytes(binding.sealing_public_key),
        not_after=binding.not_after,
        signed=signed,
    )
