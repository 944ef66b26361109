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

# -- PostgreSQL -----------------------------------------------------------------
# The same tables (BYTEA for BLOB, BIGINT for millisecond times), and what
# replicas sharing one database need on top (``xinrong.node.pg``):
#
# * ``audit_pending``: admissions append their audit events here, in their own
#   transaction; one sequencer at a time (an advisory lock) moves them into
#   ``audit_log`` in id order, assigning ``seq`` and the chain hashes. One log,
#   one order, whatever the number of replicas.
# * ``xinrong_admit``: the admission's writes as one statement, so a replica
#   holds the rows of one consent and one enterprise for microseconds, in a
#   fixed order (consents, then enterprises, each sorted): the check-and-
#   increment of every budget is exact across replicas and cannot deadlock.
# PostgreSQL support starts at step 2's layout (replay ids per caller), so its
# step 2 only records the version.

_POSTGRES_1 = """
CREATE TABLE parties (
    role        TEXT NOT NULL,
    party_id    TEXT NOT NULL,
    binding     BYTEA NOT NULL,
    not_before  BIGINT NOT NULL,
    source      TEXT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (role, party_id)
);
CREATE TABLE consents (
    consent_id         TEXT PRIMARY KEY,
    enterprise         TEXT NOT NULL,
    grantee            TEXT NOT NULL,
    signed             BYTEA NOT NULL,
    digest             TEXT NOT NULL,
    state              INTEGER NOT NULL,
    registered_ms      BIGINT NOT NULL,
    revoked_ms         BIGINT,
    revocation         BYTEA,
    revocation_binding BYTEA
);
CREATE INDEX consents_enterprise ON consents (enterprise);
CREATE TABLE consent_daily_uses (
    consent_id TEXT NOT NULL REFERENCES consents (consent_id),
    day        INTEGER NOT NULL,
    uses       BIGINT NOT NULL,
    PRIMARY KEY (consent_id, day)
);
CREATE TABLE revocation_pushes (
    consent_id      TEXT NOT NULL REFERENCES consents (consent_id),
    provider        TEXT NOT NULL,
    acked_ms        BIGINT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_reason     TEXT NOT NULL DEFAULT '',
    next_attempt_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (consent_id, provider)
);
CREATE TABLE replay_ids (
    caller     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    seen_ms    BIGINT NOT NULL,
    PRIMARY KEY (caller, request_id)
);
CREATE INDEX replay_ids_seen ON replay_ids (seen_ms);
CREATE TABLE enterprise_daily_uses (
    enterprise TEXT NOT NULL,
    day        INTEGER NOT NULL,
    uses       BIGINT NOT NULL,
    PRIMARY KEY (enterprise, day)
);
CREATE TABLE audit_log (
    seq           BIGINT PRIMARY KEY,
    ts_ms         BIGINT NOT NULL,
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
    prev_hash     BYTEA NOT NULL,
    entry_hash    BYTEA NOT NULL
);
CREATE FUNCTION xinrong_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION xinrong_audit_append_only();
CREATE TABLE audit_pending (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts_ms         BIGINT NOT NULL,
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
    reason        TEXT NOT NULL
);
CREATE TABLE modeling_jobs (
    job_id         TEXT PRIMARY KEY,
    institution    TEXT NOT NULL,
    providers      TEXT NOT NULL,
    backend        TEXT NOT NULL,
    state          TEXT NOT NULL,
    failure_reason TEXT NOT NULL,
    epochs_done    INTEGER NOT NULL,
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    metadata       TEXT
);
-- One admission's decision and writes (xinrong.node.admission documents the
-- order of checks; everything that needs no shared state was checked by the
-- caller). Returns the request's outcome ('' admitted, else a reason), then
-- one outcome per subject.
--   p_early:   a refusal of steps 1-3: audited only, the request id is not consumed
--   p_shape:   a refusal of steps 5-7: the id is consumed, no subject is considered
--   p_pre[i]:  'E:REASON' refuses the subject whatever the consent's state (steps 8-9
--              before the state check), 'L:REASON' unless the state refuses first
-- Consent rows, then enterprise rows, are locked in sorted order.
CREATE FUNCTION xinrong_admit(
    p_caller TEXT, p_request_id TEXT, p_now_ms BIGINT, p_cutoff_ms BIGINT, p_day INTEGER, p_budget BIGINT,
    p_early TEXT, p_shape TEXT,
    p_consents TEXT[], p_enterprises TEXT[], p_max_uses BIGINT[], p_max_day BIGINT[], p_pre TEXT[],
    p_role TEXT, p_caller_id TEXT, p_method TEXT, p_log_request_id TEXT, p_providers TEXT, p_fields TEXT,
    p_claims TEXT, p_log_enterprise TEXT, p_log_consent TEXT, p_log_enterprises TEXT[], p_log_consents TEXT[]
) RETURNS TEXT[] LANGUAGE plpgsql AS $$
DECLARE
    v_out TEXT[] := ARRAY['']::TEXT[];
    v_n INTEGER := coalesce(array_length(p_consents, 1), 0);
    v_state INTEGER;
    v_total BIGINT;
    v_today BIGINT;
    v_used BIGINT;
    v_reason TEXT;
    v_pre TEXT;
BEGIN
    IF p_early <> '' THEN
        INSERT INTO audit_pending (ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id,
                                   providers, fields, claims_sha256, decision, reason)
        VALUES (p_now_ms, p_role, p_caller_id, p_method, p_log_request_id, p_log_enterprise, p_log_consent,
                p_providers, p_fields, p_claims, 'REFUSED', p_early);
        RETURN ARRAY[p_early];
    END IF;
    -- 4. The request id, per caller: an id older than the window is a new id again.
    INSERT INTO replay_ids AS r (caller, request_id, seen_ms) VALUES (p_caller, p_request_id, p_now_ms)
        ON CONFLICT (caller, request_id) DO UPDATE SET seen_ms = excluded.seen_ms WHERE r.seen_ms < p_cutoff_ms;
    IF NOT FOUND THEN
        INSERT INTO audit_pending (ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id,
                                   providers, fields, claims_sha256, decision, reason)
        VALUES (p_now_ms, p_role, p_caller_id, p_method, p_log_request_id, p_log_enterprise, p_log_consent,
                p_providers, p_fields, p_claims, 'REFUSED', 'REQUEST_REPLAYED');
        RETURN ARRAY['REQUEST_REPLAYED'];
    END IF;
    IF p_shape <> '' THEN
        INSERT INTO audit_pending (ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id,
                                   providers, fields, claims_sha256, decision, reason)
        VALUES (p_now_ms, p_role, p_caller_id, p_method, p_log_request_id, p_log_enterprise, p_log_consent,
                p_providers, p_fields, p_claims, 'REFUSED', p_shape);
        RETURN ARRAY[p_shape];
    END IF;
    -- Lock what the subjects may use, in one global order: consents, then enterprises.
    PERFORM 1 FROM consents WHERE consent_id = ANY (p_consents) ORDER BY consent_id FOR UPDATE;
    INSERT INTO enterprise_daily_uses (enterprise, day, uses)
        SELECT DISTINCT e, p_day, 0 FROM unnest(p_enterprises) AS e ORDER BY 1
        ON CONFLICT (enterprise, day) DO NOTHING;
    PERFORM 1 FROM enterprise_daily_uses WHERE day = p_day AND enterprise = ANY (p_enterprises)
        ORDER BY enterprise FOR UPDATE;
    FOR i IN 1 .. v_n LOOP
        v_pre := p_pre[i];
        v_reason := '';
        IF left(v_pre, 2) = 'E:' THEN
            v_reason := substr(v_pre, 3);
        ELSE
            SELECT state INTO v_state FROM consents WHERE consent_id = p_consents[i];
            IF NOT FOUND THEN
                v_reason := 'ACCESS_DENIED';
            ELSIF v_state = 3 THEN
                v_reason := 'CONSENT_REVOKED';
            ELSIF v_state = 2 THEN
                v_reason := 'CONSENT_PAUSED';
            ELSIF left(v_pre, 2) = 'L:' THEN
                v_reason := substr(v_pre, 3);
            ELSE
                SELECT coalesce(sum(uses), 0), coalesce(sum(uses) FILTER (WHERE day = p_day), 0)
                    INTO v_total, v_today FROM consent_daily_uses WHERE consent_id = p_consents[i];
                SELECT uses INTO v_used FROM enterprise_daily_uses WHERE enterprise = p_enterprises[i] AND day = p_day;
                IF v_total >= p_max_uses[i] THEN
                    v_reason := 'CONSENT_USES_EXHAUSTED';
                ELSIF p_max_day[i] > 0 AND v_today >= p_max_day[i] THEN
                    v_reason := 'CONSENT_DAILY_LIMIT';
                ELSIF v_used >= p_budget THEN
                    v_reason := 'ENTERPRISE_BUDGET_EXHAUSTED';
                ELSE
                    INSERT INTO consent_daily_uses AS u (consent_id, day, uses) VALUES (p_consents[i], p_day, 1)
                        ON CONFLICT (consent_id, day) DO UPDATE SET uses = u.uses + 1;
                    UPDATE enterprise_daily_uses SET uses = uses + 1 WHERE enterprise = p_enterprises[i] AND day = p_day;
                END IF;
            END IF;
        END IF;
        INSERT INTO audit_pending (ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id,
                                   providers, fields, claims_sha256, decision, reason)
        VALUES (p_now_ms, p_role, p_caller_id, p_method, p_log_request_id, p_log_enterprises[i], p_log_consents[i],
                p_providers, p_fields, p_claims, CASE WHEN v_reason = '' THEN 'ALLOWED' ELSE 'REFUSED' END, v_reason);
        v_out := v_out || v_reason;
    END LOOP;
    RETURN v_out;
END;
$$;
"""

