//! virtio-mem in the store (issue 20 item 1, migration 0011): a rollup's devices
//! summed in the `rollups` row (`vmem_*` columns, read with the row as
//! [`VirtioMemSums`]), each device in `virtio_mem_rollups` (keyed by the rollup's own
//! key, folded into hours by [`compact_devices_batch`] like the rollups), and each
//! resize event in `memory_device_events`, inserted when its event is first stored (by
//! key). The reads are `storage::virtio_mem_reads`.

use ballast_model::{MemoryDeviceChange, MinMaxLast, ResizePhase, VirtioMemRollup};

use crate::records::VirtioMemSums;
use crate::storage::sql::{clean, Param, Query, Row};

/// The `rollups` columns of [`VirtioMemSums`], in the order of [`rollup_params`] and
/// [`decode_sums`].
pub const ROLLUP_COLUMNS: [&str; 8] = [
    "vmem_plugged_min",
    "vmem_plugged_max",
    "vmem_plugged_last",
    "vmem_requested_min",
    "vmem_requested_max",
    "vmem_requested_last",
    "vmem_max_kib",
    "vmem_unconverged_secs",
];

/// [`ROLLUP_COLUMNS`] joined for a column list.
pub fn rollup_column_list() -> String {
    ROLLUP_COLUMNS.join(", ")
}

fn push_mml(params: &mut Vec<Param>, value: Option<&MinMaxLast>) {
    let value = value.copied().unwrap_or_default();
    params.extend([
        Param::kib(value.min),
        Param::kib(value.max),
        Param::kib(value.last),
    ]);
}

/// The parameters of [`ROLLUP_COLUMNS`] for one rollup row.
pub fn rollup_params(sums: &VirtioMemSums) -> Vec<Param> {
    let mut params = Vec::with_capacity(ROLLUP_COLUMNS.len());
    push_mml(&mut params, sums.plugged_kib.as_ref());
    push_mml(&mut params, sums.requested_kib.as_ref());
    params.push(Param::kib(sums.max_kib));
    params.push(Param::kib(sums.unconverged_secs));
    params
}

fn mml(row: &Row, first: usize) -> Option<MinMaxLast> {
    let value = MinMaxLast {
        min: row.kib(first),
        max: row.kib(first + 1),
        last: row.kib(first + 2),
    };
    (value != MinMaxLast::default()).then_some(value)
}

/// [`ROLLUP_COLUMNS`] read back from `row`, starting at column `first`.
pub fn decode_sums(row: &Row, first: usize) -> VirtioMemSums {
    VirtioMemSums {
        plugged_kib: mml(row, first),
        requested_kib: mml(row, first + 3),
        max_kib: row.kib(first + 6),
        unconverged_secs: row.kib(first + 7),
    }
}

fn fold_mml(into: &mut Option<MinMaxLast>, from: Option<&MinMaxLast>) {
    let Some(from) = from else {
        return;
    };
    let into = into.get_or_insert_with(MinMaxLast::default);
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

/// Folds a later period's sums into an hour's, as the compaction does: smallest min,
/// largest max, newest last, largest size and unconverged time.
pub fn fold(into: &mut VirtioMemSums, from: &VirtioMemSums) {
    fold_mml(&mut into.plugged_kib, from.plugged_kib.as_ref());
    fold_mml(&mut into.requested_kib, from.requested_kib.as_ref());
    fold_max(&mut into.max_kib, from.max_kib);
    fold_max(&mut into.unconverged_secs, from.unconverged_secs);
}

/// One device of one rollup, ready for [`INSERT_DEVICE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Cleaned of NULs.
    pub device_id: String,
    pub node: Option<u32>,
    pub block_size_kib: Option<u64>,
    pub max_size_kib: Option<u64>,
    pub requested_kib: MinMaxLast,
    pub plugged_kib: MinMaxLast,
    pub unconverged_secs: Option<u32>,
}

