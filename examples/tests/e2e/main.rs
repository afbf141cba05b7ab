//! End-to-end tests with real processes: the built `club-coordinator` on a temporary SQLite
//! file, `club-provider run` nodes, and fake OpenAI-compatible engines inside the test (or the CI
//! llama.cpp server when `CLUB_TEST_LLAMACPP_URL` names one). Each test asserts what the consumer
//! sees and what the record says, read through the store on the same database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod cancellation;
mod llamacpp;
mod manifests;
mod queue;
mod records;
mod restarts;
mod routing;

use std::time::Duration;

/// Every test is bounded.
const TEST_LIMIT: Duration = Duration::from_secs(40);

/// Runs `test`, failing it after [`TEST_LIMIT`].
async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    support::bounded_by(TEST_LIMIT, test).await;
}
