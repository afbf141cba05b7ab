//! Adapters that put engines behind the [`Provider`](inference_club_core::provider::Provider) trait.
//!
//! - [`OpenAiCompatible`]: vLLM, SGLang, llama.cpp server, LM Studio, TGI, Ollama's `/v1`, any
//!   OpenAI-compatible server.
//! - [`Ollama`]: Ollama's native API (`/api/chat`, `/api/tags`).
//! - [`Echo`]: a test engine that repeats the prompt back; not a language model.

mod echo;
mod ollama;
mod openai;

pub use echo::Echo;
pub(crate) use ollama::chunks as ollama_chunks;
pub use ollama::{Ollama, OllamaBuilder};
pub use openai::{OpenAiCompatible, OpenAiCompatibleBuilder};
