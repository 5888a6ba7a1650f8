//! The guard step of the monitor (`run::guard_tick`, docs/guard.md) with the fake
//! hypervisor: act and observe, a refusal, a host with nothing to give, the floor
//! raised on Proxmox.

use super::*;

/// A monitor over `hypervisor` with `guard_yaml`, the host's meminfo in `dir/proc`
/// (`host_available_mib` available), events in `dir/events.jsonl`.
fn guard_monitor(
    dir: &std::path::Path,
    hypervisor: &Arc<FakeHypervisor>,
    guard_yaml: &str,
    host_available_mib: u64,
) -> (
    Monitor,
    crate::shared::SharedLock<crate::metrics::AgentCounters>,
) {
    let proc = dir.join("proc");
    std::fs::create_dir_all(&proc).expect("proc");
    std::fs::write(
        proc.join("meminfo"),
        format!(
            "MemTotal: 16777216 kB\nMemFree: 1000 kB\nMemAvailable: {} kB\n",
            host_available_mib * 1024
        ),
    )
    .expect("meminfo");
    let settings = test_settings(
        &dir.join("state"),
        &format!(
            "procfs_root: {}\ncapture:\n  host_kernel: false\n  guest_agent: off\n{guard_yaml}",
            proc.display()
        ),
    );
    let handles = Handles::new(&settings);
    let counters = handles.counters.clone();
    let monitor = Monitor::new(
        settings,
        Arc::clone(hypervisor) as Arc<dyn Hypervisor>,
        Box::new(JsonLinesOutlet::new(dir.join("events.jsonl"))),
        handles,
    );
    (monitor, counters)
}

/// A guest's sample with its balloon at `actual_kib` of 1 GiB (the guard free to act)
/// and `usable_mib` of MemAvailable, from the guest report made at `update`.
fn squeezed(
    actual_kib: Option<u64>,
    usable_mib: u64,
    update: u64,
) -> crate::hypervisor::BalloonSample {
    crate::hypervisor::BalloonSample {
        actual_kib: actual_kib.or(Some(512 * 1024)),
        maximum_kib: Some(1024 * 1024),
        available_kib: Some(468_416),
        usable_kib: Some(usable_mib * 1024),
        last_update_epoch_secs: Some(1_800_000_000 + update),
        ..crate::hypervisor::BalloonSample::default()
    }
}

/// Polls a guest whose MemAvailable collapses (its balloon at 512 of 1024 MiB, the
/// guard free to act) until the guard reported; its guard events.
fn squeeze_until_guarded(
    monitor: &mut Monitor,
    hypervisor: &FakeHypervisor,
    id: &DomainId,
    events: &std::path::Path,
) -> Vec<(String, ballast_model::GuardAction)> {
    squeeze_until_guarded_polling(monitor, hypervisor, id, events, Monitor::poll)
}

/// [`squeeze_until_guarded`] with `poll` as each poll's step (a test that checks the
/// poll itself, or waits for what the poll left running).
fn squeeze_until_guarded_polling(
    monitor: &mut Monitor,
    hypervisor: &FakeHypervisor,
    id: &DomainId,
    events: &std::path::Path,
    mut poll: impl FnMut(&mut Monitor),
) -> Vec<(String, ballast_model::GuardAction)> {
    let guard_events = || -> Vec<(String, ballast_model::GuardAction)> {
        std::fs::read_to_string(events)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Envelope>(line).ok())
            .filter_map(|envelope| match envelope.event {
                ballast_model::Event::Guard(action) => Some((envelope.key, *action)),
                _ => None,
            })
            .collect()
    };
    for (update, usable_mib) in (1..).zip([300, 200, 100, 40, 15, 10, 8, 6]) {
        hypervisor.update(id, |domain| {
            // The guest's balloon where the fake's hypervisor left it.
            domain.sample = squeezed(domain.sample.actual_kib, usable_mib, update * 10);
        });
        poll(monitor);
        if !guard_events().is_empty() {
            break;
        }
    }
    guard_events()
}

