//! The reads of virtio-mem (migration 0011, written by `storage::virtio_mem`): a VM's
//! resize events newest first and paged, its devices' stored periods (the history the
//! correlation of an OOM may read), and the VMs with a resize stuck now.

use ballast_model::{MinMaxLast, ResizePhase};

use crate::records::{MemoryDeviceRecord, VirtioMemDevicePoint, VmMemoryDevices};
use crate::storage::queries::{cursor_text, host_in};
use crate::storage::sql::{Param, Query, Row};
use crate::storage::store::{Store, StoreError};

/// The most resize events one page returns.
pub const MEMORY_DEVICES_MAX: i64 = 1_000;
/// The most device periods one read returns.
pub const DEVICE_POINTS_MAX: i64 = 100_000;

const EVENT_COLUMNS: &str = "id, host_id, vm_uuid, vm_name, device_id, at_ms, phase, \
     requested_kib, plugged_kib, previous_requested_kib, previous_plugged_kib, block_size_kib, \
     max_size_kib, unconverged_since_ms";

fn decode_event(row: &Row) -> MemoryDeviceRecord {
    MemoryDeviceRecord {
        id: row.int_or_zero(0),
        host: row.text_or_empty(1),
        uuid: row.text_or_empty(2),
        name: row.text_or_empty(3),
        device: row.text_or_empty(4),
        at_ms: row.int_or_zero(5),
        phase: ResizePhase::parse(&row.text_or_empty(6)),
        requested_kib: row.kib(7),
        plugged_kib: row.kib(8),
        previous_requested_kib: row.kib(9),
        previous_plugged_kib: row.kib(10),
        block_size_kib: row.kib(11),
        max_size_kib: row.kib(12),
        unconverged_since_ms: row.int(13),
    }
}

/// Which of a VM's resize events [`vm_memory_devices`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryDeviceFilter {
    /// Seen at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Seen before (Unix ms).
    pub until_ms: Option<i64>,
    /// Only this phase.
    pub phase: Option<ResizePhase>,
    /// Continue after this (time, id), exclusive.
    pub cursor: Option<(i64, i64)>,
    pub limit: i64,
}

/// One page of the resize events of VM (host, uuid), newest first.
pub async fn vm_memory_devices(
    store: &dyn Store,
    host: &str,
    vm_uuid: &str,
    filter: &MemoryDeviceFilter,
) -> Result<VmMemoryDevices, StoreError> {
    let mut conditions = vec!["host_id = ?", "vm_uuid = ?"];
    let mut params = vec![Param::text(host), Param::text(vm_uuid)];
    if let Some(since) = filter.since_ms {
        conditions.push("at_ms >= ?");
        params.push(Param::int(since));
    }
    if let Some(until) = filter.until_ms {
        conditions.push("at_ms < ?");
        params.push(Param::int(until));
    }
    if let Some(phase) = filter.phase {
        conditions.push("phase = ?");
        params.push(Param::text(phase.as_str()));
    }
    if let Some((time, id)) = filter.cursor {
        conditions.push("(at_ms, id) < (?, ?)");
        params.extend([Param::int(time), Param::int(id)]);
    }
    let limit = filter.limit.clamp(1, MEMORY_DEVICES_MAX);
    params.push(Param::int(limit + 1));
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM memory_device_events WHERE {} \
         ORDER BY at_ms DESC, id DESC LIMIT ?",
        conditions.join(" AND ")
    );
    let rows = store.query(Query::new(sql, params)).await?;
    let mut items: Vec<MemoryDeviceRecord> = rows.iter().map(decode_event).collect();
    let next_cursor = if items.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        items.last().map(|last| cursor_text(last.at_ms, last.id))
    } else {
        None
    };
    Ok(VmMemoryDevices {
        host: host.to_string(),
        uuid: vm_uuid.to_string(),
        items,
        next_cursor,
    })
}

/// The stored periods (minutes, hours once compacted) of the virtio-mem devices of
/// uuid `vm_uuid` on any of `hosts` with `since <= period_start < until`, oldest first
/// (by period, then device id in byte order), at most `limit` rows.
pub async fn vm_device_history(
    store: &dyn Store,
    hosts: &[String],
    vm_uuid: &str,
    since_ms: i64,
    until_ms: i64,
    limit: i64,
) -> Result<Vec<VirtioMemDevicePoint>, StoreError> {
    let sql = format!(
        "SELECT period_start_ms, period_secs, device_id, node, block_size_kib, max_size_kib, \
         requested_min, requested_max, requested_last, plugged_min, plugged_max, plugged_last, \
         unconverged_secs, id FROM virtio_mem_rollups WHERE {} AND vm_uuid = ? \
         AND period_start_ms >= ? AND period_start_ms < ? ORDER BY period_start_ms, id LIMIT ?",
        host_in(hosts.len())
    );
    let mut params: Vec<Param> = hosts.iter().map(|h| Param::text(h.as_str())).collect();
    params.extend([
        Param::text(vm_uuid),
        Param::int(since_ms),
        Param::int(until_ms),
        Param::int(limit.clamp(1, DEVICE_POINTS_MAX)),
    ]);
    let rows = store.query(Query::new(sql, params)).await?;
    let mml = |row: &Row, first: usize| MinMaxLast {
        min: row.kib(first),
        max: row.kib(first + 1),
        last: row.kib(first + 2),
    };
    let mut points: Vec<VirtioMemDevicePoint> = rows
        .iter()
        .map(|row| VirtioMemDevicePoint {
            period_start_ms: row.int_or_zero(0),
            period_secs: row.int_or_zero(1),
            device: row.text_or_empty(2),
            node: row.kib(3).and_then(|n| u32::try_from(n).ok()),
            block_size_kib: row.kib(4),
            max_size_kib: row.kib(5),
            requested_kib: mml(row, 6),
            plugged_kib: mml(row, 9),
            unconverged_secs: row.kib(12),
        })
        .collect();
    // Byte order, whatever the engine's collation.
    points.sort_by(|a, b| {
        (a.period_start_ms, a.device.as_bytes()).cmp(&(b.period_start_ms, b.device.as_bytes()))
    });
    Ok(points)
}

/// How many VMs have a resize stuck now: a device whose `stuck` event no later
/// `converged` (met at last) or `requested` (the host asked again) event of the same
/// device followed. A `resized` after a stuck one (the guest moved, not far enough)
/// leaves it stuck.
pub async fn vms_with_stuck_resize(store: &dyn Store) -> Result<u64, StoreError> {
    // The phase a literal (a fixed vocabulary name, never input): the partial index
    // `memory_device_events_stuck` (migration 0011) serves only a statement naming it.
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT DISTINCT s.host_id, s.vm_uuid \
         FROM memory_device_events s WHERE s.phase = '{stuck}' AND NOT EXISTS \
         (SELECT 1 FROM memory_device_events l WHERE l.host_id = s.host_id \
         AND l.vm_uuid = s.vm_uuid AND l.device_id = s.device_id \
         AND l.phase IN (?, ?) AND (l.at_ms, l.id) > (s.at_ms, s.id))) stuck",
        stuck = ResizePhase::Stuck.as_str()
    );
    let rows = store
        .query(Query::new(
            sql,
            vec![
                Param::text(ResizePhase::Converged.as_str()),
                Param::text(ResizePhase::Requested.as_str()),
            ],
        ))
        .await?;
    Ok(rows.first().and_then(|row| row.kib(0)).unwrap_or_default())
}
