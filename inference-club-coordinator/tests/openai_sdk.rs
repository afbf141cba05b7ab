//! The official OpenAI Python SDK against a real coordinator: `tests/python/test_openai_sdk.py`,
//! run with the interpreter named by `CLUB_TEST_PYTHON` (`scripts/python-sdk.sh` makes one;
//! `scripts/test.sh` sets it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use inference_club_coordinator::testing::TestClub;
use inference_club_core::provider::Provider;
use inference_club_provider::backends::Echo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_passes() {
    let Ok(python) = std::env::var("CLUB_TEST_PYTHON") else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: CLUB_TEST_PYTHON not set — the OpenAI SDK tests need a venv with `openai`; run scripts/python-sdk.sh (scripts/test.sh does)"
        );
        return;
    };
    // One node serving the Echo test engine (model `echo`, with a reasoning trace).
    let echo: Arc<dyn Provider> = Arc::new(Echo::new().with_reasoning(true));
    let club = TestClub::start(vec![("echo", echo)]).await;
    let (url, key) = (club.url.clone(), club.key.clone());

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/test_openai_sdk.py"
    );
    let output = tokio::process::Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", script])
        .env("CLUB_URL", &url)
        .env("CLUB_API_KEY", &key)
        .output()
        .await
        .unwrap();
    drop(club);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pytest failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed"), "{stdout}");
}
