//! Finds the envelope around a `Killed process` line: the `OOMKilling` reason or a
//! `message` key before it, searched back at most `MAX_LOOKBACK` bytes and never past
//! the previous search, and how the value holding the line is quoted.

use super::*;

/// The kill line whose `Killed process` is at `killed_at`, when it sits inside an
/// envelope; `floor` is where the previous search back stopped (the search never goes
/// past it), `read_to` where the previous
/// value read ended (a kill line starting before it is not read again). `complete_until`:
/// a stream window's input is whole up to there, more follows (`None`: it is all there).
pub(crate) fn find(
    text: &[u8],
    killed_at: usize,
    floor: usize,
    read_to: usize,
    complete_until: Option<usize>,
) -> Option<Embedded> {
    let kill_start = kill_line_start(text, killed_at);
    if kill_start < read_to {
        return None;
    }
    let lowest = kill_start
        .saturating_sub(MAX_LOOKBACK)
        .max(floor.min(kill_start));
    let start =
        memchr::memrchr(b'\n', &text[lowest..kill_start]).map_or(lowest, |at| lowest + at + 1);
    let before = &text[start..kill_start];
    let reason = has_word(before, b"OOMKilling");
    #[cfg(test)]
    work::count(before.len());
    let key = message_key(before);
    let json_context = [&b"{\""[..], b"\":\"", b"\": \""]
        .iter()
        .any(|needle| memchr::memmem::find(before, needle).is_some());
    let (envelope, quoting) = match key {
        Some((Quoting::Plain, _)) if reason => (Envelope::NpdLog, plain_or_json(json_context)),
        Some((Quoting::Plain, _)) if json_context => (Envelope::Json, Quoting::Json),
        Some((Quoting::Plain, _)) => (Envelope::Yaml, Quoting::Plain),
        Some((quoting, true)) => (Envelope::Json, quoting),
        Some((quoting, false)) => (Envelope::Yaml, quoting),
        None if reason => (Envelope::EventTable, plain_or_json(json_context)),
        None => return None,
    };
    let folds = envelope == Envelope::Yaml && quoting != Quoting::Plain;
    let (mut line, mut end, mut incomplete) =
        unquote(text, kill_start, quoting, folds, complete_until);
    let value_end = end;
    #[cfg(test)]
    work::count(end - kill_start);
    if let Some(cut) = complete_until.filter(|cut| end >= *cut) {
        // The kill line's own line is the one still being read.
        incomplete = true;
        end = end.max(cut);
    }
    if envelope == Envelope::EventTable {
        // `kubectl get events -o wide` prints columns after the message, 3 spaces apart.
        if let Some(gap) = memchr::memmem::find(&line, b"   ") {
            line.truncate(gap);
        }
    }
    if envelope == Envelope::NpdLog {
        // `... oom_score_adj:999}] Conditions:[...]}`: the status struct closes the message.
        if let Some(close) = memchr::memchr(b'}', &line) {
            line.truncate(close);
        }
    }
    let keep = line.trim_ascii_end().len();
    line.truncate(keep);
    Some(Embedded {
        text: line,
        envelope,
        start,
        kill_start,
        end,
        value_end,
        incomplete,
    })
}

pub(super) const KILLED: &[u8] = b"Killed process ";

/// Where `Killed process ` is when the kill line starts at `anchor` (the scan's anchor
/// is at its `Killed process` or at the `Out of memory` / `out of memory: Kill` before
/// it): one comparison per anchor.
pub(super) fn kill_opening(text: &[u8], anchor: usize) -> Option<usize> {
    const OPENINGS: [&[u8]; 4] = [
        KILLED,
        b"Out of memory: Killed process ",
        b"out of memory: Killed process ",
        b"Out of memory (oom_kill_allocating_task): Killed process ",
    ];
    let at_anchor = &text[anchor..];
    let opening = OPENINGS
        .iter()
        .find(|opening| at_anchor.starts_with(opening))?;
    Some(anchor + opening.len() - KILLED.len())
}

