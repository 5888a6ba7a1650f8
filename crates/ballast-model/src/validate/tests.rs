//! Unit tests of `validate`.

use super::*;
use crate::events::{BalloonChange, BalloonRollup, Envelope, Inventory, VmInventory, VmRef};
use crate::PressureSnapshot;

/// The collector's clock in these tests: a second after the events were captured.
const NOW: i64 = 1_795_658_494_123;

fn batch(events: Vec<Envelope>) -> Batch {
    Batch {
        schema_version: SCHEMA_VERSION,
        host_id: "pve1".into(),
        agent_version: "0.1.0".into(),
        events,
    }
}

fn change(uuid: &str) -> Envelope {
    Envelope {
        key: "pve1/bc/1".into(),
        captured_at_ms: 1_795_658_493_123,
        event: Event::BalloonChange(BalloonChange {
            vm: VmRef {
                uuid: uuid.into(),
                name: "web1".into(),
            },
            actual_kib: 204_800,
            previous_kib: Some(524_288),
        }),
    }
}

#[test]
fn a_good_batch_passes() {
    let good = batch(vec![change("3f2a0c1e-0000-4000-8000-000000000001")]);
    assert_eq!(validate(&good, &Limits::default(), NOW), Ok(()));
}

#[test]
fn bad_fields_are_named_by_path() {
    let bad = batch(vec![
        change("3f2a0c1e-0000-4000-8000-000000000001"),
        change("<script>"),
    ]);
    let error = validate(&bad, &Limits::default(), NOW).expect_err("bad uuid");
    assert_eq!(error.path, "events[1].vm.uuid");
    let mut future = batch(Vec::new());
    future.schema_version = SCHEMA_VERSION + 1;
    assert_eq!(
        validate(&future, &Limits::default(), NOW).map_err(|e| e.path),
        Err("schema_version".into())
    );
    let mut seconds = batch(vec![change("3f2a")]);
    seconds.events[0].captured_at_ms = 1_795_658_493;
    assert_eq!(
        validate(&seconds, &Limits::default(), NOW).map_err(|e| e.path),
        Err("events[0].captured_at_ms".into())
    );
}

#[test]
fn the_wire_form_is_tagged_and_flat() {
    let json = serde_json::to_value(change("3f2a")).expect("serializes");
    assert_eq!(json["type"], "balloon_change");
    assert_eq!(json["vm"]["name"], "web1");
    let back: Envelope = serde_json::from_value(json).expect("reads back");
    assert_eq!(back, change("3f2a"));
}

#[test]
fn unknown_fields_from_newer_agents_are_ignored() {
    let mut json = serde_json::to_value(change("3f2a")).expect("serializes");
    json["added_in_v2"] = serde_json::json!(true);
    assert!(serde_json::from_value::<Envelope>(json).is_ok());
}

#[test]
fn times_outside_the_collectors_window_are_refused_by_field() {
    let limits = Limits::default();
    let mut ahead = batch(vec![change("3f2a")]);
    ahead.events[0].captured_at_ms = NOW + 2 * 86_400_000;
    let error = validate(&ahead, &limits, NOW).expect_err("two days ahead");
    assert_eq!(error.path, "events[0].captured_at_ms");
    assert!(error.message.contains("clock"), "{}", error.message);
    let mut old = batch(vec![change("3f2a")]);
    old.events[0].captured_at_ms = NOW - 500 * 86_400_000;
    assert_eq!(
        validate(&old, &limits, NOW).map_err(|e| e.path),
        Err("events[0].captured_at_ms".into())
    );
    // The same batch is fine on the clock it was captured by: the window moves
    // with the collector's clock, nothing is tied to a date.
    assert_eq!(validate(&old, &limits, NOW - 499 * 86_400_000), Ok(()));
    let mut rollup = batch(vec![Envelope {
        key: "pve1/rollup/1".into(),
        captured_at_ms: NOW,
        event: Event::Rollup(Box::new(BalloonRollup {
            vm: VmRef {
                uuid: "3f2a".into(),
                name: "web1".into(),
            },
            period_start_ms: NOW + 3 * 86_400_000,
            period_secs: 60,
            ..BalloonRollup::default()
        })),
    }]);
    assert_eq!(
        validate(&rollup, &limits, NOW).map_err(|e| e.path),
        Err("events[0].period_start_ms".into())
    );
    if let Event::Rollup(inner) = &mut rollup.events[0].event {
        inner.period_start_ms = NOW - 60_000;
        inner.usable_kib.max = Some(u64::MAX);
    }
    let error = validate(&rollup, &limits, NOW).expect_err("beyond memory");
    assert_eq!(error.path, "events[0].usable_kib.max");
}

