//! The soak: a real coordinator process under steady load for minutes, with nodes joining and
//! leaving at random (killed, or shut down gracefully) and consumers going away at random. Not
//! part of the default test run; run it with
//!
//! ```text
//! cargo test --release -p inference-club-examples --test soak -- --ignored --nocapture
//! ```
//!
//! `CLUB_SOAK_SECS` sets the load's length (default 300), `CLUB_SOAK_CONSUMERS` the consumers
//! asking at once (default 8), `CLUB_SOAK_NODES` the node slots (default 4).
//!
//! Afterwards it checks that every request sent has exactly one record, that none is left
//! `queued` or `running`, and that the coordinator's resident memory, open file descriptors and
//! live runtime tasks (`club_runtime_tasks` on `/metrics`) are back near their baseline. The
//! figures go to stderr, for `docs/reliability.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod churn;

use serde_json::json;
use support::{Club, FakeEngine, MODEL, ServiceSpec, SseReader};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the coordinator process uses now.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: usize,
    tasks: f64,
}

async fn usage(club: &Club) -> Usage {
    let pid = club.coordinator.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let tasks = club.metric("runtime_tasks").await;
    Usage {
        rss_kib,
        fds,
        tasks,
    }
}

/// How one request ended, from the consumer's side.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Answered (status), read to the end.
    Answered(u16),
    /// The consumer went away after this many events.
    LeftMidStream,
    /// The consumer went away before any answer.
    LeftEarly,
    /// The connection failed.
    Broken,
}

/// One consumer's request: a tag in the prompt, so its record can be found.
async fn ask(
    http: reqwest::Client,
    url: String,
    key: String,
    tag: String,
    stream: bool,
    leave_after_events: Option<usize>,
) -> Outcome {
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": tag}],
        "stream": stream,
    });
    let response = match http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(_) => return Outcome::Broken,
    };
    let status = response.status().as_u16();
    if status != 200 || !stream {
        let _ = response.bytes().await;
        return Outcome::Answered(status);
    }
    let mut events = SseReader::new(response);
    let mut n = 0;
    while events.next().await.is_some() {
        n += 1;
        if leave_after_events == Some(n) {
            return Outcome::LeftMidStream;
        }
    }
    if events.broken {
        Outcome::Broken
    } else {
        Outcome::Answered(200)
    }
}

/// Starts the node of `slot` and returns its index in `club.nodes`.
fn spawn_node(club: &mut Club, slot: usize, engine: &FakeEngine) -> usize {
    let (key, url) = (club.key.clone(), club.url.clone());
    club.spawn_node_with(
        &format!("soak-node-{slot}"),
        &[ServiceSpec::fake(engine)],
        &key,
        &url,
        &[],
    )
}
