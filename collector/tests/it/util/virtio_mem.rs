//! virtio-mem builders and storage cases (issue 20 item 1), run on SQLite files and on
//! a real PostgreSQL server like the rest of the suite.

use std::sync::Arc;

use ballast_collector::retention::{self, RetentionSettings};
use ballast_collector::storage::queries::{self, Resolution};
use ballast_collector::storage::virtio_mem_reads::{self as reads, MemoryDeviceFilter};
use ballast_collector::storage::Store;
use ballast_model::{
    Envelope, Event, MemoryDeviceChange, MinMaxLast, ResizePhase, VirtioMemRollup, VmRef,
};

use super::*;

fn flat(kib: u64) -> MinMaxLast {
    MinMaxLast {
        min: Some(kib),
        max: Some(kib),
        last: Some(kib),
    }
}

/// A device of 1 GiB in 2 MiB blocks on node 0, `plugged` of `requested` plugged.
pub fn device(id: &str, plugged_kib: u64, requested_kib: u64) -> VirtioMemRollup {
    VirtioMemRollup {
        id: id.into(),
        node: Some(0),
        block_size_kib: Some(2 * MIB),
        max_size_kib: Some(1024 * MIB),
        requested_kib: flat(requested_kib),
        plugged_kib: flat(plugged_kib),
        unconverged_secs: (plugged_kib != requested_kib).then_some(30),
    }
}

/// [`rollup`] (balloon at 512 MiB) with `devices`.
pub fn vmem_rollup(
    key: &str,
    uuid: &str,
    period_start_ms: i64,
    devices: Vec<VirtioMemRollup>,
) -> Envelope {
    let mut envelope = rollup(key, uuid, period_start_ms, 512 * MIB);
    if let Event::Rollup(rollup) = &mut envelope.event {
        rollup.virtio_mem = devices;
    }
    envelope
}

/// A resize event of `uuid`'s `device` seen at `at_ms`.
pub fn resize(
    key: &str,
    uuid: &str,
    device: &str,
    at_ms: i64,
    phase: ResizePhase,
    requested_kib: u64,
    plugged_kib: u64,
) -> Envelope {
    Envelope {
        key: key.into(),
        captured_at_ms: at_ms,
        event: Event::MemoryDevice(Box::new(MemoryDeviceChange {
            vm: VmRef {
                uuid: uuid.into(),
                name: format!("vm-{}", &uuid[uuid.len() - 3..]),
            },
            device: device.into(),
            phase,
            requested_kib: Some(requested_kib),
            plugged_kib: Some(plugged_kib),
            previous_requested_kib: Some(1024 * MIB),
            previous_plugged_kib: Some(1024 * MIB),
            block_size_kib: Some(2 * MIB),
            max_size_kib: Some(1024 * MIB),
            unconverged_since_ms: (phase == ResizePhase::Stuck).then_some(at_ms - 30_000),
        })),
    }
}