#[test]
fn sizes_beyond_any_machine_are_refused_by_field() {
    let mut huge = batch(vec![change("3f2a")]);
    if let Event::BalloonChange(inner) = &mut huge.events[0].event {
        inner.previous_kib = Some(MAX_MEMORY_KIB + 1);
    }
    assert_eq!(
        validate(&huge, &Limits::default(), NOW).map_err(|e| e.path),
        Err("events[0].previous_kib".into())
    );
    if let Event::BalloonChange(inner) = &mut huge.events[0].event {
        inner.previous_kib = Some(MAX_MEMORY_KIB);
    }
    assert_eq!(validate(&huge, &Limits::default(), NOW), Ok(()));
}

#[test]
fn a_batch_names_at_most_max_distinct_vms_beside_its_inventory() {
    let limits = Limits::default();
    let uuid = |index: usize| format!("00000000-0000-4000-8000-{index:012}");
    let changes =
        |count: usize| -> Vec<Envelope> { (0..count).map(|i| change(&uuid(i))).collect() };
    assert_eq!(
        validate(&batch(changes(limits.max_distinct_vms)), &limits, NOW),
        Ok(())
    );
    let error = validate(&batch(changes(limits.max_distinct_vms + 1)), &limits, NOW)
        .expect_err("one VM too many");
    assert_eq!(
        error.path,
        format!("events[{}].vm.uuid", limits.max_distinct_vms)
    );
    // Many events about few VMs are fine, and so is a whole host's inventory.
    let mut same_vm = changes(1);
    same_vm.extend((0..limits.max_events_per_batch - 2).map(|_| change(&uuid(0))));
    same_vm.push(Envelope {
        key: "pve1/inventory/1".into(),
        captured_at_ms: NOW,
        event: Event::Inventory(Inventory {
            vms: (0..limits.max_inventory_vms)
                .map(|i| VmInventory {
                    openstack: Default::default(),
                    vm: VmRef {
                        uuid: uuid(i),
                        name: format!("vm{i}"),
                    },
                    state: crate::VmState::Running,
                    config: crate::events::VmConfig::default(),
                    findings: Vec::new(),
                })
                .collect(),
        }),
    });
    assert_eq!(validate(&batch(same_vm), &limits, NOW), Ok(()));
}

fn episode(at_ms: i64) -> crate::PressureEpisode {
    crate::PressureEpisode {
        vm: VmRef {
            uuid: "3f2a0c1e-0000-4000-8000-000000000001".into(),
            name: "web1".into(),
        },
        phase: EpisodePhase::Peak,
        started_at_ms: at_ms - 30_000,
        at_ms,
        level: RiskLevel::Critical,
        drivers: vec![PressureSignal::AllocStalls, PressureSignal::PsiFull],
        exhaustion_secs: Some(40),
        signals: PressureSnapshot {
            alloc_stalls_per_s: Some(12.5),
            direct_scan_kib_per_s: Some(40_960.0),
            available_slope_kib_per_s: Some(-2_048.0),
            psi_some_avg10: Some(35.0),
            psi_full_avg10: Some(12.0),
            psi_some_total_us: Some(9_000_000),
            ..PressureSnapshot::default()
        },
        actual_kib: Some(524_288),
        maximum_kib: Some(2_097_152),
        balloon_floor_kib: Some(524_288),
        at_balloon_floor: true,
        deficit_kib: Some(131_072),
    }
}

