//! Messages between a provider node and the coordinator, over one WebSocket that the node dials.
//!
//! Every message is one JSON text frame `{"type": "...", "body": {...}}`. The node opens with
//! [`NodeMessage::Hello`] (protocol version, node version, redacted manifest); the coordinator
//! answers [`CoordinatorMessage::Welcome`] or [`CoordinatorMessage::Refused`]. Then the coordinator
//! sends jobs and cancels; the node streams chunks and ends each job with `done` or `error`, and
//! heartbeats with its load. `docs/protocol.md` specifies the exchange.
//!
//! ```
//! use inference_club_core::link::{self, NodeMessage, Goodbye};
//!
//! let frame = link::encode(&NodeMessage::Goodbye(Goodbye { reason: "shutting down".into() }))?;
//! assert_eq!(frame, r#"{"type":"goodbye","body":{"reason":"shutting down"}}"#);
//! assert!(matches!(link::decode_node(&frame)?, NodeMessage::Goodbye(_)));
//! # Ok::<(), link::LinkError>(())
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::openai::{ChatCompletionChunk, ChatCompletionRequest, Usage};
use crate::provider::{ProviderError, TimeoutPhase};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side accepts, in bytes. A job carries the consumer's whole request
/// (images included), so this is larger than the coordinator's usual body limit needs.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The read and write buffers each side keeps per link, in bytes. Most links are idle most of
/// the time, so they are small (a coordinator holds thousands); a larger message grows the read
/// buffer while it is read.
pub const BUFFER_BYTES: usize = 4 * 1024;

/// The interval at which nodes heartbeat unless the coordinator says otherwise.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Identifies one job on one link (chosen by the coordinator, unique per link).
pub type JobId = u64;

/// What a node sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeMessage {
    /// First message: who the node is and what it serves.
    Hello(Hello),
    /// Periodic liveness and load.
    Heartbeat(Heartbeat),
    /// A chunk of a job's answer.
    Chunk(JobChunk),
    /// A job ended well.
    Done(JobDone),
    /// A job ended with an error.
    Error(JobFailed),
    /// The node is going away on purpose.
    Goodbye(Goodbye),
}

/// What the coordinator sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CoordinatorMessage {
    /// The hello was accepted.
    Welcome(Welcome),
    /// The hello was refused; the coordinator closes the link after this.
    Refused(Refused),
    /// Work to do.
    Job(Box<Job>),
    /// Stop a job (its consumer went away).
    Cancel(Cancel),
}

/// `hello`: the node's first message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the node speaks.
    pub protocol_version: u32,
    /// The node software and its version, e.g. `inference-club-provider/0.1.0`.
    pub node_version: String,
    /// The redacted service manifest, as JSON. It is validated by the coordinator with the same
    /// validator the node uses, so every problem is reported at once.
    pub manifest: serde_json::Value,
}

/// `welcome`: the coordinator accepted the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the coordinator will speak on this link.
    pub protocol_version: u32,
    /// The operator the key belongs to.
    pub operator: String,
    /// The provider's name (`agent.name`).
    pub provider: String,
    /// How often to heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u64,
}

/// `refused`: the coordinator did not accept the hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Why, in one sentence.
    pub reason: String,
    /// Every problem found (e.g. each manifest validation error with its path).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// `heartbeat`: the node is alive; its load per service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Load of each service.
    #[serde(default)]
    pub load: Vec<ServiceLoad>,
}

/// The load of one service of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLoad {
    /// The service name from the manifest.
    pub service: String,
    /// Requests running now.
    pub in_flight: u32,
    /// Its capacity, if bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
}

/// `job`: answer this request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id on this link.
    pub job: JobId,
    /// The record id (what the consumer sees as `x-club-request-id`).
    pub request_id: String,
    /// The consumer's handle, for the operator's own log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// How long the node may take in all, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The request; `model` is the name the consumer asked for.
    pub request: ChatCompletionRequest,
}

/// `cancel`: stop a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// The job to stop.
    pub job: JobId,
}

/// `chunk`: a piece of a job's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobChunk {
    /// The job.
    pub job: JobId,
    /// The chunk, as the engine produced it (model named by its served id).
    pub chunk: ChatCompletionChunk,
}

/// `done`: a job ended well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDone {
    /// The job.
    pub job: JobId,
    /// Token counts the engine reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The service that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Milliseconds from the job's arrival to its first chunk, measured at the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
    /// Milliseconds from the job's arrival to its end, measured at the node.
    pub total_ms: u64,
}

/// `error`: a job ended with an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailed {
    /// The job.
    pub job: JobId,
    /// What went wrong.
    pub error: JobError,
}

/// An error carried over the link; it maps to and from [`ProviderError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// The kind, as [`ProviderError::kind`] names it.
    pub kind: String,
    /// What happened.
    pub message: String,
    /// The engine's HTTP status, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The engine's error code, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl From<&ProviderError> for JobError {
    fn from(error: &ProviderError) -> Self {
        let (message, code) = match error {
            ProviderError::Unavailable { message, .. }
            | ProviderError::Busy { message }
            | ProviderError::Protocol { message } => (message.clone(), None),
            ProviderError::Rejected { message, code, .. } => (message.clone(), code.clone()),
            ProviderError::ModelNotFound { model } => (model.clone(), None),
            ProviderError::Timeout { .. } | ProviderError::Cancelled => (error.to_string(), None),
        };
        Self {
            kind: error.kind().to_owned(),
            message,
            status: error.status(),
            code,
        }
    }
}

