//! Undoes transport encodings that hide line breaks, before any parsing.
//!
//! - rsyslog escapes control characters as `#NNN` octal: `#012` is a newline
//!   that a multi-line kernel message carried, `#011` a tab.
//! - mail bodies arrive quoted-printable: `=\n` is a soft line break and `=3D`
//!   an escaped `=`, which the kernel prints in `gfp_mask=` and `order=`.
//!
//! Either is detected by a cheap search first; plain input is not copied.

use std::borrow::Cow;

/// How the input was decoded, for a diagnostic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoding {
    None,
    RsyslogEscapes,
    QuotedPrintable,
}

/// Returns the input with rsyslog escapes and quoted-printable encoding undone.
pub(crate) fn normalize(input: &[u8]) -> (Cow<'_, [u8]>, Decoding) {
    if is_quoted_printable(input) {
        return (
            Cow::Owned(decode_quoted_printable(input)),
            Decoding::QuotedPrintable,
        );
    }
    if memchr::memmem::find(input, b"#012").is_some() {
        return (Cow::Owned(decode_rsyslog(input)), Decoding::RsyslogEscapes);
    }
    (Cow::Borrowed(input), Decoding::None)
}

/// Soft line breaks and `=3D` together: `gfp_mask=3D0x...` is unmistakable.
fn is_quoted_printable(input: &[u8]) -> bool {
    // `=3D` first: plain logs never hold it, so they cost one pass here, not three.
    memchr::memmem::find(input, b"=3D").is_some()
        && (memchr::memmem::find(input, b"=\n").is_some()
            || memchr::memmem::find(input, b"=\r\n").is_some())
}

/// The offset in `input` whose decoded text starts at `decoded` (`input` decoded as `how`).
pub(crate) fn raw_offset(input: &[u8], how: Decoding, decoded: usize) -> usize {
    let mut raw = 0;
    let mut out = 0;
    while raw < input.len() && out < decoded {
        let rest = &input[raw..];
        let (step, produced) = match how {
            Decoding::None => return decoded.min(input.len()),
            Decoding::RsyslogEscapes if rest.starts_with(b"#012") || rest.starts_with(b"#011") => {
                (4, 1)
            }
            Decoding::RsyslogEscapes => (1, 1),
            Decoding::QuotedPrintable if rest.starts_with(b"=\r\n") => (3, 0),
            Decoding::QuotedPrintable if rest.starts_with(b"=\n") => (2, 0),
            Decoding::QuotedPrintable
                if rest.len() >= 3
                    && hex_value(rest[1]).is_some()
                    && hex_value(rest[2]).is_some() =>
            {
                (if rest[0] == b'=' { 3 } else { 1 }, 1)
            }
            Decoding::QuotedPrintable => (1, 1),
        };
        raw += step;
        out += produced;
    }
    raw.min(input.len())
}

fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut index = 0;
    while index < input.len() {
        let byte = input[index];
        if byte != b'=' {
            out.push(byte);
            index += 1;
            continue;
        }
        let rest = &input[index + 1..];
        if rest.starts_with(b"\r\n") {
            index += 3;
        } else if rest.starts_with(b"\n") {
            index += 2;
        } else if let (Some(high), Some(low)) = (
            rest.first().and_then(|b| hex_value(*b)),
            rest.get(1).and_then(|b| hex_value(*b)),
        ) {
            out.push(high << 4 | low);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    out
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

fn decode_rsyslog(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut index = 0;
    while index < input.len() {
        let rest = &input[index..];
        if rest.starts_with(b"#012") {
            out.push(b'\n');
            index += 4;
        } else if rest.starts_with(b"#011") {
            out.push(b'\t');
            index += 4;
        } else {
            out.push(input[index]);
            index += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_soft_breaks_and_escapes_are_undone() {
        let (text, how) =
            normalize(b"tor invoked oom-killer: gfp_mask=3D0x24201ca, or=\nder=3D0\n");
        assert_eq!(how, Decoding::QuotedPrintable);
        assert_eq!(
            &*text,
            b"tor invoked oom-killer: gfp_mask=0x24201ca, order=0\n"
        );
    }

    #[test]
    fn rsyslog_newline_escapes_become_lines() {
        let (text, how) = normalize(b"Mem-Info:#012active_anon:1#011x");
        assert_eq!(how, Decoding::RsyslogEscapes);
        assert_eq!(&*text, b"Mem-Info:\nactive_anon:1\tx");
    }

    #[test]
    fn plain_input_is_borrowed() {
        let (text, how) = normalize(b"order=0\n");
        assert!(matches!(text, Cow::Borrowed(_)));
        assert_eq!(how, Decoding::None);
    }
}
