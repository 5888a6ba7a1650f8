//! Memory pressure over real loopback HTTP (issue 19): an agent's rollups with
//! pressure and its episodes' phases POSTed to the collector, read back from
//! `/api/v1/vms/{host}/{uuid}/memory`, `/pressure`, `/api/v1/pressure/open` and
//! `/metrics`; a phase whose figure no guest can have is refused by its path. On
//! SQLite and on a real PostgreSQL.
#![allow(clippy::tests_outside_test_module)]

use crate::util;

use axum::body::Bytes;
use http_body_util::Full;

use std::sync::Arc;

use ballast_collector::auth::token_sha256;
use ballast_collector::server::serve_listener;
use ballast_collector::state::{ApiConfig, AppState};
use ballast_collector::storage::postgres::PostgresStore;
use ballast_collector::storage::queries;
use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::Store;
use ballast_model::{Batch, EpisodePhase, Event, RiskLevel};

use util::client::{client, send, HttpClient};
use util::{LAB_UUID, MIB, TOR_UUID};

pub(crate) async fn post(
    client: &HttpClient,
    base: &str,
    batch: &Batch,
) -> (u16, serde_json::Value) {
    let request = hyper::Request::post(format!("{base}/api/v1/ingest"))
        .header("authorization", format!("Bearer blt_{}", batch.host_id))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(batch).expect("json"),
        )))
        .expect("request");
    let reply = send(client, request).await.expect("post");
    (
        reply.status,
        serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null),
    )
}

pub(crate) async fn get(client: &HttpClient, url: &str) -> (u16, Vec<u8>) {
    let request = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(client, request).await.expect("get");
    (reply.status, reply.body)
}

pub(crate) async fn get_json(client: &HttpClient, url: &str) -> serde_json::Value {
    let (status, body) = get(client, url).await;
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("json")
}

/// Now, to the minute: the test's events are recent whatever the date.
pub(crate) fn recent_minute() -> i64 {
    (ballast_collector::now_ms() / 60_000) * 60_000 - 30 * 60_000
}

/// The collector over `store` on 127.0.0.1:0, `pve1` ingesting with `blt_pve1`.
pub(crate) struct Served {
    pub(crate) base: String,
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    pub(crate) task: tokio::task::JoinHandle<Result<(), ballast_collector::server::ServeError>>,
}

pub(crate) async fn serve(store: Arc<dyn Store>) -> Served {
    queries::put_token(store.as_ref(), "pve1", &token_sha256("blt_pve1"), 1, false)
        .await
        .expect("token");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(store, ApiConfig::default());
    let task = tokio::spawn(serve_listener(listener, state, None, async {
        let _ = stopped.await;
    }));
    Served { base, stop, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressure_reads_back_over_http_and_counts_on_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("sqlite");
    pressure_over_http(Arc::new(store)).await;
}

/// The same over a real PostgreSQL (a throwaway cluster from `ballast-testpg`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressure_reads_back_over_http_on_postgresql() {
    let Some(cluster) = util::pg_cluster() else {
        return;
    };
    let url = cluster.create_database().expect("createdb");
    let store = PostgresStore::open(&url, 2).await.expect("postgres");
    pressure_over_http(Arc::new(store)).await;
}

