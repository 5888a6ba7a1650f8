//! OOM detection over a bounded window of recent console lines. Pure: lines and
//! the time come in, settled reports come out.
//!
//! 1. Every line goes into the window (at most `window_bytes`; the oldest lines
//!    fall out). `Out of puff!` lines are returned at once as near-miss lines.
//! 2. A line that can belong to an OOM report (`Killed process`, `invoked
//!    oom-killer`, ...) marks the window for a parse.
//! 3. [`Detector::poll`] runs `ballast_oom::parse` over the window from the
//!    emitted watermark on. A report whose kill line arrived is settled once the
//!    `oom_reaper` line came, or `grace_lines` more lines came, or `grace`
//!    passed; a report without a kill line (a panic, a lost end) after
//!    `headless_timeout`. Settled reports come out in order, once: the
//!    watermark (a stream offset, persisted by the caller) moves past them.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aho_corasick::AhoCorasick;
use ballast_oom::Report;

use super::lines::Line;

/// Detection limits and delays.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    pub window_bytes: usize,
    pub grace_lines: usize,
    pub grace: Duration,
    pub headless_timeout: Duration,
    pub max_raw_bytes: usize,
}

/// A settled report and where it is in the stream.
#[derive(Debug, Clone)]
pub struct Detected {
    pub report: Report,
    /// The report's text (lossy UTF-8, at most `max_raw_bytes`).
    pub raw: String,
    pub start: u64,
    pub end: u64,
}

/// A `virtio_balloon ... Out of puff!` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PuffLine {
    pub start: u64,
    pub text: String,
}

#[derive(Debug)]
struct WindowLine {
    line: Line,
    arrived: Instant,
}

/// Lines kept while no report is pending (only the newest matter then).
const IDLE_TAIL_LINES: usize = 8;

/// The per-VM window and detection state.
#[derive(Debug)]
pub struct Detector {
    config: DetectorConfig,
    window: VecDeque<WindowLine>,
    window_bytes: usize,
    /// Reports starting before this stream offset were emitted already.
    emitted_through: u64,
    /// Near-miss lines starting before this offset were returned already.
    near_miss_through: u64,
    /// Text before this offset was parsed and held no report start (not persisted:
    /// after a restart the text is parsed again, and the watermark drops repeats).
    scanned_through: u64,
    /// An OOM anchor line arrived since the last parse.
    anchor_pending: bool,
    /// A report is waiting to settle: parse again at this time (or after enough lines).
    recheck_at: Option<Instant>,
    lines_since_parse: usize,
}

fn anchors() -> &'static AhoCorasick {
    static ANCHORS: OnceLock<AhoCorasick> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        AhoCorasick::new([
            "invoked oom-killer",
            "Out of memory",
            "Killed process",
            "Kill process",
            "killed process",
            "oom-kill:",
            "oom_reaper",
            "no killable processes",
            "Kernel panic",
        ])
        .expect("the anchor patterns are fixed literals")
    })
}

fn is_out_of_puff(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, b"Out of puff!").is_some()
        && memchr::memmem::find(bytes, b"virtio_balloon").is_some()
}

/// Text of at most `max` bytes, cut at a char boundary.
pub fn bounded_text(bytes: &[u8], max: usize) -> String {
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    while text.len() > max {
        text.pop();
    }
    text
}

impl Detector {
    pub fn new(config: DetectorConfig, emitted_through: u64, near_miss_through: u64) -> Self {
        Detector {
            config,
            // Room for the idle tail and the line that pushes one out: a quiet
            // console never grows it (VecDeque would double to 16 slots of 72 bytes).
            window: VecDeque::with_capacity(IDLE_TAIL_LINES + 1),
            window_bytes: 0,
            emitted_through,
            near_miss_through,
            scanned_through: 0,
            anchor_pending: false,
            recheck_at: None,
            lines_since_parse: 0,
        }
    }

    pub fn emitted_through(&self) -> u64 {
        self.emitted_through
    }

    pub fn near_miss_through(&self) -> u64 {
        self.near_miss_through
    }

    /// Bytes of line text held in the window.
    pub fn window_bytes(&self) -> usize {
        self.window_bytes
    }

