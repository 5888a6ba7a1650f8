//! [`CaptureSettings`]: the limits and delays of capture, with their documented
//! defaults.

use std::path::PathBuf;
use std::time::Duration;

use super::detect;

/// Limits and delays of capture. `Default` gives the documented values.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// Longest console line kept; the rest of a longer line is skipped (16 KiB).
    pub max_line_bytes: usize,
    /// Recent console text kept per domain (1 MiB).
    pub window_bytes: usize,
    /// Longest report text kept in [`CapturedOom::raw`](super::CapturedOom::raw) (64 KiB).
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