impl DeviceRow {
    /// The rows of one validated rollup's devices.
    pub fn of_rollup(devices: &[VirtioMemRollup]) -> Vec<Self> {
        devices
            .iter()
            .map(|device| Self {
                device_id: clean(&device.id),
                node: device.node,
                block_size_kib: device.block_size_kib,
                max_size_kib: device.max_size_kib,
                requested_kib: device.requested_kib,
                plugged_kib: device.plugged_kib,
                unconverged_secs: device.unconverged_secs,
            })
            .collect()
    }
}

/// Inserts one device of one rollup; a re-sent rollup (same key) adds nothing.
pub const INSERT_DEVICE: &str = "INSERT INTO virtio_mem_rollups (host_id, rollup_key, \
     device_id, captured_at_ms, vm_uuid, period_start_ms, period_secs, node, block_size_kib, \
     max_size_kib, requested_min, requested_max, requested_last, plugged_min, plugged_max, \
     plugged_last, unconverged_secs) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (host_id, rollup_key, device_id) DO NOTHING";

/// The parameters of one row of [`INSERT_DEVICE`].
pub const DEVICE_PARAMS: usize = 17;

/// Where a device row belongs: its rollup's host, key, capture time, VM and period.
#[derive(Debug, Clone, Copy)]
pub struct RollupOf<'a> {
    pub host_id: &'a str,
    pub key: &'a str,
    pub captured_at_ms: i64,
    pub vm_uuid: &'a str,
    pub period_start_ms: i64,
    pub period_secs: i64,
}

pub fn device_params(of: RollupOf<'_>, row: &DeviceRow) -> Vec<Param> {
    let mut params = vec![
        Param::text(of.host_id),
        Param::text(of.key),
        Param::text(row.device_id.as_str()),
        Param::int(of.captured_at_ms),
        Param::text(of.vm_uuid),
        Param::int(of.period_start_ms),
        Param::int(of.period_secs),
        Param::kib(row.node.map(u64::from)),
        Param::kib(row.block_size_kib),
        Param::kib(row.max_size_kib),
    ];
    push_mml(&mut params, Some(&row.requested_kib));
    push_mml(&mut params, Some(&row.plugged_kib));
    params.push(Param::kib(row.unconverged_secs.map(u64::from)));
    params
}

/// The hourly tier's period (`storage::tiers::HOUR_SECS`, which imports this file).
const HOUR_MS: i64 = 3_600_000;

/// The minute device rows one compaction batch takes (oldest first, by the partial
/// index `virtio_mem_rollups_minute_time`), as `tiers` takes the rollups'.
fn device_batch_ids() -> &'static str {
    "SELECT id FROM virtio_mem_rollups WHERE period_secs < 3600 AND period_start_ms < ? \
     ORDER BY period_start_ms, id LIMIT ?"
}

fn device_upsert_sql() -> String {
    let smaller = |c: &str| {
        format!(
            "{c} = CASE WHEN virtio_mem_rollups.{c} IS NULL OR excluded.{c} < virtio_mem_rollups.{c} \
             THEN excluded.{c} ELSE virtio_mem_rollups.{c} END"
        )
    };
    let larger = |c: &str| {
        format!(
            "{c} = CASE WHEN virtio_mem_rollups.{c} IS NULL OR excluded.{c} > virtio_mem_rollups.{c} \
             THEN excluded.{c} ELSE virtio_mem_rollups.{c} END"
        )
    };
    let newer = |c: &str| {
        format!(
            "{c} = CASE WHEN excluded.captured_at_ms >= virtio_mem_rollups.captured_at_ms \
             THEN excluded.{c} ELSE virtio_mem_rollups.{c} END"
        )
    };
    let mut update = Vec::new();
    for series in ["requested", "plugged"] {
        update.push(smaller(&format!("{series}_min")));
        update.push(larger(&format!("{series}_max")));
        update.push(newer(&format!("{series}_last")));
    }
    update.extend([
        newer("node"),
        newer("block_size_kib"),
        larger("max_size_kib"),
        newer("unconverged_secs"),
        // Last: the newest capture time (which the `newer` columns compare).
        larger("captured_at_ms"),
    ]);
    format!(
        "INSERT INTO virtio_mem_rollups (host_id, rollup_key, device_id, captured_at_ms, \
         vm_uuid, period_start_ms, period_secs, node, block_size_kib, max_size_kib, \
         requested_min, requested_max, requested_last, plugged_min, plugged_max, plugged_last, \
         unconverged_secs) \
         SELECT host_id, '~hour/' || vm_uuid || '/' || CAST(hour AS TEXT), device_id, \
         MAX(captured_at_ms), vm_uuid, hour, 3600, MAX(CASE WHEN rn = 1 THEN node END), \
         MAX(CASE WHEN rn = 1 THEN block_size_kib END), MAX(max_size_kib), \
         MIN(requested_min), MAX(requested_max), MAX(CASE WHEN rn = 1 THEN requested_last END), \
         MIN(plugged_min), MAX(plugged_max), MAX(CASE WHEN rn = 1 THEN plugged_last END), \
         MAX(CASE WHEN rn = 1 THEN unconverged_secs END) \
         FROM (SELECT d.*, (d.period_start_ms / {HOUR_MS}) * {HOUR_MS} AS hour, \
         ROW_NUMBER() OVER (PARTITION BY d.host_id, d.vm_uuid, d.device_id, \
         d.period_start_ms / {HOUR_MS} ORDER BY d.captured_at_ms DESC, d.id DESC) AS rn \
         FROM virtio_mem_rollups d WHERE d.id IN ({ids})) m \
         GROUP BY host_id, vm_uuid, device_id, hour \
         ON CONFLICT (host_id, rollup_key, device_id) DO UPDATE SET {update}",
        ids = device_batch_ids(),
        update = update.join(", "),
    )
}