_POSTGRES_2 = """
SELECT 1;
"""

# -- 3: the audit log becomes an RFC 6962 Merkle tree log ---------------------------
# ``tlog_nodes`` holds the hash of every complete subtree (level 0: the leaf
# hashes), each written once when its last leaf arrives, so a proof reads
# O(log n) rows (xinrong.node.tlog). ``tlog_checkpoints`` keeps every signed
# checkpoint (the newest is the one the node must stay consistent with).
# The existing chain's entries become the first leaves, in seq order: the
# tree is derived from ``audit_log`` by the node's integrator, which folds
# every entry the tree does not hold yet (all of them, the first time) before
# it signs. ``audit_log_enterprise`` serves an enterprise's own accesses.

_SQLITE_3 = """
CREATE TABLE tlog_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE INDEX tlog_leaf_hash ON tlog_nodes (hash) WHERE level = 0;
CREATE TABLE tlog_checkpoints (
    size      INTEGER PRIMARY KEY,
    root      BLOB NOT NULL,
    note      TEXT NOT NULL,
    signed_ms INTEGER NOT NULL
);
CREATE TRIGGER tlog_nodes_no_update BEFORE UPDATE ON tlog_nodes
BEGIN
    SELECT RAISE(ABORT, 'tlog_nodes is append-only');
END;
CREATE TRIGGER tlog_checkpoints_no_update BEFORE UPDATE ON tlog_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'tlog_checkpoints is append-only');
END;
CREATE INDEX audit_log_enterprise ON audit_log (enterprise, seq);
"""

_POSTGRES_3 = """
CREATE TABLE tlog_nodes (
    level INTEGER NOT NULL,
    idx   BIGINT NOT NULL,
    hash  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE INDEX tlog_leaf_hash ON tlog_nodes (hash) WHERE level = 0;
CREATE TABLE tlog_checkpoints (
    size      BIGINT PRIMARY KEY,
    root      BYTEA NOT NULL,
    note      TEXT NOT NULL,
    signed_ms BIGINT NOT NULL
);
CREATE FUNCTION xinrong_tlog_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the transparency log is append-only';
END;
$$;
CREATE TRIGGER tlog_nodes_no_update BEFORE UPDATE OR DELETE ON tlog_nodes
    FOR EACH ROW EXECUTE FUNCTION xinrong_tlog_append_only();
CREATE TRIGGER tlog_checkpoints_no_update BEFORE UPDATE OR DELETE ON tlog_checkpoints
    FOR EACH ROW EXECUTE FUNCTION xinrong_tlog_append_only();
CREATE INDEX audit_log_enterprise ON audit_log (enterprise, seq);
"""

# -- 4: public records pushed by providers, voluntary filings (Issue 12 §1, §4) --
# public_batches keeps every provider-signed batch as received (its exact
# bytes and signature), so every version stays provable; public_records is
# the current value per (enterprise, field); filings keeps the enterprise's
# signed filing and, once withdrawn, its signed withdrawal.

_SQLITE_4 = """
CREATE TABLE public_batches (
    provider     TEXT NOT NULL,
    version      INTEGER NOT NULL,
    base_version INTEGER NOT NULL,
    period       TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    batch        BLOB NOT NULL,
    signature    BLOB NOT NULL,
    key_id       TEXT NOT NULL,
    records      INTEGER NOT NULL,
    changed      INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL,
    PRIMARY KEY (provider, version)
) WITHOUT ROWID;
CREATE TABLE public_records (
    uscc     TEXT NOT NULL,
    field    TEXT NOT NULL,
    provider TEXT NOT NULL,
    value    TEXT NOT NULL,
    as_of    TEXT NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (uscc, field)
) WITHOUT ROWID;
CREATE INDEX public_records_provider ON public_records (provider, uscc);
CREATE TABLE filings (
    filing_id            TEXT PRIMARY KEY,
    enterprise           TEXT NOT NULL,
    filing               BLOB NOT NULL,
    signature            BLOB NOT NULL,
    commitment_sha256    TEXT NOT NULL,
    signed_at            INTEGER NOT NULL,
    filed_ms             INTEGER NOT NULL,
    withdrawn_ms         INTEGER,
    withdrawal           BLOB,
    withdrawal_signature BLOB
);
CREATE INDEX filings_enterprise ON filings (enterprise, filed_ms);
"""

