//! Test support (feature `testing`), one harness for every test of the coordinator and of the
//! crates built on it: a database of a test's own ([`TestDatabase`], SQLite or a fresh
//! PostgreSQL database), a whole club in this process (`TestClub`, feature `test-club`), direct access to a
//! coordinator's store to seed and inspect it ([`store_of`] and the store's types), a fake
//! GitHub ([`fake_github`]), a fake audio and image engine ([`media_engine`]) and a
//! fault-injecting proxy ([`proxy`]).
//!
//! Not for production: a failed set-up panics, which fails the test that asked for it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs)]

#[cfg(feature = "test-club")]
mod club;
mod database;
pub mod fake_github;
pub mod media_engine;
pub mod proxy;
mod server;

#[cfg(feature = "test-club")]
pub use self::club::{TestClub, TestService};
pub use self::database::{POSTGRES_ENV, TestDatabase, skip_loudly, unique_name, with_database};
pub use self::media_engine::MediaEngine;
pub use self::server::{Answer, TestServer, bind};
pub use crate::limits::USAGE_REPORT;

/// The member a `TestClub` starts with.
pub const HANDLE: &str = "ada";
/// The name of a `TestClub`'s node (its provider is `ada/NODE`).
pub const NODE: &str = "sdk-node";
pub use crate::store::*;

/// The body decoder of `POST /v1/chat/completions` followed by the default limits' checks, as
/// the API runs them before anything is recorded: the request, or the message of the error the
/// API answers (for the fuzz target `chat_request`).
pub fn accept_chat_request(
    body: &[u8],
) -> Result<inference_club_core::openai::ChatCompletionRequest, String> {
    let (request, _visibility) =
        crate::api::chat::parse_request(body).map_err(|e| e.error.message)?;
    crate::limits::Limiter::new(crate::Limits::default())
        .check_request(&request)
        .map_err(|e| e.error.message)?;
    Ok(request)
}

/// The store of a running coordinator, to seed and inspect it.
pub fn store_of(coordinator: &crate::Coordinator) -> Store {
    coordinator.state().store.clone()
}

/// How many nodes are linked to this coordinator now.
pub fn nodes_linked(coordinator: &crate::Coordinator) -> usize {
    coordinator.state().fleet.nodes.online().len()
}

/// Installs the ring TLS provider for the test process (a binary would; tests are theirs).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
