//! `/v1/files`: a member's JSONL files for batches, and the output and error files of their
//! batches (OpenAI's Files API, as far as batches need it).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::idempotency::Replay;
use super::multipart;
use super::serve;
use crate::CoordinatorConfig;
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::limits::{self, Limiter, RateState};
use crate::store::{Scope, Store};

/// The most files listed at once.
pub const MAX_LIST: u32 = 100;

/// `after` and `limit` of a listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    after: Option<String>,
    limit: Option<u32>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    purpose: Option<String>,
}

impl ListQuery {
    /// The page size (default 20, 1 to [`MAX_LIST`]) and where to start.
    pub(crate) fn page(&self) -> Result<(Option<&str>, u32), ApiError> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_value",
                format!("`limit` must be between 1 and {MAX_LIST}"),
            )
            .with_param("limit"));
        }
        if self.order.as_deref().is_some_and(|o| o != "desc") {
            return Err(
                ApiError::bad_request("invalid_value", "only `order=desc` is supported")
                    .with_param("order"),
            );
        }
        let after = self.after.as_deref().filter(|a| !a.is_empty());
        if after.is_some_and(|a| a.len() > 64) {
            return Err(
                ApiError::bad_request("invalid_value", "`after` is an id").with_param("after")
            );
        }
        Ok((after, limit))
    }
}

/// A list of OpenAI objects with its cursors.
pub(crate) fn list_page(data: Vec<Value>, has_more: bool) -> Value {
    let first = data.first().and_then(|v| v.get("id")).cloned();
    let last = data.last().and_then(|v| v.get("id")).cloned();
    json!({
        "object": "list",
        "data": data,
        "first_id": first,
        "last_id": last,
        "has_more": has_more,
    })
}

/// The member calling, with the inference scope (files serve batches).
pub(crate) async fn member(store: &Store, headers: &HeaderMap) -> Result<Caller, ApiError> {
    auth::require(store, headers, Scope::Inference).await
}

/// The caller of a route that makes work and takes storage (an upload, a batch): a member, as
/// [`member`], counted against the key's request rate as an inference request is.
pub(crate) async fn counted_member(
    store: &Store,
    limits: &Limiter,
    headers: &HeaderMap,
) -> Result<(Caller, RateState), ApiError> {
    let caller = member(store, headers).await?;
    let rate = limits.inference(&caller.key.id.to_string())?;
    Ok((caller, rate))
}

/// A kind of object a member owns and names by id in a path (a file, a batch): the same 404
/// for one that does not exist and for another member's.
pub(crate) struct Owned {
    /// What it is called (`file`, `batch`).
    pub noun: &'static str,
}

impl Owned {
    /// The 404 for `id`.
    pub(crate) fn not_found(&self, id: &str) -> ApiError {
        let noun = self.noun;
        ApiError::not_found(
            &format!("{noun}_not_found"),
            format!("No {noun} with id {id:?} exists, or it is not yours."),
        )
        .with_param(&format!("{noun}_id"))
    }

    /// The id a path names (an id longer than any this club makes is simply not found).
    pub(crate) fn id(&self, path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
        let Path(id) = path.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
        if id.len() > 64 {
            return Err(self.not_found(&id));
        }
        Ok(id)
    }
}

/// Files.
pub(crate) const FILE: Owned = Owned { noun: "file" };

