//! One VM's pressure signals, poll by poll: [`SignalTracker`].
//!
//! Rates are taken between two DISTINCT guest reports. The guest sends balloon stats
//! every stats period, and QEMU stamps each with `last-update` (host epoch seconds):
//! where that stamp is present, a poll that sees the same stamp again has no new
//! report, and the rate measured last stands (for at most [`REPEATS_KEPT`] polls) instead
//! of reading as zero; the time between two reports is the stamps' difference, not the
//! polls'. Without a stamp every poll is a report, timed by the host clock.
//!
//! A counter that went down means the guest rebooted: no rate that poll, the new
//! figures are the next baseline (and the MemAvailable window starts again). Every
//! figure is the guest's and hostile: subtractions are checked, and a rate that is not
//! finite or beyond [`MAX_RATE_PER_S`] is missing, never inf, NaN or a wrap-around.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use ballast_model::PressureSnapshot;

use super::psi::GuestPsi;
use crate::hypervisor::{BalloonSample, GuestCounters};

/// Polls in a row a repeated report keeps the last rates (then they are missing);
/// the fleet calls a VM's stats stale after as many (`fleet::STALE_AFTER_POLLS`).
pub const REPEATS_KEPT: u32 = 3;
/// The most MemAvailable reports the slope is fitted over.
pub const SLOPE_WINDOW: usize = 6;
/// The fewest reports a slope is fitted over.
pub const SLOPE_MIN_POINTS: usize = 3;
/// Reports older than this before the newest leave the slope's window (s).
pub const SLOPE_MAX_SPAN_SECS: f64 = 600.0;
/// No real guest comes near this many events or KiB per second; a larger rate is a
/// forged counter and is kept missing. The collector's bound for event rates
/// ([`ballast_model::MAX_EVENTS_PER_S`]; its KiB/s bound is higher), so nothing the
/// agent ships is refused for it.
pub const MAX_RATE_PER_S: f64 = ballast_model::MAX_EVENTS_PER_S;

/// The balloon stats' counters: major faults (a count), swap-in (KiB).
const STATS: usize = 2;
/// QEMU's kernel-6.12 counters: alloc stalls (a count), then four byte counters.
const COUNTERS: usize = 5;
const BYTES_AS_KIB: f64 = 1.0 / 1024.0;

/// The pressure signals of one VM across polls.
#[derive(Debug, Clone, Default)]
pub struct SignalTracker {
    stats: Rates<STATS>,
    counters: Rates<COUNTERS>,
    /// MemAvailable of the latest distinct reports: (report time s, KiB), oldest first.
    available: VecDeque<(f64, u64)>,
}

impl SignalTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one poll: the balloon sample, QEMU's counters when read, the guest's
    /// PSI when a fresh reading is at hand. `at` is the host clock at the poll.
    pub fn observe(
        &mut self,
        at: SystemTime,
        sample: &BalloonSample,
        counters: Option<&GuestCounters>,
        psi: Option<&GuestPsi>,
    ) -> PressureSnapshot {
        let poll_secs = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        let stats_stamp = sample.last_update_epoch_secs.filter(|&secs| secs > 0);
        let stats = self.stats.observe(
            poll_secs,
            stats_stamp,
            [sample.major_faults, sample.swap_in_kib],
            [1.0, 1.0],
        );
        if stats.rebooted {
            self.available.clear();
        }
        if stats.new_report {
            if let Some(usable) = sample.usable_kib {
                let time = report_time(poll_secs, stats_stamp);
                self.available.push_back((time, usable));
                while self.available.len() > SLOPE_WINDOW
                    || self
                        .available
                        .front()
                        .is_some_and(|&(first, _)| time - first > SLOPE_MAX_SPAN_SECS)
                {
                    self.available.pop_front();
                }
            }
        }
        let counter_rates = match counters {
            Some(counters) => {
                let stamp = counters.last_update_epoch_secs.filter(|&secs| secs > 0);
                self.counters
                    .observe(
                        poll_secs,
                        stamp,
                        [
                            counters.alloc_stalls,
                            counters.direct_scans_bytes,
                            counters.direct_reclaims_bytes,
                            counters.async_scans_bytes,
                            counters.async_reclaims_bytes,
                        ],
                        [1.0, BYTES_AS_KIB, BYTES_AS_KIB, BYTES_AS_KIB, BYTES_AS_KIB],
                    )
                    .rates
            }
            None => {
                self.counters = Rates::default();
                [None; COUNTERS]
            }
        };
        let [alloc_stalls, direct_scan, direct_reclaim, async_scan, async_reclaim] = counter_rates;
        let [major_faults, swap_in] = stats.rates;
        let share = |value: f64| Some(value).filter(|v| v.is_finite() && (0.0..=100.0).contains(v));
        PressureSnapshot {
            alloc_stalls_per_s: alloc_stalls,
            direct_scan_kib_per_s: direct_scan,
            direct_reclaim_kib_per_s: direct_reclaim,
            async_scan_kib_per_s: async_scan,
            async_reclaim_kib_per_s: async_reclaim,
            major_faults_per_s: major_faults,
            swap_in_kib_per_s: swap_in,
            available_slope_kib_per_s: slope(&self.available),
            psi_some_avg10: psi.and_then(|psi| share(psi.some.avg10)),
            psi_full_avg10: psi
                .and_then(|psi| psi.full)
                .and_then(|full| share(full.avg10)),
            psi_some_total_us: psi.map(|psi| psi.some.total_us),
            psi_full_total_us: psi.and_then(|psi| psi.full).map(|full| full.total_us),
        }
    }
}

