//! `POST /v1/responses`: OpenAI's Responses API, text in and text out, served by chat engines.
//! The request is translated to chat ([`responses::to_chat`]), dispatched and recorded as chat
//! is (the record says its endpoint was `responses` and keeps the body as sent), and the chat
//! answer is turned back into a Response object or its stream of events.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::StreamExt;
use inference_club_core::endpoint::Endpoint;
use inference_club_core::openai::responses::{self, ResponseStreamer, ResponsesRequest};
use inference_club_core::provider::{ChunkStream, ProviderError};
use inference_club_core::record::{InferenceRecord, RecordId, Visibility};
use serde_json::Value;

use super::chat::start_chat;
use super::recording::RecordKeeper;
use super::serve::{self, Admission, Parts};
use super::{check_content_type, with_request_id};
use crate::dispatch::Answer;
use crate::error::ApiError;

/// `POST /v1/responses`, whole or streamed (`"stream": true`). The limits are chat's: a body
/// that is not a Responses request, or whose input is not text, is a 400.
pub async fn create(State(parts): State<Parts>, headers: HeaderMap, body: Body) -> Response {
    serve::admitted(&parts, &headers, |admission| {
        serve_response(&parts, admission, &headers, body)
    })
    .await
}

/// Reads a Responses body: the request (its `model` required), and the visibility its
/// `visibility` field asks for (taken out).
fn parse(bytes: &[u8]) -> Result<(ResponsesRequest, Value, Option<Visibility>), ApiError> {
    let mut body: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let visibility = match body.as_object_mut().and_then(|b| b.remove("visibility")) {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.parse::<Visibility>().map_err(|_| {
            ApiError::bad_request(
                "invalid_visibility",
                format!("visibility must be public, unlisted or private, got {name:?}"),
            )
            .with_param("visibility")
        })?),
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_visibility", "visibility must be a string")
                    .with_param("visibility"),
            );
        }
    };
    if body
        .get("model")
        .and_then(Value::as_str)
        .is_none_or(|m| m.trim().is_empty())
    {
        return Err(
            ApiError::bad_request("missing_model", "`model` is required (a string)")
                .with_param("model"),
        );
    }
    let request: ResponsesRequest = serde_json::from_value(body.clone()).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("the body is not a Responses request: {e}"),
        )
    })?;
    Ok((request, body, visibility))
}

pub(crate) async fn serve_response(
    parts: &Parts,
    admission: Admission,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let caller = &admission.caller;
    check_content_type(headers).map_err(IntoResponse::into_response)?;
    let max_body = parts.limits.limits().max_body_bytes;
    let bytes = serve::read_body(body, max_body, "max_body_bytes").await?;
    let (request, input, visibility) = parse(&bytes).map_err(IntoResponse::into_response)?;
    let chat = responses::to_chat(&request).map_err(|message| {
        ApiError::bad_request("unsupported_input", message)
            .with_param("input")
            .into_response()
    })?;
    parts
        .limits
        .check_request(&chat)
        .map_err(IntoResponse::into_response)?;
    let visibility =
        serve::visibility(visibility, headers, caller).map_err(IntoResponse::into_response)?;
    let mut record = InferenceRecord::new(
        RecordId::new(),
        Some(caller.user.handle.clone()),
        chat.clone(),
        visibility,
        Utc::now(),
    );
    record.endpoint = Endpoint::Responses;
    record.input = Some(input);
    let started = start_chat(parts, admission, record, &chat, None).await?;
    let chunks = match started.answer {
        Answer::Chat(chunks) => chunks,
        Answer::Call(_) | Answer::Streamed(_) => {
            return Err(serve::shape_error(
                "responses",
                "a call's answer",
                started.id,
            ));
        }
    };
    let created_at = Utc::now().timestamp();
    Ok(if request.is_stream() {
        let streamer = ResponseStreamer::new(
            &started.id.response_id(),
            created_at,
            &request.model,
            &request,
        );
        stream_events(started.keeper, chunks, streamer, started.id)
    } else {
        whole(started.keeper, chunks, &request, created_at, started.id).await
    })
}

/// The whole Response object, once the chat answer is complete.
async fn whole(
    mut keeper: RecordKeeper,
    mut chunks: ChunkStream,
    request: &ResponsesRequest,
    created_at: i64,
    id: RecordId,
) -> Response {
    while let Some(item) = chunks.next().await {
        match item {
            Ok(chunk) => keeper.observe(&chunk),
            Err(error) => {
                keeper.finish(Err(&error)).await;
                return with_request_id(ApiError::from_provider(&error).into_response(), id);
            }
        }
    }
    let Some((_, completion)) = keeper.finish(Ok(())).await else {
        return serve::shape_error("answer", "the record was already final", id);
    };
    let object = responses::response_object(
        &id.response_id(),
        created_at,
        &request.model,
        request,
        &completion,
    );
    with_request_id(axum::Json(object).into_response(), id)
}

/// One event as SSE: `event: <type>` and `data: <json>`.
fn event_bytes(events: Vec<Value>) -> Bytes {
    let mut out = Vec::new();
    for event in events {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(responses::event_name(&event).as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // A Value always serializes.
        let _ = serde_json::to_writer(&mut out, &event);
        out.extend_from_slice(b"\n\n");
    }
    Bytes::from(out)
}

/// The stream of Responses events: `response.created`, the text as it comes, then
/// `response.completed` (or `response.failed` when the engine fails after output started).
fn stream_events(
    mut keeper: RecordKeeper,
    mut chunks: ChunkStream,
    mut streamer: ResponseStreamer,
    id: RecordId,
) -> Response {
    let body = async_stream::stream! {
        yield Ok::<Bytes, Infallible>(event_bytes(streamer.start()));
        loop {
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    keeper.observe(&chunk);
                    let events = streamer.push(&chunk);
                    if !events.is_empty() {
                        yield Ok(event_bytes(events));
                    }
                }
                Some(Err(error)) => {
                    keeper.finish(Err(&error)).await;
                    let message = match &error {
                        ProviderError::Cancelled => "cancelled".to_owned(),
                        other => other.to_string(),
                    };
                    yield Ok(event_bytes(streamer.fail(&message)));
                    return;
                }
                None => {
                    keeper.finish(Ok(())).await;
                    yield Ok(event_bytes(streamer.finish()));
                    return;
                }
            }
        }
    };
    serve::event_stream(body, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_with_their_visibility() {
        let (request, body, visibility) =
            parse(br#"{"model":"m","input":"hi","visibility":"unlisted"}"#).unwrap();
        assert_eq!(request.model, "m");
        assert_eq!(visibility, Some(Visibility::Unlisted));
        assert!(body.get("visibility").is_none());
        assert!(parse(br#"{"input":"hi"}"#).is_err());
        assert!(parse(br#"{"model":"","input":"hi"}"#).is_err());
        assert!(parse(br#"{"model":"m","input":"hi","visibility":"x"}"#).is_err());
    }
}
