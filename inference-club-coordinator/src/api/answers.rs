//! What the engine of a call is asked, and how its answer goes back to the consumer and into
//! the record: text completions (whole and streamed), embeddings (floats or base64; the record
//! keeps their count and dimensions, not the vectors), speech and images (kept as blobs with the
//! record, up to a size cap), and transcriptions.
//!
//! The engine is always asked for what the club can read and keep — floats for embeddings,
//! `b64_json` for images, usage with a streamed completion — and the answer is turned into what
//! the consumer asked for here.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::StreamExt;
use inference_club_core::endpoint::Endpoint;
use inference_club_core::openai::{ChatCompletionChunk, ChunkDelta, FinishReason, Usage};
use inference_club_core::provider::{Call, CallOutput, CallStream, ProviderError};
use inference_club_core::record::{BlobRef, BlobRole, EmbeddingsSummary, RecordId};
use serde_json::{Value, json};
use url::Url;

use super::chat::sse_event;
use super::recording::RecordKeeper;
use super::with_request_id;
use crate::error::ApiError;
use crate::store::Store;

/// What the consumer asked for beyond the engine's answer.
#[derive(Debug, Clone)]
pub(crate) struct Shaping {
    /// A streamed completion: include the usage chunk.
    stream_usage: bool,
    /// Embeddings as base64 strings of little-endian `f32`s.
    base64: bool,
    /// Images as URLs under this base (the coordinator's own), not inline.
    image_urls: Option<String>,
}

impl Shaping {
    /// What `call` asks for; image URLs are made under `public_url`, or else the `Host` the
    /// request came to.
    pub fn of(call: &Call, public_url: Option<&Url>, headers: &HeaderMap) -> Self {
        let field = |name: &str| call.body.get(name).and_then(Value::as_str);
        let image_urls = (call.endpoint == Endpoint::ImagesGenerations
            && field("response_format") == Some("url"))
        .then(|| match public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("127.0.0.1");
                format!("http://{host}")
            }
        });
        Self {
            stream_usage: call
                .body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            base64: field("encoding_format") == Some("base64"),
            image_urls,
        }
    }
}

/// The call the engine gets: a streamed completion asks for usage, embeddings for floats,
/// images for `b64_json`.
pub(crate) fn for_engine(call: &Call) -> Call {
    let mut call = call.clone();
    if let Some(body) = call.body.as_object_mut() {
        match call.endpoint {
            Endpoint::Completions if body.get("stream") == Some(&Value::Bool(true)) => {
                body.insert("stream_options".into(), json!({"include_usage": true}));
            }
            Endpoint::Embeddings => {
                body.remove("encoding_format");
            }
            Endpoint::ImagesGenerations => {
                body.insert("response_format".into(), json!("b64_json"));
            }
            _ => {}
        }
    }
    call
}

/// What answering needs besides the stream.
pub(crate) struct Context {
    pub store: Store,
    pub max_blob_bytes: usize,
    pub id: RecordId,
}

/// What raw bytes of unknown or unsafe kind are served as.
const OCTET_STREAM: &str = "application/octet-stream";

/// The policy of every raw-bytes answer served from the coordinator's origin (blobs, speech,
/// text transcripts): no script, no subresource, a unique origin even if a browser renders it.
const RAW_BYTES_CSP: &str = "default-src 'none'; sandbox";

/// The longest content type kept with its parameters (longer ones lose them).
const MAX_CONTENT_TYPE_CHARS: usize = 200;

/// The only images kept under their own type (never `image/svg+xml`, which can carry script).
const SAFE_IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/webp", "image/gif"];

/// Splits a content type into its lowercased essence (`type/subtype`) and its parameters
/// (what follows the first `;`, trimmed; empty when it has none).
fn media_type_parts(raw: &str) -> (String, &str) {
    let (essence, parameters) = raw.split_once(';').unwrap_or((raw, ""));
    (essence.trim().to_ascii_lowercase(), parameters.trim())
}

/// `parameters` when they are short printable ASCII and may follow `essence` in a header.
fn with_parameters(essence: &str, parameters: &str) -> String {
    let printable = parameters.chars().all(|c| c == ' ' || c.is_ascii_graphic());
    if parameters.is_empty()
        || !printable
        || essence.len() + parameters.len() + 2 > MAX_CONTENT_TYPE_CHARS
    {
        essence.to_owned()
    } else {
        format!("{essence}; {parameters}")
    }
}