/// A rollup's devices are summed on its memory point and kept per device; resize
/// events are stored once each, listed newest first in pages, and a stuck one counts
/// until the device converges.
pub async fn virtio_mem_is_stored_once(store: Arc<dyn Store>) {
    let start = oom_at_ms() - 10 * 60_000;
    let mut events = Vec::new();
    for minute in 0..3 {
        // vm0 is asked down to 256 MiB and gets stuck at 768; vm1 stays whole.
        let plugged = [1024, 768, 768][minute];
        events.push(vmem_rollup(
            &format!("pve1/r/{minute}"),
            LAB_UUID,
            start + i64::try_from(minute).unwrap_or(0) * 60_000,
            vec![
                device("vm0", plugged * MIB, 256 * MIB),
                device("vm1<b>\0", 512 * MIB, 512 * MIB),
            ],
        ));
    }
    events.push(rollup("pve1/r/tor", TOR_UUID, start, 256 * MIB));
    let resizes = [
        (ResizePhase::Requested, 0, 1024),
        (ResizePhase::Resized, 20_000, 768),
        (ResizePhase::Stuck, 60_000, 768),
    ];
    for (i, (phase, after, plugged)) in resizes.into_iter().enumerate() {
        events.push(resize(
            &format!("pve1/md/{i}"),
            LAB_UUID,
            "vm0",
            start + after,
            phase,
            256 * MIB,
            plugged * MIB,
        ));
    }
    let first = store
        .ingest(prepared(batch("pve1", events.clone())))
        .await
        .expect("ingest");
    assert_eq!((first.accepted, first.duplicates), (7, 0));
    let again = store
        .ingest(prepared(batch("pve1", events)))
        .await
        .expect("resend");
    assert_eq!((again.accepted, again.duplicates), (0, 7), "each key once");

    let points = queries::vm_memory(
        store.as_ref(),
        "pve1",
        LAB_UUID,
        0,
        i64::MAX,
        100,
        Resolution::Stored,
    )
    .await
    .expect("memory")
    .points;
    assert_eq!(points.len(), 3);
    let last = &points[2].virtio_mem;
    assert_eq!(
        last.plugged_kib.and_then(|p| p.last),
        Some((768 + 512) * MIB),
        "plugged summed over both devices"
    );
    assert_eq!(
        last.requested_kib.and_then(|p| p.last),
        Some((256 + 512) * MIB)
    );
    assert_eq!(last.max_kib, Some(2048 * MIB));
    assert_eq!(last.unconverged_secs, Some(30));
    let json = serde_json::to_value(&points[0]).expect("json");
    assert_eq!(json["plugged_kib"]["last"], (1024 + 512) * MIB);
    assert_eq!(json["virtio_mem_max_kib"], 2048 * MIB);
    let tor = queries::vm_memory(
        store.as_ref(),
        "pve1",
        TOR_UUID,
        0,
        i64::MAX,
        100,
        Resolution::Stored,
    )
    .await
    .expect("tor")
    .points;
    let tor_json = serde_json::to_value(&tor[0]).expect("json");
    for absent in ["plugged_kib", "requested_kib", "virtio_mem_max_kib"] {
        assert!(
            tor_json.get(absent).is_none(),
            "a VM without virtio-mem has no {absent}: {tor_json}"
        );
    }

    let history = reads::vm_device_history(
        store.as_ref(),
        &["pve1".to_string()],
        LAB_UUID,
        0,
        i64::MAX,
        100,
    )
    .await
    .expect("devices");
    assert_eq!(history.len(), 6, "two devices a minute, stored once");
    assert_eq!(history[0].device, "vm0");
    assert_eq!(history[0].plugged_kib.last, Some(1024 * MIB));
    assert_eq!(history[0].block_size_kib, Some(2 * MIB));
    assert_eq!(history[0].node, Some(0));
    assert_eq!(
        history[1].device, "vm1<b>\u{FFFD}",
        "NUL replaced, text kept"
    );

    let page = |cursor, limit| {
        let store = Arc::clone(&store);
        async move {
            reads::vm_memory_devices(
                store.as_ref(),
                "pve1",
                LAB_UUID,
                &MemoryDeviceFilter {
                    cursor,
                    limit,
                    ..MemoryDeviceFilter::default()
                },
            )
            .await
            .expect("page")
        }
    };
    let newest = page(None, 2).await;
    let phases: Vec<ResizePhase> = newest.items.iter().map(|e| e.phase).collect();
    assert_eq!(phases, [ResizePhase::Stuck, ResizePhase::Resized]);
    let stuck = &newest.items[0];
    assert_eq!(
        (stuck.device.as_str(), stuck.at_ms),
        ("vm0", start + 60_000)
    );
    assert_eq!(stuck.requested_kib, Some(256 * MIB));
    assert_eq!(stuck.plugged_kib, Some(768 * MIB));
    assert_eq!(stuck.unconverged_since_ms, Some(start + 30_000));
    let cursor = newest
        .next_cursor
        .as_deref()
        .and_then(queries::parse_cursor)
        .expect("a next page");
    let older = page(Some(cursor), 2).await;
    let phases: Vec<ResizePhase> = older.items.iter().map(|e| e.phase).collect();
    assert_eq!(phases, [ResizePhase::Requested]);
    assert_eq!(older.next_cursor, None, "the last page");
    assert!(
        page(None, 10)
            .await
            .items
            .iter()
            .all(|e| e.uuid == LAB_UUID),
        "this VM's only"
    );

    assert_eq!(
        reads::vms_with_stuck_resize(store.as_ref())
            .await
            .expect("stuck"),
        1
    );
    // A partial move leaves it stuck; converging ends it.
    store
        .ingest(prepared(batch(
            "pve1",
            vec![resize(
                "pve1/md/3",
                LAB_UUID,
                "vm0",
                start + 90_000,
                ResizePhase::Resized,
                256 * MIB,
                512 * MIB,
            )],
        )))
        .await
        .expect("resized");
    assert_eq!(
        reads::vms_with_stuck_resize(store.as_ref())
            .await
            .expect("stuck"),
        1
    );
    store
        .ingest(prepared(batch(
            "pve1",
            vec![resize(
                "pve1/md/4",
                LAB_UUID,
                "vm0",
                start + 120_000,
                ResizePhase::Converged,
                256 * MIB,
                256 * MIB,
            )],
        )))
        .await
        .expect("converged");
    assert_eq!(
        reads::vms_with_stuck_resize(store.as_ref())
            .await
            .expect("stuck"),
        0
    );
}

