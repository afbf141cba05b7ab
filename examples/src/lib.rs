//! The reference coordinator and the logic behind the binaries `club-coordinator`,
//! `club-provider` and `club`, as a library so that tests and embedders can run them in-process.
//!
//! ```no_run
//! use inference_club_examples::coordinator::store::Store;
//! use inference_club_examples::coordinator::{Coordinator, CoordinatorConfig, serve};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // A coordinator on a SQLite file, serving the OpenAI API, the club API and node links.
//! let store = Store::connect("sqlite:club.db").await?;
//! let coordinator = Coordinator::start(store, CoordinatorConfig::default()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, coordinator.app(), CancellationToken::new()).await?;
//! # Ok(())
//! # }
//! ```

pub mod cli_support;
pub mod club_cli;
pub mod coordinator;
pub mod coordinator_cli;
pub mod demo;
pub mod provider_cli;
pub mod provider_ops;
