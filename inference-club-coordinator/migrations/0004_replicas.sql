-- Several coordinator replicas on one database (cluster mode, PostgreSQL).
--
-- Each replica renews its row while it runs; a replica whose row was not renewed within the lease is
-- dead, and the replica that notices fails the records it was handling (records.replica).
-- A single coordinator (no cluster) leaves records.replica NULL and the table empty.

CREATE TABLE replicas (
    id          TEXT PRIMARY KEY,
    started_at  BIGINT NOT NULL,   -- µs since the epoch
    seen_at     BIGINT NOT NULL    -- µs since the epoch; renewed every second or so
);

ALTER TABLE records ADD COLUMN replica TEXT;   -- the replica that accepted the request, or NULL