/// One compaction batch of device rows: the upsert of the hourly rows, then the
/// delete of the minute rows it folded (one transaction, `Store::execute_all`; the
/// second count is the minute rows compacted).
pub fn compact_devices_batch(before_ms: i64, batch_rows: u32) -> Vec<Query> {
    let params = || vec![Param::int(before_ms), Param::int(i64::from(batch_rows))];
    vec![
        Query::new(device_upsert_sql(), params()),
        Query::new(
            format!(
                "DELETE FROM virtio_mem_rollups WHERE id IN ({})",
                device_batch_ids()
            ),
            params(),
        ),
    ]
}

/// One resize event, ready for [`INSERT_MEMORY_DEVICE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryDeviceRow {
    pub vm_uuid: String,
    /// Cleaned of NULs.
    pub vm_name: String,
    /// Cleaned of NULs.
    pub device_id: String,
    pub at_ms: i64,
    pub phase: ResizePhase,
    pub requested_kib: Option<u64>,
    pub plugged_kib: Option<u64>,
    pub previous_requested_kib: Option<u64>,
    pub previous_plugged_kib: Option<u64>,
    pub block_size_kib: Option<u64>,
    pub max_size_kib: Option<u64>,
    pub unconverged_since_ms: Option<i64>,
}

impl MemoryDeviceRow {
    /// The row of one validated change, captured at `at_ms` (the host clock).
    pub fn of(change: &MemoryDeviceChange, at_ms: i64) -> Self {
        Self {
            vm_uuid: change.vm.uuid.clone(),
            vm_name: clean(&change.vm.name),
            device_id: clean(&change.device),
            at_ms,
            phase: change.phase,
            requested_kib: change.requested_kib,
            plugged_kib: change.plugged_kib,
            previous_requested_kib: change.previous_requested_kib,
            previous_plugged_kib: change.previous_plugged_kib,
            block_size_kib: change.block_size_kib,
            max_size_kib: change.max_size_kib,
            unconverged_since_ms: change.unconverged_since_ms,
        }
    }
}

/// Inserts one resize event; run once per newly stored `memory_device` event.
pub const INSERT_MEMORY_DEVICE: &str = "INSERT INTO memory_device_events (host_id, event_key, \
     vm_uuid, vm_name, device_id, at_ms, phase, requested_kib, plugged_kib, \
     previous_requested_kib, previous_plugged_kib, block_size_kib, max_size_kib, \
     unconverged_since_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (host_id, event_key) DO NOTHING";

