//! `/api/v1/requests`: one's own requests, the public feed, one record, visibility and
//! deletion.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use inference_club_core::endpoint::Endpoint;
use inference_club_core::openai::{ChatCompletionRequest, FinishReason, ToolCall};
use inference_club_core::record::{
    BlobRole, EmbeddingsSummary, InferenceRecord, RecordId, ServedBy, Status, UsageSource,
    Visibility,
};
use serde::{Deserialize, Serialize};

use super::{ListPage, ListParams, bad_path, bad_query, json_body, record_member, record_reader};
use crate::api::answers::{raw_bytes_response, safe_media_type};
use crate::error::ApiError;
use crate::store::RecordQuery;
use crate::store::Store;

/// The longest record id accepted in a path (a completion id is 41 characters).
const MAX_ID_CHARS: usize = 64;

/// A record as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordView {
    /// The record id (what `x-club-request-id` carries).
    pub id: RecordId,
    /// Always `club.request`.
    pub object: &'static str,
    /// The completion id derived from it (`chatcmpl-…`), also accepted as `{id}`.
    pub completion_id: String,
    /// The member who made the request, if still a member.
    pub consumer: Option<String>,
    /// The model as requested.
    pub model_requested: String,
    /// The model id the engine served it under.
    pub model_served: Option<String>,
    /// Who served it.
    pub provider: Option<ProviderRef>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: Status,
    /// `public`, `unlisted` or `private`.
    pub visibility: Visibility,
    /// When things happened.
    pub timing: TimingView,
    /// Token counts and where they came from.
    pub usage: UsageView,
    /// The request as the consumer sent it (messages and parameters).
    pub request: ChatCompletionRequest,
    /// The answer as assembled.
    pub response: ResponseView,
    /// Every provider tried, in order.
    pub attempts: Vec<AttemptView>,
    /// Why it failed or was cancelled.
    pub failure: Option<String>,
    /// The endpoint the request was made to (`chat_completions`, `embeddings`, …).
    pub endpoint: Endpoint,
    /// The body of a request to an endpoint other than chat (an uploaded file is a blob).
    pub input: Option<serde_json::Value>,
    /// How many embeddings were answered, and their dimension (the vectors are not kept).
    pub embeddings: Option<EmbeddingsSummary>,
    /// The audio and images of the request and its answer.
    pub blobs: Vec<BlobView>,
    /// The batch (`batch_…`) this request was a line of, if any.
    pub batch: Option<String>,
}

/// An audio file or image of a record.
#[derive(Debug, Clone, Serialize)]
pub struct BlobView {
    /// Its id.
    pub id: String,
    /// `input` (uploaded) or `output` (produced).
    pub role: BlobRole,
    /// Its content type, as it is served: an audio type, a PNG, JPEG, WebP or GIF image, or
    /// `application/octet-stream`.
    pub content_type: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Where to fetch it (under the record's read rules); `null` when it was not kept (over
    /// the size cap, or past the retention period).
    pub url: Option<String>,
}

/// A serving provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderRef {
    /// Its operator's handle.
    pub operator: String,
    /// Its name.
    pub name: String,
    /// The service of the node that ran the model.
    pub service: Option<String>,
}

impl From<&ServedBy> for ProviderRef {
    fn from(served: &ServedBy) -> Self {
        Self {
            operator: served.operator.clone(),
            name: served.provider.clone(),
            service: served.service.clone(),
        }
    }
}

/// Timestamps and the durations derived from them.
#[derive(Debug, Clone, Serialize)]
pub struct TimingView {
    /// Accepted by the coordinator.
    pub received_at: DateTime<Utc>,
    /// Sent to the provider that served it.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// First output.
    pub first_token_at: Option<DateTime<Utc>>,
    /// Final status reached.
    pub finished_at: Option<DateTime<Utc>>,
    /// Milliseconds from acceptance to the final status.
    pub latency_ms: Option<i64>,
    /// Milliseconds from acceptance to the first output.
    pub time_to_first_token_ms: Option<i64>,
}

