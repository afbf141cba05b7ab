//! API keys: random, prefixed, stored only as hashes, scoped, named, revocable.
//!
//! A secret is `icl_` followed by 43 base62 characters drawn from the operating system's random
//! source (256 bits). The store keeps its SHA-256 (fit for secrets of that entropy: nothing to
//! guess, so no slow hash is needed) and a non-secret prefix, `icl_` and the next 8 characters,
//! to list keys by and to find a key without scanning. Hashes are compared in constant time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use subtle::ConstantTimeEq;

use super::sql::{from_micros, from_micros_opt, get, get_parsed, get_uuid, micros, now};
use super::users::User;
use super::{KeyId, Store, StoreError, UserId};

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "icl_";
/// Random base62 characters after [`SECRET_PREFIX`].
const SECRET_RANDOM_CHARS: usize = 43;
/// Characters after [`SECRET_PREFIX`] that the displayed prefix keeps.
const DISPLAY_CHARS: usize = 8;
/// `last_used_at` is written at most this often per key.
const LAST_USED_GRANULARITY: Duration = Duration::from_secs(60);
/// Longest key name.
const MAX_NAME_LEN: usize = 100;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// One thing a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Calling the inference API (`/v1/...`).
    Inference,
    /// Connecting a provider node (`/v1/link`).
    Provider,
    /// Managing the account: settings, keys, deletion.
    Account,
}

impl Scope {
    /// Every scope, in display order.
    pub const ALL: [Scope; 3] = [Scope::Inference, Scope::Provider, Scope::Account];

    /// The name used in scope lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inference => "inference",
            Self::Provider => "provider",
            Self::Account => "account",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Inference => 1,
            Self::Provider => 2,
            Self::Account => 4,
        }
    }
}

/// A set of [`Scope`]s, written as a comma list (`"inference,provider"`).
///
/// ```
/// use inference_club_coordinator::{Scope, Scopes};
///
/// let scopes: Scopes = "inference, provider".parse()?;
/// assert!(scopes.contains(Scope::Provider) && !scopes.contains(Scope::Account));
/// assert_eq!(scopes.to_string(), "inference,provider");
/// assert!("inference,admin".parse::<Scopes>().is_err());
/// # Ok::<(), inference_club_coordinator::ScopeParseError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope.
    pub const NONE: Scopes = Scopes(0);
    /// Every scope.
    pub const ALL: Scopes = Scopes(7);

    /// The set holding only `scope`.
    pub fn only(scope: Scope) -> Self {
        Self(scope.bit())
    }

    /// This set with `scope` added.
    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in display order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::NONE, Scopes::with)
    }
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, scope) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

/// A scope list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeParseError {
    /// A name that is not a scope.
    #[error("unknown scope {0:?}: expected a comma-separated list of inference, provider, account")]
    Unknown(String),
    /// An empty list.
    #[error("no scope given: expected a comma-separated list of inference, provider, account")]
    Empty,
}

impl std::str::FromStr for Scope {
    type Err = ScopeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| ScopeParseError::Unknown(s.to_owned()))
    }
}

impl std::str::FromStr for Scopes {
    type Err = ScopeParseError;
    /// Reads a comma list; spaces around names are ignored; an empty list is refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut scopes = Scopes::NONE;
        for name in s.split(',').map(str::trim) {
            if name.is_empty() {
                continue;
            }
            scopes = scopes.with(name.parse()?);
        }
        if scopes.is_empty() {
            return Err(ScopeParseError::Empty);
        }
        Ok(scopes)
    }
}

impl Serialize for Scopes {
    /// A list of scope names.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Scope::as_str))
    }
}

/// An API key as listed: never its secret nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Its id.
    pub id: KeyId,
    /// The member it belongs to.
    pub user_id: UserId,
    /// The name the member gave it.
    pub name: String,
    /// The first characters of the secret (`icl_` and 8 more): enough to recognise it, useless
    /// to use it.
    pub prefix: String,
    /// What it may be used for.
    pub scopes: Scopes,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used (to the minute: updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

const KEY_COLUMNS: &str =
    "k.id, k.user_id, k.name, k.prefix, k.scopes, k.created_at, k.last_used_at";

fn key_from_row(row: &AnyRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: get_uuid(row, "id")?.into(),
        user_id: get_uuid(row, "user_id")?.into(),
        name: get(row, "name")?,
        prefix: get(row, "prefix")?,
        scopes: get_parsed(row, "scopes")?,
        created_at: from_micros("created_at", get(row, "created_at")?)?,
        last_used_at: from_micros_opt("last_used_at", get(row, "last_used_at")?)?,
    })
}

