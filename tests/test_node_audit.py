"""The hash-chained audit log: chain verification, append-only triggers,
tamper detection, what an entry holds, and that the node's database never
holds a raw provider value."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest

from xinrong.catalog import Catalog
from xinrong.node import audit
from xinrong.node.audit import (
    AuditEvent,
    Decision,
    HashChainAuditLog,
    canonical_leaf,
    chain_hash,
    claims_digest,
    verify_chain,
)
from xinrong.node.db import Database

from support.node_fakes import (
    ACME,
    RAW_VALUES,
    consent_id_of,
    grant,
    indicators_request,
    register,
    verify_request,
)


def _event(i: int, decision: Decision = Decision.ALLOWED) -> AuditEvent:
    return AuditEvent(
        caller_role="institution",
        caller_id="bank-a",
        method="Verify",
        decision=decision,
        reason="" if decision is Decision.ALLOWED else "ACCESS_DENIED",
        request_id=f"req-{i}",
        enterprise=ACME,
        consent_id=f"consent-{i % 3}",
        providers=("social_insurance", "tax"),
        fields=("tax.credit_grade",),
        claims_sha256=claims_digest([f"tax.credit_grade in A{',B' * (i % 2)}"]),
    )


def _filled(path: Path, n: int) -> tuple[Database, HashChainAuditLog]:
    db = Database(path)
    log = HashChainAuditLog(db.query)
    for i in range(n):
        with db.transaction() as tx:
            log.append(tx, _event(i, Decision.ALLOWED if i % 4 else Decision.REFUSED), 1_700_000_000_000 + i)
    return db, log


def test_chain_links_every_entry_and_survives_reopening(tmp_path: Path) -> None:
    db, log = _filled(tmp_path / "a.db", 10)
    seq, head = log.head()
    db.close()
    conn = sqlite3.connect(tmp_path / "a.db")
    report = verify_chain(conn)
    assert (report.ok, report.entries, report.head) == (True, 10, head.hex())
    assert seq == 10
    # The first entry links to the genesis hash, every later one to its predecessor.
    rows = conn.execute("SELECT seq, prev_hash, entry_hash FROM audit_log ORDER BY seq").fetchall()
    assert bytes(rows[0][1]) == bytes(32)
    assert all(bytes(rows[i][1]) == bytes(rows[i - 1][2]) for i in range(1, len(rows)))
    conn.close()
    # Reopening continues the chain from the stored head.
    db2 = Database(tmp_path / "a.db")
    log2 = HashChainAuditLog(db2.query)
    with db2.transaction() as tx:
        entry = log2.append(tx, _event(99), 1_700_000_001_000)
    assert (entry.seq, entry.prev_hash) == (11, head)
    db2.close()
    assert verify_chain(sqlite3.connect(tmp_path / "a.db")).entries == 11


def test_entry_hash_is_the_documented_encoding(tmp_path: Path) -> None:
    db, _ = _filled(tmp_path / "b.db", 1)
    db.close()
    row = sqlite3.connect(tmp_path / "b.db").execute("SELECT entry_hash FROM audit_log").fetchone()
    leaf = canonical_leaf(1, 1_700_000_000_000, _event(0, Decision.REFUSED))
    assert json.loads(leaf)["decision"] == "REFUSED"
    expected = hashlib.sha256(
        b"xinrong.audit.chain.v1\x00" + bytes(32) + hashlib.sha256(b"\x00" + leaf).digest()
    ).digest()
    assert bytes(row[0]) == expected == chain_hash(bytes(32), leaf)


def _reference_leaf(seq: int, ts_ms: int, event: AuditEvent) -> bytes:
    """The documented leaf encoding, by the json module: what canonical_leaf must equal."""
    doc = {
        "v": 1,
        "seq": seq,
        "ts_ms": ts_ms,
        "caller_role": event.caller_role,
        "caller_id": event.caller_id,
        "method": event.method,
        "request_id": event.request_id,
        "enterprise": event.enterprise,
        "consent_id": event.consent_id,
        "providers": list(event.providers),
        "fields": list(event.fields),
        "claims_sha256": event.claims_sha256,
        "decision": event.decision.value,
        "reason": event.reason,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def test_leaf_encoding_is_the_sorted_compact_ascii_json_of_the_entry() -> None:
    """canonical_leaf is hand-spelled for speed; it must stay byte-identical to
    the json module's encoding, whatever the strings hold (so old chains verify)."""
    rng = random.Random(5)
    alphabet = 'ab"\\/\b\f\n\r\t\x00\x1f\x7f é中文🙂\u2028'

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))

    for _i in range(500):
        event = AuditEvent(
            caller_role=text(),
            caller_id=text(),
            method=text(),
            decision=rng.choice(list(Decision)),
            reason=text(),
            request_id=text(),
            enterprise=text(),
            consent_id=text(),
            providers=tuple(text() for _ in range(rng.randrange(0, 3))),
            fields=tuple(text() for _ in range(rng.randrange(0, 4))),
            claims_sha256=text(),
        )
        seq, ts_ms = rng.randrange(1, 2**40), rng.randrange(0, 2**45)
        assert canonical_leaf(seq, ts_ms, event) == _reference_leaf(seq, ts_ms, event)
    assert canonical_leaf(1, 2, _event(0)) == _reference_leaf(1, 2, _event(0))
    with pytest.raises(TypeError):
        canonical_leaf(
            1,
            2,
            AuditEvent(
                caller_role="institution",
                caller_id=7,  # type: ignore[arg-type]
                method="Verify",
                decision=Decision.ALLOWED,
            ),
        )


