//! A validated batch turned into rows ([`prepare_batch`]): the correlation of each
//! OOM runs here, with the per-VM context (inventory configuration, stored rollups)
//! the caller loaded beforehand. Pure: no I/O.

use std::collections::HashMap;

use ballast_model::{Batch, Event};

use crate::correlation::{correlate, CorrelationInput, CorrelationSettings};
use crate::records::{RollupPoint, Signals, VirtioMemSums};
use crate::storage::guard::GuardRow;
use crate::storage::pressure::EpisodeRow;
use crate::storage::rows::{
    clean, EventRow, OomRow, PreparedBatch, RollupRow, VmContext, VmUpsert,
};
use crate::storage::sql::to_i64;
use crate::storage::virtio_mem::{DeviceRow, MemoryDeviceRow};

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serializing our own plain data structures cannot fail (no maps with non-string keys).
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

/// Turns a validated batch into rows; `contexts` is keyed by VM uuid, all of the
/// batch's own host (`batch.host_id`, checked against the token before this runs).
pub fn prepare_batch(
    batch: Batch,
    received_at_ms: i64,
    contexts: &HashMap<String, VmContext>,
    settings: &CorrelationSettings,
) -> PreparedBatch {
    let mut prepared = PreparedBatch {
        host_id: batch.host_id,
        received_at_ms,
        ..PreparedBatch::default()
    };
    let empty = VmContext::default();
    for envelope in batch.events {
        let key = clean(&envelope.key);
        let at = envelope.captured_at_ms;
        let kind = envelope.event.kind_name().to_string();
        match envelope.event {
            Event::Rollup(rollup) => prepared.rollups.push(RollupRow {
                key,
                captured_at_ms: at,
                vm_uuid: rollup.vm.uuid.clone(),
                vm_name: clean(&rollup.vm.name),
                point: RollupPoint {
                    period_start_ms: rollup.period_start_ms,
                    period_secs: i64::from(rollup.period_secs),
                    samples: i64::from(rollup.samples),
                    maximum_kib: rollup.maximum_kib,
                    actual_kib: rollup.actual_kib,
                    available_kib: rollup.available_kib,
                    usable_kib: rollup.usable_kib,
                    unused_kib: rollup.unused_kib,
                    rss_kib: rollup.rss_kib,
                    oom_kills: rollup.oom_kills,
                    alloc_stalls: rollup.alloc_stalls,
                    stale: rollup.stale,
                    host_total_kib: rollup.host.as_ref().and_then(|h| h.total_kib),
                    host_available_kib: rollup.host.as_ref().and_then(|h| h.available_kib),
                    signals: Signals::of(rollup.pressure.as_ref()),
                    pressure: rollup.pressure.clone(),
                    virtio_mem: VirtioMemSums::of(&rollup.virtio_mem),
                    devices: Vec::new(),
                },
                devices: DeviceRow::of_rollup(&rollup.virtio_mem),
            }),
            Event::Oom(oom) => {
                let context = contexts.get(&oom.vm.uuid).unwrap_or(&empty);
                let correlation = correlate(
                    &CorrelationInput {
                        oom_at_ms: at,
                        event: &oom,
                        vm_config: context.config.as_ref(),
                        rollups: &context.rollups,
                    },
                    settings,
                );
                let killed = oom.report.killed.as_ref();
                prepared.ooms.push(OomRow {
                    key,
                    captured_at_ms: at,
                    vm_uuid: oom.vm.uuid.clone(),
                    vm_name: clean(&oom.vm.name),
                    kind: oom.kind,
                    source: to_json(&oom.source).trim_matches('"').to_string(),
                    report_kind: oom.report.kind,
                    report_verdict: oom.analysis.verdict,
                    killed_pid: killed.map(|k| i64::from(k.pid)),
                    killed_comm: killed.map(|k| clean(&k.comm)),
                    killed_anon_rss_kb: killed.and_then(|k| k.anon_rss_kb).map(to_i64),
                    corr_verdict: correlation.verdict,
                    balloon_held_kb: correlation.balloon_held_kb.map(to_i64),
                    inflated_kb_before: correlation.inflated_kb_before.map(to_i64),
                    seconds_from_inflation: correlation.seconds_from_inflation,
                    event_json: to_json(&oom),
                    correlation_json: to_json(&correlation),
                    report_partial: oom.report.partial,
                });
            }
            Event::Inventory(inventory) => {
                let vms = inventory
                    .vms
                    .iter()
                    .map(|vm| VmUpsert {
                        vm_uuid: vm.vm.uuid.clone(),
                        vm_name: clean(&vm.vm.name),
                        state: vm.state,
                        config_json: Some(to_json(&vm.config)),
                        findings_json: Some(to_json(&vm.findings)),
                        updated_at_ms: at,
                    })
                    .collect();
                prepared.events.push(EventRow {
                    key,
                    captured_at_ms: at,
                    kind,
                    vm_uuid: None,
                    body_json: to_json(&inventory),
                    vms,
                    episode: None,
                    guard: None,
                    memory_device: None,
                });
            }
            Event::Pressure(episode) => {
                let row = EpisodeRow::of(&episode, clean(&episode.vm.name));
                prepared.events.push(EventRow {
                    key,
                    captured_at_ms: at,
                    kind,
                    vm_uuid: Some(episode.vm.uuid.clone()),
                    body_json: to_json(&Event::Pressure(episode)),
                    vms: Vec::new(),
                    episode: Some(row),
                    guard: None,
                    memory_device: None,
                });
            }
            Event::Guard(action) => {
                let row = GuardRow::of(&action, clean(&action.vm.name), clean(&action.detail));
                prepared.events.push(EventRow {
                    key,
                    captured_at_ms: at,
                    kind,
                    vm_uuid: Some(action.vm.uuid.clone()),
                    body_json: to_json(&Event::Guard(action)),
                    vms: Vec::new(),
                    episode: None,
                    guard: Some(row),
                    memory_device: None,
                });
            }
            Event::MemoryDevice(change) => {
                let row = MemoryDeviceRow::of(&change, at);
                prepared.events.push(EventRow {
                    key,
                    captured_at_ms: at,
                    kind,
                    vm_uuid: Some(change.vm.uuid.clone()),
                    body_json: to_json(&Event::MemoryDevice(change)),
                    vms: Vec::new(),
                    episode: None,
                    guard: None,
                    memory_device: Some(row),
                });
            }
            other => {
                let vm_uuid = match &other {
                    Event::BalloonChange(change) => Some(change.vm.uuid.clone()),
                    Event::NearMiss(miss) => Some(miss.vm.uuid.clone()),
                    _ => None,
                };
                prepared.events.push(EventRow {
                    key,
                    captured_at_ms: at,
                    kind,
                    vm_uuid,
                    body_json: to_json(&other),
                    vms: Vec::new(),
                    episode: None,
                    guard: None,
                    memory_device: None,
                });
            }
        }
    }
    prepared
}
