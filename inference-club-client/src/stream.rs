//! Streamed answers: the chunks as they arrive, with the stream's timeouts, and the typed events
//! built on them.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use inference_club_core::openai::{
    ChatCompletionAggregator, ChatCompletionChunk, FinishReason, StreamPayload, ToolCallDelta,
    Usage,
};
use tokio::time::Instant;

use crate::client::ChatResponse;
use crate::error::{Error, TimeoutPhase};

type ChunkStream = EventStream<ChatCompletionChunk>;

/// A streamed chat answer: a [`Stream`] of [`ChatCompletionChunk`]s as they arrive (content and
/// reasoning deltas, tool-call deltas, and usage in the last chunk).
///
/// An error the coordinator sends inside the stream is an error of the stream
/// ([`Error::InStream`]), never a silent end; so is a timeout between chunks. After the stream
/// has ended, [`usage`](Self::usage) and [`finish_reason`](Self::finish_reason) hold what it
/// reported; [`record_id`](Self::record_id) names its record from the start. For typed events
/// (`Content`, `Reasoning`, `ToolCall`, … `Done`) use [`events`](Self::events); to wait for the
/// whole answer use [`collect_completion`](Self::collect_completion).
pub struct ChatStream {
    record_id: Option<String>,
    inner: ChunkStream,
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
    finished: bool,
}

impl ChatStream {
    pub(crate) fn new(record_id: Option<String>, inner: ChunkStream) -> Self {
        Self {
            record_id,
            inner,
            usage: None,
            finish_reason: None,
            finished: false,
        }
    }

    /// The record's id (`x-club-request-id`): fetch, share or delete the request with it.
    pub fn record_id(&self) -> Option<String> {
        self.record_id.clone()
    }

    /// The token counts the stream reported (known once it has ended).
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Why generation stopped (known once the last choice chunk arrived).
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish_reason.as_ref()
    }

    /// Whether the stream has ended (with `[DONE]` or an error).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The same stream as typed events, ending with [`ChatEvent::Done`].
    pub fn events(self) -> ChatEvents {
        ChatEvents {
            stream: self,
            pending: std::collections::VecDeque::new(),
            done: false,
        }
    }

    /// Waits for the whole answer and assembles it into one completion.
    pub async fn collect_completion(mut self) -> Result<ChatResponse, Error> {
        let mut aggregate = ChatCompletionAggregator::new();
        while let Some(chunk) = self.next().await {
            aggregate.push(&chunk?);
        }
        Ok(ChatResponse {
            completion: aggregate.finish(),
            record_id: self.record_id,
        })
    }
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("record_id", &self.record_id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatCompletionChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(usage) = &chunk.usage {
                    self.usage = Some(usage.clone());
                }
                if let Some(reason) = chunk.choices.iter().find_map(|c| c.finish_reason.clone()) {
                    self.finish_reason = Some(reason);
                }
            }
            Poll::Ready(Some(Err(_)) | None) => self.finished = true,
            Poll::Pending => {}
        }
        polled
    }
}

/// One typed event of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChatEvent {
    /// Answer text.
    Content(String),
    /// Reasoning trace text (shown before the answer by reasoning models).
    Reasoning(String),
    /// Refusal text.
    Refusal(String),
    /// A piece of a tool call (pieces with the same `index` make one call).
    ToolCall(ToolCallDelta),
    /// Why generation stopped.
    Finish(FinishReason),
    /// The last event: the record's id and the token counts.
    Done {
        /// The record's id.
        record_id: Option<String>,
        /// The token counts, when the engine reported them.
        usage: Option<Usage>,
    },
}

/// A [`ChatStream`] as typed [`ChatEvent`]s (from [`ChatStream::events`]).
pub struct ChatEvents {
    stream: ChatStream,
    pending: std::collections::VecDeque<ChatEvent>,
    done: bool,
}

impl ChatEvents {
    /// The record's id.
    pub fn record_id(&self) -> Option<String> {
        self.stream.record_id()
    }
}

impl std::fmt::Debug for ChatEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatEvents")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Stream for ChatEvents {
    type Item = Result<ChatEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.stream).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    let done = ChatEvent::Done {
                        record_id: self.stream.record_id(),
                        usage: self.stream.usage().cloned(),
                    };
                    return Poll::Ready(Some(Ok(done)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
                        let delta = choice.delta;
                        let pending = &mut self.pending;
                        if let Some(text) = delta.reasoning.filter(|t| !t.is_empty()) {
                            pending.push_back(ChatEvent::Reasoning(text));
                        }
                        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                            pending.push_back(ChatEvent::Content(text));
                        }
                        if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
                            pending.push_back(ChatEvent::Refusal(text));
                        }
                        for call in delta.tool_calls.unwrap_or_default() {
                            pending.push_back(ChatEvent::ToolCall(call));
                        }
                        if let Some(reason) = choice.finish_reason {
                            pending.push_back(ChatEvent::Finish(reason));
                        }
                    }
                }
            }
        }
    }
}

