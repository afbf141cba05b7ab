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
    ApiError as WireError, ChatCompletionChunk, ChatCompletionRequest,
};
use inference_club_core::provider::{ChunkStream, ProviderError};
use inference_club_core::record::{InferenceRecord, RecordId, Status, Visibility};

use super::recording::RecordKeeper;
use super::serve::{self, Admission, Parts};
use super::{check_content_type, with_request_id};
use crate::dispatch::{Answer, Work};
use crate::error::ApiError;

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
    let started = start_chat(parts, admission, record, &request).await?;
    let chunks = match started.answer {
        Answer::Chat(chunks) => chunks,
        Answer::Call(_) => return Err(serve::shape_error("chat", "a call's answer", started.id)),
    };
    Ok(if request.is_stream() {
        stream_response(
            started.keeper,
            chunks,
            request.wants_stream_usage(),
            started.id,
        )
    } else {
        whole_response(started.keeper, chunks, started.id).await
    })
}

/// Records and dispatches a chat `request` (also the translation of a Responses request): the
/// node always streams, with usage (usage is always recorded); what the consumer gets is
/// decided by the caller.
pub(crate) async fn start_chat(
    parts: &Parts,
    admission: Admission,
    record: InferenceRecord,
    request: &ChatCompletionRequest,
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
        Work::Chat(&engine_request),
        request.is_stream(),
    )
    .await
}

/// One SSE event `data: {json}`, or the serializer's error (a chunk that cannot be written:
/// the stream ends with an error event instead).
pub(crate) fn sse_event(json: &impl serde::Serialize) -> Result<Bytes, serde_json::Error> {
    let mut line = Vec::new();
    write_sse_event(&mut line, json)?;
    Ok(Bytes::from(line))
}

/// Appends the SSE event `data: {json}` to `out` (nothing, on the serializer's error).
fn write_sse_event(
    out: &mut Vec<u8>,
    json: &impl serde::Serialize,
) -> Result<(), serde_json::Error> {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    if let Err(error) = serde_json::to_writer(&mut *out, json) {
        out.truncate(start);
        return Err(error);
    }
    out.extend_from_slice(b"\n\n");
    Ok(())
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
            // What the node has sent by now goes out in one piece: one write, not one per chunk
            // (a chunk that has not come yet is not waited for).
            let mut out: Vec<u8> = Vec::new();
            let mut next = stream.next().await;
            loop {
                match next {
                    Some(Ok(chunk)) => {
                        keeper.observe(&chunk);
                        if let Some(chunk) = for_consumer(chunk, &completion_id, wants_usage)
                            && let Err(error) = write_sse_event(&mut out, &chunk)
                        {
                            let failure = ProviderError::Protocol {
                                message: format!("the coordinator could not write a chunk: {error}"),
                            };
                            keeper.finish(Err(&failure)).await;
                            out.extend_from_slice(UNWRITABLE_CHUNK);
                            yield Ok::<Bytes, Infallible>(Bytes::from(out));
                            return;
                        }
                    }
                    Some(Err(error)) => {
                        let record = keeper.finish(Err(&error)).await;
                        let api = ApiError::from_provider(&error);
                        let mut wire: WireError = api.error;
                        if record.is_some_and(|(r, _)| r.status() == Status::Cancelled) {
                            wire.code = Some("cancelled".into());
                        }
                        match write_sse_event(&mut out, &wire.into_response()) {
                            Ok(()) => out.extend_from_slice(b"data: [DONE]\n\n"),
                            Err(_) => out.extend_from_slice(UNWRITABLE_CHUNK),
                        }
                        yield Ok(Bytes::from(out));
                        return;
                    }
                    None => {
                        keeper.finish(Ok(())).await;
                        out.extend_from_slice(b"data: [DONE]\n\n");
                        yield Ok(Bytes::from(out));
                        return;
                    }
                }
                match stream.next().now_or_never() {
                    Some(item) => next = item,
                    None => break,
                }
            }
            if !out.is_empty() {
                yield Ok(Bytes::from(out));
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
