//! Rollup tiers: minute rollups (as the agents send them) are kept for a short
//! window, then compacted into one hourly rollup per VM in the same `rollups`
//! table (`period_secs = 3600`, key `~hour/<vm uuid>/<hour start ms>`).
//!
//! An hourly rollup folds its minutes so that every reader keeps working:
//! `samples` is the sum; each `*_min`/`*_max` the minimum/maximum; each `*_last`,
//! `oom_kills`, `alloc_stalls` and `vm_name` come from the last captured minute;
//! `maximum_kib` and `host_total_kib` are the maximum, `host_available_kib` the
//! minimum (the worst moment, as the dashboard's host pressure reads it); `stale`
//! is set when any minute was stale. The pressure columns (`storage::pressure`): risk,
//! sources, peak rates and PSI totals the maximum, MemAvailable's slope the minimum. Folding is associative, so a minute that
//! arrives after its hour was compacted is merged into the existing hourly row.
//!
//! Pure: this module builds SQL text (one text for both engines) and folds points
//! in memory; the retention pass runs the statements.

use ballast_model::MinMaxLast;

use crate::records::{RollupPoint, Signals};
use crate::storage::pressure::{self, Fold};
use crate::storage::sql::{Param, Query};
use crate::storage::virtio_mem;

/// The hourly tier's period.
pub const HOUR_SECS: i64 = 3600;
const HOUR_MS: i64 = HOUR_SECS * 1000;

/// The five min/max/last series of a rollup row.
const SERIES: [&str; 5] = ["actual", "available", "usable", "unused", "rss"];

/// Start of the hour holding `at_ms`.
pub fn hour_start(at_ms: i64) -> i64 {
    at_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The minute rows one compaction batch takes: the oldest `batch_rows` minute rows
/// that started before `before_ms` (an hour boundary). Deterministic (ordered by
/// the partial index `rollups_minute_time`), so the upsert and the delete of one
/// transaction select the same rows.
fn batch_ids() -> &'static str {
    "SELECT id FROM rollups WHERE period_secs < 3600 AND period_start_ms < ? \
     ORDER BY period_start_ms, id LIMIT ?"
}

fn keep_smaller(column: &str) -> String {
    format!(
        "{column} = CASE WHEN rollups.{column} IS NULL OR excluded.{column} < rollups.{column} \
         THEN excluded.{column} ELSE rollups.{column} END"
    )
}

fn keep_larger(column: &str) -> String {
    format!(
        "{column} = CASE WHEN rollups.{column} IS NULL OR excluded.{column} > rollups.{column} \
         THEN excluded.{column} ELSE rollups.{column} END"
    )
}

fn keep_newer(column: &str) -> String {
    format!(
        "{column} = CASE WHEN excluded.captured_at_ms >= rollups.captured_at_ms \
         THEN excluded.{column} ELSE rollups.{column} END"
    )
}

