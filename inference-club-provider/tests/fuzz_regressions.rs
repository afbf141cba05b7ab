//! What the fuzz targets `sse` and `ollama_ndjson` (in `fuzz/`) found or check, kept as regular
//! tests (see `docs/fuzzing.md`): the stream parsers are linear and bounded whatever an engine
//! sends, and what they make of a body does not depend on how it was split into reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use inference_club_core::provider::ProviderError;
use inference_club_provider::fuzzing::{self, Parsed};
use inference_club_provider::sse::MAX_EVENT_BYTES;

fn outcome(parsed: &Parsed) -> Vec<Result<String, String>> {
    parsed
        .iter()
        .map(|item| match item {
            Ok(chunk) => Ok(serde_json::to_string(chunk).unwrap()),
            Err(error) => Err(error.to_string()),
        })
        .collect()
}

fn split(body: &[u8], step: usize) -> Vec<&[u8]> {
    body.chunks(step).collect()
}

/// `sse`: a 60 KB event read a byte at a time took 74 s of CPU with `eventsource-stream`
/// (each read re-scanned everything buffered). Now it is linear.
#[test]
fn a_large_event_in_tiny_reads_is_parsed_in_linear_time() {
    let mut body = br#"data: {"choices":[{"index":0,"delta":{"content":""#.to_vec();
    body.extend(std::iter::repeat_n(b'a', 200_000));
    body.extend_from_slice(b"\"}}]}\n\ndata: [DONE]\n\n");
    let started = Instant::now();
    let parsed = fuzzing::sse(&split(&body, 1));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(parsed.len(), 1);
    let chunk = parsed[0].as_ref().unwrap();
    assert_eq!(
        chunk.choices[0].delta.content.as_ref().unwrap().len(),
        200_000
    );
}

/// `sse`: a line that never ends is refused once it passes the event limit, not buffered for
/// ever.
#[test]
fn a_line_without_end_is_refused_at_the_limit() {
    let piece = vec![b'x'; 64 * 1024];
    let pieces: Vec<&[u8]> =
        std::iter::repeat_n(piece.as_slice(), MAX_EVENT_BYTES / piece.len() + 2).collect();
    let parsed = fuzzing::sse(&pieces);
    assert_eq!(parsed.len(), 1);
    assert!(
        matches!(&parsed[0], Err(ProviderError::Protocol { message }) if message.contains("larger than")),
        "{parsed:?}"
    );
}

/// `sse`: CR, LF and CRLF line ends, a CRLF split across reads, a BOM split across reads,
/// comments, multi-line data, and an unfinished last event: the same at every split.
#[test]
fn sse_parses_the_same_however_the_body_is_split() {
    let body: &[u8] = b"\xEF\xBB\xBF: hello\r\n\r\ndata: {\"choices\":[{\"index\":0,\r\ndata: \"delta\":{\"content\":\"a\xC3\xA9\"}}]}\r\r\
event: message\ndata:{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n\
id: 7\nretry: 10\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"c\"}}]}\r\n\r\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"unfinished\"}}]}\n";
    let whole = outcome(&fuzzing::sse(&[body]));
    assert_eq!(whole.len(), 3, "{whole:?}");
    assert!(whole.iter().all(Result::is_ok), "{whole:?}");
    for step in 1..body.len() {
        assert_eq!(
            outcome(&fuzzing::sse(&split(body, step))),
            whole,
            "step {step}"
        );
    }
}

/// Every recorded engine stream parses the same at every split from 1 to 16 bytes.
#[test]
fn recorded_streams_parse_the_same_however_they_are_split() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../inference-club-core/tests/fixtures/streams"
    );
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sse") {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        let whole = outcome(&fuzzing::sse(&[&body]));
        assert!(!whole.is_empty(), "{}", path.display());
        for step in 1..=16 {
            assert_eq!(
                outcome(&fuzzing::sse(&split(&body, step))),
                whole,
                "step {step}"
            );
        }
        files += 1;
    }
    assert!(files >= 10);
}

/// `ollama_ndjson`: a long line in tiny reads is linear too, and split-independent.
#[test]
fn ndjson_is_linear_and_split_independent() {
    let mut body = br#"{"message":{"content":""#.to_vec();
    body.extend(std::iter::repeat_n(b'a', 200_000));
    body.extend_from_slice(b"\"},\"done\":false}\r\n{\"done\":true,\"eval_count\":3}\n");
    let started = Instant::now();
    let split_one = outcome(&fuzzing::ollama_ndjson(&split(&body, 1)));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(split_one, outcome(&fuzzing::ollama_ndjson(&[&body])));
    assert!(split_one.iter().all(Result::is_ok), "{split_one:?}");
}
