"""Sizes and timestamps that cross a trust boundary are bounded (issue 10, A3b and A5)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from xinrong.catalog import Catalog
from xinrong.consent import sign_consent
from xinrong.errors import Reason
from xinrong.limits import MAX_CONSENT_BYTES, MAX_NONCE_BYTES, MAX_REQUEST_BYTES, MAX_TIMESTAMP, MIN_TIMESTAMP
from xinrong.node.cli import iso_time
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import common_pb2, node_pb2

from support.node_fakes import assert_refused, consent_id_of, grant, register, verify_request

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
    cases = [
        (MAX_NONCE_BYTES + 1, MAX_NONCE_BYTES),
        (20_000, MAX_CONSENT_BYTES),
        (20_000_000, MAX_REQUEST_BYTES["/xinrong.v1.NodeService/RegisterConsent"]),
    ]
    for size, limit in cases:
        nonce = b"n" * size
        bad = _resigned(pki, base, nonce=nonce)
        err = assert_refused(lambda: register(h.bank(), bad), IA, Reason.INVALID_ARGUMENT)
        assert str(limit) in decode_rpc_error(err).message
    assert register(h.bank(), base).consent_id == consent_id_of(base)


def test_listing_never_crashes_on_an_out_of_range_time() -> None:
    assert iso_time(1_800_000_000).startswith("2027-")
    assert iso_time(2**63 - 1) == str(2**63 - 1) and iso_time(-(2**63)) == str(-(2**63))


def _with_unknown_field(claim: common_pb2.Claim, size: int, tag: int) -> common_pb2.Claim:
    """The claim plus an unknown length-delimited field of ``size`` bytes (field 1000+tag)."""
    number = 1000 + tag
    key = bytes([((number << 3) | 2) & 0x7F | 0x80, (number << 3 | 2) >> 7])
    length = bytearray()
    n = size
    while True:
        length.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            break
    return common_pb2.Claim.FromString(claim.SerializeToString() + key + bytes(length) + b"u" * size)


def test_claims_with_huge_unknown_fields_cannot_fill_the_node(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    """The claim cache once kept each accepted claim's full bytes as its key: 40
    refused Verify calls with a 4 MiB unknown field took the node 73 -> 434 MB."""
    h = make_harness(["tax"])
    assert h.node is not None
    cache = h.node.core.access.claim_cache
    bank = h.bank()
    for i in range(20):
        req = verify_request("no-such-consent", ["tax.in_arrears == false"])
        padded = _with_unknown_field(req.claims[0], 200_000, i)
        assert padded.ByteSize() > 200_000
        req.claims[0].CopyFrom(padded)
        assert_refused(lambda: bank.Verify(req, timeout=5), grpc.StatusCode.PERMISSION_DENIED, Reason.ACCESS_DENIED)
    assert 0 < len(cache) <= 20
    assert sum(len(k) for k in cache.held_keys()) <= 20 * 32
    assert cache.bytes < 20 * 1024, cache.bytes  # digests and canonical claims, not 4 MB of junk


def test_a_request_over_its_method_limit_is_invalid_argument_naming_it(make_harness: Any) -> None:
    h = make_harness(["tax"])
    limit = MAX_REQUEST_BYTES["/xinrong.v1.NodeService/Verify"]
    req = verify_request("no-such-consent", ["tax.in_arrears == false"])
    req.claims[0].CopyFrom(_with_unknown_field(req.claims[0], limit, 0))
    err = assert_refused(lambda: h.bank().Verify(req, timeout=5), IA, Reason.INVALID_ARGUMENT)
    assert str(limit) in decode_rpc_error(err).message


def test_the_cache_is_bounded_in_bytes() -> None:
    from xinrong.cache import ENTRY_OVERHEAD_BYTES, BoundedCache

    cache: BoundedCache[int, bytes] = BoundedCache(1000, max_bytes=10_000, weigh=lambda _k, v: len(v))
    for i in range(100):
        cache.put(i, b"x" * 1000)
    assert cache.bytes <= 10_000 and len(cache) == 10_000 // (1000 + ENTRY_OVERHEAD_BYTES)
    assert cache.get(99) == b"x" * 1000 and cache.get(0) is None
    cache.put(-1, b"y" * 20_000)  # heavier than the whole budget: not kept, nothing evicted
    assert cache.get(-1) is None and cache.get(99) is not None
    cache.put(99, b"z")  # replacing an entry re-weighs it
    assert cache.get(99) == b"z" and cache.bytes <= 10_000
