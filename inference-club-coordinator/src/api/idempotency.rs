//! `Idempotency-Key` on the POSTs that create something (`/v1/files`, `/v1/batches`): the same
//! key with the same body gets the first answer again (header `idempotent-replayed: true`),
//! and creates nothing new; the same key with another body, or on another route, is a 409.
//! Keys are the member's own; only successful answers are remembered.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::store::{RememberedAnswer, Store};

/// The header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The longest key.
pub const MAX_KEY_CHARS: usize = 255;
/// The largest answer remembered.
const MAX_REMEMBERED_BYTES: usize = 1024 * 1024;

/// A request's key, and the answer remembered for it.
pub(crate) struct Replay {
    key: Option<(String, String, String)>,
    remembered: Option<RememberedAnswer>,
}

impl Replay {
    /// Reads the caller's `Idempotency-Key` for `route` and `body`: 400 for a key that is not
    /// 1 to 255 visible ASCII characters, 409 for a key used with another body or route.
    pub async fn check(
        store: &Store,
        caller: &Caller,
        headers: &HeaderMap,
        route: &str,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
            return Ok(Self {
                key: None,
                remembered: None,
            });
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| {
                !k.is_empty() && k.len() <= MAX_KEY_CHARS && k.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    format!(
                        "Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"
                    ),
                )
            })?
            .to_owned();
        let mut hash = Sha256::new();
        hash.update(route.as_bytes());
        hash.update([0]);
        hash.update(body);
        let hash = format!("{:x}", hash.finalize());
        let remembered = match store.remembered_answer(caller.user.id, &key).await? {
            None => None,
            Some(answer) if answer.route == route && answer.request_hash == hash => Some(answer),
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "invalid_request_error",
                    "idempotency_key_reused",
                    "this Idempotency-Key was used before with another request; use a new key",
                ));
            }
        };
        Ok(Self {
            key: Some((key, route.to_owned(), hash)),
            remembered,
        })
    }

    /// The answer given the first time, if this is a repeat.
    pub fn remembered(&self) -> Option<Response> {
        self.remembered.as_ref().map(replayed)
    }

    /// Remembers `answer` for the key (when there is one and it succeeded) and gives it back.
    pub async fn remember(
        self,
        store: &Store,
        caller: &Caller,
        answer: Response,
    ) -> Result<Response, ApiError> {
        let Some((key, route, request_hash)) = self.key else {
            return Ok(answer);
        };
        if !answer.status().is_success() {
            return Ok(answer);
        }
        let (parts, body) = answer.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_REMEMBERED_BYTES)
            .await
            .map_err(|e| ApiError::internal("idempotency", e))?;
        let remembered = RememberedAnswer {
            route,
            request_hash,
            status: parts.status.as_u16(),
            response: String::from_utf8_lossy(&bytes).into_owned(),
        };
        store
            .remember_answer(caller.user.id, &key, &remembered)
            .await?;
        Ok(Response::from_parts(parts, axum::body::Body::from(bytes)))
    }
}

/// The first answer, again.
fn replayed(answer: &RememberedAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            ),
        ],
        answer.response.clone(),
    )
        .into_response()
}
