//! One report from either capture path on its way out: dedupe (new, a completion,
//! a repeat), the hold of a partial serial copy, and flood control (the per-VM
//! token bucket, the count of dropped reports, the flagged summary after a flood).

use std::time::{Instant, SystemTime};

use ballast_oom::Report;

use super::{Capture, DomainCapture, Held, SerialPoll};
use crate::capture::dedupe::{self, Seen};
use crate::capture::{CaptureEvent, CaptureSource, CapturedOom};
use crate::hypervisor::DomainId;

impl Capture {
    /// One report from either source: dedupe, hold or emit.
    pub(super) fn found(
        &mut self,
        id: &DomainId,
        source: CaptureSource,
        (report, raw, printed_after): (Report, String, Option<SystemTime>),
        now: Instant,
        poll: &mut SerialPoll,
    ) {
        let identity = dedupe::identity(&report, &raw);
        let partial = report.partial;
        let seen = self.dedupe.observe(&id.uuid, &identity);
        let Some(domain) = self.domains.get_mut(&id.uuid) else {
            return;
        };
        let oom = |key: String| CapturedOom {
            domain: domain.id.clone(),
            source,
            captured_at: SystemTime::now(),
            printed_after,
            raw,
            report,
            dedupe_key: key,
            suppressed_before: 0,
        };
        match seen {
            Seen::Duplicate { key } => {
                tracing::debug!(domain = %id.uuid, %key, ?source, "OOM report seen before.");
            }
            Seen::Completes { key } => {
                domain.dedupe_dirty = true;
                let mut oom = oom(key.clone());
                if let Some(index) = domain.held.iter().position(|h| h.oom.dedupe_key == key) {
                    // Both reads' bounds hold: the later one is the closer to the kill.
                    oom.printed_after = oom.printed_after.max(domain.held[index].oom.printed_after);
                    // The partial copy never went out: emit the complete one instead.
                    domain.held.remove(index);
                    gate(
                        domain,
                        &mut self.flood_suppressed_total,
                        oom,
                        now,
                        &mut poll.events,
                    );
                } else {
                    poll.events.push(CaptureEvent::OomCompleted(oom));
                }
            }
            Seen::New { key } => {
                domain.dedupe_dirty = true;
                let oom = oom(key);
                let hold = partial
                    && source == CaptureSource::Serial
                    && !self.settings.partial_hold.is_zero();
                // Held copies each take a token when released: under a flood, one the
                // bucket will not have a token for is not held (nor completed), only counted.
                let room = usize::try_from(domain.bucket.available(now)).unwrap_or(usize::MAX);
                if hold && domain.held.len() >= room {
                    suppress(domain, &mut self.flood_suppressed_total, oom);
                } else if hold {
                    domain.held.push(Held {
                        oom,
                        until: now + self.settings.partial_hold,
                    });
                    poll.wants_guest_agent = true;
                } else {
                    gate(
                        domain,
                        &mut self.flood_suppressed_total,
                        oom,
                        now,
                        &mut poll.events,
                    );
                }
            }
        }
    }
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
fn suppress(domain: &mut DomainCapture, total: &mut u64, oom: CapturedOom) {
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
