use std::time::UNIX_EPOCH;

use super::*;

const POLL: Duration = Duration::from_secs(10);
const MIB: u64 = 1024;

fn vm() -> VmRef {
    VmRef {
        uuid: "5d1c7a0e-9f4b-4c62-8d1e-2b7f3a9c6e10".into(),
        name: "vmem-guest".into(),
    }
}

fn device(requested_mib: u64, plugged_mib: u64) -> VirtioMemDevice {
    VirtioMemDevice {
        id: "virtiomem0".into(),
        node: Some(0),
        block_size_kib: Some(2048),
        max_size_kib: Some(4096 * MIB),
        requested_kib: Some(requested_mib * MIB),
        plugged_kib: Some(plugged_mib * MIB),
    }
}

/// Polls `steps` (requested, plugged in MiB) every 10 s from a start relative to now;
/// the phases each poll produced.
fn run(elastic: &mut VmElastic, start: SystemTime, steps: &[(u64, u64)]) -> Vec<Vec<ResizePhase>> {
    steps
        .iter()
        .enumerate()
        .map(|(n, (requested, plugged))| {
            let at = start + POLL * n as u32;
            elastic
                .observe(
                    &vm(),
                    at,
                    vec![device(*requested, *plugged)],
                    DEFAULT_CONVERGE_TIMEOUT,
                )
                .into_iter()
                .map(|change| change.phase)
                .collect()
        })
        .collect()
}

fn start() -> SystemTime {
    // Whole minutes, so the rollup periods are where the test expects them.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(now - now % 60)
}

#[test]
fn a_stuck_unplug_is_flagged_within_two_polls_of_the_request() {
    let mut elastic = VmElastic::new(360);
    // 2 GiB plugged; the host asks for 1 GiB; the guest unplugs nothing.
    let phases = run(
        &mut elastic,
        start(),
        &[(2048, 2048), (1024, 2048), (1024, 2048), (1024, 2048)],
    );
    assert!(phases[0].is_empty());
    assert_eq!(phases[1], vec![ResizePhase::Requested]);
    assert!(
        phases[2].is_empty(),
        "one poll without progress is not stuck yet"
    );
    assert_eq!(
        phases[3],
        vec![ResizePhase::Stuck],
        "two polls after the request"
    );
    let view = elastic.devices().next().expect("device");
    assert!(view.stuck);
    assert_eq!(view.unconverged_since, Some(start() + POLL));
}

#[test]
fn an_unplug_making_progress_is_not_stuck_and_a_stuck_one_converges() {
    let mut elastic = VmElastic::new(360);
    let at = start();
    let phases = run(
        &mut elastic,
        at,
        &[
            (2048, 2048),
            (1024, 2048),
            (1024, 1792),
            (1024, 1536),
            (1024, 1280),
            (1024, 1280),
            (1024, 1280),
            (1024, 1024),
        ],
    );
    use ResizePhase::{Converged, Requested, Resized, Stuck};
    assert_eq!(
        phases,
        vec![
            Vec::<ResizePhase>::new(),
            vec![Requested],
            vec![Resized],
            vec![Resized],
            vec![Resized],
            Vec::new(),
            vec![Stuck],
            vec![Resized, Converged],
        ]
    );
    assert!(!elastic.devices().next().expect("device").stuck);
    assert_eq!(
        elastic.devices().next().expect("device").unconverged_since,
        None
    );
}

#[test]
fn a_slow_unplug_is_stuck_after_the_converge_timeout() {
    let mut elastic = VmElastic::new(360);
    let at = start();
    let mut phases = Vec::new();
    // Progress every poll, one block at a time: never two polls without progress.
    for n in 0..10u64 {
        let requested = if n == 0 { 2048 } else { 1024 };
        let plugged = 2048 - n * 2;
        let changes = elastic.observe(
            &vm(),
            at + POLL * n as u32,
            vec![device(requested, plugged)],
            Duration::from_secs(45),
        );
        phases.push(changes.iter().any(|c| c.phase == ResizePhase::Stuck));
    }
    // Unconverged since the poll at 10 s; 45 s later is the poll at 60 s (n = 6).
    let first_stuck = phases.iter().position(|stuck| *stuck);
    assert_eq!(first_stuck, Some(6), "{phases:?}");
}

#[test]
fn a_flapping_guest_is_rate_limited() {
    let mut elastic = VmElastic::new(360);
    let at = start();
    let mut resized = 0;
    // The plugged size changes every poll for an hour.
    for n in 0..360u64 {
        let plugged = if n % 2 == 0 { 2048 } else { 2046 };
        resized += elastic
            .observe(
                &vm(),
                at + POLL * n as u32,
                vec![device(2048, plugged)],
                DEFAULT_CONVERGE_TIMEOUT,
            )
            .iter()
            .filter(|c| c.phase == ResizePhase::Resized)
            .count();
    }
    // A burst of ten, then one a minute.
    assert!((60..=75).contains(&resized), "{resized}");
    assert!(elastic.suppressed() > 250, "{}", elastic.suppressed());
}

