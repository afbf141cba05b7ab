//! The cluster suite: real processes — three `club-coordinator serve --nats` replicas on one
//! PostgreSQL database (a fresh one per test) and one `nats-server`, nginx in front of them
//! (`scripts/nginx-cluster.conf`, as `scripts/cluster.sh` runs it), `club-provider` nodes linked
//! to chosen replicas or through nginx, fake engines in the test. Each test writes down what a
//! user of a cluster relies on: a request succeeds whichever replica it lands on; streaming,
//! cancel, failover and in-stream errors behave as in one process; a replica killed under load
//! loses no record and its nodes come back through the others; a rolling restart refuses
//! nothing; calls (embeddings, uploads, audio answers) cross replicas as chats do.
//!
//! It needs `CLUB_TEST_DATABASE_URL` (scripts/postgres.sh), `nats-server` and `nginx` (Debian's
//! packages; `CLUB_TEST_NATS_SERVER` and `CLUB_TEST_NGINX` name them); without them each test
//! says loudly that it skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod calls;
mod failover;
mod limits;
mod load;
mod restarts;
mod routing;

use std::time::Duration;

use inference_club_coordinator::testing::TestDatabase;
use serde_json::Value;
use support::cluster::{Streamed, Tools};
use support::{FakeEngine, ServiceSpec, error_of, streamed_content};

/// Every test is bounded.
const TEST_LIMIT: Duration = Duration::from_secs(90);

/// Runs `test` on a fresh database of the test server, bounded by [`TEST_LIMIT`], and drops
/// the database afterwards.
async fn on_fresh_database<F, Fut>(tools: Tools, test: F)
where
    F: FnOnce(Tools, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let database = TestDatabase::postgres("the cluster tests").await.unwrap();
    support::bounded_by(TEST_LIMIT, test(tools, database.url.clone())).await;
    database.remove().await;
}

/// A service of a fake engine serving `model`.
fn serving(engine: &FakeEngine, model: &str) -> ServiceSpec {
    ServiceSpec {
        model: model.to_owned(),
        ..ServiceSpec::fake(engine)
    }
}

/// The content of a whole answer.
fn content_of(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

/// The stream is a whole answer: no error, `content` in full, one `stop`, then `[DONE]`.
fn assert_whole_stream(streamed: &Streamed, content: &str) {
    let events = &streamed.events;
    assert_eq!(streamed.status, 200, "{events:?}");
    assert!(!streamed.broken, "the stream broke: {events:?}");
    assert!(events.iter().all(|e| error_of(e).is_none()), "{events:?}");
    assert_eq!(streamed_content(events), content, "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let stops = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|v| v["choices"][0]["finish_reason"] == "stop")
        .count();
    assert_eq!(stops, 1, "{events:?}");
}
