//! `POST /v1/chat/completions`, whole and streamed. Every answer names its record
//! (`x-club-request-id`), and the completion id is derived from it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::StreamExt;
use inference_club_core::openai::{
    ApiError as WireError, ChatCompletionChunk, ChatCompletionRequest,
};
use inference_club_core::provider::{ChunkStream, ProviderError, RequestContext};
use inference_club_core::record::{InferenceRecord, RecordId, Status, Visibility};
use tokio_util::sync::CancellationToken;

use super::recording::{RecordKeeper, Recorder};
use super::{check_content_type, header_visibility, with_request_id};
use crate::auth::{self, Caller};
use crate::dispatch::{self, Dispatcher};
use crate::error::ApiError;
use crate::limits::{self, InFlightSlot, Limiter};
use crate::store::Scope;

/// Reads the body of a chat request as `POST /v1/chat/completions` does: the request, and the
/// visibility its `visibility` field asks for (taken out of the request). A body that is not a
/// chat request, names no model or has no messages is a 400 saying so. The size limits come
/// after this ([`Limiter::check_request`](super::limits::Limiter::check_request)). Public for the
/// fuzz target `chat_request`.
pub fn parse_request(body: &[u8]) -> Result<(ChatCompletionRequest, Option<Visibility>), ApiError> {
    let mut request: ChatCompletionRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not a valid chat request: {e}"),
        )
    })?;
    if request.model.trim().is_empty() {
        return Err(
            ApiError::bad_request("missing_model", "`model` is required").with_param("model"),
        );
    }
    if request.messages.is_empty() {
        return Err(
            ApiError::bad_request("empty_messages", "`messages` must not be empty")
                .with_param("messages"),
        );
    }
    check_ranges(&request)?;
    let visibility = match request.extra.remove("visibility") {
        None => None,
        Some(serde_json::Value::String(name)) => {
            Some(name.parse::<Visibility>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_visibility",
                    format!("visibility must be public, unlisted or private, got {name:?}"),
                )
                .with_param("visibility")
            })?)
        }
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_visibility", "visibility must be a string")
                    .with_param("visibility"),
            );
        }
    };
    Ok((request, visibility))
}

/// The ranges the OpenAI API documents for the sampling parameters: a value outside is a 400
/// naming the parameter (an engine would refuse it, or worse, accept it silently).
fn check_ranges(request: &ChatCompletionRequest) -> Result<(), ApiError> {
    let ranges = [
        ("temperature", request.temperature, 0.0, 2.0),
        ("top_p", request.top_p, 0.0, 1.0),
        ("presence_penalty", request.presence_penalty, -2.0, 2.0),
        ("frequency_penalty", request.frequency_penalty, -2.0, 2.0),
    ];
    for (param, value, low, high) in ranges {
        if let Some(value) = value
            && !(low..=high).contains(&value)
        {
            return Err(ApiError::bad_request(
                "invalid_value",
                format!("`{param}` must be between {low} and {high}, got {value}"),
            )
            .with_param(param));
        }
    }
    if request.n == Some(0) {
        return Err(
            ApiError::bad_request("invalid_value", "`n` must be at least 1, got 0").with_param("n"),
        );
    }
    Ok(())
}

/// `POST /v1/chat/completions`.
///
/// The limits come first, before anything is recorded or routed (see [`limits`]): the key's
/// request rate (429 with `Retry-After` and `X-RateLimit-*`), the member's requests in flight
/// (429), the content type (415 unless JSON), the body size (413), the body itself (400: not a
/// chat request, or a sampling parameter out of its documented range), then the messages, their
/// characters and `max_tokens` (400).
pub async fn chat_completions(
    State(limits): State<Arc<Limiter>>,
    State(dispatcher): State<Arc<Dispatcher>>,
    State(recorder): State<Arc<Recorder>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received = Instant::now();
    let caller = match auth::require(recorder.store(), &headers, Scope::Inference).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    let rate = match limits.inference(&caller.key.id.to_string()) {
        Ok(rate) => rate,
        Err(throttled) => return throttled.into_response(),
    };
    let parts = Parts {
        limits,
        dispatcher,
        recorder,
    };
    let response = limited_chat(parts, caller, headers, body, received).await;
    limits::with_rate(response, Some(rate))
}

