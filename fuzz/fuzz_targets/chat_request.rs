//! The chat request decoder as `POST /v1/chat/completions` runs it: the body is parsed and
//! checked against the default limits without a panic; an accepted request is recorded as JSON
//! and read back (from the store) as the same request.
#![no_main]

use inference_club_core::openai::ChatCompletionRequest;
use inference_club_coordinator::testing::accept_chat_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = accept_chat_request(data) else {
        return;
    };
    let stored = serde_json::to_string(&request).expect("an accepted request serializes");
    let read: ChatCompletionRequest =
        serde_json::from_str(&stored).expect("a recorded request reads back");
    let again = serde_json::to_string(&read).expect("a read-back request serializes");
    assert_eq!(again, stored, "a recorded request reads back changed");
    // The request as the node receives it in a job: the same body, re-parsed by the decoder.
    assert!(accept_chat_request(stored.as_bytes()).is_ok(), "a recorded request is refused");
});