/// The upsert of one batch's minute rows into hourly rows.
fn upsert_sql() -> String {
    let mut select = vec![
        "host_id".to_string(),
        "'~hour/' || vm_uuid || '/' || CAST(hour AS TEXT)".into(),
        "MAX(captured_at_ms)".into(),
        "vm_uuid".into(),
        "MAX(CASE WHEN rn = 1 THEN vm_name END)".into(),
        "hour".into(),
        HOUR_SECS.to_string(),
        "CAST(SUM(samples) AS BIGINT)".into(),
        "MAX(maximum_kib)".into(),
    ];
    let mut update = vec![
        "samples = rollups.samples + excluded.samples".to_string(),
        keep_larger("maximum_kib"),
    ];
    for series in SERIES {
        select.push(format!("MIN({series}_min)"));
        select.push(format!("MAX({series}_max)"));
        select.push(format!("MAX(CASE WHEN rn = 1 THEN {series}_last END)"));
        update.push(keep_smaller(&format!("{series}_min")));
        update.push(keep_larger(&format!("{series}_max")));
        update.push(keep_newer(&format!("{series}_last")));
    }
    for last in ["oom_kills", "alloc_stalls"] {
        select.push(format!("MAX(CASE WHEN rn = 1 THEN {last} END)"));
        update.push(keep_newer(last));
    }
    select.extend([
        "MAX(stale)".to_string(),
        "MAX(host_total_kib)".into(),
        "MIN(host_available_kib)".into(),
    ]);
    for (column, fold) in pressure::ROLLUP_COLUMNS {
        match fold {
            Fold::Max => {
                select.push(format!("MAX({column})"));
                update.push(keep_larger(column));
            }
            Fold::Min => {
                select.push(format!("MIN({column})"));
                update.push(keep_smaller(column));
            }
        }
    }
    // virtio-mem sums (`storage::virtio_mem`): min, max, last, then the size and the
    // unconverged time (largest).
    for series in ["vmem_plugged", "vmem_requested"] {
        select.push(format!("MIN({series}_min)"));
        select.push(format!("MAX({series}_max)"));
        select.push(format!("MAX(CASE WHEN rn = 1 THEN {series}_last END)"));
        update.push(keep_smaller(&format!("{series}_min")));
        update.push(keep_larger(&format!("{series}_max")));
        update.push(keep_newer(&format!("{series}_last")));
    }
    for column in ["vmem_max_kib", "vmem_unconverged_secs"] {
        select.push(format!("MAX({column})"));
        update.push(keep_larger(column));
    }
    update.extend([
        keep_larger("stale"),
        keep_larger("host_total_kib"),
        keep_smaller("host_available_kib"),
        // Last: the name and the newest capture time (which the `_last` columns compare).
        keep_newer("vm_name"),
        keep_larger("captured_at_ms"),
    ]);
    format!(
        "INSERT INTO rollups (host_id, key, captured_at_ms, vm_uuid, vm_name, \
         period_start_ms, period_secs, samples, maximum_kib, \
         actual_min, actual_max, actual_last, available_min, available_max, available_last, \
         usable_min, usable_max, usable_last, unused_min, unused_max, unused_last, \
         rss_min, rss_max, rss_last, oom_kills, alloc_stalls, stale, host_total_kib, \
         host_available_kib, {pressure_columns}, {vmem_columns}) \
         SELECT {select} FROM (SELECT r.*, (r.period_start_ms / {HOUR_MS}) * {HOUR_MS} AS hour, \
         ROW_NUMBER() OVER (PARTITION BY r.host_id, r.vm_uuid, r.period_start_ms / {HOUR_MS} \
         ORDER BY r.captured_at_ms DESC, r.id DESC) AS rn \
         FROM rollups r WHERE r.id IN ({ids})) m \
         GROUP BY host_id, vm_uuid, hour \
         ON CONFLICT (host_id, key) DO UPDATE SET {update}",
        select = select.join(", "),
        ids = batch_ids(),
        update = update.join(", "),
        pressure_columns = pressure::rollup_column_list(),
        vmem_columns = virtio_mem::rollup_column_list(),
    )
}

/// One compaction batch: the upsert of the hourly rows, then the delete of the
/// minute rows it folded. Run both with [`crate::storage::Store::execute_all`]
/// (one transaction, one snapshot); the second count is the minute rows compacted.
pub fn compact_batch(before_ms: i64, batch_rows: u32) -> Vec<Query> {
    let params = || vec![Param::int(before_ms), Param::int(i64::from(batch_rows))];
    vec![
        Query::new(upsert_sql(), params()),
        Query::new(
            format!("DELETE FROM rollups WHERE id IN ({})", batch_ids()),
            params(),
        ),
    ]
}

fn fold_mml(into: &mut MinMaxLast, from: &MinMaxLast) {
    if let Some(min) = from.min {
        into.min = Some(into.min.map_or(min, |m| m.min(min)));
    }
    if let Some(max) = from.max {
        into.max = Some(into.max.map_or(max, |m| m.max(max)));
    }
    if from.last.is_some() {
        into.last = from.last;
    }
}

fn fold_max(into: &mut Option<u64>, from: Option<u64>) {
    if let Some(value) = from {
        *into = Some(into.map_or(value, |v| v.max(value)));
    }
}

