//! Kernel kill lines carried inside another program's message: Kubernetes events and
//! node-problem-detector.
//!
//! node-problem-detector's `kernel-monitor` re-logs the kernel's `Killed process` line as
//! an `OOMKilling` event, which reaches users as a `kubectl get events` or `kubectl
//! describe node` table row, as a JSON string (`kubectl get events -o json`, NPD's own
//! JSON, a container log line), as a YAML scalar (`-o yaml`, folded at 80 columns), or in
//! NPD's log (`... Reason:OOMKilling Message:Memory cgroup out of memory: Killed ...`).
//! [`find`] recognises the envelope around the kill line (the `OOMKilling` reason, or a
//! `message` key right before it), undoes its quoting (JSON escapes `\"`, `\n`,
//! `\u003e`; YAML `''` and folded lines) and hands back the kernel's line.
//!
//! Such a report holds only the kill line's figures. It is flagged with its
//! [`Envelope`], and one kill is one report: the scan drops an envelope's report when
//! the kernel's own report of the same kill, or an earlier envelope of it, is in the
//! input ([`kill_key`]).
//!
//! Cost: the text before a kill line is searched back at most [`MAX_LOOKBACK`] bytes and
//! never past the previous anchor, and a kill line that starts inside the value read
//! for the previous one is not read again, so each byte is searched back once and read
//! forward once; a kill line is read for at most [`MAX_KILL_BYTES`].

use std::collections::BTreeSet;

use serde::Serialize;

use crate::builder::ReportBuilder;
use crate::fields::{self, KernelLine};
use crate::limits::MAX_RELOGGED_REPORTS;
use crate::lines::LogicalLine;
use crate::report::{Killed, Report};
use crate::scan::Found;

/// How far before a kill line its envelope (reason, `message` key) is looked for.
pub(crate) const MAX_LOOKBACK: usize = 1024;
/// The longest kill line read out of an envelope (a real one is under 300 bytes).
pub(crate) const MAX_KILL_BYTES: usize = 1024;
/// Lines a YAML scalar folded over that are joined back.
const MAX_FOLDED_LINES: usize = 8;

/// The message a kill line was read out of, when it was not the kernel's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// A `kubectl get events` or `kubectl describe node` row with reason `OOMKilling`.
    EventTable,
    /// A JSON string: `kubectl get events -o json`, an Event object, a container log line,
    /// `journalctl -o json`.
    Json,
    /// A YAML scalar (`kubectl get events -o yaml`), its folded lines joined.
    Yaml,
    /// node-problem-detector's own log: `Reason:OOMKilling Message:...`.
    NpdLog,
}

/// A kill line found inside an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Embedded {
    /// The kernel's line, unquoted: `Memory cgroup out of memory: Killed process ...`.
    pub text: Vec<u8>,
    pub envelope: Envelope,
    /// Where the envelope's line starts (or the look-back began).
    pub start: usize,
    /// Where the kill line starts in the input.
    pub kill_start: usize,
    /// Just past the value that held the kill line: its closing quote, or the end of the
    /// last line it used (a folded scalar uses several); at least the stream's cut when
    /// `incomplete`.
    pub end: usize,
    /// Where the value ended in the input: the anchor search goes on from here.
    pub value_end: usize,
    /// The kill line goes on past `complete_until`: a stream must read on first.
    pub incomplete: bool,
}

/// The reports a scan read out of envelopes, kept apart from the kernel's: they go after
/// them, once the whole input showed whether the kernel's own report of the kill is there.
#[derive(Default)]
pub(crate) struct Relogged {
    /// The search back for the next envelope stops here (the last anchor tried).
    floor: usize,
    /// Text before this was read as an envelope's value already: a kill line starting
    /// inside it is not read again (each byte is read forward once).
    read_to: usize,
    pub reports: Vec<Report>,
    /// One per report: `open` when its kill line is still being read (a stream window).
    pub found: Vec<Found>,
    keys: BTreeSet<u64>,
    /// The first envelope whose value runs into the line still being read (a stream
    /// window's cut), reported or not: the next window reads its line again (or the line
    /// of the value before it that ran into its line, and so on).
    pub resume_at: Option<usize>,
    /// Start and end of the last envelope's value, the start that of the first value of
    /// a run in which each began on a line the one before ran into.
    last_value: Option<(usize, usize)>,
}