fn episode_batch(episode: crate::PressureEpisode) -> Batch {
    batch(vec![Envelope {
        key: "pve1/pressure/1".into(),
        captured_at_ms: NOW - 1_000,
        event: Event::Pressure(Box::new(episode)),
    }])
}

/// The path of the first bad field of `episode` edited by `edit`.
fn episode_error(edit: impl FnOnce(&mut crate::PressureEpisode)) -> String {
    let mut bad = episode(NOW - 1_000);
    edit(&mut bad);
    match validate(&episode_batch(bad), &Limits::default(), NOW) {
        Ok(()) => "accepted".into(),
        Err(error) => error.path,
    }
}

#[test]
fn a_bounded_snapshot_is_always_accepted_and_keeps_what_was_valid() {
    let hostile = PressureSnapshot {
        alloc_stalls_per_s: Some(1e11),
        direct_scan_kib_per_s: Some(f64::INFINITY),
        direct_reclaim_kib_per_s: Some(-1.0),
        async_scan_kib_per_s: Some(f64::NAN),
        async_reclaim_kib_per_s: Some(2.0 * MAX_KIB_PER_S),
        major_faults_per_s: Some(7.0),
        swap_in_kib_per_s: Some(MAX_KIB_PER_S),
        available_slope_kib_per_s: Some(-2.0 * MAX_KIB_PER_S),
        psi_some_avg10: Some(100.5),
        psi_full_avg10: Some(100.0),
        psi_some_total_us: Some(u64::MAX),
        psi_full_total_us: Some(MAX_PSI_TOTAL_US),
    };
    assert_eq!(
        episode_error(|e| e.signals = hostile),
        "events[0].signals.alloc_stalls_per_s"
    );
    assert_eq!(episode_error(|e| e.signals = hostile.bounded()), "accepted");
    let bounded = hostile.bounded();
    assert_eq!(
        bounded,
        PressureSnapshot {
            major_faults_per_s: Some(7.0),
            swap_in_kib_per_s: Some(MAX_KIB_PER_S),
            psi_full_avg10: Some(100.0),
            psi_full_total_us: Some(MAX_PSI_TOTAL_US),
            ..PressureSnapshot::default()
        }
    );
}

fn rollup_with(pressure: PressureRollup) -> Batch {
    batch(vec![Envelope {
        key: "pve1/rollup/1".into(),
        captured_at_ms: NOW - 1_000,
        event: Event::Rollup(Box::new(BalloonRollup {
            vm: VmRef {
                uuid: "3f2a".into(),
                name: "web1".into(),
            },
            period_start_ms: NOW - 61_000,
            period_secs: 60,
            pressure: Some(pressure),
            ..BalloonRollup::default()
        })),
    }])
}

fn rollup_error(edit: impl FnOnce(&mut PressureRollup)) -> String {
    let mut pressure = PressureRollup {
        sources: vec![SignalSource::BalloonCounters, SignalSource::GuestPsi],
        peak: episode(NOW).signals,
        risk: RiskLevel::Elevated,
    };
    edit(&mut pressure);
    match validate(&rollup_with(pressure), &Limits::default(), NOW) {
        Ok(()) => "accepted".into(),
        Err(error) => error.path,
    }
}

#[test]
fn a_whole_pressure_episode_and_rollup_pass() {
    assert_eq!(episode_error(|_| {}), "accepted");
    assert_eq!(rollup_error(|_| {}), "accepted");
    // An episode's phase may fall at its start, and a VM may have no signal source.
    assert_eq!(
        episode_error(|e| {
            e.started_at_ms = e.at_ms;
            e.drivers.clear();
            e.signals = PressureSnapshot::default();
        }),
        "accepted"
    );
    assert_eq!(rollup_error(|p| p.sources.clear()), "accepted");
}

