//! Builders shared by the collector's integration tests.

pub mod client;
#[path = "../../../src/test_fixtures.rs"]
pub mod fixtures;
pub mod identity;
pub mod server;
pub mod suite;
pub mod virtio_mem;

use std::collections::HashMap;

use ballast_collector::correlation::CorrelationSettings;
use ballast_collector::ingest::prepare_batch;
use ballast_collector::storage::PreparedBatch;
use ballast_model::{
    BalloonRollup, Batch, Envelope, EpisodePhase, Event, GuardAction, GuardMode, GuardOutcome,
    Inventory, MinMaxLast, OomEvent, PressureEpisode, PressureRollup, PressureSignal,
    PressureSnapshot, RiskLevel, SignalSource, VmConfig, VmInventory, VmRef, SCHEMA_VERSION,
};

pub use fixtures::{lab_inflated, oom_at_ms, tor_flat, LAB_UUID, MIB, TOR_UUID};

pub fn batch(host: &str, events: Vec<Envelope>) -> Batch {
    Batch {
        schema_version: SCHEMA_VERSION,
        host_id: host.into(),
        agent_version: "0.1.0".into(),
        events,
    }
}

pub fn rollup(key: &str, uuid: &str, period_start_ms: i64, actual_kib: u64) -> Envelope {
    Envelope {
        key: key.into(),
        captured_at_ms: period_start_ms + 60_000,
        event: Event::Rollup(Box::new(BalloonRollup {
            vm: VmRef {
                uuid: uuid.into(),
                name: format!("vm-{}", &uuid[uuid.len() - 3..]),
            },
            period_start_ms,
            period_secs: 60,
            samples: 6,
            maximum_kib: Some(512 * MIB),
            actual_kib: MinMaxLast {
                min: Some(actual_kib),
                max: Some(actual_kib),
                last: Some(actual_kib),
            },
            usable_kib: MinMaxLast {
                min: Some(actual_kib / 5),
                max: Some(actual_kib / 4),
                last: Some(actual_kib / 4),
            },
            alloc_stalls: Some(7),
            ..BalloonRollup::default()
        })),
    }
}

/// A rollup's pressure: stalls at `stalls_per_s`, PSI some at `psi_some`, risk `risk`.
pub fn pressure(stalls_per_s: f64, psi_some: f64, risk: RiskLevel) -> PressureRollup {
    PressureRollup {
        sources: vec![SignalSource::BalloonCounters, SignalSource::GuestPsi],
        peak: PressureSnapshot {
            alloc_stalls_per_s: Some(stalls_per_s),
            direct_scan_kib_per_s: Some(stalls_per_s * 64.0),
            available_slope_kib_per_s: Some(-stalls_per_s * 100.0),
            psi_some_avg10: Some(psi_some),
            psi_full_avg10: Some(psi_some / 2.0),
            psi_some_total_us: Some((psi_some * 1_000_000.0) as u64),
            ..PressureSnapshot::default()
        },
        risk,
    }
}

/// `rollup` carrying `pressure`.
pub fn rollup_with_pressure(
    key: &str,
    uuid: &str,
    period_start_ms: i64,
    actual_kib: u64,
    pressure: PressureRollup,
) -> Envelope {
    let mut envelope = rollup(key, uuid, period_start_ms, actual_kib);
    if let Event::Rollup(inner) = &mut envelope.event {
        inner.pressure = Some(pressure);
    }
    envelope
}

/// One phase of a pressure episode of `uuid` that started at `started_at_ms`: the
/// balloon at its 128 MiB floor, the guest short of `deficit_kib`.
pub fn episode(
    key: &str,
    uuid: &str,
    phase: EpisodePhase,
    started_at_ms: i64,
    at_ms: i64,
    level: RiskLevel,
    deficit_kib: u64,
) -> Envelope {
    Envelope {
        key: key.into(),
        captured_at_ms: at_ms,
        event: Event::Pressure(Box::new(PressureEpisode {
            vm: VmRef {
                uuid: uuid.into(),
                name: format!("vm-{}", &uuid[uuid.len() - 3..]),
            },
            phase,
            started_at_ms,
            at_ms,
            level,
            drivers: if level == RiskLevel::Critical {
                vec![PressureSignal::PsiFull, PressureSignal::AllocStalls]
            } else {
                vec![PressureSignal::AllocStalls]
            },
            exhaustion_secs: (phase != EpisodePhase::End).then_some(90),
            signals: pressure(
                if phase == EpisodePhase::End {
                    0.0
                } else {
                    25.0
                },
                if level == RiskLevel::Critical {
                    60.0
                } else {
                    20.0
                },
                level,
            )
            .peak,
            actual_kib: Some(128 * MIB),
            maximum_kib: Some(512 * MIB),
            balloon_floor_kib: Some(128 * MIB),
            at_balloon_floor: true,
            deficit_kib: Some(deficit_kib),
        })),
    }
}

