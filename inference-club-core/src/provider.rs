//! The [`Provider`] trait: one interface for everything that can answer an inference request —
//! chat through [`Provider::chat`], every other [`Endpoint`] through [`Provider::call`].
//!
//! A backend adapter for an engine is a `Provider`; a node's router over several backends is a
//! `Provider`; the coordinator's handle on a remote node is a `Provider`. Selection, failover and
//! recording are written once, on this trait.

use std::pin::Pin;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_core::Stream;
use tokio_util::sync::CancellationToken;

use crate::endpoint::Endpoint;
use crate::openai::{ChatCompletionChunk, ChatCompletionRequest, Model};

/// The stream of chunks a provider answers with. It ends after the last chunk (the one with a
/// finish reason, or the usage-only chunk), or with an error. Dropping it cancels the request.
pub type ChunkStream =
    Pin<Box<dyn Stream<Item = Result<ChatCompletionChunk, ProviderError>> + Send + 'static>>;

/// The answer to a [`Call`]: one [`CallOutput::Json`] for a whole JSON answer, one per event for
/// a streamed one, or [`CallOutput::Bytes`] for audio and other non-JSON answers. It ends after
/// the last output, or with an error. Dropping it cancels the request.
pub type CallStream =
    Pin<Box<dyn Stream<Item = Result<CallOutput, ProviderError>> + Send + 'static>>;

/// A request to an endpoint other than chat completions.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The request body as OpenAI documents it for the endpoint. For a multipart upload, its
    /// text fields as strings. Its `model` is the name the consumer asked for until a router
    /// maps it ([`Call::with_model`]).
    pub body: serde_json::Value,
    /// The uploaded file of a multipart request (the audio to transcribe).
    pub upload: Option<Upload>,
}

impl Call {
    /// A call of `endpoint` with a JSON `body`.
    pub fn new(endpoint: Endpoint, body: serde_json::Value) -> Self {
        Self {
            endpoint,
            body,
            upload: None,
        }
    }

    /// The same call with an uploaded file.
    pub fn with_upload(mut self, upload: Upload) -> Self {
        self.upload = Some(upload);
        self
    }

    /// The model the body names (empty when it names none).
    pub fn model(&self) -> &str {
        self.body
            .get("model")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    }

    /// The same call for the model served as `model`.
    pub fn with_model(mut self, model: &str) -> Self {
        if let Some(body) = self.body.as_object_mut() {
            body.insert("model".into(), model.into());
        }
        self
    }

    /// Whether the body asks for a streamed answer (`"stream": true`).
    pub fn is_stream(&self) -> bool {
        self.endpoint.streams()
            && self
                .body
                .get("stream")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
    }
}

/// A file uploaded with a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    /// The file's name as the consumer sent it.
    pub file_name: String,
    /// Its content type (`application/octet-stream` when none was given).
    pub content_type: String,
    /// Its bytes.
    pub data: bytes::Bytes,
}

/// One piece of a call's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutput {
    /// A whole JSON answer, or one event of a streamed answer.
    Json(serde_json::Value),
    /// A non-JSON answer: audio, or text asked for as `text`, `srt` or `vtt`.
    Bytes {
        /// Its content type.
        content_type: String,
        /// The bytes.
        data: bytes::Bytes,
    },
}

/// Something that answers inference requests: an engine, a router over engines, or a remote
/// node.
///
/// A whole (non-streamed) response is the collected stream: use
/// [`ChatCompletionAggregator`](crate::openai::ChatCompletionAggregator).
#[async_trait]
pub trait Provider: Send + Sync {
    /// The models this provider serves, under the ids to request them by.
    async fn models(&self) -> Result<Vec<Model>, ProviderError>;

    /// Starts answering `request`. The returned stream yields chunks as the engine produces them.
    /// `request.model` names the model as the consumer asked for it; the provider maps it to the
    /// id its engine serves.
    async fn chat(
        &self,
        request: ChatCompletionRequest,
        context: RequestContext,
    ) -> Result<ChunkStream, ProviderError>;

    /// Starts answering a request to an endpoint other than chat. Providers that serve none
    /// keep this default, which refuses with a 404 `unsupported_endpoint`.
    async fn call(&self, call: Call, context: RequestContext) -> Result<CallStream, ProviderError> {
        let _ = context;
        Err(ProviderError::unsupported(call.endpoint))
    }
}

/// What a provider knows about the request beyond its body.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The record id of the request (what `x-club-request-id` carries).
    pub request_id: String,
    /// The consumer's handle, when signed in.
    pub consumer: Option<String>,
    /// When the whole request must be done by, if ever.
    pub deadline: Option<Instant>,
    /// Cancelled when the consumer goes away; providers stop work and close engine connections.
    pub cancel: CancellationToken,
    /// The consumer takes the answer whole (not streamed): a provider may deliver it in fewer,
    /// larger chunks (a node sends two, see [`ChatCompletionChunk::absorb`]).
    ///
    /// [`ChatCompletionChunk::absorb`]: crate::openai::ChatCompletionChunk::absorb
    pub whole: bool,
}

