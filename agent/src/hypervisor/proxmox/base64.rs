//! Bounded standard-base64 decoding of guest-exec `out-data`.
//!
//! The `base64` crate is an optional dependency of the `libvirt` feature; the
//! Proxmox backend builds without it, so it carries this small decoder. It decodes
//! at most `max_bytes` and never looks at (or allocates for) the rest.

/// Malformed base64 at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Malformed base64 at byte {0}")]
pub struct Base64Error(pub usize);

fn sextet(byte: u8) -> Option<u32> {
    match byte {
        b'A'..=b'Z' => Some(u32::from(byte - b'A')),
        b'a'..=b'z' => Some(u32::from(byte - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(byte - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes up to `max_bytes` of `data`; the flag says whether anything was dropped.
pub fn decode_bounded(data: &str, max_bytes: usize) -> Result<(Vec<u8>, bool), Base64Error> {
    let data = data.trim_end_matches(['\n', '\r']).as_bytes();
    let mut output = Vec::with_capacity(max_bytes.min(data.len() / 4 * 3 + 3));
    let mut group = [0u32; 4];
    let mut offset = 0;
    while offset < data.len() {
        if output.len() >= max_bytes {
            return Ok((output, true));
        }
        let chunk = &data[offset..data.len().min(offset + 4)];
        let mut n_sextets = 0;
        for (index, &byte) in chunk.iter().enumerate() {
            if byte == b'=' {
                // Padding only in the last group, after at least two characters.
                if offset + 4 < data.len() || index < 2 {
                    return Err(Base64Error(offset + index));
                }
                if chunk[index..].iter().any(|&rest| rest != b'=') {
                    return Err(Base64Error(offset + index));
                }
                break;
            }
            group[index] = sextet(byte).ok_or(Base64Error(offset + index))?;
            n_sextets += 1;
        }
        if n_sextets < 2 {
            return Err(Base64Error(offset));
        }
        let bits = (group[0] << 18) | (group[1] << 12) | (group[2] << 6) | group[3];
        let bytes = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        let n_bytes = n_sextets - 1;
        let room = max_bytes - output.len();
        output.extend_from_slice(&bytes[..n_bytes.min(room)]);
        if n_bytes > room {
            return Ok((output, true));
        }
        group = [0; 4];
        offset += 4;
    }
    Ok((output, false))
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
        let big = "QUFB".repeat(1_000_000);
        let (bytes, truncated) = decode_bounded(&big, 10).expect("decode");
        assert_eq!(bytes, b"AAAAAAAAAA");
        assert!(truncated);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["!!!!", "Q===", "QQ==QUFB", "Q", "QU=A", "ééé"] {
            assert!(decode_bounded(bad, 100).is_err(), "{bad:?}");
        }
    }
}