#[test]
fn pressure_rates_must_be_finite() {
    assert_eq!(
        episode_error(|e| e.signals.alloc_stalls_per_s = Some(f64::NAN)),
        "events[0].signals.alloc_stalls_per_s"
    );
    assert_eq!(
        rollup_error(|p| p.peak.swap_in_kib_per_s = Some(f64::INFINITY)),
        "events[0].pressure.peak.swap_in_kib_per_s"
    );
    assert_eq!(
        episode_error(|e| e.signals.available_slope_kib_per_s = Some(f64::NEG_INFINITY)),
        "events[0].signals.available_slope_kib_per_s"
    );
}

#[test]
fn pressure_rates_are_non_negative_except_the_slope() {
    assert_eq!(
        episode_error(|e| e.signals.major_faults_per_s = Some(-1.0)),
        "events[0].signals.major_faults_per_s"
    );
    assert_eq!(
        rollup_error(|p| p.peak.direct_reclaim_kib_per_s = Some(-0.5)),
        "events[0].pressure.peak.direct_reclaim_kib_per_s"
    );
    assert_eq!(
        episode_error(|e| e.signals.available_slope_kib_per_s = Some(-1e6)),
        "accepted",
        "MemAvailable falling is what the slope is for"
    );
}

#[test]
fn pressure_rates_are_bounded() {
    assert_eq!(
        episode_error(|e| e.signals.alloc_stalls_per_s = Some(MAX_EVENTS_PER_S)),
        "accepted"
    );
    assert_eq!(
        episode_error(|e| e.signals.alloc_stalls_per_s = Some(MAX_EVENTS_PER_S * 2.0)),
        "events[0].signals.alloc_stalls_per_s"
    );
    assert_eq!(
        rollup_error(|p| p.peak.async_scan_kib_per_s = Some(MAX_KIB_PER_S * 2.0)),
        "events[0].pressure.peak.async_scan_kib_per_s"
    );
    assert_eq!(
        episode_error(|e| e.signals.available_slope_kib_per_s = Some(-MAX_KIB_PER_S * 2.0)),
        "events[0].signals.available_slope_kib_per_s"
    );
}

#[test]
fn psi_figures_are_percentages_and_bounded_totals() {
    assert_eq!(
        episode_error(|e| e.signals.psi_some_avg10 = Some(100.0)),
        "accepted"
    );
    assert_eq!(
        episode_error(|e| e.signals.psi_some_avg10 = Some(100.5)),
        "events[0].signals.psi_some_avg10"
    );
    assert_eq!(
        rollup_error(|p| p.peak.psi_full_avg10 = Some(-3.0)),
        "events[0].pressure.peak.psi_full_avg10"
    );
    assert_eq!(
        episode_error(|e| e.signals.psi_full_total_us = Some(u64::MAX)),
        "events[0].signals.psi_full_total_us"
    );
}

#[test]
fn episode_times_lie_in_the_window_and_in_order() {
    assert_eq!(
        episode_error(|e| e.at_ms = NOW + 2 * 86_400_000),
        "events[0].at_ms"
    );
    assert_eq!(
        episode_error(|e| e.started_at_ms = NOW - 500 * 86_400_000),
        "events[0].started_at_ms"
    );
    assert_eq!(
        episode_error(|e| e.started_at_ms = e.at_ms + 1),
        "events[0].at_ms"
    );
}

