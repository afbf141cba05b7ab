//! Running one job: from the coordinator's `job` message to `done` or `error`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use inference_club_core::link::{
    self, Job, JobAnswer, JobChunk, JobDone, JobError, JobFailed, JobId, NodeMessage,
};
use inference_club_core::openai::{
    ChatCompletionAggregator, ChatCompletionChunk, ConsumerEvents, Usage,
};
use inference_club_core::provider::{Provider, ProviderError, RequestContext};
use inference_club_core::routing::failover;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::call::Outgoing;
use super::failures::FailureWarnings;
use super::job_log::{JobLog, JobLogEntry};

/// Serves `job` on `provider`, sending each chunk to `out` as the engine produces it, and ending
/// with `done` or `error`. Cancelling `cancel` drops the engine request.
///
/// - A job its consumer takes whole: the chunks up to the first output, then the rest merged
///   into one when the engine is done.
/// - A job its consumer streams, when the coordinator asks for events ([`Job::events`]): the
///   consumer's own events, as many in one frame as the engine has produced by then, and their
///   answer before the end.
pub(crate) async fn serve_job(
    job: Job,
    provider: Arc<dyn Provider>,
    out: mpsc::Sender<Outgoing>,
    cancel: CancellationToken,
    log: JobLog,
    failures: FailureWarnings,
) {
    let started = Instant::now();
    let id = job.job;
    let model = job.request.model.clone();
    let request_json = log
        .logs_content()
        .then(|| serde_json::to_value(&job.request).ok())
        .flatten();
    let mut context = job_context(
        &job.request_id,
        job.consumer.as_ref(),
        job.deadline_ms,
        &cancel,
        started,
    );
    // The engine may be asked for a whole answer too.
    context.whole = job.whole;

    let mut first_token_ms = None;
    let mut aggregate = ChatCompletionAggregator::new();
    // A whole answer goes to the coordinator in two chunks: what came up to the first output
    // (so that the coordinator knows when it started), then the rest merged, sent at the end or
    // before an error. Two frames to write and to read instead of one per token.
    let mut merged: Option<ChatCompletionChunk> = None;
    let whole = job.whole;
    let mut events = job
        .events
        .filter(|_| !whole)
        .map(|events| EventsOut::new(id, events));
    let outcome: Result<(), ProviderError> = async {
        // Cancellation wins over an engine that is slow to answer or silent between chunks:
        // returning drops the engine request (and its stream) at once.
        let mut stream = tokio::select! {
            () = cancel.cancelled() => return Err(ProviderError::Cancelled),
            opened = provider.chat(job.request, context) => opened?,
        }
        .peekable();
        // One wait for the cancellation for the whole stream, not one per chunk.
        let cancelled = cancel.cancelled();
        let mut cancelled = std::pin::pin!(cancelled);
        loop {
            let item = tokio::select! {
                () = &mut cancelled => return Err(ProviderError::Cancelled),
                item = stream.next() => item,
            };
            let Some(item) = item else { break };
            let chunk = match item {
                Ok(chunk) => chunk,
                // What the engine said before it failed still reaches the record (`merged` goes
                // with the error).
                Err(error) => return Err(error),
            };
            let first_output = first_token_ms.is_none() && chunk.has_output();
            if first_output {
                first_token_ms = Some(millis(started.elapsed()));
            }
            aggregate.push(&chunk);
            if let Some(events) = events.as_mut() {
                if let Some(alone) = events.push(chunk)? {
                    send(&out, &cancel, alone).await?;
                }
                match Pin::new(&mut stream).peek().now_or_never() {
                    // The engine is done: the last events go with the end, in one write.
                    Some(None) => {}
                    // More is there already: it goes in the same frame, up to a limit. The
                    // first output goes at once, though: it is what the consumer waits for.
                    Some(Some(_)) if !events.is_full() && !first_output => {}
                    _ => {
                        if let Some(frame) = events.take() {
                            send(&out, &cancel, Outgoing::Binary(frame)).await?;
                        }
                    }
                }
                continue;
            }
            if !whole {
                send_chunk(&out, &cancel, id, chunk).await?;
                continue;
            }
            match merged.as_mut() {
                Some(merged) => merged.absorb(chunk),
                None => merged = Some(chunk),
            }
            // What came up to the first output goes at once, unless the answer ends with it
            // (the engine gave it whole): then it goes with `done`, in one write.
            if first_output
                && !matches!(Pin::new(&mut stream).peek().now_or_never(), Some(None))
                && let Some(chunk) = merged.take()
            {
                send_chunk(&out, &cancel, id, chunk).await?;
            }
        }
        Ok(())
    }
    .await;

    let completion = aggregate.finish();
    let usage = completion.usage.clone();
    let answer = log.logs_content().then(|| completion.text()).flatten();
    let mut before_end: Vec<Outgoing> = Vec::new();
    if let Some(chunk) = merged {
        before_end.push(NodeMessage::Chunk(JobChunk { job: id, chunk }).into());
    }
    if let Some(mut events) = events {
        before_end.extend(events.take().map(Outgoing::Binary));
        let answer = ChatCompletionChunk::from_completion(completion);
        before_end.push(NodeMessage::Answer(JobAnswer { job: id, answer }).into());
    }
    let ended = Ended {
        id,
        before_end,
        request_id: job.request_id,
        consumer: job.consumer,
        model,
        usage,
        first_token_ms,
        started,
        request: request_json,
        answer,
    };
    end_job(ended, outcome, &log, &failures, &out).await;
}

