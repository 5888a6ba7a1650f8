//! Guest text made safe to print on an operator's terminal.
//!
//! A process name, a kernel version string or a whole pasted line comes from inside
//! a guest (or from whoever wrote the log): it may carry ANSI escape sequences that
//! move the cursor, rewrite the screen or set the window title, or bidirectional
//! overrides that make text read differently than it is stored. Everything printed
//! for a human goes through [`shown`]: such characters become visible escapes
//! (`\x1b`, `\u{202e}`), everything else passes unchanged and unallocated.

use std::borrow::Cow;
use std::fmt::Write;

/// True for characters a terminal acts on instead of showing: C0 and C1 controls,
/// DEL, and the invisible formatting characters that reorder or hide text.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `text` with every [`is_unsafe`] character written as an escape; line breaks too,
/// so one guest field cannot start a forged line of output.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(escaped(text, |_| false))
}

/// A whole rendered text: like [`shown`], but its own line breaks stay.
pub fn shown_lines(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(escaped(text, |c| c == '\n'))
}

fn escaped(text: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !is_unsafe(c) || keep(c) {
            out.push(c);
        } else if u32::from(c) <= 0xff {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            shown("tor (pid 113), ünïcødé 名前"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn escape_sequences_bidi_overrides_and_line_breaks_become_visible() {
        assert_eq!(shown("evil\u{1b}]0;pwned\u{7}x"), "evil\\x1b]0;pwned\\x07x");
        assert_eq!(shown("a\u{9b}2Jb\u{7f}"), "a\\x9b2Jb\\x7f");
        assert_eq!(shown("gpj.\u{202e}exe"), "gpj.\\u{202e}exe");
        assert_eq!(shown("one\ntwo\r"), "one\\x0atwo\\x0d");
        assert_eq!(shown_lines("one\ntwo\u{1b}[2J\n"), "one\ntwo\\x1b[2J\n");
    }

    #[test]
    fn any_string_comes_out_without_unsafe_characters() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert!(!shown(&all).chars().any(is_unsafe));
        assert!(!shown_lines(&all).chars().any(|c| c != '\n' && is_unsafe(c)));
    }
}
