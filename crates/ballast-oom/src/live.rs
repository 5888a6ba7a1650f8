//! Follows a live log (a serial console, a kernel ring buffer): lines in, reports out.
//!
//! The caller pushes lines (or pieces of text) with its own stream positions (byte
//! offsets, record sequence numbers) and a tag per line (its arrival time, say), then
//! polls. This module owns what a report is on a live log:
//! - which lines may belong to a report ([`may_belong_to_report`]: the scanner's
//!   anchors plus the lines that continue a report, `oom_reaper`, `Kernel panic`);
//! - a bounded window of recent lines (at most [`LiveConfig::window_bytes`]; while
//!   nothing waits only the newest [`LiveConfig::idle_lines`]);
//! - the parse of the window past the emitted watermark ([`crate::parse`]) and where
//!   each report sits in the caller's stream (its first and last line);
//! - whether a report ended ([`crate::Report::has_end`]) and whether the oom_reaper
//!   confirmed the kill;
//! - the kernel's own reports only: a kill line re-logged inside another program's
//!   message (node-problem-detector, a Kubernetes event) is the same kill again, so
//!   an envelope report is never returned.
//!
//! When a report is complete enough to hand out is the caller's (time, grace lines):
//! [`LiveParser::poll`] asks it for each report in stream order and stops at the first
//! one it holds back, so reports come out in order and once (the watermark, a stream
//! position the caller may persist, moves past each returned report).

use std::collections::VecDeque;
use std::sync::OnceLock;

use aho_corasick::AhoCorasick;

use crate::decode::Decoding;
use crate::fields;
use crate::limits::MAX_WINDOW_BYTES;
use crate::report::Report;
use crate::scan::{self, Seed, ANCHORS};
use crate::stream;

/// Lines that continue a report the scanner's anchors start (and old spellings of a
/// kill line): a poll is due when one arrives.
const CONTINUATIONS: [&str; 4] = [
    "Kill process",
    "killed process",
    "oom_reaper",
    "Kernel panic",
];

fn triggers() -> &'static AhoCorasick {
    static TRIGGERS: OnceLock<AhoCorasick> = OnceLock::new();
    TRIGGERS.get_or_init(|| {
        AhoCorasick::new(ANCHORS.iter().chain(CONTINUATIONS.iter()))
            .expect("the trigger patterns are fixed literals")
    })
}

/// Whether `line` can belong to an OOM report (a kill line, an `invoked oom-killer`
/// header, an `oom_reaper` line, a panic): after one, the window is worth a parse.
pub fn may_belong_to_report(line: &[u8]) -> bool {
    triggers().is_match(line)
}

/// Window bounds of a [`LiveParser`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConfig {
    /// Bytes of line text the window holds at most (plus the line that pushed it
    /// over); the oldest lines fall out.
    pub window_bytes: usize,
    /// Lines kept while nothing waits (no report line since the last poll, no report
    /// held back): older lines hold no report start. `None` keeps every line.
    pub idle_lines: Option<usize>,
    /// Longest report text returned in [`LiveReport::text`].
    pub max_text_bytes: usize,
}

/// One line of the caller's stream, without its line break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLine<T> {
    /// Stream position of the line's start.
    pub start: u64,
    /// Stream position just past the line (its line break included).
    pub end: u64,
    pub bytes: Vec<u8>,
    /// The caller's note on this line (its arrival time, say).
    pub tag: T,
}

/// A report found by a poll, before the caller decides whether it is out.
#[derive(Debug)]
pub struct Pending<'a, T> {
    pub report: &'a Report,
    /// Stream position of the report's first line.
    pub start: u64,
    /// Stream position just past the report's last line.
    pub end: u64,
    /// [`Report::has_end`]: a kill line, a panic or "no killable process" came.
    pub has_end: bool,
    /// The oom_reaper confirmed the kill: nothing more of this report will come.
    pub reaped: bool,
    /// Lines in the window after the report's last line.
    pub lines_after: usize,
    /// The last of the kernel's reports in the window.
    pub last: bool,
    /// The tag of the report's last line.
    pub last_tag: &'a T,
}

/// A report handed out.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveReport {
    pub report: Report,
    /// The report's lines as pushed, joined by `\n` (at most
    /// [`LiveConfig::max_text_bytes`]).
    pub text: Vec<u8>,
    /// Stream position of the report's first line.
    pub start: u64,
    /// Stream position just past the report's last line.
    pub end: u64,
    /// [`Report::has_end`]; false for a report the caller let out unfinished.
    pub has_end: bool,
}

