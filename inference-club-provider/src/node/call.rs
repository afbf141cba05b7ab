//! Running one call job (an endpoint other than chat): from the coordinator's `call` message
//! (and its uploaded file) to `done` or `error`.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use inference_club_core::link::{
    self, BinaryHeader, CallJob, JobBytes, JobError, JobFailed, JobId, JobOutput, NodeMessage,
};
use inference_club_core::openai::Usage;
use inference_club_core::provider::{Call, CallOutput, Provider, ProviderError, Upload};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::failures::FailureWarnings;
use super::job::{Ended, end_job, job_context, millis};
use super::job_log::JobLog;

/// The largest upload a node accepts with a call, in bytes (the coordinator's own limit is
/// usually lower).
pub const MAX_UPLOAD_BYTES: u64 = 64 * 1024 * 1024;

/// What a job sends to the coordinator: a message, or a binary frame of a job's answer.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A JSON message.
    Message(NodeMessage),
    /// A binary frame ([`link::binary_frame`]).
    Binary(Vec<u8>),
    /// Frames written together, in order: a job's last chunk or events, its answer and its
    /// end (`done` or `error`).
    Together(Vec<Outgoing>),
}

impl From<NodeMessage> for Outgoing {
    fn from(message: NodeMessage) -> Self {
        Self::Message(message)
    }
}

/// A call whose uploaded file is still arriving in binary frames.
#[derive(Debug)]
pub(crate) struct PendingUpload {
    call: CallJob,
    header: BinaryHeader,
    data: BytesMut,
}

impl PendingUpload {
    /// Starts collecting `call`'s upload; refused when it announces more than
    /// [`MAX_UPLOAD_BYTES`].
    pub(crate) fn new(call: CallJob, header: BinaryHeader) -> Result<Self, ProviderError> {
        if header.size > MAX_UPLOAD_BYTES {
            return Err(ProviderError::Rejected {
                status: 413,
                message: format!(
                    "the upload of {} bytes is larger than this node takes ({MAX_UPLOAD_BYTES})",
                    header.size
                ),
                code: Some("upload_too_large".into()),
            });
        }
        Ok(Self {
            call,
            header,
            data: BytesMut::new(),
        })
    }

    /// Adds a piece; `Ok(true)` once the whole upload is here, an error when it is more than was
    /// announced.
    pub(crate) fn push(&mut self, piece: &[u8]) -> Result<bool, ProviderError> {
        let size = usize::try_from(self.header.size).unwrap_or(usize::MAX);
        if self.data.len().saturating_add(piece.len()) > size {
            return Err(ProviderError::Protocol {
                message: format!("the upload is longer than the {size} bytes announced"),
            });
        }
        self.data.extend_from_slice(piece);
        Ok(self.data.len() == size)
    }

    /// The call with its file.
    pub(crate) fn finish(self) -> (CallJob, Upload) {
        let upload = Upload {
            file_name: self.header.file_name,
            content_type: self.header.content_type,
            data: self.data.freeze(),
        };
        (self.call, upload)
    }
}

/// Serves `job` (with its `upload`, if any) on `provider`, sending each output to `out` as the
/// engine produces it and ending with `done` or `error`.
pub(crate) async fn serve_call(
    job: CallJob,
    upload: Option<Upload>,
    provider: Arc<dyn Provider>,
    out: mpsc::Sender<Outgoing>,
    cancel: CancellationToken,
    log: JobLog,
    failures: FailureWarnings,
) {
    let started = Instant::now();
    let id = job.job;
    let mut call = Call::new(job.endpoint, job.body);
    call.upload = upload;
    let model = call.model().to_owned();
    let request_json = log.logs_content().then(|| call.body.clone());
    let context = job_context(
        &job.request_id,
        job.consumer.as_ref(),
        job.deadline_ms,
        &cancel,
        started,
    );

    let mut first_token_ms = None;
    let mut usage: Option<Usage> = None;
    let outcome: Result<(), ProviderError> = async {
        let mut outputs = tokio::select! {
            () = cancel.cancelled() => return Err(ProviderError::Cancelled),
            opened = provider.call(call, context) => opened?,
        };
        loop {
            let item = tokio::select! {
                () = cancel.cancelled() => return Err(ProviderError::Cancelled),
                item = outputs.next() => item,
            };
            let Some(item) = item else { break };
            let output = item?;
            if first_token_ms.is_none() {
                first_token_ms = Some(millis(started.elapsed()));
            }
            let frames = match output {
                CallOutput::Json(value) => {
                    if let Some(reported) = reported_usage(&value) {
                        usage = Some(reported);
                    }
                    vec![Outgoing::Message(NodeMessage::Output(JobOutput {
                        job: id,
                        output: value,
                    }))]
                }
                CallOutput::Bytes { content_type, data } => binary_answer(id, content_type, &data),
            };
            for frame in frames {
                tokio::select! {
                    () = cancel.cancelled() => return Err(ProviderError::Cancelled),
                    sent = out.send(frame) => sent.map_err(|_| ProviderError::Cancelled)?,
                }
            }
        }
        Ok(())
    }
    .await;

    let ended = Ended {
        before_end: Vec::new(),
        id,
        request_id: job.request_id,
        consumer: job.consumer,
        model,
        usage,
        first_token_ms,
        started,
        request: request_json,
        answer: None,
    };
    end_job(ended, outcome, &log, &failures, &out).await;
}

