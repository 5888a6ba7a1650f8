//! Reads the guest kernel log through the guest agent and keeps what is new.
//!
//! 1. `/dev/kmsg` is read through the guest agent's file API ([`super::kmsg`]:
//!    `guest-file-open/read/close`, nothing started in the guest) with a time
//!    limit and a byte cap. Only when the guest refuses that (file API disabled
//!    with qemu-ga `--block-rpcs`/`--allow-rpcs`, or no `/dev/kmsg`) and the
//!    operator allows it (`capture.guest_agent_exec`), `/bin/dmesg` runs through
//!    [`Hypervisor::guest_exec`], and if that fails `journalctl -k -o
//!    short-monotonic` (the parser reads both).
//! 2. The output is read as a whole log through [`ballast_oom::LiveParser`] (the
//!    kernel's own reports); a report is new when its first line's monotonic stamp
//!    is past the cursor (the stamp of the last report taken). The last report of
//!    the output is left for the next fetch when it has no end yet (still being
//!    printed).
//! 3. A reboot resets the guest's clock: when the output's first stamp moved
//!    back (the ring buffer only drops old records, so within one boot it only
//!    moves forward) or its last stamp is below the cursor, the cursor restarts.
//! 4. A guest without an agent (or one that fails) is retried with exponential
//!    backoff (`agent_backoff_min` doubling up to `agent_backoff_max`), never in
//!    a tight loop; the first failure is logged at info, the rest at debug.
//!
//! The cursor lives in memory only: after an agent restart the first fetch sees
//! old reports again, and the persisted dedupe keys drop them.

use std::time::{Duration, Instant};

use ballast_oom::{LiveConfig, LiveParser, Report};

use super::dedupe::line_stamp_ms;
use super::detect::bounded_text;
use super::{CaptureError, CaptureSettings};
use crate::hypervisor::{DomainId, Hypervisor, HypervisorError};

/// Where the last fetch left off, for one guest boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DmesgCursor {
    /// First-line stamp (ms) of the newest report taken.
    pub last_report_ms: Option<u64>,
    /// Stamp of the output's first line at the last fetch.
    pub first_line_ms: Option<u64>,
    /// Stamp of the output's last line at the last fetch.
    pub last_line_ms: Option<u64>,
}

/// A report taken from one fetch.
#[derive(Debug, Clone)]
pub struct AgentReport {
    pub report: Report,
    pub raw: String,
}

/// What [`take_new`] found in one output.
#[derive(Debug, Default)]
pub struct Taken {
    pub reports: Vec<AgentReport>,
    /// The guest rebooted since the last fetch.
    pub rebooted: bool,
}

fn first_and_last_stamps(output: &str) -> (Option<u64>, Option<u64>) {
    let mut stamps = output.lines().filter_map(line_stamp_ms);
    let first = stamps.next();
    let last = stamps.next_back().or(first);
    (first, last)
}

/// The reports in `output` past `cursor`; moves the cursor. Pure.
pub fn take_new(cursor: &mut DmesgCursor, output: &[u8], max_raw_bytes: usize) -> Taken {
    let text = String::from_utf8_lossy(output);
    let (first, last) = first_and_last_stamps(&text);
    let went_back = |now: Option<u64>, before: Option<u64>| matches!((now, before), (Some(n), Some(b)) if n < b);
    let rebooted = went_back(first, cursor.first_line_ms)
        || went_back(last, cursor.last_report_ms)
        || went_back(last, cursor.last_line_ms);
    if rebooted {
        *cursor = DmesgCursor::default();
    }
    cursor.first_line_ms = first.or(cursor.first_line_ms);
    cursor.last_line_ms = last.or(cursor.last_line_ms);
    // The output read as a whole log: the kernel's own reports (a kill line re-logged
    // by another program is the same kill again), the last one left for the next
    // fetch while it has no end (still being printed).
    let mut live = LiveParser::new(
        LiveConfig {
            window_bytes: usize::MAX,
            idle_lines: None,
            max_text_bytes: max_raw_bytes,
        },
        0,
    );
    live.push_text(0, text.as_bytes(), ());
    live.end_line();
    let found = live.poll(|pending| !pending.last || pending.has_end);
    let mut taken = Taken {
        reports: Vec::new(),
        rebooted,
    };
    for found in found {
        let report = found.report;
        let stamp = report
            .stamp
            .monotonic_secs
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map(|secs| (secs * 1000.0).round() as u64);
        if let (Some(stamp), Some(seen)) = (stamp, cursor.last_report_ms) {
            if stamp <= seen {
                continue;
            }
        }
        if let Some(stamp) = stamp {
            cursor.last_report_ms = Some(stamp);
        }
        taken.reports.push(AgentReport {
            raw: bounded_text(&found.text, max_raw_bytes),
            report,
        });
    }
    taken
}