/// Sends one chunk of job `id` to the coordinator (unless the job is cancelled first).
async fn send_chunk(
    out: &mpsc::Sender<Outgoing>,
    cancel: &CancellationToken,
    id: JobId,
    chunk: ChatCompletionChunk,
) -> Result<(), ProviderError> {
    send(
        out,
        cancel,
        NodeMessage::Chunk(JobChunk { job: id, chunk }).into(),
    )
    .await
}

/// Sends `outgoing` to the coordinator (unless the job is cancelled first).
async fn send(
    out: &mpsc::Sender<Outgoing>,
    cancel: &CancellationToken,
    outgoing: Outgoing,
) -> Result<(), ProviderError> {
    tokio::select! {
        () = cancel.cancelled() => Err(ProviderError::Cancelled),
        sent = out.send(outgoing) => sent.map_err(|_| ProviderError::Cancelled),
    }
}

/// The events frame a streamed job fills ([`Job::events`]): the consumer's events of the chunks
/// pushed since it was last taken.
struct EventsOut {
    job: JobId,
    events: ConsumerEvents,
    /// Filled in place and kept for the job's life; each frame taken is a copy of its size. A
    /// fresh buffer per frame was 3 % of the node: the frames are freed on the link's thread, and
    /// large blocks freed on another thread send the allocator down its slow path.
    frame: Vec<u8>,
}

/// How full an events frame gets before it is sent even though more is ready (well below
/// [`link::BINARY_CHUNK_BYTES`], which one event may take alone).
const EVENTS_FRAME_BYTES: usize = 64 * 1024;

impl EventsOut {
    fn new(job: JobId, events: ConsumerEvents) -> Self {
        Self {
            job,
            events,
            frame: link::events_frame(job),
        }
    }

    /// Writes `chunk`'s event into the frame. An event too large for any frame comes back as a
    /// chunk message to send at once (the frame's earlier events first, with it).
    fn push(&mut self, mut chunk: ChatCompletionChunk) -> Result<Option<Outgoing>, ProviderError> {
        let start = self.frame.len();
        let written = self
            .events
            .write(&mut chunk, &mut self.frame)
            .map_err(|e| ProviderError::Protocol {
                message: format!("the node could not write an event: {e}"),
            })?;
        if !written {
            return Ok(None);
        }
        if self.frame.len() - 8 <= link::BINARY_CHUNK_BYTES {
            if failover::is_output(&chunk) {
                link::mark_output(&mut self.frame);
            }
            return Ok(None);
        }
        self.frame.truncate(start);
        let message = NodeMessage::Chunk(JobChunk {
            job: self.job,
            chunk,
        });
        Ok(Some(match self.take() {
            Some(frame) => Outgoing::Together(vec![Outgoing::Binary(frame), message.into()]),
            None => message.into(),
        }))
    }

