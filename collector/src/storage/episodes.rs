//! The reads of pressure episodes (`pressure_episodes`, written by
//! `storage::pressure::UPSERT_EPISODE`): a VM's episodes, the open ones (the VMs
//! under pressure now), their count by level, and the report's episodes.

use ballast_model::{PressureSignal, PressureSnapshot, RiskLevel};

use crate::records::EpisodeRecord;
use crate::storage::pressure::{risk_of_rank, unmilli};
use crate::storage::sql::{Param, Query, Row};
use crate::storage::store::{Store, StoreError};

const EPISODE_COLUMNS: &str = "host_id, vm_uuid, vm_name, started_at_ms, last_at_ms, \
     ended_at_ms, worst_rank, drivers_json, exhaustion_secs, signals_json, \
     peak_alloc_stalls_milli, peak_psi_some_milli, peak_psi_full_milli, deficit_kib, \
     at_balloon_floor, balloon_floor_kib, actual_kib, maximum_kib";

fn decode_episode(row: &Row) -> EpisodeRecord {
    let drivers: Vec<PressureSignal> = row
        .text(7)
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let signals: PressureSnapshot = row
        .text(9)
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    EpisodeRecord {
        host: row.text_or_empty(0),
        uuid: row.text_or_empty(1),
        name: row.text_or_empty(2),
        started_at_ms: row.int_or_zero(3),
        last_at_ms: row.int_or_zero(4),
        ended_at_ms: row.int(5),
        level: risk_of_rank(row.int_or_zero(6)),
        drivers,
        exhaustion_secs: row.kib(8),
        signals,
        peak_alloc_stalls_per_s: unmilli(row.int(10)),
        peak_psi_some_avg10: unmilli(row.int(11)),
        peak_psi_full_avg10: unmilli(row.int(12)),
        deficit_kib: row.kib(13),
        at_balloon_floor: row.int_or_zero(14) != 0,
        balloon_floor_kib: row.kib(15),
        actual_kib: row.kib(16),
        maximum_kib: row.kib(17),
    }
}

/// The most episodes one read returns.
pub const EPISODES_MAX: i64 = 1_000;

/// A VM's (host, uuid) episodes active in `[since_ms, until_ms)` (started before its
/// end, last seen or still open after its start), oldest first.
pub async fn vm_episodes(
    store: &dyn Store,
    host: &str,
    vm_uuid: &str,
    since_ms: i64,
    until_ms: i64,
    limit: i64,
) -> Result<Vec<EpisodeRecord>, StoreError> {
    let sql = format!(
        "SELECT {EPISODE_COLUMNS} FROM pressure_episodes WHERE host_id = ? AND vm_uuid = ? \
         AND started_at_ms < ? AND (ended_at_ms IS NULL OR ended_at_ms >= ?) \
         ORDER BY started_at_ms, id LIMIT ?"
    );
    let rows = store
        .query(Query::new(
            sql,
            vec![
                Param::text(host),
                Param::text(vm_uuid),
                Param::int(until_ms),
                Param::int(since_ms),
                Param::int(limit.clamp(1, EPISODES_MAX)),
            ],
        ))
        .await?;
    Ok(rows.iter().map(decode_episode).collect())
}

/// An episode `e` no later episode of the same VM followed: an open one that was
/// (its end lost when an agent restarted mid-episode) is over, not open.
const NOT_SUPERSEDED: &str = "NOT EXISTS (SELECT 1 FROM pressure_episodes later \
     WHERE later.host_id = e.host_id AND later.vm_uuid = e.vm_uuid \
     AND later.started_at_ms > e.started_at_ms)";

/// Open episodes (no end received, no later episode of the VM) whose last phase came at or after `since_ms`,
/// newest activity first, at most `limit`: the VMs under pressure now.
pub async fn open_episodes(
    store: &dyn Store,
    since_ms: i64,
    limit: i64,
) -> Result<Vec<EpisodeRecord>, StoreError> {
    let sql = format!(
        "SELECT {EPISODE_COLUMNS} FROM pressure_episodes e WHERE ended_at_ms IS NULL \
         AND last_at_ms >= ? AND {NOT_SUPERSEDED} ORDER BY last_at_ms DESC, id DESC LIMIT ?"
    );
    let rows = store
        .query(Query::new(
            sql,
            vec![
                Param::int(since_ms),
                Param::int(limit.clamp(1, EPISODES_MAX)),
            ],
        ))
        .await?;
    Ok(rows.iter().map(decode_episode).collect())
}

/// Open episodes by worst level since `since_ms`: (elevated, critical) VMs (a VM
/// counted once, at its worst open episode).
pub async fn vms_under_pressure(
    store: &dyn Store,
    since_ms: i64,
) -> Result<(u64, u64), StoreError> {
    let rows = store
        .query(Query::new(
            format!(
                "SELECT worst, COUNT(*) FROM (SELECT host_id, vm_uuid, MAX(worst_rank) AS worst \
                 FROM pressure_episodes e WHERE ended_at_ms IS NULL AND last_at_ms >= ? \
                 AND {NOT_SUPERSEDED} GROUP BY host_id, vm_uuid) v GROUP BY worst"
            ),
            vec![Param::int(since_ms)],
        ))
        .await?;
    let mut counts = (0, 0);
    for row in rows {
        let n = u64::try_from(row.int_or_zero(1)).unwrap_or(0);
        match risk_of_rank(row.int_or_zero(0)) {
            RiskLevel::Elevated => counts.0 += n,
            RiskLevel::Critical => counts.1 += n,
            _ => {}
        }
    }
    Ok(counts)
}

/// Episodes of every VM that ended (or were last seen) in `[since_ms, until_ms)`,
/// oldest first, at most `limit`: the balloon-policy report's input.
pub async fn episodes_between(
    store: &dyn Store,
    since_ms: i64,
    until_ms: i64,
    limit: i64,
) -> Result<Vec<EpisodeRecord>, StoreError> {
    let sql = format!(
        "SELECT {EPISODE_COLUMNS} FROM pressure_episodes WHERE last_at_ms >= ? \
         AND started_at_ms < ? ORDER BY started_at_ms, id LIMIT ?"
    );
    let rows = store
        .query(Query::new(
            sql,
            vec![
                Param::int(since_ms),
                Param::int(until_ms),
                Param::int(limit.max(1)),
            ],
        ))
        .await?;
    Ok(rows.iter().map(decode_episode).collect())
}
