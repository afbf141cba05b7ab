//! The inference endpoints other than chat: `POST /v1/completions`, `/v1/embeddings`,
//! `/v1/audio/speech`, `/v1/images/generations` (JSON bodies) and `/v1/audio/transcriptions`
//! (a multipart upload). Each is admitted, limited, recorded and dispatched as chat is
//! ([`serve`](super::serve)); this module reads and checks their bodies, and
//! [`answers`](super::answers) shapes what goes back.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use inference_club_core::endpoint::Endpoint;
use inference_club_core::provider::{Call, Upload};
use inference_club_core::record::{BlobRole, InferenceRecord, RecordId, Visibility};
use serde_json::{Map, Value};

use super::answers::{self, Shaping};
use super::serve::{self, Admission, Parts};
use super::{check_content_type, multipart};
use crate::CoordinatorConfig;
use crate::dispatch::{Answer, Work};
use crate::error::ApiError;
use crate::limits::Limits;

/// The most inputs one `/v1/embeddings` request may hold (OpenAI's limit).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;
/// The most characters `/v1/audio/speech` reads aloud (OpenAI's limit).
pub const MAX_SPEECH_CHARS: usize = 4096;
/// The most images one `/v1/images/generations` request may ask for (OpenAI's limit).
pub const MAX_IMAGES: u64 = 10;
/// The most parts a multipart upload may have.
const MAX_PARTS: usize = 32;

macro_rules! endpoint {
    ($(#[$doc:meta])* $name:ident => $endpoint:expr) => {
        $(#[$doc])*
        pub async fn $name(
            State(parts): State<Parts>,
            State(config): State<Arc<CoordinatorConfig>>,
            headers: HeaderMap,
            body: Body,
        ) -> Response {
            serve::admitted(&parts, &headers, |admission| {
                serve_call(&parts, &config, $endpoint, admission, &headers, body)
            })
            .await
        }
    };
}

endpoint!(
    /// `POST /v1/completions`: legacy text completions, whole or streamed (`"stream": true`).
    completions => Endpoint::Completions
);
endpoint!(
    /// `POST /v1/embeddings`: `input` a string or an array; `encoding_format` `float` or
    /// `base64`.
    embeddings => Endpoint::Embeddings
);
endpoint!(
    /// `POST /v1/audio/speech`: answers the audio bytes with their content type.
    speech => Endpoint::AudioSpeech
);
endpoint!(
    /// `POST /v1/images/generations`: `b64_json` or `url` answers (a `url` names the image as
    /// the coordinator keeps it with the record).
    images => Endpoint::ImagesGenerations
);
endpoint!(
    /// `POST /v1/audio/transcriptions`: a `multipart/form-data` upload with `file` and
    /// `model`; answers `json`, `text`, `verbose_json`, `srt` or `vtt`.
    transcriptions => Endpoint::AudioTranscriptions
);

/// Reads, checks, records and dispatches a call; the answer is shaped for the consumer.
pub(crate) async fn serve_call(
    parts: &Parts,
    config: &CoordinatorConfig,
    endpoint: Endpoint,
    admission: Admission,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let caller = &admission.caller;
    let limits = parts.limits.limits();
    let (call, visibility) = if endpoint == Endpoint::AudioTranscriptions {
        let bytes = serve::read_body(body, limits.max_upload_bytes, "max_upload_bytes").await?;
        read_upload(headers, bytes).await?
    } else {
        check_content_type(headers).map_err(IntoResponse::into_response)?;
        let bytes = serve::read_body(body, limits.max_body_bytes, "max_body_bytes").await?;
        let (body, visibility) = parse_body(&bytes).map_err(IntoResponse::into_response)?;
        (Call::new(endpoint, body), visibility)
    };
    check_call(&call, limits).map_err(IntoResponse::into_response)?;
    let visibility =
        serve::visibility(visibility, headers, caller).map_err(IntoResponse::into_response)?;
    let shaping = Shaping::of(&call, config.public_url.as_ref(), headers);
    dispatch_call(parts, admission, call, visibility, shaping).await
}

/// Records the call and dispatches what the engine is to get; the answer goes back shaped for
/// the consumer.
async fn dispatch_call(
    parts: &Parts,
    admission: Admission,
    call: Call,
    visibility: Visibility,
    shaping: Shaping,
) -> Result<Response, Response> {
    let caller = &admission.caller;
    let id = RecordId::new();
    let mut record = InferenceRecord::for_call(
        id,
        Some(caller.user.handle.clone()),
        call.endpoint,
        call.body.clone(),
        visibility,
        Utc::now(),
    );
    if let Some(upload) = &call.upload {
        let blob = answers::keep_blob(
            parts.recorder.store(),
            id,
            BlobRole::Input,
            &upload.content_type,
            &upload.data,
            parts.limits.limits().max_blob_bytes,
        )
        .await;
        record.blobs.push(blob);
    }
    let engine_call = answers::for_engine(&call);
    let started = serve::start(
        parts,
        admission,
        record,
        Work::Call(&engine_call),
        call.is_stream(),
    )
    .await?;
    let outputs = match started.answer {
        Answer::Call(outputs) => outputs,
        Answer::Chat(_) | Answer::Streamed(_) => {
            return Err(serve::shape_error("call", "a chat answer", started.id));
        }
    };
    let context = answers::Context {
        store: parts.recorder.store().clone(),
        max_blob_bytes: parts.limits.limits().max_blob_bytes,
        id: started.id,
    };
    Ok(answers::respond(context, &call, shaping, started.keeper, outputs).await)
}

/// Reads a JSON call body: an object naming a `model`, with the club's `visibility` field
/// taken out.
fn parse_body(bytes: &[u8]) -> Result<(Value, Option<Visibility>), ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let Value::Object(mut body) = value else {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    };
    let visibility = take_visibility(&mut body)?;
    Ok((Value::Object(body), visibility))
}

/// Takes the club's `visibility` field out of a body (400 when it is not a visibility).
fn take_visibility(body: &mut Map<String, Value>) -> Result<Option<Visibility>, ApiError> {
    match body.remove("visibility") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) => name.parse::<Visibility>().map(Some).map_err(|_| {
            ApiError::bad_request(
                "invalid_visibility",
                format!("visibility must be public, unlisted or private, got {name:?}"),
            )
            .with_param("visibility")
        }),
        Some(_) => Err(
            ApiError::bad_request("invalid_visibility", "visibility must be a string")
                .with_param("visibility"),
        ),
    }
}

