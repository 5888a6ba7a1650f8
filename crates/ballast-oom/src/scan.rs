//! Finds the reports in the input and feeds each one's lines to a builder.
//!
//! 1. A multi-pattern search jumps to the next line that can start a report
//!    (`invoked oom-killer`, `Out of memory`, `Killed process`), so the bulk of
//!    a kernel log is never cut into lines.
//! 2. From that line on, logical lines of the same host go to a
//!    [`ReportBuilder`] until it says the report ended; lines of other hosts
//!    interleaved in the same file are skipped, and found by their own anchors.
//! 3. A kill line with no header before it makes a partial report (a `quiet`
//!    guest prints only lines at KERN_ERR and above).
//!
//! Lines a report used are remembered, so an anchor inside an already-parsed
//! report is not parsed twice.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::builder::{ReportBuilder, Step};
use crate::decode::{self, Decoding};
use crate::envelope::{self, Relogged};
use crate::fields::{self, KernelLine};
use crate::limits::{MAX_DIAGNOSTICS, MAX_REPORTS, MAX_REPORT_LINES};
use crate::lines::{Lines, LogicalLine};
use crate::unwrap;
use crate::{Diagnostic, Parsed, Report};

/// How far above a headless kill line an orphan `Mem-Info:` block is looked for.
pub(crate) const MAX_ORPHAN_LOOKBACK: usize = 512 * 1024;

/// How far back from an anchor the start of its physical line is looked for.
const MAX_LINE_LOOKBACK: usize = 64 * 1024;

/// Text that can start a report: where the scanner cuts lines (and, with the lines
/// that continue a report, what makes a live log worth a parse, `crate::live`).
pub(crate) const ANCHORS: [&str; 7] = [
    "invoked oom-killer",
    "Out of memory",
    "Out of Memory",
    "out of memory: Kill",
    "Killed process",
    "oom-kill:",
    "no killable processes",
];

fn anchors() -> &'static AhoCorasick {
    static ANCHORS_SEARCH: OnceLock<AhoCorasick> = OnceLock::new();
    ANCHORS_SEARCH.get_or_init(|| {
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(ANCHORS)
            .expect("the anchor patterns are fixed literals")
    })
}

pub(crate) fn scan(input: &[u8]) -> Parsed {
    let window = scan_window(input, Seed::default());
    // Kills read out of events come last, unless the kernel's own report of them is here.
    let kernel_kills = envelope::kernel_kill_keys(&window.reports);
    let mut reports = window.reports;
    reports.extend(envelope::without_kernel_kills(
        window.relogged.reports,
        &kernel_kills,
    ));
    let mut parsed = Parsed {
        reports,
        diagnostics: decoding_diagnostic(window.decoding).into_iter().collect(),
    };
    parsed.diagnostics.extend(
        window
            .diagnostics
            .into_iter()
            .take(MAX_DIAGNOSTICS - parsed.diagnostics.len()),
    );
    if window.dropped_lines > 0 && parsed.diagnostics.len() < MAX_DIAGNOSTICS {
        parsed
            .diagnostics
            .push(limit_diagnostic(window.newlines + 1, window.dropped_lines));
    }
    parsed
}

/// The note that the input was decoded before parsing (always line 1).
pub(crate) fn decoding_diagnostic(decoding: Decoding) -> Option<Diagnostic> {
    let message = match decoding {
        Decoding::None => return None,
        Decoding::RsyslogEscapes => "rsyslog #012 escapes decoded to line breaks",
        Decoding::QuotedPrintable => {
            "quoted-printable text decoded; byte offsets refer to the decoded text"
        }
    };
    Some(Diagnostic {
        line: 1,
        message: message.to_string(),
    })
}

/// The diagnostic for lines past [`MAX_REPORTS`].
pub(crate) fn limit_diagnostic(line: usize, dropped_lines: usize) -> Diagnostic {
    Diagnostic {
        line,
        message: format!(
            "report limit ({MAX_REPORTS}) reached: {dropped_lines} further lines that can start a report not parsed"
        ),
    }
}