/// One line of the window; its bytes are in [`LiveParser::text`].
#[derive(Debug)]
struct Entry<T> {
    start: u64,
    end: u64,
    /// Where the line's bytes start: an offset of the text since the parser began
    /// (`LiveParser::text[at - text_base..]`).
    at: usize,
    /// The line's bytes, without the line break.
    len: usize,
    /// A line break follows (false only for the end of a [`LiveParser::push_text`]).
    newline: bool,
    /// The line may still grow (the end of a `push_text`, until [`LiveParser::end_line`]).
    open: bool,
    tag: T,
}

impl<T> Entry<T> {
    /// Bytes the line takes in the window's text, its line break included.
    fn cost(&self) -> usize {
        self.len + usize::from(self.newline)
    }
}

/// A live log's window and watermark (see the module documentation).
#[derive(Debug)]
pub struct LiveParser<T> {
    config: LiveConfig,
    /// The window's lines, joined by their line breaks as they came: the parse reads
    /// it as it is (no copy). Bytes before the first line are dropped lazily.
    text: Vec<u8>,
    /// Offset (since the parser began) of `text[0]`.
    text_base: usize,
    window: VecDeque<Entry<T>>,
    window_bytes: usize,
    /// Reports starting before this stream position were returned already.
    emitted_through: u64,
    /// Text before this position was parsed and held no report start (not for the
    /// caller to persist: parsed again after a restart, the watermark drops repeats).
    scanned_through: u64,
    /// A line that may belong to a report arrived since the last poll.
    trigger_pending: bool,
    /// The last poll held a report back.
    waiting: bool,
    lines_since_poll: usize,
    /// The release of the last `Linux version` boot banner in the lines before
    /// `banner_through`, for reports that do not print it themselves.
    banner: Option<String>,
    /// Lines starting before this position were searched for a boot banner.
    banner_through: u64,
}

/// Text kept beyond the window before its dropped part is given back.
const MIN_COMPACT_BYTES: usize = 512;

impl<T> LiveParser<T> {
    /// A parser that returns no report starting before `emitted_through`. Its window
    /// holds at most [`MAX_WINDOW_BYTES`], whatever `config` asks.
    pub fn new(mut config: LiveConfig, emitted_through: u64) -> Self {
        config.window_bytes = config.window_bytes.min(MAX_WINDOW_BYTES);
        // Room for the idle tail and the line that pushes one out: a quiet log never
        // grows it.
        let capacity = config.idle_lines.map_or(0, |lines| lines + 1);
        LiveParser {
            config,
            text: Vec::new(),
            text_base: 0,
            window: VecDeque::with_capacity(capacity),
            window_bytes: 0,
            emitted_through,
            scanned_through: 0,
            trigger_pending: false,
            waiting: false,
            lines_since_poll: 0,
            banner: None,
            banner_through: 0,
        }
    }

    /// The bytes of `entry` (without its line break).
    fn bytes(&self, entry: &Entry<T>) -> &[u8] {
        let from = entry.at - self.text_base;
        self.text.get(from..from + entry.len).unwrap_or_default()
    }

    /// Remembers the boot banner of a line the parse will not see again (once a line).
    fn search_banner(&mut self, index: usize) {
        let Some(entry) = self.window.get(index) else {
            return;
        };
        if entry.start >= self.banner_through {
            if let Some(release) = fields::last_kernel_banner(self.bytes(entry)) {
                self.banner = Some(release);
            }
            self.banner_through = entry.end;
        }
    }

    /// Reports starting before this stream position were returned.
    pub fn emitted_through(&self) -> u64 {
        self.emitted_through
    }

    /// Bytes of line text held in the window.
    pub fn window_bytes(&self) -> usize {
        self.window_bytes
    }

    /// Lines held in the window.
    pub fn window_lines(&self) -> usize {
        self.window.len()
    }

    /// Line slots the window holds memory for.
    pub fn window_capacity(&self) -> usize {
        self.window.capacity()
    }

    /// A line that may belong to a report arrived since the last poll.
    pub fn trigger_pending(&self) -> bool {
        self.trigger_pending
    }

    /// Lines pushed since the last poll.
    pub fn lines_since_poll(&self) -> usize {
        self.lines_since_poll
    }

    /// Where a restarted reader should start so no report held back is lost: the
    /// first line in the window past the watermark (None: nothing held).
    pub fn resume_offset(&self) -> Option<u64> {
        self.window
            .iter()
            .find(|entry| entry.start >= self.emitted_through)
            .map(|entry| entry.start)
    }