/// Reads a `multipart/form-data` upload (415 for another content type, 400 for a malformed
/// one): the part `file` becomes the call's [`Upload`], every other part a text field of its
/// body (a name sent more than once, such as `timestamp_granularities[]`, an array).
async fn read_upload(
    headers: &HeaderMap,
    bytes: Bytes,
) -> Result<(Call, Option<Visibility>), Response> {
    let (mut body, file) =
        multipart::read_form(headers, bytes, MAX_PARTS, "audio", "a `file` part")
            .await
            .map_err(IntoResponse::into_response)?;
    let visibility = take_visibility(&mut body).map_err(IntoResponse::into_response)?;
    let upload = Upload {
        file_name: file.file_name,
        content_type: file.content_type,
        data: file.data,
    };
    Ok((
        Call::new(Endpoint::AudioTranscriptions, Value::Object(body)).with_upload(upload),
        visibility,
    ))
}

/// Checks a call's body against what OpenAI documents for its endpoint and the club's limits:
/// a 400 naming the parameter that is missing, of the wrong kind or out of range.
pub(crate) fn check_call(call: &Call, limits: &Limits) -> Result<(), ApiError> {
    let body = &call.body;
    if call.model().trim().is_empty() {
        return Err(
            ApiError::bad_request("missing_model", "`model` is required (a string)")
                .with_param("model"),
        );
    }
    match call.endpoint {
        Endpoint::Completions => {
            let chars = texts_of(body.get("prompt"), "prompt", true)?;
            check_chars(chars, limits, "prompt")?;
            check_number(body, "temperature", 0.0, 2.0)?;
            check_number(body, "top_p", 0.0, 1.0)?;
            check_number(body, "presence_penalty", -2.0, 2.0)?;
            check_number(body, "frequency_penalty", -2.0, 2.0)?;
            check_number(body, "n", 1.0, 128.0)?;
            check_number(
                body,
                "max_tokens",
                0.0,
                f64::from(limits.max_tokens_ceiling),
            )?;
        }
        Endpoint::Embeddings => {
            let input = body.get("input");
            let count = match input {
                Some(Value::Array(items)) => items.len(),
                _ => 1,
            };
            if count == 0 || count > MAX_EMBEDDING_INPUTS {
                return Err(ApiError::bad_request(
                    "invalid_value",
                    format!("`input` must hold 1 to {MAX_EMBEDDING_INPUTS} items, got {count}"),
                )
                .with_param("input"));
            }
            check_chars(texts_of(input, "input", false)?, limits, "input")?;
            check_choice(body, "encoding_format", &["float", "base64"])?;
        }
        Endpoint::AudioSpeech => {
            let input = required_text(body, "input")?;
            check_chars(input.chars().count(), limits, "input")?;
            if input.chars().count() > MAX_SPEECH_CHARS {
                return Err(ApiError::bad_request(
                    "invalid_value",
                    format!("`input` must be at most {MAX_SPEECH_CHARS} characters"),
                )
                .with_param("input"));
            }
            check_choice(
                body,
                "response_format",
                &["mp3", "opus", "aac", "flac", "wav", "pcm"],
            )?;
            check_number(body, "speed", 0.25, 4.0)?;
        }
        Endpoint::ImagesGenerations => {
            let prompt = required_text(body, "prompt")?;
            check_chars(prompt.chars().count(), limits, "prompt")?;
            check_choice(body, "response_format", &["b64_json", "url"])?;
            check_number(body, "n", 1.0, MAX_IMAGES as f64)?;
        }
        Endpoint::AudioTranscriptions => {
            check_choice(
                body,
                "response_format",
                &["json", "text", "srt", "verbose_json", "vtt"],
            )?;
            if let Some(prompt) = body.get("prompt").and_then(Value::as_str) {
                check_chars(prompt.chars().count(), limits, "prompt")?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The characters of a `prompt` or `input`: a string, or an array of strings, of token ids, or
/// (with `nested`) of arrays of token ids; 400 when it is missing or something else.
fn texts_of(value: Option<&Value>, param: &str, nested: bool) -> Result<usize, ApiError> {
    let wrong = || {
        ApiError::bad_request(
            "invalid_value",
            format!("`{param}` must be a string or an array of strings or token ids"),
        )
        .with_param(param)
    };
    let is_tokens = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_u64));
    match value {
        Some(Value::String(text)) => Ok(text.chars().count()),
        Some(Value::Array(items)) => items.iter().try_fold(0usize, |sum, item| match item {
            Value::String(text) => Ok(sum + text.chars().count()),
            Value::Number(_) if item.is_u64() => Ok(sum + 1),
            Value::Array(_) if is_tokens(item) => Ok(sum + 1),
            _ if nested && is_tokens(item) => Ok(sum + 1),
            _ => Err(wrong()),
        }),
        None | Some(Value::Null) => Err(ApiError::bad_request(
            "missing_field",
            format!("`{param}` is required"),
        )
        .with_param(param)),
        Some(_) => Err(wrong()),
    }
}

/// A required, non-empty string field.
fn required_text<'a>(body: &'a Value, param: &str) -> Result<&'a str, ApiError> {
    match body.get(param) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text),
        _ => Err(ApiError::bad_request(
            "missing_field",
            format!("`{param}` is required (a non-empty string)"),
        )
        .with_param(param)),
    }
}

