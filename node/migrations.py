"""Versioned schema migrations of the node's database, one list for both backends.

Each ``Migration`` is one step of the logical schema, spelled once per
backend (SQLite, the embedded default, and PostgreSQL, for replicas). A
database records the last step applied (SQLite: ``PRAGMA user_version``, as
the node has done since its first release; PostgreSQL: the
``schema_migrations`` table) and every missing step is applied in order, each
in its own transaction, at start (SQLite) or by ``xinrong node db migrate``
(PostgreSQL, where several replicas share one database and an operator
decides when the schema moves; a replica refuses to start on a database that
is behind or ahead of it).

The steps are frozen: a released step is never edited, a change is a new
step. Step 1 is, byte for byte, the schema of the node before migrations
existed, so a ``node.db`` written by any earlier node loads and is brought
forward.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: str
    postgres: str


# -- 1: the schema as the node shipped it (registry, consents, limits, audit, modeling) --

_SQLITE_1 = """
-- registry
CREATE TABLE IF NOT EXISTS parties (
    role        TEXT NOT NULL,
    party_id    TEXT NOT NULL,
    binding     BLOB NOT NULL,
    not_before  INTEGER NOT NULL,
    source      TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (role, party_id)
);
-- consents
CREATE TABLE IF NOT EXISTS consents (
    consent_id         TEXT PRIMARY KEY,
    enterprise         TEXT NOT NULL,
    grantee            TEXT NOT NULL,
    signed             BLOB NOT NULL,
    digest             TEXT NOT NULL,
    state              INTEGER NOT NULL,
    registered_ms      INTEGER NOT NULL,
    revoked_ms         INTEGER,
    revocation         BLOB,
    revocation_binding BLOB
);
CREATE INDEX IF NOT EXISTS consents_enterprise ON consents (enterprise);
-- The use ledger: one row per consent and UTC day; a consent's total is the sum.
CREATE TABLE IF NOT EXISTS consent_daily_uses (
    consent_id TEXT NOT NULL REFERENCES consents (consent_id),
    day        INTEGER NOT NULL,
    uses       INTEGER NOT NULL,
    PRIMARY KEY (consent_id, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revocation_pushes (
    consent_id      TEXT NOT NULL REFERENCES consents (consent_id),
    provider        TEXT NOT NULL,
    acked_ms        INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_reason     TEXT NOT NULL DEFAULT '',
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (consent_id, provider)
) WITHOUT ROWID;
-- limits
CREATE TABLE IF NOT EXISTS replay_ids (
    request_id TEXT PRIMARY KEY,
    seen_ms    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS enterprise_daily_uses (
    enterprise TEXT NOT NULL,
    day        INTEGER NOT NULL,
    uses       INTEGER NOT NULL,
    PRIMARY KEY (enterprise, day)
) WITHOUT ROWID;
-- audit
CREATE TABLE IF NOT EXISTS audit_log (
    seq           INTEGER PRIMARY KEY,
    ts_ms         INTEGER NOT NULL,
    caller_role   TEXT NOT NULL,
    caller_id     TEXT NOT NULL,
    method        TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    enterprise    TEXT NOT NULL,
    consent_id    TEXT NOT NULL,
    providers     TEXT NOT NULL,
    fields        TEXT NOT NULL,
    claims_sha256 TEXT NOT NULL,
    decision      TEXT NOT NULL,
    reason        TEXT NOT NULL,
    prev_hash     BLOB NOT NULL,
    entry_hash    BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
-- modeling_store
CREATE TABLE IF NOT EXISTS modeling_jobs (
    job_id         TEXT PRIMARY KEY,
    institution    TEXT NOT NULL,
    providers      TEXT NOT NULL,
    backend        TEXT NOT NULL,
    state          TEXT NOT NULL,
    failure_reason TEXT NOT NULL,
    epochs_done    INTEGER NOT NULL,
    created_ms     INTEGER NOT NULL,
    updated_ms     INTEGER NOT NULL,
    metadata       TEXT
) WITHOUT ROWID;
"""

# -- 2: replay ids per caller ------------------------------------------------------
# A global namespace let any bank learn whether an id had been used by another
# in the window (REQUEST_REPLAYED). Ids already held keep protecting against
# replays until they expire: they move over with the caller '' (legacy), which
# the guard treats as "any caller".

_SQLITE_2 = """
CREATE TABLE replay_ids_by_caller (
    caller     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    seen_ms    INTEGER NOT NULL,
    PRIMARY KEY (caller, request_id)
) WITHOUT ROWID;
INSERT INTO replay_ids_by_caller (caller, request_id, seen_ms) SELECT '', request_id, seen_ms FROM replay_ids;
DROP TABLE replay_ids;
ALTER TABLE replay_ids_by_caller RENAME TO replay_ids;
"""

# PostgreSQL spellings: BYTEA for BLOB, BIGINT for millisecond times, no
# WITHOUT ROWID, append-only audit rows by a trigger function. Filled in below.
_POSTGRES_1 = ""
_POSTGRES_2 = ""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _SQLITE_1, _POSTGRES_1),
    Migration(2, "replay ids per caller", _SQLITE_2, _POSTGRES_2),
)
LATEST = MIGRATIONS[-1].version

__all__ = ["LATEST", "MIGRATIONS", "Migration"]
