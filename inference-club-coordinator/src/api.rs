//! The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions`, whole and
//! streamed. Every inference response names its record (`x-club-request-id`), and the completion
//! id is derived from it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::StreamExt;
use inference_club_core::openai::{
    ApiError as WireError, ChatCompletion, ChatCompletionAggregator, ChatCompletionChunk,
    ChatCompletionRequest, Model, ModelList,
};
use inference_club_core::provider::{ProviderError, RequestContext};
use inference_club_core::record::{InferenceRecord, RecordId, Status, Visibility};
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::auth::{self, Caller};
use super::dispatch;
use super::error::ApiError;
use super::limits::{self, InFlightSlot};
use super::metrics::RequestLabels;
use super::store::{RoutingPreference, Scope};

/// The header that names a response's record.
pub const REQUEST_ID_HEADER: &str = "x-club-request-id";
/// The header that sets a request's visibility (as does a `visibility` field in the body).
pub const VISIBILITY_HEADER: &str = "x-club-visibility";

/// `GET /v1/models`: the models of online nodes that the caller may use, merged across nodes,
/// with their capabilities (see [`club_api::catalog`](super::club_api::catalog)). Without a key
/// the list is empty (no access policy admits anonymous consumers); a key without the
/// `inference` scope gets 403. A member whose routing preference is `only_own` sees only what
/// their own nodes serve. Counted against the key's request rate.
pub async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let caller = match auth::caller(&state.store, &headers).await {
        Ok(Some(caller)) => match caller.require(Scope::Inference) {
            Ok(caller) => Some(caller),
            Err(error) => return error.into_response(),
        },
        Ok(None) => None,
        Err(error) => return error.into_response(),
    };
    let rate = match &caller {
        Some(caller) => match state.limits.inference(&caller.key.id.to_string()) {
            Ok(rate) => Some(rate),
            Err(throttled) => return throttled.into_response(),
        },
        None => None,
    };
    let handle = caller.as_ref().map(|c| c.user.handle.as_str());
    let mut nodes = state.online_nodes();
    if let Some(caller) = &caller
        && caller.user.routing_preference == RoutingPreference::OnlyOwn
    {
        nodes.retain(|node| node.key().operator_id == caller.user.id);
    }
    let models: BTreeMap<String, Model> = super::club_api::catalog::models_for(&nodes, handle);
    limits::with_rate(
        axum::Json(ModelList::new(models.into_values().collect())).into_response(),
        rate,
    )
}

