//! `club-provider init` finding engines on their default ports.

use std::net::SocketAddr;

use axum::Json;
use axum::routing::get;
use inference_club_core::manifest::{Engine, ServiceManifest};
use serde_json::json;

use crate::{club_provider, openai_app, run_async, serve, temp_dir, text};

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