    /// Forgets the window (the stream was cut: truncation, a new file).
    pub fn clear_window(&mut self) {
        self.window.clear();
        self.text_base += self.text.len();
        self.text.clear();
        self.text.shrink_to(MIN_COMPACT_BYTES);
        self.window_bytes = 0;
        self.waiting = false;
        self.trigger_pending = false;
    }

    /// Adds one whole line.
    pub fn push(&mut self, line: LiveLine<T>) {
        self.add(line.start, line.end, &line.bytes, true, line.tag);
    }

    /// Adds `text` whose first byte has stream position `start`, split at `\n`. A
    /// last line without a line break stays open (no report on it comes out): the
    /// next `push_text` continues it, [`Self::end_line`] closes it.
    pub fn push_text(&mut self, start: u64, text: &[u8], tag: T)
    where
        T: Clone,
    {
        let mut at = 0;
        while at < text.len() {
            let (piece, newline) = match memchr::memchr(b'\n', &text[at..]) {
                Some(length) => (&text[at..at + length], true),
                None => (&text[at..], false),
            };
            let consumed = piece.len() + usize::from(newline);
            let position = start.saturating_add(at as u64);
            let end = position.saturating_add(consumed as u64);
            at += consumed;
            match self.window.back_mut() {
                // The open line is the text's last: it grows in place.
                Some(open) if open.open && open.end == position => {
                    open.len += piece.len();
                    open.end = end;
                    open.newline = newline;
                    open.open = !newline;
                    open.tag = tag.clone();
                    let from = open.at - self.text_base;
                    self.text.extend_from_slice(piece);
                    if newline {
                        self.text.push(b'\n');
                    }
                    self.window_bytes += consumed;
                    if may_belong_to_report(&self.text[from..]) {
                        self.trigger_pending = true;
                    }
                    self.trim();
                }
                _ => self.add(position, end, piece, newline, tag.clone()),
            }
        }
    }

    /// The text pushed so far ends with a whole line even without a line break (the
    /// end of an input): a report on it may come out.
    pub fn end_line(&mut self) {
        if let Some(last) = self.window.back_mut() {
            last.open = false;
        }
    }

    fn add(&mut self, start: u64, end: u64, bytes: &[u8], newline: bool, tag: T) {
        if may_belong_to_report(bytes) {
            self.trigger_pending = true;
        }
        self.lines_since_poll += 1;
        let entry = Entry {
            start,
            end,
            at: self.text_base + self.text.len(),
            len: bytes.len(),
            newline,
            open: !newline,
            tag,
        };
        self.text.extend_from_slice(bytes);
        if newline {
            self.text.push(b'\n');
        }
        self.window_bytes += entry.cost();
        self.window.push_back(entry);
        self.trim();
    }

    fn trim(&mut self) {
        // Nothing waits (no report line since the last poll, no report settling): older
        // lines hold no report start, so only a short tail is kept. A console without
        // OOMs then costs a few KiB instead of the whole window.
        let idle = self
            .config
            .idle_lines
            .filter(|_| !self.trigger_pending && !self.waiting);
        let keep_lines = idle.unwrap_or(usize::MAX);
        let mut dropped = false;
        while self.window_bytes > self.config.window_bytes || self.window.len() > keep_lines {
            self.search_banner(0);
            match self.window.pop_front() {
                Some(old) => self.window_bytes -= old.cost(),
                None => break,
            }
            dropped = true;
        }
        if dropped {
            self.compact();
        }
        // Back to idle after a report: give back the slots the report needed.
        if let Some(lines) = idle {
            if self.window.capacity() > 4 * (lines + 1) {
                self.window.shrink_to(lines + 1);
            }
            let room = (2 * self.text.len()).max(MIN_COMPACT_BYTES);
            if self.text.capacity() > 2 * room {
                self.text.shrink_to(room);
            }
        }
    }

    /// Drops the text before the window's first line once it is most of the buffer
    /// (each byte moved a bounded number of times: linear overall).
    fn compact(&mut self) {
        let first = self
            .window
            .front()
            .map_or(self.text_base + self.text.len(), |entry| entry.at);
        let dead = first - self.text_base;
        if dead >= MIN_COMPACT_BYTES.max(self.text.len() / 2) || self.window.is_empty() {
            self.text.drain(..dead);
            self.text_base = first;
        }
    }

    /// Index in the window of the line holding text offset `offset` (since the parser
    /// began).
    fn line_at(&self, offset: usize) -> usize {
        self.window
            .partition_point(|entry| entry.at <= offset)
            .saturating_sub(1)
    }

