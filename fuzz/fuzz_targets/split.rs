//! Shared by the stream-parser targets: cuts a body into reads, and says what a parse gave in a
//! form that can be compared.

use inference_club_provider::fuzzing::Parsed;

/// The first byte of `data` picks where the body (the rest) is cut into reads: every
/// `(first % 7) + 1` bytes, so that lines, events and UTF-8 characters fall across reads.
pub fn pieces(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let step = usize::from(first % 7) + 1;
    (body.chunks(step).collect(), body)
}

/// The chunks as JSON and the errors as text.
pub fn outcome(parsed: &Parsed) -> Vec<Result<String, String>> {
    parsed
        .iter()
        .map(|item| match item {
            Ok(chunk) => serde_json::to_string(chunk).map_err(|e| format!("unserializable: {e}")),
            Err(error) => Err(error.to_string()),
        })
        .collect()
}
