//! When a report on a live console is out: the agent's timing over
//! [`ballast_oom::LiveParser`], which owns what a report is (the lines that can belong
//! to one, the window, the parse, `has_end`, the kernel's reports only). Pure: lines
//! and the time come in, settled reports come out.
//!
//! 1. Every line goes into the parser's window (at most `window_bytes`; the oldest
//!    lines fall out). `Out of puff!` lines are returned at once as near-miss lines.
//! 2. [`Detector::poll`] parses when a line that can belong to a report arrived, or a
//!    report waiting to settle may have settled. A report whose kill line arrived is
//!    settled once the `oom_reaper` line came, or `grace_lines` more lines came, or
//!    `grace` passed; a report without a kill line (a panic, a lost end) after
//!    `headless_timeout`. Settled reports come out in order, once: the watermark (a
//!    stream offset, persisted by the caller) moves past them.

use std::time::{Duration, Instant};

use ballast_oom::{LiveConfig, LiveLine, LiveParser, Pending, Report};

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

/// Lines kept while no report is pending (only the newest matter then).
const IDLE_TAIL_LINES: usize = 8;

/// The per-VM window and detection state.
#[derive(Debug)]
pub struct Detector {
    config: DetectorConfig,
    /// The window; each line tagged with its arrival time.
    live: LiveParser<Instant>,
    /// Near-miss lines starting before this offset were returned already.
    near_miss_through: u64,
    /// A report is waiting to settle: parse again at this time (or after enough lines).
    recheck_at: Option<Instant>,
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
        let live = LiveParser::new(
            LiveConfig {
                window_bytes: config.window_bytes,
                // A console without OOMs costs a few KiB per VM instead of the whole
                // window (500 VMs: tens of MiB).
                idle_lines: Some(IDLE_TAIL_LINES),
                max_text_bytes: config.max_raw_bytes,
            },
            emitted_through,
        );
        Detector {
            config,
            live,
            near_miss_through,
            recheck_at: None,
        }
    }

    pub fn emitted_through(&self) -> u64 {
        self.live.emitted_through()
    }

    pub fn near_miss_through(&self) -> u64 {
        self.near_miss_through
    }

    /// Bytes of line text held in the window.
    pub fn window_bytes(&self) -> usize {
        self.live.window_bytes()
    }

    /// Where a restarted reader should start so no unsettled report is lost:
    /// the first line in the window past the watermark (None: nothing held).
    pub fn resume_offset(&self) -> Option<u64> {
        self.live.resume_offset()
    }

    /// Forgets the window (the stream was cut: truncation, a new file).
    pub fn clear_window(&mut self) {
        self.live.clear_window();
        self.recheck_at = None;
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
        self.live.push(LiveLine {
            start: line.start,
            end: line.end,
            bytes: line.bytes,
            tag: now,
        });
        puff
    }

    fn parse_due(&self, now: Instant) -> bool {
        self.live.trigger_pending()
            || self.recheck_at.is_some_and(|at| {
                now >= at || self.live.lines_since_poll() >= self.config.grace_lines
            })
    }

    /// Parses the window when something may have settled; returns newly settled reports.
    pub fn poll(&mut self, now: Instant) -> Vec<Detected> {
        if !self.parse_due(now) {
            return Vec::new();
        }
        let config = &self.config;
        let mut recheck_at = None;
        let settled = self.live.poll(|pending| {
            recheck_at = settle_at(config, pending, now);
            recheck_at.is_none()
        });
        self.recheck_at = recheck_at;
        settled
            .into_iter()
            .map(|found| Detected {
                raw: bounded_text(&found.text, self.config.max_raw_bytes),
                report: found.report,
                start: found.start,
                end: found.end,
            })
            .collect()
    }
}

/// When `pending` settles: `None` now, else the time to look again.
fn settle_at(
    config: &DetectorConfig,
    pending: &Pending<'_, Instant>,
    now: Instant,
) -> Option<Instant> {
    let arrived = *pending.last_tag;
    let waited = now.saturating_duration_since(arrived);
    if pending.has_end {
        if pending.reaped || pending.lines_after >= config.grace_lines || waited >= config.grace {
            None
        } else {
            Some(arrived + config.grace)
        }
    } else if waited >= config.headless_timeout {
        None
    } else {
        Some(arrived + config.headless_timeout)
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
        assert_eq!(detector.live.window_lines(), IDLE_TAIL_LINES);
        assert_eq!(detector.live.window_capacity(), IDLE_TAIL_LINES + 1);
        // A report widens the window while it settles...
        feed(&mut detector, &mut splitter, LAB_LOG, now);
        assert!(detector.live.window_capacity() > 4 * (IDLE_TAIL_LINES + 1));
        assert_eq!(detector.poll(now + Duration::from_secs(2)).len(), 1);
        // ...and the next quiet line gives the slots back.
        feed(&mut detector, &mut splitter, &chatter, now);
        assert_eq!(detector.live.window_lines(), IDLE_TAIL_LINES);
        assert!(detector.live.window_capacity() <= 2 * (IDLE_TAIL_LINES + 1));
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
