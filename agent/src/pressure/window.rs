//! A VM's recent pressure snapshots, compact: [`PressureWindow`].
//!
//! The risk model reads the last few minutes of a VM's signals. A full
//! [`PressureSnapshot`] is 192 bytes; a point here is 44 (the ten rates and
//! percentages as f32, NaN for missing, and the poll time), and a VM without signals
//! allocates nothing. At [`WINDOW_POINTS`] points that is about 1 KiB per VM with
//! signals. PSI totals are not kept here (the latest snapshot has them).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ballast_model::PressureSnapshot;

/// Snapshots kept per VM (4 minutes at the default 10 s poll).
pub const WINDOW_POINTS: usize = 24;

#[derive(Debug, Clone, Copy)]
struct Point {
    /// Poll time, whole seconds since the Unix epoch (u32 lasts until 2106).
    at_secs: u32,
    /// The snapshot's rates and percentages in [`PressureSnapshot`]'s field order.
    values: [f32; 10],
}

/// The last [`WINDOW_POINTS`] snapshots of one VM, oldest first.
#[derive(Debug, Clone, Default)]
pub struct PressureWindow {
    points: VecDeque<Point>,
}

impl PressureWindow {
    pub fn push(&mut self, at: SystemTime, snapshot: &PressureSnapshot) {
        let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let last = self.points.back().map_or(0, |p| p.at_secs);
        let point = Point {
            // A clock stepping back keeps the window ordered.
            at_secs: u32::try_from(secs).unwrap_or(u32::MAX).max(last),
            values: snapshot.rates().map(|value| value.map_or(f32::NAN, narrow)),
        };
        if self.points.len() == WINDOW_POINTS {
            self.points.pop_front();
        } else if self.points.capacity() == 0 {
            self.points.reserve_exact(WINDOW_POINTS);
        }
        self.points.push_back(point);
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The snapshots with their poll times, oldest first (PSI totals missing).
    pub fn snapshots(&self) -> Vec<(SystemTime, PressureSnapshot)> {
        self.points
            .iter()
            .map(|point| {
                let value = |index: usize| {
                    let value = point.values[index];
                    (!value.is_nan()).then_some(f64::from(value))
                };
                (
                    UNIX_EPOCH + Duration::from_secs(u64::from(point.at_secs)),
                    PressureSnapshot {
                        alloc_stalls_per_s: value(0),
                        direct_scan_kib_per_s: value(1),
                        direct_reclaim_kib_per_s: value(2),
                        async_scan_kib_per_s: value(3),
                        async_reclaim_kib_per_s: value(4),
                        major_faults_per_s: value(5),
                        swap_in_kib_per_s: value(6),
                        available_slope_kib_per_s: value(7),
                        psi_some_avg10: value(8),
                        psi_full_avg10: value(9),
                        psi_some_total_us: None,
                        psi_full_total_us: None,
                    },
                )
            })
            .collect()
    }
}

/// f64 -> f32, finite stays finite (clamped to f32's range), NaN stays missing.
#[allow(clippy::cast_possible_truncation)]
fn narrow(value: f64) -> f32 {
    value.clamp(f64::from(f32::MIN), f64::from(f32::MAX)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn keeps_the_last_points_oldest_first_with_missing_kept_missing() {
        assert_eq!(std::mem::size_of::<Point>(), 44);
        let mut window = PressureWindow::default();
        assert_eq!(window.points.capacity(), 0, "nothing before a signal");
        for poll in 0..30u32 {
            window.push(
                at(u64::from(poll) * 10),
                &PressureSnapshot {
                    alloc_stalls_per_s: Some(f64::from(poll)),
                    available_slope_kib_per_s: Some(-1e300),
                    psi_some_total_us: Some(5),
                    ..PressureSnapshot::default()
                },
            );
        }
        assert_eq!(window.len(), WINDOW_POINTS);
        assert_eq!(window.points.capacity(), WINDOW_POINTS);
        let snapshots = window.snapshots();
        assert_eq!(snapshots[0].0, at(60));
        assert_eq!(snapshots[0].1.alloc_stalls_per_s, Some(6.0));
        assert_eq!(snapshots[23].1.alloc_stalls_per_s, Some(29.0));
        assert_eq!(snapshots[23].1.major_faults_per_s, None);
        assert_eq!(snapshots[23].1.psi_some_total_us, None);
        let slope = snapshots[23].1.available_slope_kib_per_s.expect("slope");
        assert!(slope.is_finite() && slope < -1e38, "{slope}");
    }
}
