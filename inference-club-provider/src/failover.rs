//! Failover before the first output: read a provider's stream until it produces output, so that
//! an error before then can be retried elsewhere, and hand the caller the whole stream after.
//!
//! Used by the node's [`Router`](crate::Router) across backends and by the coordinator across
//! nodes: the rule is written once.

use async_stream::stream;
use futures_util::StreamExt;
use inference_club_core::openai::ChatCompletionChunk;
use inference_club_core::provider::{ChunkStream, ProviderError};

/// The most chunks without output (role-only or usage-only chunks) read ahead while waiting for
/// the first output. Failover is only possible before output; beyond this many chunks the
/// stream is handed over as it is.
pub const MAX_CHUNKS_BEFORE_OUTPUT: usize = 16;

/// A provider's stream read up to its first output.
pub struct Opened {
    /// The chunks read so far; the last one is the first output, if `output_started`.
    read: Vec<ChatCompletionChunk>,
    /// The rest of the stream; `None` when it already ended.
    rest: Option<ChunkStream>,
    output_started: bool,
}

impl Opened {
    /// Whether output has started (otherwise the stream ended, or sent many chunks without
    /// output).
    pub fn output_started(&self) -> bool {
        self.output_started
    }

    /// The stream handed to the caller: the chunks read ahead, then the rest, holding `guard`
    /// (a capacity slot, say) until the stream ends or is dropped.
    pub fn into_stream<G: Send + 'static>(self, guard: G) -> ChunkStream {
        let Self { read, rest, .. } = self;
        Box::pin(stream! {
            let _guard = guard;
            for chunk in read {
                yield Ok(chunk);
            }
            if let Some(mut rest) = rest {
                while let Some(item) = rest.next().await {
                    yield item;
                }
            }
        })
    }
}

/// Whether a chunk counts as output: content, reasoning, refusal, a tool call, or a finish reason.
pub fn is_output(chunk: &ChatCompletionChunk) -> bool {
    chunk.has_output() || chunk.choices.iter().any(|c| c.finish_reason.is_some())
}

/// Reads `chunks` until the first output, its end, or [`MAX_CHUNKS_BEFORE_OUTPUT`] chunks
/// without output. An error before any output is returned as `Err`, so the caller may fail over.
pub async fn read_until_output(mut chunks: ChunkStream) -> Result<Opened, ProviderError> {
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
                let output_started = is_output(&chunk);
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