#[test]
fn host_requests_are_never_held_back() {
    let mut elastic = VmElastic::new(360);
    let at = start();
    let mut requested = 0;
    for n in 0..100u64 {
        requested += elastic
            .observe(
                &vm(),
                at + POLL * n as u32,
                vec![device(1024 + n * 2, 1024 + n * 2)],
                DEFAULT_CONVERGE_TIMEOUT,
            )
            .iter()
            .filter(|c| c.phase == ResizePhase::Requested)
            .count();
    }
    assert_eq!(requested, 99);
}

#[test]
fn rollups_history_and_events_from_libvirt() {
    let mut elastic = VmElastic::new(3);
    let at = start();
    run(
        &mut elastic,
        at,
        &[(2048, 2048), (1024, 2048), (1024, 1536)],
    );
    let rollups = elastic.finish_period(at + Duration::from_secs(60));
    assert_eq!(rollups.len(), 1);
    let rollup = &rollups[0];
    assert_eq!(rollup.id, "virtiomem0");
    assert_eq!(rollup.requested_kib.min, Some(1024 * MIB));
    assert_eq!(rollup.requested_kib.max, Some(2048 * MIB));
    assert_eq!(rollup.plugged_kib.last, Some(1536 * MIB));
    assert_eq!(rollup.plugged_kib.min, Some(1536 * MIB));
    // Unconverged since the request at 10 s; the period ended at 60 s.
    assert_eq!(rollup.unconverged_secs, Some(50));
    assert!(elastic
        .finish_period(at + Duration::from_secs(120))
        .is_empty());
    // The ring keeps three polls: the sums of each.
    assert!(elastic.totals_at(at).is_some());
    run(&mut elastic, at + POLL * 3, &[(1024, 1024)]);
    assert_eq!(elastic.totals_at(at), None, "pushed out by the fourth");
    let totals = elastic.totals_at(at + POLL * 3).expect("poll");
    assert_eq!(totals.plugged_kib, Some(1024 * MIB));
    assert_eq!(totals.unplugged_kib(), Some(3072 * MIB));
    let before = elastic
        .totals_until(at + POLL * 2 + Duration::from_secs(5))
        .expect("poll");
    assert_eq!(before.plugged_kib, Some(1536 * MIB));
    assert_eq!(before.sampled_at_ms, Some(epoch_ms(at + POLL * 2)));
    // A pushed size between polls: resized at once; the same size again is nothing.
    let event = elastic
        .apply_size_event(&vm(), at + POLL * 4, "virtiomem0", 512 * MIB)
        .expect("resized");
    assert_eq!(event.phase, ResizePhase::Resized);
    assert_eq!(event.previous_plugged_kib, Some(1024 * MIB));
    assert_eq!(event.plugged_kib, Some(512 * MIB));
    assert!(elastic
        .apply_size_event(&vm(), at + POLL * 4, "virtiomem0", 512 * MIB)
        .is_none());
    assert!(elastic
        .apply_size_event(&vm(), at + POLL * 4, "nope", 1)
        .is_none());
    assert!(elastic
        .apply_size_event(&vm(), at + POLL * 4, "virtiomem0", u64::MAX)
        .is_none());
}

#[test]
fn a_guest_cannot_make_the_agent_keep_more_than_sixteen_devices() {
    let mut elastic = VmElastic::new(10);
    let many: Vec<VirtioMemDevice> = (0..1000)
        .map(|n| VirtioMemDevice {
            id: format!("d{n}"),
            ..device(1, 1)
        })
        .collect();
    elastic.observe(&vm(), start(), many, DEFAULT_CONVERGE_TIMEOUT);
    assert_eq!(elastic.devices().count(), MAX_DEVICES);
    // A device no longer listed is forgotten.
    elastic.observe(
        &vm(),
        start() + POLL,
        vec![device(1, 1)],
        DEFAULT_CONVERGE_TIMEOUT,
    );
    assert_eq!(elastic.devices().count(), 1);
}

#[test]
fn the_ring_holds_sixteen_byte_points_and_grows_only_to_its_capacity() {
    assert_eq!(std::mem::size_of::<RingPoint>(), 16);
    let mut elastic = VmElastic::new(20);
    let at = start();
    for n in 0..50u64 {
        elastic.observe(
            &vm(),
            at + POLL * n as u32,
            vec![device(1024, 1024)],
            DEFAULT_CONVERGE_TIMEOUT,
        );
    }
    assert_eq!(elastic.ring.len(), 20);
    assert!(elastic.ring.capacity() <= 24, "{}", elastic.ring.capacity());
    assert!(elastic.totals_at(at + POLL * 29).is_none());
    assert_eq!(
        elastic
            .totals_at(at + POLL * 30)
            .and_then(|t| t.requested_kib),
        Some(1024 * MIB)
    );
}
