"""Sizes and timestamps that cross a trust boundary are bounded (issue 10, A3b and A5)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from xinrong.catalog import Catalog
from xinrong.consent import sign_consent
from xinrong.errors import Reason
from xinrong.limits import MAX_CONSENT_BYTES, MAX_NONCE_BYTES, MAX_TIMESTAMP, MIN_TIMESTAMP
from xinrong.node.cli import iso_time
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import common_pb2, node_pb2

from support.node_fakes import assert_refused, consent_id_of, grant, register

IA = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def node_backend() -> str:
    return "sqlite"


def _resigned(pki: Any, signed: common_pb2.SignedConsent, **changes: Any) -> common_pb2.SignedConsent:
    """The same consent with fields changed, signed again by its enterprise (so it is authentic)."""
    consent = common_pb2.Consent.FromString(signed.consent)
    for name, value in changes.items():
        setattr(consent, name, value)
    creds = pki.enterprise(consent.enterprise_uscc)
    return sign_consent(consent, creds.signing_key, creds.binding.signed)


def _status(h: Any, signed: common_pb2.SignedConsent) -> Any:
    return h.bank().GetConsentStatus(node_pb2.GetConsentStatusRequest(consent_id=consent_id_of(signed)), timeout=5)


@pytest.mark.parametrize(
    "changes",
    [
        {"valid_until": 2**63 - 1},
        {"valid_from": -(2**63), "valid_until": 2_000_000_000},
        {"valid_until": MAX_TIMESTAMP + 1},
        {"valid_from": MIN_TIMESTAMP - 1},
        {"issued_at": 2**62},
    ],
    ids=["until-2^63", "from-minus-2^63", "until-2100", "from-1999", "issued-2^62"],
)
def test_consents_with_timestamps_outside_2000_2100_are_refused(
    make_harness: Any, pki: Any, catalog: Catalog, changes: dict[str, int]
) -> None:
    """A consent valid until 2**63 was once accepted and crashed `node consents list`."""
    h = make_harness(["tax"])
    bad = _resigned(pki, grant(pki, catalog), **changes)
    err = assert_refused(lambda: register(h.bank(), bad), IA, Reason.INVALID_ARGUMENT)
    assert "2000" in decode_rpc_error(err).message and "2100" in decode_rpc_error(err).message
    assert_refused(lambda: _status(h, bad), grpc.StatusCode.PERMISSION_DENIED, Reason.ACCESS_DENIED)
    ok = grant(pki, catalog)
    assert register(h.bank(), ok).consent_id == consent_id_of(ok)


def test_a_huge_nonce_or_consent_is_refused_naming_the_limit(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    """20 consents with a 20 MB nonce were once accepted and held forever."""
    h = make_harness(["tax"])
    base = grant(pki, catalog)
    for nonce, limit in ((b"n" * (MAX_NONCE_BYTES + 1), MAX_NONCE_BYTES), (b"n" * 4_000_000, MAX_CONSENT_BYTES)):
        bad = _resigned(pki, base, nonce=nonce)
        err = assert_refused(lambda: register(h.bank(), bad), IA, Reason.INVALID_ARGUMENT)
        assert str(limit) in decode_rpc_error(err).message
    assert register(h.bank(), base).consent_id == consent_id_of(base)


def test_listing_never_crashes_on_an_out_of_range_time() -> None:
    assert iso_time(1_800_000_000).startswith("2027-")
    assert iso_time(2**63 - 1) == str(2**63 - 1) and iso_time(-(2**63)) == str(-(2**63))
