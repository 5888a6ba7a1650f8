//! Per-VM balloon history: a bounded ring of compact samples, attached to every OOM
//! event as "what the balloon did before it".
//!
//! 500 VMs x 1 h at a 10 s poll is 180,000 samples; at 20 bytes each that is 3.4 MiB
//! (a full `BalloonSample` would be 40 MiB). So the ring keeps only what an OOM
//! event's balloon history carries (actual, maximum, available, usable; the other
//! guest figures go into the minute rollups), as u32 KiB (up to 4 TiB per VM) with
//! `u32::MAX` for "missing",
//! and times as seconds relative to the ring's base, with the sample's origin in the
//! top bit. The ring grows by doubling up to its capacity and then exactly to it, so a
//! full 360-sample ring holds 360 x 20 bytes, not a power of two.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::hypervisor::BalloonSample;

/// Marks a missing value in the compact form.
const MISSING: u32 = u32::MAX;
/// The top bit of `Compact::at`: the point came from a balloon-change event.
const EVENT_BIT: u32 = 1 << 31;
/// The largest relative time (68 years).
const MAX_AT_SECS: u32 = EVENT_BIT - 1;
/// The smallest allocation a ring starts with.
const MIN_GROWTH: usize = 8;

/// What moved the balloon or triggered the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleOrigin {
    /// The periodic bulk poll.
    Poll,
    /// A balloon-change event between polls (only `actual` is known).
    BalloonEvent,
}

/// One point of history, widened back to `Option<u64>` for readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPoint {
    pub at: SystemTime,
    pub origin: SampleOrigin,
    pub actual_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
    pub available_kib: Option<u64>,
    pub usable_kib: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Compact {
    /// Seconds after the ring's base (31 bits), `EVENT_BIT` set for balloon events.
    at: u32,
    actual: u32,
    maximum: u32,
    available: u32,
    usable: u32,
}

/// One VM's ring.
#[derive(Debug, Clone)]
pub struct History {
    base_epoch_secs: u64,
    capacity: usize,
    points: VecDeque<Compact>,
}

