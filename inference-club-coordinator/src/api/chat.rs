//! `POST /v1/chat/completions`, whole and streamed. Every answer names its record
//! (`x-club-request-id`), and the completion id is derived from it.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use inference_club_core::openai::{
    ApiError as WireError, ChatCompletionRequest, ConsumerEvents, write_data_event,
};
use inference_club_core::provider::ChunkStream;
use inference_club_core::record::{InferenceRecord, RecordId, Status, Visibility};

use super::recording::RecordKeeper;
use super::serve::{self, Admission, Parts};
use super::{check_content_type, with_request_id};
use crate::dispatch::{Answer, Work};
use crate::error::ApiError;
use crate::streamed::{Streamed, StreamedAnswer};

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
    State(parts): State<Parts>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve::admitted(&parts, &headers, |admission| {
        limited_chat(&parts, admission, &headers, body)
    })
    .await
}

pub(crate) async fn limited_chat(
    parts: &Parts,
    admission: Admission,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let caller = &admission.caller;
    check_content_type(headers).map_err(IntoResponse::into_response)?;
    let max_body = parts.limits.limits().max_body_bytes;
    let bytes = serve::read_body(body, max_body, "max_body_bytes").await?;
    let (request, body_visibility) = parse_request(&bytes).map_err(IntoResponse::into_response)?;
    parts
        .limits
        .check_request(&request)
        .map_err(IntoResponse::into_response)?;
    let visibility =
        serve::visibility(body_visibility, headers, caller).map_err(IntoResponse::into_response)?;
    let record = InferenceRecord::new(
        RecordId::new(),
        Some(caller.user.handle.clone()),
        request.clone(),
        visibility,
        Utc::now(),
    );
    let events = request.is_stream().then(|| ConsumerEvents {
        completion_id: record.id.completion_id(),
        include_usage: request.wants_stream_usage(),
    });
    let started = start_chat(parts, admission, record, &request, events.as_ref()).await?;
    match started.answer {
        Answer::Streamed(pieces) => Ok(stream_response(started.keeper, pieces, started.id)),
        Answer::Chat(chunks) if events.is_none() => {
            Ok(whole_response(started.keeper, chunks, started.id).await)
        }
        Answer::Chat(_) | Answer::Call(_) => Err(serve::shape_error(
            "chat",
            "an answer of the wrong kind",
            started.id,
        )),
    }
}

/// Records and dispatches a chat `request` (also the translation of a Responses request): the
/// node always streams, with usage (usage is always recorded). The answer is the consumer's
/// events, written as `events` says, when given; otherwise chunks, and what the consumer gets
/// is decided by the caller.
pub(crate) async fn start_chat(
    parts: &Parts,
    admission: Admission,
    record: InferenceRecord,
    request: &ChatCompletionRequest,
    events: Option<&ConsumerEvents>,
) -> Result<serve::Started, Response> {
    let mut engine_request = request.clone();
    engine_request.stream = Some(true);
    engine_request
        .stream_options
        .get_or_insert_with(Default::default)
        .include_usage = Some(true);
    serve::start(
        parts,
        admission,
        record,
        match events {
            Some(events) => Work::Streamed(&engine_request, events),
            None => Work::Chat(&engine_request),
        },
        request.is_stream(),
    )
    .await
}

/// One SSE event `data: {json}`, or the serializer's error (a chunk that cannot be written:
/// the stream ends with an error event instead).
pub(crate) fn sse_event(json: &impl serde::Serialize) -> Result<Bytes, serde_json::Error> {
    let mut line = Vec::new();
    write_data_event(&mut line, json)?;
    Ok(Bytes::from(line))
}

/// The error event that ends a stream whose chunk could not be written.
const UNWRITABLE_CHUNK: &[u8] = b"data: {\"error\":{\"message\":\"the coordinator could not write a chunk of the answer\",\"type\":\"server_error\",\"param\":null,\"code\":\"unwritable_chunk\"}}\n\ndata: [DONE]\n\n";

/// What goes to the consumer in one write: the events that came by then, copied together only
/// when there is more than one piece.
#[derive(Default)]
struct Batch {
    first: Option<Bytes>,
    more: Vec<u8>,
}

impl Batch {
    fn push(&mut self, sse: Bytes) {
        if sse.is_empty() {
            return;
        }
        match self.first.take() {
            None if self.more.is_empty() => self.first = Some(sse),
            first => {
                if let Some(first) = first {
                    self.more.extend_from_slice(&first);
                }
                self.more.extend_from_slice(&sse);
            }
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        if let Some(first) = self.first.take() {
            self.more.extend_from_slice(&first);
        }
        self.more.extend_from_slice(bytes);
    }

    /// The batch in one piece (`None` when it is empty); the batch is empty after.
    fn take(&mut self) -> Option<Bytes> {
        match self.first.take() {
            Some(first) => Some(first),
            None if self.more.is_empty() => None,
            None => Some(Bytes::from(std::mem::take(&mut self.more))),
        }
    }
}

/// A streamed chat: the events as they come (several in one write when they came together),
/// then `[DONE]`; an error ends the stream with an error event.
fn stream_response(mut keeper: RecordKeeper, mut stream: StreamedAnswer, id: RecordId) -> Response {
    let body = async_stream::stream! {
        loop {
            // What has come by now goes out in one piece: one write, not one per event (what
            // has not come yet is not waited for).
            let mut batch = Batch::default();
            let mut next = stream.next().await;
            loop {
                match next {
                    Some(Ok(Streamed::Events { sse, output })) => {
                        keeper.observe_events(&sse, output);
                        batch.push(sse);
                    }
                    Some(Ok(Streamed::Chunk { chunk, sse })) => {
                        keeper.observe(&chunk);
                        batch.push(sse);
                    }
                    Some(Ok(Streamed::Answer(answer))) => keeper.observe_answer(&answer),
                    Some(Err(error)) => {
                        let record = keeper.finish(Err(&error)).await;
                        let api = ApiError::from_provider(&error);
                        let mut wire: WireError = api.error;
                        if record.is_some_and(|(r, _)| r.status() == Status::Cancelled) {
                            wire.code = Some("cancelled".into());
                        }
                        let mut end = Vec::new();
                        match write_data_event(&mut end, &wire.into_response()) {
                            Ok(()) => end.extend_from_slice(b"data: [DONE]\n\n"),
                            Err(_) => end.extend_from_slice(UNWRITABLE_CHUNK),
                        }
                        batch.extend(&end);
                        if let Some(bytes) = batch.take() {
                            yield Ok::<Bytes, Infallible>(bytes);
                        }
                        return;
                    }
                    None => {
                        keeper.finish(Ok(())).await;
                        batch.extend(b"data: [DONE]\n\n");
                        if let Some(bytes) = batch.take() {
                            yield Ok(bytes);
                        }
                        return;
                    }
                }
                match stream.next().now_or_never() {
                    Some(item) => next = item,
                    None => break,
                }
            }
            if let Some(bytes) = batch.take() {
                yield Ok(bytes);
            }
        }
    };
    serve::event_stream(body, id)
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
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
    }
}
