//! The link message decoders: any frame decodes to a message or an error without a panic, and a
//! decoded message encodes back to a frame that decodes to the same message.
#![no_main]

use inference_club_core::link;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = link::decode_node(frame) {
        let encoded = link::encode(&message).expect("a decoded node message encodes");
        let again = link::decode_node(&encoded).expect("an encoded node message decodes");
        assert_eq!(again, message, "node message round trip");
    }
    if let Ok(message) = link::decode_coordinator(frame) {
        let encoded = link::encode(&message).expect("a decoded coordinator message encodes");
        let again = link::decode_coordinator(&encoded).expect("an encoded coordinator message decodes");
        assert_eq!(again, message, "coordinator message round trip");
    }
});