_POSTGRES_4 = """
CREATE TABLE public_batches (
    provider     TEXT NOT NULL,
    version      BIGINT NOT NULL,
    base_version BIGINT NOT NULL,
    period       TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    batch        BYTEA NOT NULL,
    signature    BYTEA NOT NULL,
    key_id       TEXT NOT NULL,
    records      BIGINT NOT NULL,
    changed      BIGINT NOT NULL,
    received_ms  BIGINT NOT NULL,
    PRIMARY KEY (provider, version)
);
CREATE TABLE public_records (
    uscc     TEXT NOT NULL,
    field    TEXT NOT NULL,
    provider TEXT NOT NULL,
    value    TEXT NOT NULL,
    as_of    TEXT NOT NULL,
    version  BIGINT NOT NULL,
    PRIMARY KEY (uscc, field)
);
CREATE INDEX public_records_provider ON public_records (provider, uscc);
CREATE TABLE filings (
    filing_id            TEXT PRIMARY KEY,
    enterprise           TEXT NOT NULL,
    filing               BYTEA NOT NULL,
    signature            BYTEA NOT NULL,
    commitment_sha256    TEXT NOT NULL,
    signed_at            BIGINT NOT NULL,
    filed_ms             BIGINT NOT NULL,
    withdrawn_ms         BIGINT,
    withdrawal           BYTEA,
    withdrawal_signature BYTEA
);
CREATE INDEX filings_enterprise ON filings (enterprise, filed_ms);
"""

# -- 6: access institutions (Issue 12 section 5) -------------------------------------
# ``institutions``: every institution the node admits, config-file ones imported
# at start (source 'config') and those onboarded at run time (source
# 'registered', their binding in ``parties``). Status, the latest security
# assessment and per-institution quota overrides (JSON) live here.
# ``institutions_version``: one counter bumped by every write to
# ``institutions``, so a replica learns of a suspension by reading one row.
# ``node_replicas``: each replica's heartbeat, so the per-replica rate limits
# divide by the number of live replicas (``xinrong.node.quotas``).

_SQLITE_6 = """
CREATE TABLE institutions (
    institution_id    TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL,
    status            TEXT NOT NULL,
    status_reason     TEXT NOT NULL,
    status_since_ms   INTEGER NOT NULL,
    suspended_by      TEXT NOT NULL,
    assessed_ms       INTEGER,
    assessment_result TEXT NOT NULL DEFAULT '',
    assessment_valid_until_ms INTEGER,
    assessor          TEXT NOT NULL DEFAULT '',
    quota_overrides   TEXT NOT NULL DEFAULT '{}',
    source            TEXT NOT NULL,
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE institutions_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO institutions_version (id, version) VALUES (1, 0);
CREATE INDEX audit_log_caller ON audit_log (caller_id, ts_ms);
CREATE TABLE node_replicas (
    replica_id TEXT PRIMARY KEY,
    seen_ms    INTEGER NOT NULL
) WITHOUT ROWID;
"""

_POSTGRES_6 = """
CREATE TABLE institutions (
    institution_id    TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL,
    status            TEXT NOT NULL,
    status_reason     TEXT NOT NULL,
    status_since_ms   BIGINT NOT NULL,
    suspended_by      TEXT NOT NULL,
    assessed_ms       BIGINT,
    assessment_result TEXT NOT NULL DEFAULT '',
    assessment_valid_until_ms BIGINT,
    assessor          TEXT NOT NULL DEFAULT '',
    quota_overrides   TEXT NOT NULL DEFAULT '{}',
    source            TEXT NOT NULL,
    created_ms        BIGINT NOT NULL,
    updated_ms        BIGINT NOT NULL
);
CREATE TABLE institutions_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO institutions_version (id, version) VALUES (1, 0);
CREATE INDEX audit_log_caller ON audit_log (caller_id, ts_ms);
CREATE TABLE node_replicas (
    replica_id TEXT PRIMARY KEY,
    seen_ms    BIGINT NOT NULL
);
"""

# -- 5: the event log of the push service (xinrong.node.events) -------------------
# ``events``: one row per event, ``seq`` the subscriber's cursor, the signed
# body and the node's signature stored as sent; the filter columns repeat
# what the body holds so a subscription reads by SQL. ``event_audience``:
# the institutions a restricted event goes to. Both append-only.

_SQLITE_5 = """
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    topic       TEXT NOT NULL,
    enterprise  TEXT NOT NULL,
    region      TEXT NOT NULL,
    industry    TEXT NOT NULL,
    restricted  INTEGER NOT NULL,
    appended_ms INTEGER NOT NULL,
    body        BLOB NOT NULL,
    signature   BLOB NOT NULL
);
CREATE TABLE event_audience (
    seq         INTEGER NOT NULL REFERENCES events (seq),
    institution TEXT NOT NULL,
    PRIMARY KEY (seq, institution)
) WITHOUT ROWID;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only');
END;
"""

_POSTGRES_5 = """
CREATE TABLE events (
    seq         BIGINT PRIMARY KEY,
    topic       TEXT NOT NULL,
    enterprise  TEXT NOT NULL,
    region      TEXT NOT NULL,
    industry    TEXT NOT NULL,
    restricted  INTEGER NOT NULL,
    appended_ms BIGINT NOT NULL,
    body        BYTEA NOT NULL,
    signature   BYTEA NOT NULL
);
CREATE TABLE event_audience (
    seq         BIGINT NOT NULL REFERENCES events (seq),
    institution TEXT NOT NULL,
    PRIMARY KEY (seq, institution)
);
CREATE FUNCTION xinrong_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only';
END;
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION xinrong_events_append_only();
"""

# -- 7: post-loan monitoring (issue 13 §4): watches, the agents' cursors, the banks' queue --
#
# The queue holds sealed updates only (routing metadata and a box the node
# cannot open). seq never repeats, even after acknowledged rows are deleted
# (AUTOINCREMENT / IDENTITY): a bank's cursor must never skip a new update.

_SQLITE_7 = """
CREATE TABLE watches (
    watch_id      TEXT PRIMARY KEY,
    institution   TEXT NOT NULL,
    enterprise    TEXT NOT NULL,
    consent_id    TEXT NOT NULL,
    providers     TEXT NOT NULL,
    claims        TEXT NOT NULL,
    valid_until   INTEGER NOT NULL,
    state         INTEGER NOT NULL,
    registered_ms INTEGER NOT NULL
);
CREATE INDEX watches_institution ON watches (institution);
CREATE TABLE watch_cursors (
    provider  TEXT PRIMARY KEY,
    after_seq INTEGER NOT NULL
);
CREATE TABLE alert_queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    institution TEXT NOT NULL,
    update_id   TEXT NOT NULL UNIQUE,
    watch_id    TEXT NOT NULL,
    provider    TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE INDEX alert_queue_institution ON alert_queue (institution, seq);
"""

_POSTGRES_7 = """
CREATE TABLE watches (
    watch_id      TEXT PRIMARY KEY,
    institution   TEXT NOT NULL,
    enterprise    TEXT NOT NULL,
    consent_id    TEXT NOT NULL,
    providers     TEXT NOT NULL,
    claims        TEXT NOT NULL,
    valid_until   BIGINT NOT NULL,
    state         INTEGER NOT NULL,
    registered_ms BIGINT NOT NULL
);
CREATE INDEX watches_institution ON watches (institution);
CREATE TABLE watch_cursors (
    provider  TEXT PRIMARY KEY,
    after_seq BIGINT NOT NULL
);
CREATE TABLE alert_queue (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    institution TEXT NOT NULL,
    update_id   TEXT NOT NULL UNIQUE,
    watch_id    TEXT NOT NULL,
    provider    TEXT NOT NULL,
    sealed      BYTEA NOT NULL,
    received_ms BIGINT NOT NULL
);
CREATE INDEX alert_queue_institution ON alert_queue (institution, seq);
"""

