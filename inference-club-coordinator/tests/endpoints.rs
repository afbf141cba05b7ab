//! Every endpoint other than chat, through a real coordinator, a real node and its engines:
//! the Echo engine for completions, embeddings and responses, the fake media engine (a small
//! OpenAI-shaped server on 127.0.0.1) behind the OpenAI-compatible backend for audio and images.
//! What each answer looks like, what its record keeps (and what it does not: the vectors), the
//! blobs and their read rules, and the errors of bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use base64::Engine as _;
use inference_club_coordinator::testing::media_engine::{self, MediaEngine};
use inference_club_coordinator::testing::{TestClub, TestDatabase, TestService};
use inference_club_core::endpoint::Endpoint;
use inference_club_core::manifest::ServiceType;
use inference_club_core::openai::{ChatCompletionRequest, Model};
use inference_club_core::provider::{
    Call, CallOutput, CallStream, ChunkStream, Provider, ProviderError, RequestContext,
};
use inference_club_core::record::RecordId;
use inference_club_provider::backends::{Echo, OpenAiCompatible};
use serde_json::{Value, json};

/// A club whose node serves `echo` (chat, completions, responses), `echo-embed` (embeddings)
/// and, through the fake media engine, `whisper-1`, `tts-1` and `dall-e-test`.
async fn club_on(database: TestDatabase) -> (TestClub, MediaEngine) {
    let media = MediaEngine::start().await;
    let backend = || -> Arc<dyn Provider> {
        Arc::new(
            OpenAiCompatible::builder(media.url.clone())
                .build()
                .unwrap(),
        )
    };
    let echo: Arc<dyn Provider> = Arc::new(Echo::new().models(["echo", "echo-embed"]));
    let services = vec![
        TestService::new("echo", echo.clone()),
        TestService::new("echo-embed", echo).features(["embeddings"]),
        TestService::new("whisper-1", backend()).service_type(ServiceType::Stt),
        TestService::new("tts-1", backend()).service_type(ServiceType::Tts),
        TestService::new("dall-e-test", backend()).service_type(ServiceType::Image),
    ];
    let club = TestClub::start_services_with(database, services, |builder| builder).await;
    (club, media)
}

