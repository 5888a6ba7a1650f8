//! Rejoins kernel lines that an editor, terminal or mail client wrapped.
//!
//! A wrapped line reaches the parser as two or more physical lines: the kernel line
//! with its prefix, then continuations with none (`anon-rss:1234` / `56kB, ...`).
//! Continuation markers are dropped: `↪` at a continuation's start (Firefox,
//! Thunderbird), `>` quote marks of any level, the indentation of a Markdown code
//! block, a trailing `\` on the line before.
//!
//! A physical line is joined to the line before it only when
//! - it cannot be a line of its own: no log prefix, and not a kernel line the
//!   parser knows (`oom_reaper:`, a task row, a trace frame, ...);
//! - and the join makes a known line more whole: the line before is a known line
//!   that was cut (a kill line ending in `total-vm:538120kB,`, a zone line cut inside
//!   `free:12345kB`), or a fragment that the join turns into a known line
//!   (`Task in /docker/34186d` / `9bd0 killed as a result of limit of ...`).
//!
//! Two real kernel lines are never joined. Where the break fell inside a token
//! (`anon-rss:1234` / `56kB`) the parts are joined with no space, so a cut number is
//! read whole, never as a smaller one. A joined line is capped at
//! [`MAX_LINE_BYTES`], like any line.
//!
//! A number at the very end of the input (no line break after it) may itself be cut
//! (`rss:1971` of `rss:197168KB`): [`without_cut_number`] drops it, so the fact is
//! null rather than wrong.

use std::iter::Peekable;

use crate::fields::{self, KernelLine};
use crate::limits::MAX_LINE_BYTES;
use crate::lines::LogicalLine;

/// Physical lines joined to one kernel line at most (a zone line cut at 72 columns
/// takes about six).
const MAX_CONTINUATIONS: usize = 32;

/// `↪`, which browsers and mail readers print where they wrapped a line.
const WRAP_MARK: &str = "\u{21aa}";

/// Columns at which terminals and mailers hard-wrap a line, cutting inside a token.
const WRAP_COLUMNS: [usize; 3] = [72, 76, 80];

/// Joins to `line` the continuations that follow it in `lines` (none at or after
/// `complete_until`, where the input is still being read; none that `taken` says
/// a report used). The joined text is left in `joined`; returns the continuation
/// lines taken, the last of which ends the joined line. Empty: nothing joined.
pub(crate) fn take_continuations<'a, I>(
    text: &[u8],
    line: &LogicalLine<'a>,
    lines: &mut Peekable<I>,
    complete_until: usize,
    taken: impl Fn(usize) -> bool,
    joined: &mut Vec<u8>,
) -> Vec<LogicalLine<'a>>
where
    I: Iterator<Item = LogicalLine<'a>>,
{
    let mut continuations: Vec<LogicalLine<'a>> = Vec::new();
    joined.clear();
    while continuations.len() < MAX_CONTINUATIONS {
        let Some(next) = lines.peek().copied() else {
            break;
        };
        if next.start >= complete_until || taken(next.start) {
            break;
        }
        let last = continuations.last().unwrap_or(line);
        let current: &[u8] = if continuations.is_empty() {
            line.body
        } else {
            joined
        };
        let Some(whole) = join(text, current, last, &next) else {
            break;
        };
        *joined = whole;
        continuations.push(next);
        lines.next();
        if joined.len() >= MAX_LINE_BYTES {
            break;
        }
    }
    continuations
}

/// `current` (the kernel text of `last` and what was joined to it so far) with
/// `next` joined, when `next` is its wrapped continuation.
fn join(text: &[u8], current: &[u8], last: &LogicalLine<'_>, next: &LogicalLine<'_>) -> Option<Vec<u8>> {
    let physical = physical_line(text, last)?;
    // `last` must end its physical line and `next` start the one after it.
    if last.end != last.physical_end() || next.start != last.physical_end() + 1 {
        return None;
    }
    if has_prefix(next) {
        return None;
    }
    let (marked, rest) = match next.body.strip_prefix(WRAP_MARK.as_bytes()) {
        Some(rest) => (true, trim_start(rest)),
        None => (false, next.body),
    };
    if rest.is_empty() || !matches!(fields::classify(rest), KernelLine::Other) {
        return None;
    }
    let (current, backslash) = match current.strip_suffix(b"\\") {
        Some(before) => (before, true),
        None => (current, false),
    };
    let before = fields::classify(current);
    let glue = if backslash {
        Glue::InToken
    } else {
        glue(physical, &text[next.start..next.physical_end()], current, rest, marked)
    };
    let mut whole = Vec::with_capacity(current.len() + 1 + rest.len());
    whole.extend_from_slice(current);
    if glue == Glue::Space {
        whole.push(b' ');
    }
    whole.extend_from_slice(rest);
    whole.truncate(MAX_LINE_BYTES);
    let after = fields::classify(&whole);
    let known = !matches!(after, KernelLine::Other | KernelLine::Trace { .. });
    let takes = match before {
        // A fragment the join turns into a known line.
        KernelLine::Other => known,
        _ => {
            std::mem::discriminant(&before) == std::mem::discriminant(&after)
                && (glue == Glue::InToken || !is_whole(&before, current))
        }
    };
    takes.then_some(whole)
}

