//! The records of the other endpoints on the web, in a real browser (Debian's Chromium through
//! chromedriver, as in `browser.rs`): a speech record plays its audio, an image record shows its
//! image, a transcription shows its transcript and its uploaded audio, an embeddings record says
//! how many vectors of what dimension; a private one is the same 404 to a stranger as nothing.
//!
//! Skips loudly without chromedriver (`scripts/browser.sh` installs it; CI does).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser_support;

use std::sync::Arc;

use browser_support::Driver;
use inference_club_coordinator::testing::media_engine::{self, MediaEngine};
use inference_club_coordinator::testing::{TestClub, TestService};
use inference_club_core::manifest::ServiceType;
use inference_club_core::provider::Provider;
use inference_club_provider::backends::{Echo, OpenAiCompatible};
use serde_json::{Value, json};

async fn post(club: &TestClub, path: &str, body: Value) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", club.url))
        .bearer_auth(&club.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.headers()["x-club-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_every_kind_show_their_media() {
    inference_club_coordinator::testing::install_crypto();
    let Some(mut driver) = Driver::start().await else {
        return;
    };
    let media = MediaEngine::start().await;
    let backend = || -> Arc<dyn Provider> {
        Arc::new(
            OpenAiCompatible::builder(media.url.clone())
                .build()
                .unwrap(),
        )
    };
    let echo: Arc<dyn Provider> = Arc::new(Echo::new().models(["echo-embed"]));
    let club = TestClub::start_services(vec![
        TestService::new("echo-embed", echo).features(["embeddings"]),
        TestService::new("whisper-1", backend()).service_type(ServiceType::Stt),
        TestService::new("tts-1", backend()).service_type(ServiceType::Tts),
        TestService::new("dall-e-test", backend()).service_type(ServiceType::Image),
    ])
    .await;

    let speech = post(
        &club,
        "/v1/audio/speech",
        json!({"model": "tts-1", "input": "Good evening, club", "voice": "alloy", "response_format": "wav"}),
    )
    .await;
    let image = post(
        &club,
        "/v1/images/generations",
        json!({"model": "dall-e-test", "prompt": "a lighthouse at dusk"}),
    )
    .await;
    let embed = post(
        &club,
        "/v1/embeddings",
        json!({"model": "echo-embed", "input": ["one", "two", "three"]}),
    )
    .await;
    let private = post(
        &club,
        "/v1/images/generations",
        json!({"model": "dall-e-test", "prompt": "not for you", "visibility": "private"}),
    )
    .await;
    let audio = media_engine::speech_wav("transcribe this clip");
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .part(
            "file",
            reqwest::multipart::Part::bytes(audio.clone())
                .file_name("clip.wav")
                .mime_str("audio/wav")
                .unwrap(),
        );
    let transcription = reqwest::Client::new()
        .post(format!("{}/v1/audio/transcriptions", club.url))
        .bearer_auth(&club.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(transcription.status(), 200);
    let transcribed = transcription.headers()["x-club-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    // An anonymous visitor: public records are for anyone.
    let browser = driver.browser().await;
    browser.open(&format!("{}/r/{speech}", club.url)).await;
    let text = browser.page_text().await;
    assert!(text.contains("Good evening, club"), "{text}");
    assert!(text.contains("/v1/audio/speech"), "{text}");
    let player = browser.find("figure.blob audio").await;
    let src = player.attr("src").await.unwrap().unwrap();
    assert!(
        src.contains(&format!("/api/v1/requests/{speech}/blobs/")),
        "{src}"
    );
    // The browser can load it: its duration is that of the WAV the engine made.
    let duration = browser
        .client
        .execute_async(
            "const a = document.querySelector('figure.blob audio'); \
             const done = arguments[arguments.length - 1]; \
             if (a.readyState >= 1) { done(a.duration); } \
             else { a.addEventListener('loadedmetadata', () => done(a.duration)); \
                    a.addEventListener('error', () => done(-1)); a.load(); }",
            vec![],
        )
        .await
        .unwrap()
        .as_f64()
        .unwrap();
    let expected = "Good evening, club".chars().count() as f64
        * media_engine::SAMPLES_PER_CHAR as f64
        / f64::from(media_engine::SAMPLE_RATE);
    assert!(
        (duration - expected).abs() < 0.05,
        "{duration} vs {expected}"
    );

    browser.open(&format!("{}/r/{image}", club.url)).await;
    let picture = browser.find("figure.blob img").await;
    assert_eq!(
        picture.attr("alt").await.unwrap().as_deref(),
        Some("a lighthouse at dusk")
    );
    let width = browser
        .client
        .execute_async(
            "const i = document.querySelector('figure.blob img'); \
             const done = arguments[arguments.length - 1]; \
             if (i.complete) { done(i.naturalWidth); } \
             else { i.addEventListener('load', () => done(i.naturalWidth)); \
                    i.addEventListener('error', () => done(0)); }",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(width.as_u64(), Some(u64::from(media_engine::IMAGE_SIDE)));

    browser.open(&format!("{}/r/{transcribed}", club.url)).await;
    let text = browser.page_text().await;
    assert!(
        text.contains(&media_engine::transcript_of(audio.len(), Some("audio/wav"))),
        "{text}"
    );
    assert!(browser.has("figure.blob audio").await, "the uploaded audio");

    browser.open(&format!("{}/r/{embed}", club.url)).await;
    let text = browser.page_text().await;
    assert!(
        text.contains(&format!(
            "3 embedding(s) of {} dimensions",
            Echo::EMBEDDING_DIMENSIONS
        )),
        "{text}"
    );
    assert!(text.contains("one · two · three"), "{text}");

    // The feed lists them by their prompt or input.
    browser.open(&format!("{}/", club.url)).await;
    let feed = browser.page_text().await;
    assert!(feed.contains("a lighthouse at dusk"), "{feed}");
    assert!(!feed.contains("not for you"), "{feed}");

    // A private record, and its image, are nothing to a stranger.
    browser.open(&format!("{}/r/{private}", club.url)).await;
    assert!(!browser.has("figure.blob img").await);
    assert!(!browser.page_text().await.contains("not for you"));
    browser.close().await;
    driver.stop().await;
}
