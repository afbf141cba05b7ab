//! Browser sessions and sign-in flows in progress.
//!
//! A session's token lives only in the member's cookie: the store keeps its SHA-256 (the token
//! has 256 random bits, so a fast hash is enough), beside a CSRF token that state-changing
//! requests made with the cookie must echo. A sign-in flow (a web `state`, a confirmation
//! waiting for the member, a device code) is likewise found by the hash of its secret, expires,
//! and is taken (deleted) when used, so each secret works once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use subtle::ConstantTimeEq;

use super::keys::hash_secret;
use super::sql::{from_micros, from_micros_opt, get, get_uuid, micros, now};
use super::users::{GitHubIdentity, User};
use super::{Store, StoreError, UserId};

/// How long a browser session lasts from sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// `last_seen_at` is written at most this often per session.
const LAST_SEEN_GRANULARITY: Duration = Duration::from_secs(60);
/// Random bytes in a token (shown as twice as many hex digits).
const TOKEN_BYTES: usize = 32;

/// A new random token: 64 hex digits (256 bits) from the operating system's random source.
pub fn random_token() -> Result<String, StoreError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(StoreError::Random)?;
    let mut hex = String::with_capacity(TOKEN_BYTES * 2);
    for byte in bytes {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    Ok(hex)
}

/// Whether `token` has the shape [`random_token`] gives (anything else is not looked up).
fn is_token(token: &str) -> bool {
    token.len() == TOKEN_BYTES * 2 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The stored form of a token: hex SHA-256.
pub fn hash_token(token: &str) -> String {
    hash_secret(token)
}

/// Whether two secrets are equal, compared in constant time.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A browser session of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its id (never shown to the browser; the cookie holds a separate secret token).
    pub id: uuid::Uuid,
    /// The member.
    pub user_id: UserId,
    /// What state-changing requests made with this session must send in `x-csrf-token`.
    pub csrf_token: String,
    /// When the member signed in.
    pub created_at: DateTime<Utc>,
    /// When the session was last used (to the minute).
    pub last_seen_at: DateTime<Utc>,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

fn session_from_row(row: &AnyRow) -> Result<Session, StoreError> {
    Ok(Session {
        id: get_uuid(row, "session_id")?,
        user_id: get_uuid(row, "id")?.into(),
        csrf_token: get(row, "csrf_token")?,
        created_at: from_micros("session_created_at", get(row, "session_created_at")?)?,
        last_seen_at: from_micros("last_seen_at", get(row, "last_seen_at")?)?,
        expires_at: from_micros("expires_at", get(row, "expires_at")?)?,
    })
}

/// What a sign-in flow is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    /// The browser's return from GitHub (the secret is the OAuth `state`).
    Web,
    /// A new member's age and terms confirmation (the secret is in a cookie and the form).
    Confirm,
    /// The CLI's device flow (the secret is the `device_token` given to the CLI).
    Device,
}

impl FlowKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Confirm => "confirm",
            Self::Device => "device",
        }
    }
}

/// A sign-in in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInFlow {
    /// What it waits for.
    pub kind: FlowKind,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it stops being usable.
    pub expires_at: DateTime<Utc>,
    /// The local path to return to (web flows).
    pub next_path: Option<String>,
    /// The GitHub identity parked until its owner confirms (no account exists yet).
    pub identity: Option<GitHubIdentity>,
    /// GitHub's device authorization answer, as JSON (device flows).
    pub device_authorization: Option<String>,
    /// Seconds to wait between polls of GitHub (device flows).
    pub poll_interval: Option<u64>,
    /// When GitHub was last polled (device flows).
    pub last_polled_at: Option<DateTime<Utc>>,
}

impl SignInFlow {
    /// A new flow of `kind` that lasts `lifetime` from now.
    pub fn new(kind: FlowKind, lifetime: Duration) -> Self {
        let created_at = now();
        Self {
            kind,
            created_at,
            expires_at: later(created_at, lifetime),
            next_path: None,
            identity: None,
            device_authorization: None,
            poll_interval: None,
            last_polled_at: None,
        }
    }

    /// Whether it has expired.
    pub fn is_expired(&self) -> bool {
        self.expires_at <= Utc::now()
    }
}

const FLOW_COLUMNS: &str = "kind, created_at, expires_at, next_path, github_id, github_login, \
                            github_email, device_authorization, poll_interval, last_polled_at";

