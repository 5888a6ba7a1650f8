//! Guest OOM capture: finds the guest kernel's OOM reports and balloon near
//! misses, from the outside, and turns each into one event.
//!
//! Sources (one file per job):
//! - [`serial`]: tails the serial console log file virtlogd writes for each
//!   domain (`DomainConfig::serial_log_path`), across rotation (`file.0`, ...)
//!   and truncation, with the read position persisted per domain. Consoles
//!   opened with `virDomainOpenConsole` are exclusive and would steal the
//!   admin's `virsh console`, so this reads files only.
//! - [`guest_agent`]: reads the guest's `/dev/kmsg` through the guest agent's
//!   file API ([`kmsg`]; `dmesg` through `guest-exec` only where the operator
//!   allows it and the guest refuses the file API) when asked, and keeps what is
//!   new by kernel monotonic time stamp.
//!
//! Pure logic, unit-tested without I/O: [`lines`] (bounded line splitting),
//! [`detect`] (window + settled reports), [`dedupe`], [`flood`] (rate limits).
//! [`hub::Capture`] wires them per domain:
//! 1. a report found by either source gets a dedupe identity (domain, killed
//!    pid, kernel time stamp of its first line and of its kill line);
//! 2. one already seen is dropped, unless the new copy is complete and the old
//!    one was partial (a `quiet` console prints only the kill line): then the
//!    complete copy wins, still under the first key;
//! 3. a partial serial report is held for a short while so the guest agent
//!    can complete it ([`hub::SerialPoll::wants_guest_agent`]);
//! 4. a per-domain token bucket bounds what a hostile guest can make us emit;
//!    what it drops is counted on the next event and agent-wide, and the newest
//!    dropped report goes out (with that count) as soon as the bucket refills, so a
//!    flood that stops is still flagged; under a flood a partial report is held
//!    only while the bucket has a token for it.
//!
//! Guest-reported data is untrusted: every line, window, report text and
//! command output is size-bounded, and guest time stamps are never compared
//! with host time (`captured_at` is the host clock at capture).
//!
//! What it is not: it does not decide what an OOM means (that is
//! `ballast_oom::analyze`), and it does not send anything anywhere.

pub mod dedupe;
pub mod detect;
pub mod flood;
pub mod ga_worker;
pub mod guest_agent;
pub mod host_kernel;
pub mod hub;
pub mod kmsg;
pub mod lines;
pub mod serial;
pub mod state;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::hypervisor::{DomainId, HypervisorError};

pub use guest_agent::FetchReason;
pub use hub::{Capture, SerialPoll};

/// Where a captured report was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaptureSource {
    /// The domain's serial console log file.
    Serial,
    /// The guest kernel log read through the guest agent (`/dev/kmsg`, or
    /// `dmesg`/`journalctl -k` where exec is allowed).
    GuestAgent,
    /// The host kernel's own log (a QEMU process killed on the host).
    HostKernel,
}

/// One guest OOM report, captured once.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedOom {
    pub domain: DomainId,
    pub source: CaptureSource,
    /// Host clock at capture (never compare with the guest's time stamps).
    pub captured_at: SystemTime,
    /// Host clock when this source's previous read of the guest's log began: that read
    /// did not hold the report, so the kill was printed after it. A balloon sample
    /// taken before it was taken before the kill. None when unknown (the report was in
    /// the first read, or the source has no earlier read).
    pub printed_after: Option<SystemTime>,
    /// The report's text, lossy UTF-8, at most [`CaptureSettings::max_raw_bytes`]. Guest-reported.
    pub raw: String,
    pub report: ballast_oom::Report,
    /// `<domain uuid>:<first line time stamp, ms>:<killed pid>`; the same OOM seen
    /// through another source, or completed later, keeps this key.
    pub dedupe_key: String,
    /// Reports of this domain dropped by flood control since the last one emitted.
    pub suppressed_before: u64,
}

/// Kinds of near-miss lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NearMissKind {
    /// `virtio_balloon virtioN: Out of puff! Can't get N pages`: the balloon
    /// stalls because the guest has no memory left to give.
    OutOfPuff,
}