/// A guest (`name`, changed by `tweak`) squeezed under `guard_yaml` on a host with
/// `host_mib` available, polled until the guard reported ([`squeeze_until_guarded`]).
struct Guarded {
    _dir: tempfile::TempDir,
    hypervisor: Arc<FakeHypervisor>,
    id: DomainId,
    monitor: Monitor,
    counters: crate::shared::SharedLock<crate::metrics::AgentCounters>,
    events: Vec<(String, ballast_model::GuardAction)>,
}

fn guarded(
    name: &str,
    tweak: impl FnOnce(&mut crate::hypervisor::fake::FakeDomain),
    guard_yaml: &str,
    host_mib: u64,
) -> Guarded {
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    let (id, mut domain) = vm(name, None);
    tweak(&mut domain);
    hypervisor.set(id.clone(), domain);
    let (mut monitor, counters) = guard_monitor(dir.path(), &hypervisor, guard_yaml, host_mib);
    let events = squeeze_until_guarded(
        &mut monitor,
        &hypervisor,
        &id,
        &dir.path().join("events.jsonl"),
    );
    Guarded {
        _dir: dir,
        hypervisor,
        id,
        monitor,
        counters,
        events,
    }
}

#[test]
fn act_deflates_a_critical_guest_through_the_hypervisor_and_reports_it_with_fake_hypervisor() {
    let Guarded {
        hypervisor,
        id,
        monitor,
        counters,
        events,
        ..
    } = guarded("squeezed", |_| {}, "guard:\n  mode: act\n", 8192);
    let (key, action) = events.first().expect("a guard event");
    assert_eq!(
        action.outcome,
        ballast_model::GuardOutcome::Deflated,
        "{action:?}"
    );
    assert_eq!(action.mode, ballast_model::GuardMode::Act);
    assert_eq!(action.level, ballast_model::RiskLevel::Critical);
    assert_eq!(key, &format!("host/guard/{}/{}", id.uuid, action.at_ms));
    let target = action.target_kib.expect("a target");
    assert_eq!(action.actual_before_kib, Some(512 * 1024));
    assert!(target > 512 * 1024 && target <= 1024 * 1024, "{action:?}");
    assert_eq!(action.host_available_kib, Some(8192 * 1024));
    assert!(action.episode_started_at_ms.is_some());
    assert_eq!(hypervisor.balloon_target_calls(&id), [target]);
    let counters = counters.lock();
    assert_eq!(
        counters
            .guard_actions
            .get(&ballast_model::GuardOutcome::Deflated),
        Some(&1)
    );
    assert_eq!(counters.guard_deflated_bytes, (target - 512 * 1024) * 1024);
    drop(counters);
    let status = crate::status::Status::from_fleet(
        &monitor.fleet(),
        "host",
        "fake",
        std::time::SystemTime::now(),
        0,
    );
    let guard = status.vms[0].guard.as_ref().expect("the last guard action");
    assert_eq!(guard.outcome, "deflated");
    assert_eq!(guard.target_kib, Some(target));
}

#[test]
fn observe_reports_would_deflate_and_a_refusal_is_failed_with_fake_hypervisor() {
    let Guarded {
        hypervisor,
        id,
        counters,
        events,
        ..
    } = guarded("watched", |_| {}, "", 8192);
    let (_, action) = events.first().expect("a guard event");
    assert_eq!(action.outcome, ballast_model::GuardOutcome::WouldDeflate);
    assert_eq!(action.mode, ballast_model::GuardMode::Observe);
    assert!(
        action.target_kib.is_some_and(|t| t > 512 * 1024),
        "{action:?}"
    );
    assert!(
        hypervisor.balloon_target_calls(&id).is_empty(),
        "observe changes nothing"
    );
    assert_eq!(counters.lock().guard_deflated_bytes, 0);

    // The hypervisor refuses: failed, with its words.
    let Guarded {
        hypervisor,
        id,
        counters,
        events,
        ..
    } = guarded(
        "refused",
        |domain| domain.balloon_refusal = Some("balloon device busy".into()),
        "guard:\n  mode: act\n",
        8192,
    );
    let (_, action) = events.first().expect("a guard event");
    assert_eq!(
        action.outcome,
        ballast_model::GuardOutcome::Failed,
        "{action:?}"
    );
    assert!(action.detail.contains("balloon device busy"), "{action:?}");
    assert_eq!(hypervisor.balloon_target_calls(&id).len(), 1);
    assert_eq!(counters.lock().guard_deflated_bytes, 0);

    // The host has nothing to give: host_has_nothing, no call.
    let Guarded {
        hypervisor,
        id,
        events,
        ..
    } = guarded("starved-host", |_| {}, "guard:\n  mode: act\n", 900);
    let (_, action) = events.first().expect("a guard event");
    assert_eq!(action.outcome, ballast_model::GuardOutcome::HostHasNothing);
    assert!(hypervisor.balloon_target_calls(&id).is_empty());
}

