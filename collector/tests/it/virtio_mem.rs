//! virtio-mem over real loopback HTTP (issue 20 item 1): an agent's rollups with
//! virtio-mem devices and its resize events POSTed to the collector (validated like
//! any batch), the memory points' sums on `/api/v1/vms/{host}/{uuid}/memory`, the
//! resizes on `/memory-devices` (newest first, paged, filtered by phase), the counts on
//! `/metrics`. On SQLite and on a real PostgreSQL.
#![allow(clippy::tests_outside_test_module)]

use crate::pressure::{get, get_json, post, recent_minute, serve};
use crate::util;

use std::sync::Arc;

use ballast_collector::storage::postgres::PostgresStore;
use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::Store;
use ballast_model::ResizePhase;

use util::client::client;
use util::virtio_mem::{device, resize, vmem_rollup};
use util::{LAB_UUID, MIB, TOR_UUID};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtio_mem_reads_back_over_http_and_counts_on_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("sqlite");
    virtio_mem_over_http(Arc::new(store)).await;
}

/// The same over a real PostgreSQL (a throwaway cluster from `ballast-testpg`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtio_mem_reads_back_over_http_on_postgresql() {
    let Some(cluster) = util::pg_cluster() else {
        return;
    };
    let url = cluster.create_database().expect("createdb");
    let store = PostgresStore::open(&url, 2).await.expect("postgres");
    virtio_mem_over_http(Arc::new(store)).await;
}