    /// Where a restarted reader should start so no unsettled report is lost:
    /// the first line in the window past the watermark (None: nothing held).
    pub fn resume_offset(&self) -> Option<u64> {
        self.window
            .iter()
            .find(|entry| entry.line.start >= self.emitted_through)
            .map(|entry| entry.line.start)
    }

    /// Forgets the window (the stream was cut: truncation, a new file).
    pub fn clear_window(&mut self) {
        self.window.clear();
        self.window_bytes = 0;
        self.recheck_at = None;
        self.anchor_pending = false;
    }

    /// Adds one line; returns it as a near-miss line when it is `Out of puff!`.
    pub fn push(&mut self, line: Line, now: Instant) -> Option<PuffLine> {
        let mut puff = None;
        if is_out_of_puff(&line.bytes) && line.start >= self.near_miss_through {
            self.near_miss_through = line.end;
            puff = Some(PuffLine {
                start: line.start,
                text: bounded_text(&line.bytes, 512),
            });
        }
        if anchors().is_match(&line.bytes) {
            self.anchor_pending = true;
        }
        self.lines_since_parse += 1;
        self.window_bytes += line.bytes.len() + 1;
        self.window.push_back(WindowLine { line, arrived: now });
        // Nothing waits (no anchor since the last parse, no report settling): older lines
        // hold no report start, so only a short tail is kept. A console without OOMs then
        // costs a few KiB per VM instead of the whole window (500 VMs: tens of MiB).
        let keep_lines = if self.anchor_pending || self.recheck_at.is_some() {
            usize::MAX
        } else {
            IDLE_TAIL_LINES
        };
        while self.window_bytes > self.config.window_bytes || self.window.len() > keep_lines {
            match self.window.pop_front() {
                Some(old) => self.window_bytes -= old.line.bytes.len() + 1,
                None => break,
            }
        }
        // Back to idle after a report: give back the slots the report needed.
        if keep_lines == IDLE_TAIL_LINES && self.window.capacity() > 4 * (IDLE_TAIL_LINES + 1) {
            self.window.shrink_to(IDLE_TAIL_LINES + 1);
        }
        puff
    }

    fn parse_due(&self, now: Instant) -> bool {
        self.anchor_pending
            || self
                .recheck_at
                .is_some_and(|at| now >= at || self.lines_since_parse >= self.config.grace_lines)
    }

    /// Parses the window when something may have settled; returns newly settled reports.
    pub fn poll(&mut self, now: Instant) -> Vec<Detected> {
        if !self.parse_due(now) {
            return Vec::new();
        }
        self.anchor_pending = false;
        self.recheck_at = None;
        self.lines_since_parse = 0;
        let from = self.emitted_through.max(self.scanned_through);
        let first = self
            .window
            .iter()
            .position(|entry| entry.line.start >= from);
        let Some(first) = first else {
            return Vec::new();
        };
        // Unless a report waits to settle below, the next parse starts past this text.
        self.scanned_through = self.window.back().map_or(from, |entry| entry.line.end);
        // The window past the watermark as one text, and where each line sits in it.
        let mut text = Vec::with_capacity(self.window_bytes);
        let mut text_starts = Vec::with_capacity(self.window.len() - first);
        for entry in self.window.range(first..) {
            text_starts.push(text.len());
            text.extend_from_slice(&entry.line.bytes);
            text.push(b'\n');
        }
        let parsed = ballast_oom::parse(&text);
        let base = first;
        let mut settled = Vec::new();
        // A kill line re-logged in another program's message (node-problem-detector,
        // a Kubernetes event) is not the guest kernel's report: the kernel's own copy is
        // the OOM, and the re-log, with its own stamp, would be counted as a second one.
        for report in parsed.reports.into_iter().filter(|r| r.envelope.is_none()) {
            let first_idx = line_index(&text_starts, report.span.start_byte);
            let last_idx = line_index(&text_starts, report.span.end_byte.saturating_sub(1));
            let (Some(first_entry), Some(last_entry)) = (
                self.window.get(base + first_idx),
                self.window.get(base + last_idx),
            ) else {
                continue;
            };
            let start = first_entry.line.start;
            let end = last_entry.line.end;
            if start < self.emitted_through {
                continue;
            }
            let lines_after = text_starts.len() - 1 - last_idx;
            let has_end = report.killed.is_some() || report.panic.is_some() || report.no_killable;
            let reaped = report.killed.as_ref().is_some_and(|killed| killed.reaped);
            let waited = now.saturating_duration_since(last_entry.arrived);
            let settle_at = if has_end {
                if reaped || lines_after >= self.config.grace_lines || waited >= self.config.grace {
                    None
                } else {
                    Some(last_entry.arrived + self.config.grace)
                }
            } else if waited >= self.config.headless_timeout {
                None
            } else {
                Some(last_entry.arrived + self.config.headless_timeout)
            };
            if let Some(at) = settle_at {
                // Later reports wait too: they come out in stream order.
                self.recheck_at = Some(at);
                self.scanned_through = start;
                break;
            }
            let span_text = text
                .get(report.span.start_byte..report.span.end_byte)
                .unwrap_or_default();
            settled.push(Detected {
                raw: bounded_text(span_text, self.config.max_raw_bytes),
                report,
                start,
                end,
            });
            self.emitted_through = end;
        }
        settled
    }
}

