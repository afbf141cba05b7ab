//! Reading an OpenAI-style server-sent event stream into chunks.
//!
//! The event stream is decoded here rather than by a general-purpose crate: the decoder must be
//! linear in the bytes received however they are split into reads, and bounded in memory,
//! whatever an engine sends (fuzzing found `eventsource-stream` quadratic on an event that
//! arrives in many small reads: 74 s of CPU for a 60 KB event read a byte at a time, and it
//! buffers a line without end with no limit).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use inference_club_core::openai::{ChatCompletionChunk, StreamPayload};
use inference_club_core::provider::ProviderError;
use serde_json::Value;

/// Largest single event accepted from an engine, in bytes.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Parses the bytes of an SSE body into chunks. Comments and keep-alives are skipped, CRLF, CR
/// and LF line ends and events or characters split across reads are handled; `[DONE]` ends
/// the stream; an error object inside the stream (`data: {"error": …}` or `event: error`) ends it
/// with that error; a malformed event (or one larger than [`MAX_EVENT_BYTES`]) ends it with a
/// protocol error. An event not ended by a blank line when the body ends is dropped, as the
/// SSE standard says.
pub fn chunks<S, E>(body: S) -> impl Stream<Item = Result<ChatCompletionChunk, ProviderError>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    decode(body, |event| match StreamPayload::parse(event.data) {
        Ok(StreamPayload::Done) => Step::End,
        Ok(StreamPayload::Chunk(chunk)) => Step::Yield(*chunk),
        Ok(StreamPayload::Error(error)) => {
            Step::Fail(crate::error_from_engine(None, error.message, error.code))
        }
        Err(e) if event.error => Step::Fail(crate::error_from_engine(
            None,
            format!("{}: {e}", event.data),
            None,
        )),
        Err(e) => Step::Fail(ProviderError::Protocol {
            message: format!("engine sent a malformed event: {e}"),
        }),
    })
}

/// Parses the bytes of an SSE body into the JSON value of each event's data, by the rules of
/// [`chunks`]: for the streamed answers of endpoints other than chat (text completions, the
/// Responses API's events), whatever their shape. An error object
/// (`data: {"error": …}`) or an `event: error` ends the stream with that error.
pub fn values<S, E>(body: S) -> impl Stream<Item = Result<Value, ProviderError>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    decode(body, |event| {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Step::End;
        }
        match serde_json::from_str::<Value>(data) {
            Ok(value) => match error_message(&value) {
                Some(message) => {
                    Step::Fail(crate::error_from_engine(None, message, error_code(&value)))
                }
                None if event.error => {
                    Step::Fail(crate::error_from_engine(None, data.to_owned(), None))
                }
                None => Step::Yield(value),
            },
            Err(_) if event.error => {
                Step::Fail(crate::error_from_engine(None, data.to_owned(), None))
            }
            Err(e) => Step::Fail(ProviderError::Protocol {
                message: format!("engine sent a malformed event: {e}"),
            }),
        }
    })
}

/// What one event means to the stream being read.
enum Step<T> {
    Yield(T),
    End,
    Fail(ProviderError),
}