/// Token counts: `source` is `reported` (by the engine) or `absent` (nothing is estimated).
#[derive(Debug, Clone, Serialize)]
pub struct UsageView {
    /// Where the counts came from.
    pub source: UsageSource,
    /// Tokens in the prompt.
    pub prompt_tokens: Option<u64>,
    /// Tokens generated, reasoning included.
    pub completion_tokens: Option<u64>,
    /// Their sum.
    pub total_tokens: Option<u64>,
    /// Generated tokens spent on reasoning, where reported.
    pub reasoning_tokens: Option<u64>,
}

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseView {
    /// The answer text.
    pub content: Option<String>,
    /// The reasoning trace.
    pub reasoning: Option<String>,
    /// A refusal.
    pub refusal: Option<String>,
    /// Tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// Why generation stopped.
    pub finish_reason: Option<FinishReason>,
}

/// One try at a provider.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    /// Who was tried.
    pub provider: ProviderRef,
    /// When.
    pub started_at: DateTime<Utc>,
    /// Why it failed (`kind`, `message`); `null` for the attempt that served it.
    pub error: Option<AttemptErrorView>,
}

/// The error of a failed attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptErrorView {
    /// Its kind.
    pub kind: String,
    /// What happened.
    pub message: String,
}

impl From<InferenceRecord> for RecordView {
    fn from(record: InferenceRecord) -> Self {
        let counts = record.usage.counts.as_ref();
        Self {
            id: record.id,
            object: "club.request",
            completion_id: record.id.completion_id(),
            consumer: record.consumer.clone(),
            model_requested: record.model_requested.clone(),
            model_served: record.model_served.clone(),
            provider: record
                .served_by
                .as_ref()
                .filter(|s| !s.operator.is_empty())
                .map(ProviderRef::from),
            status: record.status(),
            visibility: record.visibility,
            timing: TimingView {
                received_at: record.timing.received_at,
                dispatched_at: record.timing.dispatched_at,
                first_token_at: record.timing.first_token_at,
                finished_at: record.timing.finished_at,
                latency_ms: record.timing.latency_ms(),
                time_to_first_token_ms: record.timing.time_to_first_token_ms(),
            },
            usage: UsageView {
                source: record.usage.source,
                prompt_tokens: counts.map(|c| c.prompt_tokens),
                completion_tokens: counts.map(|c| c.completion_tokens),
                total_tokens: counts.map(|c| c.total_tokens),
                reasoning_tokens: counts.and_then(|c| c.reasoning_tokens()),
            },
            response: ResponseView {
                content: record.response.content.clone(),
                reasoning: record.response.reasoning.clone(),
                refusal: record.response.refusal.clone(),
                tool_calls: record.response.tool_calls.clone(),
                finish_reason: record.response.finish_reason.clone(),
            },
            attempts: record
                .attempts
                .iter()
                .map(|a| AttemptView {
                    provider: ProviderRef::from(&a.served_by),
                    started_at: a.started_at,
                    error: a.error.as_ref().map(|e| AttemptErrorView {
                        kind: e.kind.clone(),
                        message: e.message.clone(),
                    }),
                })
                .collect(),
            failure: record.failure.clone(),
            endpoint: record.endpoint,
            embeddings: record.embeddings,
            blobs: record
                .blobs
                .iter()
                .map(|blob| BlobView {
                    id: blob.id.clone(),
                    role: blob.role,
                    content_type: safe_media_type(&blob.content_type),
                    bytes: blob.bytes,
                    url: (!blob.dropped).then(|| blob_path(record.id, &blob.id)),
                })
                .collect(),
            batch: record.batch,
            input: record.input,
            request: record.request,
        }
    }
}

/// Where a record's blob is served.
pub(crate) fn blob_path(record: RecordId, blob: &str) -> String {
    format!("/api/v1/requests/{record}/blobs/{blob}")
}

/// The longest blob id accepted in a path.
const MAX_BLOB_ID_CHARS: usize = 64;

/// `GET /api/v1/requests/{id}/blobs/{blob}`: an audio file or image of a record, under the
/// record's read rules (the same 404 for a record or blob that does not exist or may not be
/// seen, or a blob no longer kept).
pub async fn get_blob(
    State(store): State<Store>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let viewer = record_reader(&store, &headers).await?;
    let Path((text, blob_id)) = path.map_err(bad_path)?;
    let id = parse_record_id(&text)?;
    let viewer_id = viewer.map(|c| c.user.id);
    let readable = match store.record(id).await? {
        Some(stored) if stored.readable_by(viewer_id) => stored
            .record
            .blobs
            .iter()
            .any(|b| b.id == blob_id && !b.dropped),
        _ => false,
    };
    let blob = if readable && blob_id.len() <= MAX_BLOB_ID_CHARS {
        store.blob(&blob_id).await?
    } else {
        None
    };
    match blob {
        Some(blob) if blob.record_id == id.to_string() => {
            // Made safe again here: a blob kept before types were checked on the way in may
            // still name one a browser would run.
            let mut response = raw_bytes_response(&safe_media_type(&blob.content_type), blob.data);
            response.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("private, max-age=300"),
            );
            Ok(response)
        }
        _ => Err(ApiError::not_found(
            "blob_not_found",
            format!(
                "No file {blob_id:?} of request {text:?} is kept, or it is not visible to you."
            ),
        )),
    }
}

