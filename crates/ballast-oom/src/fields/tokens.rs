//! Byte-level helpers shared by the line readers: `key:value` tokens, bounded
//! searches, number prefixes, bounded lossy text.

use super::*;

/// Iterates `key:value` tokens; values lose a `kB`/`KB` suffix. `key: value` (4.x node line) also works.
pub(crate) fn key_values(text: &[u8]) -> impl Iterator<Item = (&[u8], u64)> {
    let mut words = text
        .split(|b| b.is_ascii_whitespace() || *b == b',')
        .filter(|word| !word.is_empty())
        .peekable();
    std::iter::from_fn(move || loop {
        let word = words.next()?;
        let Some(colon) = memchr::memchr(b':', word) else {
            continue;
        };
        let key = &word[..colon];
        let mut value = &word[colon + 1..];
        if value.is_empty() {
            match words.peek() {
                Some(next) if next.first().is_some_and(u8::is_ascii_digit) => {
                    value = next;
                    words.next();
                }
                _ => continue,
            }
        }
        if let Some(number) = parse_u64_prefix(value) {
            if !key.is_empty() {
                return Some((key, number));
            }
        }
    })
}

/// Finds the first occurrence of `needle`.
///
/// Haystacks are single lines (at most [`crate::limits::MAX_LINE_BYTES`]) and needles
/// short literals: a search for the first byte and a compare costs less than building
/// a `memmem` searcher per call, and stays linear in the line's length.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let Some((&first, _)) = needle.split_first() else {
        return Some(0);
    };
    memchr::memchr_iter(first, haystack).find(|at| haystack[*at..].starts_with(needle))
}

pub(super) fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let Some((&first, _)) = needle.split_first() else {
        return Some(haystack.len());
    };
    memchr::memrchr_iter(first, haystack).find(|at| haystack[*at..].starts_with(needle))
}

pub(super) fn value_after<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    find(text, key).map(|at| &text[at + key.len()..])
}

/// Like [`value_after`] but the key must start a word (`oom_adj=` is inside `oom_score_adj=`).
pub(super) fn value_after_word<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let first = key.first().copied().unwrap_or(b' ');
    memchr::memchr_iter(first, text)
        .filter(|at| text[*at..].starts_with(key))
        .find(|at| *at == 0 || matches!(text[at - 1], b' ' | b','))
        .map(|at| &text[at + key.len()..])
}

pub(super) fn number_after(text: &[u8], separator: u8) -> Option<u64> {
    let at = memchr::memchr(separator, text)?;
    parse_u64_prefix(text[at + 1..].trim_ascii_start())
}

pub(super) fn leading_digits(text: &[u8]) -> &[u8] {
    let n = text.iter().take_while(|b| b.is_ascii_digit()).count();
    &text[..n]
}

pub(crate) fn parse_u64_prefix(text: &[u8]) -> Option<u64> {
    parse_u64(leading_digits(text))
}

pub(super) fn parse_u32_prefix(text: &[u8]) -> Option<u32> {
    parse_u64_prefix(text).and_then(|value| u32::try_from(value).ok())
}

pub(super) fn parse_i64(text: &[u8]) -> Option<i64> {
    match text.strip_prefix(b"-") {
        Some(digits) => parse_u64(digits)
            .and_then(|value| i64::try_from(value).ok())
            .map(|value| -value),
        None => parse_u64(text).and_then(|value| i64::try_from(value).ok()),
    }
}

pub(super) fn parse_i32_prefix(text: &[u8]) -> Option<i32> {
    let negative = text.starts_with(b"-");
    let digits = leading_digits(if negative { &text[1..] } else { text });
    let value = i32::try_from(parse_u64(digits)?).ok()?;
    Some(if negative { -value } else { value })
}

/// Guest bytes as a bounded, valid UTF-8 string (invalid sequences become U+FFFD).
pub(crate) fn lossy(text: &[u8], max_bytes: usize) -> String {
    let cut = &text[..text.len().min(max_bytes)];
    String::from_utf8_lossy(cut).into_owned()
}
