//! Messages between a provider node and the coordinator, over one WebSocket that the node dials.
//!
//! Every message is one JSON text frame `{"type": "...", "body": {...}}`. The node opens with
//! [`NodeMessage::Hello`] (protocol version, node version, redacted manifest); the coordinator
//! answers [`CoordinatorMessage::Welcome`] or [`CoordinatorMessage::Refused`]. Then the coordinator
//! sends jobs and cancels; the node streams chunks and ends each job with `done` or `error`, and
//! heartbeats with its load. Since protocol version 2 a job may also be a [`CallJob`] (any other
//! endpoint), whose uploaded file and binary answer travel as binary frames
//! ([`binary_frame`]). `docs/protocol.md` specifies the exchange.
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

use crate::endpoint::Endpoint;
use crate::openai::{ChatCompletionChunk, ChatCompletionRequest, ConsumerEvents, Usage};
use crate::provider::{ProviderError, TimeoutPhase};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// The first protocol version with [`CallJob`]s (endpoints other than chat) and binary frames.
pub const CALLS_SINCE: u32 = 2;

/// The largest piece of a binary body one binary frame carries, in bytes: an upload or an audio
/// answer is sent in frames of this size, so that no frame holds a large body at once.
pub const BINARY_CHUNK_BYTES: usize = 256 * 1024;

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
    /// A JSON answer of a call, or one event of a streamed one.
    Output(JobOutput),
    /// A binary answer of a call follows in binary frames.
    Bytes(JobBytes),
    /// What the events of an events job ([`Job::events`]) added up to, right before its
    /// `done` or `error`.
    Answer(JobAnswer),
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
    /// A request to another endpoint (protocol version 2); an upload follows in binary frames.
    Call(Box<CallJob>),
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
    /// The consumer takes the answer whole: the node may send it in fewer chunks, merged from
    /// the engine's ([`ChatCompletionChunk::absorb`]): the provider node sends what came up to
    /// the first output, then the rest as one chunk before `done` (or before `error`); it asks
    /// an OpenAI-compatible engine for the answer whole, which comes as one chunk. Nodes that
    /// do not know this field stream as usual, which is as correct.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole: bool,
    /// The consumer streams the answer: the node may send it as the consumer's own events,
    /// written as this says ([`ConsumerEvents::write`]), in binary frames ([`events_frame`]),
    /// and then, before `done` or `error`, what they added up to ([`JobAnswer`]). The
    /// coordinator forwards the events as they are. Nodes that do not know this field send
    /// chunks, which the coordinator writes itself; a node may send an event too large for a
    /// binary frame as a chunk too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<ConsumerEvents>,
    /// The request; `model` is the name the consumer asked for.
    pub request: ChatCompletionRequest,
}

/// `call`: answer this request to an endpoint other than chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallJob {
    /// The job's id on this link.
    pub job: JobId,
    /// The record id.
    pub request_id: String,
    /// The consumer's handle, for the operator's own log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// How long the node may take in all, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The body; `model` is the name the consumer asked for.
    pub body: serde_json::Value,
    /// The uploaded file, whose bytes follow in binary frames of this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<BinaryHeader>,
}

/// What a binary body is; its bytes follow in binary frames ([`binary_frame`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryHeader {
    /// The file name (uploads).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file_name: String,
    /// The content type.
    pub content_type: String,
    /// Its size in bytes: the frames that follow carry exactly this many.
    pub size: u64,
}

/// `output`: a JSON answer of a call, or one event of a streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOutput {
    /// The job.
    pub job: JobId,
    /// The answer or event as the engine produced it.
    pub output: serde_json::Value,
}

/// `bytes`: a binary answer of a call follows in binary frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobBytes {
    /// The job.
    pub job: JobId,
    /// What the bytes are.
    pub body: BinaryHeader,
}

/// A binary frame: the job id (8 bytes, big-endian) and a piece of the job's binary body.
pub fn binary_frame(job: JobId, piece: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + piece.len());
    frame.extend_from_slice(&job.to_be_bytes());
    frame.extend_from_slice(piece);
    frame
}

/// The job and piece a binary frame carries; a frame shorter than the job id, or larger than
/// [`BINARY_CHUNK_BYTES`] of data, is refused.
pub fn split_binary_frame(frame: &[u8]) -> Result<(JobId, &[u8]), LinkError> {
    let (id, piece) = frame.split_at_checked(8).ok_or(LinkError::ShortBinary)?;
    if piece.len() > BINARY_CHUNK_BYTES {
        return Err(LinkError::TooLarge { size: frame.len() });
    }
    let id: [u8; 8] = id.try_into().map_err(|_| LinkError::ShortBinary)?;
    Ok((JobId::from_be_bytes(id), piece))
}

/// The start of a binary frame of events for job `job`'s consumer ([`Job::events`]): the job
/// id, then one byte that says whether the events hold output (see [`mark_output`]). The events
/// ([`ConsumerEvents::write`]) are appended after it, up to [`BINARY_CHUNK_BYTES`] in all.
pub fn events_frame(job: JobId) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4096);
    frame.extend_from_slice(&job.to_be_bytes());
    frame.push(0);
    frame
}

/// The length of an events frame ([`events_frame`]) before its events: the job id and the flag.
const EVENTS_START: usize = size_of::<JobId>() + 1;

/// Whether an events frame ([`events_frame`]) holds any events.
pub fn has_events(frame: &[u8]) -> bool {
    frame.len() > EVENTS_START
}