/// What a scan knows before it starts: nothing for a whole input; for a window of a
/// stream (`crate::stream`), what the windows before it found.
pub(crate) struct Seed {
    /// Line starts (relative to the window) that reports already returned used.
    pub consumed: BTreeSet<usize>,
    /// The last report returned before this window, for a relogged kill line.
    pub previous_kill: Option<PreviousKill>,
    /// Reports this scan may still build.
    pub report_limit: usize,
    /// Keep each report's used line starts (a stream hands them to the next window).
    pub keep_used: bool,
    /// At `report_limit`, count the lines left that could start a report (false: the
    /// caller scans them again later).
    pub count_past_limit: bool,
    /// A stream window's input is whole up to here: the line after it is still being
    /// read. No report takes that line; one that reaches it stays open. `None`: all.
    pub complete_until: Option<usize>,
    /// The release of the last `Linux version` boot banner before the input (a stream's
    /// earlier windows), for reports that do not print it themselves.
    pub kernel_banner: Option<String>,
}

impl Default for Seed {
    fn default() -> Self {
        Self {
            consumed: BTreeSet::new(),
            previous_kill: None,
            report_limit: MAX_REPORTS,
            keep_used: false,
            count_past_limit: true,
            complete_until: None,
            kernel_banner: None,
        }
    }
}

/// The victim of a report and its host: a lone kill line naming it again is a relog.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PreviousKill {
    pid: Option<(u32, String)>,
    host: Option<String>,
}

impl PreviousKill {
    pub fn of(report: &Report) -> Self {
        Self {
            pid: report.killed.as_ref().map(|k| (k.pid, k.comm.clone())),
            host: report.stamp.host.clone(),
        }
    }
}

/// What a stream needs to know of one report a scan built (kept apart from the
/// reports, so a whole-input parse returns its reports without a copy).
pub(crate) struct Found {
    /// The report ran to the end of the input without ending: more input may continue it.
    pub open: bool,
    /// Start offsets of the lines it used (only with [`Seed::keep_used`]).
    pub used: Vec<usize>,
}

/// Everything one scan found.
pub(crate) struct WindowScan {
    pub reports: Vec<Report>,
    /// One per report, in the same order.
    pub found: Vec<Found>,
    pub diagnostics: Vec<Diagnostic>,
    /// Lines past the report limit that could start a report: counted, never parsed.
    pub dropped_lines: usize,
    /// Newlines counted up to the last anchor ...
    pub newlines: usize,
    /// ... that is, before this offset (of the decoded text, when decoded).
    pub newlines_counted_to: usize,
    /// Orphan `Mem-Info:` searches never look back past this offset.
    pub last_report_end: usize,
    /// How the input was decoded: unless `None`, offsets refer to the decoded text.
    pub decoding: Decoding,
    /// Kill lines read out of Kubernetes events and other envelopes (`crate::envelope`).
    pub relogged: Relogged,
    /// The last boot banner's release before `banner_searched_to` (the seed's when none).
    pub banner: Option<String>,
    /// The text before this offset (of the decoded text, when decoded) was searched for
    /// boot banners.
    pub banner_searched_to: usize,
}

pub(crate) fn scan_window(input: &[u8], seed: Seed) -> WindowScan {
    let (text, decoding) = decode::normalize(input);
    // A decoded window's offsets are the decoded text's: the raw cut does not apply.
    let more_input = match (seed.complete_until, decoding) {
        (Some(cut), Decoding::None) => Some(cut),
        _ => None,
    };
    let complete_until = more_input.unwrap_or(text.len());
    let mut scanner = Scanner {
        text: &text,
        reports: Vec::new(),
        found: Vec::new(),
        diagnostics: Vec::new(),
        consumed: seed.consumed,
        previous_kill: seed.previous_kill,
        report_limit: seed.report_limit,
        keep_used: seed.keep_used,
        count_past_limit: seed.count_past_limit,
        complete_until,
        more_input,
        more_follows: seed.complete_until.is_some(),
        newline_counted_to: 0,
        newlines: 0,
        dropped_reports: 0,
        last_report_end: 0,
        cursor: None,
        banner: seed.kernel_banner,
        banner_searched_to: 0,
        relogged: Relogged::default(),
    };
    scanner.run();
    WindowScan {
        reports: scanner.reports,
        found: scanner.found,
        diagnostics: scanner.diagnostics,
        dropped_lines: scanner.dropped_reports,
        newlines: scanner.newlines,
        newlines_counted_to: scanner.newline_counted_to,
        last_report_end: scanner.last_report_end,
        decoding,
        relogged: scanner.relogged,
        banner: scanner.banner,
        banner_searched_to: scanner.banner_searched_to,
    }
}