/// Device rows fold into hours with their rollups, and go with them after
/// `retention.rollup_days`, as do the resize events.
pub async fn virtio_mem_compacts_and_expires_with_the_rollups(store: Arc<dyn Store>) {
    const HOUR: i64 = 3_600_000;
    let start = (oom_at_ms() / HOUR) * HOUR - 2 * HOUR;
    let mut events = Vec::new();
    for minute in 0..120_i64 {
        // vm0 goes from 1024 down to 256 MiB over the first hour, then stays.
        let plugged = 1024u64
            .saturating_sub(u64::try_from(minute).unwrap_or(0) * 13)
            .max(256);
        events.push(vmem_rollup(
            &format!("pve1/r/{minute}"),
            LAB_UUID,
            start + minute * 60_000,
            vec![
                device("vm0", plugged * MIB, 256 * MIB),
                device("vm1", 512 * MIB, 512 * MIB),
            ],
        ));
    }
    events.push(resize(
        "pve1/md/0",
        LAB_UUID,
        "vm0",
        start + 10_000,
        ResizePhase::Requested,
        256 * MIB,
        1024 * MIB,
    ));
    store
        .ingest(prepared(batch("pve1", events)))
        .await
        .expect("ingest");
    let settings = RetentionSettings {
        rollups: std::time::Duration::from_secs(30 * 86_400),
        minute_rollups: std::time::Duration::from_secs(3600),
        ooms: std::time::Duration::from_secs(365 * 86_400),
        interval: std::time::Duration::from_secs(3600),
        batch_rows: 17,
    };
    let done = retention::run_pass(store.as_ref(), &settings, start + 2 * HOUR + 10 * 60_000)
        .await
        .expect("retention");
    assert_eq!(
        done.compacted,
        60 + 2 * 60,
        "the first hour's rollups and their two devices each"
    );
    let history = reads::vm_device_history(
        store.as_ref(),
        &["pve1".to_string()],
        LAB_UUID,
        0,
        i64::MAX,
        1000,
    )
    .await
    .expect("devices");
    assert_eq!(
        history.len(),
        2 + 2 * 60,
        "an hourly row per device, then minutes"
    );
    let hour_vm0 = history
        .iter()
        .find(|p| p.period_secs == 3600 && p.device == "vm0")
        .expect("vm0's hour");
    assert_eq!(hour_vm0.period_start_ms, start);
    assert_eq!(hour_vm0.plugged_kib.max, Some(1024 * MIB));
    assert_eq!(hour_vm0.plugged_kib.min, Some(257 * MIB), "1024 - 59 x 13");
    assert_eq!(
        hour_vm0.plugged_kib.last,
        Some(257 * MIB),
        "the hour's last minute"
    );
    assert_eq!(hour_vm0.requested_kib.last, Some(256 * MIB));
    assert_eq!(hour_vm0.max_size_kib, Some(1024 * MIB));
    let stored = queries::vm_memory(
        store.as_ref(),
        "pve1",
        LAB_UUID,
        0,
        i64::MAX,
        1000,
        Resolution::Stored,
    )
    .await
    .expect("memory")
    .points;
    assert_eq!(stored.len(), 1 + 60);
    let hour = &stored[0].virtio_mem;
    assert_eq!(
        hour.plugged_kib.and_then(|p| p.last),
        Some((257 + 512) * MIB)
    );
    assert_eq!(
        hour.plugged_kib.and_then(|p| p.max),
        Some((1024 + 512) * MIB)
    );
    assert_eq!(hour.max_kib, Some(2048 * MIB));
    let hourly = queries::vm_memory(
        store.as_ref(),
        "pve1",
        LAB_UUID,
        0,
        i64::MAX,
        1000,
        Resolution::Hour,
    )
    .await
    .expect("hourly")
    .points;
    assert_eq!(hourly.len(), 2);
    assert_eq!(
        hourly[1].virtio_mem.plugged_kib.and_then(|p| p.min),
        Some((256 + 512) * MIB),
        "the second hour folded on read"
    );

    // Thirty days on, everything of the VM's virtio-mem is gone with its rollups.
    let later = start + 31 * 86_400_000;
    retention::run_pass(store.as_ref(), &settings, later)
        .await
        .expect("retention");
    let history = reads::vm_device_history(
        store.as_ref(),
        &["pve1".to_string()],
        LAB_UUID,
        0,
        i64::MAX,
        1000,
    )
    .await
    .expect("devices");
    assert!(history.is_empty(), "{history:?}");
    let events = reads::vm_memory_devices(
        store.as_ref(),
        "pve1",
        LAB_UUID,
        &MemoryDeviceFilter {
            limit: 10,
            ..MemoryDeviceFilter::default()
        },
    )
    .await
    .expect("events");
    assert!(events.items.is_empty());
}
