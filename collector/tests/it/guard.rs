//! The guard's actions over real loopback HTTP (issue 19 item 3): an agent's guard
//! events POSTed to the collector, stored once, read back from
//! `/api/v1/vms/{host}/{uuid}/guard` and `/api/v1/guard` (filtered), counted on
//! `/metrics`; an action no guard can take is refused by its field's path. On SQLite
//! and on a real PostgreSQL.
#![allow(clippy::tests_outside_test_module)]

use crate::pressure::{get, get_json, post, recent_minute, serve};
use crate::util;

use std::sync::Arc;

use ballast_collector::storage::postgres::PostgresStore;
use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::Store;
use ballast_model::{Event, GuardMode, GuardOutcome};

use util::client::client;
use util::{LAB_UUID, MIB, TOR_UUID};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_actions_read_back_over_http_and_count_on_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("sqlite");
    guard_over_http(Arc::new(store)).await;
}

/// The same over a real PostgreSQL (a throwaway cluster from `ballast-testpg`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_actions_read_back_over_http_on_postgresql() {
    let Some(cluster) = util::pg_cluster() else {
        return;
    };
    let url = cluster.create_database().expect("createdb");
    let store = PostgresStore::open(&url, 2).await.expect("postgres");
    guard_over_http(Arc::new(store)).await;
}

async fn guard_over_http(store: Arc<dyn Store>) {
    let server = serve(store).await;
    let (base, client) = (server.base.clone(), client());
    let start = recent_minute();
    let actions = util::batch(
        "pve1",
        vec![
            util::guard_action(
                "pve1/g/1",
                LAB_UUID,
                start,
                GuardMode::Act,
                GuardOutcome::Deflated,
                384 * MIB,
            ),
            util::guard_action(
                "pve1/g/2",
                LAB_UUID,
                start + 60_000,
                GuardMode::Act,
                GuardOutcome::RateLimited,
                448 * MIB,
            ),
            util::guard_action(
                "pve1/g/3",
                TOR_UUID,
                start + 30_000,
                GuardMode::Observe,
                GuardOutcome::WouldDeflate,
                256 * MIB,
            ),
        ],
    );
    let (status, answer) = post(&client, &base, &actions).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(3)),
        "{answer}"
    );
    let (status, answer) = post(&client, &base, &actions).await;
    assert_eq!(
        (
            status,
            answer["accepted"].as_u64(),
            answer["duplicates"].as_u64()
        ),
        (200, Some(0), Some(3)),
        "a re-sent batch stores nothing twice"
    );

    let since = start - 60_000;
    let vm = get_json(
        &client,
        &format!("{base}/api/v1/vms/pve1/{LAB_UUID}/guard?since={since}"),
    )
    .await;
    assert_eq!(vm["host"], "pve1");
    let listed = vm["actions"].as_array().expect("actions");
    let outcomes: Vec<&str> = listed
        .iter()
        .filter_map(|a| a["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, vec!["rate_limited", "deflated"], "newest first");
    let deflated = &listed[1];
    assert_eq!(deflated["mode"], "act");
    assert_eq!(deflated["at_ms"], start);
    assert_eq!(deflated["level"], "critical");
    assert_eq!(deflated["actual_before_kib"], 128 * MIB);
    assert_eq!(deflated["target_kib"], 384 * MIB);
    assert_eq!(deflated["host_reserve_kib"], 1024 * MIB);
    assert_eq!(
        deflated["drivers"],
        serde_json::json!(["psi_full", "alloc_stalls"])
    );
    assert_eq!(deflated["signals"]["psi_some_avg10"], 60.0);
    assert_eq!(deflated["detail"], "deflated <b>step</b>");
    let one = get_json(
        &client,
        &format!("{base}/api/v1/vms/pve1/{LAB_UUID}/guard?since={since}&limit=1"),
    )
    .await;
    assert_eq!(one["actions"].as_array().map(Vec::len), Some(1), "bounded");

    let fleet = |query: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let answer = get_json(&client, &format!("{base}/api/v1/guard{query}")).await;
            answer["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|a| {
                    format!(
                        "{}/{}",
                        a["uuid"].as_str().unwrap_or_default(),
                        a["outcome"].as_str().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        fleet("").await,
        vec![
            format!("{LAB_UUID}/rate_limited"),
            format!("{TOR_UUID}/would_deflate"),
            format!("{LAB_UUID}/deflated"),
        ]
    );
    assert_eq!(
        fleet("?mode=observe").await,
        vec![format!("{TOR_UUID}/would_deflate")]
    );
    assert_eq!(
        fleet("?outcome=deflated&host=pve1").await,
        vec![format!("{LAB_UUID}/deflated")]
    );
    assert!(fleet("?host=pve2").await.is_empty());
    assert_eq!(fleet("?limit=2").await.len(), 2);
    for bad in [
        "?outcome=vaporised",
        "?mode=off2",
        "?limit=0",
        "?colour=red",
    ] {
        let (status, body) = get(&client, &format!("{base}/api/v1/guard{bad}")).await;
        assert!(
            status == 422 || status == 400,
            "{bad}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let (status, body) = get(&client, &format!("{base}/api/v1/guard?outcome=vaporised")).await;
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!((status, body["field"].as_str()), (422, Some("outcome")));

    let (_, metrics) = get(&client, &format!("{base}/metrics")).await;
    let metrics = String::from_utf8(metrics).expect("utf-8");
    for line in [
        "ballast_collector_guard_actions_total{outcome=\"deflated\"} 1",
        "ballast_collector_guard_actions_total{outcome=\"would_deflate\"} 1",
        "ballast_collector_guard_actions_total{outcome=\"rate_limited\"} 1",
        "ballast_collector_guard_actions_total{outcome=\"failed\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }

    // observe never deflates: such an action is refused by the field's path, and
    // nothing of its batch is stored.
    let mut bad = util::guard_action(
        "pve1/g/9",
        LAB_UUID,
        start + 90_000,
        GuardMode::Observe,
        GuardOutcome::Deflated,
        256 * MIB,
    );
    let (status, answer) = post(&client, &base, &util::batch("pve1", vec![bad.clone()])).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "events[0].outcome");
    if let Event::Guard(action) = &mut bad.event {
        action.mode = GuardMode::Act;
        action.target_kib = Some(u64::MAX);
    }
    let (status, answer) = post(&client, &base, &util::batch("pve1", vec![bad])).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "events[0].target_kib");
    assert_eq!(fleet("").await.len(), 3, "nothing of a refused batch");
    let _ = server.stop.send(());
    server.task.await.expect("join").expect("serve");
}
