//! The official OpenAI SDKs against a real coordinator.
//!
//! - Python: `tests/python/test_openai_sdk.py` (chat) and `tests/python/test_openai_sdk_endpoints.py`
//!   (completions, embeddings, responses, audio, images), run with the interpreter named by
//!   `CLUB_TEST_PYTHON` (`scripts/python-sdk.sh` makes one; `scripts/test.sh` sets it).
//! - Node: `tests/node/openai_sdk.test.mjs`, run with `node --test` and the `openai` package that
//!   `scripts/node-sdk.sh` installs into the directory `CLUB_TEST_NODE_SDK` names.
//!
//! The endpoint suites run against a club whose node serves the Echo test engine (a chat-only
//! `echo` and an embeddings-featured `echo-embed`) and the fake media engine
//! ([`MediaEngine`]) behind the OpenAI-compatible backend as `stt`, `tts` and `image` services;
//! on SQLite, and on PostgreSQL when `CLUB_TEST_DATABASE_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use futures_util::StreamExt as _;
use inference_club_coordinator::Limits;
use inference_club_coordinator::testing::media_engine::{self, Asked, MediaEngine};
use inference_club_coordinator::testing::{TestClub, TestDatabase, TestService};
use inference_club_core::endpoint::Endpoint;
use inference_club_core::manifest::ServiceType;
use inference_club_core::provider::{Call, CallOutput, Provider, RequestContext, Upload};
use inference_club_provider::backends::{Echo, OpenAiCompatible};
use serde_json::json;

const CHAT_MODEL: &str = "echo";
const EMBED_MODEL: &str = "echo-embed";
const STT_MODEL: &str = "whisper-1";
const TTS_MODEL: &str = "tts-1";
const IMAGE_MODEL: &str = "dall-e-test";

fn skip(variable: &str, what: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {variable} not set — {what}; scripts/test.sh sets it"
    );
}

/// Runs `program args…` with the club's environment; panics with its output unless it passed,
/// and answers its stdout.
async fn run_suite(program: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let output = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_passes() {
    let Ok(python) = std::env::var("CLUB_TEST_PYTHON") else {
        skip(
            "CLUB_TEST_PYTHON",
            "the OpenAI SDK tests need a venv with `openai`; run scripts/python-sdk.sh",
        );
        return;
    };
    // One node serving the Echo test engine (model `echo`, with a reasoning trace).
    let echo: Arc<dyn Provider> = Arc::new(Echo::new().with_reasoning(true));
    let club = TestClub::start(vec![("echo", echo)]).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/test_openai_sdk.py"
    );
    let env = [
        ("CLUB_URL", club.url.clone()),
        ("CLUB_API_KEY", club.key.clone()),
    ];
    let stdout = run_suite(
        &python,
        &["-m", "pytest", "-q", "-p", "no:cacheprovider", script],
        &env,
    )
    .await;
    drop(club);
    assert!(stdout.contains("passed"), "{stdout}");
}

/// A club whose node serves Echo (`echo`: chat only, with a reasoning trace; `echo-embed`:
/// feature `embeddings`) and `media` behind the OpenAI-compatible backend as the `stt`, `tts`
/// and `image` services of [`STT_MODEL`], [`TTS_MODEL`] and [`IMAGE_MODEL`].
async fn endpoint_club(database: TestDatabase, media: &MediaEngine) -> TestClub {
    let backend: Arc<dyn Provider> =
        Arc::new(OpenAiCompatible::builder(&media.url).build().unwrap());
    let services = vec![
        TestService::new(CHAT_MODEL, Arc::new(Echo::new().with_reasoning(true))),
        TestService::new(EMBED_MODEL, Arc::new(Echo::new().models([EMBED_MODEL])))
            .features(["embeddings"]),
        TestService::new(STT_MODEL, backend.clone()).service_type(ServiceType::Stt),
        TestService::new(TTS_MODEL, backend.clone()).service_type(ServiceType::Tts),
        TestService::new(IMAGE_MODEL, backend).service_type(ServiceType::Image),
    ];
    TestClub::start_services_with(database, services, |builder| {
        builder.limits(endpoint_limits())
    })
    .await
}