#[test]
fn proxmox_raise_floor_raises_the_floor_with_the_deflation_off_the_poll_and_a_host_that_ignores_it_is_overridden_with_fake_hypervisor(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Named proxmox: the floor is only raised there.
    let hypervisor = Arc::new(FakeHypervisor::named("proxmox"));
    let (id, domain) = vm("pve-squeezed", None);
    hypervisor.set(id.clone(), domain);
    const FLOOR_RAISE_TAKES: Duration = Duration::from_secs(3);
    hypervisor.set_floor_raise_delay(FLOOR_RAISE_TAKES);
    let (mut monitor, counters) = guard_monitor(
        dir.path(),
        &hypervisor,
        "guard:\n  mode: act\n  proxmox_raise_floor: true\n",
        8192,
    );
    let events_path = dir.path().join("events.jsonl");
    let guard_events = || -> Vec<ballast_model::GuardAction> {
        std::fs::read_to_string(&events_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Envelope>(line).ok())
            .filter_map(|envelope| match envelope.event {
                ballast_model::Event::Guard(action) => Some(*action),
                _ => None,
            })
            .collect()
    };
    let poll = |monitor: &mut Monitor| {
        let started = Instant::now();
        monitor.poll();
        if !monitor.floor_jobs.is_empty() {
            // A slow `qm set` does not hold up the poll of every VM.
            assert!(
                started.elapsed() < FLOOR_RAISE_TAKES,
                "the poll waited for the floor raise: {:?}",
                started.elapsed()
            );
        }
        // The floor raise runs on a thread of its own and its event goes out at a
        // later poll; wait for it here as the monitor does when it stops.
        monitor.finish_floor_jobs(true);
    };
    // The guest runs out under the balloon: the guard deflates and, on Proxmox with
    // the operator's leave, raises the floor with it (pvestatd would take it back).
    let (_, deflated) =
        squeeze_until_guarded_polling(&mut monitor, &hypervisor, &id, &events_path, poll)
            .into_iter()
            .next()
            .expect("a guard event");
    assert_eq!(deflated.outcome, ballast_model::GuardOutcome::Deflated);
    let target = deflated.target_kib.expect("target");
    assert_eq!(deflated.floor_after_kib, Some(target), "{deflated:?}");
    assert!(
        deflated.detail.contains("raised the VM's balloon floor"),
        "{deflated:?}"
    );
    assert_eq!(hypervisor.floor_raise_calls(&id), [target]);
    // A host whose policy ignores the floor: the balloon reaches the target for a poll,
    // then goes back to 512 MiB while the guest stays squeezed. No second raise.
    let mut overridden = None;
    for update in 20..40u64 {
        hypervisor.update(&id, |domain| {
            domain.sample = crate::hypervisor::BalloonSample {
                actual_kib: Some(if update == 20 { target } else { 512 * 1024 }),
                maximum_kib: Some(1024 * 1024),
                available_kib: Some(468_416),
                usable_kib: Some(6 * 1024),
                last_update_epoch_secs: Some(1_800_000_000 + update * 10),
                ..crate::hypervisor::BalloonSample::default()
            };
        });
        poll(&mut monitor);
        overridden = guard_events()
            .into_iter()
            .find(|action| action.outcome == ballast_model::GuardOutcome::OverriddenByHost);
        if overridden.is_some() {
            break;
        }
    }
    let overridden = overridden.expect("an overridden_by_host event");
    assert!(overridden.detail.contains("already"), "{overridden:?}");
    assert_eq!(hypervisor.floor_raise_calls(&id), [target]);
    let counters = counters.lock();
    assert_eq!(
        counters
            .guard_actions
            .get(&ballast_model::GuardOutcome::Deflated),
        Some(&1)
    );
    assert!(counters.guard_deflated_bytes > 0);
}