/// Empties an events frame ([`events_frame`]) for the next events of its job: the events go, and
/// the flag says no output again. The buffer is kept.
pub fn clear_events(frame: &mut Vec<u8>) {
    frame.truncate(EVENTS_START);
    if let Some(flag) = frame.get_mut(EVENTS_START - 1) {
        *flag = 0;
    }
}

/// Marks an events frame ([`events_frame`]) as holding output: content, reasoning, a refusal,
/// a tool call or a finish reason. Until a frame with output, the coordinator may still send
/// the request to another node.
pub fn mark_output(frame: &mut [u8]) {
    if let Some(flag) = frame.get_mut(EVENTS_START - 1) {
        *flag = 1;
    }
}

/// Whether the piece of an events frame ([`split_binary_frame`]) holds output, and its events.
/// A piece whose flag is not 0 or 1, or that is not whole events
/// ([`ConsumerEvents::are_whole_events`]), is refused: it would reach the consumer as it is.
pub fn split_events(piece: &[u8]) -> Result<(bool, &[u8]), LinkError> {
    let (output, events) = match piece.split_first() {
        Some((0, events)) => (false, events),
        Some((1, events)) => (true, events),
        _ => return Err(LinkError::BadEvents),
    };
    if !ConsumerEvents::are_whole_events(events) {
        return Err(LinkError::BadEvents);
    }
    Ok((output, events))
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

/// `answer`: what the events of an events job added up to ([`Job::events`]), sent right before
/// its `done` or `error`: every chunk the node sent for the job, events or chunks, aggregated
/// and written as one chunk ([`ChatCompletionChunk::from_completion`]), usage included. The
/// coordinator keeps this in the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAnswer {
    /// The job.
    pub job: JobId,
    /// The answer as one chunk.
    pub answer: ChatCompletionChunk,
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
    /// A binary frame too short to name its job.
    #[error("a binary frame shorter than its 8-byte job id")]
    ShortBinary,
    /// An events frame that is not a flag and whole events.
    #[error("an events frame that is not whole `data: {{…}}` events")]
    BadEvents,
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
            NodeMessage::Answer(JobAnswer {
                job: 7,
                answer: ChatCompletionChunk::new("c", "m", 1).with_delta(ChunkDelta::content("xy")),
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
            NodeMessage::Output(JobOutput {
                job: 7,
                output: json!({"object": "list", "data": []}),
            }),
            NodeMessage::Bytes(JobBytes {
                job: 7,
                body: BinaryHeader {
                    file_name: String::new(),
                    content_type: "audio/wav".into(),
                    size: 44,
                },
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
                whole: true,
                events: Some(ConsumerEvents {
                    completion_id: "chatcmpl-r".into(),
                    include_usage: true,
                }),
                request: ChatCompletionRequest::new("m", vec![ChatMessage::user("hi")]),
            })),
            CoordinatorMessage::Call(Box::new(CallJob {
                job: 2,
                request_id: "r".into(),
                consumer: Some("ada".into()),
                deadline_ms: None,
                endpoint: Endpoint::AudioTranscriptions,
                body: json!({"model": "whisper", "response_format": "json"}),
                upload: Some(BinaryHeader {
                    file_name: "a.wav".into(),
                    content_type: "audio/wav".into(),
                    size: 10,
                }),
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
    fn binary_frames_name_their_job() {
        let frame = binary_frame(0x0102, b"RIFF");
        assert_eq!(split_binary_frame(&frame).unwrap(), (0x0102, &b"RIFF"[..]));
        assert!(matches!(
            split_binary_frame(b"short"),
            Err(LinkError::ShortBinary)
        ));
        let big = binary_frame(1, &vec![0; BINARY_CHUNK_BYTES + 1]);
        assert!(matches!(
            split_binary_frame(&big),
            Err(LinkError::TooLarge { .. })
        ));
    }

    #[test]
    fn events_frames_carry_their_output_flag_and_only_whole_events() {
        let mut frame = events_frame(9);
        frame.extend_from_slice(b"data: {\"a\":1}\n\n");
        let (job, piece) = split_binary_frame(&frame).unwrap();
        assert_eq!(job, 9);
        assert_eq!(
            split_events(piece).unwrap(),
            (false, &b"data: {\"a\":1}\n\n"[..])
        );
        mark_output(&mut frame);
        let (_, piece) = split_binary_frame(&frame).unwrap();
        assert!(split_events(piece).unwrap().0);
        for bad in [
            &b""[..],
            b"\x02data: {}\n\n",
            b"\x00data: [DONE]\n\n",
            b"\x01data: {}",
        ] {
            assert!(
                matches!(split_events(bad), Err(LinkError::BadEvents)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_cleared_events_frame_starts_again_without_events_or_output() {
        let mut frame = events_frame(9);
        assert!(!has_events(&frame));
        frame.extend_from_slice(b"data: {\"a\":1}\n\n");
        mark_output(&mut frame);
        assert!(has_events(&frame));
        clear_events(&mut frame);
        assert!(!has_events(&frame));
        assert_eq!(frame, events_frame(9));
        frame.extend_from_slice(b"data: {\"b\":2}\n\n");
        let (job, piece) = split_binary_frame(&frame).unwrap();
        assert_eq!(job, 9);
        assert_eq!(
            split_events(piece).unwrap(),
            (false, &b"data: {\"b\":2}\n\n"[..])
        );
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
