//! The guard's actions in the store (issue 19 item 3, migration 0010): one
//! `guard_actions` row per decision, inserted when its event is first stored (by
//! key). The reads are `storage::guard_reads`.

use ballast_model::{GuardAction, GuardMode, GuardOutcome};

use crate::storage::pressure::risk_rank;
use crate::storage::sql::Param;

/// One decision, ready for [`INSERT_GUARD`].
#[derive(Debug, Clone, PartialEq)]
pub struct GuardRow {
    pub vm_uuid: String,
    /// Cleaned of NULs.
    pub vm_name: String,
    pub at_ms: i64,
    pub mode: GuardMode,
    pub outcome: GuardOutcome,
    pub level_rank: i64,
    pub episode_started_at_ms: Option<i64>,
    pub actual_before_kib: Option<u64>,
    pub target_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
    pub deficit_kib: Option<u64>,
    pub exhaustion_secs: Option<u64>,
    pub host_available_kib: Option<u64>,
    pub host_reserve_kib: Option<u64>,
    pub floor_before_kib: Option<u64>,
    pub floor_after_kib: Option<u64>,
    pub drivers_json: String,
    pub signals_json: String,
    /// Cleaned of NULs.
    pub detail: String,
}

impl GuardRow {
    /// The row of one validated action (`vm_name` and `detail` already cleaned).
    pub fn of(action: &GuardAction, vm_name: String, detail: String) -> Self {
        Self {
            vm_uuid: action.vm.uuid.clone(),
            vm_name,
            at_ms: action.at_ms,
            mode: action.mode,
            outcome: action.outcome,
            level_rank: risk_rank(action.level),
            episode_started_at_ms: action.episode_started_at_ms,
            actual_before_kib: action.actual_before_kib,
            target_kib: action.target_kib,
            maximum_kib: action.maximum_kib,
            deficit_kib: action.deficit_kib,
            exhaustion_secs: action.exhaustion_secs,
            host_available_kib: action.host_available_kib,
            host_reserve_kib: action.host_reserve_kib,
            floor_before_kib: action.floor_before_kib,
            floor_after_kib: action.floor_after_kib,
            drivers_json: serde_json::to_string(&action.drivers)
                .unwrap_or_else(|_| "[]".to_string()),
            signals_json: serde_json::to_string(&action.signals)
                .unwrap_or_else(|_| "{}".to_string()),
            detail,
        }
    }
}

/// Inserts one action; run once per newly stored guard event, and a key stored
/// before changes nothing either way.
pub const INSERT_GUARD: &str = "INSERT INTO guard_actions (host_id, event_key, vm_uuid, \
     vm_name, at_ms, mode, outcome, level_rank, episode_started_at_ms, actual_before_kib, \
     target_kib, maximum_kib, deficit_kib, exhaustion_secs, host_available_kib, \
     host_reserve_kib, floor_before_kib, floor_after_kib, drivers_json, signals_json, detail) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (host_id, event_key) DO NOTHING";

pub fn guard_params(host_id: &str, event_key: &str, row: &GuardRow) -> Vec<Param> {
    vec![
        Param::text(host_id),
        Param::text(event_key),
        Param::text(row.vm_uuid.as_str()),
        Param::text(row.vm_name.as_str()),
        Param::int(row.at_ms),
        Param::text(row.mode.as_str()),
        Param::text(row.outcome.as_str()),
        Param::int(row.level_rank),
        Param::Int(row.episode_started_at_ms),
        Param::kib(row.actual_before_kib),
        Param::kib(row.target_kib),
        Param::kib(row.maximum_kib),
        Param::kib(row.deficit_kib),
        Param::kib(row.exhaustion_secs),
        Param::kib(row.host_available_kib),
        Param::kib(row.host_reserve_kib),
        Param::kib(row.floor_before_kib),
        Param::kib(row.floor_after_kib),
        Param::text(row.drivers_json.as_str()),
        Param::text(row.signals_json.as_str()),
        Param::text(row.detail.as_str()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::guard_reads::GUARD_COLUMNS;
    use ballast_model::PressureSnapshot;

    #[test]
    fn the_insert_binds_every_column() {
        let action = GuardAction {
            vm: ballast_model::VmRef::default(),
            mode: GuardMode::Observe,
            outcome: GuardOutcome::WouldDeflate,
            at_ms: 1,
            episode_started_at_ms: None,
            level: ballast_model::RiskLevel::Critical,
            drivers: Vec::new(),
            signals: PressureSnapshot::default(),
            exhaustion_secs: None,
            deficit_kib: None,
            actual_before_kib: None,
            target_kib: None,
            maximum_kib: None,
            host_available_kib: None,
            host_reserve_kib: None,
            floor_before_kib: None,
            floor_after_kib: None,
            detail: String::new(),
        };
        let row = GuardRow::of(&action, String::new(), String::new());
        assert_eq!(
            INSERT_GUARD.matches('?').count(),
            guard_params("h", "k", &row).len()
        );
        assert_eq!(
            GUARD_COLUMNS.split(',').count(),
            guard_params("h", "k", &row).len(),
            "every column but the key is read back, with the id"
        );
    }
}
