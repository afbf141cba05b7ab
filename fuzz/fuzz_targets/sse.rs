//! An OpenAI-style SSE body: any bytes parse into chunks and at most one error without a panic, and the result
//! does not depend on how the body was split into reads.
#![no_main]

use inference_club_provider::fuzzing;
use libfuzzer_sys::fuzz_target;

#[path = "split.rs"]
mod split;

fuzz_target!(|data: &[u8]| {
    let (pieces, body) = split::pieces(data);
    let split = fuzzing::sse(&pieces);
    let whole = fuzzing::sse(&[body]);
    if let Some(position) = split.iter().position(Result::is_err) {
        assert_eq!(position + 1, split.len(), "the stream went on after an error");
    }
    for chunk in split.iter().flatten() {
        serde_json::to_string(chunk).expect("every chunk serializes");
    }
    assert_eq!(
        split::outcome(&split),
        split::outcome(&whole),
        "the result depends on how the body was split"
    );
});
