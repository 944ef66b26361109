"""The node's audit log as a Merkle tree log: checkpoints, proofs over gRPC and the CLI,
the enterprise's own access listing, the migration of a hash chain, and the
refusal to sign a checkpoint inconsistent with the last one."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import pytest

from xinrong.bank.client import BankClient
from xinrong.catalog import Catalog
from xinrong.errors import Reason
from xinrong.keys.layout import party_dir
from xinrong.keys.signing import SigningKey
from xinrong.node.audit import AuditEvent, Decision, HashChainAuditLog, canonical_leaf, chain_hash
from xinrong.node.db import Database
from xinrong.node.migrations import MIGRATIONS
from xinrong.node.tlog import CheckpointRefused, TransparencyLog, verify_log
from xinrong.rpc.channel import secure_channel
from xinrong.tlog import merkle
from xinrong.tlog.client import LogClient, audit_origin
from xinrong.tlog.note import Checkpoint, open_checkpoint, parse_verifier_key, sign_checkpoint
from xinrong.tlog.witness import SplitView, Witness
from xinrong.tools.cli import main
from xinrong.uscc import make as make_uscc
from xinrong.v1 import transparency_pb2, transparency_pb2_grpc

from support.node_fakes import ACME, assert_refused, consent_id_of, grant, register, verify_request

OTHER = make_uscc("9", "1", "130100", "MA0BETA2")


@pytest.fixture(params=["sqlite", "postgres"])
def node_backend(request: pytest.FixtureRequest) -> str:
    """The harness test runs on both backends (PostgreSQL: the tree follows the sequencer)."""
    return str(request.param)


def _leaf_of(h: Any, resp: Any) -> int:
    """The response names its audit leaf (SQLite); replicas learn it once sequenced (PostgreSQL)."""
    if h.backend == "sqlite":
        assert resp.HasField("audit_leaf_index")
        return int(resp.audit_leaf_index)
    assert not resp.HasField("audit_leaf_index")
    h.flush_audit()
    rows = h.query("SELECT seq FROM audit_log WHERE request_id = ? AND decision = 'ALLOWED'", (resp.request_id,))
    return int(rows[0][0]) - 1


def _tstub(h: Any, creds: Any) -> Any:
    channel = secure_channel(f"127.0.0.1:{h.node.port}", creds, server_role="node", server_id="node")
    h._channels.append(channel)
    return transparency_pb2_grpc.TransparencyServiceStub(channel)


def _naive_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return merkle.EMPTY_ROOT
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


def test_checkpoints_proofs_cli_and_accesses(
    make_harness: Any, pki: Any, catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    h = make_harness(["tax"])
    node_key = pki.node.signing_key.public_raw
    origin = audit_origin("node")
    consent = grant(pki, catalog, max_uses=10)
    register(h.bank(), consent)
    other = grant(pki, catalog, enterprise=OTHER, max_uses=10)
    register(h.bank(), other)
    leaves = []
    for _ in range(3):
        leaves.append(_leaf_of(h, h.bank().Verify(verify_request(consent), timeout=10)))
    h.bank().Verify(verify_request(other, enterprise=OTHER), timeout=10)

    bank_log = LogClient(_tstub(h, pki.institution("bank-a")), origin, node_key, Witness(None))
    first = bank_log.checkpoint()
    for index in leaves:  # the bank proves the accesses it acted on are in the log
        proven = bank_log.prove_leaf(index)
        assert proven.size > index
    newest = _leaf_of(h, h.bank().Verify(verify_request(consent), timeout=10))
    later = bank_log.prove_leaf(newest)  # signed on demand at a size covering the new leaf
    held = bank_log.witness.held(origin)
    assert later.size > first.size and held is not None and held.checkpoint.size == later.size

    # By leaf hash, too; and a malformed request is refused precisely.
    tstub = _tstub(h, pki.institution("bank-a"))
    by_index = tstub.GetInclusionProof(transparency_pb2.GetInclusionProofRequest(leaf_index=leaves[0]))
    by_hash = tstub.GetInclusionProof(transparency_pb2.GetInclusionProofRequest(leaf_hash=by_index.leaf_hash))
    assert by_hash.leaf_index == leaves[0] and list(by_hash.proof) == list(by_index.proof)
    assert_refused(
        lambda: tstub.GetInclusionProof(transparency_pb2.GetInclusionProofRequest(leaf_hash=b"short")),
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_ARGUMENT,
    )
    past = assert_refused(  # past the end: "not yet", not "never"
        lambda: tstub.GetInclusionProof(transparency_pb2.GetInclusionProofRequest(leaf_index=10**6)),
        grpc.StatusCode.OUT_OF_RANGE,
        Reason.OUT_OF_RANGE,
    )
    assert "leaf 1000000" in (past.details() or "")  # sizes and positions are public: the reason names them
    assert_refused(
        lambda: tstub.GetConsistencyProof(transparency_pb2.GetConsistencyProofRequest(first_size=0)),
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_ARGUMENT,
    )
    # A malformed pair is INVALID_ARGUMENT whether or not second_size was ever signed.
    for size1, size2 in ((first.size + 5, 2), (3, 2)):
        bad = assert_refused(
            lambda: tstub.GetConsistencyProof(
                transparency_pb2.GetConsistencyProofRequest(first_size=size1, second_size=size2)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.INVALID_ARGUMENT,
        )
        assert "first_size <= second_size" in (bad.details() or "")
    too_far = transparency_pb2.GetInclusionProofRequest(leaf_index=1, tree_size=first.size + 10**6)
    assert_refused(lambda: tstub.GetInclusionProof(too_far), grpc.StatusCode.OUT_OF_RANGE, Reason.OUT_OF_RANGE)
    # Page tokens are ASCII digits: a superscript, Arabic-Indic or full-width digit
    # (str.isdigit says yes; int() then raises or reads it) is refused, never INTERNAL.
    etstub = _tstub(h, pki.enterprise(ACME))
    for token in ("\u00b2", "\u0661", "\uff11\uff12", "-1", "1 ", "x"):
        assert_refused(
            lambda: etstub.ListAccesses(transparency_pb2.ListAccessesRequest(page_token=token)),
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.INVALID_ARGUMENT,
        )

    # The CLI prints the newest note exactly as served, and proofs anyone can check.
    config = str(h.config_path)
    assert main(["node", "audit", "checkpoint", "--config", config]) == 0
    served = _tstub(h, pki.institution("bank-a")).GetCheckpoint(transparency_pb2.GetCheckpointRequest()).checkpoint
    assert capsys.readouterr().out == served
    checkpoint = open_checkpoint(served, origin, node_key)
    assert main(["node", "audit", "key", "--config", config]) == 0
    assert parse_verifier_key(capsys.readouterr().out) == (origin, node_key)
    assert main(["node", "audit", "prove", "--config", config, "--index", str(leaves[1])]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"leaf_index", "tree_size", "leaf_hash", "proof"} and doc["tree_size"] == checkpoint.size
    merkle.verify_inclusion(
        doc["leaf_index"],
        doc["tree_size"],
        base64.b64decode(doc["leaf_hash"]),
        [base64.b64decode(p) for p in doc["proof"]],
        checkpoint.root,
    )
    assert main(["node", "audit", "prove", "--config", config, "--consistency", "2", str(checkpoint.size)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["size1"] == 2 and doc["size2"] == checkpoint.size
    root2 = h.node.core.tlog.reader.root(2)
    merkle.verify_consistency(2, checkpoint.size, [base64.b64decode(p) for p in doc["proof"]], root2, checkpoint.root)

    # Who accessed it: the enterprise sees its own entries only, each proven.
    acme = LogClient(_tstub(h, pki.enterprise(ACME)), origin, node_key)
    mine = acme.accesses(ACME, page_size=2)  # paginated
    assert [a.leaf_index for a in mine if a.method == "Verify"] == [*leaves, newest]
    assert all(a.caller_id == "bank-a" and a.decision == "ALLOWED" for a in mine if a.method == "Verify")
    page1, token = acme.accesses_page(ACME, page_size=2)  # one page at a time (the portal's cursor)
    page2, _ = acme.accesses_page(ACME, page_token=token, page_size=2)
    assert token and [x.leaf_index for x in page1 + page2] == [x.leaf_index for x in mine[:4]]
    theirs = LogClient(_tstub(h, pki.enterprise(OTHER)), origin, node_key).accesses(OTHER)
    assert {a.leaf_index for a in theirs}.isdisjoint({a.leaf_index for a in mine})
    assert [a.method for a in theirs if a.method == "Verify"] == ["Verify"]
    # A forged entry (another enterprise's USCC claimed) does not verify.
    with pytest.raises(merkle.ProofError):
        LogClient(_tstub(h, pki.enterprise(ACME)), origin, node_key).accesses(OTHER)
    # From the command line: JSON lines, each shown only once its proof verified; the witness keeps the checkpoint.
    state = h.workdir / "acme-state"
    creds_dir = str(party_dir(pki.root, "enterprise", ACME))
    argv = ["enterprise", "accesses", "--credentials", creds_dir, "--node", f"127.0.0.1:{h.node.port}"]
    assert main([*argv, "--state-dir", str(state)]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["leaf_index"] for e in shown] == [a.leaf_index for a in mine]
    assert all(e["proof_verified"] and "answers" not in e for e in shown)
    assert main(["enterprise", "audit", "witness", "--credentials", creds_dir, "--state-dir", str(state)]) == 0
    held_doc = json.loads(capsys.readouterr().out)
    assert held_doc["logs"][0]["origin"] == origin and held_doc["logs"][0]["size"] >= later.size
    # Gossip: another party's witness file is taken only with the log's consistency proof.
    peer = h.workdir / "peer-witness.json"
    peer.write_text(json.dumps({"checkpoints": {origin: h.node.core.tlog.latest().note}}))
    gossip = ["enterprise", "audit", "witness", "--credentials", creds_dir, "--state-dir", str(state)]
    assert main([*gossip, "--gossip-from", str(peer), "--node", f"127.0.0.1:{h.node.port}"]) == 0
    gossiped = json.loads(capsys.readouterr().out)
    assert gossiped["offered"] and gossiped["consistent"] and gossiped["held_size"] >= held_doc["logs"][0]["size"]
    held_doc = {"logs": [{"size": gossiped["held_size"]}]}
    # The node equivocates (a note of the held size with another root): the client raises the alarm.
    forged = sign_checkpoint(Checkpoint(origin, held_doc["logs"][0]["size"], bytes(32)), pki.node.signing_key)
    state_file = state / "witness.json"
    doc = json.loads(state_file.read_text())
    doc["checkpoints"][origin] = forged
    state_file.write_text(json.dumps(doc))
    assert main([*argv, "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err
    assert "ALARM: split view" in err and forged in json.loads(err[err.index("{") :])["held"]
    assert json.loads(state_file.read_text())["alarms"][0]["held"] == forged
    assert_refused(
        lambda: _tstub(h, pki.institution("bank-a")).ListAccesses(transparency_pb2.ListAccessesRequest()),
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.CALLER_NOT_ALLOWED,
    )

    # The bank SDK: the verdicts name their audit leaf; the bank proves it against a witnessed checkpoint.
    with BankClient(
        f"127.0.0.1:{h.node.port}", pki.institution("bank-a"), witness=Witness(h.workdir / "bank-witness.json")
    ) as bank:
        bank.verify(ACME, ["tax.credit_grade in A,B"], consent_id_of(consent))
        if h.backend == "postgres":
            h.flush_audit()
            assert bank.last_audit_leaf is None
        else:
            assert bank.last_audit_leaf is not None
            assert bank.prove_access(bank.last_audit_leaf).size > bank.last_audit_leaf
            held_bank = json.loads((h.workdir / "bank-witness.json").read_text())
            assert origin in held_bank["checkpoints"] and held_bank["alarms"] == []

    h.stop()
    assert main(["node", "audit", "verify", "--config", config]) == 0
    assert "matches the recomputed tree" in capsys.readouterr().out


def _chain_db(path: Path, entries: int) -> list[bytes]:
    """A node database of schema step 2 holding a hash chain, as an earlier release wrote it."""
    conn = sqlite3.connect(path)
    for step in MIGRATIONS[:2]:
        conn.executescript(step.sqlite)
    conn.execute("PRAGMA user_version=2")
    prev = bytes(32)
    leaves = []
    for seq in range(1, entries + 1):
        event = AuditEvent("institution", "bank-a", "Verify", Decision.ALLOWED, request_id=f"r{seq}", enterprise=ACME)
        leaf = canonical_leaf(seq, 1000 + seq, event)
        digest = chain_hash(prev, leaf)
        conn.execute(
            "INSERT INTO audit_log VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                seq,
                1000 + seq,
                "institution",
                "bank-a",
                "Verify",
                f"r{seq}",
                ACME,
                "",
                "[]",
                "[]",
                "",
                "ALLOWED",
                "",
                prev,
                digest,
            ),
        )
        prev = digest
        leaves.append(leaf)
    conn.commit()
    conn.close()
    path.chmod(0o600)
    return leaves


def _tamper(path: Path, trigger: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Rewrite a stored row behind the node's back (its append-only trigger dropped first),
    leaving the files as private as the node requires."""
    conn = sqlite3.connect(path)
    conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute(sql, params)
    conn.commit()
    conn.close()
    for side in path.parent.glob(path.name + "*"):
        side.chmod(0o600)


