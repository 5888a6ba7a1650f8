//! Pure: "plugged but not onlined" (issue 20, docs/elastic.md). Memory a virtio-mem
//! device plugged is the guest's only once its kernel onlines it; a guest that leaves
//! hotplugged memory offline (no `memhp_default_state`, no udev rule) has it plugged,
//! counted against the host, and unusable. The guest's MemTotal (balloon stats) says
//! which: it grows with onlined memory only.
//!
//! The rule compares growths from an anchor poll: the devices' plugged sum grew by
//! `growth`, and the guest's MemTotal plus what the balloon holds (a balloon without
//! deflate-on-oom takes its pages out of MemTotal, so a balloon move at the same time
//! leaves the sum alone) grew by `gained`. `growth - gained` beyond 4 MiB and 1/16 of
//! the growth (the memmap of onlined memory and rounding stay inside it), for longer
//! than `elastic.converge_timeout_secs` and still so in a guest report made after
//! that, is memory not onlined. A poll whose plugged sum did not grow from the anchor
//! (nothing plugged since, or unplugged: a guest reset unplugs all) moves the anchor
//! there.

use std::time::{Duration, SystemTime};

/// A shortfall is counted beyond this (KiB) ...
const MIN_MISSING_KIB: u64 = 4 * 1024;
/// ... and beyond this share (1 / n) of the growth.
const GROWTH_SHARE: u64 = 16;

/// One poll of a VM with virtio-mem, as the rule reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestView {
    /// The devices' plugged sizes summed (KiB).
    pub plugged_kib: u64,
    /// The guest's MemTotal (balloon stats; KiB).
    pub mem_total_kib: u64,
    /// What the balloon holds out of MemTotal (KiB): maximum - actual, or 0 with
    /// deflate-on-oom (its pages stay in MemTotal).
    pub balloon_held_kib: u64,
    /// When the guest made the stats report MemTotal comes from.
    pub reported_at: SystemTime,
}

impl GuestView {
    fn seen_total(&self) -> u64 {
        self.mem_total_kib.saturating_add(self.balloon_held_kib)
    }
}

/// A change of the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnlineChange {
    /// This much plugged memory (KiB) is not in the guest's MemTotal past the timeout.
    NotOnlined(u64),
    /// The memory flagged before is onlined or unplugged now.
    Onlined,
}

impl OnlineChange {
    /// The KiB not onlined; None once onlined.
    pub fn not_onlined_kib(self) -> Option<u64> {
        match self {
            OnlineChange::NotOnlined(kib) => Some(kib),
            OnlineChange::Onlined => None,
        }
    }
}

/// One VM's anchor and verdict across polls.
#[derive(Debug, Clone, Default)]
pub struct OnlineWatch {
    /// Plugged sum and MemTotal + held at the anchor poll.
    anchor: Option<(u64, u64)>,
    /// The first poll of the shortfall under way.
    missing_since: Option<SystemTime>,
    /// KiB not onlined, once flagged.
    not_onlined: Option<u64>,
}

impl OnlineWatch {
    /// KiB of plugged memory the guest has not onlined, once flagged.
    pub fn not_onlined_kib(&self) -> Option<u64> {
        self.not_onlined
    }

