//! Inference Club's consumer SDK: talk to a coordinator's OpenAI-compatible API and the club's
//! own API from Rust.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use inference_club_client::{ChatRequest, Client};
//!
//! # async fn run() -> Result<(), inference_club_client::Error> {
//! let client = Client::builder("http://127.0.0.1:8080").api_key("icl_…").build()?;
//! let mut stream = client
//!     .chat_stream(ChatRequest::new("llama3.2").system("Be brief.").user("Hello!"))
//!     .await?;
//! while let Some(chunk) = stream.next().await {
//!     if let Some(text) = chunk?.choices.first().and_then(|c| c.delta.content.clone()) {
//!         print!("{text}");
//!     }
//! }
//! println!("\nrecord: {}", stream.record_id().unwrap_or_default());
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod client;
mod error;
mod request;

pub use client::{ChatResponse, ChatStream, Client, ClientBuilder};
pub use error::Error;
pub use request::ChatRequest;
