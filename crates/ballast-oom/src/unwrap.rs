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
//!   `free:12345kB`), a fragment that the join turns into a known line
//!   (`Task in /docker/34186d` / `9bd0 killed as a result of limit of ...`), or a
//!   row of Mem-Info figures visibly cut inside a token (`inac` / `tive_anon:2602`).
//!
//! A report whose last line ends a stream window stays open (`scan`): its wrapped
//! rest may be the first line of the next window.
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
    // What the joined text classifies as: each join classifies the new text once.
    let mut kind = None;
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
        let Some((whole, after)) = join(text, current, kind.take(), last, &next) else {
            break;
        };
        *joined = whole;
        kind = Some(after);
        continuations.push(next);
        lines.next();
        if joined.len() >= MAX_LINE_BYTES {
            break;
        }
    }
    continuations
}

/// `current` (the kernel text of `last` and what was joined to it so far, of kind
/// `before` when known) with `next` joined, and its kind, when `next` is its wrapped
/// continuation.
fn join(
    text: &[u8],
    current: &[u8],
    before: Option<KernelLine>,
    last: &LogicalLine<'_>,
    next: &LogicalLine<'_>,
) -> Option<(Vec<u8>, KernelLine)> {
    let physical = physical_line(text, last)?;
    // `last` must end its physical line and `next` start the one after it.
    if last.end != last.physical_end() || next.start != last.physical_end() + 1 {
        return None;
    }
    if has_prefix(next) {
        return None;
    }
    // Whitespace the continuation opens with is text of the line, not indentation,
    // when a marker stands before it or it is deeper than the line's own indent.
    let next_physical = &text[next.start..next.physical_end()];
    let (marked, rest, opens_with_space) = match next.body.strip_prefix(WRAP_MARK.as_bytes()) {
        Some(rest) => (
            true,
            rest.trim_ascii_start(),
            rest.first().is_some_and(u8::is_ascii_whitespace),
        ),
        None => (false, next.body, indent(next_physical) > indent(physical)),
    };
    if rest.is_empty() || !matches!(fields::classify(rest), KernelLine::Other) || opens_a_line(rest)
    {
        return None;
    }
    let (current, backslash) = match current.strip_suffix(b"\\") {
        Some(before) => (before, true),
        None => (current, false),
    };
    let before = before.unwrap_or_else(|| fields::classify(current));
    let glue = if backslash {
        Glue::Cut
    } else if opens_with_space {
        Glue::Space
    } else {
        glue(physical, current, rest, marked)
    };
    let mut whole = Vec::with_capacity(current.len() + 1 + rest.len());
    whole.extend_from_slice(current);
    // A cut marked by `\` may still fall on a space the next row opens with.
    if glue == Glue::Space || opens_with_space {
        whole.push(b' ');
    }
    whole.extend_from_slice(rest);
    whole.truncate(MAX_LINE_BYTES);
    let after = fields::classify(&whole);
    let known = !matches!(after, KernelLine::Other | KernelLine::Trace { .. });
    let takes = match before {
        // A fragment the join turns into a known line; or a row of `key:value` tokens
        // (Mem-Info) visibly cut inside a token.
        KernelLine::Other => known || (glue == Glue::Cut && opens_with_key_value(current)),
        // Its paths hold no spaces: only a cut inside the last one continues it.
        KernelLine::MemcgTaskIn { .. } => {
            matches!(after, KernelLine::MemcgTaskIn { .. }) && glue != Glue::Space
        }
        _ => {
            std::mem::discriminant(&before) == std::mem::discriminant(&after)
                && (glue == Glue::Cut || !is_whole(&before, current))
        }
    };
    takes.then_some((whole, after))
}

/// How two parts of a wrapped line go together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Glue {
    /// The break fell between words: a space goes back.
    Space,
    /// The break may have fallen inside a token (a fixed column, a marked wrap): the
    /// parts are joined with no space.
    InToken,
    /// The text shows a token cut in two (`anon-rss:1234` / `56kB`, a trailing `\`):
    /// joined with no space, even to a line that looked whole.
    Cut,
}