def test_a_hash_chain_migrates_into_the_first_leaves_and_inconsistency_is_refused(tmp_path: Path) -> None:
    leaves = _chain_db(tmp_path / "node.db", 37)
    db = Database(tmp_path / "node.db")
    key = SigningKey.generate()
    tlog = TransparencyLog(db, node_id="node", signing_key=key)
    signed = tlog.tick(force=True)
    assert signed is not None and signed.size == 37 and signed.root == _naive_root(leaves)
    report = verify_log(db.query, tlog.origin, key.public_raw)
    assert report.ok and report.size == 37 and report.checkpoint_size == 37

    audit = HashChainAuditLog(db.query)  # the chain goes on; the tree follows it
    with db.transaction() as tx:
        entry = audit.append(tx, AuditEvent("institution", "bank-a", "Verify", Decision.ALLOWED), 5000)
    leaves.append(entry.leaf())
    again = tlog.tick(force=True)
    assert again is not None and again.root == _naive_root(leaves)

    # Someone rewrites a stored subtree: the node refuses to sign a tree
    # inconsistent with its last checkpoint, also after a restart.
    db.close()
    _tamper(
        tmp_path / "node.db",
        "tlog_nodes_no_update",
        "UPDATE tlog_nodes SET hash = zeroblob(32) WHERE level = 5 AND idx = 0",
    )
    db = Database(tmp_path / "node.db")
    audit = HashChainAuditLog(db.query)
    with db.transaction() as tx:
        audit.append(tx, AuditEvent("institution", "bank-a", "Verify", Decision.ALLOWED), 6000)
    restarted = TransparencyLog(db, node_id="node", signing_key=key)
    with pytest.raises(CheckpointRefused):
        restarted.tick(force=True)
    assert not verify_log(db.query, restarted.origin, key.public_raw).ok
    db.close()


