//! Parses a kernel log of any size in bounded memory, one window at a time.
//!
//! The caller reads into [`StreamParser::spare`] and reports what it read with
//! [`StreamParser::filled`]; this module does no I/O. When the window is full it is
//! scanned like a whole input ([`crate::parse`]), and the reports that cannot change
//! with more input are returned. The next window starts at the earliest of:
//! - the first line of a report still open at the window's end (a report cut by the
//!   window is parsed whole from the next one);
//! - an unclaimed `Mem-Info:` (or task table header) in the last [`MAX_ORPHAN_LOOKBACK`] bytes (a kill line
//!   further on may claim it as its report's body);
//! - the window's last, incomplete line.
//!
//! A window with no such point grows up to [`MAX_WINDOW_BYTES`]; a report longer than
//! that is returned cut (as the whole-input parse cuts one at [`MAX_REPORT_LINES`]
//! lines). Lines used by returned reports are carried over, so a report's tail read
//! again in the next window is not found twice. Byte offsets and line numbers in the
//! reports and diagnostics are those of the whole stream.
//!
//! [`MAX_REPORT_LINES`]: crate::limits::MAX_REPORT_LINES

use std::collections::BTreeSet;

use crate::decode::{self, Decoding};
use crate::envelope;
use crate::fields;
use crate::limits::{
    MAX_DIAGNOSTICS, MAX_RELOGGED_REPORTS, MAX_REPORTS, MAX_WINDOW_BYTES, WINDOW_BYTES,
    WINDOW_REPORTS,
};
use crate::scan::{self, PreviousKill, Seed, MAX_ORPHAN_LOOKBACK};
use crate::{Diagnostic, Report};

/// Window-by-window parser of one input (see the module documentation).
#[derive(Debug)]
pub struct StreamParser {
    buffer: Vec<u8>,
    filled: usize,
    /// Stream offset of `buffer[0]`.
    base: usize,
    /// 1-based line number of `buffer[0]`.
    base_line: usize,
    /// Stream offsets of lines that returned reports used, at or after `base`.
    consumed: BTreeSet<usize>,
    previous_kill: Option<PreviousKill>,
    returned: usize,
    dropped_lines: usize,
    diagnostics: Vec<Diagnostic>,
    decoding_noted: bool,
    /// The end of the input was scanned to its last report.
    ended: bool,
    /// The release of the last `Linux version` boot banner before `base`.
    kernel_banner: Option<String>,
    /// Reports read out of Kubernetes events and other envelopes, held to the end of the
    /// input: one is dropped if the kernel's own report of its kill comes (`crate::envelope`).
    relogged: Vec<Report>,
    /// Kill keys of `relogged`: an envelope found again in the next window is one kill.
    relogged_kills: BTreeSet<u64>,
    /// Kill keys of the kernel's reports returned so far.
    kernel_kills: BTreeSet<u64>,
}

impl Default for StreamParser {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamParser {
    pub fn new() -> Self {
        Self::with_window(WINDOW_BYTES)
    }

    /// A parser whose windows start at `window_bytes` (tests use small ones).
    pub fn with_window(window_bytes: usize) -> Self {
        Self {
            buffer: vec![0; window_bytes.clamp(1, MAX_WINDOW_BYTES)],
            filled: 0,
            base: 0,
            base_line: 1,
            consumed: BTreeSet::new(),
            previous_kill: None,
            returned: 0,
            dropped_lines: 0,
            diagnostics: Vec::new(),
            decoding_noted: false,
            ended: false,
            kernel_banner: None,
            relogged: Vec::new(),
            relogged_kills: BTreeSet::new(),
            kernel_kills: BTreeSet::new(),
        }
    }

    /// Bytes the window holds now: at most [`MAX_WINDOW_BYTES`].
    pub fn window_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Where the next bytes of input go; never empty.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buffer[self.filled..]
    }

    /// `count` bytes were written at the start of [`Self::spare`]: returns the reports
    /// that are complete.
    pub fn filled(&mut self, count: usize) -> Vec<Report> {
        self.filled = (self.filled + count).min(self.buffer.len());
        if self.filled < self.buffer.len() {
            return Vec::new();
        }
        self.scan(false)
    }

    /// Copies `bytes` in (for callers that hold the input in their own buffers).
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Report> {
        let mut reports = Vec::new();
        while !bytes.is_empty() {
            let spare = self.spare();
            let count = spare.len().min(bytes.len());
            spare[..count].copy_from_slice(&bytes[..count]);
            bytes = &bytes[count..];
            reports.extend(self.filled(count));
        }
        reports
    }

