//! Who is calling: API keys from `Authorization: Bearer`, or a browser session's cookie
//! (`club_session`, which holds every scope), and their scopes.
//!
//! A bearer key wins over a cookie. State-changing requests authenticated by the cookie are
//! CSRF-checked before they reach a handler (`accounts::session::csrf_guard`).

pub(crate) mod cookies;

use axum::http::HeaderMap;

use self::cookies::{SESSION_COOKIE, cookie};
use super::error::ApiError;
use super::store::{ApiKey, Scope, Scopes, Session, Store, User};

/// A caller authenticated by an API key or a browser session.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The member.
    pub user: User,
    /// The key they used; for a browser session, a key standing for it ([`session_key`]).
    pub key: ApiKey,
}

/// The name of the key standing for a browser session.
pub const SESSION_KEY_NAME: &str = "browser session";
/// The prefix of the key standing for a browser session (no real key has it).
pub const SESSION_KEY_PREFIX: &str = "session";

/// The key a browser session acts as: every scope, the session's id as its id, named
/// [`SESSION_KEY_NAME`] with prefix [`SESSION_KEY_PREFIX`].
pub fn session_key(session: &Session) -> ApiKey {
    ApiKey {
        id: session.id.into(),
        user_id: session.user_id,
        name: SESSION_KEY_NAME.to_owned(),
        prefix: SESSION_KEY_PREFIX.to_owned(),
        scopes: Scopes::ALL,
        created_at: session.created_at,
        last_used_at: Some(session.last_seen_at),
    }
}

/// The caller a batch's lines run as: its owner, with a key standing for the batch (the
/// `inference` scope only; it is never stored, and no limit is counted against it).
pub fn batch_caller(user: User) -> Caller {
    let key = ApiKey {
        id: crate::store::KeyId::new(),
        user_id: user.id,
        name: "batch".to_owned(),
        prefix: "batch".to_owned(),
        scopes: Scopes::only(Scope::Inference),
        created_at: user.created_at,
        last_used_at: None,
    };
    Caller { user, key }
}

impl Caller {
    /// The caller, if their key has `scope`; otherwise 403.
    pub fn require(self, scope: Scope) -> Result<Self, ApiError> {
        if self.key.scopes.contains(scope) {
            Ok(self)
        } else {
            Err(ApiError::forbidden(
                "insufficient_scope",
                format!(
                    "this key lacks the `{}` scope; create a key with it",
                    scope.as_str()
                ),
            ))
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The caller, if the request carries a key or a live session cookie: `Ok(None)` without
/// either (an unknown or ended session cookie counts as none), 401 for an unknown or revoked
/// key.
pub async fn caller(store: &Store, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
    let Some(secret) = bearer(headers) else {
        if let Some(token) = cookie(headers, SESSION_COOKIE)
            && let Some((user, session)) = store.session(token).await?
        {
            let key = session_key(&session);
            return Ok(Some(Caller { user, key }));
        }
        return Ok(None);
    };
    match store.authenticate(secret).await? {
        Some((user, key)) => Ok(Some(Caller { user, key })),
        None => Err(ApiError::unauthorized(
            "Incorrect API key provided. Create one with `club keys create` or on the dashboard.",
        )),
    }
}

/// The caller, who must have a key with `scope`: 401 without a key, 403 without the scope.
pub async fn require(store: &Store, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
    match caller(store, headers).await? {
        Some(caller) => caller.require(scope),
        None => Err(ApiError::unauthorized(
            "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
        )),
    }
}