@pytest.mark.parametrize("tamper", ["note", "root", "foreign"])
def test_audit_verify_checks_every_stored_checkpoint_not_only_the_newest(tmp_path: Path, tamper: str) -> None:
    """Proofs at an older size are served against that size's stored checkpoint, so
    ``node audit verify`` (verify_log) opens every one: its note, its row, its root."""
    db = Database(tmp_path / "node.db")
    key = SigningKey.generate()
    tlog = TransparencyLog(db, node_id="node", signing_key=key)
    audit = HashChainAuditLog(db.query)
    for batch in (5, 3, 4):
        for i in range(batch):
            with db.transaction() as tx:
                audit.append(tx, AuditEvent("institution", "bank-a", "Verify", Decision.ALLOWED, request_id=f"r{i}"), i)
        assert tlog.tick(force=True) is not None
    report = verify_log(db.query, tlog.origin, key.public_raw)
    assert report.ok and report.checkpoint_size == 12
    db.close()
    if tamper == "note":
        change: tuple[str, tuple[Any, ...]] = ("UPDATE tlog_checkpoints SET note = 'garbage' WHERE size = 5", ())
    elif tamper == "root":
        change = ("UPDATE tlog_checkpoints SET root = zeroblob(32) WHERE size = 8", ())
    else:  # a genuine-looking note of the right size, signed by another key
        other = sign_checkpoint(Checkpoint(tlog.origin, 8, bytes(32)), SigningKey.generate())
        change = ("UPDATE tlog_checkpoints SET note = ? WHERE size = 8", (other,))
    _tamper(tmp_path / "node.db", "tlog_checkpoints_no_update", *change)
    db = Database(tmp_path / "node.db")
    report = verify_log(db.query, tlog.origin, key.public_raw)
    assert not report.ok
    assert ("size 5" if tamper == "note" else "size 8") in report.problem
    db.close()


