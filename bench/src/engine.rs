//! A fast fake OpenAI-compatible engine: `/v1/models` and `/v1/chat/completions`, whole and
//! streamed.
//!
//! The shape of an answer is chosen by the model name, so that the same engine serves every
//! scenario and the club's path forwards it untouched: `bench-cN` answers with N content chunks
//! as fast as it can, `bench-cN-pM` with N chunks, one every M milliseconds. Chunk `i` carries
//! the text `w{i} `; a usage chunk follows when the request asks for one.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream;

/// The models the engine lists: whole responses (16 chunks), streams of 100 chunks, and paced
/// streams of 100 chunks one every 5 ms.
pub const MODELS: [&str; 3] = [WHOLE_MODEL, STREAM_MODEL, PACED_MODEL];
/// Scenario 1's model.
pub const WHOLE_MODEL: &str = "bench-c16";
/// Scenario 2's model.
pub const STREAM_MODEL: &str = "bench-c100";
/// Scenario 3's model.
pub const PACED_MODEL: &str = "bench-c100-p5";

/// What a model name asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Content chunks per answer.
    pub chunks: usize,
    /// Time between chunks.
    pub pace: Duration,
}

impl Shape {
    /// The shape named by `model` (`bench-cN` or `bench-cN-pM`).
    pub fn parse(model: &str) -> Option<Self> {
        let rest = model.strip_prefix("bench-c")?;
        let (chunks, pace) = match rest.split_once("-p") {
            Some((chunks, pace)) => (chunks, pace.parse::<u64>().ok()?),
            None => (rest, 0),
        };
        let chunks = chunks.parse::<usize>().ok()?;
        (1..=100_000).contains(&chunks).then_some(Self {
            chunks,
            pace: Duration::from_millis(pace),
        })
    }

    /// The whole answer's text.
    pub fn content(&self) -> String {
        (0..self.chunks).map(|i| format!("w{i} ")).collect()
    }
}

/// The engine's routes (`/health` answers 200, as vLLM's does: routers check it).
pub fn app() -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
}

async fn models() -> Response {
    let data: Vec<serde_json::Value> = MODELS
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "bench"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// Only the fields the engine looks at.
#[derive(serde::Deserialize)]
struct Ask {
    model: String,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(serde::Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

fn bad(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error"}});
    (status, axum::Json(body)).into_response()
}

async fn chat(body: Bytes) -> Response {
    let Ok(ask) = serde_json::from_slice::<Ask>(&body) else {
        return bad(StatusCode::BAD_REQUEST, "the body is not a chat request");
    };
    let Some(shape) = Shape::parse(&ask.model) else {
        return bad(StatusCode::NOT_FOUND, "no such model");
    };
    let usage = ask
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    if ask.stream.unwrap_or(false) {
        streamed(&ask.model, shape, usage)
    } else {
        whole(&ask.model, shape)
    }
}

fn usage_json(shape: Shape) -> serde_json::Value {
    serde_json::json!({"prompt_tokens": 8, "completion_tokens": shape.chunks, "total_tokens": 8 + shape.chunks})
}

fn whole(model: &str, shape: Shape) -> Response {
    let body = serde_json::json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": shape.content()}, "finish_reason": "stop"}],
        "usage": usage_json(shape),
    });
    axum::Json(body).into_response()
}

/// One SSE event.
fn event(json: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

fn streamed(model: &str, shape: Shape, usage: bool) -> Response {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        event(&serde_json::json!({
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
    };
    let mut events = Vec::with_capacity(shape.chunks + 3);
    for i in 0..shape.chunks {
        let delta = if i == 0 {
            serde_json::json!({"role": "assistant", "content": format!("w{i} ")})
        } else {
            serde_json::json!({"content": format!("w{i} ")})
        };
        events.push(chunk(delta, None));
    }
    // The finish reason and what follows come with the last content chunk's tick.
    let mut tail = Vec::with_capacity(256);
    tail.extend_from_slice(&chunk(serde_json::json!({}), Some("stop")));
    if usage {
        tail.extend_from_slice(&event(&serde_json::json!({
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [],
            "usage": usage_json(shape),
        })));
    }
    tail.extend_from_slice(b"data: [DONE]\n\n");
    events.push(Bytes::from(tail));

    let body = if shape.pace.is_zero() {
        Body::from_stream(stream::iter(events.into_iter().map(Ok::<_, Infallible>)))
    } else {
        // Chunk i is due at start + i × pace (the first at once), without drift.
        let start = tokio::time::Instant::now();
        let pace = shape.pace;
        let paced = stream::unfold(
            (events.into_iter().enumerate(), start),
            move |(mut events, start)| async move {
                let (i, bytes) = events.next()?;
                let due = start + pace * u32::try_from(i).unwrap_or(u32::MAX);
                tokio::time::sleep_until(due).await;
                Some((Ok::<_, Infallible>(bytes), (events, start)))
            },
        );
        Body::from_stream(paced)
    };
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Serves the engine on `listener` until the process ends, printing `listening on http://ADDR`.
/// Sockets get `TCP_NODELAY`, as real engines' servers (uvicorn, llama.cpp) set it: without it a
/// small chunk written after the headers waits for the peer's delayed ACK (about 40 ms).
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let address = listener.local_addr()?;
    println!("listening on http://{address}");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_give_shapes() {
        assert_eq!(
            Shape::parse("bench-c100-p5"),
            Some(Shape {
                chunks: 100,
                pace: Duration::from_millis(5)
            })
        );
        assert_eq!(
            Shape::parse("bench-c16"),
            Some(Shape {
                chunks: 16,
                pace: Duration::ZERO
            })
        );
        assert_eq!(Shape::parse("gpt-4"), None);
        assert_eq!(Shape::parse("bench-c0"), None);
        assert_eq!(
            Shape::parse("bench-c2").map(|s| s.content()),
            Some("w0 w1 ".into())
        );
    }
}
