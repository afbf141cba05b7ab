//! `club-provider doctor` against live and dead services and bad manifests.

use std::io::Write;

use crate::{
    club_provider, dead_port, doctor_manifest, openai_app, repo_root, run_async, serve, temp_dir,
    text,
};

/// A fake OpenAI-compatible engine serving `model`: its model list, and a one-word streamed
/// answer.
async fn fake_openai_engine(model: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(listener, openai_app(model));
    format!("http://{addr}/v1")
}

/// Runs `doctor` on a manifest whose first service is `live` and second `dead`, and checks the
/// ✓ lines for the first, the ✗ line with a hint for the second, and exit status 1.
async fn doctor_sees_one_live_and_one_dead_service(engine: &str, url: &str, model: &str) {
    let dir = temp_dir("doctor");
    let path = dir.join("agent.yaml");
    let dead = dead_port();
    std::fs::write(&path, doctor_manifest(engine, url, model, dead)).unwrap();
    let output = run_async(club_provider(&[
        "doctor",
        "--manifest",
        path.to_str().unwrap(),
    ]))
    .await;
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let has = |prefix: &str, needle: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(prefix) && l.contains(needle))
    };
    assert!(has("✓ manifest", "agent.yaml"), "{stdout}");
    assert!(has("✓ service live: engine answers at", url), "{stdout}");
    assert!(
        has("✓ service live: model ", &format!("{model} answers")),
        "{stdout}"
    );
    let dead_line = lines
        .iter()
        .position(|l| l.starts_with("✗ service dead:"))
        .unwrap_or_else(|| panic!("no ✗ line for the dead service:\n{stdout}"));
    assert!(
        lines[dead_line].contains(&format!("127.0.0.1:{dead}")),
        "{stdout}"
    );
    let hint = lines.get(dead_line + 1).copied().unwrap_or_default();
    assert!(
        hint.trim_start().starts_with("hint:") && hint.contains("is the engine running"),
        "{stdout}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("✗ service live")),
        "{stdout}"
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_against_the_ci_llamacpp_server_and_a_dead_port() {
    let Some(url) = std::env::var("CLUB_TEST_LLAMACPP_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        // Straight to stderr, past the test harness's capture, so the skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: CLUB_TEST_LLAMACPP_URL not set — `club-provider doctor` against llama.cpp \
             needs a running server (scripts/llamacpp/start.sh; .ci/run starts one). The same \
             checks run against a fake engine in doctor_against_a_fake_engine_and_a_dead_port."
        );
        return;
    };
    let model = std::env::var("CLUB_TEST_LLAMACPP_MODEL")
        .ok()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| "tiny-llama".into());
    doctor_sees_one_live_and_one_dead_service("llamacpp", url.trim(), &model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_against_a_fake_engine_and_a_dead_port() {
    let url = fake_openai_engine("fake-model").await;
    doctor_sees_one_live_and_one_dead_service("other", &url, "fake-model").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_model_the_engine_does_not_serve_and_an_invalid_manifest() {
    let url = fake_openai_engine("fake-model").await;
    let dir = temp_dir("doctor-model");
    let path = dir.join("agent.yaml");
    let manifest = doctor_manifest("vllm", &url, "not-loaded", dead_port());
    std::fs::write(&path, manifest).unwrap();
    let output = run_async(club_provider(&[
        "doctor",
        "--manifest",
        path.to_str().unwrap(),
    ]))
    .await;
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("✓ service live: engine answers"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✗ service live: model not-loaded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hint: the engine does not serve this model"),
        "{stdout}"
    );
    assert_eq!(output.status.code(), Some(1));

    let broken =
        repo_root().join("inference-club-core/tests/fixtures/manifests/several-mistakes.yaml");
    let output = run_async(club_provider(&[
        "doctor",
        "--manifest",
        broken.to_str().unwrap(),
    ]))
    .await;
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("✗ manifest"), "{stdout}");
    assert!(stdout.contains("hosts[0].services[1].engine"), "{stdout}");
    assert_eq!(output.status.code(), Some(1));
    std::fs::remove_dir_all(dir).unwrap();
}