def test_a_witness_catches_a_forged_second_checkpoint(tmp_path: Path) -> None:
    db = Database(tmp_path / "node.db")
    key = SigningKey.generate()
    tlog = TransparencyLog(db, node_id="node", signing_key=key)
    audit = HashChainAuditLog(db.query)
    for i in range(5):
        with db.transaction() as tx:
            audit.append(tx, AuditEvent("institution", "bank-a", "Verify", Decision.ALLOWED, request_id=f"x{i}"), i)
    signed = tlog.tick(force=True)
    assert signed is not None
    witness = Witness(tmp_path / "witness.json")
    witness.trust(tlog.origin, key.public_raw)
    proofs = tlog.reader.consistency
    witness.observe(signed.note, tlog.origin, proofs)
    forged = sign_checkpoint(Checkpoint(tlog.origin, 5, bytes(32)), key)  # same size, another root
    with pytest.raises(SplitView) as caught:
        witness.observe(forged, tlog.origin, proofs)
    assert caught.value.evidence()["held"] == signed.note and caught.value.evidence()["offered"] == forged
    assert witness.alarms == [caught.value.evidence()]
    # Persisted: a restarted witness still holds the genuine one.
    again = Witness(tmp_path / "witness.json")
    again.trust(tlog.origin, key.public_raw)
    kept = again.held(tlog.origin)
    assert kept is not None and kept.note == signed.note and again.alarms == witness.alarms
    db.close()


