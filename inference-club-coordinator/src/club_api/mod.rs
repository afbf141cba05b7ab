//! The club's own API (JSON, under `/api/v1/`): records, the public feed, providers, keys and
//! the account; and `GET /openapi.json`, an OpenAPI 3.1 document of it.
//!
//! Every answer that is not a success is an OpenAI error envelope ([`ApiError`]). Who may do
//! what:
//!
//! - **Records** ([`records`]): reading, changing and deleting one's own requests needs a key
//!   with the `inference` or `account` scope. Without a key, anyone may read the public feed
//!   and any public or unlisted record by its id. A private record is readable by its owner and
//!   by the operator whose node served it; to anyone else it does not exist (404, the same
//!   answer as for an unknown id). Only the owner changes visibility or deletes (a hard delete).
//!   A key with only the `provider` scope reads no record (403).
//! - **Providers** ([`providers`]): public profiles for anyone; what a provider served, and its
//!   access overrides and kill switch (`PATCH`), for its operator only.
//! - **Account** ([`account`]): `/api/v1/me` and `/api/v1/keys` need the `account` scope.
//!
//! Every outside input has a limit: bodies ([`MAX_JSON_BODY_BYTES`]), page sizes
//! ([`MAX_PAGE_SIZE`]), names and filters ([`MAX_FILTER_CHARS`]).

pub(crate) mod account;

pub(crate) mod openapi;
pub(crate) mod providers;
pub(crate) mod records;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderMap, StatusCode};
use inference_club_core::record::{Status, Visibility};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth::{self, Caller};
use super::error::ApiError;
use super::store::{Cursor, DEFAULT_PAGE_SIZE, RecordQuery, Scope, Store};

pub use super::store::MAX_PAGE_SIZE;

/// The largest JSON body the club API accepts, in bytes (413 beyond).
pub const MAX_JSON_BODY_BYTES: usize = 16 * 1024;
/// The longest filter value (`model`) or path name accepted, in characters.
pub const MAX_FILTER_CHARS: usize = 1024;
/// The longest cursor accepted, in characters.
const MAX_CURSOR_CHARS: usize = 64;

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

/// The caller, if any, as a reader of records: anonymous without a key; 401 for an unknown or
/// revoked key; 403 for a key with neither the `inference` nor the `account` scope.
pub(crate) async fn record_reader(
    store: &Store,
    headers: &HeaderMap,
) -> Result<Option<Caller>, ApiError> {
    auth::caller(store, headers)
        .await?
        .map(require_records_scope)
        .transpose()
}

/// The caller, who must be signed in with a key that may touch records (`inference` or
/// `account`): 401 without a key, 403 without the scope.
pub(crate) async fn record_member(store: &Store, headers: &HeaderMap) -> Result<Caller, ApiError> {
    match record_reader(store, headers).await? {
        Some(caller) => Ok(caller),
        None => Err(ApiError::unauthorized(
            "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
        )),
    }
}

fn require_records_scope(caller: Caller) -> Result<Caller, ApiError> {
    let scopes = caller.key.scopes;
    if scopes.contains(Scope::Inference) || scopes.contains(Scope::Account) {
        Ok(caller)
    } else {
        Err(ApiError::forbidden(
            "insufficient_scope",
            "this key has neither the `inference` nor the `account` scope, which reading or \
             changing requests needs; create a key with one of them",
        ))
    }
}

/// Reads a JSON body of at most [`MAX_JSON_BODY_BYTES`]: 413 beyond, 400 when it is not the
/// expected JSON (the message says what is wrong).
pub(crate) async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_JSON_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::too_large(format!(
                "the body is larger than {MAX_JSON_BODY_BYTES} bytes"
            ))
        })?;
    serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not valid here: {error}"),
        )
    })
}

/// A query string that did not parse, in the error envelope.
pub(crate) fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(
        "invalid_query",
        format!(
            "the query string is not valid here: {}",
            rejection.body_text()
        ),
    )
}

/// A path that did not parse, in the error envelope.
pub(crate) fn bad_path(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(
        "invalid_path",
        format!("the path is not valid: {}", rejection.body_text()),
    )
}

/// The query string of a listing: `cursor`, `limit` (1 to [`MAX_PAGE_SIZE`], default 50),
/// `model`, `status` and `visibility`; each is checked, and unknown parameters are refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    cursor: Option<String>,
    limit: Option<String>,
    model: Option<String>,
    status: Option<String>,
    visibility: Option<String>,
}

impl ListParams {
    /// Applies the page and the filters to `query`. `visibility_filter: false` refuses a
    /// `visibility` parameter (the public feed, which is public by definition).
    pub(crate) fn apply(
        self,
        mut query: RecordQuery,
        visibility_filter: bool,
    ) -> Result<RecordQuery, ApiError> {
        query.limit = match self.limit.as_deref() {
            None => DEFAULT_PAGE_SIZE,
            Some(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_limit",
                        format!(
                            "limit must be a whole number from 1 to {MAX_PAGE_SIZE}, got {text:?}"
                        ),
                    )
                    .with_param("limit")
                })?,
        };
        if let Some(text) = self.cursor.as_deref().filter(|t| !t.is_empty()) {
            let cursor = (text.len() <= MAX_CURSOR_CHARS)
                .then(|| Cursor::parse(text).ok())
                .flatten()
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_cursor",
                        "cursor must be a `next_cursor` value from an earlier page",
                    )
                    .with_param("cursor")
                })?;
            query.after = Some(cursor);
        }
        if let Some(model) = self.model {
            if model.is_empty() || model.chars().count() > MAX_FILTER_CHARS {
                return Err(ApiError::bad_request(
                    "invalid_model",
                    format!("model must be 1 to {MAX_FILTER_CHARS} characters"),
                )
                .with_param("model"));
            }
            query.model = Some(model);
        }
        if let Some(status) = self.status {
            let status = status.parse::<Status>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_status",
                    format!(
                        "status must be one of queued, running, succeeded, failed, cancelled; got {status:?}"
                    ),
                )
                .with_param("status")
            })?;
            query.status = Some(status);
        }
        if let Some(visibility) = self.visibility {
            if !visibility_filter {
                return Err(ApiError::bad_request(
                    "invalid_filter",
                    "the public feed lists public requests only; it takes no visibility filter",
                )
                .with_param("visibility"));
            }
            query.visibility = Some(parse_visibility(&visibility)?);
        }
        Ok(query)
    }
}

/// Reads a visibility name (400 naming the allowed values otherwise).
pub(crate) fn parse_visibility(text: &str) -> Result<Visibility, ApiError> {
    text.parse::<Visibility>().map_err(|_| {
        ApiError::bad_request(
            "invalid_visibility",
            format!("visibility must be public, unlisted or private, got {text:?}"),
        )
        .with_param("visibility")
    })
}

/// One page of a listing: `{"object": "list", "data": [...], "has_more", "next_cursor"}`.
#[derive(Debug, Serialize)]
pub struct ListPage<T> {
    /// Always `list`.
    pub object: &'static str,
    /// The items, newest first.
    pub data: Vec<T>,
    /// Whether another page follows.
    pub has_more: bool,
    /// What to pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ListPage<T> {
    /// A page of `data`, continued at `next`.
    pub fn new(data: Vec<T>, next: Option<Cursor>) -> Self {
        Self {
            object: "list",
            data,
            has_more: next.is_some(),
            next_cursor: next.map(|c| c.to_string()),
        }
    }
}