/// Index of the line containing byte `offset` of the joined text.
fn line_index(starts: &[usize], offset: usize) -> usize {
    match starts.binary_search(&offset) {
        Ok(index) => index,
        Err(index) => index.saturating_sub(1),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::capture::lines::LineSplitter;

    pub(crate) const LAB_LOG: &str =
        include_str!("../../../crates/ballast-oom/tests/fixtures/oom/lab-debian12-6.1-balloon-200m-of-512m.serial.log");

    pub(crate) fn config() -> DetectorConfig {
        DetectorConfig {
            window_bytes: 1 << 20,
            grace_lines: 8,
            grace: Duration::from_secs(1),
            headless_timeout: Duration::from_secs(10),
            max_raw_bytes: 64 * 1024,
        }
    }

    fn feed(
        detector: &mut Detector,
        splitter: &mut LineSplitter,
        text: &str,
        now: Instant,
    ) -> Vec<PuffLine> {
        let mut lines = Vec::new();
        splitter.push(text.as_bytes(), &mut lines);
        lines
            .into_iter()
            .filter_map(|line| detector.push(line, now))
            .collect()
    }

    /// node-problem-detector's log line as a guest's console may show it, re-logging
    /// the lab report's kill line.
    pub(crate) fn npd_relog(stamp: &str) -> String {
        let kill = LAB_LOG.lines().last().expect("kill line");
        let message = kill
            .split_once("] ")
            .map_or(kill, |(_, body)| body)
            .trim_end();
        format!(
            "[{stamp}] node-problem-detector[812]: I1206 14:35:38.123456 1 log_monitor.go:160] New status generated: &{{Source:kernel-monitor Events:[{{Severity:warn Reason:OOMKilling Message:{message}}}] Conditions:[]}}\n"
        )
    }

    #[test]
    fn a_kill_line_relogged_by_another_program_is_not_another_oom() {
        let now = Instant::now();
        let mut detector = Detector::new(config(), 0, 0);
        let mut splitter = LineSplitter::new(16 * 1024, 0);
        feed(&mut detector, &mut splitter, LAB_LOG, now);
        let later = now + Duration::from_secs(2);
        let reports = detector.poll(later);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].report.envelope, None);
        // NPD's re-log reaches the console after the kernel's report went out.
        feed(
            &mut detector,
            &mut splitter,
            &npd_relog("    9.000000"),
            later,
        );
        assert!(
            ballast_oom::parse(npd_relog("    9.000000").as_bytes()).reports[0]
                .envelope
                .is_some()
        );
        assert!(detector.poll(later + Duration::from_secs(30)).is_empty());
        // And on a console that never showed the kernel's lines (a quiet loglevel).
        let mut detector = Detector::new(config(), 0, 0);
        let mut splitter = LineSplitter::new(16 * 1024, 0);
        feed(
            &mut detector,
            &mut splitter,
            &npd_relog("   12.000000"),
            now,
        );
        assert!(detector.poll(now + Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn report_settles_after_grace_lines_or_time_and_comes_out_once() {
        let now = Instant::now();
        let mut detector = Detector::new(config(), 0, 0);
        let mut splitter = LineSplitter::new(16 * 1024, 0);
        feed(&mut detector, &mut splitter, LAB_LOG, now);
        // The kill line is the last line: not settled yet.
        assert!(detector.poll(now).is_empty());
        assert!(detector.poll(now + Duration::from_millis(500)).is_empty());
        let reports = detector.poll(now + Duration::from_millis(1000));
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert_eq!(report.report.killed.as_ref().map(|k| k.pid), Some(113));
        assert!(report
            .raw
            .starts_with("[    7.409881] memhog invoked oom-killer"));
        assert_eq!(report.end as usize, LAB_LOG.len());
        assert_eq!(detector.emitted_through(), LAB_LOG.len() as u64);
        // More lines and time: nothing new.
        feed(
            &mut detector,
            &mut splitter,
            "[    9.000000] memhog: 0 MiB\n",
            now,
        );
        assert!(detector.poll(now + Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn a_quiet_console_keeps_a_window_of_nine_slots_even_after_a_report() {
        let now = Instant::now();
        let mut detector = Detector::new(config(), 0, 0);
        let mut splitter = LineSplitter::new(16 * 1024, 0);
        let chatter: String = (0..1000)
            .map(|i| format!("[    1.{i:06}] eth0: link up\n"))
            .collect();
        feed(&mut detector, &mut splitter, &chatter, now);
        assert!(detector.poll(now).is_empty());
        assert_eq!(detector.window.len(), IDLE_TAIL_LINES);
        assert_eq!(detector.window.capacity(), IDLE_TAIL_LINES + 1);
        // A report widens the window while it settles...
        feed(&mut detector, &mut splitter, LAB_LOG, now);
        assert!(detector.window.capacity() > 4 * (IDLE_TAIL_LINES + 1));
        assert_eq!(detector.poll(now + Duration::from_secs(2)).len(), 1);
        // ...and the next quiet line gives the slots back.
        feed(&mut detector, &mut splitter, &chatter, now);
        assert_eq!(detector.window.len(), IDLE_TAIL_LINES);
        assert!(detector.window.capacity() <= 2 * (IDLE_TAIL_LINES + 1));
    }

    #[test]
    fn grace_lines_settle_without_waiting() {
        let now = Instant::now();
        let mut detector = Detector::new(config(), 0, 0);
        let mut splitter = LineSplitter::new(16 * 1024, 0);
        let mut text = LAB_LOG.to_owned();
        for i in 0..8 {
            text.push_str(&format!("[    8.{i:06}] memhog: nothing\n"));
        }
        feed(&mut detector, &mut splitter, &text, now);
        assert_eq!(detector.poll(now).len(), 1);
    }

    #[test]
    fn out_of_puff_lines_are_near_misses_once() {
        let now = Instant::now();
        let mut detector = Detector::new(config(), 0, 0);
        let mut splitter = LineSplitter::new(16 * 1024, 0);
        let line = "[   20.1] virtio_balloon virtio1: Out of puff! Can't get 1 pages\n";
        let puffs = feed(&mut detector, &mut splitter, line, now);
        assert_eq!(puffs.len(), 1);
        assert!(puffs[0].text.contains("Can't get 1 pages"));
        // Restarted from the same offset with the persisted mark: not again.
        let mut again = Detector::new(config(), 0, detector.near_miss_through());
        let mut splitter = LineSplitter::new(16 * 1024, 0);
        assert!(feed(&mut again, &mut splitter, line, now).is_empty());
    }

    #[test]
    fn window_stays_bounded() {
        let now = Instant::now();
        let mut detector = Detector::new(
            DetectorConfig {
                window_bytes: 4096,
                ..config()
            },
            0,
            0,
        );
        let mut splitter = LineSplitter::new(100, 0);
        for _ in 0..1000 {
            feed(&mut detector, &mut splitter, &"y".repeat(300), now);
            feed(&mut detector, &mut splitter, "\n", now);
        }
        assert!(detector.window_bytes() <= 4096);
    }
}
