//! Reading SSE answers: events one at a time, their content, and a consumer who leaves.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use super::{FakeEngine, wait_until};

/// Reads the `data:` payloads of an SSE response one event at a time.
pub struct SseReader {
    body: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>,
    >,
    buffer: Vec<u8>,
    /// Set when the body ended with a transport error.
    pub broken: bool,
}

impl SseReader {
    /// Reads `response`'s body.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
            broken: false,
        }
    }

    /// The next event's data (`[DONE]` included), or `None` at the end of the body.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(event).unwrap();
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(data.join("\n"));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(_)) => {
                    self.broken = true;
                    return None;
                }
                None => return None,
            }
        }
    }
}

/// The consumer goes away: reads `response`'s stream until its content is `prefix`, drops it,
/// and waits (up to 3 s) until `engine` sees its own response dropped. Returns how long that
/// took.
pub async fn leave_after(
    response: reqwest::Response,
    prefix: &str,
    engine: &FakeEngine,
) -> Duration {
    let mut events = SseReader::new(response);
    let mut seen = Vec::new();
    while streamed_content(&seen) != prefix {
        seen.push(events.next().await.expect("the stream ended early"));
    }
    let left = Instant::now();
    drop(events);
    engine_drops_its_response(engine, left).await
}

/// The consumer goes away before anything of its answer came: aborts `request` (the task
/// sending it) and waits (up to 3 s) until `engine` sees its own response dropped. Returns how
/// long that took.
pub async fn abort_request<T>(
    request: tokio::task::JoinHandle<T>,
    engine: &FakeEngine,
) -> Duration {
    let left = Instant::now();
    request.abort();
    engine_drops_its_response(engine, left).await
}

/// Waits (up to 3 s) until `engine` sees its only response dropped; how long since `left`.
async fn engine_drops_its_response(engine: &FakeEngine, left: Instant) -> Duration {
    wait_until(
        "the engine sees its response dropped",
        Duration::from_secs(3),
        || engine.dropped() == 1,
    )
    .await;
    left.elapsed()
}

/// The content of a list of SSE payloads (chunks' `delta.content`, joined).
pub fn streamed_content(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}