/// Where the break fell: between words or inside a token.
fn glue(physical: &[u8], current: &[u8], rest: &[u8], marked: bool) -> Glue {
    // format=flowed and soft wraps keep the space at the end of the first part.
    if physical.last().is_some_and(u8::is_ascii_whitespace) {
        return Glue::Space;
    }
    let (Some(&end), Some(&start)) = (current.last(), rest.first()) else {
        return Glue::Space;
    };
    if !is_token_byte(end) || !is_token_byte(start) {
        return Glue::Space;
    }
    // Breaks a word wrap cannot make: it breaks at spaces, and these fall where the
    // kernel prints none.
    let tail = last_word(current);
    let head = first_word(rest);
    let keyed = |word: &[u8]| word.iter().any(|b| matches!(b, b':' | b'='));
    let key_like =
        |word: &[u8]| !word.is_empty() && word.iter().all(|b| b.is_ascii_lowercase() || *b == b'_');
    // `total-vm:` / `390360kB`, `anon-rss:1234` / `56kB`, `free:123` / `45kB`.
    let cut_value = (matches!(end, b':' | b'=') && start.is_ascii_digit())
        || (end.is_ascii_digit() && starts_with_unit(head))
        || (end.is_ascii_digit() && start.is_ascii_digit() && (keyed(tail) || has_unit(head)));
    // `gfp_mask=0x14200` / `ca(GFP_HIGHUSER_MOVABLE)`.
    let cut_hex = is_hex_number(value_of(tail)) && start.is_ascii_hexdigit() && !keyed(head);
    // `inacti` / `ve_file:88KB`: a key cut in two.
    let cut_key = key_like(tail) && keyed(head) && head.first().is_some_and(|b| key_like(&[*b]));
    if cut_value || cut_hex || cut_key {
        Glue::Cut
    } else if marked || WRAP_COLUMNS.contains(&columns(physical)) {
        // A display that marks its wraps breaks a word only when it must; a terminal
        // or mailer wrapping at a fixed column breaks wherever the column falls.
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

/// `active_anon:125187 ...`: a line of the kernel's `key:value` figures.
fn opens_with_key_value(text: &[u8]) -> bool {
    let word = first_word(text);
    word.iter()
        .position(|b| *b == b':')
        .is_some_and(|colon| colon > 0 && word.get(colon + 1).is_some_and(u8::is_ascii_digit))
}

/// Kernel lines of a report the parser reads no fields from: never a continuation.
fn opens_a_line(text: &[u8]) -> bool {
    const OPENINGS: [&str; 15] = [
        "lowmem_reserve[]:",
        "Hardware name:",
        "Workqueue:",
        "Swap cache stats:",
        "Mem-Info",
        "Call Trace",
        "<TASK>",
        "</TASK>",
        "RIP:",
        "Code:",
        "RSP:",
        "Memory cgroup",
        "Out of memory",
        "Killed process",
        "Task in ",
    ];
    // Register dumps: `RAX: 0000...`, `R10: ...`, `EFLAGS: ...`.
    let register = text.len() > 5
        && text[..3]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && text[3..].starts_with(b": ");
    register
        || OPENINGS
            .iter()
            .any(|opening| text.starts_with(opening.as_bytes()))
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
        // 6.x ends in `oom_score_adj:N`, 2.4 in `(comm).`, others in `...-rss:NkB`; a
        // line ending in `(comm)` may have lost its `total-vm:...` to the wrap.
        KernelLine::Killed { .. } => {
            ends_kb
                || (word.starts_with(b"oom_score_adj:")
                    && word.last().is_some_and(u8::is_ascii_digit))
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
        // The name closes a task row; one that ends in a number lost its name.
        KernelLine::TaskRow => !word.iter().all(u8::is_ascii_digit),
        KernelLine::TaskHeader(_) => word == b"name",
        // The release is followed by the build number: `4.4.0-130-generic #156-Ubuntu`.
        KernelLine::Cpu { .. } => fields::find(body, b" #").is_some(),
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

/// `4288kB,`: a number with its unit, the rest of a number cut before it.
fn has_unit(word: &[u8]) -> bool {
    let digits = word.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && starts_with_unit(&word[digits..])
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

/// Leading indentation in columns (a tab counts as four, as in Markdown); in a quoted
/// line, what follows the quote marks (`> > ` then the text).
fn indent(line: &[u8]) -> usize {
    let blank = |text: &[u8]| -> (usize, usize) {
        let len = text
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        let columns = text[..len]
            .iter()
            .map(|b| if *b == b'\t' { 4 } else { 1 })
            .sum();
        (len, columns)
    };
    let (mut at, columns) = blank(line);
    let mut quoted = false;
    while let Some(mark) = line.get(at) {
        if !(*mark == b'>' || (*mark == b'|' && line.get(at + 1) == Some(&b' '))) {
            break;
        }
        quoted = true;
        at += 1;
        // One space closes each quote mark; more is the text's own.
        if line.get(at) == Some(&b' ') {
            at += 1;
        }
    }
    if quoted {
        blank(&line[at..]).1
    } else {
        columns
    }
}

/// Width of a line in characters (UTF-8 continuation bytes do not count).
fn columns(line: &[u8]) -> usize {
    line.iter().filter(|b| (**b & 0xC0) != 0x80).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::Lines;

    /// The kernel text of each line of `input` (a line break added at its end), wrapped
    /// lines joined, as the scanner feeds them.
    fn fed(input: &str) -> Vec<String> {
        fed_to_the_end(&format!("{input}\n"))
    }

    fn fed_to_the_end(input: &str) -> Vec<String> {
        let text = input.as_bytes();
        let mut lines = Lines::new(text, 0, 1).peekable();
        let mut joined = Vec::new();
        let mut out = Vec::new();
        while let Some(line) = lines.next() {
            let taken =
                take_continuations(text, &line, &mut lines, text.len(), |_| false, &mut joined);
            let body = if taken.is_empty() { line.body } else { &joined };
            out.push(String::from_utf8_lossy(body).into_owned());
        }
        out
    }

    #[test]
    fn a_token_cut_by_a_wrap_is_one_token_again() {
        let cases = [
            // A terminal or mailer at 80 columns cut the kill line inside a number.
            (
                "[14808.083306] Killed process 11344 (main) total-vm:390360kB, anon-rss:1837\n12kB, file-rss:1016kB",
                "Killed process 11344 (main) total-vm:390360kB, anon-rss:183712kB, file-rss:1016kB",
            ),
            // A zone line cut inside `free:12345kB`.
            (
                "[ 1.0] Node 0 DMA32 free:123\n45kB min:2264kB low:2828kB high:3392kB",
                "Node 0 DMA32 free:12345kB min:2264kB low:2828kB high:3392kB",
            ),
            // `gfp_mask=0x14200` / `ca(GFP_...)`.
            (
                "[ 1.0] tor invoked oom-killer: gfp_mask=0x14200\nca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0",
                "tor invoked oom-killer: gfp_mask=0x14200ca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0",
            ),
            // A key cut in two (the 4.4 docker paste).
            (
                "[ 1.0] Memory cgroup stats for /d: rss:1KB inacti\nve_file:88KB active_file:4KB unevictable:0KB",
                "Memory cgroup stats for /d: rss:1KB inactive_file:88KB active_file:4KB unevictable:0KB",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(fed(input), [want], "{input}");
        }
    }

    #[test]
    fn a_line_hard_wrapped_at_a_fixed_column_is_joined_where_the_column_fell() {
        let line = "[14808.063986] Task in /docker/34186d9bd07706222bd427bb647ceed81e8e108eb653ff73c7137099fca1cab6 killed as a result of limit of /docker/34186d9bd07706222bd427bb647ceed81e8e108eb653ff73c7137099fca1cab6";
        let want = crate::prefix::strip(line.as_bytes()).1;
        for column in WRAP_COLUMNS {
            let rows: Vec<&str> = line
                .as_bytes()
                .chunks(column)
                .map(|row| std::str::from_utf8(row).expect("ASCII"))
                .collect();
            let fed = fed(&rows.join("\n"));
            assert_eq!(fed, [String::from_utf8_lossy(want)], "{column} columns");
        }
    }

    #[test]
    fn continuation_markers_quote_levels_and_indents_are_dropped() {
        let cases = [
            // `↪` where a browser or mail reader wrapped a path.
            (
                "[ 1.0] Task in /docker/34186d9bd0\n\u{21aa}7706222 killed as a result of limit of /docker/x",
                "Task in /docker/34186d9bd07706222 killed as a result of limit of /docker/x",
            ),
            // The continuation is quoted one level less than its line.
            (
                "> > [ 1.0] memory: usage 524288kB, limit 52\n> 4288kB, failcnt 347",
                "memory: usage 524288kB, limit 524288kB, failcnt 347",
            ),
            // An editor's trailing backslash.
            (
                "[ 1.0] memory: usage 5242\\\n88kB, limit 524288kB, failcnt 347",
                "memory: usage 524288kB, limit 524288kB, failcnt 347",
            ),
            // A Markdown code block indented with a tab, then with four spaces.
            (
                "\t[ 1.0] Killed process 1 (a) total-vm:10kB, anon-rss:\n    5kB, file-rss:0kB, shmem-rss:0kB",
                "Killed process 1 (a) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB",
            ),
            // format=flowed keeps the space the wrap fell on.
            (
                "kernel: Killed process 995 (named) total-vm:399260kB, \nanon-rss:86516kB, file-rss:1288kB",
                "Killed process 995 (named) total-vm:399260kB, anon-rss:86516kB, file-rss:1288kB",
            ),
            // A Mem-Info row cut inside a key.
            (
                "[ 1.0] active_anon:125187 inac\ntive_anon:2602 isolated_anon:0",
                "active_anon:125187 inactive_anon:2602 isolated_anon:0",
            ),
            // A word wrap with the space dropped: the words stay apart.
            (
                "[ 1.0] Task in /a killed as a result of limit of\n/b",
                "Task in /a killed as a result of limit of /b",
            ),
            // A word wrap right after the comm (the line looked whole).
            (
                "Jan  4 10:04:40 h kernel: Memory cgroup out of memory: Killed process 11344 (main) \ntotal-vm:390360kB, anon-rss:183712kB",
                "Memory cgroup out of memory: Killed process 11344 (main) total-vm:390360kB, anon-rss:183712kB",
            ),
            // Three physical lines make one kill line.
            (
                "Out of Memory: Killed process 11300\n(run-parts)",
                "Out of Memory: Killed process 11300 (run-parts)",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(fed(input), [want], "{input}");
        }
    }

    #[test]
    fn real_kernel_lines_are_never_joined() {
        let cases: [&[&str]; 7] = [
            // Both lines carry a log prefix.
            &[
                "[ 1.0] memory: usage 1kB, limit 1kB, failcnt 0",
                "[ 1.1] swap: usage 0kB, limit 9007199254740988kB, failcnt 0",
            ],
            // A kernel line the parser knows, even without a prefix.
            &[
                "Killed process 1 (a) total-vm:10kB, anon-rss:",
                "oom_reaper: reaped process 1 (a), now anon-rss:0kB",
            ],
            // A whole line (76 columns, as wide as a wrap), then another line of a bare paste.
            &[
                "Killed process 1 (a) total-vm:1kB, anon-rss:2kB, file-rss:0kB, shmem-rss:0kB",
                "some prose after the report",
            ],
            // cgroup v2 prints its stats on the lines after the header.
            &[
                "[ 1.0] Memory cgroup stats for /hog.slice:",
                "anon 133267456",
            ],
            // The kernel's own multi-line Mem-Info printk.
            &[
                "active_anon:1 inactive_anon:2 isolated_anon:0",
                "active_file:3 inactive_file:4",
            ],
            // A zone line cut by the console, then the next line of a bare log.
            &[
                "Node 0 DMA free:1484kB min:104kB",
                "lowmem_reserve[]: 0 327 327 327",
            ],
            // Task rows of a bare paste.
            &[
                "[ 1439]   109  1439   139276    93739     245       3        0             0 tor",
                "[ 1440]     0  1440     1000      100      10       3        0             0 sh",
            ],
        ];
        for lines in cases {
            let input = lines.join("\n");
            let want: Vec<String> = lines
                .iter()
                .map(|line| {
                    String::from_utf8_lossy(crate::prefix::strip(line.as_bytes()).1).into_owned()
                })
                .collect();
            assert_eq!(fed(&input), want, "{input}");
        }
    }

    #[test]
    fn a_number_cut_by_the_end_of_the_input_is_dropped() {
        for (cut, kept) in [
            ("rss:1971", "rss:"),
            ("anon 5280", "anon "),
            ("gfp_mask=0x142", "gfp_mask="),
            ("usage 524288kB, limit 5242", "usage 524288kB, limit "),
            (
                "[ 1234]     0  1234    74852     47",
                "[ 1234]     0  1234    74852     ",
            ),
        ] {
            assert_eq!(without_cut_number(cut.as_bytes()), kept.as_bytes(), "{cut}");
        }
        for whole in [
            "rss:197168KB",
            "Killed process 1 (tar).",
            "oom_score_adj:0kB",
            "",
        ] {
            assert_eq!(without_cut_number(whole.as_bytes()), whole.as_bytes());
        }
        // Only at the very end: a line break after the number says it was whole.
        assert_eq!(
            fed_to_the_end("[ 1.0] memory: usage 524288kB, limit 5242"),
            ["memory: usage 524288kB, limit"]
        );
        assert_eq!(
            fed_to_the_end("[ 1.0] memory: usage 524288kB, limit 5242\n"),
            ["memory: usage 524288kB, limit 5242"]
        );
    }
}