fn flow_from_row(row: &AnyRow, kind: FlowKind) -> Result<SignInFlow, StoreError> {
    let github_id: Option<i64> = get(row, "github_id")?;
    let login: Option<String> = get(row, "github_login")?;
    let identity = match (github_id, login) {
        (Some(id), Some(login)) => Some(GitHubIdentity {
            id,
            login,
            email: get(row, "github_email")?,
        }),
        _ => None,
    };
    let interval: Option<i64> = get(row, "poll_interval")?;
    Ok(SignInFlow {
        kind,
        created_at: from_micros("created_at", get(row, "created_at")?)?,
        expires_at: from_micros("expires_at", get(row, "expires_at")?)?,
        next_path: get(row, "next_path")?,
        identity,
        device_authorization: get(row, "device_authorization")?,
        poll_interval: interval.map(|i| u64::try_from(i).unwrap_or(0)),
        last_polled_at: from_micros_opt("last_polled_at", get(row, "last_polled_at")?)?,
    })
}

impl Store {
    /// Starts a browser session for a member; returns it and the token for its cookie (the only
    /// time the token is available). Sessions that have expired are purged on the way.
    pub async fn create_session(&self, user_id: UserId) -> Result<(Session, String), StoreError> {
        let token = random_token()?;
        let created_at = now();
        let session = Session {
            id: uuid::Uuid::now_v7(),
            user_id,
            csrf_token: random_token()?,
            created_at,
            last_seen_at: created_at,
            expires_at: later(created_at, SESSION_LIFETIME),
        };
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(micros(created_at))
            .execute(&self.inner.pool)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, token_hash, user_id, csrf_token, created_at, last_seen_at, expires_at)
             SELECT $1, $2, id, $3, $4, $4, $5 FROM users WHERE id = $6",
        )
        .bind(session.id.to_string())
        .bind(hash_token(&token))
        .bind(&session.csrf_token)
        .bind(micros(created_at))
        .bind(micros(session.expires_at))
        .bind(user_id.to_string())
        .execute(&self.inner.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::NotFound(super::Entity::User));
        }
        Ok((session, token))
    }

    /// The member and live session a cookie's token belongs to: `None` for anything else
    /// (malformed, unknown, expired, ended). Marks the session seen (at most once a minute).
    pub async fn session(&self, token: &str) -> Result<Option<(User, Session)>, StoreError> {
        if !is_token(token) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT s.id AS session_id, s.csrf_token, s.created_at AS session_created_at,
                    s.last_seen_at, s.expires_at,
                    u.id, u.handle, u.email, u.created_at, u.default_visibility,
                    u.terms_accepted_at, u.age_confirmed_at, u.github_id, u.routing_preference
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1",
        )
        .bind(hash_token(token))
        .fetch_optional(&self.inner.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut session = session_from_row(&row)?;
        let user = super::users::user_from_row(&row)?;
        let now = now();
        if session.expires_at <= now {
            return Ok(None);
        }
        let stale = (now - session.last_seen_at)
            .to_std()
            .is_ok_and(|age| age >= LAST_SEEN_GRANULARITY);
        if stale {
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
                .bind(micros(now))
                .bind(session.id.to_string())
                .execute(&self.inner.pool)
                .await?;
            session.last_seen_at = now;
        }
        Ok(Some((user, session)))
    }

    /// Ends the session of this token. Returns whether there was one.
    pub async fn end_session(&self, token: &str) -> Result<bool, StoreError> {
        if !is_token(token) {
            return Ok(false);
        }
        let deleted = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(hash_token(token))
            .execute(&self.inner.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Ends every session of a member (sign out everywhere). Returns how many there were.
    pub async fn end_sessions_of(&self, user_id: UserId) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id.to_string())
            .execute(&self.inner.pool)
            .await?;
        Ok(deleted.rows_affected())
    }

    #[cfg(feature = "testing")]
    /// How many live sessions a member has.
    pub async fn count_sessions(&self, user_id: UserId) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM sessions WHERE user_id = $1 AND expires_at > $2",
        )
        .bind(user_id.to_string())
        .bind(micros(now()))
        .fetch_one(&self.inner.pool)
        .await?;
        let n: i64 = get(&row, "n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Stores a sign-in flow under the hash of `secret`. Flows that have expired are purged on
    /// the way.
    pub async fn start_flow(&self, secret: &str, flow: &SignInFlow) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sign_in_flows WHERE expires_at <= $1")
            .bind(micros(now()))
            .execute(&self.inner.pool)
            .await?;
        let identity = flow.identity.as_ref();
        sqlx::query(&format!(
            "INSERT INTO sign_in_flows (id, {FLOW_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(hash_token(secret))
        .bind(flow.kind.as_str())
        .bind(micros(flow.created_at))
        .bind(micros(flow.expires_at))
        .bind(flow.next_path.clone())
        .bind(identity.map(|i| i.id))
        .bind(identity.map(|i| i.login.clone()))
        .bind(identity.and_then(|i| i.email.clone()))
        .bind(flow.device_authorization.clone())
        .bind(
            flow.poll_interval
                .map(|i| i64::try_from(i).unwrap_or(i64::MAX)),
        )
        .bind(flow.last_polled_at.map(micros))
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    /// The live flow of `kind` with this secret, left in place.
    pub async fn flow(
        &self,
        secret: &str,
        kind: FlowKind,
    ) -> Result<Option<SignInFlow>, StoreError> {
        if !is_token(secret) {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {FLOW_COLUMNS} FROM sign_in_flows WHERE id = $1 AND kind = $2"
        ))
        .bind(hash_token(secret))
        .bind(kind.as_str())
        .fetch_optional(&self.inner.pool)
        .await?;
        row.as_ref().map(|r| flow_from_row(r, kind)).transpose()
    }

    /// Takes (deletes and returns) the flow of `kind` with this secret, so that it is used at
    /// most once; an expired flow is deleted and `None` returned.
    pub async fn take_flow(
        &self,
        secret: &str,
        kind: FlowKind,
    ) -> Result<Option<SignInFlow>, StoreError> {
        if !is_token(secret) {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "DELETE FROM sign_in_flows WHERE id = $1 AND kind = $2 RETURNING {FLOW_COLUMNS}"
        ))
        .bind(hash_token(secret))
        .bind(kind.as_str())
        .fetch_optional(&self.inner.pool)
        .await?;
        let flow = row.as_ref().map(|r| flow_from_row(r, kind)).transpose()?;
        Ok(flow.filter(|f| !f.is_expired()))
    }

    /// Parks a GitHub identity on a device flow until its owner accepts the terms.
    pub async fn park_identity(
        &self,
        secret: &str,
        identity: &GitHubIdentity,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sign_in_flows SET github_id = $1, github_login = $2, github_email = $3
             WHERE id = $4",
        )
        .bind(identity.id)
        .bind(&identity.login)
        .bind(identity.email.clone())
        .bind(hash_token(secret))
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    /// Notes that a device flow polled GitHub at `at`, and the interval to keep from now on.
    /// Returns `false` (changing nothing) when the previous poll was less than the stored
    /// interval ago, or the flow is gone: the caller must not poll GitHub then.
    pub async fn flow_polled(
        &self,
        secret: &str,
        at: DateTime<Utc>,
        interval_secs: u64,
    ) -> Result<bool, StoreError> {
        let interval = i64::try_from(interval_secs).unwrap_or(i64::MAX);
        let earliest = micros(at).saturating_sub(interval.saturating_mul(1_000_000));
        let updated = sqlx::query(
            "UPDATE sign_in_flows SET last_polled_at = $1, poll_interval = $2
             WHERE id = $3 AND (last_polled_at IS NULL OR last_polled_at <= $4)",
        )
        .bind(micros(at))
        .bind(interval)
        .bind(hash_token(secret))
        .bind(earliest)
        .execute(&self.inner.pool)
        .await?;
        Ok(updated.rows_affected() > 0)
    }

    /// Changes a device flow's poll interval (GitHub asked to slow down).
    pub async fn set_poll_interval(
        &self,
        secret: &str,
        interval_secs: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE sign_in_flows SET poll_interval = $1 WHERE id = $2")
            .bind(i64::try_from(interval_secs).unwrap_or(i64::MAX))
            .bind(hash_token(secret))
            .execute(&self.inner.pool)
            .await?;
        Ok(())
    }

    #[cfg(feature = "testing")]
    /// How many flows are parked for this GitHub account (for tests and audits).
    pub async fn count_flows_of(&self, github_id: i64) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM sign_in_flows WHERE github_id = $1")
            .bind(github_id)
            .fetch_one(&self.inner.pool)
            .await?;
        let n: i64 = get(&row, "n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert!(is_token(&a) && is_token(&b));
        assert_ne!(a, b);
        assert!(!is_token("short"));
        assert!(!is_token(&"z".repeat(64)));
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, &b));
    }
}
