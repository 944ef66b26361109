"""Keys (file modes, signatures, sealing, CA bindings) and consent signing/verification."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from xinrong.catalog import Catalog, Form
from xinrong.consent import (
    build_consent,
    check_consent_use,
    parse_scope,
    sign_consent,
    sign_revocation,
    verify_revocation,
    verify_signed_consent,
)
from xinrong.errors import ConsentError, KeyFileError, Reason, SignatureError, ValidationError
from xinrong.keys.binding import issue_binding, verify_binding
from xinrong.keys.ca import CaVerifier, CertificateAuthority
from xinrong.keys.files import read_private_file, write_private_file
from xinrong.keys.sealing import SealingKey, SessionSealer, seal
from xinrong.keys.signing import SigningKey
from xinrong.v1 import common_pb2

from support.pki import Pki

USCC = "911301001234567883"
OTHER = "91110108551385082Q"


def test_private_key_files_are_0600_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    path = write_private_file(tmp_path / "k.pem", b"secret")
    assert (path.stat().st_mode & 0o777) == 0o600
    assert read_private_file(path) == b"secret"
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="group or others"):
        read_private_file(path)
    os.chmod(path, 0o604)
    with pytest.raises(KeyFileError):
        SigningKey.load(path)


def test_party_keys_on_disk_are_private(pki: Pki) -> None:
    directory = pki.root / "providers" / "tax"
    for name in ("tls.key", "signing.key", "sealing.key"):
        assert ((directory / name).stat().st_mode & 0o077) == 0, name
    assert ((pki.root / "ca" / "ca.key").stat().st_mode & 0o077) == 0


def test_signatures_are_domain_separated() -> None:
    key = SigningKey.generate()
    sig = key.sign("xinrong.v1.Verdict", b"payload")
    key.verify_key.verify("xinrong.v1.Verdict", b"payload", sig)
    with pytest.raises(SignatureError):
        key.verify_key.verify("xinrong.v1.Indicator", b"payload", sig)
    with pytest.raises(SignatureError):
        key.verify_key.verify("xinrong.v1.Verdict", b"payloaD", sig)


def test_signatures_interoperate_with_openssl_and_refuse_malformed_input(tmp_path: Path) -> None:
    """Signing runs on libsodium; an auditor checking with OpenSSL (the
    ``cryptography`` package) must get the same bytes and the same verdicts."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    openssl_key = Ed25519PrivateKey.generate()
    key = SigningKey(openssl_key)
    key.save(tmp_path / "k.pem")
    loaded = SigningKey.load(tmp_path / "k.pem")
    framed = b"xinrong.v1.Verdict\x00payload"
    for signer in (key, loaded):
        sig = signer.sign("xinrong.v1.Verdict", b"payload")
        assert sig == openssl_key.sign(framed)  # Ed25519 is deterministic: identical bytes
        Ed25519PublicKey.from_public_bytes(key.public_raw).verify(sig, framed)
    key.verify_key.verify("xinrong.v1.Verdict", b"payload", openssl_key.sign(framed))
    forged = bytearray(openssl_key.sign(framed))
    forged[10] ^= 1
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(key.public_raw).verify(bytes(forged), framed)
    for bad in (bytes(forged), b"", b"short", bytes(64), bytes(65)):
        with pytest.raises(SignatureError):
            key.verify_key.verify("xinrong.v1.Verdict", b"payload", bad)
        assert not key.verify_key.is_valid("xinrong.v1.Verdict", b"payload", bad)
    with pytest.raises(SignatureError):
        SigningKey.generate().verify_key.verify("xinrong.v1.Verdict", b"payload", openssl_key.sign(framed))


def _assert_opens_only_as_addressed(key: SealingKey, box: common_pb2.SealedBox) -> None:
    """A box sealed as bank-a / "t" / "req-1" with b"hello" opens so and no other way."""
    assert key.open(box, recipient_id="bank-a", content_type="t", context="req-1") == b"hello"
    assert b"hello" not in box.ciphertext
    for kwargs in (
        {"recipient_id": "bank-b", "content_type": "t", "context": "req-1"},
        {"recipient_id": "bank-a", "content_type": "u", "context": "req-1"},
        {"recipient_id": "bank-a", "content_type": "t", "context": "req-2"},
    ):
        with pytest.raises(SignatureError):
            key.open(box, **kwargs)