/// Why the agent asks for a fetch (for logs; every reason fetches the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchReason {
    /// The balloon's oom-kills counter went up.
    OomKillCounter,
    /// The guest's usable memory collapsed.
    UsableCollapsed,
    /// The serial console showed a partial report.
    PartialReport,
    /// The slow periodic check.
    Periodic,
}

/// The guest agent path of one domain: cursor and backoff.
///
/// A fetch has two halves so that the blocking call can run on another thread
/// ([`super::ga_worker`]): [`GuestAgentReader::begin`] (backoff, schedule) and
/// [`GuestAgentReader::finish`] (cursor, backoff) stay with the caller's state;
/// [`run_kernel_log`] in between is the only part that waits for the guest.
#[derive(Debug, Default)]
pub struct GuestAgentReader {
    cursor: DmesgCursor,
    failures: u32,
    retry_at: Option<Instant>,
    last_fetch: Option<Instant>,
    /// Whether the last fetch that finished got an answer.
    answered: Option<bool>,
}

impl GuestAgentReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// The periodic fetch is due (never fetched, or `interval` since the last).
    pub fn periodic_due(&self, now: Instant, interval: Duration) -> bool {
        self.last_fetch
            .is_none_or(|at| now.saturating_duration_since(at) >= interval)
            && self.retry_at.is_none_or(|at| now >= at)
    }

    /// Whether the guest agent answered the last fetch that ran (None before the
    /// first one finished); for the per-VM audit.
    pub fn answering(&self) -> Option<bool> {
        self.answered
    }

    /// Starts a fetch; false (no call) while backing off after a failure.
    pub fn begin(&mut self, reason: FetchReason, now: Instant) -> bool {
        if self.retry_at.is_some_and(|at| now < at) {
            return false;
        }
        self.last_fetch = Some(now);
        tracing::debug!(
            ?reason,
            "Reading the guest kernel log through the guest agent."
        );
        true
    }

    /// Ends a fetch begun with [`GuestAgentReader::begin`] with what
    /// [`run_kernel_log`] returned: the new reports, or the backoff after a failure.
    pub fn finish(
        &mut self,
        domain: &DomainId,
        output: Result<Vec<u8>, HypervisorError>,
        settings: &CaptureSettings,
        now: Instant,
    ) -> Result<Taken, CaptureError> {
        match output {
            Ok(output) => {
                self.failures = 0;
                self.retry_at = None;
                self.answered = Some(true);
                Ok(take_new(&mut self.cursor, &output, settings.max_raw_bytes))
            }
            Err(source) => {
                self.failures = self.failures.saturating_add(1);
                self.answered = Some(false);
                let delay = settings
                    .agent_backoff_min
                    .saturating_mul(1u32 << (self.failures - 1).min(16))
                    .min(settings.agent_backoff_max);
                self.retry_at = Some(now + delay);
                // The whole chain: libvirt's own words say why (timeout, not connected, ...).
                let reason = ballast_daemon::error_chain(&source);
                if self.failures == 1 {
                    tracing::info!(error = %reason, retry_secs = delay.as_secs(), "Guest agent cannot read the kernel log; retrying later.");
                } else {
                    tracing::debug!(error = %reason, retry_secs = delay.as_secs(), "Guest agent still cannot read the kernel log.");
                }
                Err(CaptureError::GuestAgent {
                    domain: domain.uuid.clone(),
                    source,
                })
            }
        }
    }
}

