//! The reference coordinator: the meeting point of consumers and provider nodes.
//!
//! - [`store`]: everything the coordinator persists (members, API keys, providers and their
//!   manifests, request records), on SQLite or PostgreSQL.

pub mod store;