async fn virtio_mem_over_http(store: Arc<dyn Store>) {
    let server = serve(store).await;
    let (base, client) = (server.base.clone(), client());
    let start = recent_minute();
    let mut events = vec![
        vmem_rollup(
            "pve1/r/0",
            LAB_UUID,
            start,
            vec![device("dimm0", 1024 * MIB, 1024 * MIB)],
        ),
        vmem_rollup(
            "pve1/r/1",
            LAB_UUID,
            start + 60_000,
            vec![device("dimm0", 768 * MIB, 256 * MIB)],
        ),
        util::rollup("pve1/r/tor", TOR_UUID, start, 256 * MIB),
    ];
    for (i, (phase, after, plugged)) in [
        (ResizePhase::Requested, 5_000, 1024),
        (ResizePhase::Resized, 25_000, 768),
        (ResizePhase::Stuck, 65_000, 768),
    ]
    .into_iter()
    .enumerate()
    {
        events.push(resize(
            &format!("pve1/md/{i}"),
            LAB_UUID,
            "dimm0",
            start + after,
            phase,
            256 * MIB,
            plugged * MIB,
        ));
    }
    let batch = util::batch("pve1", events);
    let (status, answer) = post(&client, &base, &batch).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(6)),
        "{answer}"
    );
    let (status, answer) = post(&client, &base, &batch).await;
    assert_eq!(
        (status, answer["duplicates"].as_u64()),
        (200, Some(6)),
        "a re-sent batch stores nothing twice"
    );

    let since = start - 60_000;
    let memory = get_json(
        &client,
        &format!("{base}/api/v1/vms/pve1/{LAB_UUID}/memory?since={since}"),
    )
    .await;
    let points = memory["points"].as_array().expect("points");
    assert_eq!(points.len(), 2);
    assert_eq!(points[1]["plugged_kib"]["last"], 768 * MIB);
    assert_eq!(points[1]["requested_kib"]["last"], 256 * MIB);
    assert_eq!(points[1]["virtio_mem_max_kib"], 1024 * MIB);
    assert_eq!(points[1]["virtio_mem_unconverged_secs"], 30);
    assert_eq!(
        points[1]["actual_kib"]["last"],
        512 * MIB,
        "the balloon beside it"
    );
    assert!(
        points[1].get("devices").is_none(),
        "devices only when asked"
    );
    let with_devices = get_json(
        &client,
        &format!("{base}/api/v1/vms/pve1/{LAB_UUID}/memory?since={since}&devices=true"),
    )
    .await;
    let listed: Vec<(String, u64)> = with_devices["points"]
        .as_array()
        .expect("points")
        .iter()
        .flat_map(|p| p["devices"].as_array().cloned().unwrap_or_default())
        .map(|d| {
            (
                d["device"].as_str().unwrap_or_default().to_string(),
                d["plugged_kib"]["last"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("dimm0".to_string(), 1024 * MIB),
            ("dimm0".to_string(), 768 * MIB)
        ],
        "each point its own period's device"
    );
    let hours = get_json(
        &client,
        &format!(
            "{base}/api/v1/vms/pve1/{LAB_UUID}/memory?since={since}&devices=true&resolution=hour"
        ),
    )
    .await;
    let folded: Vec<&serde_json::Value> = hours["points"]
        .as_array()
        .expect("points")
        .iter()
        .flat_map(|p| p["devices"].as_array().into_iter().flatten())
        .collect();
    assert!(!folded.is_empty() && folded.len() <= 2, "{hours}");
    let lowest = folded
        .iter()
        .filter_map(|d| d["plugged_kib"]["min"].as_u64())
        .min();
    let highest = folded
        .iter()
        .filter_map(|d| d["plugged_kib"]["max"].as_u64())
        .max();
    assert_eq!((lowest, highest), (Some(768 * MIB), Some(1024 * MIB)));
    assert!(folded.iter().all(|d| d["period_secs"] == 3600));
    let tor = get_json(
        &client,
        &format!("{base}/api/v1/vms/pve1/{TOR_UUID}/memory?since={since}&devices=true"),
    )
    .await;
    let tor_point = &tor["points"][0];
    assert!(tor_point.is_object(), "{tor}");
    for absent in [
        "plugged_kib",
        "requested_kib",
        "virtio_mem_max_kib",
        "devices",
    ] {
        assert!(tor_point.get(absent).is_none(), "{absent} in {tor_point}");
    }

    let devices = |query: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            get_json(
                &client,
                &format!("{base}/api/v1/vms/pve1/{LAB_UUID}/memory-devices{query}"),
            )
            .await
        }
    };
    let first = devices("?limit=2".into()).await;
    assert_eq!(
        (first["host"].as_str(), first["uuid"].as_str()),
        (Some("pve1"), Some(LAB_UUID))
    );
    let phases = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|e| e["phase"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(phases(&first), ["stuck", "resized"], "newest first");
    let stuck = &first["items"][0];
    assert_eq!(stuck["device"], "dimm0");
    assert_eq!(stuck["at_ms"], start + 65_000);
    assert_eq!(stuck["requested_kib"], 256 * MIB);
    assert_eq!(stuck["plugged_kib"], 768 * MIB);
    assert_eq!(stuck["unconverged_since_ms"], start + 35_000);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = devices(format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(phases(&second), ["requested"]);
    assert!(second["next_cursor"].is_null(), "the last page");
    assert_eq!(phases(&devices("?phase=stuck".into()).await), ["stuck"]);
    assert!(
        phases(&devices(format!("?until={}", start + 5_000)).await).is_empty(),
        "until is exclusive"
    );
    let other = get_json(
        &client,
        &format!("{base}/api/v1/vms/pve1/{TOR_UUID}/memory-devices"),
    )
    .await;
    assert!(
        phases(&other).is_empty(),
        "another VM's resizes are its own"
    );
    for (bad, field) in [
        ("?phase=shrunk", "phase"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?cursor=nonsense", "cursor"),
    ] {
        let (status, body) = get(
            &client,
            &format!("{base}/api/v1/vms/pve1/{LAB_UUID}/memory-devices{bad}"),
        )
        .await;
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some(field)),
            "{bad}"
        );
    }
    let (status, _) = get(
        &client,
        &format!("{base}/api/v1/vms/pve1/{LAB_UUID}/memory-devices?colour=red"),
    )
    .await;
    assert_eq!(status, 400, "an unknown parameter");

    let metrics = |client: util::client::HttpClient, base: String| async move {
        let (_, text) = get(&client, &format!("{base}/metrics")).await;
        String::from_utf8(text).expect("utf-8")
    };
    let text = metrics(client.clone(), base.clone()).await;
    for line in [
        "ballast_collector_memory_device_events_total{phase=\"requested\"} 1",
        "ballast_collector_memory_device_events_total{phase=\"resized\"} 1",
        "ballast_collector_memory_device_events_total{phase=\"stuck\"} 1",
        "ballast_collector_memory_device_events_total{phase=\"converged\"} 0",
        "ballast_collector_vms_with_stuck_resize 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }

    // The guest gives the blocks back at last: converged, nothing stuck now.
    let converged = util::batch(
        "pve1",
        vec![resize(
            "pve1/md/3",
            LAB_UUID,
            "dimm0",
            start + 95_000,
            ResizePhase::Converged,
            256 * MIB,
            256 * MIB,
        )],
    );
    let (status, answer) = post(&client, &base, &converged).await;
    assert_eq!(status, 200, "{answer}");
    let text = metrics(client.clone(), base.clone()).await;
    for line in [
        "ballast_collector_memory_device_events_total{phase=\"converged\"} 1",
        "ballast_collector_vms_with_stuck_resize 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }

    // A device id no agent could send is refused by its field's path.
    let mut bad = resize(
        "pve1/md/9",
        LAB_UUID,
        "",
        start + 99_000,
        ResizePhase::Requested,
        256 * MIB,
        256 * MIB,
    );
    let (status, answer) = post(&client, &base, &util::batch("pve1", vec![bad.clone()])).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "events[0].device");
    if let ballast_model::Event::MemoryDevice(change) = &mut bad.event {
        change.device = "x".repeat(129);
    }
    let (status, answer) = post(&client, &base, &util::batch("pve1", vec![bad])).await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (422, Some("events[0].device")),
        "{answer}"
    );
    let _ = server.stop.send(());
    server.task.await.expect("join").expect("serve");
}
