-- Files and batches (issue 20): the OpenAI Files and Batch APIs, run on members' nodes.
--
-- A file is a member's upload (`purpose` batch) or a batch's output or error file (`batch_output`),
-- its bytes in `data` (BLOB on SQLite, BYTEA on PostgreSQL: BINARY_TYPE is replaced per backend).
-- A batch keeps its OpenAI object as JSON in `body`; its lines are rows of `batch_lines`, which the
-- coordinators claim (state `running`, with a lease they renew) and answer once (state `done`, the
-- output or error line in `result`). A line whose holder died is claimed again when its lease ends.
-- `idempotency_keys` remembers the first answer to a POST sent with an `Idempotency-Key`.

CREATE TABLE files (
    id          TEXT PRIMARY KEY,              -- file-<hex>
    owner_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL,
    filename    TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,               -- µs since the epoch
    data        BINARY_TYPE NOT NULL
);
CREATE INDEX files_by_owner ON files (owner_id, id);

CREATE TABLE batches (
    id          TEXT PRIMARY KEY,              -- batch_<hex>
    owner_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,               -- µs since the epoch
    body        TEXT NOT NULL                  -- the Batch object as JSON
);
CREATE INDEX batches_by_owner ON batches (owner_id, id);
CREATE INDEX batches_by_status ON batches (status);

CREATE TABLE batch_lines (
    batch_id    TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    line_no     BIGINT NOT NULL,               -- 1-based line of the input file
    custom_id   TEXT NOT NULL,
    request     TEXT NOT NULL,                 -- the line's `body` as JSON
    state       TEXT NOT NULL,                 -- pending | running | done
    holder      TEXT,                          -- who claimed it (running)
    lease_until BIGINT,                        -- µs since the epoch (running)
    attempts    BIGINT NOT NULL DEFAULT 0,
    ok          BIGINT,                        -- done: 1 answered with 2xx, 0 not
    result      TEXT,                          -- done: the output or error line as JSON
    PRIMARY KEY (batch_id, line_no)
);
CREATE INDEX batch_lines_by_state ON batch_lines (state, batch_id);

CREATE TABLE idempotency_keys (
    owner_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    route        TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       BIGINT NOT NULL,
    response     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (owner_id, key)
);
