//! The client's calls of the other endpoints (text completions, embeddings, transcription,
//! speech, images) against a small fake OpenAI-shaped server on 127.0.0.1: what goes on the
//! wire, what is read back, the record id, errors in the envelope and inside a stream, and a
//! multipart upload sent again whole on retry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Response, StatusCode};
use axum::routing::post;
use futures_util::StreamExt;
use inference_club_client::{
    AudioFormat, Client, CompletionRequest, EmbeddingsRequest, EncodingFormat, ImageData,
    ImageFormat, ImageRequest, RetryPolicy, SpeechRequest, TranscriptionFormat,
    TranscriptionRequest, Visibility,
};
use serde_json::{Value, json};

/// What the fake server saw: path, headers, body.
type Seen = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

/// `"AACAPwAAIMA="`: the f32s 1.0 and -2.5, little-endian, in base64.
const VECTOR_B64: &str = "AACAPwAAIMA=";
/// The bytes of a (tiny, fake) PNG, and their base64.
const PNG: &[u8] = b"\x89PNG\r\n";
const PNG_B64: &str = "iVBORw0K";

fn answer(status: StatusCode, content_type: &str, body: impl Into<Body>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-club-request-id", "rec-1")
        .body(body.into())
        .unwrap()
}

fn json_answer(value: Value) -> Response<Body> {
    answer(StatusCode::OK, "application/json", value.to_string())
}

/// The value of the text field `name` of a multipart body (crudely, for a test).
fn form_field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("name=\"{name}\"\r\n\r\n"))? + name.len() + 11;
    let end = body[start..].find("\r\n")?;
    Some(body[start..start + end].to_owned())
}

fn completion_chunk(text: &str, finish: Value) -> String {
    let chunk = json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]});
    format!("data: {chunk}\n\n")
}

async fn fake_server(seen: Seen) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = move |path: &'static str, seen: Seen| {
        move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                let nth = {
                    let mut seen = seen.lock().unwrap();
                    seen.push((path.to_owned(), headers, body.clone()));
                    seen.iter().filter(|(p, _, _)| p == path).count()
                };
                respond(path, nth, &body)
            }
        }
    };
    let app = axum::Router::new()
        .route("/v1/completions", post(log("completions", seen.clone())))
        .route("/v1/embeddings", post(log("embeddings", seen.clone())))
        .route(
            "/v1/audio/transcriptions",
            post(log("transcriptions", seen.clone())),
        )
        .route("/v1/audio/speech", post(log("speech", seen.clone())))
        .route("/v1/images/generations", post(log("images", seen.clone())));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// The fake server's answer to the `nth` request (from 1) to `path`.
fn respond(path: &str, nth: usize, body: &Bytes) -> Response<Body> {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    match path {
        "completions" if request["model"] == "broken" => answer(
            StatusCode::OK,
            "text/event-stream",
            completion_chunk("Once", Value::Null)
                + "data: {\"error\":{\"message\":\"node died\",\"type\":\"server_error\"}}\n\n",
        ),
        "completions" if request["stream"] == true => answer(
            StatusCode::OK,
            "text/event-stream",
            completion_chunk("Once", Value::Null)
                + &completion_chunk(" upon", Value::Null)
                + &completion_chunk("", json!("length"))
                + "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[],\
                   \"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2,\"total_tokens\":4}}\n\n\
                   data: [DONE]\n\n",
        ),
        "completions" => json_answer(json!({
            "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"text": " a time", "index": 0, "logprobs": null,
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
        })),
        "embeddings" if request["model"] == "missing" => answer(
            StatusCode::NOT_FOUND,
            "application/json",
            json!({"error": {"message": "no such model", "type": "invalid_request_error",
                             "param": "model", "code": "model_not_found"}})
            .to_string(),
        ),
        "embeddings" => {
            let vector = if request["encoding_format"] == "base64" {
                json!(VECTOR_B64)
            } else {
                json!([1.0, -2.5])
            };
            json_answer(json!({"object": "list", "model": "e",
                "data": [{"object": "embedding", "index": 1, "embedding": [0.0, 0.5]},
                         {"object": "embedding", "index": 0, "embedding": vector}],
                "usage": {"prompt_tokens": 3, "total_tokens": 3}}))
        }
        // The first upload is refused (a retry sends the whole form again).
        "transcriptions" if nth == 1 => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("retry-after", "0")
            .body(Body::from(
                "{\"error\":{\"message\":\"busy\",\"type\":\"server_error\"}}",
            ))
            .unwrap(),
        "transcriptions" => {
            let text = String::from_utf8_lossy(body);
            match form_field(&text, "response_format").as_deref() {
                Some("srt") => answer(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "1\n00:00:00,000 --> 00:00:01,000\nhello\n",
                ),
                _ => json_answer(json!({"text": "hello world", "language": "en"})),
            }
        }
        "speech" => answer(StatusCode::OK, "audio/wav", &b"RIFF....WAVE"[..]),
        "images" => json_answer(json!({"created": 7, "data": [
            {"b64_json": PNG_B64, "revised_prompt": "a round cat"},
            {"url": "https://img.example/2.png"}
        ]})),
        _ => answer(StatusCode::NOT_FOUND, "text/plain", "no"),
    }
}

