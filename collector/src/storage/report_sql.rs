//! The balloon-policy report's reads (`crate::reports::load` binds and runs them):
//! SQL written once for both engines. Aggregation happens in the database (histogram
//! bins, sums, maxima per VM), so the rows read back are per VM, not per rollup; the
//! row-by-row reads end in `LIMIT ?`. A rollup row weighs the minutes it stands for:
//! 1 for a minute rollup (or shorter), 60 for an hourly one.

/// Every VM with its configuration and audit findings.
pub const POLICY_VMS: &str =
    "SELECT vm_uuid, vm_name, host_id, config_json, findings_json FROM vms";

/// Per VM over `[?, ?)`: name, largest working set, minutes and KiB-minutes held by
/// the balloon, largest maximum. Counts are in minutes: an hourly rollup (the
/// compacted tier, `tiers`) weighs its 60 minutes.
pub const POLICY_AGGREGATES: &str = "SELECT vm_uuid, MAX(vm_name), host_id, \
         MAX(CASE WHEN available_last >= usable_last THEN available_last - usable_last END), \
         CAST(SUM(CASE WHEN maximum_kib >= actual_last THEN (CASE WHEN period_secs >= 3600 THEN period_secs / 60 ELSE 1 END) END) AS BIGINT), \
         CAST(SUM(CASE WHEN maximum_kib >= actual_last THEN (maximum_kib - actual_last) * (CASE WHEN period_secs >= 3600 THEN period_secs / 60 ELSE 1 END) END) AS BIGINT), \
         MAX(maximum_kib) \
         FROM rollups WHERE period_start_ms >= ? AND period_start_ms < ? GROUP BY host_id, vm_uuid";

/// Working-set histogram per VM (bin width `?` KiB) over `[?, ?)`, in minutes.
pub const POLICY_HISTOGRAM: &str =
    "SELECT host_id, vm_uuid, (available_last - usable_last) / ? AS bin, \
         CAST(SUM((CASE WHEN period_secs >= 3600 THEN period_secs / 60 ELSE 1 END)) AS BIGINT) \
         FROM rollups WHERE period_start_ms >= ? AND period_start_ms < ? \
         AND available_last IS NOT NULL AND usable_last IS NOT NULL \
         AND available_last >= usable_last GROUP BY host_id, vm_uuid, bin";

/// OOMs in `[?, ?)`, oldest first, at most `?`.
pub const POLICY_OOMS: &str =
    "SELECT id, host_id, vm_uuid, captured_at_ms, corr_verdict, balloon_held_kb, kind, \
             report_kind, correlation_json FROM ooms \
             WHERE captured_at_ms >= ? AND captured_at_ms < ? ORDER BY captured_at_ms, id LIMIT ?";

/// Rollups in `[?, ?)` where the balloon held at least `?` KiB while usable memory
/// fell under `?` % of the maximum, oldest first, at most `?`.
pub const POLICY_HELD_ROLLUPS: &str =
    "SELECT host_id, vm_uuid, period_start_ms, usable_min, maximum_kib - actual_min FROM rollups \
             WHERE period_start_ms >= ? AND period_start_ms < ? AND usable_min IS NOT NULL \
             AND maximum_kib IS NOT NULL AND actual_min IS NOT NULL \
             AND maximum_kib - actual_min >= ? AND usable_min * 100 < maximum_kib * ? \
             ORDER BY period_start_ms LIMIT ?";

/// Near-miss events in `[?, ?)`, oldest first, at most `?`.
pub const POLICY_NEAR_MISS_EVENTS: &str =
    "SELECT host_id, vm_uuid, captured_at_ms, body_json FROM events WHERE kind = 'near_miss' \
             AND captured_at_ms >= ? AND captured_at_ms < ? ORDER BY captured_at_ms LIMIT ?";

/// One host's memory series (`host_id = ?`) in `[?, ?)`, at most `?` points.
pub const POLICY_HOST_SERIES: &str =
    "SELECT period_start_ms, MAX(host_total_kib), MIN(host_available_kib) FROM rollups \
                 WHERE host_id = ? AND period_start_ms >= ? AND period_start_ms < ? \
                 AND host_total_kib IS NOT NULL AND host_available_kib IS NOT NULL \
                 GROUP BY period_start_ms ORDER BY period_start_ms LIMIT ?";

/// One VM's balloon series (`host_id = ?`, `vm_uuid = ?`) in `[?, ?)`, at most `?` points.
pub const POLICY_REPLAY_SERIES: &str = "SELECT period_start_ms, period_secs, actual_last, unused_last FROM rollups \
                     WHERE host_id = ? AND vm_uuid = ? AND period_start_ms >= ? \
                     AND period_start_ms < ? AND actual_last IS NOT NULL ORDER BY period_start_ms LIMIT ?";

/// Every host's hellos, oldest first (the newest names its backend).
pub const HOST_HELLOS: &str =
    "SELECT host_id, body_json FROM events WHERE kind = 'hello' ORDER BY captured_at_ms";

/// OOMs in `[?, ?)` whose stored correlation names virtio-mem (`host_took.virtio_mem`;
/// the LIKE only narrows, the reader decodes), with the VM's name and configuration,
/// oldest first, at most `?`.
pub const POLICY_ELASTIC_OOMS: &str =
    "SELECT o.id, o.host_id, o.vm_uuid, o.captured_at_ms, o.correlation_json, v.vm_name, \
             v.config_json, o.vm_name FROM ooms o \
             LEFT JOIN vms v ON v.host_id = o.host_id AND v.vm_uuid = o.vm_uuid \
             WHERE o.captured_at_ms >= ? AND o.captured_at_ms < ? \
             AND o.correlation_json LIKE '%virtio_mem%' \
             ORDER BY o.captured_at_ms, o.id LIMIT ?";
