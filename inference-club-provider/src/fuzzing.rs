//! Entry points for the fuzz targets in `fuzz/` (and for tests): the provider's stream parsers,
//! driven synchronously over bytes split into the given pieces.
//!
//! Not part of the SDK's stable API: it exists so that the parsers that read what engines send
//! (server-sent events and Ollama's NDJSON) can be fuzzed without their private internals
//! becoming public. Each function feeds `pieces` to the parser as successive reads of a
//! response body and collects everything the parser yields, up to and including the first
//! error (after which the parser ends its stream).

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::Stream;
use inference_club_core::openai::ChatCompletionChunk;
use inference_club_core::provider::ProviderError;

/// What a parser made of a body: every chunk or error it yielded, in order.
pub type Parsed = Vec<Result<ChatCompletionChunk, ProviderError>>;

/// Parses `pieces` as an OpenAI-style SSE body with [`sse::chunks`](crate::sse::chunks).
pub fn sse(pieces: &[&[u8]]) -> Parsed {
    collect(crate::sse::chunks(body(pieces)))
}

/// Parses `pieces` as an Ollama `/api/chat` NDJSON body, as the
/// [`Ollama`](crate::backends::Ollama) adapter does.
pub fn ollama_ndjson(pieces: &[&[u8]]) -> Parsed {
    collect(crate::backends::ollama_chunks(
        body(pieces),
        "chatcmpl-fuzz".into(),
        "fuzz".into(),
        0,
    ))
}

fn body(
    pieces: &[&[u8]],
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static + use<> {
    let owned: Vec<Result<Bytes, std::io::Error>> = pieces
        .iter()
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    futures_util::stream::iter(owned)
}

/// Drains a stream that never waits (its source is in memory). A stream that did wait would be
/// a bug in these parsers; it ends the collection with a protocol error rather than hanging.
fn collect<S: Stream<Item = Result<ChatCompletionChunk, ProviderError>>>(stream: S) -> Parsed {
    let mut stream = pin!(stream);
    let mut context = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match stream.as_mut().poll_next(&mut context) {
            Poll::Ready(Some(item)) => out.push(item),
            Poll::Ready(None) => return out,
            Poll::Pending => {
                out.push(Err(ProviderError::Protocol {
                    message: "the parser waited on an in-memory body".into(),
                }));
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_and_ndjson_parse_split_bodies() {
        let out = sse(&[
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"con",
            b"tent\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_ok());
        let out = ollama_ndjson(&[
            b"{\"message\":{\"content\":\"h",
            b"i\"},\"done\":false}\n{\"done\":true,\"eval_count\":1}\n",
        ]);
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        assert!(!out.is_empty());
    }
}
