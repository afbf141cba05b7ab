//! Test support (feature `testing`), one harness for every test of the coordinator and of the
//! crates built on it: a database of a test's own ([`TestDatabase`], SQLite or a fresh
//! PostgreSQL database), a whole club in this process ([`TestClub`]), direct access to a
//! coordinator's store to seed and inspect it ([`store_of`] and the store's types), a fake
//! GitHub ([`fake_github`]) and a fault-injecting proxy ([`proxy`]).
//!
//! Not for production: a failed set-up panics, which fails the test that asked for it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs)]

mod club;
mod database;
pub mod fake_github;
pub mod proxy;
mod server;

pub use self::club::{HANDLE, NODE, TestClub};
pub use self::database::{POSTGRES_ENV, TestDatabase, skip_loudly, unique_name, with_database};
pub use self::server::{TestServer, bind};
pub use crate::limits::USAGE_REPORT;
pub use crate::store::*;

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