#[test]
fn pressure_vocabularies_accept_only_their_names() {
    assert_eq!(
        episode_error(|e| e.phase = EpisodePhase::Unknown),
        "events[0].phase"
    );
    assert_eq!(
        episode_error(|e| e.level = RiskLevel::Unknown),
        "events[0].level"
    );
    assert_eq!(
        episode_error(|e| e.drivers.push(PressureSignal::Unknown)),
        "events[0].drivers[2]"
    );
    assert_eq!(
        rollup_error(|p| p.risk = RiskLevel::Unknown),
        "events[0].pressure.risk"
    );
    assert_eq!(
        rollup_error(|p| p.sources.push(SignalSource::Unknown)),
        "events[0].pressure.sources[2]"
    );
    // A newer agent's name decodes as unknown and is refused by its path.
    let mut json = serde_json::to_value(episode_batch(episode(NOW - 1_000))).expect("json");
    json["events"][0]["drivers"][0] = serde_json::json!("gpu_stalls");
    let decoded: Batch = serde_json::from_value(json).expect("decodes");
    assert_eq!(
        validate(&decoded, &Limits::default(), NOW).map_err(|e| e.path),
        Err("events[0].drivers[0]".into())
    );
}

#[test]
fn pressure_lists_are_bounded_and_without_repeats() {
    assert_eq!(
        episode_error(|e| e.drivers.push(PressureSignal::AllocStalls)),
        "events[0].drivers[2]"
    );
    assert_eq!(
        episode_error(|e| e.drivers = vec![PressureSignal::SwapIn; 300]),
        "events[0].drivers"
    );
    assert_eq!(
        rollup_error(|p| p.sources.push(SignalSource::GuestPsi)),
        "events[0].pressure.sources[2]"
    );
    assert_eq!(
        rollup_error(|p| p.sources = vec![SignalSource::BalloonStats; 4]),
        "events[0].pressure.sources"
    );
}

#[test]
fn episode_figures_are_bounded() {
    assert_eq!(
        episode_error(|e| e.exhaustion_secs = Some(MAX_EXHAUSTION_SECS)),
        "accepted"
    );
    assert_eq!(
        episode_error(|e| e.exhaustion_secs = Some(u64::MAX)),
        "events[0].exhaustion_secs"
    );
    assert_eq!(
        episode_error(|e| e.actual_kib = Some(MAX_MEMORY_KIB + 1)),
        "events[0].actual_kib"
    );
    assert_eq!(
        episode_error(|e| e.maximum_kib = Some(u64::MAX)),
        "events[0].maximum_kib"
    );
    assert_eq!(
        episode_error(|e| e.balloon_floor_kib = Some(u64::MAX)),
        "events[0].balloon_floor_kib"
    );
    assert_eq!(
        episode_error(|e| e.deficit_kib = Some(u64::MAX)),
        "events[0].deficit_kib"
    );
    assert_eq!(
        episode_error(|e| e.vm.uuid = "<img>".into()),
        "events[0].vm.uuid"
    );
    assert_eq!(
        episode_error(|e| e.vm.name = "x".repeat(600)),
        "events[0].vm.name"
    );
}

fn guard_action(at_ms: i64) -> crate::GuardAction {
    let episode = episode(at_ms);
    crate::GuardAction {
        vm: episode.vm,
        mode: GuardMode::Act,
        outcome: GuardOutcome::Deflated,
        at_ms,
        episode_started_at_ms: Some(episode.started_at_ms),
        level: RiskLevel::Critical,
        drivers: episode.drivers,
        signals: episode.signals,
        exhaustion_secs: Some(40),
        deficit_kib: Some(262_144),
        actual_before_kib: Some(524_288),
        target_kib: Some(786_432),
        maximum_kib: Some(2_097_152),
        host_available_kib: Some(8_388_608),
        host_reserve_kib: Some(1_048_576),
        floor_before_kib: Some(524_288),
        floor_after_kib: None,
        detail: "deflated 256 MiB".into(),
    }
}

/// The path of the first bad field of a guard action edited by `edit`.
fn guard_error(edit: impl FnOnce(&mut crate::GuardAction)) -> String {
    let mut action = guard_action(NOW - 1_000);
    edit(&mut action);
    let batch = batch(vec![Envelope {
        key: "pve1/guard/1".into(),
        captured_at_ms: NOW - 1_000,
        event: Event::Guard(Box::new(action)),
    }]);
    match validate(&batch, &Limits::default(), NOW) {
        Ok(()) => "accepted".into(),
        Err(error) => error.path,
    }
}

