//! `club complete`, `embed`, `transcribe`, `speak` and `image` against a real coordinator and
//! node (Echo; the fake media engine behind the OpenAI-compatible backend).

use std::sync::Arc;

use inference_club_coordinator::testing::media_engine::{self, MediaEngine};
use inference_club_coordinator::testing::{TestClub, TestService};
use inference_club_core::manifest::ServiceType;
use inference_club_core::provider::Provider;
use inference_club_provider::backends::{Echo, OpenAiCompatible};

use crate::{config_dir, run_club};

/// The record id `club` printed on stderr (`record: ID (…)`).
fn record_of(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("record: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no record id printed: {stderr}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_embed_transcribe_speak_and_image_as_a_user_would() {
    let media = MediaEngine::start().await;
    let backend = || -> Arc<dyn Provider> {
        Arc::new(
            OpenAiCompatible::builder(media.url.clone())
                .build()
                .unwrap(),
        )
    };
    let echo: Arc<dyn Provider> = Arc::new(Echo::new().models(["echo", "echo-embed"]));
    let club = TestClub::start_services(vec![
        TestService::new("echo", echo.clone()),
        TestService::new("echo-embed", echo).features(["embeddings"]),
        TestService::new("whisper-1", backend()).service_type(ServiceType::Stt),
        TestService::new("tts-1", backend()).service_type(ServiceType::Tts),
        TestService::new("dall-e-test", backend()).service_type(ServiceType::Image),
    ])
    .await;
    let config = config_dir("endpoints");
    std::fs::create_dir_all(&config).unwrap();
    let (url, key) = (club.url.as_str(), club.key.as_str());
    let run = |args: &[&str], stdin: &'static str| {
        let mut all = vec!["--url", url, "--api-key", key];
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        let config = config.clone();
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            run_club(&config, &all, stdin).await
        }
    };

    // complete streams the continuation to stdout, the record to stderr.
    let complete = run(
        &[
            "complete",
            "-m",
            "echo",
            "--visibility",
            "private",
            "once upon",
        ],
        "",
    )
    .await;
    assert!(complete.ok, "{}", complete.stderr);
    assert_eq!(complete.stdout, "once upon\n");
    assert!(
        complete
            .stderr
            .contains("(private) · 2 prompt + 2 completion tokens"),
        "{}",
        complete.stderr
    );
    let id = record_of(&complete.stderr);
    let shown = run(&["--json", "requests", "show", &id], "").await;
    assert!(shown.ok, "{}", shown.stderr);
    assert_eq!(shown.json()["visibility"], "private");
    // From stdin, and as JSON.
    let json = run(&["--json", "complete", "-m", "echo"], "from stdin").await;
    assert!(json.ok, "{}", json.stderr);
    let answer = json.json();
    assert_eq!(answer["completion"]["choices"][0]["text"], "from stdin");
    assert!(answer["record_id"].is_string());

    // embed shows each vector's size and first values; --json the whole answer.
    let embed = run(&["embed", "-m", "echo-embed", "hello world", "bye"], "").await;
    assert!(embed.ok, "{}", embed.stderr);
    let lines: Vec<&str> = embed.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", embed.stdout);
    let first = Echo::embedding("hello world")[0];
    assert!(
        lines[0].starts_with(&format!("[0] 8 dimensions: {first:.4}, ")),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("[1] 8 dimensions: "), "{}", lines[1]);
    record_of(&embed.stderr);
    let json = run(&["--json", "embed", "-m", "echo-embed", "hello world"], "").await;
    assert!(json.ok, "{}", json.stderr);
    let answer = json.json();
    let vector = answer["embeddings"]["data"][0]["embedding"]
        .as_array()
        .unwrap();
    assert_eq!(vector.len(), 8);
    assert!((vector[0].as_f64().unwrap() - first).abs() < 1e-6);
    assert_eq!(answer["embeddings"]["usage"]["prompt_tokens"], 2);

    // transcribe prints the text.
    let audio_file = config.join("hi.wav");
    let audio = media_engine::speech_wav("hi");
    std::fs::write(&audio_file, &audio).unwrap();
    let transcribe = run(
        &[
            "transcribe",
            "-m",
            "whisper-1",
            audio_file.to_str().unwrap(),
        ],
        "",
    )
    .await;
    assert!(transcribe.ok, "{}", transcribe.stderr);
    assert_eq!(
        transcribe.stdout,
        format!(
            "{}\n",
            media_engine::transcript_of(audio.len(), Some("audio/wav"))
        )
    );
    record_of(&transcribe.stderr);

    // speak writes the audio file (its format from the extension), text from stdin.
    let speech_file = config.join("hello.wav");
    let speak = run(
        &[
            "speak",
            "-m",
            "tts-1",
            "--voice",
            "alloy",
            "-o",
            speech_file.to_str().unwrap(),
        ],
        "hello",
    )
    .await;
    assert!(speak.ok, "{}", speak.stderr);
    assert_eq!(
        std::fs::read(&speech_file).unwrap(),
        media_engine::speech_wav("hello")
    );
    assert!(speak.stdout.starts_with("wrote "), "{}", speak.stdout);
    record_of(&speak.stderr);

    // image writes OUT-1.png and OUT-2.png for two images.
    let image_file = config.join("square.png");
    let image = run(
        &[
            "image",
            "-m",
            "dall-e-test",
            "-n",
            "2",
            "-o",
            image_file.to_str().unwrap(),
            "a",
            "red",
            "square",
        ],
        "",
    )
    .await;
    assert!(image.ok, "{}", image.stderr);
    for i in 0..2 {
        let written = std::fs::read(config.join(format!("square-{}.png", i + 1))).unwrap();
        assert_eq!(written, media_engine::png_for("a red square", i));
    }
    record_of(&image.stderr);

    // An error is the server's message on stderr and a failed exit.
    let missing = run(&["embed", "-m", "no-such-model", "x"], "").await;
    assert!(!missing.ok);
    assert!(missing.stderr.starts_with("error: "), "{}", missing.stderr);
    let _ = std::fs::remove_dir_all(&config);
}