# -- 8: financing demands and the whitelist (xinrong.node.demands) ------------------
# ``demands``: the enterprise-signed demand as received, its state (1 active,
# 2 withdrawn; expiry is derived). ``whitelist``: what was pushed, per
# (enterprise, institution, demand), with the hash of the pushed payload, so
# a recomputation pushes only differences.

_SQLITE_8 = """
CREATE TABLE demands (
    demand_id     TEXT PRIMARY KEY,
    enterprise    TEXT NOT NULL,
    signed        BLOB NOT NULL,
    state         INTEGER NOT NULL,
    registered_ms INTEGER NOT NULL,
    withdrawn_ms  INTEGER
);
CREATE INDEX demands_enterprise ON demands (enterprise);
CREATE TABLE whitelist (
    enterprise     TEXT NOT NULL,
    institution    TEXT NOT NULL,
    demand_id      TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    valid_until    INTEGER NOT NULL,
    updated_ms     INTEGER NOT NULL,
    PRIMARY KEY (enterprise, institution, demand_id)
) WITHOUT ROWID;
"""

_POSTGRES_8 = """
CREATE TABLE demands (
    demand_id     TEXT PRIMARY KEY,
    enterprise    TEXT NOT NULL,
    signed        BYTEA NOT NULL,
    state         INTEGER NOT NULL,
    registered_ms BIGINT NOT NULL,
    withdrawn_ms  BIGINT
);
CREATE INDEX demands_enterprise ON demands (enterprise);
CREATE TABLE whitelist (
    enterprise     TEXT NOT NULL,
    institution    TEXT NOT NULL,
    demand_id      TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    valid_until    BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    PRIMARY KEY (enterprise, institution, demand_id)
);
"""

# -- 9: loan products, their encrypted match results and applications (xinrong.node.products) --
# The node keeps what it may: public products, and per (product, enterprise,
# provider) a signed Paillier ciphertext under the bank's key and a box
# sealed to the enterprise. No eligibility bit or failed-rule count exists here.

_SQLITE_9 = """
CREATE TABLE loan_products (
    product_id   TEXT PRIMARY KEY,
    bank_id      TEXT NOT NULL,
    signed       BLOB NOT NULL,
    published_ms INTEGER NOT NULL,
    withdrawn_ms INTEGER
);
CREATE INDEX loan_products_bank ON loan_products (bank_id);
CREATE TABLE match_contributions (
    product_id  TEXT NOT NULL,
    enterprise  TEXT NOT NULL,
    provider    TEXT NOT NULL,
    match_id    TEXT NOT NULL,
    contribution BLOB NOT NULL,
    feedback    BLOB NOT NULL,
    computed_ms INTEGER NOT NULL,
    PRIMARY KEY (product_id, enterprise, provider)
) WITHOUT ROWID;
CREATE INDEX match_contributions_enterprise ON match_contributions (enterprise);
CREATE TABLE match_sums (
    product_id  TEXT NOT NULL,
    enterprise  TEXT NOT NULL,
    match_id    TEXT NOT NULL,
    total       BLOB NOT NULL,
    computed_ms INTEGER NOT NULL,
    PRIMARY KEY (product_id, enterprise)
) WITHOUT ROWID;
CREATE TABLE product_applications (
    application_id TEXT PRIMARY KEY,
    bank_id        TEXT NOT NULL,
    product_id     TEXT NOT NULL,
    enterprise     TEXT NOT NULL,
    signed         BLOB NOT NULL,
    enterprise_binding BLOB NOT NULL,
    attestation    BLOB NOT NULL,
    received_ms    INTEGER NOT NULL
);
CREATE INDEX product_applications_bank ON product_applications (bank_id, received_ms);
"""

_POSTGRES_9 = """
CREATE TABLE loan_products (
    product_id   TEXT PRIMARY KEY,
    bank_id      TEXT NOT NULL,
    signed       BYTEA NOT NULL,
    published_ms BIGINT NOT NULL,
    withdrawn_ms BIGINT
);
CREATE INDEX loan_products_bank ON loan_products (bank_id);
CREATE TABLE match_contributions (
    product_id  TEXT NOT NULL,
    enterprise  TEXT NOT NULL,
    provider    TEXT NOT NULL,
    match_id    TEXT NOT NULL,
    contribution BYTEA NOT NULL,
    feedback    BYTEA NOT NULL,
    computed_ms BIGINT NOT NULL,
    PRIMARY KEY (product_id, enterprise, provider)
);
CREATE INDEX match_contributions_enterprise ON match_contributions (enterprise);
CREATE TABLE match_sums (
    product_id  TEXT NOT NULL,
    enterprise  TEXT NOT NULL,
    match_id    TEXT NOT NULL,
    total       BYTEA NOT NULL,
    computed_ms BIGINT NOT NULL,
    PRIMARY KEY (product_id, enterprise)
);
CREATE TABLE product_applications (
    application_id TEXT PRIMARY KEY,
    bank_id        TEXT NOT NULL,
    product_id     TEXT NOT NULL,
    enterprise     TEXT NOT NULL,
    signed         BYTEA NOT NULL,
    enterprise_binding BYTEA NOT NULL,
    attestation    BYTEA NOT NULL,
    received_ms    BIGINT NOT NULL
);
CREATE INDEX product_applications_bank ON product_applications (bank_id, received_ms);
"""

# -- 10: tiles of the Merkle tree (xinrong.tlog.store) ---------------------------------
# The complete subtrees again, grouped as C2SP tlog-tiles groups them (height
# 8), one row per full tile with its interior levels, so an inclusion proof
# reads one row per 8 levels instead of one per level. Written by the
# integrator as tiles fill; tiles of a tree older than this step are
# backfilled by it, and until then proofs read ``tlog_nodes`` as before.

_SQLITE_10 = """
CREATE TABLE tlog_tiles (
    tlevel INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    PRIMARY KEY (tlevel, idx)
);
CREATE TRIGGER tlog_tiles_no_update BEFORE UPDATE ON tlog_tiles
BEGIN
    SELECT RAISE(ABORT, 'tlog_tiles is append-only');
END;
"""

_POSTGRES_10 = """
CREATE TABLE tlog_tiles (
    tlevel INTEGER NOT NULL,
    idx    BIGINT NOT NULL,
    hashes BYTEA NOT NULL,
    PRIMARY KEY (tlevel, idx)
);
CREATE TRIGGER tlog_tiles_no_update BEFORE UPDATE OR DELETE ON tlog_tiles
    FOR EACH ROW EXECUTE FUNCTION xinrong_tlog_append_only();
"""

# -- 11: pause / resume pushes ---------------------------------------------------
# Pending pushes of an enterprise-signed pause or resume to each agent, like
# revocation_pushes (acked, attempts, backoff), plus the request itself: the
# consent row keeps only the state, and a node restart must not lose a push
# to an agent that is down (node.subject). One row per consent and provider:
# the newest change replaces an older one not yet delivered.