/// The content type a blob (an upload, speech, an image) is kept and served under, and a speech
/// answer is sent under: `audio/*` (with its parameters, such as `audio/L16; rate=24000`) or a
/// PNG, JPEG, WebP or GIF image (without parameters) as given; anything else — `text/html`,
/// `image/svg+xml`, garbage — as `application/octet-stream`. The coordinator serves blobs from
/// its own origin, so a type a browser could run as a document is never kept.
pub(crate) fn safe_media_type(raw: &str) -> String {
    let (essence, parameters) = media_type_parts(raw);
    let audio = essence.strip_prefix("audio/").is_some_and(|subtype| {
        !subtype.is_empty()
            && subtype
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_'))
    });
    if audio {
        with_parameters(&essence, parameters)
    } else if SAFE_IMAGE_TYPES.contains(&essence.as_str()) {
        essence
    } else {
        OCTET_STREAM.to_owned()
    }
}

/// The content type a text transcript (`text`, `srt`, `vtt`) is sent under: plain text, WebVTT
/// or SubRip as the engine said (with its charset), anything else as `text/plain;
/// charset=utf-8`.
fn transcript_media_type(raw: &str) -> String {
    let (essence, parameters) = media_type_parts(raw);
    match essence.as_str() {
        "text/plain" | "text/vtt" | "application/x-subrip" => with_parameters(&essence, parameters),
        _ => "text/plain; charset=utf-8".to_owned(),
    }
}

/// Raw bytes served from the coordinator's origin under `content_type` (a type already made
/// safe, e.g. by [`safe_media_type`]), with `X-Content-Type-Options: nosniff` and a sandboxing
/// `Content-Security-Policy`; `application/octet-stream` is also sent as an attachment.
pub(crate) fn raw_bytes_response(content_type: &str, data: impl Into<Body>) -> Response {
    let value =
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static(OCTET_STREAM));
    let attachment = media_type_parts(value.to_str().unwrap_or(OCTET_STREAM)).0 == OCTET_STREAM;
    let mut response = Response::new(data.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, value);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(RAW_BYTES_CSP),
    );
    if attachment {
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    response
}

/// Stores `data` as a blob of record `id` when it is within `cap`, and says what was kept. A
/// blob over the cap, or one the database refused, is named in the record as dropped. Its
/// content type is kept only when it is safe to serve ([`safe_media_type`]).
pub(crate) async fn keep_blob(
    store: &Store,
    id: RecordId,
    role: BlobRole,
    content_type: &str,
    data: &[u8],
    cap: usize,
) -> BlobRef {
    let content_type = safe_media_type(content_type);
    let content_type = content_type.as_str();
    let blob_id = uuid::Uuid::now_v7().simple().to_string();
    let mut dropped = data.len() > cap;
    if !dropped && let Err(error) = store.put_blob(&blob_id, id, content_type, data).await {
        tracing::warn!(%id, "cannot keep a blob of a record: {error}");
        dropped = true;
    }
    BlobRef {
        id: blob_id,
        role,
        content_type: content_type.to_owned(),
        bytes: data.len() as u64,
        dropped,
    }
}

/// Answers `call` from the node's `outputs`, folding them into the record, which is final
/// (and saved) before the last byte leaves.
pub(crate) async fn respond(
    context: Context,
    call: &Call,
    shaping: Shaping,
    keeper: RecordKeeper,
    outputs: CallStream,
) -> Response {
    let id = context.id;
    if call.is_stream() {
        return stream_completion(keeper, outputs, shaping.stream_usage, id);
    }
    let (keeper, output) = match whole_output(keeper, outputs, id).await {
        Ok(whole) => whole,
        Err(response) => return response,
    };
    let shaped = match (call.endpoint, output) {
        (Endpoint::Completions, CallOutput::Json(answer)) => Ok(completion(keeper, answer, id)),
        (Endpoint::Embeddings, CallOutput::Json(answer)) => {
            Ok(embeddings(keeper, answer, shaping.base64))
        }
        (Endpoint::AudioTranscriptions, output) => Ok(transcription(keeper, output)),
        (Endpoint::AudioSpeech, CallOutput::Bytes { content_type, data }) => {
            Ok(speech(&context, keeper, content_type, data).await)
        }
        (Endpoint::ImagesGenerations, CallOutput::Json(answer)) => {
            images(&context, keeper, answer, shaping.image_urls.as_deref()).await
        }
        (endpoint, _) => Err((
            keeper,
            ProviderError::Protocol {
                message: format!(
                    "the engine's answer to {} is of the wrong kind",
                    endpoint.path()
                ),
            },
        )),
    };
    match shaped {
        Ok((keeper, response)) => {
            if keeper.finish(Ok(())).await.is_none() {
                return with_request_id(
                    ApiError::internal("answer", "the record was already final").into_response(),
                    id,
                );
            }
            with_request_id(response, id)
        }
        Err((keeper, error)) => {
            keeper.finish(Err(&error)).await;
            with_request_id(ApiError::from_provider(&error).into_response(), id)
        }
    }
}