async fn pressure_over_http(store: Arc<dyn Store>) {
    let server = serve(store).await;
    let (base, client) = (server.base.clone(), client());
    let start = recent_minute();
    let rollups = util::batch(
        "pve1",
        vec![
            util::rollup_with_pressure(
                "pve1/r/0",
                LAB_UUID,
                start,
                200 * MIB,
                util::pressure(12.5, 33.25, RiskLevel::Critical),
            ),
            util::rollup("pve1/r/1", LAB_UUID, start + 60_000, 200 * MIB),
        ],
    );
    let (status, answer) = post(&client, &base, &rollups).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(2)));
    let phases = util::batch(
        "pve1",
        vec![
            util::episode(
                "pve1/p/1s",
                LAB_UUID,
                EpisodePhase::Start,
                start,
                start,
                RiskLevel::Elevated,
                64 * MIB,
            ),
            util::episode(
                "pve1/p/1p",
                LAB_UUID,
                EpisodePhase::Peak,
                start,
                start + 60_000,
                RiskLevel::Critical,
                96 * MIB,
            ),
            util::episode(
                "pve1/p/2s",
                TOR_UUID,
                EpisodePhase::Start,
                start + 30_000,
                start + 30_000,
                RiskLevel::Elevated,
                MIB,
            ),
        ],
    );
    assert_eq!(post(&client, &base, &phases).await.0, 200);
    let (status, answer) = post(&client, &base, &phases).await;
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
    let memory = get_json(
        &client,
        &format!("{base}/api/v1/vms/pve1/{LAB_UUID}/memory?since={since}"),
    )
    .await;
    let points = memory["points"].as_array().expect("points");
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["signals"], "measured");
    assert_eq!(points[0]["pressure"]["risk"], "critical");
    assert_eq!(points[0]["pressure"]["peak"]["alloc_stalls_per_s"], 12.5);
    assert_eq!(points[0]["pressure"]["peak"]["psi_some_avg10"], 33.25);
    assert_eq!(
        points[0]["pressure"]["sources"],
        serde_json::json!(["balloon_counters", "guest_psi"])
    );
    assert_eq!(
        points[0]["actual_kib"]["last"],
        200 * MIB,
        "old keys unchanged"
    );
    assert_eq!(points[1]["signals"], "none", "no signal is not no pressure");
    assert!(points[1]["pressure"].is_null());

    let pressure = get_json(
        &client,
        &format!("{base}/api/v1/vms/pve1/{LAB_UUID}/pressure?since={since}"),
    )
    .await;
    let episodes = pressure["episodes"].as_array().expect("episodes");
    assert_eq!(episodes.len(), 1);
    assert_eq!(episodes[0]["level"], "critical");
    assert_eq!(episodes[0]["started_at_ms"], start);
    assert!(episodes[0]["ended_at_ms"].is_null(), "still open");
    assert_eq!(episodes[0]["deficit_kib"], 96 * MIB);
    assert_eq!(
        episodes[0]["drivers"],
        serde_json::json!(["psi_full", "alloc_stalls"])
    );

    let open = get_json(&client, &format!("{base}/api/v1/pressure/open")).await;
    let open: Vec<&str> = open["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["uuid"].as_str())
        .collect();
    assert_eq!(open, vec![LAB_UUID, TOR_UUID], "newest activity first");
    let (status, _) = get(&client, &format!("{base}/api/v1/pressure/open?limit=0")).await;
    assert_eq!(status, 422);

    let (_, metrics) = get(&client, &format!("{base}/metrics")).await;
    let metrics = String::from_utf8(metrics).expect("utf-8");
    for line in [
        "ballast_collector_vms_under_pressure{level=\"elevated\"} 1",
        "ballast_collector_vms_under_pressure{level=\"critical\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }

    // The end closes the episode: no VM of pve1's lab guest under pressure any more.
    let end = util::batch(
        "pve1",
        vec![util::episode(
            "pve1/p/1e",
            LAB_UUID,
            EpisodePhase::End,
            start,
            start + 120_000,
            RiskLevel::Critical,
            MIB,
        )],
    );
    assert_eq!(post(&client, &base, &end).await.0, 200);
    let (_, metrics) = get(&client, &format!("{base}/metrics")).await;
    let metrics = String::from_utf8(metrics).expect("utf-8");
    assert!(metrics.contains("ballast_collector_vms_under_pressure{level=\"critical\"} 0"));

    // A PSI share above 100 % is no guest's: the batch is refused by the field's path.
    let mut bad = util::episode(
        "pve1/p/9s",
        LAB_UUID,
        EpisodePhase::Start,
        start,
        start,
        RiskLevel::Elevated,
        MIB,
    );
    if let Event::Pressure(episode) = &mut bad.event {
        episode.signals.psi_some_avg10 = Some(150.0);
    }
    let (status, answer) = post(&client, &base, &util::batch("pve1", vec![bad])).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "events[0].signals.psi_some_avg10");
    let _ = server.stop.send(());
    server.task.await.expect("join").expect("serve");
}
