//! Memory pressure in the store (issue 19, migration 0009): a rollup's pressure as
//! columns beside its figures, how the hourly tier folds them, and the
//! `pressure_episodes` table that the start, peak and end events of one episode
//! update. Rates are kept in thousandths (`*_milli`) so both engines store integers.
//! The reads of episodes are `storage::episodes`.

use ballast_model::{
    EpisodePhase, PressureEpisode, PressureRollup, PressureSnapshot, RiskLevel, SignalSource,
};

use crate::storage::sql::{Param, Row};

/// How the hourly tier folds one pressure column of its minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// The largest (rates, risk, a source seen in any minute, PSI totals).
    Max,
    /// The smallest (MemAvailable's slope: its steepest fall).
    Min,
}

/// The pressure columns of `rollups`, in the order [`rollup_params`] binds them and
/// [`decode_rollup`] reads them, with their fold.
pub const ROLLUP_COLUMNS: [(&str, Fold); 16] = [
    ("pressure_risk", Fold::Max),
    ("pressure_src_counters", Fold::Max),
    ("pressure_src_stats", Fold::Max),
    ("pressure_src_psi", Fold::Max),
    ("alloc_stalls_per_s_milli", Fold::Max),
    ("direct_scan_kib_per_s_milli", Fold::Max),
    ("direct_reclaim_kib_per_s_milli", Fold::Max),
    ("async_scan_kib_per_s_milli", Fold::Max),
    ("async_reclaim_kib_per_s_milli", Fold::Max),
    ("major_faults_per_s_milli", Fold::Max),
    ("swap_in_kib_per_s_milli", Fold::Max),
    ("available_slope_kib_per_s_milli", Fold::Min),
    ("psi_some_avg10_milli", Fold::Max),
    ("psi_full_avg10_milli", Fold::Max),
    // Totals only grow (but for a guest reboot): the largest is the last.
    ("psi_some_total_us", Fold::Max),
    ("psi_full_total_us", Fold::Max),
];

