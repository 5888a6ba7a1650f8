//! When each guest's PSI file is read next: every interval while its guest agent
//! answers, backing off while it does not. Pure: the caller gives the time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The longest a guest whose agent does not answer waits before the next try.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1800);
/// The shortest: a guest agent that does not answer holds a guest agent thread
/// for the whole call timeout, so a silent guest is not asked every interval.
pub const MIN_BACKOFF: Duration = Duration::from_secs(300);
/// A guest that refuses (file API disabled, no PSI file): asked again after this.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
struct Entry {
    next: Instant,
    failures: u32,
}

/// The PSI read schedule of every VM, by uuid.
#[derive(Debug, Clone, Default)]
pub struct PsiSchedule {
    vms: BTreeMap<String, Entry>,
}

impl PsiSchedule {
    /// Whether `uuid`'s PSI is due at `now` (a VM never read is).
    pub fn due(&self, uuid: &str, now: Instant) -> bool {
        self.vms.get(uuid).is_none_or(|entry| now >= entry.next)
    }

    /// A read was handed out at `now`: the next one after `interval`.
    pub fn started(&mut self, uuid: &str, now: Instant, interval: Duration) {
        let entry = self.vms.entry(uuid.to_string()).or_insert(Entry {
            next: now,
            failures: 0,
        });
        entry.next = now + interval;
    }

    /// The guest answered.
    pub fn succeeded(&mut self, uuid: &str) {
        if let Some(entry) = self.vms.get_mut(uuid) {
            entry.failures = 0;
        }
    }

    /// The read failed at `now`; `lasting`: the guest refused (it will again).
    /// Returns how long the VM now waits: twice the interval (at least
    /// [`MIN_BACKOFF`]), doubling up to [`MAX_BACKOFF`]; [`REFUSED_BACKOFF`] for a
    /// refusal.
    pub fn failed(
        &mut self,
        uuid: &str,
        now: Instant,
        interval: Duration,
        lasting: bool,
    ) -> Duration {
        let entry = self.vms.entry(uuid.to_string()).or_insert(Entry {
            next: now,
            failures: 0,
        });
        entry.failures = entry.failures.saturating_add(1);
        let wait = if lasting {
            REFUSED_BACKOFF
        } else {
            interval
                .saturating_mul(1 << entry.failures.min(16))
                .max(MIN_BACKOFF.saturating_mul(1 << (entry.failures - 1).min(16)))
                .min(MAX_BACKOFF)
        }
        .max(interval);
        entry.next = now + wait;
        wait
    }

    /// Forgets the VMs `keep` does not keep (gone, or no guest agent channel).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.vms.retain(|uuid, _| keep(uuid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_guest_waits_5_min_doubling_to_30_and_a_refusing_one_an_hour() {
        let interval = Duration::from_secs(30);
        let start = Instant::now();
        let mut schedule = PsiSchedule::default();
        assert!(schedule.due("a", start), "never read: due");
        schedule.started("a", start, interval);
        assert!(!schedule.due("a", start + Duration::from_secs(29)));
        assert!(schedule.due("a", start + interval));
        let waits: Vec<u64> = (0..5)
            .map(|_| schedule.failed("a", start, interval, false).as_secs())
            .collect();
        assert_eq!(waits, [300, 600, 1200, 1800, 1800]);
        assert!(!schedule.due("a", start + Duration::from_secs(1799)));
        schedule.succeeded("a");
        assert_eq!(schedule.failed("a", start, interval, false), MIN_BACKOFF);
        // A long interval doubles from itself.
        let long = Duration::from_secs(600);
        assert_eq!(
            schedule.failed("c", start, long, false),
            Duration::from_secs(1200)
        );
        assert_eq!(schedule.failed("b", start, interval, true), REFUSED_BACKOFF);
        schedule.retain(|uuid| uuid == "b");
        assert!(schedule.due("a", start), "forgotten");
        assert!(!schedule.due("b", start));
    }
}
