//! Runs the built `club-provider` binary's operations against fake engines on 127.0.0.1:
//! `doctor` (and, when `CLUB_TEST_LLAMACPP_URL` is set, against the CI llama.cpp server),
//! `init` with a fake Ollama and a fake vLLM on their default ports, and `run`'s handling of an
//! invalid manifest, JSON logs and SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use axum::Json;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use inference_club_core::manifest::{Engine, ServiceManifest};
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

/// A fake OpenAI-compatible engine serving `model`: its model list, and a one-word streamed
/// answer.
async fn fake_openai_engine(model: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve(listener, openai_app(model));
    format!("http://{addr}/v1")
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

/// Binds 127.0.0.1:`port`, failing the test with a message naming the port if it is taken.
fn bind_default_port(port: u16, engine: &str) -> tokio::net::TcpListener {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let listener = std::net::TcpListener::bind(addr).unwrap_or_else(|e| {
        panic!(
            "this test needs 127.0.0.1:{port} (the default port of {engine}) for a fake {engine}, \
             but cannot bind it: {e}. Stop whatever listens there and run the test again."
        )
    });
    listener.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(listener).unwrap()
}

/// Everything that binds the engines' default ports, in one test so that nothing else in this
/// file binds them at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_finds_a_fake_ollama_and_a_fake_vllm_on_their_default_ports() {
    let ollama = bind_default_port(11434, "Ollama");
    let vllm = bind_default_port(8000, "vLLM");
    serve(
        ollama,
        axum::Router::new().route(
            "/api/tags",
            get(|| async {
                Json(json!({"models": [{
                    "name": "llama3.2:latest",
                    "model": "llama3.2:latest",
                    "modified_at": "2024-05-01T12:20:30.123456+02:00",
                    "size": 2019393189u64,
                    "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                    "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B",
                                "quantization_level": "Q4_K_M"}
                }]}))
            }),
        ),
    );
    serve(vllm, openai_app("Qwen/Qwen3-8B"));

    let dir = temp_dir("init");
    let path = dir.join("agent.yaml");
    let output = run_async(club_provider(&["init", "--output", path.to_str().unwrap()])).await;
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("✓ ollama at http://127.0.0.1:11434 (1 models)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✓ vllm at http://127.0.0.1:8000/v1 (1 models)"),
        "{stdout}"
    );

    let output = run_async(club_provider(&["validate", path.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let written = std::fs::read_to_string(&path).unwrap();
    let manifest = ServiceManifest::parse_and_validate(&written).unwrap();
    let service = |name: &str| {
        manifest
            .services()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name} in\n{written}"))
    };
    let ollama = service("ollama");
    assert_eq!(ollama.engine, Some(Engine::Ollama));
    assert_eq!(ollama.url.as_deref(), Some("http://127.0.0.1:11434"));
    assert_eq!(ollama.models[0].served_id(), Some("llama3.2:latest"));
    let vllm = service("vllm");
    assert_eq!(vllm.engine, Some(Engine::Vllm));
    assert_eq!(vllm.url.as_deref(), Some("http://127.0.0.1:8000/v1"));
    assert_eq!(vllm.models[0].served_id(), Some("Qwen/Qwen3-8B"));

    // An existing file is kept unless --force.
    let output = run_async(club_provider(&["init", "--output", path.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stdout).contains("--force"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_with_an_invalid_manifest_prints_every_problem_and_exits_1() {
    let output = run_bounded(club_provider(&[
        "run",
        "--coordinator",
        "http://127.0.0.1:9",
        "--key",
        "icl_test",
        "--manifest",
        "inference-club-core/tests/fixtures/manifests/several-mistakes.yaml",
    ]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for path in [
        "schema_version: ",
        "agent.listen_port: ",
        "hosts[0].gpu.vendor: ",
        "hosts[0].gpu.vram_gb: ",
        "hosts[0].services[1].engine: ",
        "hosts[0].services[1].url: ",
        "hosts[0].services[1].max_concurrent: ",
        "hosts[0].services[1].name: ",
        "hosts[0].services[1].models[0]: ",
        "hosts[1].id: ",
    ] {
        assert!(stderr.contains(path), "{path:?} missing from:\n{stderr}");
    }
}

/// Reads `child`'s stderr lines on a thread, handing them over as they come.
fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Sends SIGTERM to `child` (by its id) and waits up to `within` for it to exit.
#[cfg(unix)]
fn terminate(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("club-provider did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn run_logs_json_lines_on_request_and_stops_on_sigterm() {
    let dir = temp_dir("run-json");
    let path = dir.join("agent.yaml");
    std::fs::write(
        &path,
        doctor_manifest(
            "vllm",
            &format!("http://127.0.0.1:{}/v1", dead_port()),
            "m",
            dead_port(),
        ),
    )
    .unwrap();
    // The configuration from the environment, the log format from the flag; no coordinator
    // listens, so the node logs its failed attempts and keeps trying.
    let mut command = club_provider(&["run", "--log-format", "json"]);
    command
        .env(
            "CLUB_COORDINATOR",
            format!("http://127.0.0.1:{}", dead_port()),
        )
        .env("CLUB_API_KEY", "icl_test_secret_key")
        .env("CLUB_MANIFEST", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            seen.push(line);
        }
    }
    let status = terminate(&mut child, Duration::from_secs(5));
    assert!(seen.len() >= 3, "too few log lines: {seen:#?}");
    for line in &seen {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(parsed["level"].is_string(), "{line}");
        assert!(parsed["fields"]["message"].is_string(), "{line}");
        assert!(
            !line.contains("icl_test_secret_key"),
            "the key was logged: {line}"
        );
    }
    assert!(
        seen.iter().any(|l| l.contains("reconnecting in")),
        "{seen:#?}"
    );
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
    std::fs::remove_dir_all(dir).unwrap();
}
