//! Hostile HTTP input against a real coordinator on 127.0.0.1 (SQLite, short read timeouts) with
//! a linked test node that counts the jobs it receives: malformed JSON, wrong types, huge
//! numbers, deep nesting, invalid UTF-8, oversized bodies and headers, unknown fields, a wrong
//! content type, and slow clients. Each bad request gets a clear 4xx in the OpenAI error
//! envelope, nothing is recorded and nothing reaches the node; slow clients are timed out while
//! others are served.
//!
//! Requests are written by hand on raw TCP connections, so that what is sent is exactly what
//! the table says (no client library fixes bytes, headers or lengths on the way).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use inference_club_coordinator::testing::{Scopes, Store, TestDatabase, TestServer};
use inference_club_coordinator::{Limits, ServeSettings};
use inference_club_core::link::{
    self, CoordinatorMessage, Heartbeat, Hello, JobChunk, JobDone, NodeMessage,
};
use inference_club_core::openai::{ChatCompletionChunk, ChunkDelta};
use serde_json::{Value, json};
use sqlx::{AnyPool, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const MODEL: &str = "hostile-echo";
/// The read timeouts of the coordinator under test: short, so the slow-client cases are quick.
const HEADER_TIMEOUT: Duration = Duration::from_millis(800);
const BODY_TIMEOUT: Duration = Duration::from_millis(800);
/// The body limit of the coordinator under test.
const MAX_BODY: usize = 1024 * 1024;

struct Club {
    address: String,
    key: String,
    raw: AnyPool,
    store: Store,
    jobs: Arc<AtomicUsize>,
    server: TestServer,
    database: TestDatabase,
}

impl Club {
    async fn start() -> Self {
        let database = TestDatabase::sqlite();
        let server = TestServer::start(&database.url, |builder| {
            builder
                .heartbeat_interval(Duration::from_secs(2))
                .queue_timeout(Duration::from_secs(5))
                .limits(Limits {
                    max_body_bytes: MAX_BODY,
                    ..Limits::without_rate_limits()
                })
                .serve_settings(ServeSettings {
                    header_read_timeout: HEADER_TIMEOUT,
                    body_read_timeout: BODY_TIMEOUT,
                    ..ServeSettings::default()
                })
        })
        .await;
        let store = server.store.clone();
        let raw = database.raw().await;
        let address = server.url.trim_start_matches("http://").to_owned();
        let user = store.create_user("mallory", None).await.unwrap();
        let scopes = |s: &str| s.parse::<Scopes>().unwrap();
        let (_, key) = store
            .create_key(user.id, "consumer", scopes("inference,account"))
            .await
            .unwrap();
        let (_, node_key) = store
            .create_key(user.id, "node", scopes("provider"))
            .await
            .unwrap();
        let club = Self {
            address,
            key,
            raw,
            store,
            jobs: Arc::new(AtomicUsize::new(0)),
            server,
            database,
        };
        club.link_node(&node_key).await;
        club
    }

    async fn finish(self) {
        self.server.stop().await;
        self.store.close().await;
        self.raw.close().await;
        self.database.remove().await;
    }

    /// Links a test node serving [`MODEL`] that answers every job at once and counts it.
    async fn link_node(&self, key: &str) {
        let mut request = format!("ws://{}/v1/link", self.address)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let manifest = json!({
            "schema_version": 1,
            "agent": {"name": "hostile"},
            "hosts": [{"id": "h1", "services": [{
                "name": "echo", "type": "llm", "engine": "other",
                "url": "http://127.0.0.1:9/v1", "models": [{"id": MODEL}],
            }]}],
        });
        let hello = NodeMessage::Hello(Hello {
            protocol_version: link::PROTOCOL_VERSION,
            node_version: "hostile-test/1".into(),
            manifest,
        });
        socket
            .send(Message::Text(link::encode(&hello).unwrap().into()))
            .await
            .unwrap();
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => match link::decode_coordinator(&text).unwrap() {
                    CoordinatorMessage::Welcome(_) => break,
                    other => panic!("expected welcome, got {other:?}"),
                },
                Some(Ok(_)) => {}
                other => panic!("link closed: {other:?}"),
            }
        }
        let jobs = self.jobs.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    frame = socket.next() => match frame {
                        Some(Ok(Message::Text(text))) => {
                            if let Ok(CoordinatorMessage::Job(job)) = link::decode_coordinator(&text) {
                                jobs.fetch_add(1, Ordering::SeqCst);
                                let chunk = NodeMessage::Chunk(JobChunk {
                                    job: job.job,
                                    chunk: ChatCompletionChunk::new("c", MODEL, 0)
                                        .with_delta(ChunkDelta::content("echo")),
                                });
                                let done = NodeMessage::Done(JobDone {
                                    job: job.job,
                                    usage: None,
                                    service: None,
                                    first_token_ms: None,
                                    total_ms: 1,
                                });
                                for message in [chunk, done] {
                                    let text = link::encode(&message).unwrap();
                                    if socket.send(Message::Text(text.into())).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    _ = beat.tick() => {
                        let heartbeat = NodeMessage::Heartbeat(Heartbeat { load: Vec::new() });
                        let text = link::encode(&heartbeat).unwrap();
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }

    /// The records in the database, once what was answered is written (final saves are
    /// queued for the store's writer).
    async fn record_count(&self) -> i64 {
        self.store.flush_records().await.unwrap();
        sqlx::query("SELECT COUNT(*) AS n FROM records")
            .fetch_one(&self.raw)
            .await
            .unwrap()
            .get::<i64, _>("n")
    }

    fn job_count(&self) -> usize {
        self.jobs.load(Ordering::SeqCst)
    }

    /// A request for `path` with the member's key, the given extra header lines and body, and
    /// `Content-Length` unless `headers` sets its own framing.
    fn request(&self, method: &str, path: &str, headers: impl AsRef<[u8]>, body: &[u8]) -> Vec<u8> {
        let headers = headers.as_ref();
        let lower = String::from_utf8_lossy(headers).to_ascii_lowercase();
        let mut bytes = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
            self.address, self.key
        )
        .into_bytes();
        bytes.extend_from_slice(headers);
        if !lower.contains("content-length") && !lower.contains("transfer-encoding") {
            bytes.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(body);
        bytes
    }

    /// A chat request with a JSON content type and `body`.
    fn chat(&self, body: &[u8]) -> Vec<u8> {
        self.request(
            "POST",
            "/v1/chat/completions",
            "Content-Type: application/json\r\n",
            body,
        )
    }
}

/// What came back on a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "the body is not JSON: {:?}\n{}",
                String::from_utf8_lossy(&self.body),
                self.headers
            )
        })
    }
}