/// A guard decision of `uuid`'s guard at `at_ms` in `mode` with `outcome`: the balloon
/// at 128 MiB of 512, a step to `target_kib`, an episode started a minute before.
pub fn guard_action(
    key: &str,
    uuid: &str,
    at_ms: i64,
    mode: GuardMode,
    outcome: GuardOutcome,
    target_kib: u64,
) -> Envelope {
    Envelope {
        key: key.into(),
        captured_at_ms: at_ms,
        event: Event::Guard(Box::new(GuardAction {
            vm: VmRef {
                uuid: uuid.into(),
                name: format!("vm-{}", &uuid[uuid.len() - 3..]),
            },
            mode,
            outcome,
            at_ms,
            episode_started_at_ms: Some(at_ms - 60_000),
            level: RiskLevel::Critical,
            drivers: vec![PressureSignal::PsiFull, PressureSignal::AllocStalls],
            signals: pressure(25.0, 60.0, RiskLevel::Critical).peak,
            exhaustion_secs: Some(40),
            deficit_kib: Some(target_kib.saturating_sub(128 * MIB)),
            actual_before_kib: Some(128 * MIB),
            target_kib: Some(target_kib),
            maximum_kib: Some(512 * MIB),
            host_available_kib: Some(4096 * MIB),
            host_reserve_kib: Some(1024 * MIB),
            floor_before_kib: Some(128 * MIB),
            floor_after_kib: (outcome == GuardOutcome::OverriddenByHost).then_some(target_kib),
            detail: format!("{} <b>step</b>", outcome.as_str()),
        })),
    }
}

/// The lab guest's configuration as its agent's inventory reports it: 512 MiB with
/// a 128 MiB balloon floor, stats every 10 s, no deflate-on-oom, a guest agent
/// channel and a captured serial console.
pub fn lab_config() -> VmConfig {
    VmConfig {
        memory_kib: Some(512 * MIB),
        balloon_floor_kib: Some(128 * MIB),
        balloon_present: true,
        stats_period_secs: Some(10),
        deflate_on_oom: Some(false),
        guest_agent_channel: true,
        serial_log: true,
        ..VmConfig::default()
    }
}

pub fn oom(key: &str, at_ms: i64, event: OomEvent) -> Envelope {
    Envelope {
        key: key.into(),
        captured_at_ms: at_ms,
        event: Event::Oom(Box::new(event)),
    }
}

pub fn inventory(key: &str, at_ms: i64, vms: &[(&str, &str)]) -> Envelope {
    Envelope {
        key: key.into(),
        captured_at_ms: at_ms,
        event: Event::Inventory(Inventory {
            vms: vms
                .iter()
                .map(|(uuid, name)| VmInventory {
                    openstack: Default::default(),
                    vm: VmRef {
                        uuid: (*uuid).into(),
                        name: (*name).into(),
                    },
                    state: ballast_model::VmState::Running,
                    config: VmConfig {
                        memory_kib: Some(512 * MIB),
                        balloon_floor_kib: Some(256 * MIB),
                        balloon_present: true,
                        deflate_on_oom: Some(false),
                        ..VmConfig::default()
                    },
                    findings: vec!["deflate_on_oom_off".into()],
                })
                .collect(),
        }),
    }
}

/// A throwaway PostgreSQL cluster, or None (a recorded skip) where the server is
/// not installed and the run may skip it (never in CI).
pub fn pg_cluster() -> Option<ballast_testpg::TestPg> {
    ballast_testpg::TestPg::start_or_skip()
}

/// A batch as the ingest handler would hand it to the store (no stored context).
pub fn prepared(batch: Batch) -> PreparedBatch {
    prepare_batch(
        batch,
        oom_at_ms() + 5_000,
        &HashMap::new(),
        &CorrelationSettings::default(),
    )
}