fn client(url: &str) -> Client {
    Client::builder(url)
        .api_key("icl_test")
        .retry_policy(RetryPolicy::attempts(3).with_backoff(Duration::ZERO, Duration::ZERO))
        .build()
        .unwrap()
}

#[tokio::test]
async fn text_completions_whole_and_streamed() {
    let seen = Seen::default();
    let client = client(&fake_server(seen.clone()).await);

    let whole = client
        .completion(
            CompletionRequest::new("m", "Once upon")
                .max_tokens(2)
                .visibility(Visibility::Private),
        )
        .await
        .unwrap();
    assert_eq!(whole.text(), Some(" a time"));
    assert_eq!(whole.record_id.as_deref(), Some("rec-1"));
    assert_eq!(whole.completion.usage.unwrap().total_tokens, 4);
    let sent: Value = serde_json::from_slice(&seen.lock().unwrap()[0].2).unwrap();
    assert_eq!(
        sent,
        json!({"model": "m", "prompt": "Once upon", "max_tokens": 2, "stream": false,
               "visibility": "private"})
    );

    let mut stream = client
        .completion_stream(CompletionRequest::new("m", "Tell"))
        .await
        .unwrap();
    assert_eq!(stream.record_id().as_deref(), Some("rec-1"));
    let mut pieces = Vec::new();
    while let Some(piece) = stream.next().await {
        pieces.push(piece.unwrap());
    }
    assert_eq!(pieces, ["Once", " upon"]);
    assert_eq!(stream.finish_reason().unwrap().as_str(), "length");
    assert_eq!(stream.usage().unwrap().completion_tokens, 2);
    let sent: Value = serde_json::from_slice(&seen.lock().unwrap()[1].2).unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let headers = seen.lock().unwrap()[1].1.clone();
    assert_eq!(headers["accept"], "text/event-stream");
    assert_eq!(headers["authorization"], "Bearer icl_test");

    let collected = client
        .completion_stream(CompletionRequest::new("m", "Tell"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(collected.text(), Some("Once upon"));
    assert_eq!(collected.completion.id, "cmpl-1");
    assert_eq!(collected.completion.usage.unwrap().total_tokens, 4);

    // An error inside the stream ends it with that error, after the pieces before it.
    let mut broken = client
        .completion_stream(CompletionRequest::new("broken", "x"))
        .await
        .unwrap();
    assert_eq!(broken.next().await.unwrap().unwrap(), "Once");
    let error = broken.next().await.unwrap().unwrap_err();
    assert_eq!(error.message(), "node died");
    assert!(!error.is_retryable());
    assert!(broken.next().await.is_none());
}

#[tokio::test]
async fn embeddings_as_floats_or_base64_in_input_order() {
    let seen = Seen::default();
    let client = client(&fake_server(seen.clone()).await);
    for format in [EncodingFormat::Float, EncodingFormat::Base64] {
        let answer = client
            .embeddings(EmbeddingsRequest::new("e", ["first", "second"]).encoding_format(format))
            .await
            .unwrap();
        let vectors: Vec<&[f32]> = answer.vectors().collect();
        assert_eq!(vectors, [&[1.0, -2.5][..], &[0.0, 0.5][..]], "{format:?}");
        assert_eq!(answer.usage().unwrap().prompt_tokens, 3);
        assert_eq!(answer.record_id.as_deref(), Some("rec-1"));
    }
    let sent: Value = serde_json::from_slice(&seen.lock().unwrap()[1].2).unwrap();
    assert_eq!(
        sent,
        json!({"model": "e", "input": ["first", "second"], "encoding_format": "base64"})
    );

    // Errors keep the envelope's message and code, and a 404 is not retried.
    let error = client
        .embeddings(EmbeddingsRequest::new("missing", "x"))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    assert_eq!(error.code(), Some("model_not_found"));
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_transcription_is_a_multipart_upload_sent_again_whole_on_retry() {
    let seen = Seen::default();
    let client = client(&fake_server(seen.clone()).await);
    let audio = b"RIFF\x00\x01fake wav".to_vec();
    let answer = client
        .transcribe(
            TranscriptionRequest::new("whisper", "talk.wav", audio.clone())
                .language("en")
                .visibility(Visibility::Unlisted),
        )
        .await
        .unwrap();
    assert_eq!(answer.text, "hello world");
    assert_eq!(answer.details.unwrap()["language"], "en");
    assert_eq!(answer.record_id.as_deref(), Some("rec-1"));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "refused once, then sent again");
        for (_, headers, body) in seen.iter() {
            let kind = headers["content-type"].to_str().unwrap();
            assert!(kind.starts_with("multipart/form-data; boundary="), "{kind}");
            assert_eq!(headers["x-club-visibility"], "unlisted");
            let text = String::from_utf8_lossy(body);
            assert_eq!(form_field(&text, "model").as_deref(), Some("whisper"));
            assert_eq!(form_field(&text, "language").as_deref(), Some("en"));
            assert!(
                text.to_ascii_lowercase()
                    .contains("name=\"file\"; filename=\"talk.wav\"\r\ncontent-type: audio/wav"),
                "{text}"
            );
            assert!(body.windows(audio.len()).any(|w| w == audio.as_slice()));
        }
    }

    // Subtitles come back as text.
    let srt = client
        .transcribe(
            TranscriptionRequest::new("whisper", "talk.wav", audio)
                .response_format(TranscriptionFormat::Srt),
        )
        .await
        .unwrap();
    assert!(srt.text.contains("--> 00:00:01,000\nhello"), "{}", srt.text);
    assert_eq!(srt.details, None);
}

#[tokio::test]
async fn speech_answers_audio_bytes_and_images_are_decoded() {
    let seen = Seen::default();
    let client = client(&fake_server(seen.clone()).await);
    let speech = client
        .speech(
            SpeechRequest::new("tts", "Hello")
                .voice("alloy")
                .format(AudioFormat::Wav),
        )
        .await
        .unwrap();
    assert_eq!(speech.audio.as_ref(), b"RIFF....WAVE");
    assert_eq!(speech.content_type.as_deref(), Some("audio/wav"));
    assert_eq!(speech.record_id.as_deref(), Some("rec-1"));

    let images = client
        .generate_image(
            ImageRequest::new("sd", "a cat")
                .n(2)
                .response_format(ImageFormat::B64Json),
        )
        .await
        .unwrap();
    assert_eq!(images.created, 7);
    assert_eq!(images.images[0].data, ImageData::Bytes(PNG.into()));
    assert_eq!(
        images.images[0].revised_prompt.as_deref(),
        Some("a round cat")
    );
    assert_eq!(
        images.images[1].data,
        ImageData::Url("https://img.example/2.png".into())
    );
    assert_eq!(images.record_id.as_deref(), Some("rec-1"));
    let seen = seen.lock().unwrap();
    let sent: Value = serde_json::from_slice(&seen[0].2).unwrap();
    assert_eq!(
        sent,
        json!({"model": "tts", "input": "Hello", "voice": "alloy", "response_format": "wav"})
    );
    let sent: Value = serde_json::from_slice(&seen[1].2).unwrap();
    assert_eq!(
        sent,
        json!({"model": "sd", "prompt": "a cat", "n": 2, "response_format": "b64_json"})
    );
}
