//! Handler tests: `app(state).oneshot(request)` on a real SQLite file.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use ballast_model::{
    BalloonRollup, Batch, Envelope, ErrorBody, Event, IngestResponse, MinMaxLast, VmRef,
    SCHEMA_VERSION,
};

use super::*;
use crate::auth::token_sha256;
use crate::storage::queries;
use crate::storage::sqlite::SqliteStore;
use crate::test_fixtures::{lab_inflated, LAB_UUID, OOM_AT_MS};

const TOKEN: &str = "blt_test_token_of_pve1_0000000000000000";
const READ_TOKEN: &str = "read-token-0123456789";

async fn state(config: ApiConfig) -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("open");
    queries::put_token(&store, "pve1", &token_sha256(TOKEN), 1, false)
        .await
        .expect("token");
    queries::put_token(&store, "pve2", &token_sha256("blt_other"), 1, false)
        .await
        .expect("token");
    (dir, AppState::new(Arc::new(store), config))
}

fn rollup(key: &str) -> Envelope {
    Envelope {
        key: key.into(),
        captured_at_ms: OOM_AT_MS,
        event: Event::Rollup(Box::new(BalloonRollup {
            vm: VmRef {
                uuid: LAB_UUID.into(),
                name: "lab-512".into(),
            },
            period_start_ms: OOM_AT_MS - 60_000,
            period_secs: 60,
            samples: 6,
            maximum_kib: Some(524_288),
            actual_kib: MinMaxLast {
                min: Some(204_800),
                max: Some(524_288),
                last: Some(204_800),
            },
            ..BalloonRollup::default()
        })),
    }
}

fn batch(host: &str) -> Batch {
    Batch {
        schema_version: SCHEMA_VERSION,
        host_id: host.into(),
        agent_version: "0.1.0".into(),
        events: vec![
            rollup("pve1/r/1"),
            Envelope {
                key: "pve1/oom/1".into(),
                captured_at_ms: OOM_AT_MS,
                event: Event::Oom(Box::new(lab_inflated())),
            },
        ],
    }
}

fn post(token: Option<&str>, body: Vec<u8>, encoding: Option<&str>) -> Request<Body> {
    let mut request =
        Request::post("/api/v1/ingest").header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(encoding) = encoding {
        request = request.header(header::CONTENT_ENCODING, encoding);
    }
    request.body(Body::from(body)).expect("request")
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Body::empty()).expect("request")
}

