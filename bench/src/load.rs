//! The load generator: a closed loop at fixed concurrency, bounded by a duration and a count.
//!
//! Each of `concurrency` workers sends a request, reads the whole answer, and sends the next,
//! until the deadline passes or `max_requests` have been started. Every request records its
//! latency; a stream also records its time to first content chunk and the gaps between content
//! chunks as they arrive off the socket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::stats::Summary;

/// Where to send requests and what to ask for.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://HOST:PORT`.
    pub base_url: String,
    /// The bearer key, if the target needs one.
    pub key: Option<String>,
    /// The model (which chooses the answer's shape, see [`crate::engine::Shape`]).
    pub model: String,
    /// Ask for a stream.
    pub stream: bool,
    /// Content chunks expected per answer.
    pub expected_chunks: usize,
    /// The whole answer's text, as checked.
    pub expected_content: String,
}

/// How much load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Stop starting requests after this long.
    pub duration: Duration,
    /// Stop after starting this many.
    pub max_requests: u64,
    /// Check every answer fully (parse every chunk); otherwise a cheap check.
    pub strict: bool,
}

/// What one worker saw.
#[derive(Debug, Default)]
struct Samples {
    latency_us: Vec<u64>,
    ttfc_us: Vec<u64>,
    gaps_us: Vec<u64>,
    chunks: u64,
    errors: u64,
    first_error: Option<String>,
    answered_2xx: u64,
    failures: BTreeMap<String, u64>,
}

impl Samples {
    fn failed(&mut self, failure: Failure) {
        self.errors += 1;
        *self.failures.entry(failure.kind).or_default() += 1;
        self.first_error.get_or_insert(failure.detail);
    }
}

/// Why one request did not count: its kind (`status 429`, `connection error`, `wrong answer`…),
/// counted per kind, and what was seen.
#[derive(Debug)]
struct Failure {
    kind: String,
    detail: String,
}

impl Failure {
    fn new(kind: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            detail: detail.into(),
        }
    }

    fn wrong(detail: impl Into<String>) -> Self {
        Self::new(WRONG_ANSWER, detail)
    }
}

/// The kind of a 2xx answer whose body was not the expected answer.
const WRONG_ANSWER: &str = "wrong answer";

/// The outcome of one run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    /// Requests completed correctly.
    pub ok: u64,
    /// Requests that failed or whose answer was wrong.
    pub errors: u64,
    /// The first error, to say what went wrong.
    pub first_error: Option<String>,
    /// Answers with a 2xx status, correct or not (what the server counts as served).
    pub answered_2xx: u64,
    /// The errors by kind: `status NNN`, `connection error`, `body error`, `stream error`,
    /// `in-stream error`, `wrong answer`.
    pub failures: BTreeMap<String, u64>,
    /// Wall time of the run, s.
    pub seconds: f64,
    /// Correct requests per second.
    pub requests_per_s: f64,
    /// Content chunks received per second (streams).
    pub chunks_per_s: f64,
    /// Latency of a whole request.
    pub latency: Summary,
    /// Time to the first content chunk (streams).
    pub ttfc: Summary,
    /// Gaps between content chunks (streams).
    pub gap: Summary,
}

impl Outcome {
    /// Requests sent (answered or not).
    pub fn sent(&self) -> u64 {
        self.ok + self.errors
    }

    /// How the answers came back: `N sent: M 2xx (K correct), status 429: J, connection error: I`.
    pub fn statuses(&self) -> String {
        let mut text = format!(
            "{} sent: {} 2xx ({} correct)",
            self.sent(),
            self.answered_2xx,
            self.ok
        );
        for (kind, count) in &self.failures {
            text.push_str(&format!(", {kind}: {count}"));
        }
        text
    }
}

/// A client for the load: a large connection pool, no proxy, `TCP_NODELAY`.
pub fn client(concurrency: usize) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency.max(1) * 2)
        .pool_idle_timeout(Duration::from_secs(120))
        .timeout(Duration::from_secs(60))
        .build()
}

