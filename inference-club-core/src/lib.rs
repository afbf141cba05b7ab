//! Inference Club's vocabulary: the service manifest, the OpenAI wire types, the request record, the
//! [`Provider`](provider::Provider) trait, the messages between node and coordinator, and the routing
//! policy. This crate does no network I/O and needs no async runtime.
//!
//! ```
//! use inference_club_core::manifest::ServiceManifest;
//! use inference_club_core::openai::{ChatCompletionAggregator, StreamPayload};
//!
//! // A manifest, validated with every problem reported at once, then redacted for the coordinator.
//! let manifest = ServiceManifest::parse_and_validate(
//!     "schema_version: 1
//! agent: {name: home-box}
//! hosts:
//!   - id: desk
//!     services:
//!       - name: ollama
//!         engine: ollama
//!         url: http://127.0.0.1:11434
//!         api_key: never-leaves-this-machine
//!         models: [{id: llama3.2}]
//! ",
//! )?;
//! let public = serde_json::to_string(&manifest.redacted())?;
//! assert!(!public.contains("never-leaves-this-machine"));
//!
//! // What an engine streams, read tolerantly and folded into one completion.
//! let mut answer = ChatCompletionAggregator::new();
//! for data in [
//!     r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"reasoning":"hm"},"finish_reason":""}]}"#,
//!     r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"Hi!"},"finish_reason":"stop"}]}"#,
//!     "[DONE]",
//! ] {
//!     if let StreamPayload::Chunk(chunk) = StreamPayload::parse(data)? {
//!         answer.push(&chunk);
//!     }
//! }
//! let completion = answer.finish();
//! assert_eq!(completion.text().as_deref(), Some("Hi!"));
//! assert_eq!(completion.choices[0].message.reasoning.as_deref(), Some("hm"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod endpoint;
pub mod link;
pub mod manifest;
pub mod openai;
pub mod provider;
pub mod record;
pub mod routing;
#[cfg(feature = "tls")]
pub mod tls;

/// The README's example, compiled as a test (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
