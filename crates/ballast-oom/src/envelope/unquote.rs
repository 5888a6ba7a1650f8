//! Undoes an envelope's quoting of a kill line: JSON escapes (`\"`, `\n`,
//! `\u003e`), nested JSON strings, YAML `''` and folded lines.

use super::*;

/// How the value holding the kill line was quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quoting {
    /// To the line's end (a table row, a plain scalar).
    Plain,
    /// A JSON (or YAML double-quoted) string: backslash escapes, ends at `"`.
    Json,
    /// A JSON string inside a JSON string (`\"message\":\"...\"`): ends at `\"`.
    NestedJson,
    /// A YAML single-quoted scalar: `''` is `'`, ends at `'`.
    Single,
}

/// The kill line from `from` on, unquoted: the text, where its value ended (past the
/// closing quote, or at the end of the last line it used), and whether it ran into the
/// incomplete line at `complete_until`.
pub(super) fn unquote(
    text: &[u8],
    from: usize,
    quoting: Quoting,
    folds: bool,
    complete_until: Option<usize>,
) -> (Vec<u8>, usize, bool) {
    let mut out = Vec::with_capacity(256);
    let mut at = from;
    let mut folded = 0;
    let limit = text.len().min(from + MAX_KILL_BYTES);
    loop {
        if at >= limit || out.len() >= MAX_KILL_BYTES {
            // No line end is searched for: on a huge line that would be once per anchor.
            return (out, at.min(text.len()), false);
        }
        let byte = text[at];
        if byte == b'\r' || byte == b'\n' {
            let end = at;
            let next = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |n| at + n + 1);
            if !folds || folded >= MAX_FOLDED_LINES {
                return (out, end, false);
            }
            // Whether the scalar goes on is in the next line, which is not read yet.
            if complete_until.is_some_and(|cut| next >= cut) {
                return (out, end, true);
            }
            // A folded scalar goes on, indented, on the next line; a blank line or a
            // line back at the margin ends it.
            let indent = text[next..].iter().take_while(|b| **b == b' ').count();
            let continues =
                indent > 0 && !matches!(text.get(next + indent), Some(b'\n' | b'\r') | None);
            if !continues {
                return (out, end, false);
            }
            folded += 1;
            if quoting == Quoting::Json && out.last() == Some(&b'\\') {
                // YAML double-quoted: a `\` at the line's end joins without a space.
                out.pop();
            } else {
                out.push(b' ');
            }
            at = next + indent;
            continue;
        }
        match quoting {
            Quoting::Plain => {
                out.push(byte);
                at += 1;
            }
            Quoting::Single => {
                if byte == b'\'' {
                    if text.get(at + 1) == Some(&b'\'') {
                        out.push(b'\'');
                        at += 2;
                        continue;
                    }
                    return (out, at + 1, false);
                }
                out.push(byte);
                at += 1;
            }
            Quoting::Json | Quoting::NestedJson => {
                if byte == b'"' {
                    return (out, at + 1, false);
                }
                if byte != b'\\' {
                    out.push(byte);
                    at += 1;
                    continue;
                }
                let Some(&escape) = text.get(at + 1) else {
                    out.push(byte);
                    at += 1;
                    continue;
                };
                match escape {
                    b'"' if quoting == Quoting::NestedJson => return (out, at + 2, false),
                    // An escaped line break ends the kernel's line.
                    b'n' | b'r' => return (out, at + 2, false),
                    b'\\'
                        if quoting == Quoting::NestedJson
                            && matches!(text.get(at + 2..at + 4), Some(b"\\\"")) =>
                    {
                        // `\\\"` in a nested string is a quote inside it.
                        out.push(b'"');
                        at += 4;
                    }
                    b'\\'
                        if quoting == Quoting::NestedJson
                            && matches!(text.get(at + 2..at + 4), Some(b"\\n")) =>
                    {
                        return (out, at + 4, false);
                    }
                    b'"' | b'\\' | b'/' => {
                        out.push(escape);
                        at += 2;
                    }
                    // `\t`, and YAML's escaped space that starts a folded line.
                    b't' | b' ' => {
                        out.push(b' ');
                        at += 2;
                    }
                    b'b' | b'f' => at += 2,
                    b'u' => {
                        let (ch, used) = unicode_escape(&text[at..limit]);
                        let mut buf = [0; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        at += used;
                    }
                    _ => {
                        out.push(byte);
                        at += 1;
                    }
                }
            }
        }
    }
}

/// `\u003e` (and a surrogate pair `\ud83d\ude00`) at the start of `text`: the character
/// and the bytes it used. A broken escape is U+FFFD.
pub(super) fn unicode_escape(text: &[u8]) -> (char, usize) {
    let unit = |at: usize| -> Option<u32> {
        let hex = text.get(at..at + 6)?;
        if !hex.starts_with(b"\\u") {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let Some(first) = unit(0) else {
        return (char::REPLACEMENT_CHARACTER, 2);
    };
    if (0xD800..0xDC00).contains(&first) {
        if let Some(second) = unit(6).filter(|s| (0xDC00..0xE000).contains(s)) {
            let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
            return (
                char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER),
                12,
            );
        }
    }
    (
        char::from_u32(first).unwrap_or(char::REPLACEMENT_CHARACTER),
        6,
    )
}
