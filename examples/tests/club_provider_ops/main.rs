//! Runs the built `club-provider` binary's operations against fake engines on 127.0.0.1:
//! `doctor` (and, when `CLUB_TEST_LLAMACPP_URL` is set, against the CI llama.cpp server),
//! `init` with a fake Ollama and a fake vLLM on their default ports, and `run`'s handling of an
//! invalid manifest, JSON logs and SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod doctor;
mod init;
mod run;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use axum::Json;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

/// Bound on any one run of the binary.
const LIMIT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The binary, with no `CLUB_*` configuration inherited from the test's environment.
fn club_provider(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_club-provider"));
    command.args(args).current_dir(repo_root());
    for var in [
        "CLUB_COORDINATOR",
        "CLUB_API_KEY",
        "CLUB_MANIFEST",
        "CLUB_JOB_LOG",
        "CLUB_LOG",
        "CLUB_LOG_FORMAT",
    ] {
        command.env_remove(var);
    }
    command
}

/// Runs `command` to its end, killing it (and failing the test) after [`LIMIT`].
fn run_bounded(mut command: Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("club-provider starts");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "club-provider ran longer than {LIMIT:?}\nstdout: {}\nstderr: {}",
                text(&output.stdout),
                text(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command` in the background (the test's async servers keep running meanwhile).
async fn run_async(command: Command) -> Output {
    tokio::task::spawn_blocking(move || run_bounded(command))
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory under the system's temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "club-provider-ops-{name}-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Serves `app` on `listener` in the background.
fn serve(listener: tokio::net::TcpListener, app: axum::Router) {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

fn openai_app(model: &'static str) -> axum::Router {
    axum::Router::new()
        .route(
            "/v1/models",
            get(move || async move {
                Json(json!({"object": "list", "data": [
                    {"id": model, "object": "model", "created": 1, "owned_by": "fake"}
                ]}))
            }),
        )
        .route(
            "/v1/chat/completions",
            post(move |Json(request): Json<Value>| async move {
                if request["model"] != model {
                    let error = json!({"error": {"message": "no such model", "type": "NotFoundError", "code": 404}});
                    return (axum::http::StatusCode::NOT_FOUND, Json(error)).into_response();
                }
                let chunk = |delta: Value, finish: Value| {
                    format!(
                        "data: {}\n\n",
                        json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                               "model": model,
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                    )
                };
                let body = [
                    chunk(json!({"role": "assistant", "content": "Hi"}), Value::Null),
                    chunk(json!({}), json!("length")),
                    "data: [DONE]\n\n".to_owned(),
                ]
                .concat();
                ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], body).into_response()
            }),
        )
}

/// A port on 127.0.0.1 where nothing listens.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A manifest with a service `live` (engine `engine` at `url`, serving `model`) and a service
/// `dead` on a port where nothing listens.
fn doctor_manifest(engine: &str, url: &str, model: &str, dead: u16) -> String {
    format!(
        "schema_version: 1
agent: {{name: doctor-test}}
hosts:
  - id: box
    services:
      - name: live
        engine: {engine}
        url: {url}
        models:
          - id: {model}
      - name: dead
        engine: vllm
        url: http://127.0.0.1:{dead}/v1
        models:
          - id: whatever
"
    )
}
