//! OpenAI wire types for chat completions, models and errors.
//!
//! Reading is tolerant of what real engines send; writing is exact OpenAI format:
//!
//! - Every request and response type keeps unknown fields in an `extra` map, so vendor parameters
//!   (`top_k`, `min_p`, `chat_template_kwargs`, …) pass through untouched.
//! - A reasoning trace may arrive as `reasoning_content` (DeepSeek) or `reasoning` (vLLM, Ollama, Groq);
//!   both are read into one field, [`ChunkDelta::reasoning`], which is written as `reasoning_content`.
//! - `finish_reason: ""` reads as no finish reason; `usage: {}` and `usage: null` read as no usage.
//! - `<think>…</think>` at the start of `content` is split off by [`ThinkSplitter`].
//!
//! [`ChatCompletionAggregator`] folds a stream of chunks into one [`ChatCompletion`].

mod aggregate;
mod chat;
mod chunk;
mod error;
mod events;
mod models;
pub mod responses;
mod think;

pub use aggregate::ChatCompletionAggregator;
pub use chat::{
    ChatCompletion, ChatCompletionRequest, ChatMessage, Choice, ContentPart, FunctionCall,
    FunctionDefinition, MessageContent, ResponseFormat, ResponseMessage, Role, StopSequences,
    StreamOptions, Tool, ToolCall, ToolChoice,
};
pub use chunk::{
    ChatCompletionChunk, ChunkChoice, ChunkDelta, FinishReason, FunctionCallDelta, StreamPayload,
    ToolCallDelta,
};
pub use error::{ApiError, ErrorResponse};
pub use events::{ConsumerEvents, write_data_event};
pub use models::{Model, ModelList};
pub use think::ThinkSplitter;

mod usage;
pub use usage::{CompletionTokensDetails, PromptTokensDetails, Usage};

/// A JSON object: the unknown fields a type keeps and passes through.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// An object's key as read: borrowed from the input when it can be (no allocation for the
/// known fields of hot types), owned when the input escapes it.
pub(crate) struct FieldName<'de>(pub(crate) std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = FieldName<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(std::borrow::Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FieldName(std::borrow::Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(FieldName(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(Name)
    }
}
