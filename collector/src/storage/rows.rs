//! The rows of one ingest batch ([`PreparedBatch`], built by `crate::ingest`) and the
//! insert statements both engines run for them: rows to SQL, nothing else.
//!
//! Guest text is stored as parameters (never spliced into SQL) with NUL characters
//! replaced ([`clean`]), since PostgreSQL text cannot hold them and both engines must
//! store the same thing.

use ballast_model::{
    CorrelationVerdict, IngestResponse, MinMaxLast, OomKind, ReportKind, ReportVerdict, VmConfig,
    VmState,
};

use crate::records::RollupPoint;
use crate::storage::guard::GuardRow;
use crate::storage::pressure::{self, EpisodeRow};
use crate::storage::sql::Param;
use crate::storage::virtio_mem::{self, DeviceRow, MemoryDeviceRow};

/// Everything of one batch, ready to insert.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreparedBatch {
    pub host_id: String,
    pub received_at_ms: i64,
    pub rollups: Vec<RollupRow>,
    pub ooms: Vec<OomRow>,
    pub events: Vec<EventRow>,
    /// Webhook notifications to queue for OOMs of this batch that are new (not
    /// duplicates): written in the same transaction (the outbox, `crate::notify`).
    pub notify: Vec<NotifyTarget>,
}

/// One webhook to notify about `ooms[oom_index]` of the same batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    pub oom_index: usize,
    pub webhook: String,
}

impl PreparedBatch {
    pub fn n_rows(&self) -> usize {
        self.rollups.len() + self.ooms.len() + self.events.len()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    pub key: String,
    pub captured_at_ms: i64,
    pub vm_uuid: String,
    pub vm_name: String,
    pub point: RollupPoint,
    /// Each virtio-mem device of the period ([`virtio_mem::INSERT_DEVICE`]).
    pub devices: Vec<DeviceRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OomRow {
    pub key: String,
    pub captured_at_ms: i64,
    pub vm_uuid: String,
    pub vm_name: String,
    pub kind: OomKind,
    pub source: String,
    pub report_kind: ReportKind,
    pub report_verdict: ReportVerdict,
    pub killed_pid: Option<i64>,
    pub killed_comm: Option<String>,
    pub killed_anon_rss_kb: Option<i64>,
    pub corr_verdict: CorrelationVerdict,
    pub balloon_held_kb: Option<i64>,
    pub inflated_kb_before: Option<i64>,
    pub seconds_from_inflation: Option<i64>,
    pub event_json: String,
    pub correlation_json: String,
    /// The report was cut before its end: a later copy under the same key completes it.
    pub report_partial: bool,
}

/// Hello, inventory, balloon change, near miss, health, pressure episode, guard action:
/// kept as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub key: String,
    pub captured_at_ms: i64,
    pub kind: String,
    pub vm_uuid: Option<String>,
    pub body_json: String,
    /// For an inventory: the VMs to upsert when the event is new.
    pub vms: Vec<VmUpsert>,
    /// For a pressure episode's phase: its episode's row to update when the event is
    /// new ([`pressure::UPSERT_EPISODE`]).
    pub episode: Option<EpisodeRow>,
    /// For a guard action: its row to insert when the event is new
    /// ([`crate::storage::guard::INSERT_GUARD`]).
    pub guard: Option<GuardRow>,
    /// For a virtio-mem resize: its row to insert when the event is new
    /// ([`virtio_mem::INSERT_MEMORY_DEVICE`]).
    pub memory_device: Option<MemoryDeviceRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VmUpsert {
    pub vm_uuid: String,
    pub vm_name: String,
    pub state: VmState,
    pub config_json: Option<String>,
    pub findings_json: Option<String>,
    pub updated_at_ms: i64,
}

/// What the store knows about a VM before the batch (for the correlation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmContext {
    pub config: Option<VmConfig>,
    pub rollups: Vec<RollupPoint>,
}

pub use crate::storage::sql::clean;

/// What an ingest answers, counted row by row as both engines insert: a row its
/// `INSERT ... ON CONFLICT DO NOTHING` inserted is accepted, one it did not a duplicate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestTally {
    accepted: u32,
    duplicates: u32,
}

impl IngestTally {
    pub fn count(&mut self, inserted: bool) {
        if inserted {
            self.accepted += 1;
        } else {
            self.duplicates += 1;
        }
    }

    pub fn response(self) -> IngestResponse {
        IngestResponse {
            accepted: self.accepted,
            duplicates: self.duplicates,
        }
    }
}

