//! One domain's capture state ([`DomainCapture`]: its serial tailer, guest agent
//! reader, token bucket and held partial reports) and the flood control that works
//! on it: a report emitted while the bucket has a token, else counted and kept as the
//! newest dropped one, which goes out flagged once the bucket refills.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::capture::flood::{MinInterval, TokenBucket};
use crate::capture::guest_agent::GuestAgentReader;
use crate::capture::serial::SerialTailer;
use crate::capture::{CaptureEvent, CapturedOom};
use crate::hypervisor::DomainId;

#[derive(Debug)]
pub(super) struct Held {
    pub(super) oom: CapturedOom,
    pub(super) until: Instant,
}

#[derive(Debug)]
pub(super) struct DomainCapture {
    pub(super) id: DomainId,
    pub(super) serial: Option<(PathBuf, SerialTailer)>,
    pub(super) agent: GuestAgentReader,
    pub(super) bucket: TokenBucket,
    /// Reports dropped by the bucket since the last one emitted.
    pub(super) suppressed: u64,
    /// The newest dropped report: it goes out as soon as the bucket refills (with
    /// the count of those dropped before it), so a flood that stops is still
    /// flagged in an event without waiting for the VM's next OOM.
    /// Boxed: a `CapturedOom` is ~1.3 KiB and this is `None` for nearly every VM.
    pub(super) last_suppressed: Option<Box<CapturedOom>>,
    pub(super) near_miss: MinInterval,
    pub(super) held: Vec<Held>,
    pub(super) dedupe_dirty: bool,
    /// Host clock when the last serial read began: reports in the next read were
    /// printed after it.
    pub(super) serial_read_at: Option<SystemTime>,
    /// Host clock when the guest agent fetch now running began, and when the last
    /// finished one began.
    pub(super) agent_begun_at: Option<SystemTime>,
    pub(super) agent_read_at: Option<SystemTime>,
}

/// Flood control: emits `oom` if the domain's bucket has a token, else counts it.
pub(super) fn gate(
    domain: &mut DomainCapture,
    total: &mut u64,
    mut oom: CapturedOom,
    now: Instant,
    events: &mut Vec<CaptureEvent>,
) {
    if domain.bucket.try_take(now) {
        oom.suppressed_before = std::mem::take(&mut domain.suppressed);
        // Counted in `suppressed_before`: the kept copy is no longer owed.
        domain.last_suppressed = None;
        events.push(CaptureEvent::Oom(oom));
        return;
    }
    suppress(domain, total, oom);
}

/// Flood control dropped `oom`: counted, and kept as the newest dropped one.
pub(super) fn suppress(domain: &mut DomainCapture, total: &mut u64, oom: CapturedOom) {
    domain.suppressed += 1;
    *total += 1;
    domain.last_suppressed = Some(Box::new(oom));
    if domain.suppressed == 1 {
        tracing::warn!(domain = %domain.id.uuid, "Guest OOM reports above the flood limit; counting instead of sending.");
    } else {
        tracing::debug!(domain = %domain.id.uuid, suppressed = domain.suppressed, "Guest OOM report suppressed.");
    }
}

/// After a flood: once the bucket has a token, the newest dropped report goes
/// out carrying the count of the ones dropped before it (it is not counted twice).
pub(super) fn release_flood_summary(
    domain: &mut DomainCapture,
    now: Instant,
    events: &mut Vec<CaptureEvent>,
) {
    // Tokens owed to held partial reports are theirs.
    let owed = u32::try_from(domain.held.len()).unwrap_or(u32::MAX);
    if domain.last_suppressed.is_none()
        || domain.bucket.available(now) <= owed
        || !domain.bucket.try_take(now)
    {
        return;
    }
    if let Some(mut oom) = domain.last_suppressed.take() {
        let dropped = std::mem::take(&mut domain.suppressed);
        oom.suppressed_before = dropped.saturating_sub(1);
        tracing::warn!(
            domain = %domain.id.uuid,
            dropped,
            "Guest OOM flood: the newest dropped report goes out flagged with the count."
        );
        events.push(CaptureEvent::Oom(*oom));
    }
}
