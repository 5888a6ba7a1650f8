//! A minute's snapshots folded into one [`PressureRollup`]: the sources seen, each
//! rate's highest value, MemAvailable's steepest fall, the last PSI totals. The
//! risk stays `ok` here; the risk model raises it.

use ballast_model::{PressureRollup, PressureSnapshot, RiskLevel, SignalSource};

/// Folds `snapshot` into `rollup` (started when it is None); a snapshot without any
/// signal changes nothing, so a period without signals has no `pressure`.
pub fn fold(rollup: &mut Option<PressureRollup>, snapshot: &PressureSnapshot) {
    let sources = snapshot.sources();
    if sources.is_empty() {
        return;
    }
    let rollup = rollup.get_or_insert_with(|| PressureRollup {
        sources: Vec::new(),
        peak: PressureSnapshot::default(),
        risk: RiskLevel::Ok,
    });
    for source in sources {
        if !rollup.sources.contains(&source) {
            rollup.sources.push(source);
        }
    }
    rollup.sources.sort_by_key(|source| match source {
        SignalSource::BalloonCounters => 0,
        SignalSource::BalloonStats => 1,
        SignalSource::GuestPsi => 2,
        SignalSource::Unknown => 3,
    });
    let peak = &mut rollup.peak;
    let high = |kept: &mut Option<f64>, new: Option<f64>| {
        *kept = match (*kept, new) {
            (Some(kept), Some(new)) => Some(kept.max(new)),
            (kept, new) => kept.or(new),
        };
    };
    high(&mut peak.alloc_stalls_per_s, snapshot.alloc_stalls_per_s);
    high(
        &mut peak.direct_scan_kib_per_s,
        snapshot.direct_scan_kib_per_s,
    );
    high(
        &mut peak.direct_reclaim_kib_per_s,
        snapshot.direct_reclaim_kib_per_s,
    );
    high(
        &mut peak.async_scan_kib_per_s,
        snapshot.async_scan_kib_per_s,
    );
    high(
        &mut peak.async_reclaim_kib_per_s,
        snapshot.async_reclaim_kib_per_s,
    );
    high(&mut peak.major_faults_per_s, snapshot.major_faults_per_s);
    high(&mut peak.swap_in_kib_per_s, snapshot.swap_in_kib_per_s);
    high(&mut peak.psi_some_avg10, snapshot.psi_some_avg10);
    high(&mut peak.psi_full_avg10, snapshot.psi_full_avg10);
    peak.available_slope_kib_per_s = match (
        peak.available_slope_kib_per_s,
        snapshot.available_slope_kib_per_s,
    ) {
        (Some(kept), Some(new)) => Some(kept.min(new)),
        (kept, new) => kept.or(new),
    };
    peak.psi_some_total_us = snapshot.psi_some_total_us.or(peak.psi_some_total_us);
    peak.psi_full_total_us = snapshot.psi_full_total_us.or(peak.psi_full_total_us);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_each_rates_highest_the_slopes_lowest_and_the_last_totals() {
        let mut rollup = None;
        fold(&mut rollup, &PressureSnapshot::default());
        assert_eq!(rollup, None, "no signal: no pressure in the rollup");
        fold(
            &mut rollup,
            &PressureSnapshot {
                major_faults_per_s: Some(5.0),
                available_slope_kib_per_s: Some(-100.0),
                ..PressureSnapshot::default()
            },
        );
        fold(
            &mut rollup,
            &PressureSnapshot {
                alloc_stalls_per_s: Some(3.0),
                major_faults_per_s: Some(2.0),
                available_slope_kib_per_s: Some(-900.0),
                psi_some_avg10: Some(4.5),
                psi_some_total_us: Some(10),
                ..PressureSnapshot::default()
            },
        );
        fold(
            &mut rollup,
            &PressureSnapshot {
                major_faults_per_s: Some(1.0),
                available_slope_kib_per_s: Some(50.0),
                psi_some_total_us: Some(20),
                ..PressureSnapshot::default()
            },
        );
        let rollup = rollup.expect("pressure");
        assert_eq!(
            rollup.sources,
            [
                SignalSource::BalloonCounters,
                SignalSource::BalloonStats,
                SignalSource::GuestPsi
            ]
        );
        assert_eq!(rollup.peak.major_faults_per_s, Some(5.0));
        assert_eq!(rollup.peak.alloc_stalls_per_s, Some(3.0));
        assert_eq!(rollup.peak.available_slope_kib_per_s, Some(-900.0));
        assert_eq!(rollup.peak.psi_some_avg10, Some(4.5));
        assert_eq!(rollup.peak.psi_some_total_us, Some(20));
        assert_eq!(rollup.peak.swap_in_kib_per_s, None);
        assert_eq!(rollup.risk, RiskLevel::Ok);
    }
}
