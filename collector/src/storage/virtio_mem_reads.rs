//! The reads of virtio-mem (migration 0011, written by `storage::virtio_mem`): a VM's
//! resize events newest first and paged, its devices' stored periods (the history the
//! correlation of an OOM may read), and the VMs with a resize stuck now.

use ballast_model::{MinMaxLast, ResizePhase};

use crate::records::{MemoryDeviceRecord, RollupPoint, VirtioMemDevicePoint, VmMemoryDevices};
use crate::storage::queries::{cursor_text, host_in};
use crate::storage::sql::{Param, Query, Row};
use crate::storage::store::{Store, StoreError};
use crate::storage::tiers;

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

/// A VM's device periods (oldest first) folded per hour and device, as the
/// compaction folds them: smallest min, largest max, the newest last, size and
/// unconverged time; the largest maximum size.
fn hourly(points: Vec<VirtioMemDevicePoint>) -> Vec<VirtioMemDevicePoint> {
    let mut hours: std::collections::BTreeMap<(i64, String), VirtioMemDevicePoint> =
        std::collections::BTreeMap::new();
    for point in points {
        let start = tiers::hour_start(point.period_start_ms);
        let hour = hours
            .entry((start, point.device.clone()))
            .or_insert_with(|| VirtioMemDevicePoint {
                period_start_ms: start,
                period_secs: tiers::HOUR_SECS,
                device: point.device.clone(),
                node: None,
                block_size_kib: None,
                max_size_kib: None,
                requested_kib: MinMaxLast::default(),
                plugged_kib: MinMaxLast::default(),
                unconverged_secs: None,
            });
        fold_mml(&mut hour.requested_kib, &point.requested_kib);
        fold_mml(&mut hour.plugged_kib, &point.plugged_kib);
        hour.node = point.node.or(hour.node);
        hour.block_size_kib = point.block_size_kib.or(hour.block_size_kib);
        hour.max_size_kib = hour.max_size_kib.max(point.max_size_kib);
        hour.unconverged_secs = point.unconverged_secs;
    }
    hours.into_values().collect()
}

/// Fills each of `points` (a VM's memory series, oldest first) with its devices:
/// the device rows of the same period, or with `hourly` those of its hour folded.
/// One read over the series' range.
pub async fn attach_devices(
    store: &dyn Store,
    host: &str,
    vm_uuid: &str,
    points: &mut [RollupPoint],
    hourly_points: bool,
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Ok(());
    };
    let since = if hourly_points {
        tiers::hour_start(first.period_start_ms)
    } else {
        first.period_start_ms
    };
    let until = last
        .period_start_ms
        .saturating_add(last.period_secs.max(1).saturating_mul(1000));
    let mut devices = vm_device_history(
        store,
        &[host.to_string()],
        vm_uuid,
        since,
        until,
        DEVICE_POINTS_MAX,
    )
    .await?;
    if hourly_points {
        devices = hourly(devices);
    }
    let mut devices = devices.into_iter().peekable();
    for point in points.iter_mut() {
        // Both oldest first: skip periods no point has, take the point's own.
        while devices
            .peek()
            .is_some_and(|d| d.period_start_ms < point.period_start_ms)
        {
            devices.next();
        }
        while let Some(device) = devices.next_if(|d| d.period_start_ms == point.period_start_ms) {
            point.devices.push(device);
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(start_ms: i64, device: &str, plugged: u64) -> VirtioMemDevicePoint {
        VirtioMemDevicePoint {
            period_start_ms: start_ms,
            period_secs: 60,
            device: device.into(),
            node: Some(0),
            block_size_kib: Some(2048),
            max_size_kib: Some(4096),
            requested_kib: MinMaxLast {
                min: Some(1024),
                max: Some(1024),
                last: Some(1024),
            },
            plugged_kib: MinMaxLast {
                min: Some(plugged),
                max: Some(plugged + 10),
                last: Some(plugged + 5),
            },
            unconverged_secs: Some(u64::try_from(start_ms / 60_000).unwrap_or(0)),
        }
    }

    #[test]
    fn device_minutes_fold_per_hour_and_device() {
        let hour = 7 * 3_600_000;
        let folded = hourly(vec![
            minute(hour, "a", 300),
            minute(hour, "b", 900),
            minute(hour + 60_000, "a", 200),
            minute(hour + 3_600_000, "a", 100),
        ]);
        let seen: Vec<(i64, &str)> = folded
            .iter()
            .map(|p| (p.period_start_ms, p.device.as_str()))
            .collect();
        assert_eq!(seen, [(hour, "a"), (hour, "b"), (hour + 3_600_000, "a")]);
        let a = &folded[0];
        assert_eq!(a.period_secs, 3600);
        assert_eq!(
            (a.plugged_kib.min, a.plugged_kib.max, a.plugged_kib.last),
            (Some(200), Some(310), Some(205))
        );
        assert_eq!(a.unconverged_secs, Some(7 * 60 + 1), "the last minute's");
    }
}