#[test]
fn a_whole_guard_action_passes_and_its_optional_figures_may_be_missing() {
    assert_eq!(guard_error(|_| {}), "accepted");
    assert_eq!(
        guard_error(|a| {
            a.mode = GuardMode::Observe;
            a.outcome = GuardOutcome::HostHasNothing;
            a.episode_started_at_ms = None;
            a.drivers.clear();
            a.signals = PressureSnapshot::default();
            a.exhaustion_secs = None;
            a.deficit_kib = None;
            a.actual_before_kib = None;
            a.target_kib = None;
            a.maximum_kib = None;
            a.host_available_kib = None;
            a.host_reserve_kib = None;
            a.floor_before_kib = None;
            a.detail.clear();
        }),
        "accepted"
    );
    // The action may be taken at the very poll its episode started.
    assert_eq!(
        guard_error(|a| a.episode_started_at_ms = Some(a.at_ms)),
        "accepted"
    );
}

#[test]
fn guard_vocabularies_accept_only_their_names_and_an_outcome_its_mode() {
    assert_eq!(
        guard_error(|a| a.mode = GuardMode::Unknown),
        "events[0].mode"
    );
    assert_eq!(guard_error(|a| a.mode = GuardMode::Off), "events[0].mode");
    assert_eq!(
        guard_error(|a| a.outcome = GuardOutcome::Unknown),
        "events[0].outcome"
    );
    assert_eq!(
        guard_error(|a| a.level = RiskLevel::Unknown),
        "events[0].level"
    );
    assert_eq!(
        guard_error(|a| a.drivers.push(PressureSignal::Unknown)),
        "events[0].drivers[2]"
    );
    assert_eq!(
        guard_error(|a| a.drivers.push(PressureSignal::AllocStalls)),
        "events[0].drivers[2]"
    );
    assert_eq!(
        guard_error(|a| a.drivers = vec![PressureSignal::SwapIn; 300]),
        "events[0].drivers"
    );
    // observe never changes a balloon; act never merely would.
    assert_eq!(
        guard_error(|a| a.mode = GuardMode::Observe),
        "events[0].outcome"
    );
    assert_eq!(
        guard_error(|a| {
            a.mode = GuardMode::Observe;
            a.outcome = GuardOutcome::FloorRaised;
        }),
        "events[0].outcome"
    );
    assert_eq!(
        guard_error(|a| a.outcome = GuardOutcome::WouldDeflate),
        "events[0].outcome"
    );
    for outcome in [
        GuardOutcome::OverriddenByHost,
        GuardOutcome::HostHasNothing,
        GuardOutcome::BeyondMaximum,
        GuardOutcome::RateLimited,
        GuardOutcome::Failed,
    ] {
        for mode in [GuardMode::Observe, GuardMode::Act] {
            assert_eq!(
                guard_error(|a| {
                    a.mode = mode;
                    a.outcome = outcome;
                }),
                "accepted",
                "{outcome:?} in {mode:?}"
            );
        }
    }
    assert_eq!(
        guard_error(|a| {
            a.mode = GuardMode::Observe;
            a.outcome = GuardOutcome::WouldDeflate;
        }),
        "accepted"
    );
    // A newer agent's outcome decodes as unknown and is refused by its path.
    let good = batch(vec![Envelope {
        key: "pve1/guard/1".into(),
        captured_at_ms: NOW - 1_000,
        event: Event::Guard(Box::new(guard_action(NOW - 1_000))),
    }]);
    let mut json = serde_json::to_value(good).expect("json");
    json["events"][0]["outcome"] = serde_json::json!("vaporised");
    let decoded: Batch = serde_json::from_value(json).expect("decodes");
    assert_eq!(
        validate(&decoded, &Limits::default(), NOW).map_err(|e| e.path),
        Err("events[0].outcome".into())
    );
}

