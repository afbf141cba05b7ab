//! The one harness of the tests of the binaries: a club of real processes (the built
//! `club-coordinator` and `club-provider` binaries) on a temporary SQLite file, fake engines
//! inside the test, and a consumer that speaks HTTP and SSE; [`cluster`] runs several replicas
//! behind nginx on PostgreSQL and NATS, [`faults`] injects network and database faults.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod engine;
pub mod faults;
pub mod process;

mod chat;
mod club;
mod node;
mod sse;

use std::time::{Duration, Instant};

use serde_json::Value;

pub use chat::{chat_body, json_of, request_id};
pub use club::Club;
pub use engine::{FakeEngine, Fault, Script};
pub use node::{NodeProc, ServiceSpec};
pub use process::Proc;
pub use sse::{SseReader, abort_request, leave_after, streamed_content};

/// The model the fake engines serve.
pub const MODEL: &str = "club-test-model";

/// How long a process may take to start and link.
pub const STARTUP: Duration = Duration::from_secs(15);

/// Polls `condition` every 20 ms until it holds; fails the test after `within`.
pub async fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `records` every 50 ms until all it gives are final, and returns them; fails the test
/// after `within`, naming `what` and the records still in flight.
pub async fn until_all_final<F, Fut>(
    what: &str,
    within: Duration,
    mut records: F,
) -> Vec<inference_club_core::record::InferenceRecord>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<inference_club_core::record::InferenceRecord>>,
{
    let deadline = Instant::now() + within;
    loop {
        let records = records().await;
        let open: Vec<String> = records
            .iter()
            .filter(|r| !r.status().is_final())
            .map(|r| format!("{} {:?}", r.id, r.status()))
            .collect();
        if open.is_empty() {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "{what} still in flight after {within:?}: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The answer the scripted engines give by default in the end-to-end and fault suites.
pub const ANSWER: &str = "Hello, world!";

/// Runs `test`, failing it after `limit`. (The panic happens while the test's future is still
/// alive, so its club prints the processes' output as it is dropped.)
pub async fn bounded_by<F: std::future::Future<Output = ()>>(limit: Duration, test: F) {
    let test = std::pin::pin!(test);
    tokio::select! {
        () = test => {}
        () = tokio::time::sleep(limit) => panic!("the test took longer than {limit:?}"),
    }
}

/// The error object of an SSE payload, if it is one.
pub fn error_of(event: &str) -> Option<Value> {
    let value: Value = serde_json::from_str(event).ok()?;
    value.get("error").cloned()
}

/// Writes a line straight to the process's stderr (the test harness captures `eprintln!`).
pub fn loud(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