/// Runs `load` against `target` and summarises it.
pub async fn run(client: &reqwest::Client, target: &Target, load: Load) -> Outcome {
    let body = serde_json::json!({
        "model": target.model,
        "messages": [{"role": "user", "content": "Say something."}],
        "stream": target.stream,
    });
    let body = bytes::Bytes::from(body.to_string());
    let url = format!("{}/v1/chat/completions", target.base_url);
    let target = Arc::new(target.clone());
    let started = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let deadline = begin + load.duration;
    let mut workers = Vec::with_capacity(load.concurrency);
    for _ in 0..load.concurrency {
        let (client, target, started, body, url) = (
            client.clone(),
            target.clone(),
            started.clone(),
            body.clone(),
            url.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            while Instant::now() < deadline
                && started.fetch_add(1, Ordering::Relaxed) < load.max_requests
            {
                let result = one(
                    &client,
                    &url,
                    &target,
                    body.clone(),
                    load.strict,
                    &mut samples,
                )
                .await;
                if let Err(failure) = result {
                    samples.failed(failure);
                }
            }
            samples
        }));
    }
    let mut all = Samples::default();
    for worker in workers {
        match worker.await {
            Ok(samples) => {
                all.latency_us.extend(samples.latency_us);
                all.ttfc_us.extend(samples.ttfc_us);
                all.gaps_us.extend(samples.gaps_us);
                all.chunks += samples.chunks;
                all.errors += samples.errors;
                all.answered_2xx += samples.answered_2xx;
                for (kind, count) in samples.failures {
                    *all.failures.entry(kind).or_default() += count;
                }
                if all.first_error.is_none() {
                    all.first_error = samples.first_error;
                }
            }
            Err(error) => {
                all.failed(Failure::new(
                    "worker died",
                    format!("a worker died: {error}"),
                ));
            }
        }
    }
    let seconds = begin.elapsed().as_secs_f64().max(1e-9);
    let ok = all.latency_us.len() as u64;
    Outcome {
        ok,
        errors: all.errors,
        first_error: all.first_error,
        answered_2xx: all.answered_2xx,
        failures: all.failures,
        seconds,
        requests_per_s: ok as f64 / seconds,
        chunks_per_s: all.chunks as f64 / seconds,
        latency: Summary::of(&mut all.latency_us),
        ttfc: Summary::of(&mut all.ttfc_us),
        gap: Summary::of(&mut all.gaps_us),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One request; on success its samples are added to `samples`.
async fn one(
    client: &reqwest::Client,
    url: &str,
    target: &Target,
    body: bytes::Bytes,
    strict: bool,
    samples: &mut Samples,
) -> Result<(), Failure> {
    let sent = Instant::now();
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(key) = &target.key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::new("connection error", format!("send: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(Failure::new(
            format!("status {}", status.as_u16()),
            format!(
                "status {status}: {}",
                text.chars().take(300).collect::<String>()
            ),
        ));
    }
    samples.answered_2xx += 1;
    if !target.stream {
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Failure::new("body error", format!("body: {e}")))?;
        check_whole(&bytes, target, strict).map_err(Failure::wrong)?;
        samples.latency_us.push(micros(sent.elapsed()));
        return Ok(());
    }
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::with_capacity(4096);
    let mut content = String::new();
    let mut chunks = 0usize;
    let mut done = false;
    let mut last: Option<Instant> = None;
    let mut ttfc = None;
    let mut gaps = Vec::with_capacity(target.expected_chunks);
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| Failure::new("stream error", format!("stream: {e}")))?;
        let now = Instant::now();
        pending.extend_from_slice(&piece);
        // Every complete event in what has arrived.
        let mut consumed = 0;
        while let Some(end) = find(&pending[consumed..], b"\n\n") {
            let event = &pending[consumed..consumed + end];
            consumed += end + 2;
            let Some(data) = event.strip_prefix(b"data: ") else {
                continue;
            };
            if data == b"[DONE]" {
                done = true;
                continue;
            }
            if done {
                return Err(Failure::wrong("data after [DONE]"));
            }
            let has_content = if strict {
                let text = content_of(data).map_err(Failure::wrong)?;
                let has = !text.is_empty();
                content.push_str(&text);
                has
            } else {
                has_text_content(data)
            };
            if data.starts_with(b"{\"error\"") || find(data, b"\"error\":{").is_some() {
                return Err(Failure::new(
                    "in-stream error",
                    format!("in-stream error: {}", String::from_utf8_lossy(data)),
                ));
            }
            if has_content {
                chunks += 1;
                match last {
                    None => ttfc = Some(now - sent),
                    Some(previous) => gaps.push(micros(now - previous)),
                }
                last = Some(now);
            }
        }
        pending.drain(..consumed);
    }
    if !done {
        return Err(Failure::wrong("the stream ended without [DONE]"));
    }
    if chunks != target.expected_chunks {
        return Err(Failure::wrong(format!(
            "{chunks} content chunks, expected {}",
            target.expected_chunks
        )));
    }
    if strict && content != target.expected_content {
        return Err(Failure::wrong(format!("wrong content: {content:?}")));
    }
    samples.latency_us.push(micros(sent.elapsed()));
    if let Some(ttfc) = ttfc {
        samples.ttfc_us.push(micros(ttfc));
    }
    samples.gaps_us.extend(gaps);
    samples.chunks += chunks as u64;
    Ok(())
}

