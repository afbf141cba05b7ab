//! A fake OpenAI-compatible engine: an axum server on 127.0.0.1:0 that streams a scripted
//! answer as SSE and lets a test see what it was asked and when a response was dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::wait_until;

/// What the engine does with the next requests.
#[derive(Debug, Clone)]
pub struct Script {
    /// The answer, piece by piece (one SSE chunk each).
    pub pieces: Vec<String>,
    /// The pause before each piece.
    pub pace: Duration,
    /// Misbehaviour.
    pub fault: Fault,
    /// The model its answers name (the requested model when `None`).
    pub model_name: Option<String>,
}

/// How the engine misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// None: the whole answer, a finish reason, usage when asked, `[DONE]`.
    None,
    /// Answers 200 and then drops the connection before any chunk.
    DropBeforeFirstChunk,
    /// Sends nothing until released (see [`FakeEngine::release`]), then answers normally.
    HoldBeforeFirstChunk,
    /// Sends this many pieces, then waits until released before sending the rest.
    HoldAfter(usize),
    /// Answers with this HTTP status and an OpenAI error envelope, no stream.
    Status(u16),
    /// Sends this many pieces, then an event that is not JSON, then ends the body.
    GarbageAfter(usize),
}

impl Script {
    /// `pieces` sent at `pace`, no fault.
    pub fn answer(pieces: &[&str], pace: Duration) -> Self {
        Self {
            pieces: pieces.iter().map(|p| (*p).to_owned()).collect(),
            pace,
            fault: Fault::None,
            model_name: None,
        }
    }

    /// The same with a fault.
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// The same, its answers naming the model `name`.
    pub fn with_model_name(mut self, name: &str) -> Self {
        self.model_name = Some(name.to_owned());
        self
    }
}

impl Default for Script {
    fn default() -> Self {
        Self::answer(&["Hello", ", ", "world", "!"], Duration::from_millis(5))
    }
}

/// What a fake engine saw.
#[derive(Debug)]
struct Seen {
    name: String,
    script: Mutex<Script>,
    requests: Mutex<Vec<Value>>,
    completed: AtomicUsize,
    dropped: AtomicUsize,
    gate: Semaphore,
}

/// A running fake engine. Its server task ends with the test's runtime.
#[derive(Debug, Clone)]
pub struct FakeEngine {
    /// Its base URL, ending in `/v1`.
    pub url: String,
    seen: Arc<Seen>,
}

