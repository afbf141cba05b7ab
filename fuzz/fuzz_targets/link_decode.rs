//! The link message decoders: any frame decodes to a message or an error without a panic, and a
//! decoded message encodes back to a frame that decodes to the same message. Any binary frame
//! gives its job and piece, or an error; the events of a piece the coordinator would forward are
//! whole events, and the chunks read back from them write as whole events again.
#![no_main]

use inference_club_core::link;
use inference_club_core::openai::ConsumerEvents;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, piece)) = link::split_binary_frame(data)
        && let Ok((_, events)) = link::split_events(piece)
    {
        assert!(ConsumerEvents::are_whole_events(events));
        let writer = ConsumerEvents {
            completion_id: "chatcmpl-fuzz".into(),
            include_usage: true,
        };
        for mut chunk in ConsumerEvents::chunks_of(events) {
            let mut out = Vec::new();
            if writer.write(&mut chunk, &mut out).expect("a chunk read back writes") {
                assert!(ConsumerEvents::are_whole_events(&out), "{out:?}");
            }
        }
    }
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
