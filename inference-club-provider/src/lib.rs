//! Inference Club's provider side: adapters that put engines behind the
//! [`Provider`](inference_club_core::provider::Provider) trait, and the [`Router`] that puts several
//! of them behind one.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use inference_club_core::openai::{ChatCompletionRequest, ChatMessage};
//! use inference_club_core::provider::{Provider, RequestContext};
//! use inference_club_provider::backends::OpenAiCompatible;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = OpenAiCompatible::builder("http://127.0.0.1:8000/v1").build()?;
//! let request = ChatCompletionRequest::new("qwen3", vec![ChatMessage::user("Hello!")]);
//! let mut chunks = engine.chat(request, RequestContext::new("req-1")).await?;
//! while let Some(chunk) = chunks.next().await {
//!     if let Some(text) = chunk?.choices.first().and_then(|c| c.delta.content.clone()) {
//!         print!("{text}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod backends;
pub mod discover;
#[doc(hidden)]
pub mod fuzzing;
mod http;
pub mod node;
pub mod normalize;
pub mod quirks;
pub mod router;
pub mod sse;
pub mod timeouts;

pub use quirks::EngineQuirks;
pub use router::Router;
pub use timeouts::Timeouts;

use inference_club_core::provider::ProviderError;

/// The error for an engine's failure: from its HTTP status when it answered with one
/// ([`ProviderError::from_status`]), or unavailable when the error came inside a stream.
pub(crate) fn error_from_engine(
    status: Option<u16>,
    message: String,
    code: Option<String>,
) -> ProviderError {
    match status {
        Some(status) => ProviderError::from_status(status, message, code),
        None => ProviderError::Unavailable {
            status: None,
            message,
        },
    }
}

/// How to write a backend: the guide in `docs/backends.md` of this crate, whose examples are compiled as tests.
#[doc = include_str!("../docs/backends.md")]
pub mod guide {}

/// The README's example, compiled as a test (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
