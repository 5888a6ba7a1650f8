//! The run loop's virtio-mem path with the fake hypervisor: resize events with
//! their keys, libvirt's pushed size, the inventory's devices.

use std::sync::Arc;

use ballast_model::{Envelope, Event, ResizePhase, VirtioMemDevice};

use super::*;
use crate::config::RawConfig;
use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
use crate::hypervisor::{BalloonSample, DomainConfig, DomainEvent, DomainId, Hypervisor};

fn device(requested_mib: u64, plugged_mib: u64) -> VirtioMemDevice {
    VirtioMemDevice {
        id: "virtiomem0".into(),
        node: Some(0),
        block_size_kib: Some(2048),
        max_size_kib: Some(4096 * 1024),
        requested_kib: Some(requested_mib * 1024),
        plugged_kib: Some(plugged_mib * 1024),
    }
}

fn events(path: &std::path::Path) -> Vec<Envelope> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Envelope>(line).ok())
        .collect()
}

#[test]
fn a_stuck_unplug_is_reported_within_two_polls_and_its_convergence_with_fake_hypervisor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = Arc::new(FakeHypervisor::new());
    let id = DomainId {
        uuid: "5d1c7a0e-9f4b-4c62-8d1e-2b7f3a9c6e10".into(),
        name: "elastic".into(),
    };
    let sample = |requested, plugged| BalloonSample {
        actual_kib: Some(1024 * 1024),
        maximum_kib: Some(1024 * 1024),
        virtio_mem: vec![device(requested, plugged)],
        ..BalloonSample::default()
    };
    hypervisor.set(
        id.clone(),
        FakeDomain {
            running: true,
            sample: sample(2048, 2048),
            config: DomainConfig {
                balloon_present: true,
                virtio_mem: vec![device(2048, 2048)],
                ..DomainConfig::default()
            },
            ..FakeDomain::default()
        },
    );
    let yaml = format!(
        "state_dir: {}\ncapture:\n  host_kernel: false\n  guest_agent: off\nelastic:\n  converge_timeout_secs: 600\n",
        dir.path().join("state").display()
    );
    let settings = RawConfig::from_yaml(&yaml, std::path::Path::new("test.yaml"))
        .expect("yaml")
        .validate("host")
        .expect("settings");
    let handles = Handles::new(&settings);
    let fleet = handles.fleet.clone();
    let path = dir.path().join("events.jsonl");
    let mut monitor = Monitor::new(
        settings,
        Arc::clone(&hypervisor) as Arc<dyn Hypervisor>,
        Box::new(JsonLinesOutlet::new(path.clone())),
        handles,
    );
    // The host lowers the request to 1 GiB after the first poll; the guest unplugs
    // nothing for three polls, then all of it.
    for (requested, plugged) in [(2048, 2048), (1024, 2048), (1024, 2048), (1024, 2048)] {
        hypervisor.update(&id, |domain| domain.sample = sample(requested, plugged));
        monitor.poll();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(fleet
        .lock()
        .get(&id.uuid)
        .and_then(|vm| vm.elastic.as_ref())
        .is_some_and(|elastic| elastic.devices().all(|d| d.stuck)));
    hypervisor.update(&id, |domain| domain.sample = sample(1024, 1024));
    monitor.poll();
    // libvirt pushes a size between polls (a millisecond later: keys carry the time).
    std::thread::sleep(std::time::Duration::from_millis(5));
    let (sender, receiver) = std::sync::mpsc::channel();
    monitor.events = Some(receiver);
    sender
        .send(DomainEvent::MemoryDeviceSizeChange {
            id: id.clone(),
            device: "virtiomem0".into(),
            plugged_kib: 1000 * 1024,
            at: std::time::SystemTime::now(),
        })
        .expect("send");
    monitor.drain_events();

    let all = events(&path);
    let changes: Vec<(&Envelope, &ballast_model::MemoryDeviceChange)> = all
        .iter()
        .filter_map(|envelope| match &envelope.event {
            Event::MemoryDevice(change) => Some((envelope, &**change)),
            _ => None,
        })
        .collect();
    let phases: Vec<ResizePhase> = changes.iter().map(|(_, c)| c.phase).collect();
    assert_eq!(
        phases,
        [
            ResizePhase::Requested,
            ResizePhase::Stuck,
            ResizePhase::Resized,
            ResizePhase::Converged,
            ResizePhase::Resized
        ],
        "{changes:?}"
    );
    let (stuck_envelope, stuck) = changes[1];
    assert_eq!(stuck.requested_kib, Some(1024 * 1024));
    assert_eq!(stuck.plugged_kib, Some(2048 * 1024));
    assert_eq!(
        stuck.unconverged_since_ms,
        Some(changes[0].0.captured_at_ms)
    );
    assert_eq!(
        stuck_envelope.key,
        format!(
            "host/memory_device/{}/virtiomem0/stuck/{}",
            id.uuid, stuck_envelope.captured_at_ms
        )
    );
    assert_eq!(changes[4].1.previous_plugged_kib, Some(1024 * 1024));
    assert_eq!(changes[4].1.plugged_kib, Some(1000 * 1024));
    // The keys are unique: the collector keeps each change once.
    let mut keys: Vec<&str> = changes.iter().map(|(e, _)| e.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), changes.len());
    // Every event passes the collector's validation.
    let batch = ballast_model::Batch {
        schema_version: ballast_model::SCHEMA_VERSION,
        host_id: "host".into(),
        agent_version: "test".into(),
        events: all.clone(),
    };
    let now_ms = crate::wire::epoch_ms(std::time::SystemTime::now());
    ballast_model::validate(&batch, &ballast_model::Limits::default(), now_ms).expect("valid");
    // The inventory lists the configured device.
    let inventory = all
        .iter()
        .find_map(|envelope| match &envelope.event {
            Event::Inventory(inventory) => Some(inventory),
            _ => None,
        })
        .expect("inventory");
    assert_eq!(inventory.vms[0].config.virtio_mem, vec![device(2048, 2048)]);

    // The VM goes away: its open minute's rollup goes out with the device's part.
    hypervisor.update(&id, |domain| domain.running = false);
    monitor.poll();
    // The last rollup: a minute may have ended during the test.
    let rollup = events(&path)
        .into_iter()
        .filter_map(|envelope| match envelope.event {
            Event::Rollup(rollup) => Some(rollup),
            _ => None,
        })
        .next_back()
        .expect("rollup");
    assert_eq!(rollup.virtio_mem.len(), 1, "{rollup:?}");
    let part = &rollup.virtio_mem[0];
    assert_eq!(part.id, "virtiomem0");
    assert_eq!(part.max_size_kib, Some(4096 * 1024));
    assert_eq!(part.plugged_kib.last, Some(1000 * 1024), "the pushed size");
    assert_eq!(part.requested_kib.last, Some(1024 * 1024));
    assert!(part.plugged_kib.max >= Some(1024 * 1024));
}