#[test]
fn guard_times_lie_in_the_window_and_the_episode_before_the_action() {
    assert_eq!(
        guard_error(|a| a.at_ms = NOW + 2 * 86_400_000),
        "events[0].at_ms"
    );
    assert_eq!(
        guard_error(|a| a.at_ms = NOW - 500 * 86_400_000),
        "events[0].at_ms"
    );
    assert_eq!(
        guard_error(|a| a.episode_started_at_ms = Some(NOW - 500 * 86_400_000)),
        "events[0].episode_started_at_ms"
    );
    assert_eq!(
        guard_error(|a| a.episode_started_at_ms = Some(a.at_ms + 1)),
        "events[0].episode_started_at_ms"
    );
}

#[test]
fn guard_figures_are_bounded_by_field() {
    assert_eq!(
        guard_error(|a| a.signals.psi_full_avg10 = Some(f64::NAN)),
        "events[0].signals.psi_full_avg10"
    );
    assert_eq!(
        guard_error(|a| a.signals.direct_scan_kib_per_s = Some(-1.0)),
        "events[0].signals.direct_scan_kib_per_s"
    );
    assert_eq!(
        guard_error(|a| a.exhaustion_secs = Some(MAX_EXHAUSTION_SECS)),
        "accepted"
    );
    assert_eq!(
        guard_error(|a| a.exhaustion_secs = Some(MAX_EXHAUSTION_SECS + 1)),
        "events[0].exhaustion_secs"
    );
    type Slot = fn(&mut crate::GuardAction) -> &mut Option<u64>;
    let fields: [(&str, Slot); 8] = [
        ("deficit_kib", |a| &mut a.deficit_kib),
        ("actual_before_kib", |a| &mut a.actual_before_kib),
        ("target_kib", |a| &mut a.target_kib),
        ("maximum_kib", |a| &mut a.maximum_kib),
        ("host_available_kib", |a| &mut a.host_available_kib),
        ("host_reserve_kib", |a| &mut a.host_reserve_kib),
        ("floor_before_kib", |a| &mut a.floor_before_kib),
        ("floor_after_kib", |a| &mut a.floor_after_kib),
    ];
    for (field, slot) in fields {
        assert_eq!(
            guard_error(|a| *slot(a) = Some(MAX_MEMORY_KIB)),
            "accepted",
            "{field}"
        );
        assert_eq!(
            guard_error(|a| *slot(a) = Some(MAX_MEMORY_KIB + 1)),
            format!("events[0].{field}")
        );
    }
    assert_eq!(
        guard_error(|a| a.detail = "x".repeat(MAX_GUARD_DETAIL_BYTES)),
        "accepted"
    );
    assert_eq!(
        guard_error(|a| a.detail = "x".repeat(MAX_GUARD_DETAIL_BYTES + 1)),
        "events[0].detail"
    );
    assert_eq!(
        guard_error(|a| a.vm.uuid = "<script>".into()),
        "events[0].vm.uuid"
    );
    assert_eq!(
        guard_error(|a| a.vm.name = "x".repeat(600)),
        "events[0].vm.name"
    );
}

#[test]
fn guest_figures_beyond_any_machine_become_missing_on_the_agent() {
    let text = "Out of memory: Killed process 113 (hog) total-vm:9007199254740992kB, \
                anon-rss:204800kB, file-rss:0kB, shmem-rss:0kB\n";
    let parsed = ballast_oom::parse(text.as_bytes());
    let report = parsed.reports.first().expect("a report");
    let wire = crate::ParsedReport::from(report);
    let killed = wire.killed.expect("the kill line");
    assert_eq!(killed.total_vm_kb, None, "2^53 KiB is no machine's memory");
    assert_eq!(killed.anon_rss_kb, Some(204_800));
}