impl Relogged {
    /// When the kill line at `anchor` (on `line`) sits in an envelope: keeps its report
    /// (unless this scan has one of the same kill) and returns where the anchor search
    /// goes on, past the envelope's value.
    pub fn take(
        &mut self,
        text: &[u8],
        line: &LogicalLine<'_>,
        anchor: usize,
        complete_until: Option<usize>,
    ) -> Option<usize> {
        // A kill line at the anchor is this anchor's; any other anchor (`Out of memory:`
        // with no kill after it, `oom-kill:`) looks on through its line for one, as the
        // scan goes on past the line's end after it.
        let at_anchor = kill_opening(text, anchor);
        let limit = line.end.clamp(anchor, text.len());
        let mut killed_at = match at_anchor {
            Some(killed_at) => killed_at,
            None => anchor + memchr::memmem::find(&text[anchor..limit], KILLED)?,
        };
        let embedded = loop {
            let kill_start = kill_line_start(text, killed_at);
            let floor = self.floor;
            self.floor = self.floor.max(kill_start);
            if let Some(found) = find(text, killed_at, floor, self.read_to, complete_until) {
                // A value that begins on a line the previous value ran into is read only
                // after that one: a stream reads both again from the first one's line.
                let chain_start = match self.last_value {
                    Some((chain_start, end)) if found.start < end => chain_start,
                    _ => found.start,
                };
                self.last_value = Some((chain_start, found.end));
                self.read_to = found.end;
                if found.incomplete {
                    self.resume_at =
                        Some(self.resume_at.map_or(chain_start, |at| at.min(chain_start)));
                }
                if matches!(fields::classify(&found.text), KernelLine::Killed { .. }) {
                    break found;
                }
            }
            if at_anchor.is_some() {
                return None;
            }
            let from = (killed_at + KILLED.len()).min(limit);
            killed_at = from + memchr::memmem::find(&text[from..limit], KILLED)?;
        };
        let next = embedded.value_end.max(anchor + 1);
        let kill_line = LogicalLine::standalone(
            embedded.start,
            embedded.end,
            line.line_no,
            line.prefix,
            &embedded.text,
        );
        let mut builder = ReportBuilder::new(&kill_line);
        builder.feed(&kill_line);
        let mut report = builder.finish();
        report.envelope = Some(embedded.envelope);
        let key = report.killed.as_ref().map(kill_key)?;
        if self.reports.len() < MAX_RELOGGED_REPORTS && self.keys.insert(key) {
            self.reports.push(report);
            self.found.push(Found {
                open: embedded.incomplete,
                used: Vec::new(),
            });
        }
        Some(next)
    }
}

/// `reports` without those whose kill is in `kernel_keys` (the kernel's own report of it
/// is in the input).
pub(crate) fn without_kernel_kills(
    reports: Vec<Report>,
    kernel_keys: &BTreeSet<u64>,
) -> Vec<Report> {
    reports
        .into_iter()
        .filter(|report| {
            report
                .killed
                .as_ref()
                .is_none_or(|killed| !kernel_keys.contains(&kill_key(killed)))
        })
        .collect()
}

/// The kill keys of the kernel's reports.
pub(crate) fn kernel_kill_keys<'a>(reports: impl IntoIterator<Item = &'a Report>) -> BTreeSet<u64> {
    reports
        .into_iter()
        .filter_map(|report| report.killed.as_ref())
        .map(kill_key)
        .collect()
}

/// How the value holding the kill line was quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// To the line's end (a table row, a plain scalar).
    Plain,
    /// A JSON (or YAML double-quoted) string: backslash escapes, ends at `"`.
    Json,
    /// A JSON string inside a JSON string (`\"message\":\"...\"`): ends at `\"`.
    NestedJson,
    /// A YAML single-quoted scalar: `''` is `'`, ends at `'`.
    Single,
}

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

const KILLED: &[u8] = b"Killed process ";

