//! Unit tests of `fleet`.

use super::*;
use ballast_model::MinMaxLast;
use std::time::UNIX_EPOCH;

fn id(n: u32) -> DomainId {
    DomainId {
        uuid: format!("00000000-0000-4000-8000-{n:012}"),
        name: format!("vm{n}"),
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn sample(actual: u64, usable: u64, update: u64) -> BalloonSample {
    BalloonSample {
        actual_kib: Some(actual),
        maximum_kib: Some(524_288),
        available_kib: Some(468_416),
        usable_kib: Some(usable),
        last_update_epoch_secs: Some(update),
        ..BalloonSample::default()
    }
}

#[test]
fn guest_figures_beyond_any_machine_are_kept_as_missing() {
    let mut fleet = Fleet::new(10);
    fleet.apply_poll(at(0), vec![(id(1), sample(524_288, u64::MAX, 1))]);
    let vm = fleet.get(&id(1).uuid).expect("tracked");
    let last = vm.last_sample.as_ref().expect("sampled");
    assert_eq!(
        last.usable_kib, None,
        "u64::MAX KiB is no guest's MemAvailable"
    );
    assert_eq!(last.actual_kib, Some(524_288));
    let forged = fleet.apply_balloon_change(&id(1), at(1), u64::MAX / 2);
    assert!(forged.is_empty(), "{forged:?}");
    assert_eq!(
        fleet.apply_balloon_change(&id(1), at(2), 262_144).len(),
        1,
        "a real change still counts"
    );
}

#[test]
fn vms_appear_and_go() {
    let mut fleet = Fleet::new(10);
    let changes = fleet.apply_poll(
        at(0),
        vec![
            (id(1), sample(524_288, 400_000, 1)),
            (id(2), sample(524_288, 400_000, 1)),
        ],
    );
    assert_eq!(changes, [Change::Appeared(id(1)), Change::Appeared(id(2))]);
    let changes = fleet.apply_poll(at(10), vec![(id(2), sample(524_288, 400_000, 2))]);
    assert_eq!(changes, [Change::Gone(id(1))]);
    assert_eq!(fleet.len(), 1);
}

#[test]
fn stats_that_stop_updating_become_stale_and_recover() {
    let mut fleet = Fleet::new(10);
    let mut all = Vec::new();
    for poll in 0..5 {
        all.extend(fleet.apply_poll(at(poll * 10), vec![(id(1), sample(524_288, 400_000, 7))]));
    }
    assert!(all.contains(&Change::BecameStale(id(1))));
    assert!(fleet.get(&id(1).uuid).is_some_and(|vm| vm.stale));
    let changes = fleet.apply_poll(at(60), vec![(id(1), sample(524_288, 400_000, 8))]);
    assert_eq!(changes, [Change::Recovered(id(1))]);
}

#[test]
fn a_collapse_of_mem_available_is_suspected_once_and_flagged_when_inflated() {
    let mut fleet = Fleet::new(10);
    fleet.apply_poll(at(0), vec![(id(1), sample(204_800, 100_000, 1))]);
    let changes = fleet.apply_poll(at(10), vec![(id(1), sample(204_800, 3_000, 2))]);
    assert!(changes.contains(&Change::SuspectOom {
        id: id(1),
        reason: SuspectReason::UsableCollapsed
    }));
    assert!(changes.iter().any(|c| matches!(
        c,
        Change::NearMiss {
            kind: NearMissKind::UsableLow,
            ..
        }
    )));
    let again = fleet.apply_poll(at(20), vec![(id(1), sample(204_800, 2_000, 3))]);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn the_oom_kill_counter_rising_or_falling_means_an_oom_or_a_reboot() {
    let mut fleet = Fleet::new(10);
    fleet.apply_poll(at(0), vec![(id(1), sample(524_288, 400_000, 1))]);
    let counters = |kills| GuestCounters {
        oom_kills: Some(kills),
        ..GuestCounters::default()
    };
    assert!(fleet.apply_counters(&id(1), counters(0)).is_empty());
    assert_eq!(
        fleet.apply_counters(&id(1), counters(1)),
        [Change::SuspectOom {
            id: id(1),
            reason: SuspectReason::OomKillCounter
        }]
    );
    assert_eq!(
        fleet.apply_counters(&id(1), counters(0)),
        [Change::Rebooted(id(1))]
    );
}

#[test]
fn a_deflate_on_oom_balloon_giving_memory_back_is_a_near_miss() {
    let mut fleet = Fleet::new(10);
    fleet.apply_poll(at(0), vec![(id(1), sample(204_800, 20_000, 1))]);
    fleet.set_config(
        &id(1),
        DomainConfig {
            deflate_on_oom: Some(true),
            ..DomainConfig::default()
        },
    );
    let changes = fleet.apply_balloon_change(&id(1), at(3), 295_936);
    assert!(
        changes.iter().any(|c| matches!(
            c,
            Change::NearMiss {
                kind: NearMissKind::SilentDeflate,
                ..
            }
        )),
        "{changes:?}"
    );
    let vm = fleet.get(&id(1).uuid).expect("vm");
    let (host, sampled) = vm.host_balloon_at_oom(Some(at(4)), at(9), None, 0);
    assert_eq!(
        host.actual_kb,
        Some(295_936),
        "the event is newer than the poll"
    );
    assert_eq!(sampled, Some(at(3)));
    assert_eq!(host.held_kb(), Some(524_288 - 295_936));
    // A kill printed within the event's second: the event may be later; the poll is not.
    let (host, sampled) =
        vm.host_balloon_at_oom(Some(at(3) + Duration::from_millis(500)), at(9), None, 0);
    assert_eq!(host.actual_kb, Some(204_800));
    assert_eq!(sampled, Some(at(0)));
    // No bound: the newest sample when the report's balloon evidence allows it.
    let (host, sampled) = vm.host_balloon_at_oom(None, at(9), Some(220_000), 16_384);
    assert_eq!((host.actual_kb, sampled), (Some(295_936), Some(at(3))));
    // The newest holds more than the report shows, and the older one more still:
    // none stands.
    let (host, sampled) = vm.host_balloon_at_oom(None, at(9), Some(100_000), 16_384);
    assert_eq!((host.actual_kb, sampled), (None, None));
    // A bound and report evidence that agrees with the sample before the kill.
    let (host, sampled) =
        vm.host_balloon_at_oom(Some(at(1)), at(9), Some(524_288 - 204_800), 16_384);
    assert_eq!((host.actual_kb, sampled), (Some(204_800), Some(at(0))));
    // Neither a bound nor report evidence: no sample is known to predate the kill.
    let (host, sampled) = vm.host_balloon_at_oom(None, at(9), None, 0);
    assert_eq!((host.actual_kb, sampled), (None, None));
    assert_eq!(host.maximum_kb, Some(524_288));
}

/// The balloon inflated within one poll of the kill (QMP sends no balloon events):
/// the sample before the kill shows it empty, the report and the next sample show
/// it holding 312 MiB. The sample before does not stand; a host figure that never
/// moved does (the report's reserved memory may be something else).
#[test]
fn a_sample_before_an_inflation_within_one_poll_of_the_kill_does_not_stand() {
    let mut fleet = Fleet::new(100);
    fleet.apply_poll(at(0), vec![(id(1), sample(524_288, 400_000, 1))]);
    fleet.apply_poll(at(2), vec![(id(1), sample(204_800, 20_000, 2))]);
    let vm = fleet.get(&id(1).uuid).expect("vm");
    let report = 319_488 - 4_096;
    let (host, sampled) = vm.host_balloon_at_oom(Some(at(1)), at(9), Some(report), 16_384);
    assert_eq!((host.actual_kb, sampled), (None, None));
    assert_eq!(host.maximum_kb, Some(524_288));
    // Without the report's evidence the sample before the kill is all there is.
    let (host, sampled) = vm.host_balloon_at_oom(Some(at(1)), at(9), None, 16_384);
    assert_eq!((host.actual_kb, sampled), (Some(524_288), Some(at(0))));
    // A balloon that never moved: the host's empty balloon stands against the report.
    let mut fleet = Fleet::new(100);
    fleet.apply_poll(at(0), vec![(id(1), sample(524_288, 400_000, 1))]);
    fleet.apply_poll(at(2), vec![(id(1), sample(524_288, 20_000, 2))]);
    let vm = fleet.get(&id(1).uuid).expect("vm");
    let (host, sampled) = vm.host_balloon_at_oom(Some(at(1)), at(9), Some(report), 16_384);
    assert_eq!((host.actual_kb, sampled), (Some(524_288), Some(at(0))));
}

#[test]
fn risk_goes_into_the_rollup_and_a_vm_that_goes_away_ends_its_episode() {
    let mut fleet = Fleet::new(100);
    let mut changes = Vec::new();
    // MemAvailable under 10 % of MemTotal for three polls of one minute.
    for second in [0, 10, 20, 30] {
        let usable = if second == 0 { 300_000 } else { 30_000 };
        changes.extend(fleet.apply_poll(
            at(second),
            vec![(id(1), sample(524_288, usable, second + 1))],
        ));
        changes.extend(fleet.observe_pressure(at(second)));
    }
    let starts: Vec<&PressureEpisode> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Pressure { episode, .. } => Some(&**episode),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 1, "{changes:?}");
    assert_eq!(starts[0].phase, ballast_model::EpisodePhase::Start);
    fleet.apply_poll(at(60), vec![(id(1), sample(524_288, 30_000, 61))]);
    fleet.observe_pressure(at(60));
    let rollup = fleet.take_finished_rollups().pop().expect("a rollup");
    let pressure = rollup.pressure.expect("the minute's pressure");
    assert_eq!(pressure.risk, ballast_model::RiskLevel::Elevated);
    assert_eq!(
        pressure.sources,
        [ballast_model::SignalSource::BalloonStats]
    );
    let gone = fleet.apply_poll(at(70), Vec::new());
    assert!(
        matches!(
            gone.as_slice(),
            [Change::Pressure { episode, .. }, Change::Gone(_)]
                if episode.phase == ballast_model::EpisodePhase::End
        ),
        "{gone:?}"
    );
    // A VM without guest figures has no pressure in its rollup.
    let mut fleet = Fleet::new(100);
    let blind = BalloonSample {
        actual_kib: Some(524_288),
        ..BalloonSample::default()
    };
    fleet.apply_poll(at(0), vec![(id(2), blind.clone())]);
    fleet.observe_pressure(at(0));
    fleet.apply_poll(at(60), vec![(id(2), blind)]);
    fleet.observe_pressure(at(60));
    let rollup = fleet.take_finished_rollups().pop().expect("a rollup");
    assert_eq!(rollup.pressure, None);
}

#[test]
fn the_guests_own_stall_counters_drive_its_risk() {
    let mut fleet = Fleet::new(100);
    let mut episodes = Vec::new();
    // MemAvailable short but steady at 15 %; the guest stalls 10 times a second and
    // reclaims 4 MiB/s directly (QEMU's guest-stats, cumulative).
    for poll in 0..6u64 {
        let secs = poll * 10;
        fleet.apply_poll(at(secs), vec![(id(1), sample(524_288, 70_000, secs + 1))]);
        fleet.apply_counters(
            &id(1),
            GuestCounters {
                oom_kills: Some(0),
                alloc_stalls: Some(poll * 100),
                direct_reclaims_bytes: Some(poll * 40 * 1024 * 1024),
                direct_scans_bytes: Some(poll * 80 * 1024 * 1024),
                async_scans_bytes: Some(0),
                async_reclaims_bytes: Some(0),
                last_update_epoch_secs: Some(1_800_000_000 + secs),
            },
        );
        episodes.extend(fleet.observe_pressure(at(secs)));
    }
    let vm = fleet.get(&id(1).uuid).expect("vm");
    let assessment = vm.risk.assessment().expect("assessed");
    assert_eq!(
        assessment.level,
        ballast_model::RiskLevel::Elevated,
        "{assessment:?}"
    );
    assert!(
        assessment
            .drivers
            .contains(&ballast_model::PressureSignal::AllocStalls),
        "{assessment:?}"
    );
    assert!(assessment
        .sources
        .contains(&ballast_model::SignalSource::BalloonCounters));
    assert!(
        matches!(episodes.as_slice(), [Change::Pressure { episode, .. }]
            if episode.phase == ballast_model::EpisodePhase::Start
                && episode.signals.alloc_stalls_per_s.is_some()),
        "{episodes:?}"
    );
}

#[test]
fn rollups_close_when_the_minute_ends() {
    let mut fleet = Fleet::new(100);
    for second in [0, 10, 20, 30, 40, 50] {
        fleet.apply_poll(
            at(second),
            vec![(id(1), sample(500_000 - second * 1000, 300_000, second))],
        );
    }
    assert!(fleet.take_finished_rollups().is_empty());
    fleet.apply_poll(at(60), vec![(id(1), sample(400_000, 300_000, 61))]);
    let rollups = fleet.take_finished_rollups();
    assert_eq!(rollups.len(), 1);
    let rollup = &rollups[0];
    assert_eq!(rollup.samples, 6);
    assert_eq!(
        rollup.actual_kib,
        MinMaxLast {
            min: Some(450_000),
            max: Some(500_000),
            last: Some(450_000)
        }
    );
    assert_eq!(rollup.vm.name, "vm1");
}

#[test]
fn each_poll_gives_a_vm_its_signals_a_window_and_the_rollup_its_pressure() {
    let mut fleet = Fleet::new(100);
    let stats = |faults: u64, usable: u64, update: u64| BalloonSample {
        major_faults: Some(faults),
        ..sample(204_800, usable, 1_800_000_000 + update)
    };
    let counters = |stalls: u64, update: u64| GuestCounters {
        alloc_stalls: Some(stalls),
        direct_reclaims_bytes: Some(stalls * 4096),
        last_update_epoch_secs: Some(1_800_000_000 + update),
        ..GuestCounters::default()
    };
    // A 6.1-like VM: balloon stats only. A 6.12-like VM: counters too.
    let old = id(1);
    let new = id(2);
    for poll in 0..4u64 {
        let secs = poll * 10;
        fleet.apply_poll(
            at(secs),
            vec![
                (old.clone(), stats(poll * 50, 300_000 - poll * 10_000, secs)),
                (new.clone(), stats(poll * 50, 300_000, secs)),
            ],
        );
        fleet.apply_counters(&new, counters(poll * 20, secs));
        fleet.observe_pressure(at(secs));
    }
    let old_vm = fleet.get(&old.uuid).expect("old");
    let signals = old_vm.pressure_snapshot().expect("balloon stats signals");
    assert_eq!(signals.major_faults_per_s, Some(5.0));
    assert_eq!(signals.alloc_stalls_per_s, None);
    assert_eq!(signals.available_slope_kib_per_s, Some(-1000.0));
    assert_eq!(
        signals.sources(),
        [ballast_model::SignalSource::BalloonStats]
    );
    let new_vm = fleet.get(&new.uuid).expect("new");
    let signals = new_vm.pressure_snapshot().expect("signals");
    assert_eq!(signals.alloc_stalls_per_s, Some(2.0));
    assert_eq!(signals.direct_reclaim_kib_per_s, Some(8.0));
    // The first poll had no rate yet: three points in the window.
    let window = new_vm.pressure_window();
    assert_eq!(window.len(), 3);
    assert_eq!(window[0].0, at(10));
    // Counters not read in a poll (a skipped VM): no counter rates, not stale ones.
    fleet.apply_poll(at(40), vec![(new.clone(), stats(200, 300_000, 40))]);
    fleet.observe_pressure(at(40));
    let signals = fleet
        .get(&new.uuid)
        .and_then(VmState::pressure_snapshot)
        .expect("stats still");
    assert_eq!(signals.alloc_stalls_per_s, None);
    // The next minute closes the rollup with its pressure.
    fleet.apply_poll(at(60), vec![(new.clone(), stats(250, 300_000, 60))]);
    let rollups = fleet.take_finished_rollups();
    let pressure = rollups
        .iter()
        .find(|rollup| rollup.vm.uuid == new.uuid)
        .and_then(|rollup| rollup.pressure.clone())
        .expect("pressure in the rollup");
    assert_eq!(pressure.peak.alloc_stalls_per_s, Some(2.0));
    assert!(pressure
        .sources
        .contains(&ballast_model::SignalSource::BalloonCounters));
    let gone = rollups
        .iter()
        .find(|rollup| rollup.vm.uuid == old.uuid)
        .expect("the old VM went away: its rollup closed");
    // The risk model's reading: MemAvailable falling ~1 MiB/s, out within 600 s.
    assert_eq!(
        gone.pressure.as_ref().map(|p| p.risk),
        Some(ballast_model::RiskLevel::Elevated)
    );
    assert_eq!(
        gone.pressure.as_ref().map(|p| p.sources.clone()),
        Some(vec![ballast_model::SignalSource::BalloonStats])
    );
}

#[test]
fn the_rollups_risk_is_the_periods_highest() {
    use ballast_model::RiskLevel;
    let mut fleet = Fleet::new(10);
    for poll in 0..3u64 {
        let stats = BalloonSample {
            major_faults: Some(poll),
            ..sample(524_288, 400_000, 1_800_000_000 + poll * 10)
        };
        fleet.apply_poll(at(poll * 10), vec![(id(1), stats)]);
        fleet.observe_pressure(at(poll * 10));
    }
    fleet.raise_rollup_risk(&id(1), RiskLevel::Critical);
    fleet.raise_rollup_risk(&id(1), RiskLevel::Elevated);
    fleet.apply_poll(at(60), Vec::new());
    let rollups = fleet.take_finished_rollups();
    assert_eq!(
        rollups[0].pressure.as_ref().map(|p| p.risk),
        Some(RiskLevel::Critical)
    );
}

#[test]
fn a_vm_without_any_signal_has_none() {
    let mut fleet = Fleet::new(10);
    for poll in 0..3 {
        fleet.apply_poll(
            at(poll * 10),
            vec![(
                id(1),
                BalloonSample {
                    actual_kib: Some(524_288),
                    ..BalloonSample::default()
                },
            )],
        );
        fleet.observe_pressure(at(poll * 10));
    }
    let vm = fleet.get(&id(1).uuid).expect("vm");
    assert_eq!(vm.pressure_snapshot(), None);
    assert!(vm.pressure_window().is_empty());
    fleet.apply_poll(at(60), Vec::new());
    let rollups = fleet.take_finished_rollups();
    assert_eq!(rollups.len(), 1);
    assert_eq!(rollups[0].pressure, None, "not a zero pressure");
}

/// The stats path's three states apart: a guest that never sent stats (balloon
/// answering, `last-update` 0) is unreported after 30 s and three polls, never stale;
/// one that sent and stopped is stale, never unreported; a VM the poll had no figures
/// for is neither.
#[test]
fn never_sent_stats_are_told_apart_from_stopped_ones_and_from_no_figures() {
    let mut fleet = Fleet::new(10);
    // What QEMU answers without a driver: the balloon's actual, stats never reported.
    let silent = || {
        let sample = BalloonSample {
            actual_kib: Some(524_288),
            maximum_kib: Some(524_288),
            last_update_epoch_secs: Some(0),
            ..BalloonSample::default()
        };
        (id(1), sample)
    };
    let mut seen = Vec::new();
    for secs in [0, 10, 20] {
        seen.extend(fleet.apply_poll(
            at(secs),
            vec![
                silent(),
                (id(2), sample(524_288, 400_000, 7)),
                (id(3), BalloonSample::default()),
            ],
        ));
    }
    assert!(
        !seen.contains(&Change::StatsNeverCame(id(1))),
        "20 s is boot time: {seen:?}"
    );
    for secs in [30, 40] {
        seen.extend(fleet.apply_poll(
            at(secs),
            vec![
                silent(),
                (id(2), sample(524_288, 400_000, 7)),
                (id(3), BalloonSample::default()),
            ],
        ));
    }
    let vm = |n| fleet.get(&id(n).uuid).expect("vm");
    assert_eq!(
        seen.iter()
            .filter(|c| **c == Change::StatsNeverCame(id(1)))
            .count(),
        1,
        "{seen:?}"
    );
    assert!(vm(1).stats_unreported && !vm(1).stale);
    assert!(vm(2).stale && !vm(2).stats_unreported);
    assert!(!vm(3).stale && !vm(3).stats_unreported);
    assert!(!seen.contains(&Change::StatsNeverCame(id(3))));

    // No figures this poll: still unreported, no change. Then the driver loads.
    let changes = fleet.apply_poll(at(50), vec![(id(1), BalloonSample::default())]);
    assert!(!changes.contains(&Change::Recovered(id(1))), "{changes:?}");
    assert!(fleet.get(&id(1).uuid).is_some_and(|vm| vm.stats_unreported));
    let changes = fleet.apply_poll(at(60), vec![(id(1), sample(524_288, 400_000, 61))]);
    assert!(changes.contains(&Change::Recovered(id(1))), "{changes:?}");
    assert!(fleet
        .get(&id(1).uuid)
        .is_some_and(|vm| !vm.stats_unreported));
}

fn with_virtio_mem(requested_mib: u64, plugged_mib: u64) -> BalloonSample {
    BalloonSample {
        virtio_mem: vec![ballast_model::VirtioMemDevice {
            id: "virtiomem0".into(),
            node: Some(0),
            block_size_kib: Some(2048),
            max_size_kib: Some(4096 * 1024),
            requested_kib: Some(requested_mib * 1024),
            plugged_kib: Some(plugged_mib * 1024),
        }],
        ..sample(524_288, 300_000, 1)
    }
}

fn memory_device_phases(changes: &[Change]) -> Vec<ballast_model::ResizePhase> {
    changes
        .iter()
        .filter_map(|change| match change {
            Change::MemoryDevice { change, .. } => Some(change.phase),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stuck_virtio_mem_unplug_and_its_convergence_come_out_of_the_polls_with_the_rollup() {
    use ballast_model::ResizePhase::{Converged, Requested, Resized, Stuck};
    let mut fleet = Fleet::new(360);
    // Polls at 0, 10, ..., 70 s: the host halves the request at 10 s; the guest
    // unplugs nothing until 60 s, then all of it.
    let steps = [
        (2048, 2048),
        (1024, 2048),
        (1024, 2048),
        (1024, 2048),
        (1024, 2048),
        (1024, 2048),
        (1024, 1024),
        (1024, 1024),
    ];
    let mut phases = Vec::new();
    for (n, (requested, plugged)) in (0u64..).zip(steps) {
        let changes = fleet.apply_poll(
            at(n * 10),
            vec![
                (id(1), with_virtio_mem(requested, plugged)),
                (id(2), sample(1, 1, 1)),
            ],
        );
        phases.push(memory_device_phases(&changes));
    }
    assert_eq!(phases[1], vec![Requested]);
    assert_eq!(
        phases[3],
        vec![Stuck],
        "flagged two polls after the request"
    );
    assert_eq!(phases[6], vec![Resized, Converged]);
    assert!(phases[2].is_empty() && phases[4].is_empty() && phases[7].is_empty());
    let vm = fleet.get(&id(1).uuid).expect("tracked");
    let elastic = vm.elastic.as_ref().expect("has virtio-mem");
    assert!(!elastic.devices().any(|d| d.stuck));
    assert!(fleet.get(&id(2).uuid).expect("tracked").elastic.is_none());
    // at(0) is 1_800_000_000 s, a whole minute: the poll at 60 s ends the first.
    let rollups = fleet.take_finished_rollups();
    let first = rollups
        .iter()
        .find(|r| r.vm.uuid == id(1).uuid)
        .expect("first minute");
    assert_eq!(first.virtio_mem.len(), 1);
    assert_eq!(first.virtio_mem[0].requested_kib.min, Some(1024 * 1024));
    assert_eq!(first.virtio_mem[0].plugged_kib.last, Some(2048 * 1024));
    assert_eq!(
        first.virtio_mem[0].unconverged_secs,
        Some(50),
        "since 10 s, at 60 s"
    );
    let other = rollups
        .iter()
        .find(|r| r.vm.uuid == id(2).uuid)
        .expect("vm2");
    assert!(other.virtio_mem.is_empty());
    // A pushed size (libvirt's event) between polls.
    let changes = fleet.apply_memory_device_size(&id(1), at(75), "virtiomem0", 512 * 1024);
    assert_eq!(memory_device_phases(&changes), vec![Resized]);
    assert!(fleet
        .apply_memory_device_size(&id(2), at(75), "virtiomem0", 512 * 1024)
        .is_empty());
}

#[test]
fn the_converge_timeout_comes_from_the_settings() {
    let mut fleet = Fleet::new(360);
    fleet.set_converge_timeout(Duration::from_secs(15));
    // Progress every poll (never two polls without), but unconverged from 10 s on.
    let mut stuck_at = None;
    for n in 0..6u64 {
        let requested = if n == 0 { 2048 } else { 1024 };
        let changes = fleet.apply_poll(
            at(n * 10),
            vec![(id(1), with_virtio_mem(requested, 2048 - n * 2))],
        );
        if memory_device_phases(&changes).contains(&ballast_model::ResizePhase::Stuck) {
            stuck_at.get_or_insert(n);
        }
    }
    assert_eq!(stuck_at, Some(3), "15 s after 10 s is the poll at 30 s");
}

/// The device plugs 256 MiB at 10 s and the guest's MemTotal never takes them in, its
/// reports fresh every poll: flagged once, at the first poll 60 s after the plug, with
/// the audit's finding; the host inflating the balloon by 64 MiB meanwhile (no
/// deflate-on-oom: MemTotal falls by as much) changes nothing. Onlined at last: cleared.
#[test]
fn plugged_virtio_mem_memory_the_guest_does_not_online_is_flagged_and_cleared_from_the_polls() {
    let mut fleet = Fleet::new(360);
    let poll = |plugged_mib: u64, mem_total_kib: u64, actual_kib: u64, secs: u64| {
        let secs_epoch = at(secs)
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs();
        BalloonSample {
            available_kib: Some(mem_total_kib),
            actual_kib: Some(actual_kib),
            last_update_epoch_secs: Some(secs_epoch),
            ..with_virtio_mem(plugged_mib, plugged_mib)
        }
    };
    let total = 468_416;
    let mut flagged = Vec::new();
    for n in 0..=9u64 {
        let (plugged, mem_total, actual) = match n {
            0 => (0, total, 524_288),
            1..=4 => (256, total, 524_288),
            _ => (256, total - 65_536, 524_288 - 65_536),
        };
        let changes = fleet.apply_poll(
            at(n * 10),
            vec![(id(1), poll(plugged, mem_total, actual, n * 10))],
        );
        for change in changes {
            if let Change::VirtioMemOnline { change, .. } = change {
                flagged.push((n, change.not_onlined_kib()));
            }
        }
    }
    assert_eq!(flagged, [(7, Some(256 * 1024))]);
    let vm = fleet.get(&id(1).uuid).expect("tracked");
    let findings = crate::audit::finding_names(
        &crate::hypervisor::DomainConfig::default(),
        crate::audit::Observed::from_fleet(vm),
    );
    assert!(
        findings.contains(&"virtio_mem_not_onlined".to_string()),
        "{findings:?}"
    );
    let changes = fleet.apply_poll(
        at(100),
        vec![(
            id(1),
            poll(256, total - 65_536 + 250 * 1024, 524_288 - 65_536, 100),
        )],
    );
    assert!(
        changes.contains(&Change::VirtioMemOnline {
            id: id(1),
            change: crate::elastic::OnlineChange::Onlined
        }),
        "{changes:?}"
    );
    let vm = fleet.get(&id(1).uuid).expect("tracked");
    assert!(!crate::audit::Observed::from_fleet(vm).virtio_mem_not_onlined);
}