    /// Whether the frame is full enough to send.
    fn is_full(&self) -> bool {
        self.frame.len() >= EVENTS_FRAME_BYTES
    }

    /// The frame, if it holds events; the buffer starts the next one.
    fn take(&mut self) -> Option<Vec<u8>> {
        if !link::has_events(&self.frame) {
            return None;
        }
        let frame = self.frame.clone();
        link::clear_events(&mut self.frame);
        Some(frame)
    }
}

/// A job's context: its record id, consumer, deadline (counted from `started`) and `cancel`.
pub(super) fn job_context(
    request_id: &str,
    consumer: Option<&String>,
    deadline_ms: Option<u64>,
    cancel: &CancellationToken,
    started: Instant,
) -> RequestContext {
    let mut context = RequestContext::new(request_id.to_owned());
    context.consumer = consumer.cloned();
    context.cancel = cancel.clone();
    context.deadline = deadline_ms.map(|ms| started + Duration::from_millis(ms));
    context
}

/// What is known of a job when it ends.
pub(super) struct Ended {
    pub id: JobId,
    /// What is not sent yet (a whole answer's merged rest; a stream's last events and its
    /// answer): it goes right before the end, in the same write.
    pub before_end: Vec<Outgoing>,
    pub request_id: String,
    pub consumer: Option<String>,
    pub model: String,
    pub usage: Option<Usage>,
    pub first_token_ms: Option<u64>,
    pub started: Instant,
    /// The request, when the log keeps content.
    pub request: Option<serde_json::Value>,
    /// The answer's text, when the log keeps content.
    pub answer: Option<String>,
}

/// Ends a job with `outcome`: writes it to the operator's job log, warns of a failure in the
/// node's log (rate-limited, see [`FailureWarnings`]) and tells the coordinator (`done` or
/// `error`; the link may be gone already, and then there is nobody to tell).
pub(super) async fn end_job(
    ended: Ended,
    outcome: Result<(), ProviderError>,
    log: &JobLog,
    failures: &FailureWarnings,
    out: &mpsc::Sender<Outgoing>,
) {
    let total_ms = millis(ended.started.elapsed());
    if let Err(error) = &outcome {
        failures.failed(&ended.model, error);
    }
    let (status, error) = match &outcome {
        Ok(()) => ("succeeded", None),
        Err(ProviderError::Cancelled) => ("cancelled", Some(ProviderError::Cancelled.to_string())),
        Err(e) => ("failed", Some(e.to_string())),
    };
    log.record(JobLogEntry {
        time: Utc::now(),
        request_id: ended.request_id,
        consumer: ended.consumer,
        model: ended.model,
        status,
        error,
        prompt_tokens: ended.usage.as_ref().map(|u| u.prompt_tokens),
        completion_tokens: ended.usage.as_ref().map(|u| u.completion_tokens),
        first_token_ms: ended.first_token_ms,
        total_ms,
        request: ended.request,
        answer: ended.answer,
    });
    let last = match outcome {
        Ok(()) => NodeMessage::Done(JobDone {
            job: ended.id,
            usage: ended.usage,
            service: None,
            first_token_ms: ended.first_token_ms,
            total_ms,
        }),
        Err(error) => NodeMessage::Error(JobFailed {
            job: ended.id,
            error: JobError::from(&error),
        }),
    };
    let outgoing = if ended.before_end.is_empty() {
        last.into()
    } else {
        let mut all = ended.before_end;
        all.push(last.into());
        Outgoing::Together(all)
    };
    let _ = out.send(outgoing).await;
}

/// `d` in whole milliseconds.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