/// Whether a chunk's JSON has a non-empty string `"content"`, without parsing it: the peers
/// serialise differently (spaces after the colon, `"content": ""` or `null` in role-only and
/// final chunks).
fn has_text_content(data: &[u8]) -> bool {
    let key = b"\"content\"";
    let mut rest = data;
    while let Some(at) = find(rest, key) {
        rest = &rest[at + key.len()..];
        let value = rest.trim_ascii_start();
        let Some(value) = value.strip_prefix(b":") else {
            continue;
        };
        let value = value.trim_ascii_start();
        if let Some(text) = value.strip_prefix(b"\"")
            && !text.starts_with(b"\"")
        {
            return true;
        }
    }
    false
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The content text of one chunk (empty when it has none).
fn content_of(data: &[u8]) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| format!("a chunk is not JSON: {e}"))?;
    if value.get("error").is_some() {
        return Err(format!("in-stream error: {value}"));
    }
    if value.get("object").and_then(|o| o.as_str()) != Some("chat.completion.chunk") {
        return Err(format!("not a chunk: {value}"));
    }
    Ok(value
        .pointer("/choices/0/delta/content")
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_owned())
}

fn check_whole(bytes: &[u8], target: &Target, strict: bool) -> Result<(), String> {
    if strict {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("the answer is not JSON: {e}"))?;
        let content = value
            .pointer("/choices/0/message/content")
            .and_then(|c| c.as_str())
            .unwrap_or_default();
        if value.get("object").and_then(|o| o.as_str()) != Some("chat.completion")
            || content != target.expected_content
        {
            return Err(format!("wrong answer: {value}"));
        }
        return Ok(());
    }
    if find(bytes, target.expected_content.as_bytes()).is_none() {
        return Err(format!(
            "wrong answer: {}",
            String::from_utf8_lossy(bytes)
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_found_however_serialised() {
        assert!(has_text_content(br#"{"delta":{"content":"w0 "}}"#));
        assert!(has_text_content(
            br#"{"delta": {"role": "assistant", "content": "w1 "}}"#
        ));
        assert!(!has_text_content(br#"{"delta":{"content":""}}"#));
        assert!(!has_text_content(br#"{"delta":{"content":null}}"#));
        assert!(!has_text_content(br#"{"delta":{},"finish_reason":"stop"}"#));
        assert!(has_text_content(
            br#"{"x":"content","delta":{"content":"a"}}"#
        ));
    }
}
