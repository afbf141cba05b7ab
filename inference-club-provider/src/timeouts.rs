//! The three waits of a request to an engine, and the stream guard that enforces them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use inference_club_core::openai::ChatCompletionChunk;
use inference_club_core::provider::{
    CallOutput, CallStream, ChunkStream, ProviderError, RequestContext, TimeoutPhase,
};
use inference_club_core::routing::failover::ItemStream;
use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFutureOwned;

/// How long to wait for an engine. One total timeout would kill long, healthy streams, so each
/// phase has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to the engine and receiving its response headers.
    pub connect: Duration,
    /// From the request to the first output; long, since models may reason silently first.
    pub first_token: Duration,
    /// Between two chunks once output has started.
    pub idle: Duration,
    /// From the request to the start of a whole answer, when the engine is asked for one (a
    /// consumer that takes the answer whole, [`RequestContext::whole`]): the engine sends
    /// nothing until it is complete.
    pub whole: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_token: Duration::from_secs(300),
            idle: Duration::from_secs(60),
            whole: Duration::from_secs(600),
        }
    }
}

/// Wraps an engine's chunk stream so that it ends with [`ProviderError::Timeout`] when the first
/// output or the next chunk is late, and with [`ProviderError::Cancelled`] when the context is
/// cancelled. Ending drops the inner stream, which closes the engine connection.
///
/// The first-token wait counts from `sent_at`, when the request went to the engine (so waiting
/// for response headers uses the same budget). Chunks without output (such as a role-only first
/// chunk) do not count as the first token.
pub fn guard(
    inner: ChunkStream,
    timeouts: Timeouts,
    context: &RequestContext,
    sent_at: std::time::Instant,
) -> ChunkStream {
    guard_stream(
        inner,
        timeouts,
        context,
        sent_at,
        |chunk: &ChatCompletionChunk| {
            chunk.has_output() || chunk.choices.iter().any(|c| c.finish_reason.is_some())
        },
    )
}

/// [`guard`] for the answer of a [`Provider::call`](inference_club_core::provider::Provider::call):
/// every output counts as output.
pub fn guard_call(
    inner: CallStream,
    timeouts: Timeouts,
    context: &RequestContext,
    sent_at: std::time::Instant,
) -> CallStream {
    guard_stream(inner, timeouts, context, sent_at, |_: &CallOutput| true)
}

/// [`guard`] over any stream of results, `is_output` telling which items end the wait for the
/// first output.
fn guard_stream<T: Send + 'static>(
    inner: ItemStream<T>,
    timeouts: Timeouts,
    context: &RequestContext,
    sent_at: std::time::Instant,
    is_output: fn(&T) -> bool,
) -> ItemStream<T> {
    let started = Instant::from_std(sent_at);
    let mut guard = Guard {
        inner: Some(inner),
        cancelled: Box::pin(context.cancel.clone().cancelled_owned()),
        timer: Box::pin(tokio::time::sleep_until(started)),
        timeouts,
        deadline: context.deadline.map(Instant::from_std),
        started,
        output_started: false,
        last_item: started,
        handed_out: false,
        is_output,
    };
    let (_, until) = guard.wait();
    guard.timer.as_mut().reset(until);
    Box::pin(guard)
}

/// The stream [`guard_stream`] gives: the inner stream's items, polled directly, with one timer
/// and one cancellation wait for the whole stream (not one per item). The timer is moved only
/// when it fires before the wait has really ended (items keep coming), or when the wait gets
/// shorter (output starts: the idle wait replaces the first-token one).
struct Guard<T> {
    /// `None` once the stream has ended: on every way out, the inner stream (and with it the
    /// engine connection) is dropped before the last item is handed out, since the consumer
    /// may hold this stream a while longer.
    inner: Option<ItemStream<T>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    timer: Pin<Box<tokio::time::Sleep>>,
    timeouts: Timeouts,
    deadline: Option<Instant>,
    /// When the request went to the engine: the first-token wait counts from then.
    started: Instant,
    output_started: bool,
    /// When the last item was asked for, once output has started: the idle wait counts from
    /// then (not from when it was handed out, so that a slow consumer is not an idle engine).
    last_item: Instant,
    /// An item was handed out and the next has not been asked for yet.
    handed_out: bool,
    is_output: fn(&T) -> bool,
}

impl<T> Guard<T> {
    /// Which wait runs now, and when it ends: the deadline, if sooner.
    fn wait(&self) -> (TimeoutPhase, Instant) {
        let (phase, until) = if self.output_started {
            (TimeoutPhase::Idle, self.last_item + self.timeouts.idle)
        } else {
            (
                TimeoutPhase::FirstToken,
                self.started + self.timeouts.first_token,
            )
        };
        match self.deadline.filter(|d| *d < until) {
            Some(deadline) => (TimeoutPhase::Total, deadline),
            None => (phase, until),
        }
    }
}

impl<T> Stream for Guard<T> {
    type Item = Result<T, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if std::mem::take(&mut this.handed_out) && this.output_started {
            this.last_item = Instant::now();
        }
        // Cancellation first, then the engine, then the timer.
        if this.cancelled.as_mut().poll(cx).is_ready() {
            this.inner = None;
            return Poll::Ready(Some(Err(ProviderError::Cancelled)));
        }
        match inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(item))) => {
                if !this.output_started && (this.is_output)(&item) {
                    this.output_started = true;
                    this.last_item = Instant::now();
                    let (_, until) = this.wait();
                    this.timer.as_mut().reset(until);
                }
                this.handed_out = true;
                return Poll::Ready(Some(Ok(item)));
            }
            Poll::Ready(Some(Err(error))) => {
                this.inner = None;
                return Poll::Ready(Some(Err(error)));
            }
            Poll::Ready(None) => {
                this.inner = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        while this.timer.as_mut().poll(cx).is_ready() {
            let (phase, until) = this.wait();
            if Instant::now() < until {
                this.timer.as_mut().reset(until);
                continue;
            }
            this.inner = None;
            let after = match phase {
                TimeoutPhase::Idle => this.timeouts.idle,
                _ => this.started.elapsed(),
            };
            return Poll::Ready(Some(Err(ProviderError::Timeout { phase, after })));
        }
        Poll::Pending
    }
}