def test_triggers_make_the_table_append_only(tmp_path: Path) -> None:
    db, _ = _filled(tmp_path / "c.db", 3)
    db.close()
    conn = sqlite3.connect(tmp_path / "c.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_log SET reason = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE seq = 3")


@pytest.mark.parametrize(
    ("tamper", "bad_seq"),
    [
        ("UPDATE audit_log SET decision = 'ALLOWED' WHERE seq = 5", 5),
        ("UPDATE audit_log SET enterprise = '911301001234567883' WHERE seq = 3", 3),
        ("UPDATE audit_log SET providers = '[\"tax\"]' WHERE seq = 7", 7),
        ("UPDATE audit_log SET ts_ms = ts_ms + 1 WHERE seq = 1", 1),
        ("DELETE FROM audit_log WHERE seq = 4", 5),
        ("UPDATE audit_log SET seq = 100 WHERE seq = 8", 9),
    ],
)
def test_tampering_is_detected(tmp_path: Path, tamper: str, bad_seq: int) -> None:
    db, _ = _filled(tmp_path / "d.db", 8 if "seq = 100" not in tamper else 9)
    db.close()
    conn = sqlite3.connect(tmp_path / "d.db")
    assert verify_chain(conn).ok
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")
    conn.execute(tamper)
    conn.commit()
    report = verify_chain(conn)
    assert not report.ok
    assert report.first_bad_seq == bad_seq, report


def test_rewriting_an_entry_with_a_fresh_hash_breaks_the_next_link(tmp_path: Path) -> None:
    db, _ = _filled(tmp_path / "e.db", 5)
    db.close()
    conn = sqlite3.connect(tmp_path / "e.db")
    conn.execute("DROP TRIGGER audit_log_no_update")
    prev = bytes(conn.execute("SELECT prev_hash FROM audit_log WHERE seq = 2").fetchone()[0])
    forged = audit.AuditEntry(2, 1_700_000_000_001, _event(1, Decision.REFUSED), prev, b"")
    conn.execute(
        "UPDATE audit_log SET decision = 'REFUSED', reason = 'ACCESS_DENIED', entry_hash = ? WHERE seq = 2",
        (chain_hash(prev, forged.leaf()),),
    )
    conn.commit()
    report = verify_chain(conn)
    assert (report.ok, report.first_bad_seq) == (False, 3)