impl History {
    /// A ring that keeps at most `capacity` points (poll samples and events together).
    pub fn new(capacity: usize) -> Self {
        Self {
            base_epoch_secs: 0,
            capacity: capacity.max(1),
            points: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Records a poll sample.
    pub fn push_sample(&mut self, at: SystemTime, sample: &BalloonSample) {
        self.push(
            Compact {
                at: 0,
                actual: pack(sample.actual_kib),
                maximum: pack(sample.maximum_kib),
                available: pack(sample.available_kib),
                usable: pack(sample.usable_kib),
            },
            at,
        );
    }

    /// Records a balloon-change event: only `actual` is known; the rest repeats the last poll.
    pub fn push_balloon_event(&mut self, at: SystemTime, actual_kib: u64) {
        let last = self.points.back().copied();
        self.push(
            Compact {
                at: EVENT_BIT,
                actual: pack(Some(actual_kib)),
                maximum: last.map_or(MISSING, |p| p.maximum),
                available: MISSING,
                usable: MISSING,
            },
            at,
        );
    }

    fn push(&mut self, mut point: Compact, at: SystemTime) {
        let epoch = epoch_secs(at);
        if self.points.is_empty() {
            self.base_epoch_secs = epoch;
        }
        // A clock stepping backwards keeps the ring ordered: clamp to the last point.
        let relative = epoch.saturating_sub(self.base_epoch_secs);
        let last = self.points.back().map_or(0, Compact::at_secs);
        let at_secs = u32::try_from(relative)
            .unwrap_or(MAX_AT_SECS)
            .min(MAX_AT_SECS)
            .max(last);
        point.at = (point.at & EVENT_BIT) | at_secs;
        if self.points.len() == self.capacity {
            self.points.pop_front();
        } else if self.points.len() == self.points.capacity() {
            // Doubling, but never past the capacity: a full ring wastes nothing.
            let len = self.points.len();
            self.points
                .reserve_exact(len.max(MIN_GROWTH).min(self.capacity - len));
        }
        self.points.push_back(point);
    }

    /// Points in the window `[end - span, end]`, oldest first.
    pub fn window(&self, end: SystemTime, span: Duration) -> Vec<HistoryPoint> {
        let end_secs = epoch_secs(end);
        let start_secs = end_secs.saturating_sub(span.as_secs());
        self.points
            .iter()
            .map(|point| self.widen(point))
            .filter(|point| {
                let at = epoch_secs(point.at);
                at >= start_secs && at <= end_secs
            })
            .collect()
    }

    /// The newest point.
    pub fn last(&self) -> Option<HistoryPoint> {
        self.points.back().map(|point| self.widen(point))
    }

    /// The newest point taken before `bound`: its whole second lies before it (points
    /// keep whole seconds, so one stamped in `bound`'s own second may be later).
    pub fn last_before(&self, bound: SystemTime) -> Option<HistoryPoint> {
        let bound_secs = epoch_secs(bound);
        self.points
            .iter()
            .rev()
            .map(|point| self.widen(point))
            .find(|point| epoch_secs(point.at) < bound_secs)
    }

    /// The newest point taken no later than `at`'s second that `accept` takes.
    pub fn last_until(
        &self,
        at: SystemTime,
        accept: impl Fn(&HistoryPoint) -> bool,
    ) -> Option<HistoryPoint> {
        let at_secs = epoch_secs(at);
        self.points
            .iter()
            .rev()
            .map(|point| self.widen(point))
            .filter(|point| epoch_secs(point.at) <= at_secs)
            .find(|point| accept(point))
    }

    /// The newest poll sample (events carry only `actual`).
    pub fn last_poll(&self) -> Option<HistoryPoint> {
        self.points
            .iter()
            .rev()
            .find(|point| point.origin() == SampleOrigin::Poll)
            .map(|point| self.widen(point))
    }

    fn widen(&self, point: &Compact) -> HistoryPoint {
        HistoryPoint {
            at: UNIX_EPOCH + Duration::from_secs(self.base_epoch_secs + u64::from(point.at_secs())),
            origin: point.origin(),
            actual_kib: unpack(point.actual),
            maximum_kib: unpack(point.maximum),
            available_kib: unpack(point.available),
            usable_kib: unpack(point.usable),
        }
    }
}

impl Compact {
    fn at_secs(&self) -> u32 {
        self.at & MAX_AT_SECS
    }

    fn origin(&self) -> SampleOrigin {
        if self.at & EVENT_BIT == 0 {
            SampleOrigin::Poll
        } else {
            SampleOrigin::BalloonEvent
        }
    }
}

fn pack(value: Option<u64>) -> u32 {
    value.map_or(MISSING, |kib| {
        u32::try_from(kib).unwrap_or(MISSING - 1).min(MISSING - 1)
    })
}

fn unpack(value: u32) -> Option<u64> {
    (value != MISSING).then_some(u64::from(value))
}

pub(crate) fn epoch_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn sample(actual: u64) -> BalloonSample {
        BalloonSample {
            actual_kib: Some(actual),
            maximum_kib: Some(524_288),
            usable_kib: Some(actual / 2),
            ..BalloonSample::default()
        }
    }

    #[test]
    fn keeps_the_newest_points_up_to_capacity() {
        let mut history = History::new(3);
        for step in 0..5 {
            history.push_sample(at(step * 10), &sample(500_000 - step * 1000));
        }
        assert_eq!(history.len(), 3);
        let points = history.window(at(40), Duration::from_secs(3600));
        let actuals: Vec<_> = points.iter().map(|p| p.actual_kib).collect();
        assert_eq!(actuals, [Some(498_000), Some(497_000), Some(496_000)]);
    }

    #[test]
    fn missing_stays_missing_and_events_keep_the_maximum() {
        let mut history = History::new(10);
        history.push_sample(at(0), &sample(524_288));
        history.push_balloon_event(at(3), 204_800);
        let last = history.last().expect("a point");
        assert_eq!(last.origin, SampleOrigin::BalloonEvent);
        assert_eq!(last.actual_kib, Some(204_800));
        assert_eq!(last.maximum_kib, Some(524_288));
        assert_eq!(last.usable_kib, None);
        assert_eq!(last.available_kib, None, "a missing field is not 0");
        assert_eq!(
            history.last_poll().and_then(|p| p.actual_kib),
            Some(524_288)
        );
    }

    #[test]
    fn the_window_is_bounded_by_time() {
        let mut history = History::new(100);
        for step in 0..10 {
            history.push_sample(at(step * 60), &sample(400_000));
        }
        assert_eq!(history.window(at(540), Duration::from_secs(120)).len(), 3);
    }

    #[test]
    fn a_full_ring_of_360_holds_exactly_360_points_of_20_bytes() {
        assert_eq!(std::mem::size_of::<Compact>(), 20);
        let mut history = History::new(360);
        for step in 0..1000 {
            history.push_sample(at(step * 10), &sample(400_000));
            assert!(history.points.capacity() <= 360, "step {step}");
        }
        assert_eq!(history.len(), 360);
        assert_eq!(history.points.capacity(), 360);
        assert_eq!(
            History::new(5).points.capacity(),
            0,
            "nothing before the first point"
        );
    }

    #[test]
    fn the_origin_survives_packing_with_late_times() {
        let mut history = History::new(10);
        history.push_sample(at(0), &sample(524_288));
        // 60 years later: still below the 31-bit range.
        history.push_balloon_event(at(60 * 365 * 86_400), 1);
        history.push_sample(at(60 * 365 * 86_400 + 10), &sample(2));
        let points = history.window(at(61 * 365 * 86_400), Duration::from_secs(u64::MAX / 4));
        let origins: Vec<_> = points.iter().map(|p| p.origin).collect();
        assert_eq!(
            origins,
            [
                SampleOrigin::Poll,
                SampleOrigin::BalloonEvent,
                SampleOrigin::Poll
            ]
        );
        assert_eq!(points[1].at, at(60 * 365 * 86_400));
        assert_eq!(points[2].actual_kib, Some(2));
    }

    #[test]
    fn a_clock_stepping_back_keeps_order() {
        let mut history = History::new(10);
        history.push_sample(at(100), &sample(1));
        history.push_sample(at(50), &sample(2));
        let points = history.window(at(200), Duration::from_secs(1000));
        assert!(points[0].at <= points[1].at);
    }
}
