//! Who is calling: API keys from `Authorization: Bearer`, and their scopes.

use axum::http::HeaderMap;

use super::error::ApiError;
use super::store::{ApiKey, Scope, Store, User};

/// A caller authenticated by an API key.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The member.
    pub user: User,
    /// The key they used.
    pub key: ApiKey,
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

/// The caller, if the request carries a key: `Ok(None)` without one, 401 for an unknown or
/// revoked key.
pub async fn caller(store: &Store, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
    let Some(secret) = bearer(headers) else {
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
