//! `host_took` in the OOM API on both engines (real SQLite, real PostgreSQL): served
//! for every OOM (an older row's read from its balloon verdict), filtered by
//! `?host_took=`, counted by `group_by=host_took`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ballast_model::{Batch, Envelope, Event, OomEvent, SCHEMA_VERSION};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::app::app;
use crate::auth::token_sha256;
use crate::elastic_fixtures::virtio_unplugged;
use crate::state::{ApiConfig, AppState};
use crate::storage::{queries, Param, Query, Store};
use crate::test_fixtures::{lab_inflated, oom_at_ms, tor_flat, MIB};

const TOKEN: &str = "blt_test_token_of_pve1_0000000000000000";

async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = app(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

async fn get(state: &AppState, path: &str) -> (StatusCode, serde_json::Value) {
    send(state, Request::get(path).body(Body::empty()).expect("get")).await
}

fn envelope(key: &str, at: i64, oom: OomEvent) -> Envelope {
    Envelope {
        key: key.into(),
        captured_at_ms: at,
        event: Event::Oom(Box::new(oom)),
    }
}

/// Three OOMs: the balloon's (lab), virtio-mem's (512 MiB unplugged, report verdict
/// `overcommit`), and the tor report stored by an older collector (no `host_took`).
async fn host_took_in_the_api(store: Arc<dyn Store>) {
    queries::put_token(store.as_ref(), "pve1", &token_sha256(TOKEN), 1, false)
        .await
        .expect("token");
    let state = AppState::new(Arc::clone(&store), ApiConfig::default());
    let batch = Batch {
        schema_version: SCHEMA_VERSION,
        host_id: "pve1".into(),
        agent_version: "0.1.0".into(),
        events: vec![
            envelope("pve1/oom/balloon", oom_at_ms() - 2_000, lab_inflated()),
            envelope("pve1/oom/virtio", oom_at_ms(), virtio_unplugged(512 * MIB)),
            envelope("pve1/oom/old", oom_at_ms() - 1_000, tor_flat()),
        ],
    };
    let request = Request::post("/api/v1/ingest")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(serde_json::to_vec(&batch).expect("json")))
        .expect("post");
    let (status, body) = send(&state, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The tor OOM as an older collector stored it: no host_took in its correlation.
    let rows = store
        .query(Query::new(
            "SELECT correlation_json FROM ooms WHERE key = ?",
            vec![Param::text("pve1/oom/old")],
        ))
        .await
        .expect("read");
    let mut old: serde_json::Value =
        serde_json::from_str(&rows[0].text_or_empty(0)).expect("stored json");
    assert!(old["host_took"].is_object(), "{old}");
    old.as_object_mut().map(|o| o.remove("host_took"));
    store
        .execute(Query::new(
            "UPDATE ooms SET correlation_json = ? WHERE key = ?",
            vec![Param::text(old.to_string()), Param::text("pve1/oom/old")],
        ))
        .await
        .expect("update");

    let (status, page) = get(&state, "/api/v1/ooms").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 3, "{page}");
    let by_vm = |name: &str| {
        items
            .iter()
            .find(|item| item["vm"]["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let virtio = by_vm("elastic-8g");
    assert_eq!(virtio["report_verdict"], "overcommit");
    assert_eq!(virtio["correlation"]["verdict"], "not_balloon");
    let took = &virtio["correlation"]["host_took"];
    assert_eq!(took["verdict"], "host_took_memory", "{virtio}");
    assert_eq!(took["mechanisms"], serde_json::json!(["virtio_mem"]));
    assert_eq!(took["unplugged_kib"], 512 * MIB);
    assert_eq!(took["requested_lowered_at_ms"], oom_at_ms() - 40_000);
    assert_eq!(took["would_have_survived"], true);
    let balloon = by_vm("lab-512");
    assert_eq!(
        balloon["correlation"]["host_took"]["verdict"],
        "host_took_memory"
    );
    assert_eq!(
        balloon["correlation"]["host_took"]["mechanisms"],
        serde_json::json!(["balloon"])
    );
    // The older row reads its host's side from the balloon's verdict.
    let old = by_vm("tor-relay");
    assert_eq!(old["correlation"]["verdict"], "not_balloon");
    assert_eq!(old["correlation"]["host_took"]["verdict"], "not_host");

    let names = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| item["vm"]["name"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (status, page) = get(&state, "/api/v1/ooms?host_took=host_took_memory").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(names(&page), vec!["elastic-8g", "lab-512"]);
    let (_, page) = get(&state, "/api/v1/ooms?host_took=not_host").await;
    assert_eq!(names(&page), vec!["tor-relay"]);
    // The balloon's own filter keeps its meaning: the virtio-mem OOM is not_balloon.
    let (_, page) = get(&state, "/api/v1/ooms?verdict=not_balloon").await;
    assert_eq!(names(&page), vec!["elastic-8g", "tor-relay"]);
    let (status, error) = get(&state, "/api/v1/ooms?host_took=balloon").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["field"], "host_took", "{error}");

    let link = virtio["link"].as_str().unwrap_or_default().to_string();
    let (status, detail) = get(&state, &link).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        detail["correlation_detail"]["host_took"]["total_kib"],
        512 * MIB
    );
    let link = old["link"].as_str().unwrap_or_default().to_string();
    let (_, detail) = get(&state, &link).await;
    assert_eq!(
        detail["correlation_detail"]["host_took"]["verdict"],
        "not_host"
    );

    let (status, counts) = get(&state, "/api/v1/stats/ooms?group_by=host_took&since=0").await;
    assert_eq!(status, StatusCode::OK, "{counts}");
    let mut groups: Vec<(String, i64)> = counts["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|c| {
                    (
                        c["group"].as_str().unwrap_or("?").to_string(),
                        c["count"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    groups.sort();
    // All three in one bucket (a day): two the host's, one not.
    let total = |name: &str| -> i64 {
        groups
            .iter()
            .filter(|(group, _)| group == name)
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(total("host_took_memory"), 2, "{groups:?}");
    assert_eq!(total("not_host"), 1, "{groups:?}");

    // A stored correlation that does not decode fails its detail (500), not the list:
    // there its host's side reads from the row's balloon verdict, as the filter does.
    store
        .execute(Query::new(
            "UPDATE ooms SET correlation_json = ? WHERE key = ?",
            vec![
                Param::text(r#""not an object""#),
                Param::text("pve1/oom/old"),
            ],
        ))
        .await
        .expect("update");
    let (status, page) = get(&state, "/api/v1/ooms?host_took=not_host").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(names(&page), vec!["tor-relay"]);
    assert_eq!(
        page["items"][0]["correlation"]["host_took"]["verdict"],
        "not_host"
    );
    let (status, _) = get(&state, &link).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn host_took_is_served_filtered_and_counted_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::storage::sqlite::SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("open");
    host_took_in_the_api(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_took_is_served_filtered_and_counted_on_postgresql() {
    let Some(cluster) = ballast_testpg::TestPg::start_or_skip() else {
        return;
    };
    let store =
        crate::storage::postgres::PostgresStore::open(&cluster.connection_string("postgres"), 2)
            .await
            .expect("open");
    host_took_in_the_api(Arc::new(store)).await;
}