/// The answer for a record the caller may not see or that does not exist: the same either way.
pub(crate) fn no_such_record(id: &str) -> ApiError {
    ApiError::not_found(
        "request_not_found",
        format!("No request with id {id:?} exists, or it is not visible to you."),
    )
}

/// Reads a record id in UUID or completion-id form (400 otherwise).
pub(crate) fn parse_record_id(text: &str) -> Result<RecordId, ApiError> {
    (text.len() <= MAX_ID_CHARS)
        .then(|| RecordId::parse(text.trim()))
        .flatten()
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request_id",
                "a request id is a UUID or an id derived from it (`chatcmpl-…`, `cmpl-…`, `resp_…`)",
            )
            .with_param("id")
        })
}

/// A page of records as the API shows it.
pub(crate) async fn page(
    store: &Store,
    query: &RecordQuery,
) -> Result<ListPage<RecordView>, ApiError> {
    let page = store.list_records(query).await?;
    Ok(ListPage::new(
        page.items.into_iter().map(RecordView::from).collect(),
        page.next,
    ))
}

/// `GET /api/v1/requests`: the caller's own requests, newest first; filters `model`, `status`,
/// `visibility`; pages by `cursor` and `limit`.
pub async fn list_mine(
    State(store): State<Store>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = record_member(&store, &headers).await?;
    let Query(params) = params.map_err(bad_query)?;
    let query = params.apply(RecordQuery::made_by(caller.user.id), true)?;
    Ok(axum::Json(page(&store, &query).await?).into_response())
}

/// `GET /api/v1/requests/public`: the public feed, for anyone; filters `model` and `status`.
pub async fn public_feed(
    State(store): State<Store>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    record_reader(&store, &headers).await?;
    let Query(params) = params.map_err(bad_query)?;
    let query = params.apply(RecordQuery::public_feed(), false)?;
    Ok(axum::Json(page(&store, &query).await?).into_response())
}

/// `GET /api/v1/requests/{id}`: one record, under the visibility rules.
pub async fn get_one(
    State(store): State<Store>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let viewer = record_reader(&store, &headers).await?;
    let Path(text) = path.map_err(bad_path)?;
    let id = parse_record_id(&text)?;
    let viewer_id = viewer.map(|c| c.user.id);
    match store.record(id).await? {
        Some(stored) if stored.readable_by(viewer_id) => {
            Ok(axum::Json(RecordView::from(stored.record)).into_response())
        }
        _ => Err(no_such_record(&text)),
    }
}

/// The body of `PATCH /api/v1/requests/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VisibilityChange {
    visibility: String,
}

/// `PATCH /api/v1/requests/{id}` with `{"visibility": "public" | "unlisted" | "private"}`: the
/// owner only (anyone else: 404). Answers the updated record.
pub async fn change_visibility(
    State(store): State<Store>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = record_member(&store, &headers).await?;
    let Path(text) = path.map_err(bad_path)?;
    let id = parse_record_id(&text)?;
    let change: VisibilityChange = json_body(body).await?;
    let visibility = super::parse_visibility(&change.visibility)?;
    if !store.set_visibility(id, caller.user.id, visibility).await? {
        return Err(no_such_record(&text));
    }
    match store.record(id).await? {
        Some(stored) => Ok(axum::Json(RecordView::from(stored.record)).into_response()),
        None => Err(no_such_record(&text)),
    }
}

/// `DELETE /api/v1/requests/{id}`: the owner only (anyone else: 404); a hard delete, 204.
pub async fn delete_one(
    State(store): State<Store>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = record_member(&store, &headers).await?;
    let Path(text) = path.map_err(bad_path)?;
    let id = parse_record_id(&text)?;
    if store.delete_record(id, caller.user.id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(no_such_record(&text))
    }
}
