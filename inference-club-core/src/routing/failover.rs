//! Failover before the first output: read a provider's stream until it produces output, so that
//! an error before then can be retried elsewhere, and hand the caller the whole stream after.
//!
//! Used by the node's `Router` (in `inference-club-provider`) across backends and by the coordinator across
//! nodes: the rule is written once.

use std::pin::Pin;

use crate::openai::ChatCompletionChunk;
use crate::provider::{CallOutput, CallStream, ProviderError};
use futures_util::{Stream, StreamExt};

/// A provider's stream of `T`: chat chunks ([`ChunkStream`](crate::provider::ChunkStream)),
/// or what else a caller reads ahead for failover.
pub type ItemStream<T> = Pin<Box<dyn Stream<Item = Result<T, ProviderError>> + Send + 'static>>;

/// What a stream read ahead for failover carries: whether an item counts as output.
pub trait Output {
    /// Whether failover is over once this item is read (see [`is_output`] for chunks).
    fn is_output(&self) -> bool;
}

impl Output for ChatCompletionChunk {
    fn is_output(&self) -> bool {
        is_output(self)
    }
}

/// The most chunks without output (role-only or usage-only chunks) read ahead while waiting for
/// the first output. Failover is only possible before output; beyond this many chunks the
/// stream is handed over as it is.
pub const MAX_CHUNKS_BEFORE_OUTPUT: usize = 16;

/// A provider's stream read up to its first output.
pub struct Opened<T = ChatCompletionChunk> {
    /// The items read so far; the last one is the first output, if `output_started`.
    read: Vec<T>,
    /// The rest of the stream; `None` when it already ended.
    rest: Option<ItemStream<T>>,
    output_started: bool,
}

impl<T: Send + Unpin + 'static> Opened<T> {
    /// Whether output has started (otherwise the stream ended, or sent many chunks without
    /// output).
    pub fn output_started(&self) -> bool {
        self.output_started
    }

    /// The stream handed to the caller: the chunks read ahead, then the rest, holding `guard`
    /// (a capacity slot, say) until the stream ends or is dropped.
    ///
    /// The rest of the stream is always dropped before `guard`, whether the stream was read or
    /// dropped unpolled, so a slot is never free while the engine still runs its request. Each
    /// item of the rest is handed on as it is polled, with no task or generator in between.
    pub fn into_stream<G: Send + 'static>(self, guard: G) -> ItemStream<T> {
        let Self { read, rest, .. } = self;
        Box::pin(Handed {
            read: read.into_iter(),
            held: Some(Guarded {
                rest,
                _guard: Box::new(guard),
            }),
        })
    }
}

/// The stream [`Opened::into_stream`] gives: the items read ahead, then the rest, with its
/// guard until the end.
struct Handed<T, G> {
    read: std::vec::IntoIter<T>,
    /// `None` once the stream has ended: the rest and the guard are dropped then.
    held: Option<Guarded<T, G>>,
}

impl<T: Unpin, G> Stream for Handed<T, G> {
    type Item = Result<T, ProviderError>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(item) = this.read.next() {
            return std::task::Poll::Ready(Some(Ok(item)));
        }
        let polled = match this.held.as_mut().and_then(|held| held.rest.as_mut()) {
            Some(rest) => rest.as_mut().poll_next(cx),
            None => std::task::Poll::Ready(None),
        };
        if let std::task::Poll::Ready(None) = polled {
            this.held = None;
        }
        polled
    }
}

/// A stream and the guard that must outlive it: fields drop in declaration order, so `rest`
/// goes first. (The guard is boxed so that the stream is `Unpin` whatever the guard is.)
struct Guarded<T, G> {
    rest: Option<ItemStream<T>>,
    _guard: Box<G>,
}

/// Whether a chunk counts as output: content, reasoning, refusal, a tool call, or a finish reason.
pub fn is_output(chunk: &ChatCompletionChunk) -> bool {
    chunk.has_output() || chunk.choices.iter().any(|c| c.finish_reason.is_some())
}

/// Reads `chunks` until the first output, its end, or [`MAX_CHUNKS_BEFORE_OUTPUT`] items
/// without output. An error before any output is returned as `Err`, so the caller may fail over.
pub async fn read_until_output<T: Output>(
    mut chunks: ItemStream<T>,
) -> Result<Opened<T>, ProviderError> {
    let mut read = Vec::new();
    loop {
        match chunks.next().await {
            None => {
                return Ok(Opened {
                    read,
                    rest: None,
                    output_started: false,
                });
            }
            Some(Err(error)) => return Err(error),
            Some(Ok(chunk)) => {
                let output_started = chunk.is_output();
                read.push(chunk);
                if output_started || read.len() >= MAX_CHUNKS_BEFORE_OUTPUT {
                    return Ok(Opened {
                        read,
                        rest: Some(chunks),
                        output_started,
                    });
                }
            }
        }
    }
}