/// Decodes an SSE body, giving each event with data to `interpret`.
fn decode<S, E, T>(
    body: S,
    interpret: impl FnMut(&Event<'_>) -> Step<T> + Send + Unpin + 'static,
) -> impl Stream<Item = Result<T, ProviderError>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
    T: Send + 'static,
{
    Decode {
        body: Some(Box::pin(body)),
        decoder: EventDecoder::default(),
        events: Events::default(),
        next: 0,
        broken: None,
        interpret,
    }
}

/// The stream [`decode`] gives, polled directly: the events of each piece of the body are
/// interpreted one by one as they are asked for.
struct Decode<S, F> {
    /// `None` once the stream has ended (the body, and with it the engine's connection, is
    /// dropped then).
    body: Option<Pin<Box<S>>>,
    decoder: EventDecoder,
    /// The events decoded from the last piece; those from `next` on are still to be read.
    events: Events,
    next: usize,
    /// The decoder's error on the last piece, given after the events before it.
    broken: Option<ProviderError>,
    interpret: F,
}

impl<S, F> Decode<S, F> {
    /// Ends the stream, giving `last` as its last item.
    fn end<T>(&mut self, last: Option<T>) -> Poll<Option<T>> {
        self.body = None;
        self.events.clear();
        self.next = 0;
        self.broken = None;
        Poll::Ready(last)
    }
}

impl<S, E, F, T> Stream for Decode<S, F>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
    F: FnMut(&Event<'_>) -> Step<T> + Unpin,
{
    type Item = Result<T, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // Once ended, nothing is left to read and there is no body: `None` below.
            while let Some(event) = this.events.get(this.next) {
                this.next += 1;
                if event.data.trim().is_empty() {
                    continue;
                }
                match (this.interpret)(&event) {
                    Step::Yield(item) => return Poll::Ready(Some(Ok(item))),
                    Step::End => return this.end(None),
                    Step::Fail(error) => return this.end(Some(Err(error))),
                }
            }
            this.events.clear();
            this.next = 0;
            if let Some(error) = this.broken.take() {
                return this.end(Some(Err(error)));
            }
            let Some(body) = this.body.as_mut() else {
                return Poll::Ready(None);
            };
            match body.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return this.end(None),
                Poll::Ready(Some(Err(e))) => {
                    return this.end(Some(Err(ProviderError::Unavailable {
                        status: None,
                        message: format!("engine stream broke: {e}"),
                    })));
                }
                Poll::Ready(Some(Ok(piece))) => {
                    this.broken = this.decoder.push(&piece, &mut this.events).err();
                }
            }
        }
    }
}

/// The message of an error object sent as an event (`{"error": {"message": …}}` or
/// `{"error": "…"}`).
fn error_message(value: &Value) -> Option<String> {
    match value.get("error")? {
        Value::Null => None,
        Value::String(message) => Some(message.clone()),
        error => Some(
            error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned),
        ),
    }
}

/// The code of an error object sent as an event, as text.
fn error_code(value: &Value) -> Option<String> {
    match value.get("error")?.get("code")? {
        Value::Null => None,
        Value::String(code) => Some(code.clone()),
        other => Some(other.to_string()),
    }
}

/// One dispatched event, as the stream's reader sees it: its data (the `data:` lines joined with
/// `\n`) and whether its type is `error` (`message` unless an `event:` line said otherwise; no
/// other type means anything here).
#[derive(Debug, PartialEq, Eq)]
struct Event<'a> {
    error: bool,
    data: &'a str,
}

/// The events decoded from one piece of the body: their data side by side in one buffer, so that
/// an event costs no allocation of its own. Cleared for the next piece, the buffers kept.
#[derive(Debug, Default)]
struct Events {
    text: String,
    /// Each event: whether its type is `error`, and where its data lies in `text`.
    spans: Vec<(bool, std::ops::Range<usize>)>,
}

impl Events {
    fn push(&mut self, error: bool, data: &str) {
        let start = self.text.len();
        self.text.push_str(data);
        self.spans.push((error, start..self.text.len()));
    }

    /// Event `index`, if there is one.
    fn get(&self, index: usize) -> Option<Event<'_>> {
        let (error, range) = self.spans.get(index)?;
        Some(Event {
            error: *error,
            data: self.text.get(range.clone())?,
        })
    }

    fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
    }
}

/// The SSE decoder: bytes in, events out, following the HTML standard's rules (lines end in
/// CRLF, LF or CR; a leading BOM is skipped; `:` starts a comment; one space after a field's
/// colon is dropped; `id`, `retry` and unknown fields are ignored; an event without data is not
/// dispatched). Each byte is looked at once, and at most [`MAX_EVENT_BYTES`] are held.
#[derive(Debug, Default)]
struct EventDecoder {
    /// The current line, not yet ended (a line that ends in the piece it starts in is read where
    /// it is, not copied).
    line: Vec<u8>,
    /// The last line ended with CR: a LF right after it belongs to the same line end.
    after_cr: bool,
    /// Whether the start of the stream (and a BOM there) is behind.
    started: bool,
    /// The first bytes, held until there are enough to tell a BOM.
    start: Vec<u8>,
    /// The data of the event being built, each `data:` line followed by `\n`.
    data: String,
    /// Whether the event being built is of type `error`.
    error: bool,
    /// Whether it has a `data:` line.
    has_data: bool,
}