_SQLITE_11 = """
CREATE TABLE pause_pushes (
    consent_id      TEXT NOT NULL,
    provider        TEXT NOT NULL,
    request         BLOB NOT NULL,
    acked_ms        INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_reason     TEXT NOT NULL DEFAULT '',
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (consent_id, provider)
) WITHOUT ROWID;
"""

_POSTGRES_11 = """
CREATE TABLE pause_pushes (
    consent_id      TEXT NOT NULL,
    provider        TEXT NOT NULL,
    request         BYTEA NOT NULL,
    acked_ms        BIGINT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_reason     TEXT NOT NULL DEFAULT '',
    next_attempt_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (consent_id, provider)
);
"""

# -- 12: admissions in batches (PostgreSQL) ------------------------------------------
# ``xinrong_admit_many`` runs the admissions a replica has pending at one moment
# in one round trip: each is ``xinrong_admit`` in a transaction of its own,
# committed before the next starts (a procedure may COMMIT), so locking, order
# and every check are exactly a single admission's; an admission that fails
# (its own exception block) fails alone. With ``p_durable`` a last, synchronous
# COMMIT flushes the WAL of all of them before the procedure returns (the node
# passes false and awaits its shared flush barrier instead, so batches in flight
# share one flush). SQLite admits in process: nothing to do.

_SQLITE_12 = """
SELECT 1;
"""

_POSTGRES_12 = """
CREATE TYPE xinrong_admission AS (
    caller TEXT, request_id TEXT, now_ms BIGINT, cutoff_ms BIGINT, day INTEGER, budget BIGINT,
    early TEXT, shape TEXT,
    consents TEXT[], enterprises TEXT[], max_uses BIGINT[], max_day BIGINT[], pre TEXT[],
    role TEXT, caller_id TEXT, method TEXT, log_request_id TEXT, providers TEXT, fields TEXT,
    claims TEXT, log_enterprise TEXT, log_consent TEXT, log_enterprises TEXT[], log_consents TEXT[]
);
-- p_batch: a JSON array of xinrong_admission objects. p_out: a JSON array, one
-- element per admission in order: xinrong_admit's outcome (an array of text), or
-- {"error": SQLSTATE, "message": ...} for an admission that failed (rolled back).
CREATE PROCEDURE xinrong_admit_many(p_batch JSON, p_durable BOOLEAN, INOUT p_out JSONB DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_items JSON[] := ARRAY(SELECT json_array_elements(p_batch));
    v_item JSON;
    v_a xinrong_admission;
    v_res JSONB;
BEGIN
    p_out := '[]'::JSONB;
    FOREACH v_item IN ARRAY v_items LOOP
        BEGIN
            v_a := json_populate_record(NULL::xinrong_admission, v_item);
            v_res := to_jsonb(xinrong_admit(
                v_a.caller, v_a.request_id, v_a.now_ms, v_a.cutoff_ms, v_a.day, v_a.budget, v_a.early, v_a.shape,
                coalesce(v_a.consents, '{}'), coalesce(v_a.enterprises, '{}'), coalesce(v_a.max_uses, '{}'),
                coalesce(v_a.max_day, '{}'), coalesce(v_a.pre, '{}'), v_a.role, v_a.caller_id, v_a.method,
                v_a.log_request_id, v_a.providers, v_a.fields, v_a.claims, v_a.log_enterprise, v_a.log_consent,
                coalesce(v_a.log_enterprises, '{}'), coalesce(v_a.log_consents, '{}')));
        EXCEPTION WHEN OTHERS THEN
            v_res := jsonb_build_object('error', SQLSTATE, 'message', SQLERRM);
        END;
        COMMIT;
        p_out := p_out || jsonb_build_array(v_res);
    END LOOP;
    IF p_durable THEN
        PERFORM set_config('synchronous_commit', 'on', true), pg_logical_emit_message(true, 'xinrong', '');
        COMMIT;
    END IF;
END;
$$;
"""


# -- 13: a batch of admissions is one transaction --------------------------------
# Step 12 committed each admission of a batch on its own, inside an exception
# block (a subtransaction): per admission, a commit and a subtransaction, and
# at eight concurrent callers batches of one or two because every idle
# connection took the next admission. ``xinrong_admit_batch`` admits the whole
# batch in one transaction: it claims the batch's request ids (sorted), locks
# its consents (sorted) and enterprise-days (sorted) up front, in the order a
# single admission takes them (request id, consents, enterprises), so batches
# and single admissions on any replica never deadlock; then runs each
# admission in order exactly as ``xinrong_admit`` would and, with
# ``p_durable``, makes its statement's COMMIT synchronous: one round trip per
# batch, durability included. A function, not a procedure, so the node's
# statement is prepared once per connection (CALL is parsed every time). A
# batch that fails fails whole and leaves nothing behind (the node then retries
# its admissions one by one, so one admission's error stays its own). A batch
# of one is that admission as ``xinrong_admit`` runs it, with nothing up front.
# ``xinrong_admit_core`` is ``xinrong_admit`` with the request-id claim made
# optional; ``xinrong_admit`` becomes a call of it, so the rules live once.

_SQLITE_13 = """
SELECT 1;
"""