/// How two parts of a wrapped line go together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Glue {
    /// The break fell between words: a space goes back.
    Space,
    /// The break fell inside a token: the parts are one token again.
    InToken,
}

/// Where the break fell: between words or inside a token.
fn glue(physical: &[u8], next_physical: &[u8], current: &[u8], rest: &[u8], marked: bool) -> Glue {
    // format=flowed and soft wraps keep the space at the end of the first part;
    // a deeper indent is the kernel's own continuation or a wrap that indents.
    if physical.last().is_some_and(u8::is_ascii_whitespace)
        || indent(next_physical) > indent(physical)
    {
        return Glue::Space;
    }
    let (Some(&end), Some(&start)) = (current.last(), rest.first()) else {
        return Glue::Space;
    };
    if !is_token_byte(end) || !is_token_byte(start) {
        return Glue::Space;
    }
    // A display that marks its wraps breaks a word only when it must; a terminal or
    // mailer wrapping at a fixed column breaks wherever the column falls.
    if marked || WRAP_COLUMNS.contains(&columns(physical)) {
        return Glue::InToken;
    }
    // Otherwise only breaks a word wrap cannot make: it breaks at spaces, and these
    // fall where the kernel prints none.
    let tail = last_word(current);
    let head = first_word(rest);
    let keyed = |word: &[u8]| word.iter().any(|b| matches!(b, b':' | b'='));
    let key_like = |word: &[u8]| {
        !word.is_empty() && word.iter().all(|b| b.is_ascii_lowercase() || *b == b'_')
    };
    // `total-vm:` / `390360kB`, `anon-rss:1234` / `56kB`, `free:123` / `45kB`.
    let cut_value = (matches!(end, b':' | b'=') && start.is_ascii_digit())
        || (end.is_ascii_digit() && starts_with_unit(head))
        || (end.is_ascii_digit() && keyed(tail) && start.is_ascii_digit());
    // `gfp_mask=0x14200` / `ca(GFP_HIGHUSER_MOVABLE)`.
    let cut_hex = is_hex_number(value_of(tail)) && start.is_ascii_hexdigit() && !keyed(head);
    // `inacti` / `ve_file:88KB`: a key cut in two.
    let cut_key = key_like(tail) && keyed(head) && head.first().is_some_and(|b| key_like(&[*b]));
    if cut_value || cut_hex || cut_key {
        Glue::InToken
    } else {
        Glue::Space
    }
}

/// The physical line `line` is on, without its line end.
fn physical_line<'t>(text: &'t [u8], line: &LogicalLine<'_>) -> Option<&'t [u8]> {
    let physical = text.get(line.start..line.physical_end())?;
    Some(physical.strip_suffix(b"\r").unwrap_or(physical))
}

/// A log prefix of any kind (stamp, host, `kernel:` tag).
fn has_prefix(line: &LogicalLine<'_>) -> bool {
    let prefix = &line.prefix;
    prefix.family != crate::prefix::Family::Bare
        || prefix.monotonic_secs.is_some()
        || prefix.wallclock.is_some()
        || prefix.host.is_some()
        || prefix.program.is_some()
}

