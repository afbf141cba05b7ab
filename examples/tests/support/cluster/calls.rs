//! Calls (endpoints other than chat) through a cluster: a fake embeddings engine answering as
//! the Echo engine does, nodes with manifests of any service type, and calls as a consumer
//! makes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use inference_club_core::record::RecordId;
use inference_club_provider::backends::Echo;
use serde_json::{Value, json};

use super::super::{NodeProc, Proc, STARTUP, request_id};
use super::Cluster;

/// An OpenAI-compatible engine on 127.0.0.1 that answers `POST /v1/embeddings` with
/// [`Echo::embedding`] of each input (the Echo engine's embeddings, over HTTP, so that a
/// `club-provider` process can serve them), and lists its model.
#[derive(Debug, Clone)]
pub struct EmbeddingEngine {
    /// Its base URL, ending in `/v1`.
    pub url: String,
    asked: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Embedder {
    model: String,
    asked: Arc<AtomicUsize>,
}

async fn embeddings(State(embedder): State<Embedder>, Json(body): Json<Value>) -> Json<Value> {
    embedder.asked.fetch_add(1, Ordering::SeqCst);
    let inputs: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(texts) => texts
            .iter()
            .map(|t| t.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => Vec::new(),
    };
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": Echo::embedding(text)})
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

async fn models(State(embedder): State<Embedder>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": embedder.model, "object": "model"}]}))
}

impl EmbeddingEngine {
    /// Starts one serving `model`.
    pub async fn start(model: &str) -> Self {
        let asked = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .with_state(Embedder {
                model: model.to_owned(),
                asked: asked.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, asked }
    }

    /// How many embedding requests it received.
    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

/// One service of a node's manifest, of any type.
#[derive(Debug, Clone)]
pub struct CallService {
    /// `llm`, `stt`, `tts`, `image`.
    pub service_type: &'static str,
    /// `vllm`, `other`, …
    pub engine: &'static str,
    /// Its engine's base URL.
    pub url: String,
    /// Its features.
    pub features: Vec<&'static str>,
    /// The model it serves.
    pub model: String,
}

fn manifest_yaml(name: &str, services: &[CallService]) -> String {
    let mut yaml =
        format!("schema_version: 1\nagent:\n  name: {name}\nhosts:\n  - id: box\n    services:\n");
    for (n, service) in services.iter().enumerate() {
        yaml.push_str(&format!(
            "      - name: svc{n}\n        type: {}\n        engine: {}\n        url: {}\n",
            service.service_type, service.engine, service.url
        ));
        if !service.features.is_empty() {
            yaml.push_str(&format!(
                "        features: [{}]\n",
                service.features.join(", ")
            ));
        }
        yaml.push_str(&format!(
            "        models:\n          - id: {}\n",
            service.model
        ));
    }
    yaml
}

/// A consumer's answer to a call: status, content type, record id and body.
#[derive(Debug)]
pub struct CallAnswer {
    /// The HTTP status.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: String,
    /// The record it names.
    pub id: Option<RecordId>,
    /// The body.
    pub body: Vec<u8>,
}

impl CallAnswer {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Cluster {
    /// Starts a node named `name` with `services` (any type) that dials `coordinator_url`
    /// with `ada`'s key, and waits until it says it is linked.
    pub async fn add_call_node(
        &mut self,
        name: &str,
        services: &[CallService],
        coordinator_url: &str,
    ) {
        let manifest = self.club.dir.join(format!("{name}.yaml"));
        std::fs::write(&manifest, manifest_yaml(name, services)).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_club-provider"));
        command
            .arg("run")
            .arg("--coordinator")
            .arg(coordinator_url)
            .arg("--key")
            .arg(&self.club.key)
            .arg("--manifest")
            .arg(&manifest);
        let proc = Proc::spawn(&format!("node {name}"), command);
        proc.wait_for_line("linked to the coordinator", STARTUP)
            .await;
        self.club.nodes.push(NodeProc {
            name: name.to_owned(),
            proc,
        });
    }

    /// `POST {base}{path}` with `body` (of `content_type`) as `ada`.
    pub async fn post_call(
        &self,
        base: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> CallAnswer {
        let response = self
            .club
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(&self.club.key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let id = request_id(&response);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.bytes().await.unwrap().to_vec();
        CallAnswer {
            status,
            content_type,
            id,
            body,
        }
    }

    /// `POST {base}{path}` with a JSON `body` as `ada`.
    pub async fn post_json(&self, base: &str, path: &str, body: &Value) -> CallAnswer {
        self.post_call(
            base,
            path,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
    }

    /// `POST {base}/v1/audio/transcriptions` as `ada`: a multipart upload of `audio` (as
    /// `file_name`, `audio/wav`) for `model`.
    pub async fn transcribe(
        &self,
        base: &str,
        model: &str,
        file_name: &str,
        audio: &[u8],
    ) -> CallAnswer {
        let boundary = "club-cluster-test-boundary";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"{file_name}\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(audio);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        self.post_call(
            base,
            "/v1/audio/transcriptions",
            &format!("multipart/form-data; boundary={boundary}"),
            body,
        )
        .await
    }
}
