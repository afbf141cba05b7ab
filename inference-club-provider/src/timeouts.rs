//! The three waits of a request to an engine, and the stream guard that enforces them.

use std::pin::Pin;
use std::time::Duration;

use async_stream::stream;
use futures_util::{Stream, StreamExt};
use inference_club_core::openai::ChatCompletionChunk;
use inference_club_core::provider::{
    CallOutput, CallStream, ChunkStream, ProviderError, RequestContext, TimeoutPhase,
};

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
    inner: Pin<Box<dyn Stream<Item = Result<T, ProviderError>> + Send + 'static>>,
    timeouts: Timeouts,
    context: &RequestContext,
    sent_at: std::time::Instant,
    is_output: fn(&T) -> bool,
) -> Pin<Box<dyn Stream<Item = Result<T, ProviderError>> + Send + 'static>> {
    let cancel = context.cancel.clone();
    let deadline = context.deadline.map(tokio::time::Instant::from_std);
    Box::pin(stream! {
        let mut inner = inner;
        let started = tokio::time::Instant::from_std(sent_at);
        let first_token_by = started + timeouts.first_token;
        // When the wait for the next item ends, and which wait it is: the deadline, if sooner.
        let wait = |output_started: bool, last_item: tokio::time::Instant| {
            let (phase, until) = if output_started {
                (TimeoutPhase::Idle, last_item + timeouts.idle)
            } else {
                (TimeoutPhase::FirstToken, first_token_by)
            };
            match deadline.filter(|d| *d < until) {
                Some(deadline) => (TimeoutPhase::Total, deadline),
                None => (phase, until),
            }
        };
        let mut output_started = false;
        let mut last_item = started;
        // One timer and one cancellation wait for the whole stream, not one per item: the timer
        // is moved only when it fires before the wait has really ended (items keep coming), or
        // when the wait gets shorter (output starts: the idle wait replaces the first-token one).
        let cancelled = cancel.cancelled_owned();
        let mut cancelled = std::pin::pin!(cancelled);
        let timer = tokio::time::sleep_until(wait(false, started).1);
        let mut timer = std::pin::pin!(timer);
        loop {
            let next = tokio::select! {
                biased;
                () = &mut cancelled => None,
                next = inner.next() => Some(Ok(next)),
                () = &mut timer => {
                    let (phase, until) = wait(output_started, last_item);
                    if tokio::time::Instant::now() < until {
                        timer.as_mut().reset(until);
                        continue;
                    }
                    Some(Err(phase))
                }
            };
            // On every way out, the inner stream (and with it the engine connection) is dropped
            // before the last item is yielded: the consumer may hold this stream a while longer.
            let Some(next) = next else {
                drop(inner);
                yield Err(ProviderError::Cancelled);
                break;
            };
            match next {
                Err(phase) => {
                    drop(inner);
                    let after = match phase {
                        TimeoutPhase::Idle => timeouts.idle,
                        _ => started.elapsed(),
                    };
                    yield Err(ProviderError::Timeout { phase, after });
                    break;
                }
                Ok(None) => break,
                Ok(Some(Ok(item))) => {
                    if !output_started && is_output(&item) {
                        output_started = true;
                        last_item = tokio::time::Instant::now();
                        timer.as_mut().reset(wait(true, last_item).1);
                    }
                    yield Ok(item);
                    if output_started {
                        last_item = tokio::time::Instant::now();
                    }
                }
                Ok(Some(Err(error))) => {
                    drop(inner);
                    yield Err(error);
                    break;
                }
            }
        }
    })
}