/// A new secret from the operating system's random source.
fn new_secret() -> Result<String, StoreError> {
    let mut secret = String::with_capacity(SECRET_PREFIX.len() + SECRET_RANDOM_CHARS);
    secret.push_str(SECRET_PREFIX);
    let mut buffer = [0u8; 64];
    while secret.len() < SECRET_PREFIX.len() + SECRET_RANDOM_CHARS {
        getrandom::fill(&mut buffer).map_err(StoreError::Random)?;
        // Rejection sampling keeps every character equally likely: 248 = 4 * 62.
        for byte in buffer.iter().filter(|b| **b < 248) {
            if secret.len() == SECRET_PREFIX.len() + SECRET_RANDOM_CHARS {
                break;
            }
            secret.push(char::from(BASE62[usize::from(*byte % 62)]));
        }
    }
    Ok(secret)
}

/// Whether `secret` has the shape of a key, and its display prefix if so.
fn display_prefix(secret: &str) -> Option<&str> {
    let random = secret.strip_prefix(SECRET_PREFIX)?;
    (random.len() == SECRET_RANDOM_CHARS && random.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| &secret[..SECRET_PREFIX.len() + DISPLAY_CHARS])
}

/// The stored form of a secret: hex SHA-256.
pub(crate) fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    hex
}