/// The pressure columns, comma-separated (for INSERT and SELECT lists).
pub fn rollup_column_list() -> String {
    ROLLUP_COLUMNS
        .iter()
        .map(|(column, _)| *column)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A risk level's rank (0 ok, 1 elevated, 2 critical), as stored.
pub fn risk_rank(level: RiskLevel) -> i64 {
    match level {
        RiskLevel::Elevated => 1,
        RiskLevel::Critical => 2,
        RiskLevel::Ok | RiskLevel::Unknown => 0,
    }
}

/// The level of a stored rank.
pub fn risk_of_rank(rank: i64) -> RiskLevel {
    match rank {
        1 => RiskLevel::Elevated,
        r if r >= 2 => RiskLevel::Critical,
        _ => RiskLevel::Ok,
    }
}

/// A rate in thousandths (validated finite and bounded before it gets here).
pub fn milli(value: Option<f64>) -> Option<i64> {
    value.map(|value| (value * 1000.0).round() as i64)
}

pub fn unmilli(value: Option<i64>) -> Option<f64> {
    value.map(|value| value as f64 / 1000.0)
}

fn flag(on: bool) -> Param {
    Param::int(i64::from(on))
}

/// The pressure columns' values of one rollup (all NULL when it carried none).
pub fn rollup_params(pressure: Option<&PressureRollup>) -> Vec<Param> {
    let Some(pressure) = pressure else {
        return ROLLUP_COLUMNS.iter().map(|_| Param::Int(None)).collect();
    };
    let mut params = vec![
        Param::int(risk_rank(pressure.risk)),
        flag(pressure.sources.contains(&SignalSource::BalloonCounters)),
        flag(pressure.sources.contains(&SignalSource::BalloonStats)),
        flag(pressure.sources.contains(&SignalSource::GuestPsi)),
    ];
    params.extend(
        pressure
            .peak
            .rates()
            .into_iter()
            .map(|rate| Param::Int(milli(rate))),
    );
    params.push(Param::kib(pressure.peak.psi_some_total_us));
    params.push(Param::kib(pressure.peak.psi_full_total_us));
    params
}

/// The pressure of a rollup row whose pressure columns start at `first`.
pub fn decode_rollup(row: &Row, first: usize) -> Option<PressureRollup> {
    let risk = row.int(first)?;
    let mut sources = Vec::new();
    for (offset, source) in [
        SignalSource::BalloonCounters,
        SignalSource::BalloonStats,
        SignalSource::GuestPsi,
    ]
    .into_iter()
    .enumerate()
    {
        if row.int_or_zero(first + 1 + offset) != 0 {
            sources.push(source);
        }
    }
    let rate = |offset: usize| unmilli(row.int(first + 4 + offset));
    Some(PressureRollup {
        sources,
        peak: PressureSnapshot {
            alloc_stalls_per_s: rate(0),
            direct_scan_kib_per_s: rate(1),
            direct_reclaim_kib_per_s: rate(2),
            async_scan_kib_per_s: rate(3),
            async_reclaim_kib_per_s: rate(4),
            major_faults_per_s: rate(5),
            swap_in_kib_per_s: rate(6),
            available_slope_kib_per_s: rate(7),
            psi_some_avg10: rate(8),
            psi_full_avg10: rate(9),
            psi_some_total_us: row.kib(first + 14),
            psi_full_total_us: row.kib(first + 15),
        },
        risk: risk_of_rank(risk),
    })
}

fn fold_rate(into: &mut Option<f64>, from: Option<f64>, smaller: bool) {
    if let Some(value) = from {
        *into = Some(into.map_or(value, |kept| {
            if smaller {
                kept.min(value)
            } else {
                kept.max(value)
            }
        }));
    }
}

/// Folds a later minute's pressure into its hour's, as the compaction does.
pub fn fold(into: &mut Option<PressureRollup>, from: Option<&PressureRollup>) {
    let Some(from) = from else {
        return;
    };
    let Some(hour) = into else {
        *into = Some(from.clone());
        return;
    };
    for source in &from.sources {
        if !hour.sources.contains(source) {
            hour.sources.push(*source);
        }
    }
    hour.sources.sort();
    if risk_rank(from.risk) > risk_rank(hour.risk) {
        hour.risk = from.risk;
    }
    let (kept, new) = (&mut hour.peak, &from.peak);
    fold_rate(&mut kept.alloc_stalls_per_s, new.alloc_stalls_per_s, false);
    fold_rate(
        &mut kept.direct_scan_kib_per_s,
        new.direct_scan_kib_per_s,
        false,
    );
    fold_rate(
        &mut kept.direct_reclaim_kib_per_s,
        new.direct_reclaim_kib_per_s,
        false,
    );
    fold_rate(
        &mut kept.async_scan_kib_per_s,
        new.async_scan_kib_per_s,
        false,
    );
    fold_rate(
        &mut kept.async_reclaim_kib_per_s,
        new.async_reclaim_kib_per_s,
        false,
    );
    fold_rate(&mut kept.major_faults_per_s, new.major_faults_per_s, false);
    fold_rate(&mut kept.swap_in_kib_per_s, new.swap_in_kib_per_s, false);
    fold_rate(
        &mut kept.available_slope_kib_per_s,
        new.available_slope_kib_per_s,
        true,
    );
    fold_rate(&mut kept.psi_some_avg10, new.psi_some_avg10, false);
    fold_rate(&mut kept.psi_full_avg10, new.psi_full_avg10, false);
    for (kept, new) in [
        (&mut kept.psi_some_total_us, new.psi_some_total_us),
        (&mut kept.psi_full_total_us, new.psi_full_total_us),
    ] {
        if let Some(value) = new {
            *kept = Some(kept.map_or(value, |k| k.max(value)));
        }
    }
}

/// One phase of an episode, ready for [`UPSERT_EPISODE`].
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeRow {
    pub vm_uuid: String,
    pub vm_name: String,
    pub started_at_ms: i64,
    pub at_ms: i64,
    /// Set for a start or peak phase: its drivers, signals and prediction are the
    /// episode's newest.
    pub peak_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub rank: i64,
    pub drivers_json: String,
    pub exhaustion_secs: Option<u64>,
    pub signals_json: String,
    pub alloc_stalls_milli: Option<i64>,
    pub psi_some_milli: Option<i64>,
    pub psi_full_milli: Option<i64>,
    pub deficit_kib: Option<u64>,
    pub at_balloon_floor: bool,
    pub balloon_floor_kib: Option<u64>,
    pub actual_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
}

impl EpisodeRow {
    /// The row of one validated phase event (`vm_name` already cleaned of NULs).
    pub fn of(episode: &PressureEpisode, vm_name: String) -> Self {
        let peak = matches!(episode.phase, EpisodePhase::Start | EpisodePhase::Peak);
        Self {
            vm_uuid: episode.vm.uuid.clone(),
            vm_name,
            started_at_ms: episode.started_at_ms,
            at_ms: episode.at_ms,
            peak_at_ms: peak.then_some(episode.at_ms),
            ended_at_ms: (episode.phase == EpisodePhase::End).then_some(episode.at_ms),
            rank: risk_rank(episode.level),
            drivers_json: serde_json::to_string(&episode.drivers)
                .unwrap_or_else(|_| "[]".to_string()),
            exhaustion_secs: episode.exhaustion_secs,
            signals_json: serde_json::to_string(&episode.signals)
                .unwrap_or_else(|_| "{}".to_string()),
            alloc_stalls_milli: milli(episode.signals.alloc_stalls_per_s),
            psi_some_milli: milli(episode.signals.psi_some_avg10),
            psi_full_milli: milli(episode.signals.psi_full_avg10),
            deficit_kib: episode.deficit_kib,
            at_balloon_floor: episode.at_balloon_floor,
            balloon_floor_kib: episode.balloon_floor_kib,
            actual_kib: episode.actual_kib,
            maximum_kib: episode.maximum_kib,
        }
    }
}

/// Applies one phase to its episode's row, in whatever order phases arrive: the
/// worst level, the newest start/peak's drivers, signals and prediction, the highest
/// stall, PSI and deficit figures, any phase at the floor, the newest balloon
/// figures, the end. Run once per newly stored phase event (its key is stored once
/// in `events`), so a re-sent phase changes nothing.
pub const UPSERT_EPISODE: &str = "INSERT INTO pressure_episodes (host_id, vm_uuid, \
     started_at_ms, vm_name, last_at_ms, peak_at_ms, ended_at_ms, worst_rank, drivers_json, \
     exhaustion_secs, signals_json, peak_alloc_stalls_milli, peak_psi_some_milli, \
     peak_psi_full_milli, deficit_kib, at_balloon_floor, balloon_floor_kib, actual_kib, \
     maximum_kib) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (host_id, vm_uuid, started_at_ms) DO UPDATE SET \
     vm_name = CASE WHEN excluded.last_at_ms >= pressure_episodes.last_at_ms \
       THEN excluded.vm_name ELSE pressure_episodes.vm_name END, \
     last_at_ms = CASE WHEN excluded.last_at_ms > pressure_episodes.last_at_ms \
       THEN excluded.last_at_ms ELSE pressure_episodes.last_at_ms END, \
     peak_at_ms = CASE WHEN pressure_episodes.peak_at_ms IS NULL \
       OR excluded.peak_at_ms > pressure_episodes.peak_at_ms \
       THEN COALESCE(excluded.peak_at_ms, pressure_episodes.peak_at_ms) \
       ELSE pressure_episodes.peak_at_ms END, \
     ended_at_ms = CASE WHEN pressure_episodes.ended_at_ms IS NULL \
       OR excluded.ended_at_ms > pressure_episodes.ended_at_ms \
       THEN COALESCE(excluded.ended_at_ms, pressure_episodes.ended_at_ms) \
       ELSE pressure_episodes.ended_at_ms END, \
     worst_rank = CASE WHEN excluded.worst_rank > pressure_episodes.worst_rank \
       THEN excluded.worst_rank ELSE pressure_episodes.worst_rank END, \
     drivers_json = CASE WHEN excluded.peak_at_ms IS NOT NULL AND (pressure_episodes.peak_at_ms \
       IS NULL OR excluded.peak_at_ms >= pressure_episodes.peak_at_ms) \
       THEN excluded.drivers_json ELSE pressure_episodes.drivers_json END, \
     exhaustion_secs = CASE WHEN excluded.peak_at_ms IS NOT NULL AND (pressure_episodes.peak_at_ms \
       IS NULL OR excluded.peak_at_ms >= pressure_episodes.peak_at_ms) \
       THEN excluded.exhaustion_secs ELSE pressure_episodes.exhaustion_secs END, \
     signals_json = CASE WHEN excluded.peak_at_ms IS NOT NULL AND (pressure_episodes.peak_at_ms \
       IS NULL OR excluded.peak_at_ms >= pressure_episodes.peak_at_ms) \
       THEN excluded.signals_json ELSE pressure_episodes.signals_json END, \
     peak_alloc_stalls_milli = CASE WHEN pressure_episodes.peak_alloc_stalls_milli IS NULL \
       OR excluded.peak_alloc_stalls_milli > pressure_episodes.peak_alloc_stalls_milli \
       THEN COALESCE(excluded.peak_alloc_stalls_milli, pressure_episodes.peak_alloc_stalls_milli) \
       ELSE pressure_episodes.peak_alloc_stalls_milli END, \
     peak_psi_some_milli = CASE WHEN pressure_episodes.peak_psi_some_milli IS NULL \
       OR excluded.peak_psi_some_milli > pressure_episodes.peak_psi_some_milli \
       THEN COALESCE(excluded.peak_psi_some_milli, pressure_episodes.peak_psi_some_milli) \
       ELSE pressure_episodes.peak_psi_some_milli END, \
     peak_psi_full_milli = CASE WHEN pressure_episodes.peak_psi_full_milli IS NULL \
       OR excluded.peak_psi_full_milli > pressure_episodes.peak_psi_full_milli \
       THEN COALESCE(excluded.peak_psi_full_milli, pressure_episodes.peak_psi_full_milli) \
       ELSE pressure_episodes.peak_psi_full_milli END, \
     deficit_kib = CASE WHEN pressure_episodes.deficit_kib IS NULL \
       OR excluded.deficit_kib > pressure_episodes.deficit_kib \
       THEN COALESCE(excluded.deficit_kib, pressure_episodes.deficit_kib) \
       ELSE pressure_episodes.deficit_kib END, \
     at_balloon_floor = CASE WHEN excluded.at_balloon_floor > pressure_episodes.at_balloon_floor \
       THEN excluded.at_balloon_floor ELSE pressure_episodes.at_balloon_floor END, \
     balloon_floor_kib = CASE WHEN excluded.balloon_floor_kib IS NOT NULL AND \
       (pressure_episodes.balloon_floor_kib IS NULL OR excluded.last_at_ms >= pressure_episodes.last_at_ms) \
       THEN excluded.balloon_floor_kib ELSE pressure_episodes.balloon_floor_kib END, \
     actual_kib = CASE WHEN excluded.actual_kib IS NOT NULL AND \
       (pressure_episodes.actual_kib IS NULL OR excluded.last_at_ms >= pressure_episodes.last_at_ms) \
       THEN excluded.actual_kib ELSE pressure_episodes.actual_kib END, \
     maximum_kib = CASE WHEN excluded.maximum_kib IS NOT NULL AND \
       (pressure_episodes.maximum_kib IS NULL OR excluded.last_at_ms >= pressure_episodes.last_at_ms) \
       THEN excluded.maximum_kib ELSE pressure_episodes.maximum_kib END";

pub fn episode_params(host_id: &str, row: &EpisodeRow) -> Vec<Param> {
    vec![
        Param::text(host_id),
        Param::text(row.vm_uuid.as_str()),
        Param::int(row.started_at_ms),
        Param::text(row.vm_name.as_str()),
        Param::int(row.at_ms),
        Param::Int(row.peak_at_ms),
        Param::Int(row.ended_at_ms),
        Param::int(row.rank),
        Param::text(row.drivers_json.as_str()),
        Param::kib(row.exhaustion_secs),
        Param::text(row.signals_json.as_str()),
        Param::Int(row.alloc_stalls_milli),
        Param::Int(row.psi_some_milli),
        Param::Int(row.psi_full_milli),
        Param::kib(row.deficit_kib),
        flag(row.at_balloon_floor),
        Param::kib(row.balloon_floor_kib),
        Param::kib(row.actual_kib),
        Param::kib(row.maximum_kib),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sql::Cell;

    fn rollup(stalls: f64, slope: f64, risk: RiskLevel) -> PressureRollup {
        PressureRollup {
            sources: vec![SignalSource::BalloonStats],
            peak: PressureSnapshot {
                alloc_stalls_per_s: Some(stalls),
                available_slope_kib_per_s: Some(slope),
                psi_some_total_us: Some(7),
                ..PressureSnapshot::default()
            },
            risk,
        }
    }

    #[test]
    fn a_rollups_pressure_reads_back_as_bound() {
        let pressure = PressureRollup {
            sources: vec![SignalSource::BalloonCounters, SignalSource::GuestPsi],
            ..rollup(12.345, -2048.5, RiskLevel::Critical)
        };
        let cells: Vec<Cell> = rollup_params(Some(&pressure))
            .into_iter()
            .map(|param| match param {
                Param::Int(Some(value)) => Cell::Int(value),
                _ => Cell::Null,
            })
            .collect();
        assert_eq!(cells.len(), ROLLUP_COLUMNS.len());
        assert_eq!(decode_rollup(&Row(cells), 0), Some(pressure));
        let none: Vec<Cell> = rollup_params(None).iter().map(|_| Cell::Null).collect();
        assert_eq!(decode_rollup(&Row(none), 0), None, "no pressure stays none");
    }

    #[test]
    fn an_hour_keeps_the_worst_of_its_minutes() {
        let mut hour = None;
        fold(&mut hour, Some(&rollup(3.0, -10.0, RiskLevel::Critical)));
        fold(&mut hour, None);
        let mut later = rollup(1.0, -50.0, RiskLevel::Elevated);
        later.sources = vec![SignalSource::GuestPsi, SignalSource::BalloonCounters];
        later.peak.alloc_stalls_per_s = None;
        fold(&mut hour, Some(&later));
        let hour = hour.expect("an hour with signals");
        assert_eq!(hour.risk, RiskLevel::Critical);
        assert_eq!(
            hour.peak.alloc_stalls_per_s,
            Some(3.0),
            "a missing rate is no 0"
        );
        assert_eq!(
            hour.peak.available_slope_kib_per_s,
            Some(-50.0),
            "the steepest fall"
        );
        assert_eq!(
            hour.sources,
            [
                SignalSource::BalloonCounters,
                SignalSource::BalloonStats,
                SignalSource::GuestPsi
            ]
        );
    }

    #[test]
    fn ranks_order_the_levels() {
        for level in RiskLevel::KNOWN {
            assert_eq!(risk_of_rank(risk_rank(*level)), *level);
        }
        assert!(risk_rank(RiskLevel::Critical) > risk_rank(RiskLevel::Elevated));
        assert_eq!(milli(Some(-0.0004)), Some(0));
        assert_eq!(milli(Some(1.5)), Some(1500));
    }

    #[test]
    fn the_episode_upsert_binds_every_column() {
        assert_eq!(
            UPSERT_EPISODE
                .split(" DO UPDATE")
                .next()
                .map(|insert| insert.matches('?').count()),
            Some(episode_params("h", &EpisodeRow::of(&sample_episode(), String::new())).len())
        );
    }

    fn sample_episode() -> PressureEpisode {
        PressureEpisode {
            vm: ballast_model::VmRef::default(),
            phase: EpisodePhase::End,
            started_at_ms: 1,
            at_ms: 2,
            level: RiskLevel::Elevated,
            drivers: Vec::new(),
            exhaustion_secs: None,
            signals: PressureSnapshot::default(),
            actual_kib: None,
            maximum_kib: None,
            balloon_floor_kib: None,
            at_balloon_floor: false,
            deficit_kib: None,
        }
    }
}
