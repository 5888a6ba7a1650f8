//! The VM page's virtio-mem chart in a real headless Chromium (issue 20 item 1): a
//! collector on 127.0.0.1:0 over a temporary SQLite store, fed through the HTTP ingest
//! API; a VM whose host lowered its virtio-mem request and whose guest got stuck
//! unplugging, beside a VM without virtio-mem. The screenshot is kept in
//! artifacts/screenshots/vm-virtio-mem.png.
#![allow(clippy::tests_outside_test_module)]

use crate::dashboard_browser::{dump_dom, screenshot};
use crate::pressure::{post, recent_minute, serve};
use crate::util;

use std::sync::Arc;

use ballast_collector::storage::sqlite::SqliteStore;
use ballast_model::{Event, Inventory, ResizePhase, VmInventory, VmRef};

use util::client::client;
use util::virtio_mem::{device, resize, vmem_rollup};
use util::{lab_config, MIB};

const ELASTIC: &str = "6a000000-0000-4000-8000-0000000000e1";
const PLAIN: &str = "6a000000-0000-4000-8000-0000000000e2";
const EVIL_DEVICE: &str = "dimm<img src=x onerror=alert(1)>";

/// The `points` of the first `<polyline>` of class `class` in `svg`, as (x, y).
fn polyline(svg: &str, class: &str) -> Vec<(f64, f64)> {
    let marker = format!("class=\"series {class}\" points=\"");
    let Some(at) = svg.find(&marker) else {
        return Vec::new();
    };
    let rest = &svg[at + marker.len()..];
    rest[..rest.find('"').unwrap_or(0)]
        .split_whitespace()
        .filter_map(|pair| {
            let (x, y) = pair.split_once(',')?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_page_charts_virtio_mem_beside_the_balloon_with_resize_markers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("sqlite");
    let server = serve(Arc::new(store)).await;
    let (base, client) = (server.base.clone(), client());
    // Twelve hours, a rollup every 5 minutes (so the 24 h chart is half drawn).
    const STEP: i64 = 5 * 60_000;
    let start = recent_minute() - 144 * STEP;
    let named = |uuid: &str, name: &str| VmRef {
        uuid: uuid.into(),
        name: name.into(),
    };
    let mut events = vec![ballast_model::Envelope {
        key: "pve1/inv".into(),
        captured_at_ms: start,
        event: Event::Inventory(Inventory {
            vms: [(ELASTIC, "elastic"), (PLAIN, "plain")]
                .into_iter()
                .map(|(uuid, name)| VmInventory {
                    openstack: Default::default(),
                    vm: named(uuid, name),
                    state: ballast_model::VmState::Running,
                    config: lab_config(),
                    findings: Vec::new(),
                })
                .collect(),
        }),
    }];
    // Step 72 (6 h in): the host asks dimm0 down from 1024 to 256 MiB; the guest
    // unplugs to 768 by step 74 and gets no further (stuck at 75). The second device
    // stays whole.
    for step in 0..144_i64 {
        let (requested, plugged) = match step {
            0..=71 => (1024, 1024),
            72 => (256, 1024),
            73 => (256, 896),
            _ => (256, 768),
        };
        events.push(vmem_rollup(
            &format!("pve1/r/e/{step}"),
            ELASTIC,
            start + step * STEP,
            vec![
                device("dimm0", plugged * MIB, requested * MIB),
                device(EVIL_DEVICE, 512 * MIB, 512 * MIB),
            ],
        ));
        events.push(util::rollup(
            &format!("pve1/r/p/{step}"),
            PLAIN,
            start + step * STEP,
            384 * MIB,
        ));
    }
    for (i, (phase, at_step, plugged)) in [
        (ResizePhase::Requested, 72, 1024),
        (ResizePhase::Resized, 73, 896),
        (ResizePhase::Stuck, 75, 768),
    ]
    .into_iter()
    .enumerate()
    {
        events.push(resize(
            &format!("pve1/md/{i}"),
            ELASTIC,
            "dimm0",
            start + at_step * STEP + 30_000,
            phase,
            256 * MIB,
            plugged * MIB,
        ));
    }
    events.push(resize(
        "pve1/md/evil",
        ELASTIC,
        EVIL_DEVICE,
        start + 110 * STEP,
        ResizePhase::Requested,
        512 * MIB,
        512 * MIB,
    ));
    let (status, answer) = post(&client, &base, &util::batch("pve1", events)).await;
    assert_eq!(status, 200, "{answer}");

    let url = format!("{base}/vms/pve1/{ELASTIC}");
    let dom = dump_dom(&url).await;
    let memory_at = dom.find("id=\"memory\"").expect("memory section");
    let guard_at = dom.find("id=\"guard\"").expect("guard section");
    let memory = &dom[memory_at..guard_at];
    for label in [
        "balloon actual",
        "virtio-mem plugged",
        "virtio-mem requested",
        "virtio-mem maximum",
        "virtio-mem resize",
        "virtio-mem resize stuck",
    ] {
        assert!(
            memory.contains(&format!("</span>{label}</li>")),
            "legend {label}: {memory}"
        );
    }
    // The chart shows the unplug: plugged (1536 -> 1280 MiB summed) falls, the
    // request (1536 -> 768) falls further, below it; the maximum stays.
    let plugged = polyline(memory, "s-plugged");
    let requested = polyline(memory, "s-requested");
    let maximum = polyline(memory, "s-vmem-max");
    assert!(plugged.len() >= 100, "{}", plugged.len());
    let (first, last) = (plugged[0].1, plugged[plugged.len() - 1].1);
    assert!(
        last > first,
        "plugged falls on screen (y grows downwards): {plugged:?}"
    );
    let (r_first, r_last) = (requested[0].1, requested[requested.len() - 1].1);
    assert!(r_last > last, "the request ends below what is plugged");
    assert!((r_first - first).abs() < 0.5, "both started whole");
    assert!(
        maximum.iter().all(|(_, y)| (y - maximum[0].1).abs() < 0.01) && maximum[0].1 < first,
        "the maximum (2 GiB) is flat, above plugged"
    );
    assert_eq!(
        memory.matches("class=\"resize resize-changed\"").count(),
        3,
        "requested, resized and the second device's request"
    );
    assert_eq!(memory.matches("class=\"resize resize-stuck\"").count(), 1);
    assert!(
        memory.contains("virtio-mem dimm0 stuck at"),
        "the marker says what it is"
    );
    let escaped = "dimm&lt;img src=x onerror=alert(1)&gt;";
    assert!(memory.contains(escaped), "marker title escaped");
    let listed_at = dom.find("id=\"memory-devices\"").expect("resize list");
    let listed = &dom[listed_at..];
    assert!(listed.contains(escaped), "the list escapes the device id");
    assert_eq!(listed.matches("<tr class=\"stuck\">").count(), 1);
    assert!(listed.contains("768 MiB"), "plugged when stuck");
    assert!(!dom.contains("<img src=x"), "never markup");
    screenshot(&url, "vm-virtio-mem.png").await;

    // A VM without virtio-mem looks as before: no virtio-mem line, marker or list.
    let dom = dump_dom(&format!("{base}/vms/pve1/{PLAIN}")).await;
    assert!(dom.contains("balloon actual"));
    assert!(!dom.contains("virtio-mem"), "nothing of virtio-mem");
    assert!(!dom.contains("id=\"memory-devices\""));
    assert!(!dom.contains("class=\"resize "));
    let _ = server.stop.send(());
    server.task.await.expect("join").expect("serve");
}