def test_sealed_boxes_bind_recipient_type_and_context() -> None:
    key = SealingKey.generate()
    box = seal(b"hello", recipient_id="bank-a", recipient_public_raw=key.public_raw, content_type="t", context="req-1")
    _assert_opens_only_as_addressed(key, box)
    box.context = "req-2"  # relabelled by a relay: the HPKE info no longer matches
    with pytest.raises(SignatureError):
        key.open(box, recipient_id="bank-a", content_type="t", context="req-2")
    with pytest.raises(SignatureError):
        SealingKey.generate().open(box, recipient_id="bank-a", content_type="t", context="req-1")


def _session_box(
    sealer: SessionSealer,
    key: SealingKey,
    text: bytes,
    context: str,
    *,
    content_type: str = "t",
    recipient: str = "bank-a",
) -> common_pb2.SealedBox:
    return sealer.seal(
        text, recipient_id=recipient, recipient_public_raw=key.public_raw, content_type=content_type, context=context
    )


def test_session_boxes_bind_recipient_type_context_and_session() -> None:
    """The session scheme refuses every relabelling the single-shot one does, and more."""
    key = SealingKey.generate()
    sealer = SessionSealer()
    box = _session_box(sealer, key, b"hello", "req-1")
    assert box.scheme == common_pb2.SEALING_SCHEME_HPKE_SESSION and box.wrapped_key
    _assert_opens_only_as_addressed(key, box)
    relabelled = common_pb2.SealedBox()
    relabelled.CopyFrom(box)
    relabelled.context = "req-2"  # the associated data binds the context
    with pytest.raises(SignatureError):
        key.open(relabelled, recipient_id="bank-a", content_type="t", context="req-2")
    # The same wrapped key under another content type: the unwrapped key is
    # cached, but the cache is keyed on the type, so the HPKE info still decides.
    relabelled.CopyFrom(box)
    relabelled.content_type = "u"
    with pytest.raises(SignatureError):
        key.open(relabelled, recipient_id="bank-a", content_type="u", context="req-1")
    # Another session's wrapped key, a flipped bit, a truncated box, no scheme, a stranger's key.
    other = _session_box(SessionSealer(), key, b"hello", "req-1")
    relabelled.CopyFrom(box)
    relabelled.wrapped_key = other.wrapped_key
    flipped = common_pb2.SealedBox()
    flipped.CopyFrom(box)
    flipped.ciphertext = box.ciphertext[:-1] + bytes([box.ciphertext[-1] ^ 1])
    short = common_pb2.SealedBox()
    short.CopyFrom(box)
    short.ciphertext = box.ciphertext[:5]
    bare = common_pb2.SealedBox()
    bare.CopyFrom(box)
    bare.scheme = common_pb2.SEALING_SCHEME_UNSPECIFIED
    for bad in (relabelled, flipped, short, bare):
        with pytest.raises(SignatureError):
            key.open(bad, recipient_id="bank-a", content_type="t", context="req-1")
    with pytest.raises(SignatureError):
        SealingKey.generate().open(box, recipient_id="bank-a", content_type="t", context="req-1")
    assert key.open(other, recipient_id="bank-a", content_type="t", context="req-1") == b"hello"


def test_sessions_rotate_and_never_repeat_a_nonce() -> None:
    """Counter nonces are unique across threads; a session ends by count or age."""
    key = SealingKey.generate()
    now = [1000.0]
    sealer = SessionSealer(max_boxes=50, max_age=60.0, clock=lambda: now[0])
    boxes: list[common_pb2.SealedBox] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        for i in range(40):
            b = _session_box(sealer, key, f"{worker}-{i}".encode(), f"req-{worker}-{i}")
            with lock:
                boxes.append(b)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_session: dict[bytes, set[bytes]] = {}
    for b in boxes:
        by_session.setdefault(b.wrapped_key, set()).add(b.ciphertext[:12])
    assert len(by_session) == 4  # 200 boxes, 50 per session
    assert all(len(nonces) == 50 for nonces in by_session.values())
    for b in boxes:
        worker, i = b.context.removeprefix("req-").split("-")
        assert key.open(b, recipient_id="bank-a", content_type="t", context=b.context) == f"{worker}-{i}".encode()
    # Age: a box after max_age starts a new session; so do another type and another recipient key.
    first = _session_box(sealer, key, b"x", "a")
    assert _session_box(sealer, key, b"x", "b").wrapped_key == first.wrapped_key
    now[0] += 60.0
    aged = _session_box(sealer, key, b"x", "c")
    assert aged.wrapped_key != first.wrapped_key
    assert _session_box(sealer, key, b"x", "d", content_type="u").wrapped_key != aged.wrapped_key
    rotated = SealingKey.generate()
    assert _session_box(sealer, rotated, b"x", "e").wrapped_key != aged.wrapped_key
    with pytest.raises(ValueError):
        SessionSealer(max_boxes=0)