_POSTGRES_13 = """
CREATE FUNCTION xinrong_admit_core(
    p_fresh BOOLEAN, p_caller TEXT, p_request_id TEXT, p_now_ms BIGINT, p_cutoff_ms BIGINT, p_day INTEGER, p_budget BIGINT,
    p_early TEXT, p_shape TEXT,
    p_consents TEXT[], p_enterprises TEXT[], p_max_uses BIGINT[], p_max_day BIGINT[], p_pre TEXT[],
    p_role TEXT, p_caller_id TEXT, p_method TEXT, p_log_request_id TEXT, p_providers TEXT, p_fields TEXT,
    p_claims TEXT, p_log_enterprise TEXT, p_log_consent TEXT, p_log_enterprises TEXT[], p_log_consents TEXT[]
) RETURNS TEXT[] LANGUAGE plpgsql AS $$
DECLARE
    v_out TEXT[] := ARRAY['']::TEXT[];
    v_n INTEGER := coalesce(array_length(p_consents, 1), 0);
    v_state INTEGER;
    v_total BIGINT;
    v_today BIGINT;
    v_used BIGINT;
    v_reason TEXT;
    v_pre TEXT;
    v_fresh BOOLEAN := p_fresh;
BEGIN
    IF p_early <> '' THEN
        INSERT INTO audit_pending (ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id,
                                   providers, fields, claims_sha256, decision, reason)
        VALUES (p_now_ms, p_role, p_caller_id, p_method, p_log_request_id, p_log_enterprise, p_log_consent,
                p_providers, p_fields, p_claims, 'REFUSED', p_early);
        RETURN ARRAY[p_early];
    END IF;
    -- 4. The request id, per caller: an id older than the window is a new id again.
    -- p_fresh NULL: claim the id here; TRUE / FALSE: the batch claimed it (xinrong_admit_batch).
    IF v_fresh IS NULL THEN
        INSERT INTO replay_ids AS r (caller, request_id, seen_ms) VALUES (p_caller, p_request_id, p_now_ms)
            ON CONFLICT (caller, request_id) DO UPDATE SET seen_ms = excluded.seen_ms WHERE r.seen_ms < p_cutoff_ms;
        v_fresh := FOUND;
    END IF;
    IF NOT v_fresh THEN
        INSERT INTO audit_pending (ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id,
                                   providers, fields, claims_sha256, decision, reason)
        VALUES (p_now_ms, p_role, p_caller_id, p_method, p_log_request_id, p_log_enterprise, p_log_consent,
                p_providers, p_fields, p_claims, 'REFUSED', 'REQUEST_REPLAYED');
        RETURN ARRAY['REQUEST_REPLAYED'];
    END IF;
    IF p_shape <> '' THEN
        INSERT INTO audit_pending (ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id,
                                   providers, fields, claims_sha256, decision, reason)
        VALUES (p_now_ms, p_role, p_caller_id, p_method, p_log_request_id, p_log_enterprise, p_log_consent,
                p_providers, p_fields, p_claims, 'REFUSED', p_shape);
        RETURN ARRAY[p_shape];
    END IF;
    -- Lock what the subjects may use, in one global order: consents, then enterprises.
    PERFORM 1 FROM consents WHERE consent_id = ANY (p_consents) ORDER BY consent_id FOR UPDATE;
    INSERT INTO enterprise_daily_uses (enterprise, day, uses)
        SELECT DISTINCT e, p_day, 0 FROM unnest(p_enterprises) AS e ORDER BY 1
        ON CONFLICT (enterprise, day) DO NOTHING;
    PERFORM 1 FROM enterprise_daily_uses WHERE day = p_day AND enterprise = ANY (p_enterprises)
        ORDER BY enterprise FOR UPDATE;
    FOR i IN 1 .. v_n LOOP
        v_pre := p_pre[i];
        v_reason := '';
        IF left(v_pre, 2) = 'E:' THEN
            v_reason := substr(v_pre, 3);
        ELSE
            SELECT state INTO v_state FROM consents WHERE consent_id = p_consents[i];
            IF NOT FOUND THEN
                v_reason := 'ACCESS_DENIED';
            ELSIF v_state = 3 THEN
                v_reason := 'CONSENT_REVOKED';
            ELSIF v_state = 2 THEN
                v_reason := 'CONSENT_PAUSED';
            ELSIF left(v_pre, 2) = 'L:' THEN
                v_reason := substr(v_pre, 3);
            ELSE
                SELECT coalesce(sum(uses), 0), coalesce(sum(uses) FILTER (WHERE day = p_day), 0)
                    INTO v_total, v_today FROM consent_daily_uses WHERE consent_id = p_consents[i];
                SELECT uses INTO v_used FROM enterprise_daily_uses WHERE enterprise = p_enterprises[i] AND day = p_day;
                IF v_total >= p_max_uses[i] THEN
                    v_reason := 'CONSENT_USES_EXHAUSTED';
                ELSIF p_max_day[i] > 0 AND v_today >= p_max_day[i] THEN
                    v_reason := 'CONSENT_DAILY_LIMIT';
                ELSIF v_used >= p_budget THEN
                    v_reason := 'ENTERPRISE_BUDGET_EXHAUSTED';
                ELSE
                    INSERT INTO consent_daily_uses AS u (consent_id, day, uses) VALUES (p_consents[i], p_day, 1)
                        ON CONFLICT (consent_id, day) DO UPDATE SET uses = u.uses + 1;
                    UPDATE enterprise_daily_uses SET uses = uses + 1 WHERE enterprise = p_enterprises[i] AND day = p_day;
                END IF;
            END IF;
        END IF;
        INSERT INTO audit_pending (ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id,
                                   providers, fields, claims_sha256, decision, reason)
        VALUES (p_now_ms, p_role, p_caller_id, p_method, p_log_request_id, p_log_enterprises[i], p_log_consents[i],
                p_providers, p_fields, p_claims, CASE WHEN v_reason = '' THEN 'ALLOWED' ELSE 'REFUSED' END, v_reason);
        v_out := v_out || v_reason;
    END LOOP;
    RETURN v_out;
END;
$$;

CREATE OR REPLACE FUNCTION xinrong_admit(
    p_caller TEXT, p_request_id TEXT, p_now_ms BIGINT, p_cutoff_ms BIGINT, p_day INTEGER, p_budget BIGINT,
    p_early TEXT, p_shape TEXT,
    p_consents TEXT[], p_enterprises TEXT[], p_max_uses BIGINT[], p_max_day BIGINT[], p_pre TEXT[],
    p_role TEXT, p_caller_id TEXT, p_method TEXT, p_log_request_id TEXT, p_providers TEXT, p_fields TEXT,
    p_claims TEXT, p_log_enterprise TEXT, p_log_consent TEXT, p_log_enterprises TEXT[], p_log_consents TEXT[]
) RETURNS TEXT[] LANGUAGE sql AS $$
    SELECT xinrong_admit_core(NULL, p_caller, p_request_id, p_now_ms, p_cutoff_ms, p_day, p_budget, p_early, p_shape, p_consents, p_enterprises, p_max_uses, p_max_day, p_pre, p_role, p_caller_id, p_method, p_log_request_id, p_providers, p_fields, p_claims, p_log_enterprise, p_log_consent, p_log_enterprises, p_log_consents);
$$;

-- p_batch: a JSON array of xinrong_admission objects (step 12). p_out: a JSON
-- array of each one's outcome, in order.
CREATE FUNCTION xinrong_admit_batch(p_batch JSON, p_durable BOOLEAN) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    p_out JSONB;
    v_items xinrong_admission[] := ARRAY(
        SELECT json_populate_record(NULL::xinrong_admission, t.v)
        FROM json_array_elements(p_batch) WITH ORDINALITY AS t(v, n) ORDER BY t.n);
    v_a xinrong_admission;
    v_key RECORD;
    v_k TEXT;
    v_fresh TEXT[] := '{}';
    v_flag BOOLEAN;
    -- A batch of one claims nothing up front: xinrong_admit's own claims, in the same order.
    v_alone BOOLEAN := coalesce(array_length(v_items, 1), 0) <= 1;
BEGIN
    IF NOT v_alone THEN
        -- 1. Request ids, sorted (the first of a batch's duplicates, in batch order, may be fresh).
        FOR v_key IN
            SELECT DISTINCT ON (a.caller, a.request_id) a.caller, a.request_id, a.now_ms, a.cutoff_ms
            FROM unnest(v_items) WITH ORDINALITY AS a
            WHERE a.early = ''
            ORDER BY a.caller, a.request_id, a.ordinality
        LOOP
            INSERT INTO replay_ids AS r (caller, request_id, seen_ms) VALUES (v_key.caller, v_key.request_id, v_key.now_ms)
                ON CONFLICT (caller, request_id) DO UPDATE SET seen_ms = excluded.seen_ms WHERE r.seen_ms < v_key.cutoff_ms;
            IF FOUND THEN
                v_fresh := v_fresh || json_build_array(v_key.caller, v_key.request_id)::TEXT;
            END IF;
        END LOOP;
        -- 2. Consents, sorted; 3. enterprise-days, sorted: every lock the batch's admissions take, up front.
        PERFORM 1 FROM consents
            WHERE consent_id IN (SELECT c FROM unnest(v_items) AS a, unnest(a.consents) AS c WHERE a.early = '')
            ORDER BY consent_id FOR UPDATE;
        INSERT INTO enterprise_daily_uses (enterprise, day, uses)
            SELECT DISTINCT e, a.day, 0 FROM unnest(v_items) AS a, unnest(a.enterprises) AS e WHERE a.early = ''
            ORDER BY 2, 1
            ON CONFLICT (enterprise, day) DO NOTHING;
        PERFORM 1 FROM enterprise_daily_uses AS d
            WHERE (d.day, d.enterprise) IN (
                SELECT a.day, e FROM unnest(v_items) AS a, unnest(a.enterprises) AS e WHERE a.early = '')
            ORDER BY d.day, d.enterprise FOR UPDATE;
    END IF;
    -- 4. Each admission, in order, as if alone.
    p_out := '[]'::JSONB;
    FOREACH v_a IN ARRAY v_items LOOP
        v_flag := CASE WHEN v_alone THEN NULL ELSE FALSE END;
        IF v_a.early = '' AND NOT v_alone THEN
            v_k := json_build_array(v_a.caller, v_a.request_id)::TEXT;
            IF v_k = ANY (v_fresh) THEN
                v_flag := TRUE;
                v_fresh := array_remove(v_fresh, v_k);
            END IF;
        END IF;
        p_out := p_out || jsonb_build_array(to_jsonb(xinrong_admit_core(
            v_flag, v_a.caller, v_a.request_id, v_a.now_ms, v_a.cutoff_ms, v_a.day, v_a.budget, v_a.early, v_a.shape,
            coalesce(v_a.consents, '{}'), coalesce(v_a.enterprises, '{}'), coalesce(v_a.max_uses, '{}'),
            coalesce(v_a.max_day, '{}'), coalesce(v_a.pre, '{}'), v_a.role, v_a.caller_id, v_a.method,
            v_a.log_request_id, v_a.providers, v_a.fields, v_a.claims, v_a.log_enterprise, v_a.log_consent,
            coalesce(v_a.log_enterprises, '{}'), coalesce(v_a.log_consents, '{}'))));
    END LOOP;
    IF p_durable THEN  -- the statement's COMMIT waits for the flush of its WAL (and all before it)
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
    RETURN p_out;
END;
$$;
"""

