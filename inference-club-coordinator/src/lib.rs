//! The Inference Club coordinator as a library: the meeting point of consumers and provider
//! nodes, to embed in an application or run as `club-coordinator`.
//!
//! A coordinator serves the OpenAI-compatible API (`/v1/…`), the club's own API (`/api/v1/…`),
//! the WebSocket that provider nodes dial (`/v1/link`), the web pages, `/healthz` and
//! `/metrics`. It routes each request to an online node that serves the model, streams the
//! answer back and records the request (public by default), on SQLite or PostgreSQL; several
//! replicas on one PostgreSQL database and one NATS server act as one club.
//!
//! ```no_run
//! use inference_club_coordinator::{Coordinator, Scopes};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // A coordinator on a SQLite file, with the default limits.
//! let coordinator = Coordinator::builder()
//!     .database("sqlite:club.db")
//!     .build()
//!     .await?;
//!
//! // A member and a key for them and their node (printed once; only its hash is stored).
//! let admin = coordinator.admin();
//! admin.add_user("alice", None).await?;
//! let key = admin.create_key("alice", "laptop", Scopes::ALL).await?;
//! println!("CLUB_API_KEY={key}");
//!
//! // Serve until Ctrl-C; requests in flight then get the drain time to finish.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! coordinator
//!     .serve(listener, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! The example `embedded` in this crate's `examples/` runs a coordinator and a provider node
//! in one program and serves a chat through them.
//!
//! # Architecture
//!
//! - `api`: the OpenAI-compatible API; `club_api`: the club's own API (records, providers,
//!   keys, account, `/openapi.json`).
//! - `dispatch`: the one path every request takes to a node (placement from
//!   `inference_club_core::routing`, queueing, failover before the first output).
//! - `nodes`: the live node links (the only in-memory state), each usable as a `Provider`;
//!   `link`: the WebSocket endpoint nodes dial; `index`: which online nodes serve which model.
//! - `store`: everything persisted, on SQLite or PostgreSQL, with the batched record writer.
//! - `accounts`: GitHub sign-in (web and device flows) and browser sessions; `auth`: API keys,
//!   session cookies and scopes.
//! - `limits`: rate, concurrency and size limits; `metrics`: Prometheus metrics; `error`:
//!   errors in the OpenAI envelope.
//! - `web`: the server-rendered pages (feed, requests, profiles, providers, models, dashboard,
//!   playground, terms).
//! - `cluster`: several replicas as one club, on PostgreSQL and NATS.
//! - `server`: the HTTP server, with header and body read timeouts.

mod accounts;
mod admin;
mod api;
mod auth;
mod bounded;
mod club_api;
mod cluster;
mod config;
mod coordinator;
mod dispatch;
mod error;
mod fleet;
mod jobs;
mod limits;
mod link;
mod metrics;
mod nodes;
mod routes;
mod server;
mod state;
mod store;
mod streamed;
mod web;

#[cfg(feature = "testing")]
pub mod testing;

pub use crate::admin::{Admin, AdminError, Member};
pub use crate::cluster::ClusterConfig;
pub use crate::config::GitHubConfig;
pub use crate::coordinator::{Coordinator, CoordinatorBuilder, StartError};
pub use crate::error::{Error, ErrorKind};
pub use crate::limits::Limits;
pub use crate::server::ServeSettings;
pub use crate::store::{Scope, ScopeParseError, Scopes};

pub(crate) use crate::config::CoordinatorConfig;
pub(crate) use crate::state::AppState;

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE: &str = "sqlite:club.db";

/// Defaults of the limits ([`Limits::default`] has them), for help texts.
pub mod defaults {
    pub use crate::limits::{
        DEFAULT_KEY_CREATIONS_PER_HOUR, DEFAULT_MAX_BLOB_BYTES, DEFAULT_MAX_BODY_BYTES,
        DEFAULT_MAX_CONCURRENT_PER_MEMBER, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_INPUT_CHARS,
        DEFAULT_MAX_MANIFEST_BYTES, DEFAULT_MAX_MESSAGES, DEFAULT_MAX_TOKENS_CEILING,
        DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_REQUESTS_PER_MINUTE, DEFAULT_SIGN_IN_PER_MINUTE,
    };
}

/// The README's example, compiled as a test (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