fn json(batch: &Batch) -> Vec<u8> {
    serde_json::to_vec(batch).expect("json")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

async fn send(
    state: &AppState,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = app(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

async fn stored_ooms(state: &AppState) -> usize {
    queries::list_ooms(
        state.store.as_ref(),
        &queries::OomFilter {
            limit: 100,
            ..queries::OomFilter::default()
        },
    )
    .await
    .expect("list")
    .items
    .len()
}

#[tokio::test]
async fn missing_or_wrong_tokens_get_401_and_nothing_is_stored() {
    let (_dir, state) = state(ApiConfig::default()).await;
    for token in [None, Some("blt_wrong"), Some("")] {
        let (status, headers, _) = send(&state, post(token, json(&batch("pve1")), None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(
            headers.get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
    }
    assert_eq!(stored_ooms(&state).await, 0);
}

#[tokio::test]
async fn another_hosts_batch_gets_403_and_nothing_is_stored() {
    let (_dir, state) = state(ApiConfig::default()).await;
    let (status, _, body) = send(&state, post(Some("blt_other"), json(&batch("pve1")), None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let error: ErrorBody = serde_json::from_slice(&body).expect("error body");
    assert!(error.error.contains("pve2"), "{error:?}");
    assert_eq!(stored_ooms(&state).await, 0);
}

#[tokio::test]
async fn a_batch_is_stored_once_and_a_resend_counts_duplicates() {
    let (_dir, state) = state(ApiConfig::default()).await;
    let (status, _, body) = send(
        &state,
        post(Some(TOKEN), gzip(&json(&batch("pve1"))), Some("gzip")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let answer: IngestResponse = serde_json::from_slice(&body).expect("answer");
    assert_eq!(
        answer,
        IngestResponse {
            accepted: 2,
            duplicates: 0
        }
    );
    let (_, _, body) = send(&state, post(Some(TOKEN), json(&batch("pve1")), None)).await;
    let answer: IngestResponse = serde_json::from_slice(&body).expect("answer");
    assert_eq!(
        answer,
        IngestResponse {
            accepted: 0,
            duplicates: 2
        }
    );
    assert_eq!(stored_ooms(&state).await, 1);
}

#[tokio::test]
async fn bad_bodies_get_4xx_naming_the_problem_and_nothing_is_stored() {
    let limits = crate::config::IngestLimits {
        max_body_bytes: 64 * 1024,
        max_decompressed_bytes: 512 * 1024,
        ..crate::config::IngestLimits::default()
    };
    let (_dir, state) = state(ApiConfig {
        ingest: limits,
        ..ApiConfig::default()
    })
    .await;
    let (status, _, _) = send(
        &state,
        post(Some(TOKEN), b"{\"schema_version\": 1,".to_vec(), None),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "malformed JSON");
    let (status, _, body) = send(
        &state,
        post(Some(TOKEN), b"{\"schema_version\": 1}".to_vec(), None),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "schema mismatch");
    assert!(String::from_utf8_lossy(&body).contains("host_id"));
    let mut bad = batch("pve1");
    if let Event::Rollup(rollup) = &mut bad.events[0].event {
        rollup.vm.uuid = "<script>".into();
    }
    let (status, _, body) = send(&state, post(Some(TOKEN), json(&bad), None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let error: ErrorBody = serde_json::from_slice(&body).expect("error body");
    assert_eq!(error.field.as_deref(), Some("events[0].vm.uuid"));
    // Too large as sent.
    let (status, _, _) = send(&state, post(Some(TOKEN), vec![b' '; 65 * 1024], None)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // A gzip bomb: 16 MiB of zeros in ~16 KiB.
    let bomb = gzip(&vec![0u8; 16 * 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024);
    let (status, _, _) = send(&state, post(Some(TOKEN), bomb, Some("gzip"))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, _) = send(
        &state,
        post(Some(TOKEN), b"not gzip".to_vec(), Some("gzip")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&state, post(Some(TOKEN), json(&batch("pve1")), Some("br"))).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(stored_ooms(&state).await, 0);
}

#[tokio::test]
async fn a_host_over_its_rate_gets_429_with_retry_after_and_others_go_on() {
    let limits = crate::config::IngestLimits {
        rate_per_sec: 0.01,
        burst: 2,
        ..crate::config::IngestLimits::default()
    };
    let (_dir, state) = state(ApiConfig {
        ingest: limits,
        ..ApiConfig::default()
    })
    .await;
    for _ in 0..2 {
        let (status, _, _) = send(&state, post(Some(TOKEN), json(&batch("pve1")), None)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, _) = send(&state, post(Some(TOKEN), json(&batch("pve1")), None)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
        Some(&b"100"[..])
    );
    let mut other = batch("pve2");
    other.events.truncate(1);
    let (status, _, _) = send(&state, post(Some("blt_other"), json(&other), None)).await;
    assert_eq!(status, StatusCode::OK, "another host is not limited");
}

#[tokio::test]
async fn the_query_api_answers_and_requires_the_read_token_when_set() {
    let (_dir, state) = state(ApiConfig {
        read_token: Some(READ_TOKEN.into()),
        ..ApiConfig::default()
    })
    .await;
    let (status, _, _) = send(&state, post(Some(TOKEN), json(&batch("pve1")), None)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&state, get("/api/v1/ooms", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&state, get("/api/v1/ooms", Some(TOKEN))).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an ingest token is not a read token"
    );
    let read = Some(READ_TOKEN);
    let (status, _, body) = send(&state, get("/api/v1/ooms?verdict=balloon&host=pve1", read)).await;
    assert_eq!(status, StatusCode::OK);
    let page: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let item = &page["items"][0];
    assert_eq!(item["correlation"]["verdict"], "balloon");
    assert_eq!(item["correlation"]["balloon_held_kb"], 319_488);
    assert_eq!(item["killed"]["comm"], "memhog");
    let link = item["link"].as_str().expect("link").to_string();
    let (status, _, body) = send(&state, get(&link, read)).await;
    assert_eq!(status, StatusCode::OK);
    let detail: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(detail["raw_report"]
        .as_str()
        .unwrap_or_default()
        .contains("oom-killer"));
    assert_eq!(detail["correlation_detail"]["would_have_survived"], true);
    assert_eq!(detail["rollups"].as_array().map(Vec::len), Some(1));
    let (status, _, _) = send(&state, get("/api/v1/ooms/12345", read)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = send(&state, get("/api/v1/vms", read)).await;
    assert_eq!(status, StatusCode::OK);
    let vms: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(vms["items"][0]["uuid"], LAB_UUID);
    let (status, _, body) = send(
        &state,
        get(&format!("/api/v1/vms/{LAB_UUID}/memory?since=0"), read),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let memory: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(memory["points"][0]["actual_kib"]["last"], 204_800);
    let (status, _, body) = send(
        &state,
        get("/api/v1/stats/ooms?group_by=host&since=0", read),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let counts: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(counts["items"][0]["group"], "pve1");
    let (status, _, _) = send(
        &state,
        get(
            "/api/v1/stats/repeated-balloon-ooms?since=0&min_count=1",
            read,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&state, get("/api/v1/ooms?since=yesterday", read)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&state, get("/api/v1/ooms?verdict=maybe", read)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _, _) = send(&state, get("/healthz", None)).await;
    assert_eq!(status, StatusCode::OK);
}