/// The refusal of a call that cannot start (its upload is too large or malformed).
pub(crate) fn refusal(job: JobId, error: &ProviderError) -> NodeMessage {
    NodeMessage::Error(JobFailed {
        job,
        error: JobError::from(error),
    })
}

/// A binary answer as the link carries it: its header, then frames of at most
/// [`link::BINARY_CHUNK_BYTES`].
fn binary_answer(job: JobId, content_type: String, data: &Bytes) -> Vec<Outgoing> {
    let header = NodeMessage::Bytes(JobBytes {
        job,
        body: BinaryHeader {
            file_name: String::new(),
            content_type,
            size: data.len() as u64,
        },
    });
    std::iter::once(Outgoing::Message(header))
        .chain(
            data.chunks(link::BINARY_CHUNK_BYTES)
                .map(|piece| Outgoing::Binary(link::binary_frame(job, piece))),
        )
        .collect()
}

/// The token counts an answer or event reports (`usage`, at the top level or in a Responses
/// event's `response`), if any.
fn reported_usage(value: &serde_json::Value) -> Option<Usage> {
    let usage = value.get("usage").filter(|u| u.is_object())?;
    let mut usage: Usage = serde_json::from_value(usage.clone()).ok()?;
    if usage.total_tokens == 0 {
        usage.total_tokens = usage.prompt_tokens.saturating_add(usage.completion_tokens);
    }
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_take_exactly_what_was_announced() {
        let header = BinaryHeader {
            file_name: "a.wav".into(),
            content_type: "audio/wav".into(),
            size: 5,
        };
        let call = CallJob {
            job: 1,
            request_id: "r".into(),
            consumer: None,
            deadline_ms: None,
            endpoint: inference_club_core::endpoint::Endpoint::AudioTranscriptions,
            body: serde_json::json!({"model": "w"}),
            upload: Some(header.clone()),
        };
        let mut pending = PendingUpload::new(call.clone(), header.clone()).unwrap();
        assert!(!pending.push(b"ab").unwrap());
        assert!(pending.push(b"cd!").unwrap());
        let (_, upload) = pending.finish();
        assert_eq!(&upload.data[..], b"abcd!");
        let mut pending = PendingUpload::new(call.clone(), header).unwrap();
        assert!(pending.push(b"toolong").is_err());
        let huge = BinaryHeader {
            size: MAX_UPLOAD_BYTES + 1,
            ..BinaryHeader {
                file_name: String::new(),
                content_type: String::new(),
                size: 0,
            }
        };
        assert!(PendingUpload::new(call, huge).is_err());
    }

    #[test]
    fn binary_answers_go_in_bounded_frames() {
        let data = Bytes::from(vec![7u8; link::BINARY_CHUNK_BYTES * 2 + 1]);
        let frames = binary_answer(3, "audio/wav".into(), &data);
        assert_eq!(frames.len(), 4);
        assert!(
            matches!(&frames[0], Outgoing::Message(NodeMessage::Bytes(b)) if b.body.size == data.len() as u64)
        );
    }

    #[test]
    fn usage_is_read_from_answers() {
        let usage =
            reported_usage(&serde_json::json!({"usage": {"prompt_tokens": 3, "total_tokens": 3}}));
        assert_eq!(usage.unwrap().total_tokens, 3);
        assert!(reported_usage(&serde_json::json!({"data": []})).is_none());
    }
}
