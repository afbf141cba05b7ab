//! A convenient builder for chat requests over core's wire types.

use inference_club_core::openai::{ChatCompletionRequest, ChatMessage};
use inference_club_core::record::Visibility;

/// A chat request: `ChatRequest::new(model).system(..).user(..)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    request: ChatCompletionRequest,
}

impl ChatRequest {
    /// A request for `model` with no messages yet.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            request: ChatCompletionRequest::new(model, Vec::new()),
        }
    }

    /// Adds a system message.
    pub fn system(mut self, text: impl Into<String>) -> Self {
        self.request.messages.push(ChatMessage::system(text));
        self
    }

    /// Adds a user message.
    pub fn user(mut self, text: impl Into<String>) -> Self {
        self.request.messages.push(ChatMessage::user(text));
        self
    }

    /// Adds an assistant message (an earlier answer).
    pub fn assistant(mut self, text: impl Into<String>) -> Self {
        self.request.messages.push(ChatMessage::assistant(text));
        self
    }

    /// Adds any message.
    pub fn message(mut self, message: ChatMessage) -> Self {
        self.request.messages.push(message);
        self
    }

    /// Caps the tokens generated.
    pub fn max_tokens(mut self, max: u32) -> Self {
        self.request.max_tokens = Some(max);
        self
    }

    /// Sets the sampling temperature.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.request.temperature = Some(temperature);
        self
    }

    /// Who may read the record of this request (default: the member's default, usually public).
    pub fn visibility(mut self, visibility: Visibility) -> Self {
        self.request
            .extra
            .insert("visibility".into(), visibility.as_str().into());
        self
    }

    /// The wire request.
    pub fn into_inner(self) -> ChatCompletionRequest {
        self.request
    }
}

impl From<ChatCompletionRequest> for ChatRequest {
    fn from(request: ChatCompletionRequest) -> Self {
        Self { request }
    }
}

impl From<ChatRequest> for ChatCompletionRequest {
    fn from(request: ChatRequest) -> Self {
        request.request
    }
}

/// The two setters every request of the OpenAI endpoints has, on its `extra` map of fields sent
/// as they are: `visibility` (the club's) and `param` (any other parameter: `top_p`, `seed`,
/// `instructions`, a vendor's own).
macro_rules! extra_params {
    ($($request:ty),* $(,)?) => {
        $(
            impl $request {
                /// Who may read the record of this request (default: the member's default).
                pub fn visibility(mut self, visibility: inference_club_core::record::Visibility) -> Self {
                    self.extra
                        .insert("visibility".into(), visibility.as_str().into());
                    self
                }

                /// Any other parameter (`top_p`, `seed`, `instructions`, a vendor's own), sent as
                /// given.
                pub fn param(
                    mut self,
                    name: impl Into<String>,
                    value: impl Into<serde_json::Value>,
                ) -> Self {
                    self.extra.insert(name.into(), value.into());
                    self
                }
            }
        )*
    };
}
pub(crate) use extra_params;