def test_a_forked_process_never_continues_its_parents_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """After fork, parent and child would otherwise seal under the same key
    from the same counter: nonce reuse. A process that finds a session made
    under another pid starts its own. (The fork is simulated through the pid:
    a real fork of the test process, with gRPC and OpenSSL threads about,
    could deadlock the child.)"""
    key = SealingKey.generate()
    sealer = SessionSealer()
    parent_first = _session_box(sealer, key, b"x", "a")
    assert _session_box(sealer, key, b"x", "b").wrapped_key == parent_first.wrapped_key
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)  # now "in the child"
    child = _session_box(sealer, key, b"y", "c")
    assert child.wrapped_key != parent_first.wrapped_key
    assert child.ciphertext[:12] == bytes(12)  # a fresh counter under a fresh key
    assert key.open(child, recipient_id="bank-a", content_type="t", context="c") == b"y"


def test_bindings_are_checked_against_the_ca(pki: Pki) -> None:
    ca = CaVerifier(pki.ca.cert_pem)
    tax = pki.provider("tax")
    b = verify_binding(ca, tax.binding.signed, expect_role="provider", expect_party_id="tax")
    assert b.provider == "tax"
    rogue = CertificateAuthority.create("rogue")
    forged = issue_binding(rogue, party_id="tax", role="provider", signing_public_raw=SigningKey.generate().public_raw)
    with pytest.raises(SignatureError):
        verify_binding(ca, forged)
    with pytest.raises(SignatureError):
        verify_binding(ca, tax.binding.signed, expect_role="institution")
    with pytest.raises(SignatureError):
        verify_binding(ca, tax.binding.signed, now=time.time() + 10 * 365 * 86400)


def _consent(pki: Pki, catalog: Catalog, **over: object) -> common_pb2.SignedConsent:
    ent = pki.enterprise(USCC)
    now = int(time.time())
    fields: dict[str, object] = {
        "enterprise_uscc": USCC,
        "enterprise_key_id": ent.signing_key.key_id,
        "grantee_id": "bank-a",
        "purpose": "loan_application",
        "scope": parse_scope(catalog, ["tax.*", "social_insurance.consecutive_months"]),
        "data_period_from": "2025-01-01",
        "data_period_to": "2026-12-31",
        "valid_from": now - 10,
        "valid_until": now + 3600,
        "max_uses": 5,
    }
    fields.update(over)
    return sign_consent(build_consent(**fields), ent.signing_key, ent.binding.signed)  # type: ignore[arg-type]


def test_consent_round_trip_and_use_checks(pki: Pki, catalog: Catalog) -> None:
    ca = CaVerifier(pki.ca.cert_pem)
    v = verify_signed_consent(ca, _consent(pki, catalog))
    assert v.covers("tax.credit_grade", Form.GRADE)
    assert v.covers("social_insurance.consecutive_months", Form.LADDER)
    assert not v.covers("social_insurance.in_arrears", Form.FLAG)
    now = time.time()
    check_consent_use(v, enterprise_uscc=USCC, audience_id="bank-a", needs=[("tax.credit_grade", Form.GRADE)], now=now)

    def reason(**kw: object) -> Reason:
        args: dict[str, object] = {
            "enterprise_uscc": USCC,
            "audience_id": "bank-a",
            "needs": [("tax.credit_grade", Form.GRADE)],
            "now": now,
        }
        args.update(kw)
        with pytest.raises(ConsentError) as info:
            check_consent_use(v, **args)  # type: ignore[arg-type]
        return info.value.reason

    assert reason(audience_id="bank-b") is Reason.ACCESS_DENIED  # the uniform denial
    assert reason(enterprise_uscc=OTHER) is Reason.ACCESS_DENIED
    assert reason(now=now + 7200) is Reason.CONSENT_EXPIRED
    assert reason(now=now - 3600) is Reason.CONSENT_NOT_YET_VALID
    assert reason(state=common_pb2.CONSENT_STATE_REVOKED) is Reason.CONSENT_REVOKED
    assert reason(needs=[("social_insurance.in_arrears", Form.FLAG)]) is Reason.CLAIM_OUT_OF_SCOPE


