-- kmsd schema 1: every record the redb store holds, as its versioned
-- encoding (bytea, exactly the bytes redb stores, MACs included), plus the
-- columns that queries select or order on. A record is the truth; a column
-- beside it is an index, written in the same statement.
--
-- Read-modify-write guards (what the seam's writers must use):
--   meta            SELECT ... FOR UPDATE on the row (hs256 max exp, migration
--                   state, pause flag), then UPDATE.
--   keysets.version conditional UPDATE ... WHERE version = $seen: every change
--                   to a keyset's keys bumps it, so "exactly one active key"
--                   is checked against the ring the writer read.
--   api_keys, identities, sessions: conditional UPDATE on `version`
--                   (refresh single use: WHERE sid = $1 AND version = $seen).
--   audit_head      SELECT ... FOR UPDATE (one chain, see audit.rs).
--   leases          INSERT ... ON CONFLICT DO UPDATE WHERE expired (lease.rs).

-- Small named values: the wrapped vault data key (bare), sealed MetaValues
-- (record_macs, migration state, hs256 max exp, rotation pause, cool-down).
CREATE TABLE meta (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- One row per keyset: the fence for changes to its keys.
CREATE TABLE keysets (
    name    text PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0
);

-- kid -> sealed KeyRecord. Key state is a function of time over the
-- record's schedule, so it is not a column.
CREATE TABLE keys (
    kid        text PRIMARY KEY,
    keyset     text NOT NULL,
    record     bytea NOT NULL
);
CREATE INDEX keys_by_keyset ON keys (keyset);

-- API key id -> sealed ApiKeyRecord; key_hash replaces redb's api_key_hashes.
CREATE TABLE api_keys (
    id       text PRIMARY KEY,
    org_id   text NOT NULL,
    key_hash text NOT NULL UNIQUE,
    version  bigint NOT NULL DEFAULT 1,
    record   bytea NOT NULL
);
CREATE INDEX api_keys_by_org ON api_keys (org_id, id);

-- identity id -> sealed IdentityRecord. Names are unique per org (the
-- redb store checks it in the write transaction; here the index does).
CREATE TABLE identities (
    id      text PRIMARY KEY,
    org_id  text NOT NULL,
    name    text NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    record  bytea NOT NULL,
    UNIQUE (org_id, name)
);

-- sid -> SessionRecord.
CREATE TABLE sessions (
    sid         text PRIMARY KEY,
    identity_id text NOT NULL,
    expires_at  bigint NOT NULL,
    revoked     boolean NOT NULL DEFAULT false,
    version     bigint NOT NULL DEFAULT 1,
    record      bytea NOT NULL
);
CREATE INDEX sessions_by_identity ON sessions (identity_id) WHERE NOT revoked;
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_revoked ON sessions (sid) WHERE revoked;

-- jti -> IssuedToken (written by group commit, one multi-row INSERT a batch).
CREATE TABLE issued_tokens (
    jti    text PRIMARY KEY,
    sid    text NOT NULL,
    exp    bigint NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX issued_tokens_by_exp ON issued_tokens (exp);

-- revoked jti -> the token's exp (unix seconds), for garbage collection.
CREATE TABLE revoked_tokens (
    jti text PRIMARY KEY,
    exp bigint NOT NULL
);
CREATE INDEX revoked_tokens_by_exp ON revoked_tokens (exp);

-- seq -> hash-chained AuditEntry. The head row is the chain's lock.
CREATE TABLE audit (
    seq   bigint PRIMARY KEY CHECK (seq > 0),
    entry bytea NOT NULL
);
CREATE TABLE audit_head (
    id  smallint PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL
);
INSERT INTO audit_head (id, seq) VALUES (1, 0);

-- Leader leases: holder, expiry (server time), fencing epoch.
CREATE TABLE leases (
    name       text PRIMARY KEY,
    holder     text,
    epoch      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);

-- The change feed: what changed (kind, id); NOTIFY carries the same at commit.
-- seq is allocation order, not commit order: a reader that missed
-- notifications resyncs everything rather than trusting seq alone.
CREATE TABLE changes (
    seq  bigserial PRIMARY KEY,
    kind text NOT NULL,
    id   text NOT NULL,
    at   timestamptz NOT NULL DEFAULT now()
);
