-- Audio and images of records (issue 19): uploaded audio, speech, generated images.
--
-- The one column that is not TEXT or BIGINT: `data` holds the bytes, as BLOB on SQLite and BYTEA on
-- PostgreSQL (the migration text names it BINARY_TYPE, replaced per backend when it is applied).
-- A blob belongs to one record and goes with it; blobs older than the retention period are removed
-- (the record keeps saying what there was).

CREATE TABLE blobs (
    id           TEXT PRIMARY KEY,
    record_id    TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,   -- µs since the epoch
    data         BINARY_TYPE NOT NULL
);
CREATE INDEX blobs_by_record ON blobs (record_id);
CREATE INDEX blobs_by_age ON blobs (created_at);
