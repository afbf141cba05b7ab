//! Reading an OpenAI-style server-sent event stream into chunks.

use async_stream::stream;
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use inference_club_core::openai::{ChatCompletionChunk, StreamPayload};
use inference_club_core::provider::ProviderError;

/// Largest single event accepted from an engine, in bytes.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Parses the bytes of an SSE body into chunks. Comments and keep-alives are skipped, CRLF and
/// events or characters split across reads are handled (by `eventsource-stream`); `[DONE]` ends
/// the stream; an error object inside the stream (`data: {"error": …}` or `event: error`) ends it
/// with that error; a malformed event ends it with a protocol error.
pub fn chunks<S, E>(body: S) -> impl Stream<Item = Result<ChatCompletionChunk, ProviderError>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    stream! {
        let mut events = std::pin::pin!(body.eventsource());
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    yield Err(ProviderError::Unavailable {
                        status: None,
                        message: format!("engine stream broke: {e}"),
                    });
                    return;
                }
            };
            if event.data.len() > MAX_EVENT_BYTES {
                yield Err(ProviderError::Protocol {
                    message: format!("engine sent an event of {} bytes", event.data.len()),
                });
                return;
            }
            if event.data.trim().is_empty() {
                continue;
            }
            match StreamPayload::parse(&event.data) {
                Ok(StreamPayload::Done) => return,
                Ok(StreamPayload::Chunk(chunk)) => yield Ok(*chunk),
                Ok(StreamPayload::Error(error)) => {
                    yield Err(crate::error_from_engine(None, error.message, error.code));
                    return;
                }
                Err(e) if event.event == "error" => {
                    yield Err(crate::error_from_engine(None, format!("{}: {e}", event.data), None));
                    return;
                }
                Err(e) => {
                    yield Err(ProviderError::Protocol {
                        message: format!("engine sent a malformed event: {e}"),
                    });
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(pieces: Vec<&'static [u8]>) -> Vec<Result<ChatCompletionChunk, ProviderError>> {
        let body = futures_util::stream::iter(
            pieces
                .into_iter()
                .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p))),
        );
        chunks(body).collect().await
    }

    fn text(results: &[Result<ChatCompletionChunk, ProviderError>]) -> String {
        results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter_map(|c| c.choices.first()?.delta.content.clone())
            .collect()
    }

    #[tokio::test]
    async fn crlf_comments_and_split_reads() {
        let out = parse(vec![
            b": keep-alive\r\n\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\xc3",
            b"\xa9\"}}]}\r\n",
            b"\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"}}]}\n\ndata: [DONE]\n\n",
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"after done\"}}]}\n\n",
        ])
        .await;
        assert_eq!(text(&out), "hé!");
        assert!(out.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn error_inside_the_stream_ends_it() {
        let out = parse(vec![
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
            b"data: {\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"code\":500}}\n\n",
        ])
        .await;
        assert_eq!(out.len(), 2);
        let err = out[1].as_ref().unwrap_err();
        assert!(err.to_string().contains("out of memory"), "{err}");
    }

    #[tokio::test]
    async fn malformed_event_is_a_protocol_error() {
        let out = parse(vec![b"data: {oops\n\n"]).await;
        assert!(matches!(out[0], Err(ProviderError::Protocol { .. })));
    }
}