pub const INSERT_ROLLUP: &str = "INSERT INTO rollups (host_id, key, captured_at_ms, vm_uuid, vm_name, \
     period_start_ms, period_secs, samples, maximum_kib, \
     actual_min, actual_max, actual_last, available_min, available_max, available_last, \
     usable_min, usable_max, usable_last, unused_min, unused_max, unused_last, \
     rss_min, rss_max, rss_last, oom_kills, alloc_stalls, stale, host_total_kib, host_available_kib, \
     pressure_risk, pressure_src_counters, pressure_src_stats, pressure_src_psi, \
     alloc_stalls_per_s_milli, direct_scan_kib_per_s_milli, direct_reclaim_kib_per_s_milli, \
     async_scan_kib_per_s_milli, async_reclaim_kib_per_s_milli, major_faults_per_s_milli, \
     swap_in_kib_per_s_milli, available_slope_kib_per_s_milli, psi_some_avg10_milli, \
     psi_full_avg10_milli, psi_some_total_us, psi_full_total_us, \
     vmem_plugged_min, vmem_plugged_max, vmem_plugged_last, vmem_requested_min, \
     vmem_requested_max, vmem_requested_last, vmem_max_kib, vmem_unconverged_secs) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
     ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (host_id, key) DO NOTHING";

/// The parameters of one row of [`INSERT_ROLLUP`].
pub const ROLLUP_PARAMS: usize =
    29 + pressure::ROLLUP_COLUMNS.len() + virtio_mem::ROLLUP_COLUMNS.len();

fn push_mml(params: &mut Vec<Param>, value: &MinMaxLast) {
    params.push(Param::kib(value.min));
    params.push(Param::kib(value.max));
    params.push(Param::kib(value.last));
}

pub fn rollup_params(host_id: &str, row: &RollupRow) -> Vec<Param> {
    let p = &row.point;
    let mut params = Vec::with_capacity(ROLLUP_PARAMS);
    params.push(Param::text(host_id));
    params.push(Param::text(row.key.as_str()));
    params.push(Param::int(row.captured_at_ms));
    params.push(Param::text(row.vm_uuid.as_str()));
    params.push(Param::text(row.vm_name.as_str()));
    params.push(Param::int(p.period_start_ms));
    params.push(Param::int(p.period_secs));
    params.push(Param::int(p.samples));
    params.push(Param::kib(p.maximum_kib));
    push_mml(&mut params, &p.actual_kib);
    push_mml(&mut params, &p.available_kib);
    push_mml(&mut params, &p.usable_kib);
    push_mml(&mut params, &p.unused_kib);
    push_mml(&mut params, &p.rss_kib);
    params.push(Param::kib(p.oom_kills));
    params.push(Param::kib(p.alloc_stalls));
    params.push(Param::int(i64::from(p.stale)));
    params.push(Param::kib(p.host_total_kib));
    params.push(Param::kib(p.host_available_kib));
    params.extend(pressure::rollup_params(p.pressure.as_ref()));
    params.extend(virtio_mem::rollup_params(&p.virtio_mem));
    params
}

/// Inserts an OOM; a key stored before counts as a duplicate, except that a complete
/// copy replaces a stored partial one (the agent completes a cut report under its
/// first key): its report, correlation and figures, keeping when it was captured and
/// received, so the row, its id and its notifications stay the same OOM's.
pub const INSERT_OOM: &str = "INSERT INTO ooms (host_id, key, captured_at_ms, received_at_ms, \
     vm_uuid, vm_name, kind, source, report_kind, report_verdict, killed_pid, killed_comm, \
     killed_anon_rss_kb, corr_verdict, balloon_held_kb, inflated_kb_before, seconds_from_inflation, \
     event_json, correlation_json, report_partial) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (host_id, key) DO UPDATE SET kind = excluded.kind, source = excluded.source, \
     report_kind = excluded.report_kind, report_verdict = excluded.report_verdict, \
     killed_pid = excluded.killed_pid, killed_comm = excluded.killed_comm, \
     killed_anon_rss_kb = excluded.killed_anon_rss_kb, corr_verdict = excluded.corr_verdict, \
     balloon_held_kb = excluded.balloon_held_kb, inflated_kb_before = excluded.inflated_kb_before, \
     seconds_from_inflation = excluded.seconds_from_inflation, event_json = excluded.event_json, \
     correlation_json = excluded.correlation_json, report_partial = 0 \
     WHERE ooms.report_partial = 1 AND excluded.report_partial = 0";