async fn club() -> (TestClub, MediaEngine) {
    club_on(TestDatabase::sqlite()).await
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Posts `form` to `/v1/audio/transcriptions` with the club's key.
async fn transcribe(club: &TestClub, form: reqwest::multipart::Form) -> reqwest::Response {
    http()
        .post(format!("{}/v1/audio/transcriptions", club.url))
        .bearer_auth(&club.key)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn post_json(club: &TestClub, path: &str, body: Value) -> reqwest::Response {
    http()
        .post(format!("{}{path}", club.url))
        .bearer_auth(&club.key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn record_id(response: &reqwest::Response) -> RecordId {
    let header = response
        .headers()
        .get("x-club-request-id")
        .expect("every answer names its record")
        .to_str()
        .unwrap();
    RecordId::parse(header).unwrap()
}

async fn record(club: &TestClub, id: RecordId) -> Value {
    let response = http()
        .get(format!("{}/api/v1/requests/{id}", club.url))
        .bearer_auth(&club.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// How many records the member has.
async fn count_records(club: &TestClub) -> usize {
    let page: Value = http()
        .get(format!("{}/api/v1/requests?limit=100", club.url))
        .bearer_auth(&club.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["data"].as_array().unwrap().len()
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_whole_and_streamed_are_recorded() {
    let (club, _media) = club().await;
    let response = post_json(
        &club,
        "/v1/completions",
        json!({"model": "echo", "prompt": "the quick brown fox"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let id = record_id(&response);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["id"], id.text_completion_id());
    assert_eq!(answer["choices"][0]["text"], "the quick brown fox");
    assert_eq!(answer["usage"]["prompt_tokens"], 4);
    let kept = record(&club, id).await;
    assert_eq!(kept["endpoint"], "completions");
    assert_eq!(kept["status"], "succeeded");
    assert_eq!(kept["input"]["prompt"], "the quick brown fox");
    assert_eq!(kept["response"]["content"], "the quick brown fox");
    assert_eq!(kept["usage"]["source"], "reported");
    assert_eq!(kept["usage"]["prompt_tokens"], 4);
    assert!(kept["timing"]["first_token_at"].is_string());

    // Streamed: events carry the record's completion id; no usage event unless asked for.
    let response = post_json(
        &club,
        "/v1/completions",
        json!({"model": "echo", "prompt": "one two three", "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let id = record_id(&response);
    let text = response.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(events.iter().all(|e| e["id"] == id.text_completion_id()));
    assert!(
        events
            .iter()
            .all(|e| e.get("usage").is_none_or(Value::is_null))
    );
    let joined: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(joined, "one two three");
    let kept = record(&club, id).await;
    assert_eq!(kept["response"]["content"], "one two three");
    // Usage was asked of the engine all the same, and recorded.
    assert_eq!(kept["usage"]["prompt_tokens"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_as_floats_or_base64_and_the_record_keeps_no_vectors() {
    let (club, _media) = club().await;
    let response = post_json(
        &club,
        "/v1/embeddings",
        json!({"model": "echo-embed", "input": ["alpha", "beta gamma"]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let id = record_id(&response);
    let answer: Value = response.json().await.unwrap();
    let floats: Vec<f64> = answer["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(floats, Echo::embedding("alpha"));
    assert_eq!(answer["data"][1]["index"], 1);
    let kept = record(&club, id).await;
    assert_eq!(kept["endpoint"], "embeddings");
    assert_eq!(
        kept["embeddings"],
        json!({"count": 2, "dimensions": Echo::EMBEDDING_DIMENSIONS})
    );
    assert_eq!(kept["usage"]["prompt_tokens"], 3);
    assert!(!kept.to_string().contains(&floats[0].to_string()));

    let response = post_json(
        &club,
        "/v1/embeddings",
        json!({"model": "echo-embed", "input": "alpha", "encoding_format": "base64"}),
    )
    .await;
    let answer: Value = response.json().await.unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(answer["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let expected: Vec<f32> = Echo::embedding("alpha").iter().map(|x| *x as f32).collect();
    assert_eq!(decoded, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_whole_and_streamed() {
    let (club, _media) = club().await;
    let response = post_json(
        &club,
        "/v1/responses",
        json!({"model": "echo", "input": "hello there", "instructions": "be brief"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let id = record_id(&response);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["id"], id.response_id());
    assert_eq!(answer["status"], "completed");
    let message = answer["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["type"] == "message")
        .unwrap();
    assert_eq!(message["content"][0]["text"], "echo: hello there");
    let kept = record(&club, id).await;
    assert_eq!(kept["endpoint"], "responses");
    assert_eq!(kept["input"]["instructions"], "be brief");
    assert_eq!(kept["response"]["content"], "echo: hello there");

    let response = post_json(
        &club,
        "/v1/responses",
        json!({"model": "echo", "input": "stream this", "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    assert!(names.contains(&"response.output_text.delta"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_is_answered_and_kept_until_its_record_is_deleted() {
    let (club, media) = club().await;
    let response = post_json(
        &club,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": "Hello club", "voice": "alloy", "response_format": "wav"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    assert_sandboxed(response.headers());
    let id = record_id(&response);
    let audio = response.bytes().await.unwrap();
    assert_eq!(&audio[..], &media_engine::speech_wav("Hello club")[..]);
    assert_eq!(
        media.last_on("/v1/audio/speech").unwrap().model(),
        Some("tts-1")
    );

    let kept = record(&club, id).await;
    assert_eq!(kept["endpoint"], "audio_speech");
    let blob = &kept["blobs"][0];
    assert_eq!(blob["role"], "output");
    assert_eq!(blob["content_type"], "audio/wav");
    assert_eq!(blob["bytes"], audio.len());
    let url = format!("{}{}", club.url, blob["url"].as_str().unwrap());
    let fetched = http().get(&url).send().await.unwrap();
    // Public by default: anyone may fetch it.
    assert_eq!(fetched.status(), 200);
    // Audio keeps its type, sandboxed all the same; it plays inline (no attachment).
    assert_eq!(fetched.headers()["content-type"], "audio/wav");
    assert_sandboxed(fetched.headers());
    assert!(fetched.headers().get("content-disposition").is_none());
    assert_eq!(fetched.bytes().await.unwrap(), audio);

    let deleted = http()
        .delete(format!("{}/api/v1/requests/{id}", club.url))
        .bearer_auth(&club.key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(http().get(&url).send().await.unwrap().status(), 404);
    let blob_id = blob["id"].as_str().unwrap();
    assert!(club.store.blob(blob_id).await.unwrap().is_none());
}

/// Raw bytes from the coordinator's origin are never sniffed nor run as a page.
fn assert_sandboxed(headers: &reqwest::header::HeaderMap) {
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; sandbox"
    );
}

/// Headers of a blob served as a download: never `text/html`, never sniffed, never run.
fn assert_downloaded(headers: &reqwest::header::HeaderMap) {
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["content-disposition"], "attachment");
    assert_sandboxed(headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_upload_is_kept_and_served_as_a_download_not_a_page() {
    let (club, media) = club().await;
    let page = b"<html><script>fetch('/api/v1/session')</script></html>".to_vec();
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .part(
            "file",
            reqwest::multipart::Part::bytes(page.clone())
                .file_name("clip.html")
                .mime_str("text/html")
                .unwrap(),
        );
    let response = transcribe(&club, form).await;
    assert_eq!(response.status(), 200);
    let id = record_id(&response);
    // The engine still gets the part as it was sent.
    let asked = media.last_on("/v1/audio/transcriptions").unwrap();
    assert_eq!(
        asked.file.unwrap().content_type.as_deref(),
        Some("text/html")
    );

    let kept = record(&club, id).await;
    let blob = &kept["blobs"][0];
    assert_eq!(blob["role"], "input");
    assert_eq!(blob["content_type"], "application/octet-stream");
    let blob_id = blob["id"].as_str().unwrap().to_owned();
    assert_eq!(
        club.store
            .blob(&blob_id)
            .await
            .unwrap()
            .unwrap()
            .content_type,
        "application/octet-stream"
    );
    // Public by default: an anonymous reader gets it, as a download.
    let url = format!("{}{}", club.url, blob["url"].as_str().unwrap());
    let fetched = http().get(&url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_downloaded(fetched.headers());
    assert_eq!(fetched.bytes().await.unwrap(), page);

    // A blob kept before types were checked on the way in is made safe when served.
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(club.store.expire_blobs(later).await.unwrap(), 1);
    club.store
        .put_blob(&blob_id, id, "text/html; charset=utf-8", &page)
        .await
        .unwrap();
    let fetched = http().get(&url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_downloaded(fetched.headers());
    assert_eq!(fetched.bytes().await.unwrap(), page);
}

/// A speech engine that answers with an HTML page.
struct HtmlSpeech;

#[async_trait::async_trait]
impl Provider for HtmlSpeech {
    async fn models(&self) -> Result<Vec<Model>, ProviderError> {
        Ok(vec![Model::new("tts-html", "test")])
    }

    async fn chat(
        &self,
        _request: ChatCompletionRequest,
        _context: RequestContext,
    ) -> Result<ChunkStream, ProviderError> {
        Err(ProviderError::unsupported(Endpoint::ChatCompletions))
    }

    async fn call(
        &self,
        call: Call,
        _context: RequestContext,
    ) -> Result<CallStream, ProviderError> {
        if call.endpoint != Endpoint::AudioSpeech {
            return Err(ProviderError::unsupported(call.endpoint));
        }
        let output = CallOutput::Bytes {
            content_type: "text/html".into(),
            data: bytes::Bytes::from_static(b"<script>alert(document.domain)</script>"),
        };
        Ok(Box::pin(futures_util::stream::iter([Ok(output)])))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_an_engine_sends_as_html_is_answered_and_kept_as_a_download() {
    let services =
        vec![TestService::new("tts-html", Arc::new(HtmlSpeech)).service_type(ServiceType::Tts)];
    let club = TestClub::start_services(services).await;
    let response = post_json(
        &club,
        "/v1/audio/speech",
        json!({"model": "tts-html", "input": "hi", "voice": "alloy"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_downloaded(response.headers());
    let id = record_id(&response);
    let kept = record(&club, id).await;
    let blob = &kept["blobs"][0];
    assert_eq!(blob["content_type"], "application/octet-stream");
    let url = format!("{}{}", club.url, blob["url"].as_str().unwrap());
    let fetched = http().get(&url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_downloaded(fetched.headers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_inline_or_as_urls_under_the_records_rules() {
    let (club, _media) = club().await;
    let response = post_json(
        &club,
        "/v1/images/generations",
        json!({"model": "dall-e-test", "prompt": "a red fox", "n": 2}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let first = base64::engine::general_purpose::STANDARD
        .decode(answer["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(first, media_engine::png_for("a red fox", 0));

    let response = post_json(
        &club,
        "/v1/images/generations",
        json!({"model": "dall-e-test", "prompt": "a blue owl", "response_format": "url", "visibility": "private"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let id = record_id(&response);
    let answer: Value = response.json().await.unwrap();
    assert!(answer["data"][0].get("b64_json").is_none());
    let url = answer["data"][0]["url"].as_str().unwrap().to_owned();
    let mine = http()
        .get(&url)
        .bearer_auth(&club.key)
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), 200);
    assert_eq!(mine.headers()["content-type"], "image/png");
    assert_sandboxed(mine.headers());
    assert_eq!(
        mine.bytes().await.unwrap(),
        media_engine::png_for("a blue owl", 0)
    );
    // Private: another member, or nobody, gets the same 404 as for nothing.
    let bob = club.add_member("bob").await;
    let theirs = http().get(&url).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(theirs.status(), 404);
    assert_eq!(http().get(&url).send().await.unwrap().status(), 404);
    let kept = record(&club, id).await;
    assert_eq!(kept["blobs"].as_array().unwrap().len(), 1);
    assert_eq!(kept["input"]["prompt"], "a blue owl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcriptions_take_an_upload_and_keep_it() {
    let (club, media) = club().await;
    let audio = media_engine::speech_wav("transcribe me");
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .text("response_format", "json")
        .part(
            "file",
            reqwest::multipart::Part::bytes(audio.clone())
                .file_name("clip.wav")
                .mime_str("audio/wav")
                .unwrap(),
        );
    let response = transcribe(&club, form).await;
    assert_eq!(response.status(), 200);
    let id = record_id(&response);
    let answer: Value = response.json().await.unwrap();
    let expected = media_engine::transcript_of(audio.len(), Some("audio/wav"));
    assert_eq!(answer["text"], expected);
    let asked = media.last_on("/v1/audio/transcriptions").unwrap();
    let file = asked.file.unwrap();
    assert_eq!(file.file_name.as_deref(), Some("clip.wav"));
    assert_eq!(file.data.len(), audio.len());
    let kept = record(&club, id).await;
    assert_eq!(kept["endpoint"], "audio_transcriptions");
    assert_eq!(kept["response"]["content"], expected);
    assert_eq!(kept["blobs"][0]["role"], "input");
    assert_eq!(kept["blobs"][0]["bytes"], audio.len());

    // As plain text.
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .text("response_format", "text")
        .part(
            "file",
            reqwest::multipart::Part::bytes(audio.clone()).file_name("a.wav"),
        );
    let response = transcribe(&club, form).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_sandboxed(response.headers());
    assert!(!response.text().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_leaves_nothing_half_done() {
    let (club, _media) = club().await;
    let before = count_records(&club).await;
    let cases = [
        (
            "/v1/embeddings",
            json!({"model": "echo-embed"}),
            400,
            "missing_field",
        ),
        (
            "/v1/embeddings",
            json!({"model": "echo-embed", "input": "a", "encoding_format": "hex"}),
            400,
            "invalid_value",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x"}),
            400,
            "missing_model",
        ),
        (
            "/v1/audio/speech",
            json!({"model": "tts-1", "input": ""}),
            400,
            "missing_field",
        ),
        (
            "/v1/images/generations",
            json!({"model": "dall-e-test", "prompt": "x", "n": 50}),
            400,
            "invalid_value",
        ),
        ("/v1/responses", json!({"input": "x"}), 400, "missing_model"),
    ];
    for (path, body, status, code) in cases {
        let got = error_code(post_json(&club, path, body.clone()).await).await;
        assert_eq!(got, (status, code.to_owned()), "{path} {body}");
    }
    // None of those was recorded.
    assert_eq!(count_records(&club).await, before);

    // A wrong content type, and a transcription that is not multipart.
    let response = http()
        .post(format!("{}/v1/embeddings", club.url))
        .bearer_auth(&club.key)
        .header("content-type", "text/plain")
        .body("model=echo")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await.0, 415);
    let response = post_json(
        &club,
        "/v1/audio/transcriptions",
        json!({"model": "whisper-1"}),
    )
    .await;
    assert_eq!(error_code(response).await.0, 415);
    // An upload without a file.
    let form = reqwest::multipart::Form::new().text("model", "whisper-1");
    let response = transcribe(&club, form).await;
    assert_eq!(error_code(response).await, (400, "missing_file".to_owned()));
    assert_eq!(count_records(&club).await, before);

    // A model that exists but not at this endpoint, and one that does not exist: the request
    // was routed, so its record exists, and it is final (failed), never left in flight.
    let response = post_json(
        &club,
        "/v1/embeddings",
        json!({"model": "echo", "input": "a"}),
    )
    .await;
    let id = record_id(&response);
    assert_eq!(
        error_code(response).await,
        (400, "unsupported_endpoint".to_owned())
    );
    assert_eq!(record(&club, id).await["status"], "failed");
    let response = post_json(
        &club,
        "/v1/audio/speech",
        json!({"model": "nobody-serves-this", "input": "x"}),
    )
    .await;
    let id = record_id(&response);
    assert_eq!(error_code(response).await.0, 404);
    assert_eq!(record(&club, id).await["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_its_limit_is_413() {
    let media = MediaEngine::start().await;
    let backend: Arc<dyn Provider> = Arc::new(
        OpenAiCompatible::builder(media.url.clone())
            .build()
            .unwrap(),
    );
    let services = vec![TestService::new("whisper-1", backend).service_type(ServiceType::Stt)];
    let club = TestClub::start_services_with(TestDatabase::sqlite(), services, |builder| {
        builder.limits(inference_club_coordinator::Limits {
            max_upload_bytes: 64 * 1024,
            ..inference_club_coordinator::Limits::default()
        })
    })
    .await;
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![0u8; 100 * 1024]).file_name("big.wav"),
        );
    let response = transcribe(&club, form).await;
    assert_eq!(error_code(response).await.0, 413);
    assert_eq!(count_records(&club).await, 0);
    assert!(media.asked_on("/v1/audio/transcriptions").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_say_which_endpoints_they_serve() {
    let (club, _media) = club().await;
    let list: Value = http()
        .get(format!("{}/v1/models", club.url))
        .bearer_auth(&club.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoints = |id: &str| -> Vec<String> {
        let model = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing from {list}"));
        model["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        endpoints("echo"),
        ["chat_completions", "completions", "responses"]
    );
    assert!(endpoints("echo-embed").contains(&"embeddings".to_owned()));
    assert_eq!(endpoints("whisper-1"), ["audio_transcriptions"]);
    assert_eq!(endpoints("tts-1"), ["audio_speech"]);
    assert_eq!(endpoints("dall-e-test"), ["images_generations"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_on_postgres() {
    let Some(database) = TestDatabase::postgres("endpoints on PostgreSQL").await else {
        return;
    };
    let (club, _media) = club_on(database).await;
    let speech = post_json(
        &club,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": "on postgres", "voice": "alloy", "response_format": "wav"}),
    )
    .await;
    let status = speech.status();
    let id = record_id(&speech);
    let audio = speech.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&audio));
    let kept = record(&club, id).await;
    let url = format!("{}{}", club.url, kept["blobs"][0]["url"].as_str().unwrap());
    assert_eq!(
        http()
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        audio
    );
    let embed = post_json(
        &club,
        "/v1/embeddings",
        json!({"model": "echo-embed", "input": "x"}),
    )
    .await;
    assert_eq!(embed.status(), 200);
    let completion = post_json(
        &club,
        "/v1/completions",
        json!({"model": "echo", "prompt": "pg"}),
    )
    .await;
    assert_eq!(completion.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_expire_after_their_retention_and_with_their_record() {
    let (club, _media) = club().await;
    let speech = post_json(
        &club,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": "kept a while", "voice": "alloy", "response_format": "wav"}),
    )
    .await;
    assert_eq!(speech.status(), 200);
    let kept = record(&club, record_id(&speech)).await;
    let blob = kept["blobs"][0]["id"].as_str().unwrap().to_owned();
    // A blob whose record is gone (it never existed here) goes at the next expiry, whatever
    // its age; a young blob of a live record stays.
    club.store
        .put_blob("orphan", RecordId::new(), "audio/wav", b"RIFF")
        .await
        .unwrap();
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(club.store.expire_blobs(an_hour_ago).await.unwrap(), 1);
    assert!(club.store.blob("orphan").await.unwrap().is_none());
    assert!(club.store.blob(&blob).await.unwrap().is_some());
    // Past its retention it goes too; the record stays, and its blob's URL is a 404.
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(club.store.expire_blobs(later).await.unwrap(), 1);
    assert!(club.store.blob(&blob).await.unwrap().is_none());
    let url = format!("{}{}", club.url, kept["blobs"][0]["url"].as_str().unwrap());
    assert_eq!(http().get(&url).send().await.unwrap().status(), 404);
    assert_eq!(
        record(&club, record_id(&speech)).await["status"],
        "succeeded"
    );
}