    /// One poll; the verdict's change, if any.
    pub fn observe(
        &mut self,
        at: SystemTime,
        view: GuestView,
        timeout: Duration,
    ) -> Option<OnlineChange> {
        let seen = view.seen_total();
        let Some((anchor_plugged, anchor_seen)) = self.anchor else {
            self.anchor = Some((view.plugged_kib, seen));
            return None;
        };
        let growth = view.plugged_kib.saturating_sub(anchor_plugged);
        let gained = seen.saturating_sub(anchor_seen);
        let missing = growth.saturating_sub(gained);
        if growth == 0 {
            self.anchor = Some((view.plugged_kib, seen));
        }
        if missing <= MIN_MISSING_KIB.max(growth / GROWTH_SHARE) {
            self.missing_since = None;
            return self.not_onlined.take().map(|_| OnlineChange::Onlined);
        }
        let since = *self.missing_since.get_or_insert(at);
        let past = at.duration_since(since).unwrap_or_default() >= timeout
            && view.reported_at >= since + timeout;
        if !past || self.not_onlined == Some(missing) {
            return None;
        }
        let first = self.not_onlined.is_none();
        self.not_onlined = Some(missing);
        first.then_some(OnlineChange::NotOnlined(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024;
    const POLL: Duration = Duration::from_secs(10);
    const TIMEOUT: Duration = Duration::from_secs(60);
    /// The guest's MemTotal before anything is plugged: 384 MiB of boot memory less
    /// what its kernel keeps.
    const BOOT_TOTAL: u64 = 352 * MIB;

    /// One poll: plugged sum, MemTotal and balloon-held in MiB.
    #[derive(Clone, Copy)]
    struct Poll {
        plugged: u64,
        total: u64,
        held: u64,
    }

    fn poll(plugged: u64, total: u64, held: u64) -> Poll {
        Poll {
            plugged,
            total,
            held,
        }
    }

    /// The polls every 10 s from a start relative to now, the guest reporting at each;
    /// the verdict changes each made.
    fn run(watch: &mut OnlineWatch, polls: &[Poll]) -> Vec<Option<OnlineChange>> {
        let start = SystemTime::now() - Duration::from_secs(3600);
        polls
            .iter()
            .enumerate()
            .map(|(n, p)| {
                let at = start + POLL * n as u32;
                let view = GuestView {
                    plugged_kib: p.plugged * MIB,
                    mem_total_kib: p.total,
                    balloon_held_kib: p.held * MIB,
                    reported_at: at,
                };
                watch.observe(at, view, TIMEOUT)
            })
            .collect()
    }

    /// `n` polls of the same figures.
    fn repeat(p: Poll, n: usize) -> Vec<Poll> {
        vec![p; n]
    }

    #[test]
    fn a_plug_the_guest_onlines_is_no_finding() {
        let mut watch = OnlineWatch::default();
        let mut polls = vec![poll(0, BOOT_TOTAL, 0)];
        // +256 MiB plugged; MemTotal +250 MiB (the rest is the new memory's memmap),
        // one stats report later.
        polls.push(poll(256, BOOT_TOTAL, 0));
        polls.extend(repeat(poll(256, BOOT_TOTAL + 250 * MIB, 0), 12));
        let changes = run(&mut watch, &polls);
        assert!(changes.iter().all(Option::is_none), "{changes:?}");
        assert_eq!(watch.not_onlined_kib(), None);
    }

    #[test]
    fn a_plug_memtotal_never_follows_is_flagged_after_the_timeout_and_cleared_when_onlined() {
        let mut watch = OnlineWatch::default();
        let mut polls = vec![poll(0, BOOT_TOTAL, 0)];
        polls.extend(repeat(poll(256, BOOT_TOTAL, 0), 8));
        let changes = run(&mut watch, &polls);
        // The plug is seen at poll 1 (t = 10 s); 60 s later (poll 7) it is flagged,
        // once.
        let flagged: Vec<usize> = (0..changes.len())
            .filter(|n| changes[*n].is_some())
            .collect();
        assert_eq!(flagged, [7], "{changes:?}");
        assert_eq!(changes[7], Some(OnlineChange::NotOnlined(256 * MIB)));
        assert_eq!(watch.not_onlined_kib(), Some(256 * MIB));
        // Someone onlines it (echo online > /sys/devices/system/memory/...).
        let later = run(&mut watch, &[poll(256, BOOT_TOTAL + 252 * MIB, 0)]);
        assert_eq!(later, [Some(OnlineChange::Onlined)]);
        assert_eq!(watch.not_onlined_kib(), None);
    }

    #[test]
    fn a_plug_before_the_timeout_is_not_yet_flagged_and_a_stale_report_never_flags() {
        let mut watch = OnlineWatch::default();
        let mut polls = vec![poll(0, BOOT_TOTAL, 0)];
        polls.extend(repeat(poll(256, BOOT_TOTAL, 0), 6));
        assert!(run(&mut watch, &polls).iter().all(Option::is_none));
        // The same 70 s, but the guest's last report is from before the plug: its
        // MemTotal says nothing of the plug.
        let mut watch = OnlineWatch::default();
        let start = SystemTime::now() - Duration::from_secs(3600);
        let view = |plugged: u64| GuestView {
            plugged_kib: plugged * MIB,
            mem_total_kib: BOOT_TOTAL,
            balloon_held_kib: 0,
            reported_at: start,
        };
        let changes: Vec<_> = (0..20u32)
            .map(|n| {
                let at = start + POLL * n;
                watch.observe(at, view(if n == 0 { 0 } else { 256 }), TIMEOUT)
            })
            .collect();
        assert!(changes.iter().all(Option::is_none), "{changes:?}");
    }

    /// The host inflates the balloon by 128 MiB while the device plugs 256 MiB that the
    /// guest onlines: MemTotal grows by only 122 MiB, but MemTotal + held by 250.
    #[test]
    fn a_balloon_move_at_the_same_time_does_not_confuse_it() {
        let mut watch = OnlineWatch::default();
        let mut polls = vec![poll(0, BOOT_TOTAL, 0)];
        polls.extend(repeat(poll(256, BOOT_TOTAL + 122 * MIB, 128), 12));
        assert!(run(&mut watch, &polls).iter().all(Option::is_none));
        // And a balloon that deflates while a plug stays offline: MemTotal grows by the
        // 128 MiB given back, held falls by as much; the 256 MiB are still missing.
        let mut watch = OnlineWatch::default();
        let mut polls = vec![poll(0, BOOT_TOTAL, 128)];
        polls.extend(repeat(poll(256, BOOT_TOTAL + 128 * MIB, 0), 12));
        let changes = run(&mut watch, &polls);
        assert!(
            changes.contains(&Some(OnlineChange::NotOnlined(256 * MIB))),
            "{changes:?}"
        );
    }

    #[test]
    fn a_partly_onlined_plug_counts_what_is_missing_and_small_steps_add_up() {
        let mut watch = OnlineWatch::default();
        let mut polls = vec![poll(0, BOOT_TOTAL, 0)];
        polls.extend(repeat(poll(512, BOOT_TOTAL + 256 * MIB, 0), 10));
        let changes = run(&mut watch, &polls);
        assert!(
            changes.contains(&Some(OnlineChange::NotOnlined(256 * MIB))),
            "{changes:?}"
        );
        // 2 MiB blocks, one a poll, none onlined: each under the 4 MiB slack, together
        // 40 MiB.
        let mut watch = OnlineWatch::default();
        let polls: Vec<Poll> = (0..=20).map(|n| poll(2 * n, BOOT_TOTAL, 0)).collect();
        let changes = run(&mut watch, &polls);
        assert_eq!(
            changes.iter().filter(|c| c.is_some()).count(),
            1,
            "{changes:?}"
        );
        assert_eq!(watch.not_onlined_kib(), Some(40 * MIB));
    }

    #[test]
    fn an_unplug_moves_the_anchor_and_clears_the_finding() {
        let mut watch = OnlineWatch::default();
        let mut polls = vec![poll(0, BOOT_TOTAL, 0)];
        polls.extend(repeat(poll(256, BOOT_TOTAL, 0), 8));
        // The host takes the offline memory back; then plugs 128 MiB that are onlined.
        polls.push(poll(0, BOOT_TOTAL, 0));
        polls.extend(repeat(poll(128, BOOT_TOTAL + 126 * MIB, 0), 10));
        let changes = run(&mut watch, &polls);
        assert_eq!(changes[8], None, "flagged at poll 7: {changes:?}");
        assert_eq!(changes[9], Some(OnlineChange::Onlined));
        assert!(changes[10..].iter().all(Option::is_none), "{changes:?}");
        assert_eq!(watch.not_onlined_kib(), None);
        // A guest that unplugs what it had onlined: MemTotal falls with plugged.
        let mut watch = OnlineWatch::default();
        let polls = [
            poll(512, BOOT_TOTAL + 500 * MIB, 0),
            poll(256, BOOT_TOTAL + 250 * MIB, 0),
            poll(256, BOOT_TOTAL + 250 * MIB, 0),
        ];
        let mut polls = polls.to_vec();
        polls.extend(repeat(poll(256, BOOT_TOTAL + 250 * MIB, 0), 10));
        assert!(run(&mut watch, &polls).iter().all(Option::is_none));
    }

    /// A reboot: QEMU's reset unplugs the whole device, the new kernel plugs it again
    /// and (this time) onlines it; its MemTotal differs a little from the old one's.
    #[test]
    fn a_reboot_unplugs_everything_and_starts_over() {
        let mut watch = OnlineWatch::default();
        let mut polls = vec![poll(0, BOOT_TOTAL, 0)];
        polls.extend(repeat(poll(256, BOOT_TOTAL, 0), 8));
        polls.push(poll(0, BOOT_TOTAL - 2 * MIB, 0));
        polls.extend(repeat(poll(256, BOOT_TOTAL - 2 * MIB + 250 * MIB, 0), 10));
        let changes = run(&mut watch, &polls);
        assert_eq!(changes[9], Some(OnlineChange::Onlined), "{changes:?}");
        assert!(changes[10..].iter().all(Option::is_none), "{changes:?}");
    }
}