    /// The end of the input: the remaining reports, and the diagnostics of the whole input.
    pub fn finish(mut self) -> (Vec<Report>, Vec<Diagnostic>) {
        let mut reports = Vec::new();
        while let Some(batch) = self.end_batch() {
            reports.extend(batch);
        }
        (reports, self.diagnostics())
    }

    /// The end of the input, a batch at a time (at most
    /// [`WINDOW_REPORTS`] reports each): `None` once every report is out.
    pub fn end_batch(&mut self) -> Option<Vec<Report>> {
        if self.ended {
            return None;
        }
        let before = self.base;
        let mut reports = self.scan(true);
        // A window cut short by its report limit moved on: the rest is the next batch.
        self.ended = self.base == before;
        if self.ended {
            // Kills read out of events come last, unless the kernel's own report of them came.
            let relogged = std::mem::take(&mut self.relogged);
            reports.extend(envelope::without_kernel_kills(relogged, &self.kernel_kills));
        }
        Some(reports)
    }

    /// The diagnostics of the whole input, once [`Self::end_batch`] returned `None`
    /// (reports still pending then are dropped).
    pub fn diagnostics(mut self) -> Vec<Diagnostic> {
        while self.end_batch().is_some() {}
        if self.dropped_lines > 0 {
            let lines =
                self.base_line + memchr::memchr_iter(b'\n', &self.buffer[..self.filled]).count();
            let note = scan::limit_diagnostic(lines, self.dropped_lines);
            self.diagnose(note);
        }
        self.diagnostics
    }

    fn scan(&mut self, at_end: bool) -> Vec<Report> {
        let text = &self.buffer[..self.filled];
        let cut = if at_end {
            text.len()
        } else {
            memchr::memrchr(b'\n', text).map_or(text.len(), |at| at + 1)
        };
        if self.returned >= MAX_REPORTS {
            self.dropped_lines += scan::count_anchor_lines(&text[..cut]);
            self.advance(cut);
            return Vec::new();
        }
        let left = MAX_REPORTS - self.returned;
        let report_limit = left.min(WINDOW_REPORTS);
        let seed = Seed {
            consumed: self.consumed.iter().map(|at| at - self.base).collect(),
            previous_kill: self.previous_kill.clone(),
            report_limit,
            keep_used: true,
            count_past_limit: report_limit == left,
            complete_until: (!at_end).then_some(cut),
            kernel_banner: self.kernel_banner.clone(),
        };
        let window = scan::scan_window(text, seed);
        let mut resume = cut;
        let decoded = window.decoding != Decoding::None;
        // The window's report limit cut the scan short: go on from its last report. (Only
        // until MAX_REPORTS are returned: the extra passes over the window are bounded.)
        let mut window_full = window.reports.len() >= report_limit && report_limit < left;
        if window_full {
            match window.reports.last() {
                Some(last) if last.span.start_byte > 0 => {
                    let start = decode::raw_offset(text, window.decoding, last.span.start_byte);
                    resume = resume.min(start);
                }
                _ => window_full = false,
            }
        }
        if !at_end {
            // An event's kill line still being read: its whole line is read again, so the
            // envelope before the kill line (`OOMKilling`, a `message` key) is seen again.
            if let Some(at) = window.relogged.resume_at {
                let start = decode::raw_offset(text, window.decoding, at);
                let line_start = memchr::memrchr(b'\n', &text[..start]).map_or(0, |at| at + 1);
                resume = resume.min(line_start);
            }
            let open = window.reports.iter().zip(&window.found);
            for (report, _) in open.filter(|(_, found)| found.open) {
                // A decoded window's offsets are the decoded text's: map back to the input.
                let start = decode::raw_offset(text, window.decoding, report.span.start_byte);
                resume = resume.min(start);
            }
            if !decoded {
                if let Some(mem_info) = unclaimed_mem_info(text, window.last_report_end, cut) {
                    resume = resume.min(mem_info);
                }
            }
        }
        let mut forced = false;
        if resume == 0 && !at_end {
            if self.buffer.len() < MAX_WINDOW_BYTES {
                let grown = (self.buffer.len() * 2).min(MAX_WINDOW_BYTES);
                self.buffer.resize(grown, 0);
                return Vec::new();
            }
            forced = true;
            resume = cut;
        }
        let at_end = at_end && !window_full;
        let resume_line = if at_end {
            usize::MAX
        } else if !decoded && window.newlines_counted_to <= resume {
            // The scan counted the lines up to its last anchor: count only the rest.
            let rest = &text[window.newlines_counted_to..resume];
            1 + window.newlines + memchr::memchr_iter(b'\n', rest).count()
        } else {
            1 + memchr::memchr_iter(b'\n', &text[..resume]).count()
        };
        let starts: Vec<usize> = window
            .reports
            .iter()
            .map(|report| decode::raw_offset(text, window.decoding, report.span.start_byte))
            .collect();
        let relogged_starts: Vec<usize> = window
            .relogged
            .reports
            .iter()
            .map(|report| decode::raw_offset(text, window.decoding, report.span.start_byte))
            .collect();
        if let Some(note) = scan::decoding_diagnostic(window.decoding) {
            if !self.decoding_noted {
                self.decoding_noted = true;
                self.diagnose(note);
            }
        }
        let line_shift = self.base_line - 1;
        for mut note in window.diagnostics {
            if note.line < resume_line {
                note.line += line_shift;
                self.diagnose(note);
            }
        }
        let mut consumed = BTreeSet::new();
        let mut reports = Vec::new();
        let found_with_starts = window.found.into_iter().zip(starts);
        for (mut report, (found, start)) in window.reports.into_iter().zip(found_with_starts) {
            if start >= resume {
                continue;
            }
            if forced && found.open {
                self.diagnose(Diagnostic {
                    line: report.span.first_line + line_shift,
                    message: format!(
                        "report cut: it ran past the {} MiB window",
                        MAX_WINDOW_BYTES >> 20
                    ),
                });
            }
            if !decoded {
                consumed.extend(
                    found
                        .used
                        .iter()
                        .filter(|at| **at >= resume)
                        .map(|at| at + self.base),
                );
            }
            report.span.start_byte += self.base;
            report.span.end_byte += self.base;
            report.span.first_line += line_shift;
            self.previous_kill = Some(PreviousKill::of(&report));
            reports.push(report);
        }
        self.returned += reports.len();
        self.dropped_lines += window.dropped_lines;
        self.kernel_kills
            .extend(envelope::kernel_kill_keys(&reports));
        let relogged = window.relogged.reports.into_iter();
        let found_with_starts = window.relogged.found.into_iter().zip(relogged_starts);
        for (mut report, (found, start)) in relogged.zip(found_with_starts) {
            if start >= resume || (found.open && !at_end) {
                // Read again from the next window.
                continue;
            }
            let Some(kill) = report.killed.as_ref().map(envelope::kill_key) else {
                continue;
            };
            if self.relogged.len() < MAX_RELOGGED_REPORTS && self.relogged_kills.insert(kill) {
                report.span.start_byte += self.base;
                report.span.end_byte += self.base;
                report.span.first_line += line_shift;
                self.relogged.push(report);
            }
        }
        if !at_end {
            // The window's scan searched the text before its last report already: search
            // only the rest (the whole of it when decoded or when it searched past resume).
            let searched = window.banner_searched_to;
            let banner = if decoded || searched > resume {
                fields::last_kernel_banner(&self.buffer[..resume])
            } else {
                fields::last_kernel_banner(&self.buffer[searched..resume]).or(window.banner)
            };
            if let Some(release) = banner {
                self.kernel_banner = Some(release);
            }
            self.base_line = line_shift + resume_line;
            self.consumed = consumed;
            self.shift(resume);
        }
        reports
    }