/// The endpoint club's limits: uploads of at most [`MAX_UPLOAD_BYTES`] (so that the oversize
/// upload is small), and requests per minute enough for a whole suite.
fn endpoint_limits() -> Limits {
    Limits {
        max_upload_bytes: MAX_UPLOAD_BYTES,
        requests_per_minute: 10_000,
        ..Limits::default()
    }
}

/// The endpoint club's upload limit.
const MAX_UPLOAD_BYTES: usize = 1024 * 1024;

/// The environment the endpoint suites read.
fn endpoint_env(club: &TestClub) -> Vec<(&'static str, String)> {
    vec![
        ("CLUB_URL", club.url.clone()),
        ("CLUB_API_KEY", club.key.clone()),
        ("CLUB_MODEL", CHAT_MODEL.into()),
        ("CLUB_EMBED_MODEL", EMBED_MODEL.into()),
        (
            "CLUB_EMBED_DIMENSIONS",
            Echo::EMBEDDING_DIMENSIONS.to_string(),
        ),
        ("CLUB_STT_MODEL", STT_MODEL.into()),
        ("CLUB_TTS_MODEL", TTS_MODEL.into()),
        ("CLUB_IMAGE_MODEL", IMAGE_MODEL.into()),
        (
            "CLUB_TTS_SAMPLES_PER_CHAR",
            media_engine::SAMPLES_PER_CHAR.to_string(),
        ),
        (
            "CLUB_OVERSIZE_UPLOAD_BYTES",
            (MAX_UPLOAD_BYTES + 1).to_string(),
        ),
    ]
}

/// What the node forwarded to the media engine while an SDK suite ran: the uploads with their
/// file names, content types and models; speech and image requests under the engine's model ids,
/// images always asked for as `b64_json` (the coordinator stores them to serve `url` answers).
fn assert_forwarded(media: &MediaEngine) {
    let transcriptions = media.asked_on("/v1/audio/transcriptions");
    let speech_wav = transcriptions
        .iter()
        .find(|a| a.file.as_ref().and_then(|f| f.file_name.as_deref()) == Some("speech.wav"))
        .unwrap_or_else(|| {
            panic!("no upload named speech.wav reached the engine: {transcriptions:#?}")
        });
    let file = speech_wav.file.as_ref().unwrap();
    assert_eq!(file.content_type.as_deref(), Some("audio/wav"));
    assert!(
        file.data.starts_with(b"RIFF"),
        "the upload's bytes arrived as sent"
    );
    assert_eq!(speech_wav.model(), Some(STT_MODEL));
    assert!(
        speech_wav
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("multipart/form-data")),
        "{speech_wav:?}"
    );
    assert!(
        transcriptions.iter().all(|a| a.model() == Some(STT_MODEL)),
        "{transcriptions:#?}"
    );
    let json_formats: Vec<Option<&str>> = transcriptions
        .iter()
        .map(|a| a.field("response_format"))
        .collect();
    assert!(json_formats.contains(&Some("json")), "{json_formats:?}");
    assert!(json_formats.contains(&Some("text")), "{json_formats:?}");

    let speech = media.asked_on("/v1/audio/speech");
    assert!(!speech.is_empty(), "no speech request reached the engine");
    for asked in &speech {
        assert_eq!(asked.model(), Some(TTS_MODEL), "{asked:?}");
        assert_eq!(asked.field("voice"), Some("alloy"), "{asked:?}");
        assert!(asked.field("input").is_some(), "{asked:?}");
    }
    let images = media.asked_on("/v1/images/generations");
    assert!(!images.is_empty(), "no image request reached the engine");
    for asked in &images {
        assert_eq!(asked.model(), Some(IMAGE_MODEL), "{asked:?}");
        assert!(
            matches!(asked.field("response_format"), None | Some("b64_json")),
            "the engine was asked for {:?} (it must be b64_json): {asked:?}",
            asked.field("response_format")
        );
    }
}