def test_a_node_refuses_to_extend_a_tampered_head(tmp_path: Path) -> None:
    db, _ = _filled(tmp_path / "f.db", 3)
    db.close()
    conn = sqlite3.connect(tmp_path / "f.db")
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET caller_id = 'bank-z' WHERE seq = 3")
    conn.commit()
    conn.close()
    db2 = Database(tmp_path / "f.db")
    with pytest.raises(RuntimeError, match="does not match"):
        HashChainAuditLog(db2.query)
    db2.close()


def test_node_audits_every_decision_with_metadata_only(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness()
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    claims = ["tax.credit_grade in B,A", "tax.vat_paid_last_year >= 500000", "social_insurance.in_arrears == false"]
    ok = verify_request(consent, claims)
    h.bank().Verify(ok, timeout=10)
    denied = verify_request("no-such-consent", ["tax.credit_grade in A"])
    with pytest.raises(grpc.RpcError):
        h.bank().Verify(denied, timeout=5)
    h.bank().GetIndicators(indicators_request(consent, [("tax.vat_paid_last_year", "bracket")]), timeout=10)
    conn = sqlite3.connect(h.db_path)
    rows = {
        r[0]: r
        for r in conn.execute(
            "SELECT request_id, method, caller_id, enterprise, consent_id, providers, fields, claims_sha256, decision, "
            "reason FROM audit_log WHERE method IN ('Verify', 'GetIndicators')"
        )
    }
    allowed = rows[ok.request_id]
    assert allowed[1:5] == ("Verify", "bank-a", ACME, consent_id_of(consent))
    assert json.loads(allowed[5]) == ["social_insurance", "tax"]
    assert json.loads(allowed[6]) == ["social_insurance.in_arrears", "tax.credit_grade", "tax.vat_paid_last_year"]
    canonical = ["tax.credit_grade in A,B", "tax.vat_paid_last_year >= 500000", "social_insurance.in_arrears == false"]
    assert allowed[7] == hashlib.sha256("\n".join(canonical).encode()).hexdigest()
    assert allowed[8:] == ("ALLOWED", "")
    assert rows[denied.request_id][8:] == ("REFUSED", "ACCESS_DENIED")
    methods = [r[0] for r in conn.execute("SELECT method FROM audit_log ORDER BY seq")]
    assert methods == ["RegisterConsent", "Verify", "Verify", "GetIndicators"]
    assert verify_chain(conn).ok


def _db_text(path: Path) -> str:
    """Every cell of every table, plus the raw bytes of the database and its WAL."""
    conn = sqlite3.connect(path)
    parts: list[str] = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for row in conn.execute(f"SELECT * FROM {table}"):
            for cell in row:
                parts.append(cell.decode("latin-1") if isinstance(cell, bytes) else str(cell))
    conn.close()
    for suffix in ("", "-wal"):
        file = Path(str(path) + suffix)
        if file.exists():
            parts.append(file.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def test_node_database_holds_no_raw_provider_value(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness()
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    for claims in (
        ["tax.vat_paid_last_year in [500000,1000000)", "tax.consecutive_normal_months >= 24"],
        ["social_insurance.avg_insured_headcount >= 50", "social_insurance.avg_employer_contribution >= 10000"],
    ):
        h.bank().Verify(verify_request(consent, claims), timeout=10)
    h.bank().GetIndicators(
        indicators_request(
            consent, [("tax.vat_paid_last_year", "bracket"), ("tax.consecutive_normal_months", "bracket")]
        ),
        timeout=10,
    )
    text = _db_text(h.db_path)
    # Sanity: the scan sees what the node did store.
    assert consent_id_of(consent) in text and ACME in text
    # Values distinctive enough that a chance match in timestamps or ids is negligible.
    distinctive = [str(v) for v in RAW_VALUES.values() if isinstance(v, Decimal) and len(str(v)) >= 8]
    assert len(distinctive) >= 3
    for value in distinctive:
        assert value not in text, f"raw value {value} found in the node database"
