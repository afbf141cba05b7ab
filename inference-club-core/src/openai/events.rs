//! A streamed chat as its consumer gets it: server-sent events `data: {chunk}`, each chunk
//! carrying the record's completion id, usage only when the consumer asked for it.
//!
//! Written once, where the chunks are read: by the provider node for the events it sends
//! ready for the consumer, and by the coordinator for chunks that reach it as chunks.

use serde::{Deserialize, Serialize};

use super::{ChatCompletionChunk, StreamPayload};

/// How the chunks of one streamed chat are written for its consumer.
///
/// ```
/// use inference_club_core::openai::{ChatCompletionChunk, ChunkDelta, ConsumerEvents};
///
/// let events = ConsumerEvents { completion_id: "chatcmpl-1".into(), include_usage: false };
/// let mut out = Vec::new();
/// let mut chunk = ChatCompletionChunk::new("engine-id", "m", 7).with_delta(ChunkDelta::content("Hi"));
/// assert!(events.write(&mut chunk, &mut out)?);
/// let text = String::from_utf8(out.clone()).unwrap();
/// assert!(text.starts_with("data: {\"id\":\"chatcmpl-1\"") && text.ends_with("}\n\n"));
/// assert_eq!(ConsumerEvents::chunks_of(&out).count(), 1);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerEvents {
    /// The id every chunk carries (`chatcmpl-…`, derived from the record's id).
    pub completion_id: String,
    /// Whether the consumer asked for usage (`stream_options.include_usage`): otherwise it is
    /// left out of every chunk, and a usage-only chunk is not written at all.
    #[serde(default)]
    pub include_usage: bool,
}

impl ConsumerEvents {
    /// Appends `chunk` to `out` as the consumer's event, giving it the completion id first.
    /// `Ok(false)`: nothing for the consumer (a usage-only chunk it did not ask for). On the
    /// serializer's error nothing is appended. The chunk keeps its usage.
    pub fn write(
        &self,
        chunk: &mut ChatCompletionChunk,
        out: &mut Vec<u8>,
    ) -> Result<bool, serde_json::Error> {
        if chunk.id != self.completion_id {
            chunk.id.clone_from(&self.completion_id);
        }
        if self.include_usage {
            return write_data_event(out, chunk).map(|()| true);
        }
        if chunk.choices.is_empty() {
            return Ok(false);
        }
        let usage = chunk.usage.take();
        let written = write_data_event(out, chunk);
        chunk.usage = usage;
        written.map(|()| true)
    }

    /// The chunks of events written by [`ConsumerEvents::write`], read back (an event that is
    /// not a chunk is skipped): how a stream cut short is folded into its record.
    pub fn chunks_of(sse: &[u8]) -> impl Iterator<Item = ChatCompletionChunk> + '_ {
        lines(sse)
            .filter_map(|line| line.strip_prefix(b"data: "))
            .filter_map(|data| std::str::from_utf8(data).ok())
            .filter_map(|data| match StreamPayload::parse(data) {
                Ok(StreamPayload::Chunk(chunk)) => Some(*chunk),
                _ => None,
            })
    }

    /// Whether `sse` is nothing but whole events of the form [`ConsumerEvents::write`] writes:
    /// lines `data: {…}`, each followed by an empty line. What a coordinator checks before it
    /// forwards a node's events to a consumer as they are.
    pub fn are_whole_events(sse: &[u8]) -> bool {
        let Some(body) = sse.strip_suffix(b"\n\n") else {
            return false;
        };
        lines(body).enumerate().all(|(n, line)| match n % 2 {
            0 => line.starts_with(b"data: {") && line.ends_with(b"}"),
            _ => line.is_empty(),
        })
    }
}

/// The lines of `text`, split at each `\n` (found with `memchr`: these checks run on every
/// event a coordinator forwards).
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', text)
        .chain(std::iter::once(text.len()))
        .map(move |end| {
            let line = &text[start..end];
            start = end + 1;
            line
        })
}

/// Appends the server-sent event `data: {json}` and its empty line to `out` (nothing, on the
/// serializer's error): how every event the club streams is written.
pub fn write_data_event<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    json: &T,
) -> Result<(), serde_json::Error> {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    if let Err(error) = serde_json::to_writer(&mut *out, json) {
        out.truncate(start);
        return Err(error);
    }
    out.extend_from_slice(b"\n\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{ChunkDelta, Usage};

    fn events(include_usage: bool) -> ConsumerEvents {
        ConsumerEvents {
            completion_id: "chatcmpl-r".into(),
            include_usage,
        }
    }

    #[test]
    fn usage_reaches_the_consumer_only_when_asked_and_stays_on_the_chunk() {
        let mut last = ChatCompletionChunk::new("e", "m", 1).with_delta(ChunkDelta::content("x"));
        last.usage = Some(Usage::new(3, 1));
        let mut usage_only = ChatCompletionChunk::new("e", "m", 1);
        usage_only.usage = Some(Usage::new(3, 1));

        let mut out = Vec::new();
        assert!(events(false).write(&mut last, &mut out).unwrap());
        assert!(!events(false).write(&mut usage_only, &mut out).unwrap());
        assert!(!String::from_utf8_lossy(&out).contains("usage"));
        assert!(
            last.usage.is_some(),
            "the chunk keeps its usage for the record"
        );

        let mut out = Vec::new();
        assert!(events(true).write(&mut usage_only, &mut out).unwrap());
        assert!(String::from_utf8_lossy(&out).contains("\"usage\""));
        let back: Vec<_> = ConsumerEvents::chunks_of(&out).collect();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].id, "chatcmpl-r");
        assert_eq!(back[0].usage, Some(Usage::new(3, 1)));
    }

    #[test]
    fn only_whole_events_pass_as_events() {
        let mut out = Vec::new();
        for text in ["a\n\nb", "data: [DONE]", "}{"] {
            let mut chunk =
                ChatCompletionChunk::new("e", "m", 1).with_delta(ChunkDelta::content(text));
            events(false).write(&mut chunk, &mut out).unwrap();
        }
        assert!(ConsumerEvents::are_whole_events(&out));
        let texts: Vec<_> = ConsumerEvents::chunks_of(&out)
            .map(|c| c.choices[0].delta.content.clone().unwrap())
            .collect();
        assert_eq!(texts, ["a\n\nb", "data: [DONE]", "}{"]);
        for bad in [
            &b""[..],
            b"data: {}\n",
            b"data: [DONE]\n\n",
            b"data: {}\n\nevent: x\n\n",
            b"data: {}\n\ndata: {}",
            b": comment\n\n",
            b"data: {}\nretry: 1\n\n",
        ] {
            assert!(!ConsumerEvents::are_whole_events(bad), "{bad:?}");
        }
    }
}