/// The guard's own poll (`guard.poll_interval_secs`, docs/guard.md "Reach") reads the
/// VM whose balloon holds memory between the agent's polls, and the guard steps from
/// it; a VM whose balloon holds nothing is left to the agent's poll.
#[test]
fn the_guards_own_poll_reads_a_squeezed_vm_between_full_polls_and_steps_from_it_with_fake_hypervisor(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    let (id, mut domain) = vm("squeezed", None);
    domain.sample = squeezed(None, 400, 0);
    hypervisor.set(id.clone(), domain);
    let (full_id, mut full) = vm("at-its-maximum", None);
    full.sample = crate::hypervisor::BalloonSample {
        actual_kib: Some(1024 * 1024),
        maximum_kib: Some(1024 * 1024),
        available_kib: Some(900 * 1024),
        usable_kib: Some(600 * 1024),
        last_update_epoch_secs: Some(1_800_000_000),
        ..crate::hypervisor::BalloonSample::default()
    };
    hypervisor.set(full_id.clone(), full);
    let (mut monitor, counters) = guard_monitor(
        dir.path(),
        &hypervisor,
        "poll_interval_secs: 10\nguard:\n  mode: act\n  poll_interval_secs: 2\n",
        8192,
    );
    // One full poll: both known; after it, only the guard's polls.
    monitor.poll();
    let history = |monitor: &Monitor, id: &DomainId| {
        monitor
            .fleet()
            .get(&id.uuid)
            .map_or(0, |vm| vm.history.len())
    };
    assert_eq!(history(&monitor, &full_id), 1);
    let events = squeeze_until_guarded_polling(
        &mut monitor,
        &hypervisor,
        &id,
        &dir.path().join("events.jsonl"),
        Monitor::guard_poll,
    );
    let (_, action) = events.first().expect("a step from the guard's own poll");
    assert_eq!(
        action.outcome,
        ballast_model::GuardOutcome::Deflated,
        "{action:?}"
    );
    assert_eq!(hypervisor.balloon_target_calls(&id).len(), 1);
    assert!(
        history(&monitor, &id) > 2,
        "the squeezed VM was read by the guard's polls"
    );
    assert_eq!(
        history(&monitor, &full_id),
        1,
        "a full balloon is not the guard's to read"
    );
    let counters = counters.lock();
    assert_eq!(counters.polls, 1);
    assert!(counters.guard_polls >= 2, "{}", counters.guard_polls);
}

/// The run loop runs the guard's own poll between the agent's: at a 10 s poll and a
/// 1 s guard poll, guard polls come while the full poll has run once or twice.
#[test]
fn the_run_loop_polls_for_the_guard_between_the_agents_polls_with_fake_hypervisor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    let (id, mut domain) = vm("squeezed", None);
    domain.sample = squeezed(None, 300, 0);
    hypervisor.set(id, domain);
    let (monitor, counters) = guard_monitor(
        dir.path(),
        &hypervisor,
        "poll_interval_secs: 10\nguard:\n  poll_interval_secs: 1\n",
        8192,
    );
    let commands = monitor.commands();
    let thread = std::thread::spawn(move || monitor.run());
    let (polls, guard_polls) = wait_until("three guard polls", Duration::from_secs(30), || {
        let counters = counters.lock();
        (counters.guard_polls >= 3).then_some((counters.polls, counters.guard_polls))
    });
    commands.stop();
    thread.join().expect("monitor thread");
    assert!(
        polls >= 1 && polls < guard_polls,
        "{polls} full polls, {guard_polls} guard polls"
    );
}