# -- 14: a batch's admissions without a function call each ---------------------------
# Step 13 ran each admission of a batch through ``xinrong_admit_core``: per
# admission a PL/pgSQL call of 25 arguments and ten statements, three of them
# re-taking locks the batch had already taken up front. On a 2-core box that
# was ~170 us of server CPU per admission in batches of eight. Here the batch
# function holds the rules itself and runs only what an admission needs once
# its locks are held: one read of the consent's state and uses, one
# conditional increment of the enterprise-day (``uses < budget``, so the check
# and the increment are one statement) and one upsert of the consent-day; the
# batch's audit events go in one INSERT at the end, in order. Outcomes, lock
# order (request ids, consents, enterprise-days, each sorted) and the events
# written are step 13's. ``xinrong_admit`` (one admission) becomes a batch of
# one, so the rules live once; ``xinrong_admit_core`` goes.

_SQLITE_14 = """
SELECT 1;
"""

_POSTGRES_14 = """
CREATE OR REPLACE FUNCTION xinrong_admit_batch(p_batch JSON, p_durable BOOLEAN) RETURNS JSONB
LANGUAGE plpgsql AS $$
DECLARE
    v_items xinrong_admission[] := ARRAY(
        SELECT ROW(t.caller, t.request_id, t.now_ms, t.cutoff_ms, t.day, t.budget, t.early, t.shape, t.consents,
                   t.enterprises, t.max_uses, t.max_day, t.pre, t.role, t.caller_id, t.method, t.log_request_id,
                   t.providers, t.fields, t.claims, t.log_enterprise, t.log_consent, t.log_enterprises,
                   t.log_consents)::xinrong_admission
        FROM json_populate_recordset(NULL::xinrong_admission, p_batch) WITH ORDINALITY AS t ORDER BY t.ordinality);
    v_a xinrong_admission;
    v_key RECORD;
    v_k TEXT;
    v_flag BOOLEAN;
    v_first TEXT[] := '{}';
    v_fresh TEXT[] := '{}';
    v_outs TEXT[] := '{}';
    v_out TEXT[];
    v_i INTEGER := 0;
    v_n INTEGER;
    v_state INTEGER;
    v_total BIGINT;
    v_today BIGINT;
    v_reason TEXT;
    v_pre TEXT;
    -- The audit events, in order: the admission each belongs to, and what differs per event.
    e_item INTEGER[] := '{}';
    e_ent TEXT[] := '{}';
    e_con TEXT[] := '{}';
    e_reason TEXT[] := '{}';
BEGIN
    -- 1. Request ids, sorted, each for its first admission in the batch.
    FOR v_key IN
        SELECT DISTINCT ON (a.caller, a.request_id) a.caller, a.request_id, a.now_ms, a.cutoff_ms
        FROM unnest(v_items) WITH ORDINALITY AS a
        WHERE a.early = ''
        ORDER BY a.caller, a.request_id, a.ordinality
    LOOP
        INSERT INTO replay_ids AS r (caller, request_id, seen_ms) VALUES (v_key.caller, v_key.request_id, v_key.now_ms)
            ON CONFLICT (caller, request_id) DO UPDATE SET seen_ms = excluded.seen_ms WHERE r.seen_ms < v_key.cutoff_ms;
        v_k := json_build_array(v_key.caller, v_key.request_id)::TEXT;
        v_first := v_first || v_k;
        IF FOUND THEN
            v_fresh := v_fresh || v_k;
        END IF;
    END LOOP;
    -- 2. Consents, sorted; 3. enterprise-days, sorted: every lock the batch's admissions take, up front.
    PERFORM 1 FROM consents
        WHERE consent_id IN (SELECT c FROM unnest(v_items) AS a, unnest(a.consents) AS c WHERE a.early = '')
        ORDER BY consent_id FOR UPDATE;
    INSERT INTO enterprise_daily_uses (enterprise, day, uses)
        SELECT DISTINCT e, a.day, 0 FROM unnest(v_items) AS a, unnest(a.enterprises) AS e WHERE a.early = ''
        ORDER BY 2, 1
        ON CONFLICT (enterprise, day) DO NOTHING;
    PERFORM 1 FROM enterprise_daily_uses AS d
        WHERE (d.day, d.enterprise) IN (
            SELECT a.day, e FROM unnest(v_items) AS a, unnest(a.enterprises) AS e WHERE a.early = '')
        ORDER BY d.day, d.enterprise FOR UPDATE;
    -- 4. Each admission, in order, with its locks held: early refusal, replay, shape, then per consent.
    FOREACH v_a IN ARRAY v_items LOOP
        v_i := v_i + 1;
        IF v_a.early <> '' THEN
            v_out := ARRAY[v_a.early];
        ELSE
            v_k := json_build_array(v_a.caller, v_a.request_id)::TEXT;
            IF v_k = ANY (v_first) THEN  -- the id's first admission in the batch: claimed up front
                v_first := array_remove(v_first, v_k);
                v_flag := v_k = ANY (v_fresh);
            ELSE  -- a later one: claimed now, as if alone (the row is this transaction's already)
                INSERT INTO replay_ids AS r (caller, request_id, seen_ms) VALUES (v_a.caller, v_a.request_id, v_a.now_ms)
                    ON CONFLICT (caller, request_id) DO UPDATE SET seen_ms = excluded.seen_ms WHERE r.seen_ms < v_a.cutoff_ms;
                v_flag := FOUND;
            END IF;
            IF NOT v_flag THEN
                v_out := ARRAY['REQUEST_REPLAYED'];
            ELSIF v_a.shape <> '' THEN
                v_out := ARRAY[v_a.shape];
            END IF;
        END IF;
        IF v_out IS NOT NULL THEN
            e_item := e_item || v_i; e_ent := e_ent || v_a.log_enterprise; e_con := e_con || v_a.log_consent;
            e_reason := e_reason || v_out[1];
            v_outs := v_outs || to_jsonb(v_out)::TEXT;
            v_out := NULL;
            CONTINUE;
        END IF;
        v_out := ARRAY['']::TEXT[];
        v_n := coalesce(array_length(v_a.consents, 1), 0);
        FOR i IN 1 .. v_n LOOP
            v_pre := v_a.pre[i];
            v_reason := '';
            IF left(v_pre, 2) = 'E:' THEN
                v_reason := substr(v_pre, 3);
            ELSE
                SELECT c.state, coalesce(sum(u.uses), 0), coalesce(sum(u.uses) FILTER (WHERE u.day = v_a.day), 0)
                    INTO v_state, v_total, v_today
                    FROM consents AS c LEFT JOIN consent_daily_uses AS u ON u.consent_id = c.consent_id
                    WHERE c.consent_id = v_a.consents[i] GROUP BY c.state;
                IF NOT FOUND THEN
                    v_reason := 'ACCESS_DENIED';
                ELSIF v_state = 3 THEN
                    v_reason := 'CONSENT_REVOKED';
                ELSIF v_state = 2 THEN
                    v_reason := 'CONSENT_PAUSED';
                ELSIF left(v_pre, 2) = 'L:' THEN
                    v_reason := substr(v_pre, 3);
                ELSIF v_total >= v_a.max_uses[i] THEN
                    v_reason := 'CONSENT_USES_EXHAUSTED';
                ELSIF v_a.max_day[i] > 0 AND v_today >= v_a.max_day[i] THEN
                    v_reason := 'CONSENT_DAILY_LIMIT';
                ELSE
                    UPDATE enterprise_daily_uses SET uses = uses + 1
                        WHERE enterprise = v_a.enterprises[i] AND day = v_a.day AND uses < v_a.budget;
                    IF NOT FOUND THEN
                        v_reason := 'ENTERPRISE_BUDGET_EXHAUSTED';
                    ELSE
                        INSERT INTO consent_daily_uses AS u (consent_id, day, uses) VALUES (v_a.consents[i], v_a.day, 1)
                            ON CONFLICT (consent_id, day) DO UPDATE SET uses = u.uses + 1;
                    END IF;
                END IF;
            END IF;
            e_item := e_item || v_i; e_ent := e_ent || v_a.log_enterprises[i]; e_con := e_con || v_a.log_consents[i];
            e_reason := e_reason || v_reason;
            v_out := v_out || v_reason;
        END LOOP;
        v_outs := v_outs || to_jsonb(v_out)::TEXT;
        v_out := NULL;
    END LOOP;
    -- 5. The audit events, in order, in one statement.
    INSERT INTO audit_pending (ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id,
                               providers, fields, claims_sha256, decision, reason)
    SELECT (v_items[e.item]).now_ms, (v_items[e.item]).role, (v_items[e.item]).caller_id, (v_items[e.item]).method,
           (v_items[e.item]).log_request_id, e.ent, e.con, (v_items[e.item]).providers, (v_items[e.item]).fields,
           (v_items[e.item]).claims, CASE WHEN e.reason = '' THEN 'ALLOWED' ELSE 'REFUSED' END, e.reason
    FROM unnest(e_item, e_ent, e_con, e_reason) WITH ORDINALITY AS e(item, ent, con, reason, n)
    ORDER BY e.n;
    IF p_durable THEN  -- the statement's COMMIT waits for the flush of its WAL (and all before it)
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
    RETURN ('[' || array_to_string(v_outs, ',') || ']')::JSONB;
END;
$$;

CREATE OR REPLACE FUNCTION xinrong_admit(
    p_caller TEXT, p_request_id TEXT, p_now_ms BIGINT, p_cutoff_ms BIGINT, p_day INTEGER, p_budget BIGINT,
    p_early TEXT, p_shape TEXT,
    p_consents TEXT[], p_enterprises TEXT[], p_max_uses BIGINT[], p_max_day BIGINT[], p_pre TEXT[],
    p_role TEXT, p_caller_id TEXT, p_method TEXT, p_log_request_id TEXT, p_providers TEXT, p_fields TEXT,
    p_claims TEXT, p_log_enterprise TEXT, p_log_consent TEXT, p_log_enterprises TEXT[], p_log_consents TEXT[]
) RETURNS TEXT[] LANGUAGE sql AS $$
    SELECT ARRAY(SELECT jsonb_array_elements_text(xinrong_admit_batch(json_build_array(row_to_json(ROW(
        p_caller, p_request_id, p_now_ms, p_cutoff_ms, p_day, p_budget, p_early, p_shape, p_consents, p_enterprises,
        p_max_uses, p_max_day, p_pre, p_role, p_caller_id, p_method, p_log_request_id, p_providers, p_fields, p_claims,
        p_log_enterprise, p_log_consent, p_log_enterprises, p_log_consents)::xinrong_admission)), FALSE) -> 0));
$$;

DROP FUNCTION xinrong_admit_core(
    BOOLEAN, TEXT, TEXT, BIGINT, BIGINT, INTEGER, BIGINT, TEXT, TEXT, TEXT[], TEXT[], BIGINT[], BIGINT[], TEXT[],
    TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT[], TEXT[]);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _SQLITE_1, _POSTGRES_1),
    Migration(2, "replay ids per caller", _SQLITE_2, _POSTGRES_2),
    Migration(3, "Merkle tree audit log", _SQLITE_3, _POSTGRES_3),
    Migration(4, "public records and voluntary filings", _SQLITE_4, _POSTGRES_4),
    Migration(5, "event log", _SQLITE_5, _POSTGRES_5),
    Migration(6, "access institutions", _SQLITE_6, _POSTGRES_6),
    Migration(7, "post-loan watches and alert queue", _SQLITE_7, _POSTGRES_7),
    Migration(8, "financing demands and the whitelist", _SQLITE_8, _POSTGRES_8),
    Migration(9, "loan products and matching", _SQLITE_9, _POSTGRES_9),
    Migration(10, "Merkle tree tiles", _SQLITE_10, _POSTGRES_10),
    Migration(11, "pause and resume pushes", _SQLITE_11, _POSTGRES_11),
    Migration(12, "admissions in batches", _SQLITE_12, _POSTGRES_12),
    Migration(13, "a batch of admissions is one transaction", _SQLITE_13, _POSTGRES_13),
    Migration(14, "a batch's admissions without a function call each", _SQLITE_14, _POSTGRES_14),
)
LATEST = MIGRATIONS[-1].version

__all__ = ["LATEST", "MIGRATIONS", "Migration"]
