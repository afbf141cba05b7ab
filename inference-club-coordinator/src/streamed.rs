//! A streamed chat's answer as the coordinator forwards it: the consumer's events, ready to be
//! written out as they are, and what the record keeps of them.
//!
//! A node that knows [`Job::events`](inference_club_core::link::Job::events) writes the
//! consumer's events itself and says at the end what they added up to; the coordinator only
//! forwards them. Chunks that reach the coordinator as chunks (from an older node, through
//! another replica, or an event too large for a frame) are written here, the same way
//! ([`ConsumerEvents`]).

use axum::body::Bytes;
use futures_util::StreamExt;
use inference_club_core::openai::{ChatCompletionChunk, ConsumerEvents};
use inference_club_core::provider::{ChunkStream, ProviderError};
use inference_club_core::routing::failover::{self, ItemStream, Output};

/// A piece of a streamed chat's answer.
#[derive(Debug)]
pub(crate) enum Streamed {
    /// Events for the consumer, from the node as they are; `output` when they hold output.
    Events { sse: Bytes, output: bool },
    /// A chunk that came as a chunk, and its events for the consumer (none for a usage-only
    /// chunk the consumer did not ask for).
    Chunk {
        chunk: Box<ChatCompletionChunk>,
        sse: Bytes,
    },
    /// What everything before it added up to, for the record (it replaces what came before).
    Answer(Box<ChatCompletionChunk>),
}

impl Output for Streamed {
    fn is_output(&self) -> bool {
        match self {
            Self::Events { output, .. } => *output,
            Self::Chunk { chunk, .. } => failover::is_output(chunk),
            Self::Answer(_) => false,
        }
    }
}

/// A streamed chat's answer.
pub(crate) type StreamedAnswer = ItemStream<Streamed>;

/// `chunk` with its events for the consumer, written as `events` says.
pub(crate) fn written(
    events: &ConsumerEvents,
    mut chunk: ChatCompletionChunk,
) -> Result<Streamed, ProviderError> {
    let mut sse = Vec::new();
    events
        .write(&mut chunk, &mut sse)
        .map_err(|e| ProviderError::Protocol {
            message: format!("the coordinator could not write a chunk: {e}"),
        })?;
    Ok(Streamed::Chunk {
        chunk: Box::new(chunk),
        sse: Bytes::from(sse),
    })
}

/// A stream of chunks as a streamed answer: each chunk written here.
pub(crate) fn from_chunks(chunks: ChunkStream, events: ConsumerEvents) -> StreamedAnswer {
    Box::pin(chunks.map(move |item| item.and_then(|chunk| written(&events, chunk))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_club_core::openai::{ChunkDelta, Usage};

    #[tokio::test]
    async fn chunks_are_written_for_the_consumer_and_kept_whole_for_the_record() {
        let events = ConsumerEvents {
            completion_id: "chatcmpl-r".into(),
            include_usage: false,
        };
        let mut usage = ChatCompletionChunk::new("e", "m", 1);
        usage.usage = Some(Usage::new(2, 1));
        let chunks: ChunkStream = Box::pin(futures_util::stream::iter([
            Ok(ChatCompletionChunk::new("e", "m", 1).with_delta(ChunkDelta::content("hi"))),
            Ok(usage),
        ]));
        let pieces: Vec<_> = from_chunks(chunks, events).collect().await;
        match &pieces[..] {
            [
                Ok(first @ Streamed::Chunk { sse, .. }),
                Ok(Streamed::Chunk { chunk, sse: none }),
            ] => {
                assert!(first.is_output());
                assert!(sse.starts_with(b"data: {\"id\":\"chatcmpl-r\""));
                assert!(none.is_empty(), "usage the consumer did not ask for");
                assert_eq!(chunk.usage, Some(Usage::new(2, 1)), "the record keeps it");
            }
            other => panic!("{other:?}"),
        }
    }
}