/// What serving a chat uses.
struct Parts {
    limits: Arc<Limiter>,
    dispatcher: Arc<Dispatcher>,
    recorder: Arc<Recorder>,
}

async fn limited_chat(
    state: Parts,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
    received: Instant,
) -> Response {
    let slot = match state.limits.enter(caller.user.id) {
        Ok(slot) => slot,
        Err(throttled) => return throttled.into_response(),
    };
    if let Err(error) = check_content_type(&headers) {
        return error.into_response();
    }
    let max_body = state.limits.limits().max_body_bytes;
    let too_large = || {
        ApiError::too_large(format!(
            "the body is larger than {max_body} bytes (max_body_bytes)"
        ))
        .into_response()
    };
    // A declared length over the limit is refused at once, without waiting for the body.
    let declared = axum::body::HttpBody::size_hint(&body).lower();
    if usize::try_from(declared).map_or(true, |declared| declared > max_body) {
        return too_large();
    }
    let Ok(bytes) = axum::body::to_bytes(body, max_body).await else {
        return too_large();
    };
    let (request, body_visibility) = match parse_request(&bytes) {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    if let Err(error) = state.limits.check_request(&request) {
        return error.into_response();
    }
    let visibility = match header_visibility(&headers) {
        Ok(v) => body_visibility
            .or(v)
            .unwrap_or(caller.user.default_visibility),
        Err(error) => return error.into_response(),
    };
    serve_chat(state, caller, request, visibility, received, slot).await
}

async fn serve_chat(
    state: Parts,
    caller: Caller,
    request: ChatCompletionRequest,
    visibility: Visibility,
    received: Instant,
    slot: InFlightSlot,
) -> Response {
    let id = RecordId::new();
    let record = InferenceRecord::new(
        id,
        Some(caller.user.handle.clone()),
        request.clone(),
        visibility,
        Utc::now(),
    );
    // The insert is committed while the request is dispatched; it is awaited before anything
    // of the answer leaves, so no consumer sees a request id without its record.
    let inserted = match state.recorder.store().insert_record_soon(&record).await {
        Ok(pending) => pending,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let cancel = CancellationToken::new();
    let mut context = RequestContext::new(id.to_string()).with_consumer(caller.user.handle.clone());
    context.cancel = cancel.clone();
    let mut engine_request = request.clone();
    // The node always streams, with usage (usage is always recorded); what the consumer gets
    // is decided here.
    engine_request.stream = Some(true);
    engine_request
        .stream_options
        .get_or_insert_with(Default::default)
        .include_usage = Some(true);
    // The keeper holds the record from here on: if the consumer goes away while the request
    // waits in the queue or for its first output, dropping it makes the record cancelled.
    let mut keeper = state
        .recorder
        .keeper(record, received, request.is_stream(), cancel, slot);
    let preference = caller.user.routing_preference;
    let dispatched = match keeper.record.as_mut() {
        Some(record) => {
            dispatch::dispatch(
                &state.dispatcher,
                &engine_request,
                record,
                &context,
                preference,
            )
            .await
        }
        None => Err(ApiError::internal("dispatch", "the record is gone")),
    };
    if let Err(error) = inserted.committed().await {
        // No record, so nothing to save: the keeper only cancels the job it started.
        keeper.record = None;
        return ApiError::from(error).into_response();
    }
    let stream = match dispatched {
        Ok(stream) => {
            // Saved as running, with the node serving it and the attempts so far: what a crash
            // of the coordinator leaves behind (to become failed at the next start). A progress
            // save: not awaited, and not written at all if the request ends first.
            if let Some(record) = keeper.record.as_mut() {
                state.recorder.forget_departed(record);
                if let Err(error) = state.recorder.store().save_progress(record).await {
                    tracing::error!(id = %record.id, "cannot save a record: {error}");
                }
            }
            stream
        }
        Err(error) => {
            keeper.fail(error.error.message.clone()).await;
            return with_request_id(error.into_response(), id);
        }
    };
    if request.is_stream() {
        stream_response(keeper, stream, request.wants_stream_usage(), id)
    } else {
        whole_response(keeper, stream, id).await
    }
}

/// One SSE event `data: {json}`, or the serializer's error (a chunk that cannot be written:
/// the stream ends with an error event instead).
fn sse_event(json: &impl serde::Serialize) -> Result<Bytes, serde_json::Error> {
    let mut line = b"data: ".to_vec();
    serde_json::to_writer(&mut line, json)?;
    line.extend_from_slice(b"\n\n");
    Ok(Bytes::from(line))
}

/// The error event that ends a stream whose chunk could not be written.
const UNWRITABLE_CHUNK: &[u8] = b"data: {\"error\":{\"message\":\"the coordinator could not write a chunk of the answer\",\"type\":\"server_error\",\"param\":null,\"code\":\"unwritable_chunk\"}}\n\ndata: [DONE]\n\n";

/// Rewrites an engine's chunk for the consumer: the record's completion id, and usage only when
/// asked for.
fn for_consumer(
    mut chunk: ChatCompletionChunk,
    completion_id: &str,
    wants_usage: bool,
) -> Option<ChatCompletionChunk> {
    chunk.id = completion_id.to_owned();
    if !wants_usage {
        chunk.usage = None;
        if chunk.choices.is_empty() {
            return None;
        }
    }
    Some(chunk)
}

fn stream_response(
    mut keeper: RecordKeeper,
    mut stream: ChunkStream,
    wants_usage: bool,
    id: RecordId,
) -> Response {
    let completion_id = id.completion_id();
    let body = async_stream::stream! {
        loop {
            match stream.next().await {
                Some(Ok(chunk)) => {
                    keeper.observe(&chunk);
                    if let Some(chunk) = for_consumer(chunk, &completion_id, wants_usage) {
                        match sse_event(&chunk) {
                            Ok(event) => yield Ok::<Bytes, Infallible>(event),
                            Err(error) => {
                                let failure = ProviderError::Protocol {
                                    message: format!(
                                        "the coordinator could not write a chunk: {error}"
                                    ),
                                };
                                keeper.finish(Err(&failure)).await;
                                yield Ok(Bytes::from_static(UNWRITABLE_CHUNK));
                                return;
                            }
                        }
                    }
                }
                Some(Err(error)) => {
                    let record = keeper.finish(Err(&error)).await;
                    let api = ApiError::from_provider(&error);
                    let mut wire: WireError = api.error;
                    if record.is_some_and(|(r, _)| r.status() == Status::Cancelled) {
                        wire.code = Some("cancelled".into());
                    }
                    match sse_event(&wire.into_response()) {
                        Ok(event) => {
                            yield Ok(event);
                            yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
                        }
                        Err(_) => yield Ok(Bytes::from_static(UNWRITABLE_CHUNK)),
                    }
                    return;
                }
                None => {
                    keeper.finish(Ok(())).await;
                    yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
                    return;
                }
            }
        }
    };
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(body));
    match response {
        Ok(response) => with_request_id(response, id),
        Err(error) => ApiError::internal("building a stream", error).into_response(),
    }
}

async fn whole_response(
    mut keeper: RecordKeeper,
    mut stream: ChunkStream,
    id: RecordId,
) -> Response {
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => keeper.observe(&chunk),
            Err(error) => {
                keeper.finish(Err(&error)).await;
                return with_request_id(ApiError::from_provider(&error).into_response(), id);
            }
        }
    }
    let Some((_, mut completion)) = keeper.finish(Ok(())).await else {
        return with_request_id(
            ApiError::internal("answer", "the record was already final").into_response(),
            id,
        );
    };
    completion.id = id.completion_id();
    with_request_id(axum::Json(completion).into_response(), id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_field_is_taken_out_of_the_request() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"visibility":"private","top_k":3}"#;
        let (request, visibility) = parse_request(body).unwrap();
        assert_eq!(visibility, Some(Visibility::Private));
        assert!(!request.extra.contains_key("visibility"));
        assert!(request.extra.contains_key("top_k"));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let e = parse_request(br#"{"model":"m","messages":[]}"#).unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("messages"));
        let e = parse_request(br#"{"model":"","messages":[{"role":"user","content":"x"}]}"#)
            .unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("model"));
        let e = parse_request(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"visibility":"secret"}"#,
        )
        .unwrap_err();
        assert_eq!(e.error.code.as_deref(), Some("invalid_visibility"));
        let e = parse_request(b"not json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