def test_forged_consents_get_the_uniform_denial(pki: Pki, catalog: Catalog) -> None:
    ca = CaVerifier(pki.ca.cert_pem)
    good = _consent(pki, catalog)
    tampered = common_pb2.SignedConsent()
    tampered.CopyFrom(good)
    c = common_pb2.Consent()
    c.ParseFromString(good.consent)
    c.max_uses = 1000  # a bank widening its consent
    tampered.consent = c.SerializeToString(deterministic=True)
    other_ent = pki.enterprise(OTHER)
    wrong_signer = sign_consent(c, other_ent.signing_key, other_ent.binding.signed)
    for bad in (tampered, wrong_signer):
        with pytest.raises(ConsentError) as info:
            verify_signed_consent(ca, bad)
        assert info.value.reason is Reason.ACCESS_DENIED
        assert info.value.public_message == ConsentError("x").public_message


def test_consent_validation(pki: Pki, catalog: Catalog) -> None:
    with pytest.raises(ValidationError):
        _consent(pki, catalog, data_period_from="2027-01-01")
    with pytest.raises(ValueError):
        _consent(pki, catalog, enterprise_uscc="911301001234567884")
    with pytest.raises(ValidationError):
        parse_scope(catalog, ["tax.credit_grade:bracket"])
    with pytest.raises(ValidationError):
        parse_scope(catalog, ["tax.last_normal_payment_date"])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"purpose": 999}, "purpose"),
        ({"purpose": 0}, "purpose"),
        ({"fetch_type": 999}, "fetch type"),
        ({"data_period_from": "0", "data_period_to": "z"}, "data period"),  # as text: every date
        ({"data_period_to": "9999-99-99"}, "data period end"),
        ({"data_period_from": "20250101"}, "data period start"),  # fromisoformat takes it; text order does not
        ({"data_period_from": "2026-06-01", "data_period_to": "2026-01-01"}, "ends before it starts"),
        ({"max_uses": 0}, "max_uses"),
        ({"valid_until": 0}, "valid_until"),
    ],
)
def test_a_signed_consent_must_be_well_formed_not_only_authentic(
    pki: Pki, catalog: Catalog, change: dict[str, object], named: str
) -> None:
    """``build_consent`` refuses these; an enterprise's own tool need not use it, and its
    signature makes the consent authentic, not sane. The node and every agent verify
    with ``verify_signed_consent``: INVALID_ARGUMENT naming the field."""
    ent = pki.enterprise(USCC)
    consent = common_pb2.Consent()
    consent.ParseFromString(_consent(pki, catalog).consent)
    for key, value in change.items():
        setattr(consent, key, value)
    signed = sign_consent(consent, ent.signing_key, ent.binding.signed)
    with pytest.raises(ValidationError) as info:
        verify_signed_consent(CaVerifier(pki.ca.cert_pem), signed)
    assert named in info.value.public_message


def test_revocations_must_be_signed_by_the_enterprise(pki: Pki) -> None:
    ca = CaVerifier(pki.ca.cert_pem)
    ent = pki.enterprise(USCC)
    rev = sign_revocation("c-1", USCC, ent.signing_key)
    assert verify_revocation(ca, rev, ent.binding.signed).consent_id == "c-1"
    forged = sign_revocation("c-1", USCC, SigningKey.generate())
    with pytest.raises(ConsentError):
        verify_revocation(ca, forged, ent.binding.signed)
    with pytest.raises(ConsentError):
        verify_revocation(ca, rev, pki.enterprise(OTHER).binding.signed)
