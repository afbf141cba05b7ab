-- The coordinator's store: members, API keys, providers and their manifest history, request records.
--
-- One schema for SQLite and PostgreSQL: only TEXT and BIGINT columns, ids are UUIDs in text form,
-- times are BIGINT microseconds since the Unix epoch (UTC), JSON documents are TEXT.

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    handle             TEXT NOT NULL,
    handle_key         TEXT NOT NULL UNIQUE,      -- lower-case handle: handles are unique case-insensitively
    email              TEXT,
    created_at         BIGINT NOT NULL,
    default_visibility TEXT NOT NULL DEFAULT 'public',
    terms_accepted_at  BIGINT
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,                   -- non-secret, shown in listings, used for lookup
    secret_hash  TEXT NOT NULL,                   -- hex SHA-256 of the whole secret; the secret is never stored
    scopes       TEXT NOT NULL,                   -- comma list: inference,provider,account
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_by_prefix ON api_keys (prefix);
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);

CREATE TABLE providers (
    id          TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    revision    BIGINT NOT NULL,                  -- latest revision; 0 only inside the transaction creating it
    manifest    TEXT NOT NULL,                    -- canonical JSON of the latest revision
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    UNIQUE (operator_id, name)
);

CREATE TABLE provider_revisions (
    provider_id TEXT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    revision    BIGINT NOT NULL,
    manifest    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (provider_id, revision)
);

CREATE TABLE records (
    id              TEXT PRIMARY KEY,             -- UUIDv7: sorts by arrival; the keyset of listings
    consumer_id     TEXT REFERENCES users (id) ON DELETE CASCADE,
    consumer        TEXT,                         -- handle at acceptance
    operator_id     TEXT REFERENCES users (id) ON DELETE SET NULL,
    operator        TEXT,                         -- handle of the serving operator
    provider        TEXT,                         -- serving provider's name
    model_requested TEXT NOT NULL,
    status          TEXT NOT NULL,
    visibility      TEXT NOT NULL,                -- the truth; the copy inside body is overridden on read
    received_at     BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    body            TEXT NOT NULL                 -- the whole InferenceRecord as JSON
);
CREATE INDEX records_by_consumer ON records (consumer_id, id);
CREATE INDEX records_by_visibility ON records (visibility, id);
CREATE INDEX records_by_operator ON records (operator_id, provider, id);
CREATE INDEX records_by_model ON records (model_requested, id);
CREATE INDEX records_by_status ON records (status, id);
CREATE INDEX records_by_received ON records (received_at);
