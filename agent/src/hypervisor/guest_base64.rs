//! Bounded standard-base64 decoding of guest-agent data (`guest-exec` `out-data`,
//! `guest-file-read` `buf-b64`), for both backends. A guest controls that text: at most
//! `max_bytes` are decoded, and the rest is never looked at nor allocated for.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Padding optional (QEMU pads, a hostile guest agent may not), trailing bits allowed.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes at most `max_bytes` of base64 `data`; the flag says whether anything was
/// dropped.
pub fn decode_bounded(
    data: &str,
    max_bytes: usize,
) -> Result<(Vec<u8>, bool), base64::DecodeError> {
    let data = data.trim_end_matches(['\n', '\r']);
    // Whole 4-character groups that cover max_bytes.
    let max_chars = max_bytes.div_ceil(3).saturating_mul(4);
    let (prefix, mut truncated) = if data.len() > max_chars {
        // A cut inside a multi-byte character means the data is not base64 anyway.
        match data.get(..max_chars) {
            Some(prefix) => (prefix, true),
            None => return Err(base64::DecodeError::InvalidLength(data.len())),
        }
    } else {
        (data, false)
    };
    let mut bytes = ENGINE.decode(prefix)?;
    if bytes.len() > max_bytes {
        bytes.truncate(max_bytes);
        truncated = true;
    }
    Ok((bytes, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_padded_unpadded_and_bounded() {
        assert_eq!(
            decode_bounded("TGludXggdmVyc2lvbiA2LjEK", 100),
            Ok((b"Linux version 6.1\n".to_vec(), false))
        );
        assert_eq!(decode_bounded("QUE=", 10), Ok((b"AA".to_vec(), false)));
        assert_eq!(decode_bounded("QQ==", 10), Ok((b"A".to_vec(), false)));
        assert_eq!(decode_bounded("QUE", 10), Ok((b"AA".to_vec(), false)));
        assert_eq!(decode_bounded("", 0), Ok((Vec::new(), false)));
        assert_eq!(decode_bounded("QUFB", 0), Ok((Vec::new(), true)));
        assert_eq!(decode_bounded("QUFBQUFB", 4), Ok((b"AAAA".to_vec(), true)));
        assert_eq!(
            decode_bounded("/+9z\n", 10),
            Ok((vec![0xff, 0xef, 0x73], false))
        );
    }

    #[test]
    fn big_input_is_not_decoded_past_the_cap() {
        let big = "QUFB".repeat(1_000_000); // 3 MB of "AAA"
        let (bytes, truncated) = decode_bounded(&big, 10).expect("decode");
        assert_eq!(bytes, b"AAAAAAAAAA");
        assert!(truncated);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["!!!!", "Q===", "QQ==QUFB", "Q", "QU=A", "ééé"] {
            assert!(decode_bounded(bad, 100).is_err(), "{bad:?}");
        }
        // The cap's cut falls inside a character: not base64 either.
        assert!(decode_bounded("Qéééééé", 3).is_err());
    }
}