impl FakeEngine {
    /// Starts an engine named `name` (its chunks' `id` carries it) with `script`.
    pub async fn start(name: &str, script: Script) -> Self {
        let seen = Arc::new(Seen {
            name: name.to_owned(),
            script: Mutex::new(script),
            requests: Mutex::new(Vec::new()),
            completed: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{address}/v1"),
            seen,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.seen.name
    }

    /// Replaces the script for the requests to come.
    pub fn set_script(&self, script: Script) {
        *self.seen.script.lock().unwrap() = script;
    }

    /// Lets `n` held responses go on.
    pub fn release(&self, n: usize) {
        self.seen.gate.add_permits(n);
    }

    /// The bodies of every request received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.seen.requests.lock().unwrap().clone()
    }

    /// How many requests it received.
    pub fn received(&self) -> usize {
        self.seen.requests.lock().unwrap().len()
    }

    /// How many responses it sent to the end.
    pub fn completed(&self) -> usize {
        self.seen.completed.load(Ordering::SeqCst)
    }

    /// How many responses were dropped before their end (the client went away).
    pub fn dropped(&self) -> usize {
        self.seen.dropped.load(Ordering::SeqCst)
    }

    /// Waits until it has received `n` requests.
    pub async fn wait_received(&self, n: usize, within: Duration) {
        wait_until(
            &format!("{} receives {n} requests", self.name()),
            within,
            || self.received() >= n,
        )
        .await;
    }
}

async fn models(State(seen): State<Arc<Seen>>) -> Response {
    let _ = &seen;
    axum::Json(json!({"object": "list", "data": []})).into_response()
}

/// Counts the response as dropped unless it was sent to the end.
struct DropWatch {
    seen: Arc<Seen>,
    finished: bool,
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if self.finished {
            self.seen.completed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.seen.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn chunk(id: &str, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": 1_764_227_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
}

async fn chat(State(seen): State<Arc<Seen>>, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    seen.requests.lock().unwrap().push(request.clone());
    let script = seen.script.lock().unwrap().clone();
    let model = match &script.model_name {
        Some(name) => name.clone(),
        None => request["model"].as_str().unwrap_or("unknown").to_owned(),
    };
    let wants_usage = request["stream_options"]["include_usage"] == json!(true);
    let id = format!("chatcmpl-{}", seen.name);
    if let Fault::Status(status) = script.fault {
        seen.completed.fetch_add(1, Ordering::SeqCst);
        let status = StatusCode::from_u16(status).unwrap();
        let error = json!({"error": {
            "message": format!("{} fell over", seen.name),
            "type": "server_error", "param": null, "code": null,
        }});
        return (status, axum::Json(error)).into_response();
    }
    if request["stream"] != json!(true) {
        return whole_answer(seen, script, id, model).await;
    }
    let seen = seen.clone();
    let body = async_stream::stream! {
        let mut watch = DropWatch { seen: seen.clone(), finished: false };
        if script.fault == Fault::DropBeforeFirstChunk {
            yield Err(std::io::Error::other("the engine fell over"));
            return;
        }
        if script.fault == Fault::HoldBeforeFirstChunk {
            seen.gate.acquire().await.unwrap().forget();
        }
        yield Ok::<Bytes, std::io::Error>(sse(&chunk(&id, &model, json!({"role": "assistant", "content": ""}), None)));
        for (n, piece) in script.pieces.iter().enumerate() {
            if script.fault == Fault::HoldAfter(n) {
                seen.gate.acquire().await.unwrap().forget();
            }
            if script.fault == Fault::GarbageAfter(n) {
                yield Ok(Bytes::from_static(b"data: <html><body>502 Bad Gateway</body></html>\n\n"));
                watch.finished = true;
                return;
            }
            tokio::time::sleep(script.pace).await;
            yield Ok(sse(&chunk(&id, &model, json!({"content": piece}), None)));
        }
        yield Ok(sse(&chunk(&id, &model, json!({}), Some("stop"))));
        if wants_usage {
            let completion = script.pieces.len() as u64;
            yield Ok(sse(&json!({
                "id": id, "object": "chat.completion.chunk", "created": 1_764_227_000,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": 7, "completion_tokens": completion, "total_tokens": 7 + completion},
            })));
        }
        yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
        watch.finished = true;
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

/// The answer to a request that is not streamed, as a real engine gives it: one JSON object,
/// with usage, once the script has run (its pace, holds and faults as for a stream). A fault
/// that drops the connection does so after the headers; garbage is an HTML page.
async fn whole_answer(seen: Arc<Seen>, script: Script, id: String, model: String) -> Response {
    let mut watch = DropWatch {
        seen: seen.clone(),
        finished: false,
    };
    if script.fault == Fault::DropBeforeFirstChunk {
        let broken = futures_util::stream::once(async {
            Err::<Bytes, _>(std::io::Error::other("the engine fell over"))
        });
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(broken))
            .unwrap();
    }
    if script.fault == Fault::HoldBeforeFirstChunk {
        seen.gate.acquire().await.unwrap().forget();
    }
    let mut content = String::new();
    for (n, piece) in script.pieces.iter().enumerate() {
        if script.fault == Fault::HoldAfter(n) {
            seen.gate.acquire().await.unwrap().forget();
        }
        if script.fault == Fault::GarbageAfter(n) {
            watch.finished = true;
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>502 Bad Gateway</body></html>",
            )
                .into_response();
        }
        tokio::time::sleep(script.pace).await;
        content.push_str(piece);
    }
    watch.finished = true;
    let completion = script.pieces.len() as u64;
    axum::Json(json!({
        "id": id, "object": "chat.completion", "created": 1_764_227_000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": completion, "total_tokens": 7 + completion},
    }))
    .into_response()
}
