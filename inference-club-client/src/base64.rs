//! Base64 as OpenAI answers it (`b64_json` images, `encoding_format: "base64"` embeddings): the
//! standard alphabet, padding optional, read by the `base64` crate; the errors say what is wrong
//! in words.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The standard alphabet, with or without `=` padding, lenient about the unused bits of the
/// last character (as engines write them).
const OPENAI: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes standard base64 (with or without `=` padding, surrounding whitespace ignored); says
/// what is wrong otherwise.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    // Padding, when there is any, fills the last group (the crate takes a partial one).
    if text.ends_with('=') && !text.len().is_multiple_of(4) {
        return Err(format!(
            "not base64: a length of {} characters cannot be with that padding",
            text.len()
        ));
    }
    OPENAI.decode(text).map_err(|error| match error {
        base64::DecodeError::InvalidByte(_, b'=') | base64::DecodeError::InvalidPadding => {
            format!(
                "not base64: a length of {} characters cannot be with that padding",
                text.len()
            )
        }
        base64::DecodeError::InvalidByte(at, byte) => format!(
            "not base64: {:?} (at {at}) is not a base64 character",
            char::from(byte)
        ),
        base64::DecodeError::InvalidLength(_) => format!(
            "not base64: a length of {} characters cannot be",
            text.len()
        ),
        base64::DecodeError::InvalidLastSymbol(at, byte) => {
            format!("not base64: {:?} (at {at}) cannot end it", char::from(byte))
        }
    })
}

/// Encodes bytes as standard base64 with padding.
#[cfg(test)]
pub(crate) fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_it_encodes_with_and_without_padding() {
        assert_eq!(decode("").unwrap(), b"");
        assert_eq!(decode("TWFu").unwrap(), b"Man");
        assert_eq!(decode("TWE=").unwrap(), b"Ma");
        assert_eq!(decode("TWE").unwrap(), b"Ma");
        assert_eq!(decode("TQ==").unwrap(), b"M");
        assert_eq!(decode("TQ").unwrap(), b"M");
        assert_eq!(decode(" TQ==\n").unwrap(), b"M");
        assert_eq!(decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = encode(&bytes);
            assert_eq!(text.len() % 4, 0);
            assert_eq!(decode(&text).unwrap(), bytes, "{text}");
            assert_eq!(decode(text.trim_end_matches('=')).unwrap(), bytes);
        }
    }

    #[test]
    fn refuses_what_is_not_base64() {
        assert!(decode("TWF").is_ok());
        assert!(
            decode("T").unwrap_err().contains("length"),
            "{:?}",
            decode("T")
        );
        assert!(
            decode("TQ=").unwrap_err().contains("length"),
            "{:?}",
            decode("TQ=")
        );
        assert!(
            decode("TQ===").unwrap_err().contains("length"),
            "{:?}",
            decode("TQ===")
        );
        assert!(decode("TW-u").unwrap_err().contains("'-'"));
        assert!(decode("TW u").is_err());
        // URL-safe base64 is not what OpenAI sends.
        assert!(decode("_w").unwrap_err().contains("'_'"));
    }
}