/// A report's time: its `last-update` stamp where present, else the poll's.
fn report_time(poll_secs: f64, stamp: Option<u64>) -> f64 {
    // Exact below 2^53 s, which no clock reaches; a forged stamp stays finite.
    stamp.map_or(poll_secs, |secs| secs as f64)
}

/// The last distinct report of `N` counters and the rates measured at it.
#[derive(Debug, Clone)]
struct Rates<const N: usize> {
    last: Option<Report<N>>,
    rates: [Option<f64>; N],
    repeats: u32,
}

impl<const N: usize> Default for Rates<N> {
    fn default() -> Self {
        Self {
            last: None,
            rates: [None; N],
            repeats: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Report<const N: usize> {
    time: f64,
    stamp: Option<u64>,
    values: [Option<u64>; N],
}

struct Observed<const N: usize> {
    rates: [Option<f64>; N],
    /// This poll brought a report not seen before.
    new_report: bool,
    /// A counter went down: the guest rebooted.
    rebooted: bool,
}

impl<const N: usize> Rates<N> {
    /// `scale` turns a counter's units into the rate's (bytes -> KiB).
    fn observe(
        &mut self,
        poll_secs: f64,
        stamp: Option<u64>,
        values: [Option<u64>; N],
        scale: [f64; N],
    ) -> Observed<N> {
        let report = Report {
            time: report_time(poll_secs, stamp),
            stamp,
            values,
        };
        let Some(last) = self.last else {
            self.last = Some(report);
            self.rates = [None; N];
            return Observed {
                rates: self.rates,
                new_report: true,
                rebooted: false,
            };
        };
        if stamp.is_some() && stamp == last.stamp {
            // The same report again: no new information, not a zero rate.
            self.repeats = self.repeats.saturating_add(1);
            if self.repeats > REPEATS_KEPT {
                self.rates = [None; N];
            }
            return Observed {
                rates: self.rates,
                new_report: false,
                rebooted: false,
            };
        }
        let rebooted = values.iter().zip(last.values.iter()).any(
            |(now, before)| matches!((now, before), (Some(now), Some(before)) if now < before),
        );
        let elapsed = report.time - last.time;
        self.repeats = 0;
        if rebooted || elapsed.is_nan() || elapsed <= 0.0 {
            // A reboot, or a clock that stood still or stepped back: a new baseline.
            self.last = Some(report);
            self.rates = [None; N];
            return Observed {
                rates: self.rates,
                new_report: true,
                rebooted,
            };
        }
        for (index, rate) in self.rates.iter_mut().enumerate() {
            *rate = match (values[index], last.values[index]) {
                (Some(now), Some(before)) => {
                    // Checked above: now >= before.
                    let delta = now.saturating_sub(before) as f64;
                    Some(delta * scale[index] / elapsed)
                        .filter(|rate| rate.is_finite() && *rate <= MAX_RATE_PER_S)
                }
                _ => None,
            };
        }
        self.last = Some(report);
        Observed {
            rates: self.rates,
            new_report: true,
            rebooted: false,
        }
    }
}

/// Least-squares slope of MemAvailable over time (KiB/s), from at least
/// [`SLOPE_MIN_POINTS`] reports spanning some time.
fn slope(points: &VecDeque<(f64, u64)>) -> Option<f64> {
    if points.len() < SLOPE_MIN_POINTS {
        return None;
    }
    let count = points.len() as f64;
    // Centred on the first point: epoch seconds squared would lose the precision.
    let (t0, _) = *points.front()?;
    let y0 = points.front().map_or(0.0, |&(_, kib)| kib as f64);
    let centred = points
        .iter()
        .map(|&(time, kib)| (time - t0, kib as f64 - y0));
    let (sum_t, sum_y) = centred
        .clone()
        .fold((0.0, 0.0), |(st, sy), (t, y)| (st + t, sy + y));
    let (mean_t, mean_y) = (sum_t / count, sum_y / count);
    let (covariance, variance) = centred.fold((0.0, 0.0), |(cov, var), (t, y)| {
        (
            cov + (t - mean_t) * (y - mean_y),
            var + (t - mean_t) * (t - mean_t),
        )
    });
    if variance.is_nan() || variance <= 0.0 {
        return None;
    }
    Some(covariance / variance).filter(|slope| slope.is_finite() && slope.abs() <= MAX_RATE_PER_S)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pressure::psi::PsiLine;

    const BASE: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(BASE + secs)
    }

    /// A balloon-stats report taken `stamp` s after BASE.
    fn stats(stamp: u64, major_faults: u64, swap_in_kib: u64, usable_kib: u64) -> BalloonSample {
        BalloonSample {
            major_faults: Some(major_faults),
            swap_in_kib: Some(swap_in_kib),
            usable_kib: Some(usable_kib),
            last_update_epoch_secs: Some(BASE + stamp),
            ..BalloonSample::default()
        }
    }

    fn counters(stamp: u64, stalls: u64, direct_scan_bytes: u64) -> GuestCounters {
        GuestCounters {
            oom_kills: Some(0),
            alloc_stalls: Some(stalls),
            direct_scans_bytes: Some(direct_scan_bytes),
            direct_reclaims_bytes: Some(direct_scan_bytes / 2),
            async_scans_bytes: Some(0),
            async_reclaims_bytes: None,
            last_update_epoch_secs: Some(BASE + stamp),
        }
    }

    fn all_finite(snapshot: &PressureSnapshot) -> bool {
        snapshot
            .rates()
            .iter()
            .flatten()
            .all(|value| value.is_finite())
    }

    #[test]
    fn a_steady_guest_reads_zero_rates_and_a_flat_slope() {
        let mut tracker = SignalTracker::new();
        let first = tracker.observe(at(0), &stats(0, 100, 0, 400_000), None, None);
        assert_eq!(first.major_faults_per_s, None, "one report has no rate");
        assert!(first.sources().is_empty(), "nothing measured yet");
        let mut last = first;
        for poll in 1..=5 {
            last = tracker.observe(
                at(poll * 10),
                &stats(poll * 10, 100, 0, 400_000),
                None,
                None,
            );
        }
        assert_eq!(last.major_faults_per_s, Some(0.0));
        assert_eq!(last.swap_in_kib_per_s, Some(0.0));
        assert_eq!(last.available_slope_kib_per_s, Some(0.0));
        assert_eq!(last.alloc_stalls_per_s, None, "no counters: missing, not 0");
        assert_eq!(last.psi_some_avg10, None);
        assert_eq!(last.sources(), [ballast_model::SignalSource::BalloonStats]);
    }

    #[test]
    fn rising_counters_give_rates_per_second_of_report_time_and_bytes_as_kib() {
        let mut tracker = SignalTracker::new();
        tracker.observe(
            at(0),
            &stats(0, 0, 0, 400_000),
            Some(&counters(0, 0, 0)),
            None,
        );
        // Polled 10 s later, but the guest's reports are 5 s apart: rates per 5 s.
        let snapshot = tracker.observe(
            at(10),
            &stats(5, 50, 10_240, 390_000),
            Some(&counters(5, 20, 5 * 1024 * 1024)),
            None,
        );
        assert_eq!(snapshot.major_faults_per_s, Some(10.0));
        assert_eq!(snapshot.swap_in_kib_per_s, Some(2048.0));
        assert_eq!(snapshot.alloc_stalls_per_s, Some(4.0));
        assert_eq!(snapshot.direct_scan_kib_per_s, Some(1024.0));
        assert_eq!(snapshot.direct_reclaim_kib_per_s, Some(512.0));
        assert_eq!(snapshot.async_scan_kib_per_s, Some(0.0));
        assert_eq!(snapshot.async_reclaim_kib_per_s, None, "never reported");
        assert_eq!(snapshot.available_slope_kib_per_s, None, "two reports only");
    }

    #[test]
    fn mem_available_falling_gives_a_least_squares_slope_over_a_bounded_window() {
        let mut tracker = SignalTracker::new();
        let mut snapshot = PressureSnapshot::default();
        // 1000 KiB/s down for 10 reports; report 3 is off the line (it leaves the window).
        for report in 0..10u64 {
            let noise = if report == 3 { 3_000 } else { 0 };
            let usable = 400_000 - report * 10_000 + noise;
            snapshot = tracker.observe(
                at(report * 10),
                &stats(report * 10, 0, 0, usable),
                None,
                None,
            );
        }
        let slope = snapshot.available_slope_kib_per_s.expect("a slope");
        assert!(
            (slope - -1000.0).abs() < 1e-6,
            "{slope}: report 3 left the window"
        );
        assert_eq!(tracker.available.len(), SLOPE_WINDOW);
        // Rising again: the slope follows within the window.
        for report in 10..16u64 {
            snapshot = tracker.observe(
                at(report * 10),
                &stats(report * 10, 0, 0, 310_000 + (report - 9) * 5_000),
                None,
                None,
            );
        }
        let slope = snapshot.available_slope_kib_per_s.expect("a slope");
        assert!((slope - 500.0).abs() < 1e-6, "{slope}");
    }

    #[test]
    fn a_repeated_report_keeps_the_last_rate_for_a_few_polls_and_never_reads_as_zero() {
        let mut tracker = SignalTracker::new();
        tracker.observe(
            at(0),
            &stats(0, 0, 0, 400_000),
            Some(&counters(0, 0, 0)),
            None,
        );
        let rising = tracker.observe(
            at(10),
            &stats(10, 100, 0, 390_000),
            Some(&counters(10, 30, 0)),
            None,
        );
        assert_eq!(rising.alloc_stalls_per_s, Some(3.0));
        // The guest's next report has not come: the same stamps, polled again.
        for poll in 1..=REPEATS_KEPT {
            let again = tracker.observe(
                at(10 + u64::from(poll) * 2),
                &stats(10, 100, 0, 390_000),
                Some(&counters(10, 30, 0)),
                None,
            );
            assert_eq!(again.major_faults_per_s, Some(10.0), "poll {poll}");
            assert_eq!(again.alloc_stalls_per_s, Some(3.0), "poll {poll}");
        }
        let stale = tracker.observe(
            at(30),
            &stats(10, 100, 0, 390_000),
            Some(&counters(10, 30, 0)),
            None,
        );
        assert_eq!(
            stale.major_faults_per_s, None,
            "a report that stopped coming"
        );
        assert_eq!(stale.alloc_stalls_per_s, None);
        // The next report is measured against the last distinct one (20 s before).
        let next = tracker.observe(
            at(32),
            &stats(30, 300, 0, 380_000),
            Some(&counters(30, 70, 0)),
            None,
        );
        assert_eq!(next.major_faults_per_s, Some(10.0));
        assert_eq!(next.alloc_stalls_per_s, Some(2.0));
    }

    #[test]
    fn a_reboot_gives_no_rate_that_poll_and_restarts_the_slope() {
        let mut tracker = SignalTracker::new();
        for report in 0..4u64 {
            tracker.observe(
                at(report * 10),
                &stats(
                    report * 10,
                    1000 + report * 100,
                    50,
                    400_000 - report * 1000,
                ),
                Some(&counters(report * 10, 500 + report, 1 << 30)),
                None,
            );
        }
        let rebooted = tracker.observe(
            at(40),
            &stats(40, 10, 0, 450_000),
            Some(&counters(40, 0, 0)),
            None,
        );
        assert_eq!(rebooted.major_faults_per_s, None);
        assert_eq!(rebooted.swap_in_kib_per_s, None);
        assert_eq!(rebooted.alloc_stalls_per_s, None);
        assert_eq!(rebooted.direct_scan_kib_per_s, None);
        assert_eq!(rebooted.available_slope_kib_per_s, None);
        let after = tracker.observe(
            at(50),
            &stats(50, 20, 0, 449_000),
            Some(&counters(50, 5, 0)),
            None,
        );
        assert_eq!(after.major_faults_per_s, Some(1.0));
        assert_eq!(after.alloc_stalls_per_s, Some(0.5));
    }

    #[test]
    fn without_a_stamp_every_poll_is_a_report_timed_by_the_host() {
        let mut tracker = SignalTracker::new();
        let unstamped = |faults| BalloonSample {
            major_faults: Some(faults),
            ..BalloonSample::default()
        };
        tracker.observe(at(0), &unstamped(0), None, None);
        let snapshot = tracker.observe(at(4), &unstamped(8), None, None);
        assert_eq!(snapshot.major_faults_per_s, Some(2.0));
        // A clock that stepped back measures nothing.
        let snapshot = tracker.observe(at(2), &unstamped(9), None, None);
        assert_eq!(snapshot.major_faults_per_s, None);
    }

    #[test]
    fn psi_is_passed_through_and_counters_that_go_away_leave_no_rate() {
        let mut tracker = SignalTracker::new();
        let psi = GuestPsi {
            some: PsiLine {
                avg10: 12.5,
                avg60: 3.0,
                avg300: 1.0,
                total_us: 77,
            },
            full: None,
        };
        tracker.observe(
            at(0),
            &BalloonSample::default(),
            Some(&counters(0, 0, 0)),
            None,
        );
        let snapshot = tracker.observe(at(10), &BalloonSample::default(), None, Some(&psi));
        assert_eq!(snapshot.psi_some_avg10, Some(12.5));
        assert_eq!(snapshot.psi_some_total_us, Some(77));
        assert_eq!(snapshot.psi_full_avg10, None);
        assert_eq!(snapshot.alloc_stalls_per_s, None);
        assert_eq!(snapshot.sources(), [ballast_model::SignalSource::GuestPsi]);
        // Counters back: a new baseline, not a rate against the old one.
        let back = tracker.observe(
            at(20),
            &BalloonSample::default(),
            Some(&counters(20, 90, 0)),
            None,
        );
        assert_eq!(back.alloc_stalls_per_s, None);
    }

    /// A hostile guest's figures: u64::MAX - 1 after 0, huge stamps, stamps of 1 s
    /// apart with counters at their limit, a PSI built outside the parser: no panic,
    /// and nothing not finite comes out.
    #[test]
    fn hostile_figures_never_give_inf_nan_or_a_panic() {
        let mut tracker = SignalTracker::new();
        let huge = u64::MAX - 1;
        let feeds = [
            (0, 0, 0),
            (1, huge, huge),
            (2, huge, huge),
            (3, 0, 0),
            (u64::MAX - BASE - 1, huge, 1),
            (u64::MAX - BASE, huge, huge),
            (4, 5, 5),
        ];
        for (index, (stamp, faults, bytes)) in feeds.into_iter().enumerate() {
            let sample = BalloonSample {
                major_faults: Some(faults),
                swap_in_kib: Some(bytes),
                usable_kib: Some(bytes),
                last_update_epoch_secs: Some(BASE.saturating_add(stamp)),
                ..BalloonSample::default()
            };
            let psi = GuestPsi {
                some: PsiLine {
                    avg10: f64::NAN,
                    avg60: f64::INFINITY,
                    avg300: -1.0,
                    total_us: huge,
                },
                full: Some(PsiLine {
                    avg10: f64::INFINITY,
                    avg60: 0.0,
                    avg300: 0.0,
                    total_us: 0,
                }),
            };
            let counters = GuestCounters {
                alloc_stalls: Some(faults),
                direct_scans_bytes: Some(bytes),
                last_update_epoch_secs: Some(BASE.saturating_add(stamp)),
                ..GuestCounters::default()
            };
            let snapshot = tracker.observe(
                at(u64::try_from(index).unwrap_or(0)),
                &sample,
                Some(&counters),
                Some(&psi),
            );
            assert!(all_finite(&snapshot), "{index}: {snapshot:?}");
            assert_eq!(snapshot.psi_some_avg10, None, "NaN is no percentage");
            assert_eq!(snapshot.psi_full_avg10, None);
            for rate in [snapshot.major_faults_per_s, snapshot.alloc_stalls_per_s]
                .into_iter()
                .flatten()
            {
                assert!(rate <= MAX_RATE_PER_S, "{index}: {rate}");
            }
        }
    }
}