/// Reads a whole answer: its one output (a first output stamps the time to first token).
async fn whole_output(
    mut keeper: RecordKeeper,
    mut outputs: CallStream,
    id: RecordId,
) -> Result<(RecordKeeper, CallOutput), Response> {
    let mut whole = None;
    while let Some(item) = outputs.next().await {
        match item {
            Ok(output) => {
                keeper.observe_output(None);
                // An engine that streamed anyway: its last event stands for the answer.
                whole = Some(output);
            }
            Err(error) => {
                keeper.finish(Err(&error)).await;
                return Err(with_request_id(
                    ApiError::from_provider(&error).into_response(),
                    id,
                ));
            }
        }
    }
    match whole {
        Some(output) => Ok((keeper, output)),
        None => {
            let error = ProviderError::Protocol {
                message: "the engine answered nothing".into(),
            };
            keeper.finish(Err(&error)).await;
            Err(with_request_id(
                ApiError::from_provider(&error).into_response(),
                id,
            ))
        }
    }
}

/// A completion object (whole or one streamed event) as a chat chunk for the record: its first
/// choice's text and finish reason, and its usage.
fn completion_chunk(answer: &Value) -> ChatCompletionChunk {
    let choice = answer.pointer("/choices/0");
    let text = choice
        .and_then(|c| c.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut chunk = ChatCompletionChunk::new("", "", 0);
    if choice.is_some() {
        chunk = chunk.with_delta(ChunkDelta::content(text));
        if let Some(first) = chunk.choices.first_mut() {
            first.finish_reason = choice
                .and_then(|c| c.get("finish_reason"))
                .and_then(Value::as_str)
                .and_then(FinishReason::parse);
        }
    }
    chunk.model = answer
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    chunk.usage = usage_of(answer);
    chunk
}

/// The usage an answer reports, if any.
fn usage_of(answer: &Value) -> Option<Usage> {
    answer
        .get("usage")
        .filter(|u| u.is_object())
        .and_then(|u| serde_json::from_value(u.clone()).ok())
}

fn completion(
    mut keeper: RecordKeeper,
    mut answer: Value,
    id: RecordId,
) -> (RecordKeeper, Response) {
    keeper.observe_output(Some(&completion_chunk(&answer)));
    answer["id"] = Value::String(id.text_completion_id());
    (keeper, axum::Json(answer).into_response())
}

/// A streamed completion: each event with the record's completion id, the usage-only event only
/// when asked for, then `[DONE]`; an error after output ends the stream with an error event.
fn stream_completion(
    mut keeper: RecordKeeper,
    mut outputs: CallStream,
    wants_usage: bool,
    id: RecordId,
) -> Response {
    let completion_id = id.text_completion_id();
    let body = async_stream::stream! {
        loop {
            match outputs.next().await {
                Some(Ok(CallOutput::Json(mut event))) => {
                    let chunk = completion_chunk(&event);
                    keeper.observe_output(Some(&chunk));
                    let usage_only = event
                        .get("choices")
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty);
                    if !wants_usage {
                        if usage_only {
                            continue;
                        }
                        if let Some(event) = event.as_object_mut() {
                            event.remove("usage");
                        }
                    }
                    event["id"] = Value::String(completion_id.clone());
                    match sse_event(&event) {
                        Ok(bytes) => yield Ok::<Bytes, Infallible>(bytes),
                        Err(error) => {
                            let failure = ProviderError::Protocol {
                                message: format!("the coordinator could not write an event: {error}"),
                            };
                            yield Ok(error_event(&failure));
                            keeper.finish(Err(&failure)).await;
                            return;
                        }
                    }
                }
                Some(Ok(CallOutput::Bytes { .. })) => {
                    let failure = ProviderError::Protocol {
                        message: "the engine streamed bytes, not completion events".into(),
                    };
                    yield Ok(error_event(&failure));
                    keeper.finish(Err(&failure)).await;
                    return;
                }
                Some(Err(error)) => {
                    keeper.finish(Err(&error)).await;
                    yield Ok(error_event(&error));
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
    super::serve::event_stream(body, id)
}

/// The event that ends a stream with `error`, then `[DONE]`.
fn error_event(error: &ProviderError) -> Bytes {
    let api = ApiError::from_provider(error);
    let mut event = sse_event(&api.error.into_response()).unwrap_or_else(|_| {
        Bytes::from_static(b"data: {\"error\":{\"message\":\"the answer failed\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n")
    }).to_vec();
    event.extend_from_slice(b"data: [DONE]\n\n");
    Bytes::from(event)
}

/// Embeddings: the record keeps their count and dimensions and the usage; the vectors go to the
/// consumer as floats, or as base64 of little-endian `f32`s when asked.
fn embeddings(
    mut keeper: RecordKeeper,
    mut answer: Value,
    base64: bool,
) -> (RecordKeeper, Response) {
    let data = answer
        .get_mut("data")
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let dimensions = data
        .first()
        .and_then(|item| item.get("embedding"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut usage = ChatCompletionChunk::new("", "", 0);
    usage.usage = usage_of(&answer);
    usage.model = answer
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    keeper.observe_output(Some(&usage));
    if let Some(record) = keeper.record.as_mut() {
        record.embeddings = Some(EmbeddingsSummary {
            count: data.len() as u64,
            dimensions: dimensions as u64,
        });
    }
    let data: Vec<Value> = data
        .into_iter()
        .map(|mut item| {
            if base64 && let Some(vector) = item.get("embedding").and_then(Value::as_array) {
                let bytes: Vec<u8> = vector
                    .iter()
                    .flat_map(|x| (x.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
                    .collect();
                item["embedding"] = Value::String(BASE64.encode(bytes));
            }
            item
        })
        .collect();
    answer["data"] = Value::Array(data);
    (keeper, axum::Json(answer).into_response())
}

/// A transcription: JSON (`json`, `verbose_json`) or text (`text`, `srt`, `vtt`), passed through;
/// the record keeps the text.
fn transcription(mut keeper: RecordKeeper, output: CallOutput) -> (RecordKeeper, Response) {
    let (text, response) = match output {
        CallOutput::Json(answer) => (
            answer
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            axum::Json(answer).into_response(),
        ),
        CallOutput::Bytes { content_type, data } => (
            String::from_utf8_lossy(&data).into_owned(),
            raw_bytes_response(&transcript_media_type(&content_type), data),
        ),
    };
    let mut chunk = ChatCompletionChunk::new("", "", 0).with_delta(ChunkDelta::content(text));
    if let Some(first) = chunk.choices.first_mut() {
        first.finish_reason = Some(FinishReason::Stop);
    }
    keeper.observe_output(Some(&chunk));
    (keeper, response)
}

/// Speech: the audio goes to the consumer as the engine sent it (under a safe content type,
/// [`safe_media_type`]), and is kept with the record.
async fn speech(
    context: &Context,
    mut keeper: RecordKeeper,
    content_type: String,
    data: Bytes,
) -> (RecordKeeper, Response) {
    let blob = keep_blob(
        &context.store,
        context.id,
        BlobRole::Output,
        &content_type,
        &data,
        context.max_blob_bytes,
    )
    .await;
    if let Some(record) = keeper.record.as_mut() {
        record.blobs.push(blob);
    }
    (
        keeper,
        raw_bytes_response(&safe_media_type(&content_type), data),
    )
}

/// Images: each `b64_json` image is kept with the record; the consumer gets them inline, or as
/// URLs of the kept images under `urls` (inline where an image was too large to keep).
async fn images(
    context: &Context,
    mut keeper: RecordKeeper,
    mut answer: Value,
    urls: Option<&str>,
) -> Result<(RecordKeeper, Response), (RecordKeeper, ProviderError)> {
    let Some(items) = answer.get_mut("data").and_then(Value::as_array_mut) else {
        return Err((
            keeper,
            ProviderError::Protocol {
                message: "the engine's image answer has no `data` list".into(),
            },
        ));
    };
    for item in items.iter_mut() {
        let Some(encoded) = item.get("b64_json").and_then(Value::as_str) else {
            continue;
        };
        let Ok(data) = BASE64.decode(encoded.trim()) else {
            return Err((
                keeper,
                ProviderError::Protocol {
                    message: "the engine sent an image that is not valid base64".into(),
                },
            ));
        };
        let blob = keep_blob(
            &context.store,
            context.id,
            BlobRole::Output,
            image_type(&data),
            &data,
            context.max_blob_bytes,
        )
        .await;
        if let Some(base) = urls
            && !blob.dropped
            && let Some(item) = item.as_object_mut()
        {
            item.remove("b64_json");
            item.insert(
                "url".into(),
                Value::String(format!(
                    "{base}/api/v1/requests/{}/blobs/{}",
                    context.id, blob.id
                )),
            );
        }
        if let Some(record) = keeper.record.as_mut() {
            record.blobs.push(blob);
        }
    }
    let mut usage = ChatCompletionChunk::new("", "", 0);
    usage.usage = usage_of(&answer);
    keeper.observe_output(Some(&usage));
    Ok((keeper, axum::Json(answer).into_response()))
}

/// The content type of an image, from its first bytes (PNG unless it is a JPEG, WebP or GIF).
fn image_type(data: &[u8]) -> &'static str {
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if data.len() > 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        "image/webp"
    } else if data.starts_with(b"GIF8") {
        "image/gif"
    } else {
        "image/png"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_is_asked_for_what_the_club_reads() {
        let call = Call::new(
            Endpoint::Embeddings,
            json!({"model": "m", "input": "a", "encoding_format": "base64"}),
        );
        assert!(for_engine(&call).body.get("encoding_format").is_none());
        assert!(Shaping::of(&call, None, &HeaderMap::new()).base64);
        let call = Call::new(
            Endpoint::ImagesGenerations,
            json!({"model": "m", "prompt": "a", "response_format": "url"}),
        );
        assert_eq!(for_engine(&call).body["response_format"], "b64_json");
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("club.test:8080"));
        assert_eq!(
            Shaping::of(&call, None, &headers).image_urls.as_deref(),
            Some("http://club.test:8080")
        );
        let call = Call::new(
            Endpoint::Completions,
            json!({"model": "m", "prompt": "a", "stream": true}),
        );
        assert_eq!(
            for_engine(&call).body["stream_options"]["include_usage"],
            true
        );
    }

    #[test]
    fn completion_events_become_chunks_for_the_record() {
        let chunk = completion_chunk(&json!({
            "model": "m",
            "choices": [{"text": "hi", "index": 0, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
        }));
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("hi"));
        assert_eq!(chunk.choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(chunk.usage.map(|u| u.total_tokens), Some(3));
    }

    #[test]
    fn only_audio_and_plain_images_keep_their_content_type() {
        for kept in [
            "audio/mpeg",
            "audio/wav",
            "audio/ogg",
            "audio/flac",
            "audio/webm",
            "audio/aac",
            "audio/opus",
            "audio/pcm",
            "audio/x-wav",
            "image/png",
            "image/jpeg",
            "image/webp",
            "image/gif",
        ] {
            assert_eq!(safe_media_type(kept), kept);
        }
        assert_eq!(
            safe_media_type("audio/L16; rate=24000; channels=1"),
            "audio/l16; rate=24000; channels=1"
        );
        assert_eq!(safe_media_type(" Audio/MPEG "), "audio/mpeg");
        assert_eq!(safe_media_type("image/png; charset=utf-8"), "image/png");
        for refused in [
            "text/html",
            "text/html; charset=utf-8",
            "TEXT/HTML",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/javascript",
            "text/plain",
            "audio/",
            "audio/*",
            "audio/<script>",
            "",
            "nonsense",
        ] {
            assert_eq!(safe_media_type(refused), OCTET_STREAM, "{refused}");
        }
        let long = format!("audio/wav; x={}", "a".repeat(300));
        assert_eq!(safe_media_type(&long), "audio/wav");
    }

    #[test]
    fn transcripts_are_sent_as_text_only() {
        assert_eq!(
            transcript_media_type("text/plain; charset=utf-8"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(transcript_media_type("text/vtt"), "text/vtt");
        assert_eq!(
            transcript_media_type("text/html"),
            "text/plain; charset=utf-8"
        );
    }

    #[test]
    fn raw_bytes_are_sandboxed_and_unknown_ones_downloaded() {
        let audio = raw_bytes_response("audio/wav", Bytes::from_static(b"RIFF"));
        assert_eq!(audio.headers()[header::CONTENT_TYPE], "audio/wav");
        assert_eq!(audio.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(
            audio.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; sandbox"
        );
        assert!(audio.headers().get(header::CONTENT_DISPOSITION).is_none());
        let unknown = raw_bytes_response(
            &safe_media_type("text/html"),
            Bytes::from_static(b"<script>"),
        );
        assert_eq!(
            unknown.headers()[header::CONTENT_TYPE],
            "application/octet-stream"
        );
        assert_eq!(unknown.headers()[header::CONTENT_DISPOSITION], "attachment");
        assert_eq!(
            unknown.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; sandbox"
        );
    }

    #[test]
    fn image_types_are_sniffed() {
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(image_type(&[0xFF, 0xD8, 0xFF, 0xE0]), "image/jpeg");
        assert_eq!(image_type(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
    }
}