impl Store {
    /// Creates an API key for a member. Returns the key as listed and its secret: the only time
    /// the secret is available (only its hash is kept).
    pub async fn create_key(
        &self,
        user_id: UserId,
        name: &str,
        scopes: Scopes,
    ) -> Result<(ApiKey, String), StoreError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(StoreError::invalid(
                "key name",
                format!("must be 1 to {MAX_NAME_LEN} characters"),
            ));
        }
        if scopes.is_empty() {
            return Err(StoreError::Scopes(ScopeParseError::Empty));
        }
        let secret = new_secret()?;
        let prefix = display_prefix(&secret)
            .ok_or_else(|| StoreError::corrupt("secret", "generated secret has the wrong shape"))?;
        let key = ApiKey {
            id: KeyId::new(),
            user_id,
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            scopes,
            created_at: now(),
            last_used_at: None,
        };
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, secret_hash, scopes, created_at)
             SELECT $1, id, $2, $3, $4, $5, $6 FROM users WHERE id = $7",
        )
        .bind(key.id.to_string())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(hash_secret(&secret))
        .bind(key.scopes.to_string())
        .bind(micros(key.created_at))
        .bind(user_id.to_string())
        .execute(&self.inner.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::NotFound(super::Entity::User));
        }
        Ok((key, secret))
    }

    /// The member and key a secret belongs to, if it is a live key: `None` for anything else
    /// (malformed, unknown, wrong, revoked). Marks the key used (at most once a minute).
    ///
    /// A key found is remembered for `KEY_CACHE_TTL` (forgotten at once
    /// when this store revokes a key of the member, changes their settings or deletes them).
    pub async fn authenticate(&self, secret: &str) -> Result<Option<(User, ApiKey)>, StoreError> {
        let Some(prefix) = display_prefix(secret) else {
            return Ok(None);
        };
        let presented = hash_secret(secret);
        if let Some(found) = self.inner.keys.get(&presented) {
            return Ok(Some(found));
        }
        let epoch = self.inner.keys.epoch();
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, k.secret_hash, k.revoked_at,
                    u.handle, u.email, u.created_at AS user_created_at, u.default_visibility,
                    u.terms_accepted_at, u.age_confirmed_at, u.github_id, u.routing_preference
             FROM api_keys k JOIN users u ON u.id = k.user_id
             WHERE k.prefix = $1"
        ))
        .bind(prefix)
        .fetch_all(&self.inner.pool)
        .await?;
        let mut found = None;
        for row in &rows {
            let stored: String = get(row, "secret_hash")?;
            let matches: bool = presented.as_bytes().ct_eq(stored.as_bytes()).into();
            let revoked: Option<i64> = get(row, "revoked_at")?;
            if matches && revoked.is_none() {
                found = Some(row);
            }
        }
        let Some(row) = found else {
            return Ok(None);
        };
        let mut key = key_from_row(row)?;
        let user = User {
            id: key.user_id,
            handle: get(row, "handle")?,
            email: get(row, "email")?,
            created_at: from_micros("created_at", get(row, "user_created_at")?)?,
            default_visibility: get_parsed(row, "default_visibility")?,
            terms_accepted_at: from_micros_opt(
                "terms_accepted_at",
                get(row, "terms_accepted_at")?,
            )?,
            age_confirmed_at: from_micros_opt("age_confirmed_at", get(row, "age_confirmed_at")?)?,
            github_id: get(row, "github_id")?,
            routing_preference: get_parsed(row, "routing_preference")?,
        };
        let now = now();
        let stale = key.last_used_at.is_none_or(|at| {
            (now - at)
                .to_std()
                .is_ok_and(|age| age >= LAST_USED_GRANULARITY)
        });
        if stale {
            let cutoff =
                micros(now) - i64::try_from(LAST_USED_GRANULARITY.as_micros()).unwrap_or(0);
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)",
            )
            .bind(micros(now))
            .bind(key.id.to_string())
            .bind(cutoff)
            .execute(&self.inner.pool)
            .await?;
            key.last_used_at = Some(now);
        }
        self.inner.keys.remember(presented, &user, &key, epoch);
        Ok(Some((user, key)))
    }

    /// Whether the key `key_id` is still live: not revoked, and its member not deleted. Reads
    /// the database, never the memory of recent keys, so that a revocation made through any
    /// coordinator on the same database counts at once.
    pub async fn key_is_live(&self, key_id: KeyId) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT k.id FROM api_keys k JOIN users u ON u.id = k.user_id
             WHERE k.id = $1 AND k.revoked_at IS NULL",
        )
        .bind(key_id.to_string())
        .fetch_optional(&self.inner.pool)
        .await?;
        Ok(row.is_some())
    }

    /// A member's live keys, newest first (revoked keys are not listed).
    pub async fn list_keys(&self, user_id: UserId) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k
             WHERE k.user_id = $1 AND k.revoked_at IS NULL
             ORDER BY k.created_at DESC, k.id DESC"
        ))
        .bind(user_id.to_string())
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes one of the member's keys. Returns `false`, changing nothing, when the key is not
    /// theirs, does not exist or is already revoked.
    pub async fn revoke_key(&self, user_id: UserId, key_id: KeyId) -> Result<bool, StoreError> {
        let revoked = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(micros(now()))
        .bind(key_id.to_string())
        .bind(user_id.to_string())
        .execute(&self.inner.pool)
        .await;
        // Forgotten after the write, so no lookup in between can remember the key as live.
        self.inner.keys.forget_user(user_id);
        Ok(revoked?.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_prefixed() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 47);
        assert_eq!(display_prefix(&a), Some(&a[..12]));
        assert_eq!(display_prefix("icl_short"), None);
        assert_eq!(display_prefix(&a.replace("icl_", "sk_")), None);
        assert_eq!(hash_secret("abc").len(), 64);
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn scopes_parse_and_print() {
        assert_eq!(
            "account".parse::<Scopes>(),
            Ok(Scopes::only(Scope::Account))
        );
        assert_eq!(
            "provider,inference".parse::<Scopes>().unwrap().to_string(),
            "inference,provider"
        );
        assert_eq!(
            "inference,nope".parse::<Scopes>(),
            Err(ScopeParseError::Unknown("nope".into()))
        );
        assert_eq!(" , ".parse::<Scopes>(), Err(ScopeParseError::Empty));
        assert_eq!(
            serde_json::to_value(Scopes::ALL).unwrap(),
            serde_json::json!(["inference", "provider", "account"])
        );
    }
}