impl RequestContext {
    /// A context for `request_id` with no consumer, no deadline and a fresh cancellation token.
    pub fn new(request_id: impl Into<String>) -> Self {
        Self {
            request_id: request_id.into(),
            ..Self::default()
        }
    }

    /// The same context with the consumer's handle.
    pub fn with_consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = Some(consumer.into());
        self
    }

    /// The same context with a deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Connecting to the engine or node.
    Connect,
    /// Waiting for the first chunk (models may reason silently first).
    FirstToken,
    /// Waiting between two chunks.
    Idle,
    /// The whole request's deadline.
    Total,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::FirstToken => "first token",
            Self::Idle => "idle between chunks",
            Self::Total => "total",
        })
    }
}

/// Why a provider could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The engine or node could not be reached or failed on its side (refused connection, reset,
    /// 5xx, 429), or the engine refused the node itself (401, 403, 404, 405). Another provider
    /// may succeed.
    #[error("unavailable{}: {message}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Unavailable {
        /// The HTTP status, when there was one.
        status: Option<u16>,
        /// What happened.
        message: String,
    },
    /// Every slot is taken (`max_concurrent` reached).
    #[error("at capacity: {message}")]
    Busy {
        /// What is full.
        message: String,
    },
    /// A wait ran out.
    #[error("timed out ({phase}) after {after:?}")]
    Timeout {
        /// Which wait.
        phase: TimeoutPhase,
        /// How long it waited.
        after: Duration,
    },
    /// The engine refused the request itself (a 4xx other than 401, 403, 404, 405 and 429): the
    /// same request would be refused anywhere.
    #[error("rejected by the engine ({status}): {message}")]
    Rejected {
        /// The engine's HTTP status.
        status: u16,
        /// The engine's message (its body as text when it was not JSON).
        message: String,
        /// The engine's error code, if it gave one.
        code: Option<String>,
    },
    /// No backend serves the requested model.
    #[error("model not found: {model}")]
    ModelNotFound {
        /// The model as requested.
        model: String,
    },
    /// The engine or node sent something that does not follow the protocol.
    #[error("protocol error: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
    /// The request was cancelled (the consumer went away).
    #[error("cancelled")]
    Cancelled,
}

impl ProviderError {
    /// Whether another attempt, on another provider, may succeed — provided no output was sent
    /// yet (after output has started nothing is retried).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Busy { .. }
                | Self::Timeout { .. }
                | Self::Protocol { .. }
        )
    }

    /// Whether a wait ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// The HTTP status the engine answered with, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unavailable { status, .. } => *status,
            Self::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The refusal of a provider that does not serve `endpoint`.
    pub fn unsupported(endpoint: Endpoint) -> Self {
        Self::Rejected {
            status: 404,
            message: format!("this engine does not serve {}", endpoint.path()),
            code: Some("unsupported_endpoint".into()),
        }
    }

    /// A short machine-readable name of the kind, as used in records and link messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::Busy { .. } => "busy",
            Self::Timeout { .. } => "timeout",
            Self::Rejected { .. } => "rejected",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::Protocol { .. } => "protocol",
            Self::Cancelled => "cancelled",
        }
    }

    /// The error from an engine's HTTP status and message: 429 and 5xx are `Unavailable`
    /// (retryable); so are 401, 403, 404 and 405, the engine refusing the node itself (its
    /// credentials, a route or model it lacks), which another node may not; other 4xx are
    /// `Rejected`. A 404 naming a model is `ModelNotFound` only when the caller knows so (see
    /// the backends).
    pub fn from_status(status: u16, message: impl Into<String>, code: Option<String>) -> Self {
        let message = message.into();
        if status == 429 || status >= 500 {
            Self::Unavailable {
                status: Some(status),
                message,
            }
        } else if matches!(status, 401 | 403 | 404 | 405) {
            Self::Unavailable {
                status: Some(status),
                message: format!("the node's engine refused it: {message}"),
            }
        } else {
            Self::Rejected {
                status,
                message,
                code,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_retryable_kinds() {
        assert!(ProviderError::from_status(429, "slow down", None).is_retryable());
        assert!(ProviderError::from_status(503, "down", None).is_retryable());
        let rejected = ProviderError::from_status(400, "bad", Some("x".into()));
        assert!(!rejected.is_retryable());
        assert_eq!(rejected.status(), Some(400));
        assert!(!ProviderError::Cancelled.is_retryable());
        // The engine refusing the node (its key, a route or model it lacks): another may not.
        for status in [401, 403, 404, 405] {
            let refused = ProviderError::from_status(status, "nf", None);
            assert!(refused.is_retryable(), "{status}");
            assert_eq!(refused.status(), Some(status));
            assert_eq!(
                refused.to_string(),
                format!("unavailable ({status}): the node's engine refused it: nf")
            );
        }
        assert!(!ProviderError::from_status(422, "bad", None).is_retryable());
    }

    #[test]
    fn messages_name_the_phase() {
        let e = ProviderError::Timeout {
            phase: TimeoutPhase::FirstToken,
            after: Duration::from_secs(2),
        };
        assert_eq!(e.to_string(), "timed out (first token) after 2s");
        assert!(e.is_timeout());
    }
}
