//! Base64 as OpenAI answers it (`b64_json` images, `encoding_format: "base64"` embeddings): the
//! standard alphabet, padding optional. Decoding only, plus the encoder the tests use.

/// The value of one base64 character, or `None` when it is not one.
fn value(byte: u8) -> Option<u32> {
    match byte {
        b'A'..=b'Z' => Some(u32::from(byte - b'A')),
        b'a'..=b'z' => Some(u32::from(byte - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(byte - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes standard base64 (with or without `=` padding); says what is wrong otherwise.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let data = text.trim_end_matches('=');
    let padding = text.len() - data.len();
    if padding > 2 || (padding > 0 && !text.len().is_multiple_of(4)) || data.len() % 4 == 1 {
        return Err(format!(
            "not base64: a length of {} characters cannot be",
            text.len()
        ));
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    for group in data.as_bytes().chunks(4) {
        let mut bits = 0u32;
        for (i, &byte) in group.iter().enumerate() {
            let v = value(byte).ok_or_else(|| {
                format!(
                    "not base64: {:?} is not a base64 character",
                    char::from(byte)
                )
            })?;
            bits |= v << (18 - 6 * i);
        }
        let [_, a, b, c] = bits.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..group.len() - 1]);
    }
    Ok(out)
}

/// Encodes bytes as standard base64 with padding.
#[cfg(test)]
pub(crate) fn encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let mut bits = 0u32;
        for (i, &byte) in group.iter().enumerate() {
            bits |= u32::from(byte) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((bits >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
        assert!(decode("T").unwrap_err().contains("length"));
        assert!(decode("TQ=").unwrap_err().contains("length"));
        assert!(decode("TQ===").unwrap_err().contains("length"));
        assert!(decode("TW-u").unwrap_err().contains("'-'"));
        assert!(decode("TW u").is_err());
    }
}