fn with_request_id(mut response: Response, id: RecordId) -> Response {
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

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

/// A chat body must be JSON: a `Content-Type` other than `application/json` (or a `+json`
/// type) is a 415. A request without one is read as JSON.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
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

fn header_visibility(headers: &HeaderMap) -> Result<Option<Visibility>, ApiError> {
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

/// `POST /v1/chat/completions`.
///
/// The limits come first, before anything is recorded or routed (see [`limits`]): the key's
/// request rate (429 with `Retry-After` and `X-RateLimit-*`), the member's requests in flight
/// (429), the content type (415 unless JSON), the body size (413), the body itself (400: not a
/// chat request, or a sampling parameter out of its documented range), then the messages, their
/// characters and `max_tokens` (400).
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received = Instant::now();
    let caller = match auth::require(&state.store, &headers, Scope::Inference).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    let rate = match state.limits.inference(&caller.key.id.to_string()) {
        Ok(rate) => rate,
        Err(throttled) => return throttled.into_response(),
    };
    let response = limited_chat(state, caller, headers, body, received).await;
    limits::with_rate(response, Some(rate))
}

async fn limited_chat(
    state: Arc<AppState>,
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
    state: Arc<AppState>,
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
    let inserted = match state.store.insert_record_soon(&record).await {
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
    let mut keeper = RecordKeeper {
        state: state.clone(),
        record: Some(record),
        aggregate: ChatCompletionAggregator::new(),
        received,
        streamed: request.is_stream(),
        cancel,
        _slot: slot,
    };
    let preference = caller.user.routing_preference;
    let dispatched = match keeper.record.as_mut() {
        Some(record) => {
            dispatch::dispatch(&state, &engine_request, record, &context, preference).await
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
                state.nodes.forget_departed(record);
                if let Err(error) = state.store.save_progress(record).await {
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

/// Saves a final record: durable when this returns, or, when the database refuses for a reason
/// that may pass (full, restarting), tried again in the background until it lands. Operators
/// who deleted their account while it was in flight are forgotten in it first.
async fn save(state: &AppState, record: &mut InferenceRecord) {
    state.nodes.forget_departed(record);
    match state.store.save_record_or_retry(record).await {
        Ok(()) => {}
        Err(error) if error.is_retryable() => {
            tracing::warn!(id = %record.id, "cannot save a record now, trying again: {error}");
        }
        Err(error) => tracing::error!(id = %record.id, "cannot save a record: {error}"),
    }
}

fn count(state: &AppState, record: &InferenceRecord, streamed: bool, received: Instant) {
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            model: record
                .model_served
                .clone()
                .or_else(|| {
                    record
                        .served_by
                        .as_ref()
                        .map(|_| record.model_requested.to_ascii_lowercase())
                })
                .unwrap_or_else(|| "none".into()),
            status: record.status().as_str().to_owned(),
            mode: if streamed { "stream" } else { "whole" }.to_owned(),
        })
        .inc();
    state
        .metrics
        .latency
        .observe(received.elapsed().as_secs_f64());
}

/// Keeps the record while the answer flows: folds chunks into it, and makes it final exactly
/// once — on success, on failure, or (when dropped early, as when the consumer goes away) as
/// cancelled.
struct RecordKeeper {
    state: Arc<AppState>,
    record: Option<InferenceRecord>,
    aggregate: ChatCompletionAggregator,
    received: Instant,
    streamed: bool,
    cancel: CancellationToken,
    /// The member's in-flight slot, held until the answer is complete.
    _slot: InFlightSlot,
}

impl RecordKeeper {
    fn observe(&mut self, chunk: &ChatCompletionChunk) {
        if let Some(record) = &mut self.record
            && record.timing.first_token_at.is_none()
            && inference_club_core::routing::failover::is_output(chunk)
        {
            record.first_token(Utc::now());
            self.state
                .metrics
                .time_to_first_token
                .observe(self.received.elapsed().as_secs_f64());
        }
        self.aggregate.push(chunk);
    }

    /// Makes the record `failed` before any output (no node could take the request) and saves
    /// it before returning.
    async fn fail(mut self, reason: String) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        let _ = record.failed(reason, None, Utc::now());
        save(&self.state, &mut record).await;
        count(&self.state, &record, self.streamed, self.received);
    }

    /// The answer assembled so far, taking it out of the keeper (no copy).
    fn take_completion(&mut self) -> ChatCompletion {
        std::mem::take(&mut self.aggregate).finish()
    }

    /// Makes the record final with `outcome` and saves it (durably) before returning; gives
    /// back the record and the assembled answer.
    async fn finish(
        mut self,
        outcome: Result<(), &ProviderError>,
    ) -> Option<(InferenceRecord, ChatCompletion)> {
        let mut record = self.record.take()?;
        let completion = self.take_completion();
        let now = Utc::now();
        let _ = match outcome {
            Ok(()) => record.succeeded(&completion, now),
            Err(ProviderError::Cancelled) => record.cancelled("cancelled", Some(&completion), now),
            Err(error) => record.failed(error.to_string(), Some(&completion), now),
        };
        save(&self.state, &mut record).await;
        count(&self.state, &record, self.streamed, self.received);
        Some((record, completion))
    }
}

impl Drop for RecordKeeper {
    fn drop(&mut self) {
        self.cancel.cancel();
        let Some(mut record) = self.record.take() else {
            return;
        };
        let completion = self.take_completion();
        let _ = record.cancelled(
            "the consumer went away before the answer was complete",
            Some(&completion),
            Utc::now(),
        );
        let state = self.state.clone();
        let streamed = self.streamed;
        let received = self.received;
        tokio::spawn(async move {
            save(&state, &mut record).await;
            count(&state, &record, streamed, received);
        });
    }
}

fn sse_event(json: &impl serde::Serialize) -> Bytes {
    let mut line = b"data: ".to_vec();
    if serde_json::to_writer(&mut line, json).is_err() {
        line.clear();
        line.extend_from_slice(b"data: {}");
    }
    line.extend_from_slice(b"\n\n");
    Bytes::from(line)
}

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
    mut stream: inference_club_core::provider::ChunkStream,
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
                        yield Ok::<Bytes, Infallible>(sse_event(&chunk));
                    }
                }
                Some(Err(error)) => {
                    let record = keeper.finish(Err(&error)).await;
                    let api = ApiError::from_provider(&error);
                    let mut wire: WireError = api.error;
                    if record.is_some_and(|(r, _)| r.status() == Status::Cancelled) {
                        wire.code = Some("cancelled".into());
                    }
                    yield Ok(sse_event(&wire.into_response()));
                    yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
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
    mut stream: inference_club_core::provider::ChunkStream,
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