def test_a_tree_without_tiles_gets_them_backfilled_and_a_forged_tile_fails_verification(tmp_path: Path) -> None:
    """A tree older than schema step 10 gets its full tiles from the integrator; verify checks each tile."""
    _chain_db(tmp_path / "node.db", 600)
    db = Database(tmp_path / "node.db")
    key = SigningKey.generate()
    tlog = TransparencyLog(db, node_id="node", signing_key=key)
    assert tlog.tick(force=True) is not None
    assert db.query("SELECT tlevel, idx FROM tlog_tiles ORDER BY idx") == [(0, 0), (0, 1)]
    with db.transaction() as tx:
        tx.execute("DELETE FROM tlog_tiles")  # as if the tree predated the tiles
    fresh = TransparencyLog(db, node_id="node", signing_key=key)
    fresh.tick(force=True)
    assert db.query("SELECT tlevel, idx FROM tlog_tiles ORDER BY idx") == [(0, 0), (0, 1)]
    index, leaf, proof, checkpoint = fresh.inclusion(300, None, 0)
    merkle.verify_inclusion(index, checkpoint.size, leaf, proof, checkpoint.root)
    assert verify_log(db.query, fresh.origin, key.public_raw).ok
    db.close()

    _tamper(
        tmp_path / "node.db", "tlog_tiles_no_update", "UPDATE tlog_tiles SET hashes = zeroblob(16320) WHERE idx = 1"
    )
    db = Database(tmp_path / "node.db")
    report = verify_log(db.query, fresh.origin, key.public_raw)
    assert not report.ok and "tile (0, 1)" in report.problem
    db.close()