struct Scanner<'a> {
    text: &'a [u8],
    reports: Vec<Report>,
    found: Vec<Found>,
    diagnostics: Vec<Diagnostic>,
    /// Start offsets of logical lines that some report used.
    consumed: BTreeSet<usize>,
    previous_kill: Option<PreviousKill>,
    report_limit: usize,
    keep_used: bool,
    count_past_limit: bool,
    /// Lines starting here or later are incomplete (a stream window's last, cut line).
    complete_until: usize,
    /// `Some(complete_until)` when more input follows (a stream window, not decoded).
    more_input: Option<usize>,
    /// More input follows the text (a stream window that is not the last, decoded or not).
    more_follows: bool,
    newline_counted_to: usize,
    newlines: usize,
    /// Lines past the report limit that could start a report: counted, never parsed.
    dropped_reports: usize,
    /// End offset of the last report found or headless line tried; orphan searches stop there.
    last_report_end: usize,
    /// The last line [`Self::line_containing`] found: the next anchor on the same physical
    /// line is reached by walking on from it, so a joined line is cut into logical
    /// lines once, not once per anchor in it.
    cursor: Option<LogicalLine<'a>>,
    /// The release of the last boot banner before `banner_searched_to`.
    banner: Option<String>,
    /// The text before this offset was searched for boot banners.
    banner_searched_to: usize,
    /// Kill lines read out of Kubernetes events and other envelopes.
    relogged: Relogged,
}

impl<'a> Scanner<'a> {
    fn run(&mut self) {
        let mut search_from = 0;
        while search_from < self.text.len() {
            if self.reports.len() >= self.report_limit {
                if self.count_past_limit {
                    self.dropped_reports = count_anchor_lines(&self.text[search_from..]);
                }
                break;
            }
            let Some(found) = anchors().find(&self.text[search_from..]) else {
                break;
            };
            let anchor = search_from + found.start();
            let Some(line) = self.line_containing(anchor) else {
                search_from = anchor + 1;
                continue;
            };
            // An event re-logging a kill line: its own report, never a kernel line's.
            if let Some(next) = self
                .relogged
                .take(self.text, &line, anchor, self.more_input)
            {
                self.consumed.insert(line.start);
                search_from = next;
                continue;
            }
            search_from = line.end.max(anchor + 1);
            if self.consumed.contains(&line.start) || line.prefix.is_foreign() {
                continue;
            }
            match fields::classify(line.body) {
                KernelLine::Invoked(_) => self.parse_report(&line, true),
                KernelLine::Killed { .. }
                | KernelLine::KillChoice { .. }
                | KernelLine::Panic { .. }
                | KernelLine::NoKillable
                | KernelLine::OomKillSummary(_) => self.parse_headless(&line),
                _ => {}
            }
        }
    }