/// Sends `bytes` on a new connection and reads the whole answer (the requests say
/// `Connection: close`); `None` when the server closed the connection without an answer.
async fn send(address: &str, bytes: &[u8]) -> Option<Answer> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    // The server may answer (and close) before it has read everything, as it does for an
    // oversized body; a failed write is then expected.
    let _ = stream.write_all(bytes).await;
    read_answer(&mut stream).await
}

async fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 8192];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    parse_answer(&received)
}

fn parse_answer(received: &[u8]) -> Option<Answer> {
    let end = received.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&received[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = received[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some(Answer {
        status,
        headers: head,
        body,
    })
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
    out
}

/// Asserts an error answer: `status`, the OpenAI envelope, and `code`.
fn assert_envelope(case: &str, answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{case}: {answer:?}");
    let body = answer.json();
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: no message in {body}"
    );
    assert!(error["type"].is_string(), "{case}: no type in {body}");
    assert!(error.get("param").is_some(), "{case}: no param in {body}");
    assert_eq!(error["code"], code, "{case}: {body}");
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn chat_with(extra: &str) -> Vec<u8> {
    format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#)
        .into_bytes()
}

/// Every bad chat request, each a clear 4xx in the envelope, none recorded, none routed.
#[tokio::test]
async fn bad_chat_requests_get_a_clear_4xx_and_change_nothing() {
    let club = Club::start().await;
    let huge_body = chat_with(&format!(r#","pad":"{}""#, "x".repeat(MAX_BODY)));
    let mut invalid_utf8 = br#"{"model":""#.to_vec();
    invalid_utf8.extend_from_slice(b"\xff\xfe\xfd");
    invalid_utf8.extend_from_slice(br#"","messages":[{"role":"user","content":"hi"}]}"#);
    let mut invalid_utf8_content =
        format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":""#).into_bytes();
    invalid_utf8_content.extend_from_slice(b"caf\xc3");
    invalid_utf8_content.extend_from_slice(br#""}]}"#);
    let deep_content = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":{}}}]}}"#,
        nested(100_000)
    );
    let deep_objects = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}],"x":{}null{}}}"#,
        r#"{"a":"#.repeat(100_000),
        "}".repeat(100_000)
    );

    // (case, request bytes, status, code)
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("empty body", club.chat(b""), 400, "invalid_json"),
        ("not JSON", club.chat(b"hello there"), 400, "invalid_json"),
        (
            "truncated JSON",
            club.chat(format!(r#"{{"model":"{MODEL}","messages":[{{"role":"#).as_bytes()),
            400,
            "invalid_json",
        ),
        ("a JSON array", club.chat(b"[1,2,3]"), 400, "invalid_json"),
        ("JSON null", club.chat(b"null"), 400, "invalid_json"),
        (
            "trailing garbage",
            club.chat(&[chat_with(""), b"}{".to_vec()].concat()),
            400,
            "invalid_json",
        ),
        (
            "model is a number",
            club.chat(br#"{"model":42,"messages":[{"role":"user","content":"hi"}]}"#),
            400,
            "invalid_json",
        ),
        (
            "messages is a string",
            club.chat(format!(r#"{{"model":"{MODEL}","messages":"hi"}}"#).as_bytes()),
            400,
            "invalid_json",
        ),
        (
            "a message is a number",
            club.chat(format!(r#"{{"model":"{MODEL}","messages":[7]}}"#).as_bytes()),
            400,
            "invalid_json",
        ),
        (
            "unknown role",
            club.chat(
                format!(r#"{{"model":"{MODEL}","messages":[{{"role":"wizard","content":"hi"}}]}}"#)
                    .as_bytes(),
            ),
            400,
            "invalid_json",
        ),
        (
            "content is a number",
            club.chat(
                format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":42}}]}}"#)
                    .as_bytes(),
            ),
            400,
            "invalid_json",
        ),
        (
            "stream is a string",
            club.chat(&chat_with(r#","stream":"yes""#)),
            400,
            "invalid_json",
        ),
        (
            "max_tokens is a string",
            club.chat(&chat_with(r#","max_tokens":"ten""#)),
            400,
            "invalid_json",
        ),
        (
            "temperature is an array",
            club.chat(&chat_with(r#","temperature":[]"#)),
            400,
            "invalid_json",
        ),
        (
            "visibility is a number",
            club.chat(&chat_with(r#","visibility":1"#)),
            400,
            "invalid_visibility",
        ),
        (
            "visibility is unknown",
            club.chat(&chat_with(r#","visibility":"secret""#)),
            400,
            "invalid_visibility",
        ),
        (
            "empty model",
            club.chat(br#"{"model":" ","messages":[{"role":"user","content":"hi"}]}"#),
            400,
            "missing_model",
        ),
        (
            "no messages",
            club.chat(format!(r#"{{"model":"{MODEL}","messages":[]}}"#).as_bytes()),
            400,
            "empty_messages",
        ),
        (
            "max_tokens beyond u32",
            club.chat(&chat_with(r#","max_tokens":99999999999999999999999"#)),
            400,
            "invalid_json",
        ),
        (
            "max_tokens negative",
            club.chat(&chat_with(r#","max_tokens":-1"#)),
            400,
            "invalid_json",
        ),
        (
            "max_tokens above the ceiling",
            club.chat(&chat_with(r#","max_tokens":4294967295"#)),
            400,
            "max_tokens_too_large",
        ),
        (
            "a number beyond f64",
            club.chat(&chat_with(r#","temperature":1e400"#)),
            400,
            "invalid_json",
        ),
        (
            "temperature huge",
            club.chat(&chat_with(r#","temperature":1e308"#)),
            400,
            "invalid_value",
        ),
        (
            "top_p negative",
            club.chat(&chat_with(r#","top_p":-0.5"#)),
            400,
            "invalid_value",
        ),
        (
            "presence_penalty huge",
            club.chat(&chat_with(r#","presence_penalty":1e30"#)),
            400,
            "invalid_value",
        ),
        (
            "n is zero",
            club.chat(&chat_with(r#","n":0"#)),
            400,
            "invalid_value",
        ),
        (
            "a number with 100k digits",
            club.chat(&chat_with(&format!(r#","seed":{}"#, "9".repeat(100_000)))),
            400,
            "invalid_json",
        ),
        (
            "100k nested arrays as content",
            club.chat(deep_content.as_bytes()),
            400,
            "invalid_json",
        ),
        (
            "100k nested arrays as an unknown field",
            club.chat(&chat_with(&format!(r#","x":{}"#, nested(100_000)))),
            400,
            "invalid_json",
        ),
        (
            "100k nested objects",
            club.chat(deep_objects.as_bytes()),
            400,
            "invalid_json",
        ),
        (
            "invalid UTF-8 in the model",
            club.chat(&invalid_utf8),
            400,
            "invalid_json",
        ),
        (
            "a cut UTF-8 character in the content",
            club.chat(&invalid_utf8_content),
            400,
            "invalid_json",
        ),
        (
            "a lone surrogate escape",
            club.chat(
                format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"\ud800"}}]}}"#)
                    .as_bytes(),
            ),
            400,
            "invalid_json",
        ),
        (
            "a NUL byte outside strings",
            club.chat(&[chat_with(""), b"\0".to_vec()].concat()),
            400,
            "invalid_json",
        ),
        (
            "an unknown field of the wrong shape in a known object",
            club.chat(&chat_with(r#","stream_options":{"include_usage":"sure"}"#)),
            400,
            "invalid_json",
        ),
        (
            "duplicate model field",
            club.chat(
                format!(r#"{{"model":"{MODEL}","model":"other","messages":[{{"role":"user","content":"hi"}}]}}"#)
                    .as_bytes(),
            ),
            400,
            "invalid_json",
        ),
        (
            "a body over the limit",
            club.chat(&huge_body),
            413,
            "request_too_large",
        ),
        (
            "a body over the limit, chunked",
            club.request(
                "POST",
                "/v1/chat/completions",
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
                &chunked(&huge_body),
            ),
            413,
            "request_too_large",
        ),
        (
            "a Content-Length of 100 GB",
            club.request(
                "POST",
                "/v1/chat/completions",
                "Content-Type: application/json\r\nContent-Length: 100000000000\r\n",
                b"{}",
            ),
            413,
            "request_too_large",
        ),
        (
            "a text/plain body",
            club.request(
                "POST",
                "/v1/chat/completions",
                "Content-Type: text/plain\r\n",
                &chat_with(""),
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "a form body",
            club.request(
                "POST",
                "/v1/chat/completions",
                "Content-Type: application/x-www-form-urlencoded\r\n",
                b"model=x&messages=y",
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "an invalid visibility header",
            club.request(
                "POST",
                "/v1/chat/completions",
                b"Content-Type: application/json\r\nx-club-visibility: \xff\xfe\r\n",
                &chat_with(""),
            ),
            400,
            "invalid_visibility",
        ),
        (
            "headers of 40 KiB",
            club.request(
                "POST",
                "/v1/chat/completions",
                format!(
                    "Content-Type: application/json\r\nx-padding: {}\r\n",
                    "a".repeat(40 * 1024)
                ),
                &chat_with(""),
            ),
            431,
            "request_headers_too_large",
        ),
    ];
    let mut failures = Vec::new();
    for (case, bytes, status, code) in &cases {
        let Some(answer) = send(&club.address, bytes).await else {
            failures.push(format!("{case}: the connection closed without an answer"));
            continue;
        };
        if let Err(panic) =
            std::panic::catch_unwind(|| assert_envelope(case, &answer, *status, code))
        {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "assertion failed".into());
            failures.push(message);
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(club.record_count().await, 0, "a bad request was recorded");
    assert_eq!(club.job_count(), 0, "a bad request reached the node");

    // The same coordinator, node and key serve a good request (so the counts above mean
    // something), also one with unknown fields, which pass through to the engine by design.
    for body in [
        chat_with(""),
        chat_with(r#","top_k":3,"frobnicate":{"deep":[1,2,3]}"#),
    ] {
        let answer = send(&club.address, &club.chat(&body)).await.unwrap();
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json()["choices"][0]["message"]["content"], "echo");
    }
    assert_eq!(club.record_count().await, 2);
    assert_eq!(club.job_count(), 2);
    club.finish().await;
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(4096) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Bad input on the club's own API: the same envelope, nothing changed.
#[tokio::test]
async fn bad_club_api_requests_get_a_clear_4xx() {
    let club = Club::start().await;
    let me = || async {
        send(&club.address, &club.request("GET", "/api/v1/me", "", b""))
            .await
            .unwrap()
            .json()
    };
    let before = me().await;
    let json = "Content-Type: application/json\r\n";
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "settings: malformed JSON",
            club.request("PATCH", "/api/v1/me", json, b"{\"default_visibility\":"),
            400,
            "invalid_json",
        ),
        (
            "settings: an unknown field",
            club.request("PATCH", "/api/v1/me", json, br#"{"is_admin":true}"#),
            400,
            "invalid_json",
        ),
        (
            "settings: wrong type",
            club.request("PATCH", "/api/v1/me", json, br#"{"default_visibility":7}"#),
            400,
            "invalid_json",
        ),
        (
            "settings: 5000 nested arrays",
            club.request("PATCH", "/api/v1/me", json, nested(5000).as_bytes()),
            400,
            "invalid_json",
        ),
        (
            "new key: invalid UTF-8",
            club.request("POST", "/api/v1/keys", json, b"{\"name\":\"\xff\"}"),
            400,
            "invalid_json",
        ),
        (
            "new key: a body of 3 MB",
            club.request(
                "POST",
                "/api/v1/keys",
                json,
                format!(r#"{{"name":"{}"}}"#, "k".repeat(3 << 20)).as_bytes(),
            ),
            413,
            "request_too_large",
        ),
        (
            "listing: a limit of 10^30",
            club.request(
                "GET",
                "/api/v1/requests?limit=1000000000000000000000000000000",
                "",
                b"",
            ),
            400,
            "invalid_limit",
        ),
        (
            "listing: an unknown parameter",
            club.request("GET", "/api/v1/requests?frobnicate=1", "", b""),
            400,
            "invalid_query",
        ),
        (
            "record: a path that is not an id",
            club.request("GET", "/api/v1/requests/%FF%FE", "", b""),
            400,
            "invalid_path",
        ),
    ];
    let mut failures = Vec::new();
    for (case, bytes, status, code) in &cases {
        let Some(answer) = send(&club.address, bytes).await else {
            failures.push(format!("{case}: the connection closed without an answer"));
            continue;
        };
        if let Err(panic) =
            std::panic::catch_unwind(|| assert_envelope(case, &answer, *status, code))
        {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "assertion failed".into());
            failures.push(message);
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(me().await, before, "a bad request changed the account");
    assert_eq!(club.record_count().await, 0);
    assert_eq!(club.job_count(), 0);
    club.finish().await;
}

/// Headers beyond hyper's own buffer, or too many of them: a bare 431 and the connection is
/// closed (hyper answers before the routes see anything); the server goes on serving.
#[tokio::test]
async fn headers_beyond_the_server_buffer_are_refused() {
    let club = Club::start().await;
    for (case, headers) in [
        (
            "a 1 MiB header",
            format!("x-padding: {}\r\n", "a".repeat(1 << 20)),
        ),
        (
            "1000 headers",
            (0..1000)
                .map(|i| format!("x-h{i}: v\r\n"))
                .collect::<String>(),
        ),
    ] {
        let bytes = club.request("POST", "/v1/chat/completions", &headers, &chat_with(""));
        let answer = send(&club.address, &bytes).await;
        if let Some(answer) = answer {
            assert!((400..500).contains(&answer.status), "{case}: {answer:?}");
        }
    }
    let healthy = send(&club.address, &club.request("GET", "/healthz", "", b""))
        .await
        .unwrap();
    assert_eq!(healthy.status, 200);
    assert_eq!(club.record_count().await, 0);
    assert_eq!(club.job_count(), 0);
    club.finish().await;
}

/// A client that sends its headers a byte at a time is cut off after the header read timeout,
/// and a client that never finishes its body gets 408 after the body read timeout; others are
/// served meanwhile, and nothing is recorded or routed.
#[tokio::test]
async fn slow_clients_are_timed_out_and_others_are_served() {
    let club = Club::start().await;

    // Slow headers: one byte every 50 ms, for far longer than the timeout.
    let request = club.chat(&chat_with(""));
    let address = club.address.clone();
    let slow_headers = tokio::spawn(async move {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let started = Instant::now();
        for byte in &request {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let answer = read_answer(&mut stream).await;
        (started.elapsed(), answer)
    });

    // A body that never finishes: 10 of 100 bytes, then silence.
    let head = club.request(
        "POST",
        "/v1/chat/completions",
        "Content-Type: application/json\r\nContent-Length: 100\r\n",
        b"",
    );
    let mut stalled = TcpStream::connect(&club.address).await.unwrap();
    let started = Instant::now();
    stalled.write_all(&head).await.unwrap();
    stalled.write_all(br#"{"model":"#).await.unwrap();

    // Meanwhile the coordinator serves others.
    for _ in 0..3 {
        let served = Instant::now();
        let answer = send(&club.address, &club.request("GET", "/healthz", "", b""))
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert!(
            served.elapsed() < Duration::from_secs(2),
            "{:?}",
            served.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let answer = read_answer(&mut stalled)
        .await
        .expect("an answer to the stalled body");
    let waited = started.elapsed();
    assert_envelope("stalled body", &answer, 408, "request_timeout");
    assert!(
        waited >= BODY_TIMEOUT && waited < BODY_TIMEOUT + Duration::from_secs(3),
        "answered after {waited:?}"
    );

    let (elapsed, answer) = slow_headers.await.unwrap();
    assert!(
        elapsed < HEADER_TIMEOUT + Duration::from_secs(3),
        "the slow client was cut off only after {elapsed:?}"
    );
    if let Some(answer) = answer {
        assert_eq!(answer.status, 408, "{answer:?}");
    }

    // A good request still goes through.
    let answer = send(&club.address, &club.chat(&chat_with("")))
        .await
        .unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(club.record_count().await, 1);
    assert_eq!(club.job_count(), 1);
    club.finish().await;
}