/// A call's stream read up to its first output ([`call_until_output`]).
pub struct OpenedCall {
    first: Option<CallOutput>,
    rest: CallStream,
}

impl OpenedCall {
    /// Whether the call produced output (otherwise it ended without any).
    pub fn output_started(&self) -> bool {
        self.first.is_some()
    }

    /// The stream handed to the caller: the first output, then the rest, holding `guard` until
    /// the stream ends or is dropped (the rest always dropped first, as for
    /// [`Opened::into_stream`]).
    pub fn into_stream<G: Send + 'static>(self, guard: G) -> CallStream {
        let Self { first, rest } = self;
        let output_started = first.is_some();
        Opened {
            read: first.into_iter().collect(),
            rest: output_started.then_some(rest),
            output_started,
        }
        .into_stream(guard)
    }
}

/// Reads a call's stream up to its first output (every output of a call counts). An error
/// before it is returned as `Err`, so the caller may fail over.
pub async fn call_until_output(mut outputs: CallStream) -> Result<OpenedCall, ProviderError> {
    match outputs.next().await {
        Some(Err(error)) => Err(error),
        first => Ok(OpenedCall {
            first: first.and_then(Result::ok),
            rest: outputs,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ChunkStream;
    use async_stream::stream;
    use std::sync::{Arc, Mutex};

    /// Notes its name in a shared list when dropped.
    struct Noted(&'static str, Arc<Mutex<Vec<&'static str>>>);

    impl Drop for Noted {
        fn drop(&mut self) {
            if let Ok(mut dropped) = self.1.lock() {
                dropped.push(self.0);
            }
        }
    }

    /// A stream that stays open, holding `noted` until it is dropped.
    fn open_stream(noted: Noted) -> ChunkStream {
        Box::pin(stream! {
            let _noted = noted;
            futures_util::future::pending::<()>().await;
            yield Err(ProviderError::Cancelled);
        })
    }

    fn opened(rest: ChunkStream) -> Opened {
        Opened {
            read: Vec::new(),
            rest: Some(rest),
            output_started: true,
        }
    }

    /// The guard is a capacity slot: released before the engine's stream is gone, another
    /// request could start on the engine while this one still runs there.
    #[tokio::test]
    async fn the_guard_outlives_the_rest_of_the_stream_whether_polled_or_not() {
        for poll_first in [false, true] {
            let dropped = Arc::new(Mutex::new(Vec::new()));
            let rest = open_stream(Noted("engine stream", dropped.clone()));
            let mut stream = opened(rest).into_stream(Noted("guard", dropped.clone()));
            if poll_first {
                let polled =
                    tokio::time::timeout(std::time::Duration::from_millis(10), stream.next()).await;
                assert!(polled.is_err(), "the stream should still be open");
            }
            drop(stream);
            assert_eq!(
                *dropped.lock().unwrap(),
                ["engine stream", "guard"],
                "polled first: {poll_first}"
            );
        }
    }

    /// A stream read to its end lets go of the engine's stream and then the slot at once, not
    /// when the caller drops it; the items read ahead come first.
    #[tokio::test]
    async fn a_stream_read_to_its_end_releases_the_rest_and_then_the_guard() {
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let noted = Noted("engine stream", dropped.clone());
        let rest: ChunkStream = Box::pin(stream! {
            let _noted = noted;
            yield Ok(ChatCompletionChunk::new("rest", "m", 0));
        });
        let ahead = ChatCompletionChunk::new("read ahead", "m", 0);
        let opened = Opened {
            read: vec![ahead],
            rest: Some(rest),
            output_started: true,
        };
        let mut stream = opened.into_stream(Noted("guard", dropped.clone()));
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.id, "read ahead");
        assert!(stream.next().await.unwrap().is_ok());
        assert!(
            dropped.lock().unwrap().is_empty(),
            "the stream has not ended yet"
        );
        assert!(stream.next().await.is_none());
        assert_eq!(*dropped.lock().unwrap(), ["engine stream", "guard"]);
        assert!(stream.next().await.is_none(), "an ended stream stays ended");
    }
}
