//! The reads of guard actions (`guard_actions`, written by
//! `storage::guard::INSERT_GUARD`): a VM's actions and the fleet's, filtered by
//! outcome, mode and host, newest first.

use ballast_model::{GuardMode, GuardOutcome, PressureSignal, PressureSnapshot};

use crate::records::GuardRecord;
use crate::storage::pressure::risk_of_rank;
use crate::storage::sql::{Param, Query, Row};
use crate::storage::store::{Store, StoreError};

pub(crate) const GUARD_COLUMNS: &str =
    "id, host_id, vm_uuid, vm_name, at_ms, mode, outcome, level_rank, \
     episode_started_at_ms, actual_before_kib, target_kib, maximum_kib, deficit_kib, \
     exhaustion_secs, host_available_kib, host_reserve_kib, floor_before_kib, floor_after_kib, \
     drivers_json, signals_json, detail";

fn decode_guard(row: &Row) -> GuardRecord {
    let drivers: Vec<PressureSignal> = row
        .text(18)
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let signals: PressureSnapshot = row
        .text(19)
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    GuardRecord {
        id: row.int_or_zero(0),
        host: row.text_or_empty(1),
        uuid: row.text_or_empty(2),
        name: row.text_or_empty(3),
        at_ms: row.int_or_zero(4),
        mode: GuardMode::parse(&row.text_or_empty(5)),
        outcome: GuardOutcome::parse(&row.text_or_empty(6)),
        level: risk_of_rank(row.int_or_zero(7)),
        episode_started_at_ms: row.int(8),
        actual_before_kib: row.kib(9),
        target_kib: row.kib(10),
        maximum_kib: row.kib(11),
        deficit_kib: row.kib(12),
        exhaustion_secs: row.kib(13),
        host_available_kib: row.kib(14),
        host_reserve_kib: row.kib(15),
        floor_before_kib: row.kib(16),
        floor_after_kib: row.kib(17),
        drivers,
        signals,
        detail: row.text_or_empty(20),
    }
}

/// The most actions one read returns.
pub const GUARD_MAX: i64 = 1_000;

/// A VM's (host, uuid) actions decided in `[since_ms, until_ms)`, newest first, at
/// most `limit`.
pub async fn vm_guard_actions(
    store: &dyn Store,
    host: &str,
    vm_uuid: &str,
    since_ms: i64,
    until_ms: i64,
    limit: i64,
) -> Result<Vec<GuardRecord>, StoreError> {
    let sql = format!(
        "SELECT {GUARD_COLUMNS} FROM guard_actions WHERE host_id = ? AND vm_uuid = ? \
         AND at_ms >= ? AND at_ms < ? ORDER BY at_ms DESC, id DESC LIMIT ?"
    );
    let rows = store
        .query(Query::new(
            sql,
            vec![
                Param::text(host),
                Param::text(vm_uuid),
                Param::int(since_ms),
                Param::int(until_ms),
                Param::int(limit.clamp(1, GUARD_MAX)),
            ],
        ))
        .await?;
    Ok(rows.iter().map(decode_guard).collect())
}

/// Which of the fleet's actions [`guard_actions`] returns; None: any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardFilter {
    pub outcome: Option<GuardOutcome>,
    pub mode: Option<GuardMode>,
    pub host: Option<String>,
    /// Decided at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Decided before (Unix ms).
    pub until_ms: Option<i64>,
}

/// The fleet's actions matching `filter`, newest first, at most `limit`.
pub async fn guard_actions(
    store: &dyn Store,
    filter: &GuardFilter,
    limit: i64,
) -> Result<Vec<GuardRecord>, StoreError> {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(outcome) = filter.outcome {
        conditions.push("outcome = ?");
        params.push(Param::text(outcome.as_str()));
    }
    if let Some(mode) = filter.mode {
        conditions.push("mode = ?");
        params.push(Param::text(mode.as_str()));
    }
    if let Some(host) = &filter.host {
        conditions.push("host_id = ?");
        params.push(Param::text(host.as_str()));
    }
    if let Some(since) = filter.since_ms {
        conditions.push("at_ms >= ?");
        params.push(Param::int(since));
    }
    if let Some(until) = filter.until_ms {
        conditions.push("at_ms < ?");
        params.push(Param::int(until));
    }
    let filter_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    params.push(Param::int(limit.clamp(1, GUARD_MAX)));
    let sql = format!(
        "SELECT {GUARD_COLUMNS} FROM guard_actions {filter_sql} \
         ORDER BY at_ms DESC, id DESC LIMIT ?"
    );
    let rows = store.query(Query::new(sql, params)).await?;
    Ok(rows.iter().map(decode_guard).collect())
}