    /// The logical line that contains byte `anchor`.
    fn line_containing(&mut self, anchor: usize) -> Option<LogicalLine<'a>> {
        let walk = match self.cursor {
            Some(cursor) if cursor.start <= anchor && anchor < cursor.end => return Some(cursor),
            Some(cursor) if cursor.end <= anchor && anchor < cursor.physical_end() => {
                Lines::after(self.text, &cursor)
            }
            _ => {
                let window_start = anchor.saturating_sub(MAX_LINE_LOOKBACK);
                let physical_start = memchr::memrchr(b'\n', &self.text[window_start..anchor])
                    .map_or(window_start, |offset| window_start + offset + 1);
                let line_no = self.line_number(physical_start);
                Lines::new(self.text, physical_start, line_no)
            }
        };
        let text_len = self.text.len();
        let found = walk
            .take_while(|line| line.start <= anchor)
            .find(|line| line.end > anchor || line.end == text_len);
        if found.is_some() {
            self.cursor = found;
        }
        found
    }

    /// 1-based line number of `offset`; offsets only grow, so counting is incremental.
    fn line_number(&mut self, offset: usize) -> usize {
        if offset >= self.newline_counted_to {
            self.newlines +=
                memchr::memchr_iter(b'\n', &self.text[self.newline_counted_to..offset]).count();
            self.newline_counted_to = offset;
            self.newlines + 1
        } else {
            self.newlines + 1
                - memchr::memchr_iter(b'\n', &self.text[offset..self.newline_counted_to]).count()
        }
    }

    /// A kill or panic line with no header: the report may still have its body above it
    /// (a paste that starts at `Mem-Info:`). Try from there, else from the line itself.
    fn parse_headless(&mut self, anchor: &LogicalLine<'a>) {
        let orphan = self.orphan_mem_info_before(anchor);
        // A `Mem-Info:` above this line belongs to this line or to none after it: the next
        // headless line looks no further back than here, so a flood of kill lines that
        // make no report (relogged ones) is searched once, not once per line.
        self.last_report_end = self.last_report_end.max(anchor.end);
        if let Some(body_start) = orphan {
            if let Some(built) = self.build(&body_start, Some(anchor.start)) {
                self.push(built);
                return;
            }
        }
        self.parse_report(anchor, false);
    }

    /// An unconsumed `Mem-Info:` line (else a task table header) shortly before `anchor`, not
    /// part of an allocation-failure warning.
    fn orphan_mem_info_before(&mut self, anchor: &LogicalLine<'a>) -> Option<LogicalLine<'a>> {
        // Never look back past the previous report: a flood of kill lines stays linear.
        let window_start = anchor
            .start
            .saturating_sub(MAX_ORPHAN_LOOKBACK)
            .max(self.last_report_end)
            .min(anchor.start);
        let window = &self.text[window_start..anchor.start];
        let found = memchr::memmem::rfind(window, b"Mem-Info:")
            .into_iter()
            .chain(memchr::memmem::rfind(window, b"Mem-info:"))
            .max()
            // A fragment that starts below Mem-Info: its task table still belongs to the
            // panic or kill line (`[  pid  ]   uid  tgid total_vm      rss ...`).
            .or_else(|| memchr::memmem::rfind(window, b"tgid total_vm"))?;
        let at = window_start + found;
        let between = &self.text[at..anchor.start];
        if memchr::memmem::find(between, b"invoked oom-killer").is_some() {
            return None;
        }
        let before = &self.text[at.saturating_sub(4096)..at];
        if memchr::memmem::find(before, b"page allocation failure").is_some() {
            return None;
        }
        let line = self.line_containing(at)?;
        (!self.consumed.contains(&line.start)).then_some(line)
    }

    fn parse_report(&mut self, first: &LogicalLine<'a>, full: bool) {
        let Some(built) = self.build(first, None) else {
            return;
        };
        if !full && self.is_relogged_kill(&built.0) {
            self.diagnose(
                first.line_no,
                "kill line repeated without a report: counted once",
            );
            return;
        }
        self.push(built);
    }

    /// Runs a builder from `first`. With `must_reach`, the report only counts (and its
    /// lines are only marked used) if it reached the line starting there.
    fn build(
        &mut self,
        first: &LogicalLine<'a>,
        must_reach: Option<usize>,
    ) -> Option<(Report, Found)> {
        let mut builder = ReportBuilder::new(first);
        let mut used = Vec::new();
        let mut lines = std::iter::once(*first)
            .chain(Lines::after(self.text, first))
            .peekable();
        let mut joined = Vec::new();
        let mut seen = 0;
        let mut open = true;
        while let Some(line) = lines.next() {
            if line.start >= self.complete_until {
                // The window's cut line: the report goes on in the next window.
                break;
            }
            seen += 1;
            if seen > MAX_REPORT_LINES {
                self.diagnose(line.line_no, "report cut: it ran past the line limit");
                open = false;
                break;
            }
            if line.prefix.is_foreign() || other_host(&builder, &line) {
                continue;
            }
            if line.start != first.start && self.consumed.contains(&line.start) {
                open = false;
                break;
            }
            // A line wrapped by an editor, terminal or mailer is fed whole.
            let consumed = &self.consumed;
            let wrapped = unwrap::take_continuations(
                self.text,
                &line,
                &mut lines,
                self.complete_until,
                |start| consumed.contains(&start),
                &mut joined,
            );
            seen += wrapped.len();
            let last = wrapped.last().copied().unwrap_or(line);
            let whole = if wrapped.is_empty() {
                line
            } else {
                line.joined(&joined, last.end)
            };
            // The next anchor is likely on this line: it is not cut again to find it.
            self.cursor = Some(last);
            let starts = std::iter::once(line.start).chain(wrapped.iter().map(|l| l.start));
            match builder.feed(&whole) {
                Step::Continue => used.extend(starts),
                Step::EndAfter => {
                    used.extend(starts);
                    // Its wrapped rest may be the line still being read: stay open.
                    open = self.more_follows && last.physical_end() + 1 >= self.complete_until;
                    break;
                }
                Step::EndBefore => {
                    open = false;
                    break;
                }
            }
        }
        if must_reach.is_some_and(|start| !used.contains(&start)) {
            return None;
        }
        self.consumed.extend(used.iter().copied());
        if !self.keep_used {
            used = Vec::new();
        }
        Some((builder.finish(), Found { open, used }))
    }

    /// A lone kill line naming the same victim as the previous report of the same host.
    fn is_relogged_kill(&self, report: &Report) -> bool {
        let (victim, host) = match (self.reports.last(), &self.previous_kill) {
            (Some(last), _) => (
                last.killed.as_ref().map(|k| (k.pid, k.comm.as_str())),
                last.stamp.host.as_deref(),
            ),
            (None, Some(seed)) => (
                seed.pid.as_ref().map(|(pid, comm)| (*pid, comm.as_str())),
                seed.host.as_deref(),
            ),
            (None, None) => return false,
        };
        let same_victim = match (victim, &report.killed) {
            (Some((pid, comm)), Some(b)) => pid == b.pid && comm == b.comm,
            _ => false,
        };
        same_victim && host == report.stamp.host.as_deref() && report.trigger.is_none()
    }

    fn push(&mut self, (mut report, found): (Report, Found)) {
        self.last_report_end = self.last_report_end.max(report.span.end_byte);
        if report.kernel.is_none() {
            report.kernel = self.banner_before(report.span.start_byte);
        }
        if self.reports.len() < self.report_limit {
            self.reports.push(report);
            self.found.push(found);
        }
    }

    /// The release of the last boot banner before `offset`. Each byte is searched at most
    /// once: the search goes on from where the last one stopped.
    fn banner_before(&mut self, offset: usize) -> Option<String> {
        if offset > self.banner_searched_to {
            let unsearched = &self.text[self.banner_searched_to..offset];
            if let Some(release) = fields::last_kernel_banner(unsearched) {
                self.banner = Some(release);
            }
            self.banner_searched_to = offset;
        }
        self.banner.clone()
    }

    fn diagnose(&mut self, line: usize, message: &str) {
        if self.diagnostics.len() < MAX_DIAGNOSTICS {
            self.diagnostics.push(Diagnostic {
                line,
                message: message.to_string(),
            });
        }
    }
}