/// The blocking half of a fetch: reads the guest's `/dev/kmsg` through the file API
/// within `settings.agent_timeout` and returns it as dmesg lines; when the guest
/// refuses the file API and `allow_exec`, runs `/bin/dmesg` (or `journalctl -k`).
pub fn run_kernel_log(
    hypervisor: &dyn Hypervisor,
    domain: &DomainId,
    settings: &CaptureSettings,
    allow_exec: bool,
) -> Result<Vec<u8>, HypervisorError> {
    let max = settings.agent_max_output_bytes;
    let timeout = settings.agent_timeout;
    let started = std::time::Instant::now();
    let refused = match super::kmsg::read_kmsg(hypervisor, domain, timeout, max) {
        Ok(read) => {
            if read.truncated {
                tracing::debug!(
                    max_bytes = max,
                    "Guest kernel log longer than the cap; its oldest records were skipped."
                );
            }
            tracing::debug!(
                calls = read.calls,
                bytes = read.bytes.len(),
                "Read the guest's /dev/kmsg through the guest agent file API."
            );
            return Ok(super::kmsg::to_dmesg_text(&read.bytes, max));
        }
        Err(error @ HypervisorError::GuestRefused { .. }) => error,
        Err(error) => return Err(error),
    };
    if !allow_exec {
        return Err(HypervisorError::Call {
            action: if refused.is_command_disabled() {
                "read /dev/kmsg: the guest agent's file API is disabled in the guest and capture.guest_agent_exec is false"
            } else {
                "read /dev/kmsg through the guest agent (capture.guest_agent_exec is false, so dmesg is not run)"
            },
            source: Box::new(refused),
        });
    }
    tracing::debug!(error = %refused, "Guest agent file API refused; running dmesg (capture.guest_agent_exec).");
    let timeout = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    let dmesg = hypervisor.guest_exec(domain, "/bin/dmesg", &[], timeout, max);
    let dmesg_error = match dmesg {
        Ok(output) if output.exit_code == Some(0) => {
            if output.truncated {
                tracing::warn!(
                    max_bytes = max,
                    "Guest dmesg output truncated; the newest reports may be missing."
                );
            }
            return Ok(output.stdout);
        }
        // No agent at all: journalctl would fail the same way.
        Err(error @ (HypervisorError::Unavailable { .. } | HypervisorError::Timeout(_))) => {
            return Err(error)
        }
        Ok(output) => HypervisorError::Call {
            action: "run /bin/dmesg in the guest",
            source: format!("exit code {:?}", output.exit_code).into(),
        },
        Err(error) => error,
    };
    match hypervisor.guest_exec(
        domain,
        "/usr/bin/journalctl",
        &["-k", "-o", "short-monotonic", "--no-pager", "-b"],
        timeout,
        max,
    ) {
        Ok(output) if output.exit_code == Some(0) => Ok(output.stdout),
        _ => Err(dmesg_error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::detect::tests::LAB_LOG;
    use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};

    /// The outcome of [`fetch`].
    #[derive(Debug)]
    enum Fetched {
        Reports(Taken),
        /// A recent failure: not tried before this time.
        BackingOff,
    }

    /// One whole fetch on this thread, as `Capture::fetch_guest_agent` runs it:
    /// begin, the guest call, finish.
    fn fetch(
        reader: &mut GuestAgentReader,
        hypervisor: &dyn Hypervisor,
        domain: &DomainId,
        reason: FetchReason,
        settings: &CaptureSettings,
        now: Instant,
    ) -> Result<Fetched, CaptureError> {
        if !reader.begin(reason, now) {
            return Ok(Fetched::BackingOff);
        }
        let output = run_kernel_log(hypervisor, domain, settings, settings.agent_exec);
        reader
            .finish(domain, output, settings, now)
            .map(Fetched::Reports)
    }

    #[test]
    fn only_new_reports_are_taken_and_a_reboot_resets() {
        let mut cursor = DmesgCursor::default();
        let taken = take_new(&mut cursor, LAB_LOG.as_bytes(), 1 << 16);
        assert_eq!(taken.reports.len(), 1);
        assert!(!taken.rebooted);
        assert_eq!(cursor.last_report_ms, Some(7410));
        // Same output again, and with more lines: nothing new.
        assert!(take_new(&mut cursor, LAB_LOG.as_bytes(), 1 << 16)
            .reports
            .is_empty());
        let more = format!("{LAB_LOG}[    9.000000] later\n");
        assert!(take_new(&mut cursor, more.as_bytes(), 1 << 16)
            .reports
            .is_empty());
        // After a reboot the log starts again at 0 and is shorter: new again.
        let rebooted = "[    0.000000] Linux version 6.1\n[    1.000000] hello\n";
        let taken = take_new(&mut cursor, rebooted.as_bytes(), 1 << 16);
        assert!(taken.rebooted);
        assert!(taken.reports.is_empty());
        let taken = take_new(&mut cursor, LAB_LOG.as_bytes(), 1 << 16);
        assert_eq!(taken.reports.len(), 1);
    }

    #[test]
    fn a_kill_line_relogged_by_another_program_is_not_taken() {
        let relog = crate::capture::detect::tests::npd_relog("    9.000000");
        let mut cursor = DmesgCursor::default();
        let taken = take_new(&mut cursor, format!("{LAB_LOG}{relog}").as_bytes(), 1 << 16);
        assert_eq!(taken.reports.len(), 1, "the kernel's report only");
        assert_eq!(cursor.last_report_ms, Some(7410));
        let mut cursor = DmesgCursor::default();
        let taken = take_new(&mut cursor, relog.as_bytes(), 1 << 16);
        assert!(taken.reports.is_empty());
    }

    #[test]
    fn report_still_being_printed_waits() {
        let cut: Vec<&str> = LAB_LOG.lines().take(400).collect();
        let mut cursor = DmesgCursor::default();
        assert!(take_new(&mut cursor, cut.join("\n").as_bytes(), 1 << 16)
            .reports
            .is_empty());
        assert_eq!(
            take_new(&mut cursor, LAB_LOG.as_bytes(), 1 << 16)
                .reports
                .len(),
            1
        );
    }

    #[test]
    fn missing_agent_backs_off() {
        let hypervisor = FakeHypervisor::new();
        let id = DomainId {
            uuid: "u".to_owned(),
            name: "vm".to_owned(),
        };
        hypervisor.set(
            id.clone(),
            FakeDomain {
                running: true,
                ..FakeDomain::default()
            },
        );
        let settings = CaptureSettings::new(std::env::temp_dir());
        let mut reader = GuestAgentReader::new();
        assert_eq!(reader.answering(), None, "not asked yet");
        let now = Instant::now();
        assert!(fetch(
            &mut reader,
            &hypervisor,
            &id,
            FetchReason::Periodic,
            &settings,
            now
        )
        .is_err());
        assert_eq!(reader.answering(), Some(false));
        let later = now + Duration::from_secs(10);
        assert!(matches!(
            fetch(
                &mut reader,
                &hypervisor,
                &id,
                FetchReason::Periodic,
                &settings,
                later
            ),
            Ok(Fetched::BackingOff)
        ));
        assert!(!reader.periodic_due(later, Duration::from_secs(1)));
        // Second failure doubles the delay: 30 s, then 60 s.
        let t1 = now + Duration::from_secs(30);
        assert!(fetch(
            &mut reader,
            &hypervisor,
            &id,
            FetchReason::Periodic,
            &settings,
            t1
        )
        .is_err());
        assert!(matches!(
            fetch(
                &mut reader,
                &hypervisor,
                &id,
                FetchReason::Periodic,
                &settings,
                t1 + Duration::from_secs(59)
            ),
            Ok(Fetched::BackingOff)
        ));
        hypervisor.update(&id, |domain| {
            domain.dmesg = Some(LAB_LOG.as_bytes().to_vec())
        });
        let t2 = t1 + Duration::from_secs(60);
        let Ok(Fetched::Reports(taken)) = fetch(
            &mut reader,
            &hypervisor,
            &id,
            FetchReason::OomKillCounter,
            &settings,
            t2,
        ) else {
            panic!("the agent answers now");
        };
        assert_eq!(reader.answering(), Some(true));
        assert_eq!(taken.reports.len(), 1);
    }

    #[test]
    fn dmesg_runs_only_where_the_file_api_is_disabled_and_exec_is_allowed() {
        let hypervisor = FakeHypervisor::new();
        let id = DomainId {
            uuid: "u".to_owned(),
            name: "vm".to_owned(),
        };
        hypervisor.set(
            id.clone(),
            FakeDomain {
                running: true,
                dmesg: Some(LAB_LOG.as_bytes().to_vec()),
                ..FakeDomain::default()
            },
        );
        let settings = CaptureSettings::new(std::env::temp_dir());
        // The file API answers: the log comes from /dev/kmsg, nothing runs.
        let output = run_kernel_log(&hypervisor, &id, &settings, true).expect("kmsg");
        assert_eq!(output, LAB_LOG.as_bytes());
        assert_eq!(hypervisor.guest_exec_calls(&id), 0);
        assert!(hypervisor.guest_file_calls(&id) >= 3, "open, read, close");
        hypervisor.update(&id, |domain| domain.file_api_disabled = true);
        let error = run_kernel_log(&hypervisor, &id, &settings, false).expect_err("no exec");
        let text = ballast_daemon::error_chain(&error);
        assert!(text.contains("capture.guest_agent_exec is false"), "{text}");
        assert!(text.contains("disabled"), "{text}");
        assert_eq!(hypervisor.guest_exec_calls(&id), 0);
        let output = run_kernel_log(&hypervisor, &id, &settings, true).expect("dmesg");
        assert_eq!(output, LAB_LOG.as_bytes());
        assert_eq!(hypervisor.guest_exec_calls(&id), 1);
    }

    #[test]
    fn the_periodic_read_is_due_on_its_interval() {
        let mut reader = GuestAgentReader::new();
        let interval = Duration::from_secs(900);
        let now = Instant::now();
        assert!(
            reader.periodic_due(now, interval),
            "never read: due at once"
        );
        assert!(reader.begin(FetchReason::Periodic, now));
        assert!(!reader.periodic_due(now + Duration::from_secs(899), interval));
        assert!(reader.periodic_due(now + interval, interval));
    }
}
