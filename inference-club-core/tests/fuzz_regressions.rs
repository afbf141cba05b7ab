//! Inputs the fuzz targets in `fuzz/` found to break a property, kept as regular tests (see
//! `docs/fuzzing.md`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use inference_club_core::link::{self, NodeMessage};
use inference_club_core::openai::ChatCompletionRequest;

/// `chat_request`: a number in an unknown field (here `logit_bias`-like) changed in its last
/// digit when a recorded request was read back, because JSON numbers were parsed without exact
/// float round trips. The workspace enables serde_json's `float_roundtrip`.
#[test]
fn a_request_reads_back_with_the_same_numbers() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
        "mogit_bias":{"50256":-4444444444444444444444444444444444444444444444444444444444100},
        "temperature":0.30000000000000004,"x":[1e-320,2.2250738585072014e-308,1.7976931348623157e308]}"#;
    let request: ChatCompletionRequest = serde_json::from_str(body).unwrap();
    let stored = serde_json::to_string(&request).unwrap();
    let read: ChatCompletionRequest = serde_json::from_str(&stored).unwrap();
    assert_eq!(serde_json::to_string(&read).unwrap(), stored);
    assert!(
        stored.contains("-4.4444444444444446e60") || stored.contains("-4.4444444444444446e+60"),
        "{stored}"
    );
}

/// The same through a link frame: what the node receives is what the consumer sent.
#[test]
fn a_link_frame_carries_numbers_unchanged() {
    let frame = r#"{"type":"heartbeat","body":{"load":[]}}"#;
    assert!(matches!(
        link::decode_node(frame).unwrap(),
        NodeMessage::Heartbeat(_)
    ));
    let hello = r#"{"type":"hello","body":{"protocol_version":1,"node_version":"n","manifest":{"v":-4.444444444444445e+60}}}"#;
    let message = link::decode_node(hello).unwrap();
    let again = link::decode_node(&link::encode(&message).unwrap()).unwrap();
    assert_eq!(again, message);
}
