//! One report from either capture path on its way out: dedupe (new, a completion,
//! a repeat), the hold of a partial serial copy, then flood control (`domain`: the
//! per-VM token bucket, the count of dropped reports, the flagged summary after a
//! flood).

use std::time::{Instant, SystemTime};

use ballast_oom::Report;

use super::domain::{gate, suppress, Held};
use super::{Capture, SerialPoll};
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