pub fn oom_params(host_id: &str, received_at_ms: i64, row: &OomRow) -> Vec<Param> {
    vec![
        Param::text(host_id),
        Param::text(row.key.as_str()),
        Param::int(row.captured_at_ms),
        Param::int(received_at_ms),
        Param::text(row.vm_uuid.as_str()),
        Param::text(row.vm_name.as_str()),
        Param::text(row.kind.as_str()),
        Param::text(row.source.as_str()),
        Param::text(row.report_kind.as_str()),
        Param::text(row.report_verdict.as_str()),
        Param::Int(row.killed_pid),
        Param::Text(row.killed_comm.clone()),
        Param::Int(row.killed_anon_rss_kb),
        Param::text(row.corr_verdict.as_str()),
        Param::Int(row.balloon_held_kb),
        Param::Int(row.inflated_kb_before),
        Param::Int(row.seconds_from_inflation),
        Param::text(row.event_json.as_str()),
        Param::text(row.correlation_json.as_str()),
        Param::int(i64::from(row.report_partial)),
    ]
}

/// A VM first seen in an OOM gets a minimal row; an inventory fills it in later.
/// A VM is (host, uuid): the same uuid on another host is another row.
pub const INSERT_VM_IF_ABSENT: &str = "INSERT INTO vms (vm_uuid, host_id, vm_name, state, \
     config_json, findings_json, updated_at_ms) VALUES (?, ?, ?, ?, NULL, NULL, ?) \
     ON CONFLICT (host_id, vm_uuid) DO NOTHING";

pub fn vm_if_absent_params(host_id: &str, row: &OomRow) -> Vec<Param> {
    vec![
        Param::text(row.vm_uuid.as_str()),
        Param::text(host_id),
        Param::text(row.vm_name.as_str()),
        // No inventory named it yet: its state is not known.
        Param::text(VmState::Unknown.as_str()),
        Param::int(row.captured_at_ms),
    ]
}

pub const INSERT_EVENT: &str = "INSERT INTO events (host_id, key, captured_at_ms, kind, vm_uuid, \
     body_json) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host_id, key) DO NOTHING";

pub fn event_params(host_id: &str, row: &EventRow) -> Vec<Param> {
    vec![
        Param::text(host_id),
        Param::text(row.key.as_str()),
        Param::int(row.captured_at_ms),
        Param::text(row.kind.as_str()),
        Param::Text(row.vm_uuid.clone()),
        Param::text(row.body_json.as_str()),
    ]
}

/// The newest inventory of the VM's own host wins (by capture time), whichever order
/// batches arrive in. A VM is (host, uuid): a host's inventory never touches the row of
/// the same uuid on another host (the host is the authenticated one, `api::ingest`).
pub const UPSERT_VM: &str = "INSERT INTO vms (vm_uuid, host_id, vm_name, state, config_json, \
     findings_json, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (host_id, vm_uuid) DO UPDATE SET vm_name = excluded.vm_name, \
     state = excluded.state, config_json = excluded.config_json, \
     findings_json = excluded.findings_json, updated_at_ms = excluded.updated_at_ms \
     WHERE excluded.updated_at_ms >= vms.updated_at_ms";

pub fn vm_params(host_id: &str, vm: &VmUpsert) -> Vec<Param> {
    vec![
        Param::text(vm.vm_uuid.as_str()),
        Param::text(host_id),
        Param::text(vm.vm_name.as_str()),
        Param::text(vm.state.as_str()),
        Param::Text(vm.config_json.clone()),
        Param::Text(vm.findings_json.clone()),
        Param::int(vm.updated_at_ms),
    ]
}

/// Queues a notification of a just-stored OOM (found by its key) for one webhook.
pub const INSERT_NOTIFY: &str = "INSERT INTO notify_outbox (oom_id, webhook, state, attempts, \
     next_attempt_ms, lease_owner, lease_until_ms, created_at_ms, updated_at_ms) \
     SELECT id, ?, 'pending', 0, ?, NULL, 0, ?, ? FROM ooms WHERE host_id = ? AND key = ? \
     ON CONFLICT (oom_id, webhook) DO NOTHING";

pub fn notify_params(
    host_id: &str,
    received_at_ms: i64,
    oom: &OomRow,
    webhook: &str,
) -> Vec<Param> {
    vec![
        Param::text(webhook),
        Param::int(received_at_ms),
        Param::int(received_at_ms),
        Param::int(received_at_ms),
        Param::text(host_id),
        Param::text(oom.key.as_str()),
    ]
}