def test_the_bench_pause_file_stops_only_the_periodic_tree_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bench verify --tree-ab`` times the node without the tree: the periodic tick skips, a proof still forces."""
    from xinrong.node.tlog import BENCH_PAUSE_ENV

    _chain_db(tmp_path / "node.db", 5)
    db = Database(tmp_path / "node.db")
    tlog = TransparencyLog(db, node_id="node", signing_key=SigningKey.generate(), checkpoint_seconds=0)
    pause = tmp_path / "paused"
    monkeypatch.setenv(BENCH_PAUSE_ENV, str(pause))
    pause.touch()
    assert tlog.tick() is None and tlog.reader.size() == 0
    assert tlog.tick(force=True) is not None and tlog.reader.size() == 5
    pause.unlink()
    audit = HashChainAuditLog(db.query)
    with db.transaction() as tx:
        audit.append(tx, AuditEvent("institution", "bank-a", "Verify", Decision.ALLOWED), 7000)
    assert tlog.tick() is not None and tlog.reader.size() == 6
    db.close()


def test_tiles_on_postgresql_are_written_by_the_integrator_and_serve_proofs(pg_cluster: Any) -> None:
    """Schema step 10 on PostgreSQL: full tiles (BYTEA) are written as the sequenced log fills, proofs read them."""
    from xinrong.node.audit import SequencedAuditLog
    from xinrong.node.pg import PgDatabase
    from xinrong.node.tlog import TreeReader
    from xinrong.tlog.store import TileCache

    from support.pg import database_config, database_table

    db = PgDatabase(database_config(database_table(pg_cluster)))
    try:
        audit = SequencedAuditLog(db)
        with db.transaction() as tx:
            for i in range(600):
                audit.append(tx, AuditEvent("institution", "bank-a", "Verify", Decision.ALLOWED, request_id=f"r{i}"), i)
        while audit.sequence() > 0:
            pass
        key = SigningKey.generate()
        tlog = TransparencyLog(db, node_id="node", signing_key=key)
        signed = tlog.tick(force=True)
        assert signed is not None and signed.size == 600
        assert db.query("SELECT tlevel, idx FROM tlog_tiles ORDER BY idx") == [(0, 0), (0, 1)]
        tiled = TreeReader(db.query, tiles=TileCache())
        plain = TreeReader(db.query, use_tiles=False)
        for index in (0, 255, 256, 511, 512, 599):
            proof = tiled.inclusion(index, 600)
            assert proof == plain.inclusion(index, 600)
            merkle.verify_inclusion(index, 600, tiled.leaf_hash(index), proof, signed.root)
        assert verify_log(db.query, tlog.origin, key.public_raw).ok
        with pytest.raises(Exception, match="append-only"), db.transaction() as tx:
            tx.execute("UPDATE tlog_tiles SET hashes = ? WHERE idx = 0", (bytes(16320),))
    finally:
        db.close()
