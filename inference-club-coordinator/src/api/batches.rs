//! `/v1/batches`: OpenAI's Batch API, run on the club's nodes by [`crate::jobs`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use inference_club_core::endpoint::Endpoint;
use inference_club_core::record::Visibility;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::files::{ListQuery, Owned, counted_member, list_page, member};
use super::idempotency::Replay;
use super::{header_visibility, serve};
use crate::error::ApiError;
use crate::jobs::input::{self, BATCH_ENDPOINTS};
use crate::jobs::{BatchRunner, COMPLETION_WINDOW};
use crate::limits::{self, Limiter};
use crate::store::Store;

/// The largest body of `POST /v1/batches`.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The most metadata pairs (OpenAI's limit), and their sizes.
const MAX_METADATA: usize = 16;

/// The body of `POST /v1/batches`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    /// The club's: the visibility of the batch's records (else the member's default).
    #[serde(default)]
    visibility: Option<String>,
}

/// Batches.
const BATCH: Owned = Owned { noun: "batch" };

/// `POST /v1/batches`: a batch over one of the caller's files (`purpose` batch) for one of
/// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`, within `24h`.
/// Malformed lines go to the error file with their line number; the others run. With an
/// `Idempotency-Key`, the same request gets the same batch.
pub async fn create(
    State(store): State<Store>,
    State(runner): State<Arc<BatchRunner>>,
    State(limits): State<Arc<Limiter>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, rate) = counted_member(&store, &limits, &headers).await?;
    super::check_content_type(&headers)?;
    let bytes = match serve::read_body(body, MAX_BODY_BYTES, "64 KiB").await {
        Ok(bytes) => bytes,
        Err(too_large) => return Ok(too_large),
    };
    let replay = Replay::check(&store, &caller, &headers, "/v1/batches", &bytes).await?;
    if let Some(answer) = replay.remembered() {
        return Ok(answer);
    }
    let request: NewBatch = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not a batch request: {e}"),
        )
    })?;
    let endpoint = Endpoint::from_path(&request.endpoint)
        .filter(|e| BATCH_ENDPOINTS.contains(e))
        .ok_or_else(|| {
            let names: Vec<String> = BATCH_ENDPOINTS.iter().map(|e| e.path()).collect();
            ApiError::bad_request(
                "invalid_value",
                format!(
                    "`endpoint` must be one of {}, got {:?}",
                    names.join(", "),
                    request.endpoint
                ),
            )
            .with_param("endpoint")
        })?;
    if request.completion_window != COMPLETION_WINDOW {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("`completion_window` must be \"{COMPLETION_WINDOW}\""),
        )
        .with_param("completion_window"));
    }
    let metadata = check_metadata(request.metadata)?;
    let visibility = match request.visibility {
        Some(name) => Some(name.parse::<Visibility>().map_err(|_| {
            ApiError::bad_request(
                "invalid_visibility",
                "visibility must be public, unlisted or private",
            )
            .with_param("visibility")
        })?),
        None => header_visibility(&headers)?,
    };
    let no_file = || {
        ApiError::not_found(
            "file_not_found",
            format!(
                "No file with id {:?} exists, or it is not yours.",
                request.input_file_id
            ),
        )
        .with_param("input_file_id")
    };
    let file = store
        .file(caller.user.id, &request.input_file_id)
        .await?
        .filter(|f| f.purpose == "batch")
        .ok_or_else(no_file)?;
    let data = store
        .file_content(caller.user.id, &file.id)
        .await?
        .ok_or_else(no_file)?;
    let lines = input::read_lines(&data, endpoint).map_err(|e| {
        ApiError::bad_request("invalid_file", e.to_string()).with_param("input_file_id")
    })?;
    let batch = runner
        .create(
            caller.user.id,
            endpoint,
            &file.id,
            metadata,
            visibility.or(Some(caller.user.default_visibility)),
            &lines,
        )
        .await?;
    let answer = axum::Json(batch).into_response();
    let answer = replay.remember(&store, &caller, answer).await?;
    Ok(limits::with_rate(answer, Some(rate)))
}

/// At most [`MAX_METADATA`] pairs, keys of at most 64 characters, string values of at most 512.
fn check_metadata(metadata: Option<Map<String, Value>>) -> Result<Option<Value>, ApiError> {
    let Some(metadata) = metadata else {
        return Ok(None);
    };
    let fits = metadata.len() <= MAX_METADATA
        && metadata.iter().all(|(k, v)| {
            k.chars().count() <= 64 && v.as_str().is_some_and(|v| v.chars().count() <= 512)
        });
    if !fits {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!(
                "`metadata` holds at most {MAX_METADATA} pairs of strings (keys up to 64 characters, values up to 512)"
            ),
        )
        .with_param("metadata"));
    }
    Ok(Some(Value::Object(metadata)))
}

/// `GET /v1/batches/{id}`: one of the caller's batches, with its counts as they are now.
pub async fn get_one(
    State(store): State<Store>,
    State(runner): State<Arc<BatchRunner>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = member(&store, &headers).await?;
    let id = BATCH.id(path)?;
    match runner.current(caller.user.id, &id).await? {
        Some(batch) => Ok(axum::Json(batch).into_response()),
        None => Err(BATCH.not_found(&id)),
    }
}

/// `GET /v1/batches`: the caller's batches, newest first (`after`, `limit`), with their counts
/// as they are now.
pub async fn list(
    State(store): State<Store>,
    State(runner): State<Arc<BatchRunner>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = member(&store, &headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (after, limit) = query.page()?;
    let mut batches = store.list_batches(caller.user.id, after, limit + 1).await?;
    let has_more = batches.len() > limit as usize;
    batches.truncate(limit as usize);
    let batches = runner.current_all(batches).await?;
    Ok(axum::Json(list_page(batches, has_more)).into_response())
}

/// `POST /v1/batches/{id}/cancel`: stops one of the caller's batches (`cancelling`, then
/// `cancelled` within a second, with what was answered by then).
pub async fn cancel(
    State(store): State<Store>,
    State(runner): State<Arc<BatchRunner>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = member(&store, &headers).await?;
    let id = BATCH.id(path)?;
    match runner.cancel(caller.user.id, &id).await? {
        Some(batch) => Ok(axum::Json(batch).into_response()),
        None => Err(BATCH.not_found(&id)),
    }
}