impl EventDecoder {
    /// Decodes `bytes`, appending every event they complete to `out`.
    fn push(&mut self, bytes: &[u8], out: &mut Events) -> Result<(), ProviderError> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        if self.started {
            return self.feed(bytes, out);
        }
        // The first bytes are held until it is clear whether the stream starts with a BOM (no
        // event fits in fewer bytes than a BOM, so none is lost by waiting).
        self.start.extend_from_slice(bytes);
        if self.start.len() < BOM.len() {
            return Ok(());
        }
        self.started = true;
        let start = std::mem::take(&mut self.start);
        self.feed(start.strip_prefix(BOM).unwrap_or(&start), out)
    }

    fn feed(&mut self, mut bytes: &[u8], out: &mut Events) -> Result<(), ProviderError> {
        while !bytes.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[0] == b'\n' {
                    bytes = &bytes[1..];
                    continue;
                }
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) else {
                self.extend_line(bytes)?;
                break;
            };
            let line = &bytes[..end];
            self.after_cr = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if self.line.is_empty() {
                if line.len() > MAX_EVENT_BYTES {
                    return Err(too_large());
                }
                self.line_ended(line, out)?;
            } else {
                self.extend_line(line)?;
                let held = std::mem::take(&mut self.line);
                let ended = self.line_ended(&held, out);
                // Keep the line's allocation for the next one.
                self.line = held;
                self.line.clear();
                ended?;
            }
        }
        Ok(())
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), ProviderError> {
        if self.line.len() + bytes.len() > MAX_EVENT_BYTES {
            return Err(too_large());
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// Takes in one whole line, appending the event it completes, if any, to `out`.
    fn line_ended(&mut self, line: &[u8], out: &mut Events) -> Result<(), ProviderError> {
        if line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                let data = self.data.strip_suffix('\n').unwrap_or(&self.data);
                out.push(self.error, data);
            }
            self.data.clear();
            self.error = false;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|e| ProviderError::Protocol {
            message: format!("engine sent an event that is not UTF-8: {e}"),
        })?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                    return Err(too_large());
                }
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.error = value == "error",
            _ => {}
        }
        Ok(())
    }
}

fn too_large() -> ProviderError {
    ProviderError::Protocol {
        message: format!("engine sent an event larger than {MAX_EVENT_BYTES} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

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
    async fn values_are_any_json_and_end_at_done_or_an_error() {
        let read = |pieces: Vec<&'static [u8]>| {
            let body = futures_util::stream::iter(
                pieces
                    .into_iter()
                    .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p))),
            );
            values(body).collect::<Vec<_>>()
        };
        let out = read(vec![
            b"event: response.created\r\ndata: {\"type\":\"response.cre",
            b"ated\"}\r\n\r\ndata: {\"choices\":[{\"text\":\"hi\"}]}\n\ndata: [DONE]\n\ndata: {}\n\n",
        ])
        .await;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap()["type"], "response.created");
        assert_eq!(out[1].as_ref().unwrap()["choices"][0]["text"], "hi");
        let out = read(vec![
            b"data: {\"a\":1}\n\ndata: {\"error\":{\"message\":\"boom\",\"code\":\"x\"}}\n\ndata: {\"b\":2}\n\n",
        ])
        .await;
        assert_eq!(out.len(), 2);
        assert!(out[1].as_ref().unwrap_err().to_string().contains("boom"));
        let out = read(vec![b"event: error\ndata: not json\n\n"]).await;
        assert!(
            out[0]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("not json")
        );
        let out = read(vec![b"data: {oops\n\n"]).await;
        assert!(matches!(out[0], Err(ProviderError::Protocol { .. })));
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

    /// An error ends the stream for good, even when the same read also broke the decoder: one
    /// error, then nothing more however often it is polled.
    #[tokio::test]
    async fn a_stream_ended_by_an_error_gives_nothing_after_it() {
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(
            b"data: {\"error\":{\"message\":\"boom\"}}\n\ndata: \xff\n",
        ))]);
        let mut stream = std::pin::pin!(chunks(body));
        let first = stream.next().await.unwrap().unwrap_err();
        assert!(first.to_string().contains("boom"), "{first}");
        assert!(stream.next().await.is_none());
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn malformed_event_is_a_protocol_error() {
        let out = parse(vec![b"data: {oops\n\n"]).await;
        assert!(matches!(out[0], Err(ProviderError::Protocol { .. })));
    }
}