/// The waits of one stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamTimeouts {
    /// When the request was sent.
    pub started: Instant,
    /// From `started` to the first output.
    pub first_token: Option<Duration>,
    /// Between chunks once output has started.
    pub idle: Option<Duration>,
    /// From `started` to the end.
    pub request: Option<Duration>,
}

impl StreamTimeouts {
    /// The wait that runs out first from `now`, given whether output has started.
    fn next_deadline(
        &self,
        seen_output: bool,
        now: Instant,
    ) -> Option<(Instant, TimeoutPhase, Duration)> {
        let mut best: Option<(Instant, TimeoutPhase, Duration)> = None;
        let mut consider = |at: Instant, phase, after| {
            if best.is_none_or(|(b, _, _)| at < b) {
                best = Some((at, phase, after));
            }
        };
        if let Some(limit) = self.request {
            consider(self.started + limit, TimeoutPhase::Request, limit);
        }
        if seen_output {
            if let Some(limit) = self.idle {
                consider(now + limit, TimeoutPhase::Idle, limit);
            }
        } else if let Some(limit) = self.first_token {
            consider(self.started + limit, TimeoutPhase::FirstToken, limit);
        }
        best
    }

    /// The deadline for the response headers: the first token or the whole request.
    pub(crate) fn header_deadline(&self) -> Option<(Instant, TimeoutPhase, Duration)> {
        self.next_deadline(false, self.started)
    }
}

/// The longest single line of an event stream accepted (a runaway server cannot fill memory).
pub(crate) const MAX_SSE_LINE_BYTES: usize = 16 * 1024 * 1024;

/// What one `data:` of an event stream holds, as a stream's parser reads it.
pub(crate) enum Event<T> {
    /// An item, and whether it carries output (which starts the idle timeout).
    Item(T, bool),
    /// An error sent inside the stream (`{"error": {...}}`).
    Error(inference_club_core::openai::ApiError),
    /// `[DONE]`: the end.
    Done,
}

/// A stream of items of type `T`, read from an event stream.
pub(crate) type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Error>> + Send>>;

/// Turns a response body into chunks: `[DONE]` ends, an error object is an error of the
/// stream, anything malformed is a decode error, and the waits of `timeouts` apply.
pub(crate) fn chunks<B>(body: B, timeouts: StreamTimeouts) -> ChunkStream
where
    B: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    events(body, timeouts, |data| {
        Ok(match StreamPayload::parse(data)? {
            StreamPayload::Done => Event::Done,
            StreamPayload::Chunk(chunk) => {
                let output = chunk.has_output();
                Event::Item(*chunk, output)
            }
            StreamPayload::Error(error) => Event::Error(error),
        })
    })
}

/// Turns a response body into the items `parse` reads from each event's data: `[DONE]` ends, an
/// error object is an error of the stream, anything malformed is a decode error, and the waits
/// of `timeouts` apply (the first-token wait until an item carries output, then the idle wait).
pub(crate) fn events<B, T>(
    body: B,
    timeouts: StreamTimeouts,
    parse: fn(&str) -> Result<Event<T>, serde_json::Error>,
) -> EventStream<T>
where
    B: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
    T: Send + 'static,
{
    let mut line = 0usize;
    let limited = body.map(move |piece| {
        let piece = piece.map_err(|e| Error::from_reqwest(e, None))?;
        match piece.iter().rposition(|b| *b == b'\n') {
            Some(at) => line = piece.len() - at - 1,
            None => line += piece.len(),
        }
        if line > MAX_SSE_LINE_BYTES {
            return Err(Error::decode(
                format!("an event stream line longer than {MAX_SSE_LINE_BYTES} bytes"),
                None,
            ));
        }
        Ok(piece)
    });
    let events = Box::pin(limited.eventsource());
    let state = Some((events, false));
    Box::pin(futures_util::stream::unfold(
        state,
        move |state| async move {
            let (mut events, mut seen_output) = state?;
            let next = match timeouts.next_deadline(seen_output, Instant::now()) {
                Some((deadline, phase, after)) => {
                    match tokio::time::timeout_at(deadline, events.next()).await {
                        Ok(next) => next,
                        Err(_) => return Some((Err(Error::Timeout { phase, after }), None)),
                    }
                }
                None => events.next().await,
            };
            match next {
                None => Some((
                    Err(Error::transport(
                        "the stream ended without [DONE]: the connection was cut",
                    )),
                    None,
                )),
                Some(Err(eventsource_stream::EventStreamError::Transport(e))) => {
                    Some((Err(e), None))
                }
                Some(Err(e)) => Some((Err(Error::decode(e.to_string(), Some(Box::new(e)))), None)),
                Some(Ok(event)) => match parse(&event.data) {
                    Ok(Event::Done) => None,
                    Ok(Event::Item(item, output)) => {
                        seen_output |= output;
                        Some((Ok(item), Some((events, seen_output))))
                    }
                    Ok(Event::Error(error)) => Some((Err(Error::InStream(error)), None)),
                    Err(e) => Some((Err(Error::decode(e.to_string(), Some(Box::new(e)))), None)),
                },
            }
        },
    ))
}