/// A line saying the guest came close to an OOM (rate-limited per domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearMiss {
    pub domain: DomainId,
    pub kind: NearMissKind,
    pub captured_at: SystemTime,
    /// The line as printed (at most 512 bytes). Guest-reported.
    pub line: String,
    /// Near-miss lines of this domain dropped by the rate limit since the last one.
    pub suppressed_before: u64,
}

/// What capture hands to the rest of the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum CaptureEvent {
    /// A new OOM report.
    Oom(CapturedOom),
    /// A complete copy of a report emitted earlier as partial (same `dedupe_key`):
    /// it replaces the earlier one.
    OomCompleted(CapturedOom),
    NearMiss(NearMiss),
}

/// Limits and delays of capture. `Default` gives the documented values.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// Longest console line kept; the rest of a longer line is skipped (16 KiB).
    pub max_line_bytes: usize,
    /// Recent console text kept per domain (1 MiB).
    pub window_bytes: usize,
    /// Longest report text kept in [`CapturedOom::raw`] (64 KiB).
    pub max_raw_bytes: usize,
    /// Lines after a kill line within which the `oom_reaper` line may still come (8).
    pub grace_lines: usize,
    /// Time after a kill line within which the `oom_reaper` line may still come (1 s).
    pub grace: Duration,
    /// A report without a kill line (panic, lost end) is emitted after this (10 s).
    pub headless_timeout: Duration,
    /// A partial serial report waits this long for the guest agent to complete it (10 s).
    pub partial_hold: Duration,
    /// Bytes read per domain per serial poll, so one chatty guest cannot starve others (8 MiB).
    pub max_read_per_poll: usize,
    /// The serial state file is written at least this often while reading (5 s);
    /// always at once after an event.
    pub persist_interval: Duration,
    /// Flood control: reports let through at once per domain (20)...
    pub flood_burst: u32,
    /// ...and one more per this interval (60 s).
    pub flood_refill: Duration,
    /// At most one near-miss event per domain per interval (60 s).
    pub near_miss_interval: Duration,
    /// Dedupe keys remembered (and persisted) per domain (1000).
    pub dedupe_keys_per_domain: usize,
    /// Guest agent: time limit of one `dmesg` (10 s).
    pub agent_timeout: Duration,
    /// Guest agent: output cap of one `dmesg` (4 MiB).
    pub agent_max_output_bytes: usize,
    /// Guest agent: `guest-exec dmesg` may run when the guest refuses the file API
    /// (`capture.guest_agent_exec`; false).
    pub agent_exec: bool,
    /// Guest agent: first retry delay after a failure (30 s), doubling...
    pub agent_backoff_min: Duration,
    /// ...up to this (30 min).
    pub agent_backoff_max: Duration,
    /// Where per-domain state files go.
    pub state_dir: PathBuf,
}

impl CaptureSettings {
    /// The defaults, with state files under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        CaptureSettings {
            max_line_bytes: 16 * 1024,
            window_bytes: 1024 * 1024,
            max_raw_bytes: 64 * 1024,
            grace_lines: 8,
            grace: Duration::from_secs(1),
            headless_timeout: Duration::from_secs(10),
            partial_hold: Duration::from_secs(10),
            max_read_per_poll: 8 * 1024 * 1024,
            persist_interval: Duration::from_secs(5),
            flood_burst: 20,
            flood_refill: Duration::from_secs(60),
            near_miss_interval: Duration::from_secs(60),
            dedupe_keys_per_domain: 1000,
            agent_timeout: Duration::from_secs(10),
            agent_max_output_bytes: 4 * 1024 * 1024,
            agent_exec: false,
            agent_backoff_min: Duration::from_secs(30),
            agent_backoff_max: Duration::from_secs(30 * 60),
            state_dir: state_dir.into(),
        }
    }

    pub(crate) fn detector(&self) -> detect::DetectorConfig {
        detect::DetectorConfig {
            window_bytes: self.window_bytes,
            grace_lines: self.grace_lines,
            grace: self.grace,
            headless_timeout: self.headless_timeout,
            max_raw_bytes: self.max_raw_bytes,
        }
    }
}

/// Failures of capture; each names the domain's file or call that failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("Failed to read serial log {path}")]
    ReadLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to read capture state {path}")]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to write capture state {path}")]
    WriteState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to read the kernel log of {domain} through the guest agent")]
    GuestAgent {
        domain: String,
        #[source]
        source: HypervisorError,
    },
}