pub fn memory_device_params(host_id: &str, event_key: &str, row: &MemoryDeviceRow) -> Vec<Param> {
    vec![
        Param::text(host_id),
        Param::text(event_key),
        Param::text(row.vm_uuid.as_str()),
        Param::text(row.vm_name.as_str()),
        Param::text(row.device_id.as_str()),
        Param::int(row.at_ms),
        Param::text(row.phase.as_str()),
        Param::kib(row.requested_kib),
        Param::kib(row.plugged_kib),
        Param::kib(row.previous_requested_kib),
        Param::kib(row.previous_plugged_kib),
        Param::kib(row.block_size_kib),
        Param::kib(row.max_size_kib),
        Param::Int(row.unconverged_since_ms),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, plugged: u64, requested: u64, unconverged: Option<u32>) -> VirtioMemRollup {
        let flat = |kib| MinMaxLast {
            min: Some(kib),
            max: Some(kib),
            last: Some(kib),
        };
        VirtioMemRollup {
            id: id.into(),
            node: Some(0),
            block_size_kib: Some(2048),
            max_size_kib: Some(1 << 20),
            requested_kib: flat(requested),
            plugged_kib: flat(plugged),
            unconverged_secs: unconverged,
        }
    }

    #[test]
    fn the_inserts_bind_every_column() {
        let row = DeviceRow::of_rollup(&[device("vm0", 1, 2, None)]).remove(0);
        let of = RollupOf {
            host_id: "h",
            key: "k",
            captured_at_ms: 1,
            vm_uuid: "u",
            period_start_ms: 0,
            period_secs: 60,
        };
        assert_eq!(INSERT_DEVICE.matches('?').count(), DEVICE_PARAMS);
        assert_eq!(device_params(of, &row).len(), DEVICE_PARAMS);
        let change = MemoryDeviceChange {
            vm: ballast_model::VmRef::default(),
            device: "vm0".into(),
            phase: ResizePhase::Stuck,
            requested_kib: None,
            plugged_kib: None,
            previous_requested_kib: None,
            previous_plugged_kib: None,
            block_size_kib: None,
            max_size_kib: None,
            unconverged_since_ms: None,
        };
        let row = MemoryDeviceRow::of(&change, 5);
        assert_eq!(
            INSERT_MEMORY_DEVICE.matches('?').count(),
            memory_device_params("h", "k", &row).len()
        );
        assert_eq!(
            rollup_params(&VirtioMemSums::default()).len(),
            ROLLUP_COLUMNS.len()
        );
    }

    #[test]
    fn devices_fold_into_the_hours_the_rollups_fold_into() {
        assert_eq!(HOUR_MS, crate::storage::tiers::HOUR_SECS * 1000);
    }

    #[test]
    fn sums_add_the_devices_and_take_the_longest_unconverged_time() {
        let sums = VirtioMemSums::of(&[
            device("vm0", 512 * 1024, 256 * 1024, Some(40)),
            device("vm1", 128 * 1024, 128 * 1024, None),
        ]);
        assert_eq!(sums.plugged_kib.and_then(|p| p.last), Some(640 * 1024));
        assert_eq!(sums.requested_kib.and_then(|p| p.last), Some(384 * 1024));
        assert_eq!(sums.max_kib, Some(2 << 20));
        assert_eq!(sums.unconverged_secs, Some(40));
        assert!(VirtioMemSums::of(&[]).is_empty(), "no device: nothing");
    }

    #[test]
    fn an_hour_keeps_the_smallest_min_the_largest_max_and_the_newest_last() {
        let mut hour = VirtioMemSums::default();
        let minute = |min, max, last| VirtioMemSums {
            plugged_kib: Some(MinMaxLast {
                min: Some(min),
                max: Some(max),
                last: Some(last),
            }),
            max_kib: Some(max),
            ..VirtioMemSums::default()
        };
        fold(&mut hour, &minute(300, 500, 400));
        fold(&mut hour, &VirtioMemSums::default());
        fold(&mut hour, &minute(100, 350, 200));
        let plugged = hour.plugged_kib.unwrap_or_default();
        assert_eq!(
            (plugged.min, plugged.max, plugged.last),
            (Some(100), Some(500), Some(200))
        );
        assert_eq!(hour.max_kib, Some(500));
        assert_eq!(hour.requested_kib, None, "never reported: absent");
    }
}