/// Physical lines of `text` holding an anchor: what is left once the report limit is reached
/// costs one anchor search and no line cutting or report building.
pub(crate) fn count_anchor_lines(text: &[u8]) -> usize {
    let mut lines = 0;
    let mut from = 0;
    while let Some(found) = anchors().find(&text[from..]) {
        lines += 1;
        let anchor = from + found.start();
        match memchr::memchr(b'\n', &text[anchor..]) {
            Some(newline) => from = anchor + newline + 1,
            None => break,
        }
    }
    lines
}

fn other_host(builder: &ReportBuilder, line: &LogicalLine<'_>) -> bool {
    match (builder.host(), line.prefix.host) {
        (Some(host), Some(line_host)) => host.as_bytes() != line_host,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::work;

    /// `tor invoked oom-killer: ...` `count` times on one line.
    fn repeated_headers(count: usize) -> Vec<u8> {
        let mut line = b"tor invoked oom-killer: gfp_mask=0x0, order=0 ".repeat(count);
        line.push(b'\n');
        line
    }

    #[test]
    fn a_line_of_repeated_headers_is_cut_a_bounded_number_of_times_per_header() {
        // The scan used to walk up to 64 KiB back and to the line's end per header:
        // ~1400 logical lines cut and one search of the rest of the line per header.
        for count in [1_000, 20_000] {
            let input = repeated_headers(count);
            work::take();
            let parsed = scan(&input);
            let (lines, end_searches) = work::take();
            assert_eq!(parsed.reports.len(), count);
            assert!(lines <= 3 * count, "{lines} lines cut for {count} headers");
            assert!(
                end_searches <= 2,
                "{end_searches} searches for the line's end"
            );
        }
    }

    #[test]
    fn a_task_table_never_printed_is_none_and_a_printed_empty_one_is_zero() {
        let report = |table: &str| {
            let input = format!(
                "[ 5.1] a invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n\
                 [ 5.1] CPU: 0 PID: 7 Comm: a Not tainted 6.1.0-18-amd64 #1\n\
                 [ 5.2] memory: usage 1024kB, limit 1024kB, failcnt 9\n\
                 {table}\
                 [ 5.4] Out of memory and no killable processes...\n"
            );
            scan(input.as_bytes()).reports.remove(0).tasks
        };
        assert_eq!(report(""), None);
        let header = "[ 5.3] [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name\n";
        let state = "[ 5.3] Tasks state (memory values in pages):\n";
        assert_eq!(report(&format!("{state}{header}")), Some(0));
        // The header lost (cut or interleaved): the table was still printed.
        assert_eq!(report(state), Some(0));
        let row =
            "[ 5.3] [      7]     0     7      565        1    28672        0             0 a\n";
        assert_eq!(report(&format!("{state}{header}{row}")), Some(1));
    }

    #[test]
    fn a_call_trace_longer_than_the_idle_limit_stays_in_its_report() {
        // A 6.12 guest's order-2 F_SETPIPE_SZ failure printed 57 lines between its
        // header and Mem-Info, most of them indented frames (` ? do_pipe2+0xc3/0x100`),
        // which were read as unknown lines: the report ended before Mem-Info and its
        // rest became a second, headless report.
        let frames = "[ 5.1]  ? do_pipe2+0xc3/0x100\n[ 5.1]  do_fcntl+0x133/0x740\n".repeat(40);
        let input = format!(
            "[ 5.1] a invoked oom-killer: gfp_mask=0x442dc0(GFP_KERNEL_ACCOUNT), order=2, oom_score_adj=0\n\
             [ 5.1] CPU: 0 UID: 0 PID: 7 Comm: a Not tainted 6.12.118+deb12-amd64 #1\n\
             [ 5.1] Call Trace:\n\
             [ 5.1]  <TASK>\n\
             {frames}\
             [ 5.1]  </TASK>\n\
             [ 5.2] Mem-Info:\n\
             [ 5.2] active_anon:2366 inactive_anon:0 isolated_anon:0\n\
             [ 5.3] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=a,pid=7,uid=0\n\
             [ 5.3] Out of memory: Killed process 7 (a) total-vm:1000kB, anon-rss:900kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0\n"
        );
        let parsed = scan(input.as_bytes());
        assert_eq!(parsed.reports.len(), 1, "{:#?}", parsed.reports);
        let report = &parsed.reports[0];
        assert!(report.mem_info.is_some(), "{report:#?}");
        assert_eq!(report.killed.as_ref().map(|k| k.pid), Some(7));
    }

    #[test]
    fn past_the_report_limit_nothing_is_cut() {
        // One physical line: the rest of it is one more line that could start a report.
        let input = repeated_headers(MAX_REPORTS + 5_000);
        work::take();
        let parsed = scan(&input);
        let (lines, _) = work::take();
        assert_eq!(parsed.reports.len(), MAX_REPORTS);
        assert!(lines <= 3 * MAX_REPORTS, "{lines} lines cut");
        let note = parsed.diagnostics.last().map(|d| d.message.as_str());
        assert!(
            note.is_some_and(|note| note.contains("reached: 1 further lines")),
            "{note:?}"
        );
    }

    #[test]
    fn a_flood_of_relogged_kill_lines_is_searched_back_once() {
        // Kill lines that make no report (the same victim again) used to search up to
        // 512 KiB back for a Mem-Info each.
        let mut input = b"[ 1.0] Out of memory: Killed process 7 (a) total-vm:1kB\n".to_vec();
        for _ in 0..20_000 {
            input.extend_from_slice(b"[ 1.0] Killed process 7 (a) total-vm:1kB\n");
        }
        let mut scanner = Scanner {
            text: &input,
            reports: Vec::new(),
            found: Vec::new(),
            diagnostics: Vec::new(),
            consumed: BTreeSet::new(),
            previous_kill: None,
            report_limit: MAX_REPORTS,
            keep_used: false,
            count_past_limit: true,
            complete_until: input.len(),
            more_input: None,
            more_follows: false,
            newline_counted_to: 0,
            newlines: 0,
            dropped_reports: 0,
            last_report_end: 0,
            cursor: None,
            banner: None,
            banner_searched_to: 0,
            relogged: Relogged::default(),
        };
        scanner.run();
        assert_eq!(scanner.reports.len(), 1, "relogged kills are counted once");
        // Every headless line moved the floor of the backward search to its end.
        assert!(scanner.last_report_end >= input.len() - 64);
    }
}
