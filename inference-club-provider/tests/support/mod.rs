//! The one harness of the provider's tests: fake engines, small axum servers on 127.0.0.1 that
//! speak one engine's wire format and answer each request with a scripted [`Plan`]; and a fake
//! coordinator for the node's tests ([`coordinator`]).

#![allow(dead_code)]

pub mod coordinator;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The one model every fake engine serves.
pub const MODEL: &str = "club-test:latest";

/// Which engine's wire format a fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI chat completions: `/v1/models`, `/v1/chat/completions` streamed as SSE.
    OpenAi,
    /// Ollama's native API: `/api/tags`, `/api/chat` streamed as NDJSON.
    Ollama,
}

/// One step of a scripted response body.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send these bytes.
    Send(Bytes),
    /// Wait this long.
    Sleep(Duration),
    /// Send nothing more, and keep the connection open until the client closes it.
    Hang,
}

/// How a fake engine answers a chat request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The HTTP status.
    pub status: u16,
    /// The `content-type` of the response.
    pub content_type: &'static str,
    /// Extra response headers.
    pub headers: Vec<(&'static str, &'static str)>,
    /// How long to wait before sending the response headers.
    pub headers_after: Duration,
    /// The body, step by step.
    pub steps: Vec<Step>,
}

impl Plan {
    /// A 200 streamed in the wire's content type.
    pub fn stream(wire: Wire, steps: Vec<Step>) -> Self {
        Self {
            status: 200,
            content_type: match wire {
                Wire::OpenAi => "text/event-stream",
                Wire::Ollama => "application/x-ndjson",
            },
            headers: Vec::new(),
            headers_after: Duration::ZERO,
            steps,
        }
    }

    /// A whole response with this status, content type and body.
    pub fn whole(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            headers_after: Duration::ZERO,
            steps: vec![Step::Send(body.into())],
        }
    }

    /// A JSON error response with this status.
    pub fn json_error(status: u16, body: Value) -> Self {
        Self::whole(status, "application/json", body.to_string())
    }
}

/// Sends each given text as one step.
pub fn sends<I: IntoIterator<Item = String>>(pieces: I) -> Vec<Step> {
    pieces
        .into_iter()
        .map(|p| Step::Send(Bytes::from(p)))
        .collect()
}

/// What the fake noticed about a response body it was sending.
#[derive(Debug, Clone, Copy)]
pub struct BodyEnd {
    /// When the body was dropped.
    pub at: Instant,
    /// Whether every step had been sent; `false` when the client went away first.
    pub finished: bool,
}

/// Sends a [`BodyEnd`] when the response body is dropped: by hyper when the body is done, or
/// when the client closed the connection.
struct EndGuard {
    ends: mpsc::UnboundedSender<BodyEnd>,
    finished: bool,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let _ = self.ends.send(BodyEnd {
            at: Instant::now(),
            finished: self.finished,
        });
    }
}

type PlanFn = dyn Fn(&Value) -> Plan + Send + Sync;

struct EngineState {
    wire: Wire,
    plan: Box<PlanFn>,
    requests: Mutex<Vec<Value>>,
    ends: mpsc::UnboundedSender<BodyEnd>,
}

/// A fake engine on 127.0.0.1, stopped when dropped.
pub struct FakeEngine {
    /// `http://127.0.0.1:PORT` (the OpenAI routes are under `/v1`).
    pub origin: String,
    state: Arc<EngineState>,
    ends: mpsc::UnboundedReceiver<BodyEnd>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeEngine {
    /// Starts a fake speaking `wire` on a free port; every chat request for [`MODEL`] is answered
    /// with `plan(request body)`, any other model with the wire's 404.
    pub async fn start(
        wire: Wire,
        plan: impl Fn(&Value) -> Plan + Send + Sync + 'static,
    ) -> FakeEngine {
        let (ends_tx, ends) = mpsc::unbounded_channel();
        let state = Arc::new(EngineState {
            wire,
            plan: Box::new(plan),
            requests: Mutex::new(Vec::new()),
            ends: ends_tx,
        });
        let router = match wire {
            Wire::OpenAi => Router::new()
                .route("/v1/models", get(openai_models))
                .route("/v1/chat/completions", post(chat)),
            Wire::Ollama => Router::new()
                .route("/api/tags", get(ollama_tags))
                .route("/api/chat", post(chat)),
        }
        .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeEngine {
            origin,
            state,
            ends,
            server,
        }
    }

    /// The base URL an adapter for this wire is built with.
    pub fn base_url(&self) -> String {
        match self.state.wire {
            Wire::OpenAi => format!("{}/v1", self.origin),
            Wire::Ollama => self.origin.clone(),
        }
    }

    /// The chat request bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits up to `within` for a response body to be dropped before it was finished (the
    /// client closed the connection), and says when.
    pub async fn closed_early(&mut self, within: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ends.recv()).await {
                Ok(Some(end)) if !end.finished => return Some(end.at),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// A URL on 127.0.0.1 where nothing listens.
pub async fn refused_origin() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

async fn openai_models() -> axum::Json<Value> {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": 1_714_558_830, "owned_by": "fake"}]
    }))
}

async fn ollama_tags() -> axum::Json<Value> {
    axum::Json(json!({"models": [{
        "name": MODEL,
        "model": MODEL,
        "modified_at": "2024-05-01T12:20:30.123456+02:00",
        "size": 1234,
        "digest": "0123abcd",
        "details": {"format": "gguf", "family": "llama", "parameter_size": "1M"}
    }]}))
}

async fn chat(State(state): State<Arc<EngineState>>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(request.clone());
    let model = request.get("model").and_then(Value::as_str).unwrap_or("");
    let plan = if model == MODEL {
        (state.plan)(&request)
    } else {
        match state.wire {
            Wire::OpenAi => Plan::json_error(
                404,
                json!({"error": {
                    "message": format!("The model `{model}` does not exist."),
                    "type": "NotFoundError", "param": "model", "code": 404
                }}),
            ),
            Wire::Ollama => Plan::json_error(
                404,
                json!({"error": format!("model \"{model}\" not found, try pulling it first")}),
            ),
        }
    };
    tokio::time::sleep(plan.headers_after).await;
    let guard = EndGuard {
        ends: state.ends.clone(),
        finished: false,
    };
    let steps = plan.steps;
    let body = async_stream::stream! {
        // Moves the whole guard in: it lives as long as the body does.
        let mut guard = guard;
        for step in steps {
            match step {
                Step::Send(bytes) => yield Ok::<_, Infallible>(bytes),
                Step::Sleep(pause) => tokio::time::sleep(pause).await,
                Step::Hang => std::future::pending::<()>().await,
            }
        }
        guard.finished = true;
    };
    let mut response = Response::builder()
        .status(StatusCode::from_u16(plan.status).unwrap())
        .header(header::CONTENT_TYPE, plan.content_type)
        .header(header::CACHE_CONTROL, "no-cache");
    for (name, value) in plan.headers {
        response = response.header(name, value);
    }
    response.body(Body::from_stream(body)).unwrap()
}