fn check_chars(chars: usize, limits: &Limits, param: &str) -> Result<(), ApiError> {
    if chars > limits.max_input_chars {
        return Err(ApiError::bad_request(
            "input_too_long",
            format!(
                "`{param}` has more than {} characters (max_input_chars)",
                limits.max_input_chars
            ),
        )
        .with_param(param));
    }
    Ok(())
}

/// An optional number in `[low, high]` (multipart fields arrive as text and are read as
/// numbers).
fn check_number(body: &Value, param: &str, low: f64, high: f64) -> Result<(), ApiError> {
    let number = match body.get(param) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(text)) => text.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match number {
        Some(n) if (low..=high).contains(&n) => Ok(()),
        _ => Err(ApiError::bad_request(
            "invalid_value",
            format!("`{param}` must be a number between {low} and {high}"),
        )
        .with_param(param)),
    }
}

/// An optional string that must be one of `allowed`.
fn check_choice(body: &Value, param: &str, allowed: &[&str]) -> Result<(), ApiError> {
    match body.get(param) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(choice)) if allowed.contains(&choice.as_str()) => Ok(()),
        Some(other) => Err(ApiError::bad_request(
            "invalid_value",
            format!("`{param}` must be one of {allowed:?}, got {other}"),
        )
        .with_param(param)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(endpoint: Endpoint, body: Value) -> Result<(), ApiError> {
        check_call(&Call::new(endpoint, body), &Limits::default())
    }

    #[test]
    fn bodies_are_checked_per_endpoint() {
        assert!(check(Endpoint::Completions, json!({"model": "m", "prompt": "hi"})).is_ok());
        assert!(
            check(
                Endpoint::Completions,
                json!({"model": "m", "prompt": [1, 2]})
            )
            .is_ok()
        );
        let e = check(Endpoint::Completions, json!({"model": "m"})).unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("prompt"));
        let e = check(Endpoint::Completions, json!({"prompt": "x"})).unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("model"));
        let e = check(
            Endpoint::Completions,
            json!({"model": "m", "prompt": "x", "temperature": 3}),
        )
        .unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("temperature"));

        assert!(
            check(
                Endpoint::Embeddings,
                json!({"model": "m", "input": ["a", "b"]})
            )
            .is_ok()
        );
        let e = check(Endpoint::Embeddings, json!({"model": "m", "input": []})).unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("input"));
        let e = check(
            Endpoint::Embeddings,
            json!({"model": "m", "input": "a", "encoding_format": "hex"}),
        )
        .unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("encoding_format"));
        let e = check(
            Endpoint::Embeddings,
            json!({"model": "m", "input": {"a": 1}}),
        )
        .unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("input"));

        let e = check(Endpoint::AudioSpeech, json!({"model": "m", "input": ""})).unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("input"));
        let long = "x".repeat(MAX_SPEECH_CHARS + 1);
        assert!(check(Endpoint::AudioSpeech, json!({"model": "m", "input": long})).is_err());

        let e = check(
            Endpoint::ImagesGenerations,
            json!({"model": "m", "prompt": "cat", "n": 11}),
        )
        .unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("n"));

        assert!(
            check(
                Endpoint::AudioTranscriptions,
                json!({"model": "m", "response_format": "verbose_json", "temperature": "0.2"})
            )
            .is_ok()
        );
        let e = check(
            Endpoint::AudioTranscriptions,
            json!({"model": "m", "response_format": "mp3"}),
        )
        .unwrap_err();
        assert_eq!(e.error.param.as_deref(), Some("response_format"));
    }

    #[test]
    fn the_visibility_field_is_taken_out() {
        let (body, visibility) =
            parse_body(br#"{"model":"m","input":"a","visibility":"private"}"#).unwrap();
        assert_eq!(visibility, Some(Visibility::Private));
        assert!(body.get("visibility").is_none());
        assert!(parse_body(br#"{"model":"m","visibility":"secret"}"#).is_err());
        assert!(parse_body(b"[1]").is_err());
    }
}
