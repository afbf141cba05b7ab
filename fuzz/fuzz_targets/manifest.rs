//! Manifest parsing and validation: any text is read (YAML or JSON) and validated without a
//! panic, and a manifest the node accepts is accepted by the coordinator after redaction (the
//! node sends the redacted manifest as JSON; the coordinator validates it again).
#![no_main]

use inference_club_core::manifest::ServiceManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = ServiceManifest::parse_and_validate(text) else {
        return;
    };
    // What the node sends on its link, and what the coordinator makes of it.
    let redacted = manifest.redacted();
    let Ok(sent) = serde_json::to_value(&redacted) else {
        panic!("a valid manifest does not serialize");
    };
    let again = match ServiceManifest::parse_and_validate(&sent.to_string()) {
        Ok(again) => again,
        Err(error) => panic!(
            "a manifest valid at the node is refused by the coordinator: {:?}\n{sent}",
            error.lines()
        ),
    };
    assert_eq!(again.redacted(), redacted, "redaction is not stable");
});