    /// Parses the window past the watermark and returns, in stream order, the reports
    /// `settle` lets out; the first one it holds back stops the poll (it and the
    /// reports after it are parsed again by the next poll).
    pub fn poll(&mut self, mut settle: impl FnMut(&Pending<'_, T>) -> bool) -> Vec<LiveReport> {
        self.trigger_pending = false;
        self.waiting = false;
        self.lines_since_poll = 0;
        let from = self.emitted_through.max(self.scanned_through);
        let Some(first) = self.window.iter().position(|entry| entry.start >= from) else {
            return Vec::new();
        };
        // Lines the parse starts past: each searched once for a boot banner.
        let unsearched = self
            .window
            .partition_point(|entry| entry.start < self.banner_through);
        for index in unsearched..first {
            self.search_banner(index);
        }
        // Unless a report is held back below, the next poll starts past this text (at
        // the last line when it may still grow).
        let mut scanned_through =
            self.window.back().map_or(
                from,
                |entry| {
                    if entry.open {
                        entry.start
                    } else {
                        entry.end
                    }
                },
            );
        // The window past the watermark: the parse reads the text as it is.
        let base = self.window.get(first).map_or(0, |entry| entry.at);
        let text = self.text.get(base - self.text_base..).unwrap_or_default();
        let seed = Seed {
            kernel_banner: self.banner.clone(),
            ..Seed::default()
        };
        let scanned = scan::scan_window(text, seed);
        if scanned.decoding == Decoding::None {
            // An unclaimed `Mem-Info:` (or task table header): a kill line still to come
            // may take it as its report's body, so the next poll reads it again.
            let orphan = stream::unclaimed_mem_info(text, scanned.last_report_end, text.len());
            if let Some(entry) = orphan.and_then(|at| self.window.get(self.line_at(base + at))) {
                scanned_through = scanned_through.min(entry.start);
            }
        }
        // The scan's own reports are the kernel's: kills read out of envelopes are apart.
        let reports = scanned.reports;
        let count = reports.len();
        // Reports sharing a line with an earlier one (a one-line paste holds several)
        // are all new in this poll: the watermark is a line's position.
        let watermark = self.emitted_through;
        let mut out = Vec::new();
        let mut held_at = None;
        for (index, report) in reports.into_iter().enumerate() {
            let first_index = self.line_at(base + report.span.start_byte);
            let last_index = self.line_at(base + report.span.end_byte.saturating_sub(1));
            let (Some(first_entry), Some(last_entry)) =
                (self.window.get(first_index), self.window.get(last_index))
            else {
                continue;
            };
            let (start, end) = (first_entry.start, last_entry.end);
            if start < watermark {
                continue;
            }
            let pending = Pending {
                report: &report,
                start,
                end,
                has_end: report.has_end(),
                reaped: report.killed.as_ref().is_some_and(|killed| killed.reaped),
                lines_after: self.window.len() - 1 - last_index,
                last: index + 1 == count,
                last_tag: &last_entry.tag,
            };
            // A report on a line still growing is not whole yet, whatever the caller says.
            if last_entry.open || !settle(&pending) {
                held_at = Some(start);
                break;
            }
            let has_end = pending.has_end;
            let span = text
                .get(report.span.start_byte..report.span.end_byte)
                .unwrap_or_default();
            out.push(LiveReport {
                text: span[..span.len().min(self.config.max_text_bytes)].to_vec(),
                report,
                start,
                end,
                has_end,
            });
        }
        if let Some(held_at) = held_at {
            // Later reports wait too: they come out in stream order. So does one whose
            // last line the held report shares (the next poll reads that line again).
            let keep = out
                .iter()
                .position(|found| found.end > held_at)
                .unwrap_or(out.len());
            self.waiting = true;
            scanned_through = out.get(keep).map_or(held_at, |found| found.start);
            out.truncate(keep);
        }
        self.scanned_through = scanned_through;
        if let Some(last) = out.last() {
            self.emitted_through = self.emitted_through.max(last.end);
        }
        out
    }
}

/// The kernel's own reports of `reports`: a kill line re-logged in another program's
/// message (node-problem-detector, a Kubernetes event) is not the kernel's report;
/// the kernel's own copy is the OOM, and the re-log, with its own stamp, would count
/// as a second one.
pub fn kernel_reports(reports: Vec<Report>) -> Vec<Report> {
    reports
        .into_iter()
        .filter(|report| report.envelope.is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILL: &str = "[    7.5] Out of memory: Killed process 113 (memhog) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0";

    fn config() -> LiveConfig {
        LiveConfig {
            window_bytes: 1 << 20,
            idle_lines: Some(8),
            max_text_bytes: 1 << 16,
        }
    }

    fn line(start: u64, text: &str) -> LiveLine<()> {
        LiveLine {
            start,
            end: start + text.len() as u64 + 1,
            bytes: text.as_bytes().to_vec(),
            tag: (),
        }
    }

    #[test]
    fn report_lines_are_triggers_and_chatter_is_not() {
        assert!(may_belong_to_report(KILL.as_bytes()));
        assert!(may_belong_to_report(
            b"[ 7.6] oom_reaper: reaped process 113"
        ));
        assert!(may_belong_to_report(
            b"Kernel panic - not syncing: Out of memory"
        ));
        assert!(!may_belong_to_report(b"[ 1.0] eth0: link up"));
    }

    #[test]
    fn a_held_back_report_comes_out_once_at_its_stream_position() {
        let mut live = LiveParser::new(config(), 0);
        live.push(line(100, "[    1.0] eth0: link up"));
        live.push(line(124, KILL));
        assert!(live.trigger_pending());
        let mut seen = Vec::new();
        let held = live.poll(|pending| {
            seen.push((
                pending.has_end,
                pending.reaped,
                pending.lines_after,
                pending.last,
            ));
            false
        });
        assert!(held.is_empty());
        assert_eq!(seen, [(true, false, 0, true)]);
        assert_eq!(live.resume_offset(), Some(100));
        let out = live.poll(|_| true);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].start, out[0].end),
            (124, 124 + KILL.len() as u64 + 1)
        );
        assert!(out[0].has_end);
        assert_eq!(out[0].text, KILL.as_bytes());
        assert_eq!(live.emitted_through(), out[0].end);
        assert!(live.poll(|_| true).is_empty(), "once");
    }

    #[test]
    fn an_idle_window_keeps_only_its_tail() {
        let mut live = LiveParser::new(config(), 0);
        for i in 0..100u64 {
            live.push(line(i * 100, "[    1.0] eth0: link up"));
        }
        assert_eq!(live.window_lines(), 8);
        assert!(live.poll(|_| true).is_empty());
    }

    #[test]
    fn the_text_of_dropped_lines_is_given_back() {
        let mut live = LiveParser::new(config(), 0);
        let chatter = "[    1.0] eth0: link up";
        // A report waiting to settle holds its lines...
        live.push(line(0, KILL));
        let mut at = 1000;
        for _ in 0..10_000 {
            live.push(line(at, chatter));
            at += 100;
        }
        assert!(live.text.len() >= 10_000 * chatter.len());
        assert_eq!(live.poll(|_| true).len(), 1);
        // ...and once it is out and the log is quiet, only the idle tail's text stays.
        for _ in 0..100 {
            live.push(line(at, chatter));
            at += 100;
        }
        assert_eq!(live.window_lines(), 8);
        assert!(
            live.text.len() <= 2 * MIN_COMPACT_BYTES,
            "{}",
            live.text.len()
        );
        assert!(
            live.text.capacity() <= 8 * MIN_COMPACT_BYTES,
            "{}",
            live.text.capacity()
        );
    }

    #[test]
    fn a_line_that_never_ends_stays_within_the_window() {
        let mut live = LiveParser::new(
            LiveConfig {
                window_bytes: 4096,
                ..config()
            },
            0,
        );
        let garbage = vec![b'x'; 1000];
        for piece in 0..10_000u64 {
            live.push_text(piece * 1000, &garbage, ());
            assert!(live.window_bytes() <= 4096 + 1000);
        }
        assert!(live.poll(|_| true).is_empty());
    }

    #[test]
    fn text_pieces_cut_mid_line_join_into_the_same_lines() {
        let text = format!("[    1.0] hello\n{KILL}\n[    8.0] after\n");
        let whole = kernel_reports(crate::parse(text.as_bytes()).reports);
        for cut in 0..text.len() {
            let mut live = LiveParser::new(config(), 0);
            live.push_text(1000, &text.as_bytes()[..cut], ());
            live.push_text(1000 + cut as u64, &text.as_bytes()[cut..], ());
            live.end_line();
            let out = live.poll(|_| true);
            let reports: Vec<_> = out.iter().map(|found| found.report.clone()).collect();
            assert_eq!(reports, whole, "cut at {cut}");
            assert_eq!(out[0].start, 1016, "cut at {cut}");
        }
    }
}
