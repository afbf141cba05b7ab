-- GitHub sign-in: members are found by GitHub's numeric user id (a rename keeps the account),
-- browser sessions, and sign-in flows in progress (web state, pending confirmations, device codes).
--
-- Same portable dialect as 0001: TEXT and BIGINT only, times in microseconds since the Unix epoch.

ALTER TABLE users ADD COLUMN github_id BIGINT;          -- GitHub's numeric user id; NULL for members added by an admin
ALTER TABLE users ADD COLUMN age_confirmed_at BIGINT;   -- when the member confirmed they are 18 or older
CREATE UNIQUE INDEX users_by_github_id ON users (github_id);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,                      -- UUID; never shown to the browser
    token_hash   TEXT NOT NULL UNIQUE,                  -- hex SHA-256 of the cookie's token; the token is never stored
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,                         -- what state-changing requests must echo in x-csrf-token
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE sign_in_flows (
    id                   TEXT PRIMARY KEY,              -- hex SHA-256 of the flow's secret (state, confirmation or device token)
    kind                 TEXT NOT NULL,                 -- web | confirm | device
    created_at           BIGINT NOT NULL,
    expires_at           BIGINT NOT NULL,
    next_path            TEXT,                          -- web and confirm: the local path to return to
    github_id            BIGINT,                        -- confirm, device: the GitHub identity parked until the member confirms
    github_login         TEXT,
    github_email         TEXT,
    device_authorization TEXT,                          -- device: GitHub's device authorization answer (JSON)
    poll_interval        BIGINT,                        -- device: seconds between polls of GitHub
    last_polled_at       BIGINT                         -- device: when GitHub was last polled
);
CREATE INDEX sign_in_flows_by_github_id ON sign_in_flows (github_id);
CREATE INDEX sign_in_flows_by_expiry ON sign_in_flows (expires_at);