/// Runs the Python endpoint suite against a club on `database`.
async fn python_endpoint_suite(python: &str, database: TestDatabase) {
    let media = MediaEngine::start().await;
    let club = endpoint_club(database, &media).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/test_openai_sdk_endpoints.py"
    );
    let stdout = run_suite(
        python,
        &[
            "-m",
            "pytest",
            "-q",
            "--tb=short",
            "-p",
            "no:cacheprovider",
            script,
        ],
        &endpoint_env(&club),
    )
    .await;
    assert!(stdout.contains("passed"), "{stdout}");
    // The oversize upload never reached the engine.
    assert!(
        media
            .asked()
            .iter()
            .all(|a| a.file.as_ref().and_then(|f| f.file_name.as_deref()) != Some("huge.wav")),
        "the oversize upload was forwarded"
    );
    assert_forwarded(&media);
    drop(club);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_passes_on_every_endpoint() {
    let Ok(python) = std::env::var("CLUB_TEST_PYTHON") else {
        skip(
            "CLUB_TEST_PYTHON",
            "the OpenAI SDK tests need a venv with `openai`; run scripts/python-sdk.sh",
        );
        return;
    };
    python_endpoint_suite(&python, TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_passes_on_every_endpoint_on_postgres() {
    let Ok(python) = std::env::var("CLUB_TEST_PYTHON") else {
        skip(
            "CLUB_TEST_PYTHON",
            "the OpenAI SDK tests need a venv with `openai`; run scripts/python-sdk.sh",
        );
        return;
    };
    let Some(database) =
        TestDatabase::postgres("the OpenAI SDK endpoint suite on PostgreSQL").await
    else {
        return;
    };
    python_endpoint_suite(&python, database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_node_sdk_passes() {
    let Some(sdk) = node_sdk() else {
        return;
    };
    node_suite(sdk, TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_node_sdk_passes_on_postgres() {
    let Some(sdk) = node_sdk() else {
        return;
    };
    let Some(database) = TestDatabase::postgres("the OpenAI Node SDK suite on PostgreSQL").await
    else {
        return;
    };
    node_suite(sdk, database).await;
}

/// The Node SDK's directory, or `None` having said loudly that the test skips.
fn node_sdk() -> Option<String> {
    let sdk = std::env::var("CLUB_TEST_NODE_SDK").ok();
    if sdk.is_none() {
        skip(
            "CLUB_TEST_NODE_SDK",
            "the OpenAI Node SDK test needs the `openai` npm package; run scripts/node-sdk.sh",
        );
    }
    sdk
}

/// `tests/node/openai_sdk.test.mjs` with `node --test` against a club on `database`.
async fn node_suite(sdk: String, database: TestDatabase) {
    let media = MediaEngine::start().await;
    let club = endpoint_club(database, &media).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/openai_sdk.test.mjs"
    );
    let mut env = endpoint_env(&club);
    env.push(("CLUB_TEST_NODE_SDK", sdk));
    let stdout = run_suite("node", &["--test", "--test-reporter=spec", script], &env).await;
    // The spec reporter's summary: every test ran and none failed.
    assert!(stdout.contains("ℹ fail 0"), "{stdout}");
    assert!(!stdout.contains("ℹ tests 0"), "{stdout}");
    assert_forwarded(&media);
    drop(club);
}

/// The fake media engine itself, through the node's OpenAI-compatible backend (no coordinator):
/// what the SDK suites rely on it to answer.
#[tokio::test]
async fn media_engine_answers_the_openai_compatible_backend() {
    let media = MediaEngine::start().await;
    let backend = OpenAiCompatible::builder(&media.url).build().unwrap();
    let models: Vec<String> = backend
        .models()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(models, media_engine::DEFAULT_MODELS);

    let one = |call: Call| {
        let backend = &backend;
        async move {
            let mut stream = backend.call(call, RequestContext::new("r")).await?;
            let first = stream.next().await.unwrap()?;
            assert!(
                stream.next().await.is_none(),
                "one output for a whole answer"
            );
            Ok::<_, inference_club_core::provider::ProviderError>(first)
        }
    };

    // Transcriptions: the upload, its name, content type and the model arrive.
    let wav = media_engine::speech_wav("audio");
    let upload = Upload {
        file_name: "clip.wav".into(),
        content_type: "audio/wav".into(),
        data: wav.clone().into(),
    };
    let call = Call::new(
        Endpoint::AudioTranscriptions,
        json!({"model": STT_MODEL, "response_format": "json", "temperature": 0}),
    )
    .with_upload(upload.clone());
    let expected = media_engine::transcript_of(wav.len(), Some("audio/wav"));
    assert_eq!(
        one(call).await.unwrap(),
        CallOutput::Json(json!({"text": expected, "usage": {"type": "duration", "seconds": 1}}))
    );
    let asked: Asked = media.last_on("/v1/audio/transcriptions").unwrap();
    let file = asked.file.unwrap();
    assert_eq!(file.file_name.as_deref(), Some("clip.wav"));
    assert_eq!(file.content_type.as_deref(), Some("audio/wav"));
    assert_eq!(file.data, wav);
    assert_eq!(
        asked.body,
        json!({"model": STT_MODEL, "response_format": "json", "temperature": "0"})
    );

    let text = Call::new(
        Endpoint::AudioTranscriptions,
        json!({"model": STT_MODEL, "response_format": "text"}),
    )
    .with_upload(upload.clone());
    match one(text).await.unwrap() {
        CallOutput::Bytes { content_type, data } => {
            assert!(content_type.starts_with("text/plain"), "{content_type}");
            assert_eq!(data, expected.as_bytes());
        }
        other => panic!("{other:?}"),
    }
    let srt = Call::new(
        Endpoint::AudioTranscriptions,
        json!({"model": STT_MODEL, "response_format": "srt"}),
    )
    .with_upload(upload.clone());
    match one(srt).await.unwrap() {
        CallOutput::Bytes { data, .. } => assert_eq!(
            std::str::from_utf8(&data).unwrap(),
            format!("1\n00:00:00,000 --> 00:00:00,250\n{expected}\n\n")
        ),
        other => panic!("{other:?}"),
    }
    let no_model = Call::new(Endpoint::AudioTranscriptions, json!({})).with_upload(upload);
    assert_eq!(one(no_model).await.unwrap_err().status(), Some(400));

    // Speech: a WAV as long as the input says, or raw PCM; mp3 refused.
    let speech = Call::new(
        Endpoint::AudioSpeech,
        json!({"model": TTS_MODEL, "voice": "alloy", "input": "four", "response_format": "wav"}),
    );
    assert_eq!(
        one(speech).await.unwrap(),
        CallOutput::Bytes {
            content_type: "audio/wav".into(),
            data: media_engine::speech_wav("four").into()
        }
    );
    assert_eq!(
        media_engine::speech_wav("four").len(),
        44 + 4 * 2 * media_engine::SAMPLES_PER_CHAR
    );
    let pcm = Call::new(
        Endpoint::AudioSpeech,
        json!({"model": TTS_MODEL, "voice": "alloy", "input": "ab", "response_format": "pcm"}),
    );
    assert_eq!(
        one(pcm).await.unwrap(),
        CallOutput::Bytes {
            content_type: "audio/pcm".into(),
            data: media_engine::speech_pcm("ab").into()
        }
    );
    let mp3 = Call::new(
        Endpoint::AudioSpeech,
        json!({"model": TTS_MODEL, "voice": "alloy", "input": "x", "response_format": "mp3"}),
    );
    let refused = one(mp3).await.unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused:?}");

    // Images: n base64 PNGs; url refused.
    let images = Call::new(
        Endpoint::ImagesGenerations,
        json!({"model": IMAGE_MODEL, "prompt": "a cat", "n": 2, "response_format": "b64_json"}),
    );
    let CallOutput::Json(answer) = one(images).await.unwrap() else {
        panic!("images answer JSON");
    };
    assert!(answer["created"].is_u64(), "{answer}");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (index, item) in data.iter().enumerate() {
        assert_eq!(
            item["b64_json"].as_str().unwrap(),
            media_engine::base64(&media_engine::png_for("a cat", index))
        );
    }
    let url = Call::new(
        Endpoint::ImagesGenerations,
        json!({"model": IMAGE_MODEL, "prompt": "a cat", "response_format": "url"}),
    );
    assert_eq!(one(url).await.unwrap_err().status(), Some(400));

    // A failure on demand, in OpenAI's shape, with its status.
    media.fail_next(503, "busy");
    let speech = Call::new(
        Endpoint::AudioSpeech,
        json!({"model": TTS_MODEL, "voice": "alloy", "input": "x"}),
    );
    assert_eq!(one(speech).await.unwrap_err().status(), Some(503));
}