/// Whether a known line of this kind ends where the kernel ends it.
fn is_whole(kind: &KernelLine, body: &[u8]) -> bool {
    let word = last_word(body);
    let ends_kb = word.ends_with(b"kB") || word.ends_with(b"KB");
    let unreclaimable = body.ends_with(b"? yes") || body.ends_with(b"? no");
    match kind {
        KernelLine::Invoked(_) => {
            ["oom_score_adj=", "oomkilladj=", "oom_adj="]
                .iter()
                .any(|key| word.starts_with(key.as_bytes()))
                && word.last().is_some_and(u8::is_ascii_digit)
        }
        // 6.x ends in `oom_score_adj:N`, 2.4 in `(comm).`, older ones in `...-rss:NkB`.
        KernelLine::Killed { .. } => {
            ends_kb
                || (word.starts_with(b"oom_score_adj:")
                    && word.last().is_some_and(u8::is_ascii_digit))
                || body.ends_with(b")")
                || body.ends_with(b").")
        }
        KernelLine::KillChoice { .. } => {
            body.ends_with(b"sacrifice child") || word.iter().all(u8::is_ascii_digit)
        }
        KernelLine::Reaped { .. } => ends_kb,
        KernelLine::Zone(_) => unreclaimable || (word.starts_with(b"free_cma:") && ends_kb),
        KernelLine::Node(_) => unreclaimable,
        KernelLine::Buddy { .. } => body.ends_with(b"kB") && fields::find(body, b" = ").is_some(),
        KernelLine::Hugepages { .. } => word.starts_with(b"hugepages_size=") && ends_kb,
        KernelLine::MemcgCounter { .. } => {
            fields::find(body, b"failcnt ").is_some() && word.iter().all(u8::is_ascii_digit)
        }
        // v2 prints the keys on the lines after `for /x:`; v1's last key is `unevictable`.
        KernelLine::MemcgStats { .. } => body.ends_with(b":") || word.starts_with(b"unevictable:"),
        KernelLine::OomKillSummary(_) => {
            fields::find(word, b",uid=").is_some() && word.last().is_some_and(u8::is_ascii_digit)
        }
        // The paths could go on: only a token cut (no space) or a fragment joins.
        KernelLine::MemcgTaskIn { .. } => true,
        // The name closes a task row; one that ends in a number lost its name.
        KernelLine::TaskRow => !word.iter().all(u8::is_ascii_digit),
        KernelLine::TaskHeader(_) => word == b"name",
        _ => true,
    }
}

/// `body` without a number cut by the end of the input: `rss:1971` of `rss:197168KB`
/// is dropped (to `rss:`), so it reads as unknown, never as a smaller number.
pub(crate) fn without_cut_number(body: &[u8]) -> &[u8] {
    let start = body
        .iter()
        .rposition(|b| matches!(b, b' ' | b',' | b':' | b'=' | b'(' | b'\t'))
        .map_or(0, |at| at + 1);
    let word = &body[start..];
    let number = !word.is_empty() && word.iter().all(u8::is_ascii_digit);
    if number || is_hex_number(word) {
        &body[..start]
    } else {
        body
    }
}

/// The value of a `key:value` / `key=value` word (the word itself when it has no key).
fn value_of(word: &[u8]) -> &[u8] {
    match word.iter().rposition(|b| matches!(b, b':' | b'=')) {
        Some(at) => &word[at + 1..],
        None => word,
    }
}

fn is_hex_number(word: &[u8]) -> bool {
    word.len() > 2 && word.starts_with(b"0x") && word[2..].iter().all(u8::is_ascii_hexdigit)
}

fn starts_with_unit(word: &[u8]) -> bool {
    let unit = word.trim_ascii_start();
    [&b"kB"[..], b"KB", b"MB", b"B,", b"B"]
        .iter()
        .any(|u| unit.starts_with(u))
        && !unit.iter().any(|b| matches!(b, b':' | b'='))
}

/// Bytes a wrap can cut between: those of words, numbers, paths and `key:value`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b'/' | b':' | b'=' | b'|')
}

fn last_word(text: &[u8]) -> &[u8] {
    let start = text
        .iter()
        .rposition(u8::is_ascii_whitespace)
        .map_or(0, |at| at + 1);
    &text[start..]
}

fn first_word(text: &[u8]) -> &[u8] {
    let end = text
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(text.len());
    &text[..end]
}

fn trim_start(text: &[u8]) -> &[u8] {
    crate::prefix::trim_start(text)
}

/// Leading indentation in columns (a tab counts as four, as in Markdown).
fn indent(line: &[u8]) -> usize {
    line.iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .map(|b| if *b == b'\t' { 4 } else { 1 })
        .sum()
}

/// Width of a line in characters (UTF-8 continuation bytes do not count).
fn columns(line: &[u8]) -> usize {
    line.iter().filter(|b| (**b & 0xC0) != 0x80).count()
}
