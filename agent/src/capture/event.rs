//! What capture hands to the rest of the agent: a captured OOM report
//! ([`CapturedOom`], where it was read), a near miss, and the [`CaptureEvent`] that
//! carries either.

use std::time::SystemTime;

use crate::hypervisor::DomainId;

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
    /// The report's text, lossy UTF-8, at most
    /// [`CaptureSettings::max_raw_bytes`](super::CaptureSettings::max_raw_bytes). Guest-reported.
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