impl From<JobError> for ProviderError {
    fn from(e: JobError) -> Self {
        match e.kind.as_str() {
            "unavailable" => Self::Unavailable {
                status: e.status,
                message: e.message,
            },
            "busy" => Self::Busy { message: e.message },
            "timeout" => Self::Timeout {
                phase: TimeoutPhase::Total,
                after: Duration::ZERO,
            },
            "rejected" => Self::Rejected {
                status: e.status.unwrap_or(400),
                message: e.message,
                code: e.code,
            },
            "model_not_found" => Self::ModelNotFound { model: e.message },
            "cancelled" => Self::Cancelled,
            _ => Self::Protocol {
                message: format!("{}: {}", e.kind, e.message),
            },
        }
    }
}

/// `goodbye`: the node is leaving on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// Why.
    pub reason: String,
}

/// A frame that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The frame is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {size} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
    },
    /// The frame is not a message of this protocol.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl LinkError {
    /// Whether sending the same frame again could succeed: never, it would fail the same way.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Encodes a message of either side as one text frame, refusing one over the size limit.
pub fn encode<M: Serialize>(message: &M) -> Result<String, LinkError> {
    let text = serde_json::to_string(message)?;
    check_size(text.len())?;
    Ok(text)
}

/// Decodes a frame the node sent.
pub fn decode_node(frame: &str) -> Result<NodeMessage, LinkError> {
    decode(frame)
}

/// Decodes a frame the coordinator sent.
pub fn decode_coordinator(frame: &str) -> Result<CoordinatorMessage, LinkError> {
    decode(frame)
}

fn decode<M: DeserializeOwned>(frame: &str) -> Result<M, LinkError> {
    check_size(frame.len())?;
    Ok(serde_json::from_str(frame)?)
}

fn check_size(size: usize) -> Result<(), LinkError> {
    if size > MAX_MESSAGE_BYTES {
        return Err(LinkError::TooLarge { size });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{ChatMessage, ChunkDelta};
    use serde_json::json;

    #[test]
    fn every_message_round_trips() {
        let node = [
            NodeMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                node_version: "test/1".into(),
                manifest: json!({"schema_version": 1}),
            }),
            NodeMessage::Heartbeat(Heartbeat {
                load: vec![ServiceLoad {
                    service: "s".into(),
                    in_flight: 2,
                    max_concurrent: Some(4),
                }],
            }),
            NodeMessage::Chunk(JobChunk {
                job: 7,
                chunk: ChatCompletionChunk::new("c", "m", 1).with_delta(ChunkDelta::content("x")),
            }),
            NodeMessage::Done(JobDone {
                job: 7,
                usage: Some(Usage::new(1, 2)),
                service: Some("s".into()),
                first_token_ms: Some(3),
                total_ms: 9,
            }),
            NodeMessage::Error(JobFailed {
                job: 7,
                error: JobError::from(&ProviderError::from_status(503, "down", None)),
            }),
            NodeMessage::Goodbye(Goodbye {
                reason: "bye".into(),
            }),
        ];
        for message in node {
            let frame = encode(&message).unwrap();
            assert_eq!(decode_node(&frame).unwrap(), message);
        }
        let coordinator = [
            CoordinatorMessage::Welcome(Welcome {
                protocol_version: 1,
                operator: "ada".into(),
                provider: "box".into(),
                heartbeat_interval_ms: 10_000,
            }),
            CoordinatorMessage::Refused(Refused {
                reason: "bad".into(),
                errors: vec!["a: b".into()],
            }),
            CoordinatorMessage::Job(Box::new(Job {
                job: 1,
                request_id: "r".into(),
                consumer: None,
                deadline_ms: Some(1000),
                request: ChatCompletionRequest::new("m", vec![ChatMessage::user("hi")]),
            })),
            CoordinatorMessage::Cancel(Cancel { job: 1 }),
        ];
        for message in coordinator {
            let frame = encode(&message).unwrap();
            assert_eq!(decode_coordinator(&frame).unwrap(), message);
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        assert!(matches!(decode_node(&big), Err(LinkError::TooLarge { .. })));
        assert!(matches!(
            decode_node("{\"type\":\"nope\"}"),
            Err(LinkError::Malformed(_))
        ));
        assert!(matches!(
            decode_node("not json"),
            Err(LinkError::Malformed(_))
        ));
    }

    #[test]
    fn provider_errors_survive_the_link() {
        for error in [
            ProviderError::from_status(503, "down", None),
            ProviderError::from_status(400, "bad", Some("c".into())),
            ProviderError::ModelNotFound { model: "m".into() },
            ProviderError::Busy {
                message: "full".into(),
            },
            ProviderError::Cancelled,
        ] {
            let back = ProviderError::from(JobError::from(&error));
            assert_eq!(back, error);
            assert_eq!(back.is_retryable(), error.is_retryable());
        }
        let timeout = ProviderError::Timeout {
            phase: TimeoutPhase::Idle,
            after: Duration::from_secs(1),
        };
        assert!(ProviderError::from(JobError::from(&timeout)).is_timeout());
    }
}