/// Where `Killed process ` is when the kill line starts at `anchor` (the scan's anchor
/// is at its `Killed process` or at the `Out of memory` / `out of memory: Kill` before
/// it): one comparison per anchor.
fn kill_opening(text: &[u8], anchor: usize) -> Option<usize> {
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

fn plain_or_json(json_context: bool) -> Quoting {
    if json_context {
        Quoting::Json
    } else {
        Quoting::Plain
    }
}

/// The start of the kernel's line whose `Killed process` is at `killed_at`: with its
/// `Memory cgroup out of memory: ` or `Out of memory: ` opening.
fn kill_line_start(text: &[u8], killed_at: usize) -> usize {
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
fn has_word(text: &[u8], word: &[u8]) -> bool {
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
fn message_key(text: &[u8]) -> Option<(Quoting, bool)> {
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

fn skip_spaces(text: &[u8]) -> &[u8] {
    &text[text.iter().take_while(|b| **b == b' ').count()..]
}

/// A `"` that is not escaped: the JSON string closed.
fn has_unescaped_quote(text: &[u8]) -> bool {
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

/// The kill line from `from` on, unquoted: the text, where its value ended (past the
/// closing quote, or at the end of the last line it used), and whether it ran into the
/// incomplete line at `complete_until`.
fn unquote(
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
fn unicode_escape(text: &[u8]) -> (char, usize) {
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

/// One kill, whoever logged it: the victim's pid, comm and the sizes the kill line
/// printed. The kernel's report and an event re-logging its line have the same key.
pub(crate) fn kill_key(killed: &Killed) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |bytes: &[u8]| {
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash = (hash ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    };
    add(&killed.pid.to_le_bytes());
    add(killed.comm.as_bytes());
    add(&killed.total_vm_kb.unwrap_or(u64::MAX).to_le_bytes());
    add(&killed.anon_rss_kb.unwrap_or(u64::MAX).to_le_bytes());
    hash
}

/// Bytes searched back and read forward, for tests that count work.
#[cfg(test)]
pub(crate) mod work {
    use std::cell::Cell;

    thread_local! {
        static BYTES: Cell<usize> = const { Cell::new(0) };
    }

    pub fn count(bytes: usize) {
        BYTES.with(|cell| cell.set(cell.get() + bytes));
    }

    /// Bytes looked at since the last call, on this thread.
    pub fn take() -> usize {
        BYTES.with(|cell| cell.replace(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILL: &str = "Memory cgroup out of memory: Killed process 3504804 (kubectl) total-vm:753508kB, anon-rss:58776kB, file-rss:29400kB, shmem-rss:0kB, UID:0 pgtables:288kB oom_score_adj:999";

    fn embedded(input: &str) -> Option<(String, Envelope)> {
        let killed_at = input
            .find("Killed process")
            .expect("a kill line in the case");
        find(input.as_bytes(), killed_at, 0, 0, None).map(|found| {
            (
                String::from_utf8_lossy(&found.text).into_owned(),
                found.envelope,
            )
        })
    }

    #[test]
    fn reads_the_kill_line_out_of_every_envelope() {
        let cases = [
            (format!("5m          Warning   OOMKilling   node/node-1   {KILL}"), Envelope::EventTable),
            (format!("kube-system   5m   Warning   OOMKilling   node/node-1   {KILL}   5m   3   node-1.176"), Envelope::EventTable),
            (format!("  Warning  OOMKilling  2m (x3 over 5m)  kernel-monitor  {KILL}"), Envelope::EventTable),
            (format!("    \"message\": \"{KILL}\","), Envelope::Json),
            (format!("{{\"kind\":\"Event\",\"reason\":\"OOMKilling\",\"message\":\"{KILL}\",\"count\":3}}"), Envelope::Json),
            (format!("{{\"log\":\"{{\\\"reason\\\":\\\"OOMKilling\\\",\\\"message\\\":\\\"{KILL}\\\"}}\\n\",\"stream\":\"stdout\"}}"), Envelope::Json),
            (format!("  \"MESSAGE\" : \"{KILL}\","), Envelope::Json),
            (format!("  \"_SOURCE\" : \"/dev/kmsg\", \"MESSAGE\" : \"{KILL}\","), Envelope::Json),
            (format!("  message: '{KILL}'"), Envelope::Yaml),
            (format!("Jun 13 14:35:38 node-1 node-problem-detector[812]: I0613 14:35:38.123456 1 log_monitor.go:160] New status generated: &{{Source:kernel-monitor Events:[{{Severity:warn Timestamp:2023-06-13 14:35:38 +0000 UTC Reason:OOMKilling Message:{KILL}}}] Conditions:[]}}"), Envelope::NpdLog),
            (format!("{{\"log\":\"I0613 14:35:38.123456 1 log_monitor.go:160] New status generated: \\u0026{{Source:kernel-monitor Events:[{{Severity:warn Reason:OOMKilling Message:{KILL}}}] Conditions:[]}}\\n\",\"stream\":\"stderr\"}}"), Envelope::NpdLog),
            (format!("    \"message\": \"oom-kill:constraint=CONSTRAINT_MEMCG,task=kubectl\\n{KILL}\\n\","), Envelope::Json),
        ];
        for (line, envelope) in cases {
            assert_eq!(
                embedded(&line),
                Some((KILL.to_string(), envelope)),
                "{line}"
            );
        }
    }

    #[test]
    fn json_escapes_and_yaml_folds_are_undone() {
        let escaped = r#"  "message": "Out of memory: Killed process 7 (a\"b\u003e\ud83d\ude00) total-vm:10kB, anon-rss:5kB, file-rss:0kB\n","#;
        assert_eq!(
            embedded(escaped),
            Some(("Out of memory: Killed process 7 (a\"b>😀) total-vm:10kB, anon-rss:5kB, file-rss:0kB".to_string(), Envelope::Json))
        );
        let folded = "  message: 'Memory cgroup out of memory: Killed process 3504804 (it''s) total-vm:753508kB,\n    anon-rss:58776kB, file-rss:29400kB'\n  metadata:\n";
        assert_eq!(
            embedded(folded),
            Some(("Memory cgroup out of memory: Killed process 3504804 (it's) total-vm:753508kB, anon-rss:58776kB, file-rss:29400kB".to_string(), Envelope::Yaml))
        );
        let allocating = "  Warning  OOMKilling  1m  kernel-monitor  Out of memory (oom_kill_allocating_task): Killed process 7 (a) total-vm:10kB, anon-rss:5kB, file-rss:0kB";
        assert_eq!(
            embedded(allocating).map(|(text, _)| text),
            Some(allocating[43..].to_string())
        );
        let double = "  message: \"Out of memory: Killed process 7 (a) total-vm:10kB, anon-rss:5kB,\\\n    \\ file-rss:0kB\"\n";
        assert_eq!(
            embedded(double).map(|(text, _)| text),
            Some(
                "Out of memory: Killed process 7 (a) total-vm:10kB, anon-rss:5kB, file-rss:0kB"
                    .to_string()
            )
        );
    }

    #[test]
    fn kernel_lines_and_other_programs_are_not_envelopes() {
        let kept = [
            format!("[  599.537757] {KILL}"),
            format!("Jun 13 14:35:38 node-1 kernel: {KILL}"),
            format!("Jun 13 14:35:38 node-1 kubelet[812]: {KILL}"),
            format!("the message below: it said {KILL}"),
            format!("  Warning  OOMKillingX  2m  kernel-monitor  {KILL}"),
            format!("    \"message\": \"an earlier line\", \"other\": \"{KILL}\""),
            format!("  Warning  SystemOOM  2m  kubelet  System OOM encountered, victim process: kubectl, pid: 3504804 {KILL}"),
        ];
        for line in kept {
            assert_eq!(embedded(&line), None, "{line}");
        }
    }

    #[test]
    fn a_folded_scalar_cut_by_the_stream_is_incomplete() {
        let folded =
            "  message: 'Out of memory: Killed process 7 (a) total-vm:10kB,\n    anon-rss:5kB'\n";
        let cut = folded.find("\n    anon").map(|at| at + 1).unwrap_or(0);
        let killed_at = folded.find("Killed").unwrap_or(0);
        let found = find(folded.as_bytes(), killed_at, 0, 0, Some(cut)).expect("an envelope");
        assert!(found.incomplete);
        let found =
            find(folded.as_bytes(), killed_at, 0, 0, Some(folded.len())).expect("an envelope");
        assert!(!found.incomplete);
        let found = find(folded.as_bytes(), killed_at, 0, 0, None).expect("an envelope");
        assert!(!found.incomplete);
        assert_eq!(found.end, folded.len() - 1);
    }

    #[test]
    fn the_search_back_stops_at_the_floor() {
        let line = format!("  Warning  OOMKilling  2m  kernel-monitor  {KILL}");
        let killed_at = line.find("Killed process").unwrap_or(0);
        assert!(find(line.as_bytes(), killed_at, 0, 0, None).is_some());
        assert!(find(line.as_bytes(), killed_at, 30, 0, None).is_none());
    }

    fn row(pid: u32, comm: &str) -> String {
        format!("  Warning  OOMKilling  5m (x3 over 10m)  kernel-monitor  Memory cgroup out of memory: Killed process {pid} ({comm}) total-vm:1000kB, anon-rss:500kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:8kB oom_score_adj:0\n")
    }

    #[test]
    fn one_kill_is_one_report_whoever_logged_it_and_wherever() {
        let kernel = "[ 5.1] a invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n\
                      [ 5.1] CPU: 0 PID: 7 Comm: a Not tainted 6.1.0-18-amd64 #1\n\
                      [ 5.2] memory: usage 1024kB, limit 1024kB, failcnt 9\n\
                      [ 5.3] Memory cgroup out of memory: Killed process 7 (a) total-vm:1000kB, anon-rss:500kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:8kB oom_score_adj:0\n";
        let json = "{\"reason\":\"OOMKilling\",\"message\":\"Memory cgroup out of memory: Killed process 7 (a) total-vm:1000kB, anon-rss:500kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:8kB oom_score_adj:0\"}\n";
        let table = row(7, "a");
        let orders = [
            [kernel, json, table.as_str()],
            [json, kernel, table.as_str()],
            [table.as_str(), json, kernel],
        ];
        for parts in orders {
            let input = parts.concat();
            let parsed = crate::parse(input.as_bytes());
            assert_eq!(parsed.reports.len(), 1, "{input}");
            let report = &parsed.reports[0];
            assert_eq!(report.envelope, None, "the kernel's own report stays");
            assert!(report.trigger.is_some());
        }
        // Without the kernel's report: the two events are one kill.
        let input = format!("{json}{table}{table}");
        let parsed = crate::parse(input.as_bytes());
        assert_eq!(parsed.reports.len(), 1);
        assert_eq!(parsed.reports[0].envelope, Some(Envelope::Json));
    }

    #[test]
    fn distinct_kills_in_events_are_one_report_each_after_the_kernels() {
        let kernel = "[ 9.0] Out of memory: Killed process 9 (k) total-vm:10kB, anon-rss:5kB, file-rss:0kB\n";
        let input = format!(
            "{}{}{}{kernel}{}",
            row(3, "x"),
            row(4, "y"),
            row(3, "x"),
            row(5, "z")
        );
        let parsed = crate::parse(input.as_bytes());
        let pids: Vec<_> = parsed
            .reports
            .iter()
            .map(|r| (r.killed.as_ref().map(|k| k.pid), r.envelope))
            .collect();
        let table = Some(Envelope::EventTable);
        assert_eq!(
            pids,
            [
                (Some(9), None),
                (Some(3), table),
                (Some(4), table),
                (Some(5), table)
            ]
        );
        assert_eq!(parsed.reports[1].span.first_line, 1);
        assert_eq!(parsed.reports[3].span.first_line, 5);
    }

    #[test]
    fn a_flood_of_event_rows_keeps_at_most_the_cap() {
        let input: String = (0..MAX_RELOGGED_REPORTS as u32 + 500)
            .map(|pid| row(pid, "f"))
            .collect();
        let parsed = crate::parse(input.as_bytes());
        assert_eq!(parsed.reports.len(), MAX_RELOGGED_REPORTS);
    }

    #[test]
    fn a_hostile_line_of_envelopes_is_read_in_linear_work() {
        // Every anchor has an envelope before it; none or each decodes: each byte is
        // searched back once and read forward once, not once per anchor near it.
        let pieces = [
            "OOMKilling Killed process x ",
            "OOMKilling Killed process 1 x ",
            "\"message\":\"Killed process 1 (a) total-vm:1kB\",",
            "message: Killed process 2 (b) ",
            // A non-kill anchor: the kill lines after it on its line are all tried.
            "oom-kill:x OOMKilling Killed process y ",
        ];
        for piece in pieces {
            let input = piece.repeat(40_000);
            work::take();
            let parsed = crate::parse(input.as_bytes());
            let bytes = work::take();
            assert!(parsed.reports.len() <= MAX_RELOGGED_REPORTS);
            assert!(
                bytes <= 3 * input.len(),
                "{piece}: {bytes} bytes read for {}",
                input.len()
            );
        }
    }
}
