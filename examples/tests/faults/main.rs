//! The fault suite: real processes (the built `club-coordinator` and `club-provider`), fake
//! engines on 127.0.0.1, and one fault per test — a node killed or cut off, an engine that fails
//! in each way engines fail, the coordinator killed, the database full or restarted. Each test
//! writes down what a user may rely on: which requests are retried, which end with which error,
//! that every record ends final and tells the truth, that nodes come back on their own, and that
//! the coordinator keeps serving the rest. `docs/reliability.md` lists them as a matrix.
//!
//! Faults covered in `e2e/` are not repeated here: a node killed before the first chunk (with
//! a second node) or after output started, an engine that drops the connection before output, a
//! frozen node (SIGSTOP), the coordinator killed mid-stream and restarted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod coordinator;
mod engines;
mod nodes;
mod shutdown;
mod storage;

use std::time::Duration;

use inference_club_core::record::{InferenceRecord, Status};
use serde_json::Value;
use support::{ANSWER, Club, SseReader, chat_body, error_of, streamed_content};

/// Every test is bounded.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Runs `test`, failing it after [`TEST_LIMIT`].
async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    support::bounded_by(TEST_LIMIT, test).await;
}

/// Asserts that `body` is the OpenAI error envelope with `code`, and returns its message.
fn assert_envelope(body: &Value, code: &str) -> String {
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(error.get("type").is_some_and(Value::is_string), "{body}");
    assert!(error.get("param").is_some(), "{body}");
    let message = error["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "{body}");
    message
}

/// Reads a streamed answer until its content is `content` (or the stream ends).
async fn read_until_content(events: &mut SseReader, seen: &mut Vec<String>, content: &str) {
    while streamed_content(seen) != content {
        match events.next().await {
            Some(event) => seen.push(event),
            None => return,
        }
    }
}

/// Reads the rest of a stream, within `within`.
async fn read_rest(events: &mut SseReader, seen: &mut Vec<String>, within: Duration) {
    tokio::time::timeout(within, async {
        while let Some(event) = events.next().await {
            seen.push(event);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream did not end within {within:?}: {seen:?}"));
}

/// The stream ended with one error event (whose code is `code`) and `[DONE]`, cleanly.
fn assert_ends_with_error(events: &SseReader, seen: &[String], code: &str) {
    assert!(
        !events.broken,
        "the consumer's stream must end cleanly: {seen:?}"
    );
    let n = seen.len();
    assert!(n >= 2, "{seen:?}");
    assert_eq!(seen[n - 1], "[DONE]", "{seen:?}");
    let error = error_of(&seen[n - 2]).unwrap_or_else(|| panic!("no error event in {seen:?}"));
    assert_eq!(error["code"], code, "{error}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error}"
    );
}

/// Sends whole chats until one is served with two attempts (the first on the faulty node), and
/// returns its record. A node never tried ranks first, so it comes within a few requests.
async fn chat_until_failed_over(club: &Club) -> InferenceRecord {
    for _ in 0..6 {
        let (status, id, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Succeeded);
        if record.attempts.len() == 2 {
            return record;
        }
        assert_eq!(record.attempts.len(), 1);
    }
    panic!("no request was tried on the faulty node first");
}