pub(super) fn plain_or_json(json_context: bool) -> Quoting {
    if json_context {
        Quoting::Json
    } else {
        Quoting::Plain
    }
}

/// The start of the kernel's line whose `Killed process` is at `killed_at`: with its
/// `Memory cgroup out of memory: ` or `Out of memory: ` opening.
pub(super) fn kill_line_start(text: &[u8], killed_at: usize) -> usize {
    const OPENINGS: [&[u8]; 3] = [
        b"Memory cgroup out of memory: ",
        b"Out of memory: ",
        b"Out of memory (oom_kill_allocating_task): ",
    ];
    let before = &text[..killed_at];
    OPENINGS
        .iter()
        .find(|opening| before.ends_with(opening))
        .map_or(killed_at, |opening| killed_at - opening.len())
}

/// `word` in `text` with no letter or digit right before or after it.
pub(super) fn has_word(text: &[u8], word: &[u8]) -> bool {
    memchr::memmem::find_iter(text, word).any(|at| {
        let before = at.checked_sub(1).map(|i| text[i]);
        let after = text.get(at + word.len()).copied();
        !before.is_some_and(|b| b.is_ascii_alphanumeric())
            && !after.is_some_and(|b| b.is_ascii_alphanumeric())
    })
}

/// The quoting of the value `text` ends in, when `text` ends with a message key and the
/// value's opening (`"message": "`, `\"message\":\"`, `message: '`, `Message:`,
/// `msg="`), optionally followed by earlier lines of the same string (`...\n`). The flag
/// says the key itself was quoted (JSON).
pub(super) fn message_key(text: &[u8]) -> Option<(Quoting, bool)> {
    const KEYS: [&[u8]; 4] = [b"message", b"Message", b"MESSAGE", b"msg"];
    // The last key that is a word of its own (not `/dev/kmsg`, not `messages`).
    let is_word = |at: usize, key: &[u8]| {
        let before = at.checked_sub(1).map(|i| text[i]);
        let after = text.get(at + key.len()).copied();
        !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !after.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let (at, key) = KEYS
        .iter()
        .filter_map(|key| {
            memchr::memmem::rfind_iter(text, key)
                .find(|at| is_word(*at, key))
                .map(|at| (at, *key))
        })
        .max_by_key(|(at, _)| *at)?;
    let mut rest = &text[at + key.len()..];
    let key_quote = [&b"\\\""[..], b"\""]
        .into_iter()
        .find(|q| rest.starts_with(q));
    if let Some(quote) = key_quote {
        rest = &rest[quote.len()..];
    }
    rest = skip_spaces(rest);
    rest = rest
        .strip_prefix(b":")
        .or_else(|| rest.strip_prefix(b"="))?;
    rest = skip_spaces(rest);
    let (quoting, value) = if let Some(value) = rest.strip_prefix(b"\\\"") {
        (Quoting::NestedJson, value)
    } else if let Some(value) = rest.strip_prefix(b"\"") {
        (Quoting::Json, value)
    } else if let Some(value) = rest.strip_prefix(b"'") {
        (Quoting::Single, value)
    } else {
        (Quoting::Plain, rest)
    };
    // The kill line starts the value, or an escaped line break inside a JSON value.
    let starts_value = value.is_empty()
        || (matches!(quoting, Quoting::Json | Quoting::NestedJson)
            && (value.ends_with(b"\\n") || value.ends_with(b"\\\\n"))
            && !has_unescaped_quote(value));
    starts_value.then_some((quoting, key_quote.is_some()))
}

pub(super) fn skip_spaces(text: &[u8]) -> &[u8] {
    &text[text.iter().take_while(|b| **b == b' ').count()..]
}

/// A `"` that is not escaped: the JSON string closed.
pub(super) fn has_unescaped_quote(text: &[u8]) -> bool {
    let mut escaped = false;
    for byte in text {
        match byte {
            b'\\' => escaped = !escaped,
            b'"' if !escaped => return true,
            _ => escaped = false,
        }
    }
    false
}