/// `POST /v1/files`: a `multipart/form-data` upload with `file` and `purpose` (`batch`). The
/// file is at most `max_file_bytes`; a batch file must be JSONL text (its lines are checked when
/// a batch is made of it). Answers the file object; with an `Idempotency-Key`, the same answer
/// again for the same upload.
pub async fn upload(
    State(store): State<Store>,
    State(config): State<Arc<CoordinatorConfig>>,
    State(limits): State<Arc<Limiter>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, rate) = counted_member(&store, &limits, &headers).await?;
    let limit = config.limits.max_file_bytes;
    let bytes =
        match serve::read_body(body, limit.saturating_add(64 * 1024), "max_file_bytes").await {
            Ok(bytes) => bytes,
            Err(too_large) => return Ok(too_large),
        };
    let (purpose, filename, data) = read_form(&headers, bytes).await?;
    // The same upload is the same form's content (each sends its own multipart boundary).
    let content = [purpose.as_bytes(), b"\0", filename.as_bytes(), b"\0", &data].concat();
    let replay = Replay::check(&store, &caller, &headers, "/v1/files", &content).await?;
    if let Some(answer) = replay.remembered() {
        return Ok(answer);
    }
    if purpose != "batch" {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!(
                "`purpose` must be \"batch\" (the only purpose this club serves), got {purpose:?}"
            ),
        )
        .with_param("purpose"));
    }
    if data.len() > limit {
        return Err(ApiError::too_large(format!(
            "the file is larger than {limit} bytes (max_file_bytes)"
        )));
    }
    if std::str::from_utf8(&data).is_err() {
        return Err(ApiError::bad_request(
            "invalid_file",
            "a batch file must be JSONL text (UTF-8)",
        )
        .with_param("file"));
    }
    let file = store
        .put_file(caller.user.id, &purpose, &filename, &data)
        .await?;
    let answer = (StatusCode::OK, axum::Json(file.object())).into_response();
    let answer = replay.remember(&store, &caller, answer).await?;
    Ok(limits::with_rate(answer, Some(rate)))
}

/// The `purpose`, file name and bytes of an upload.
async fn read_form(headers: &HeaderMap, bytes: Bytes) -> Result<(String, String, Bytes), ApiError> {
    let (mut fields, file) = multipart::read_form(
        headers,
        bytes,
        8,
        "input.jsonl",
        "`file` and `purpose` parts",
    )
    .await?;
    let Some(Value::String(purpose)) = fields.remove("purpose") else {
        return Err(
            ApiError::bad_request("missing_field", "`purpose` is required").with_param("purpose"),
        );
    };
    Ok((purpose, file.file_name, file.data))
}

/// `GET /v1/files`: the caller's files, newest first (`after`, `limit`, `purpose`).
pub async fn list(
    State(store): State<Store>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = member(&store, &headers).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (after, limit) = query.page()?;
    let purpose = query.purpose.as_deref().filter(|p| !p.is_empty());
    let mut files = store
        .list_files(caller.user.id, purpose, after, limit + 1)
        .await?;
    let has_more = files.len() > limit as usize;
    files.truncate(limit as usize);
    let page = list_page(files.iter().map(|f| f.object()).collect(), has_more);
    Ok(axum::Json(page).into_response())
}

/// `GET /v1/files/{id}`: one of the caller's files.
pub async fn get_one(
    State(store): State<Store>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = member(&store, &headers).await?;
    let id = FILE.id(path)?;
    match store.file(caller.user.id, &id).await? {
        Some(file) => Ok(axum::Json(file.object()).into_response()),
        None => Err(FILE.not_found(&id)),
    }
}

/// `GET /v1/files/{id}/content`: the bytes of one of the caller's files.
pub async fn content(
    State(store): State<Store>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = member(&store, &headers).await?;
    let id = FILE.id(path)?;
    match store.file_content(caller.user.id, &id).await? {
        // A member's own bytes, from the coordinator's origin: never run as a page.
        Some(data) => Ok(super::answers::raw_bytes_response(
            "application/jsonl",
            data,
        )),
        None => Err(FILE.not_found(&id)),
    }
}

/// `DELETE /v1/files/{id}`: deletes one of the caller's files.
pub async fn delete(
    State(store): State<Store>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = member(&store, &headers).await?;
    let id = FILE.id(path)?;
    if store.delete_file(caller.user.id, &id).await? {
        Ok(axum::Json(json!({"id": id, "object": "file", "deleted": true})).into_response())
    } else {
        Err(FILE.not_found(&id))
    }
}