    /// Drops `buffer[..to]` (lines counted) without scanning it.
    fn advance(&mut self, to: usize) {
        self.base_line += memchr::memchr_iter(b'\n', &self.buffer[..to]).count();
        self.consumed.clear();
        self.shift(to);
    }

    fn shift(&mut self, to: usize) {
        self.buffer.copy_within(to..self.filled, 0);
        self.filled -= to;
        self.base += to;
        if self.buffer.len() > WINDOW_BYTES && self.filled < WINDOW_BYTES / 2 {
            self.buffer.truncate(WINDOW_BYTES);
            self.buffer.shrink_to_fit();
        }
    }

    fn diagnose(&mut self, note: Diagnostic) {
        if self.diagnostics.len() < MAX_DIAGNOSTICS {
            self.diagnostics.push(note);
        }
    }
}

/// Start of the line of a `Mem-Info:` (or task table header) after the last report and in the last
/// [`MAX_ORPHAN_LOOKBACK`] bytes before `cut`: a headless kill line after `cut` may
/// take it as its report's body.
pub(crate) fn unclaimed_mem_info(text: &[u8], last_report_end: usize, cut: usize) -> Option<usize> {
    let from = last_report_end
        .max(cut.saturating_sub(MAX_ORPHAN_LOOKBACK))
        .min(cut);
    let tail = &text[from..cut];
    // A task table header too: a fragment's panic or kill line claims the table above it.
    let found = memchr::memmem::find(tail, b"Mem-Info:")
        .into_iter()
        .chain(memchr::memmem::find(tail, b"Mem-info:"))
        .chain(memchr::memmem::find(tail, b"tgid total_vm"))
        .min()?;
    let at = from + found;
    Some(memchr::memrchr(b'\n', &text[..at]).map_or(0, |newline| newline + 1))
}
