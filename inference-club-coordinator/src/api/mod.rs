//! The OpenAI-compatible API (`/v1/…`): one module per endpoint family. Every inference
//! answer names its record (`x-club-request-id`), which [`recording`] keeps from the moment the
//! request is accepted until it is final.

pub(crate) mod answers;
pub(crate) mod batches;
pub(crate) mod calls;
pub(crate) mod chat;
pub(crate) mod files;
pub(crate) mod idempotency;
pub(crate) mod models;
pub(crate) mod multipart;
pub(crate) mod openapi;
pub(crate) mod recording;
pub(crate) mod responses;
pub(crate) mod serve;

use inference_club_core::endpoint::Endpoint;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use inference_club_core::record::{RecordId, Visibility};

pub(crate) use self::recording::Recorder;
use crate::error::ApiError;

/// The header that names a response's record.
pub const REQUEST_ID_HEADER: &str = "x-club-request-id";
/// The header that sets a request's visibility (as does a `visibility` field in the body).
pub const VISIBILITY_HEADER: &str = "x-club-visibility";

/// `response` with the `x-club-request-id` header naming record `id`.
fn with_request_id(mut response: Response, id: RecordId) -> Response {
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// A chat body must be JSON: a `Content-Type` other than `application/json` (or a `+json`
/// type) is a 415. A request without one is read as JSON.
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request_error",
        "unsupported_media_type",
        format!(
            "the body must be JSON, sent with `Content-Type: application/json`; got {:?}",
            String::from_utf8_lossy(value.as_bytes())
        ),
    ))
}

pub(crate) fn header_visibility(headers: &HeaderMap) -> Result<Option<Visibility>, ApiError> {
    headers
        .get(VISIBILITY_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<Visibility>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_visibility",
                        "x-club-visibility must be public, unlisted or private",
                    )
                })
        })
        .transpose()
}

/// Serves a request to `endpoint` whose caller was admitted otherwise (a batch's line): the
/// path an HTTP request takes after admission, the answer as HTTP would give it.
pub(crate) async fn serve_endpoint(
    parts: &serve::Parts,
    config: &crate::CoordinatorConfig,
    endpoint: Endpoint,
    admission: serve::Admission,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Response> {
    match endpoint {
        Endpoint::ChatCompletions => chat::limited_chat(parts, admission, headers, body).await,
        Endpoint::Responses => responses::serve_response(parts, admission, headers, body).await,
        other => calls::serve_call(parts, config, other, admission, headers, body).await,
    }
}