/// A series at hourly resolution: points (oldest first, minute or hourly) folded
/// per hour as the compaction folds them. Hourly points pass through (merged with
/// any minute of the same hour not compacted yet).
pub fn hourly(points: &[RollupPoint]) -> Vec<RollupPoint> {
    let mut out: Vec<RollupPoint> = Vec::new();
    for point in points {
        let start = hour_start(point.period_start_ms);
        let hour = match out.last_mut() {
            Some(hour) if hour.period_start_ms == start => hour,
            _ => {
                out.push(RollupPoint {
                    period_start_ms: start,
                    period_secs: HOUR_SECS,
                    ..RollupPoint::default()
                });
                let Some(hour) = out.last_mut() else {
                    continue;
                };
                hour
            }
        };
        hour.samples = hour.samples.saturating_add(point.samples);
        fold_max(&mut hour.maximum_kib, point.maximum_kib);
        fold_mml(&mut hour.actual_kib, &point.actual_kib);
        fold_mml(&mut hour.available_kib, &point.available_kib);
        fold_mml(&mut hour.usable_kib, &point.usable_kib);
        fold_mml(&mut hour.unused_kib, &point.unused_kib);
        fold_mml(&mut hour.rss_kib, &point.rss_kib);
        if point.oom_kills.is_some() {
            hour.oom_kills = point.oom_kills;
        }
        if point.alloc_stalls.is_some() {
            hour.alloc_stalls = point.alloc_stalls;
        }
        hour.stale |= point.stale;
        fold_max(&mut hour.host_total_kib, point.host_total_kib);
        if let Some(available) = point.host_available_kib {
            hour.host_available_kib = Some(
                hour.host_available_kib
                    .map_or(available, |v| v.min(available)),
            );
        }
        pressure::fold(&mut hour.pressure, point.pressure.as_ref());
        virtio_mem::fold(&mut hour.virtio_mem, &point.virtio_mem);
        hour.signals = Signals::of(hour.pressure.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(start_ms: i64, actual: u64) -> RollupPoint {
        RollupPoint {
            period_start_ms: start_ms,
            period_secs: 60,
            samples: 12,
            maximum_kib: Some(1024),
            actual_kib: MinMaxLast {
                min: Some(actual),
                max: Some(actual + 10),
                last: Some(actual + 5),
            },
            host_available_kib: Some(actual),
            ..RollupPoint::default()
        }
    }

    #[test]
    fn minutes_fold_into_their_hour() {
        let base = 10 * HOUR_MS;
        let points = vec![
            point(base, 500),
            point(base + 60_000, 300),
            point(base + 59 * 60_000, 700),
            point(base + HOUR_MS, 100),
        ];
        let hours = hourly(&points);
        assert_eq!(hours.len(), 2);
        let first = &hours[0];
        assert_eq!(
            (first.period_start_ms, first.period_secs, first.samples),
            (base, 3600, 36)
        );
        assert_eq!(first.actual_kib.min, Some(300));
        assert_eq!(first.actual_kib.max, Some(710));
        assert_eq!(first.actual_kib.last, Some(705), "the last minute's last");
        assert_eq!(first.host_available_kib, Some(300), "the worst moment");
        assert_eq!(
            first.available_kib,
            MinMaxLast::default(),
            "missing stays missing"
        );
        assert_eq!(hours[1].samples, 12);
    }

    #[test]
    fn the_batch_selects_minute_rows_only_and_the_same_rows_twice() {
        let queries = compact_batch(7 * HOUR_MS, 500);
        assert_eq!(queries.len(), 2);
        for query in &queries {
            assert!(query
                .sql
                .contains("period_secs < 3600 AND period_start_ms < ?"));
            assert_eq!(query.params, vec![Param::int(7 * HOUR_MS), Param::int(500)]);
        }
        assert_eq!(hour_start(HOUR_MS + 5), HOUR_MS);
        assert_eq!(hour_start(-1), -HOUR_MS);
    }
}
