//! The OOM page and the overview show the host's side for virtio-mem like the
//! balloon's: a real SQLite store, OOMs ingested as an agent sends them.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ballast_model::{Batch, Envelope, Event, SCHEMA_VERSION};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::app::app;
use crate::dashboard::{DashboardAuth, DashboardSettings};
use crate::elastic_fixtures::virtio_unplugged;
use crate::state::{ApiConfig, AppState};
use crate::storage::sqlite::SqliteStore;
use crate::storage::Store;
use crate::test_fixtures::{lab_inflated, oom_at_ms, tor_flat, MIB};

async fn get(state: &AppState, path: &str) -> (StatusCode, String) {
    let response = app(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_oom_page_shows_what_the_host_unplugged_and_the_overview_counts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("c.sqlite"))
            .await
            .expect("open"),
    );
    let mut virtio = virtio_unplugged(512 * MIB);
    virtio.vm.name = "<script>alert(1)</script>".into();
    // Captured at the fixtures' OOM time (three hours ago: inside the overview's range).
    let events = [virtio, lab_inflated(), tor_flat()]
        .into_iter()
        .enumerate()
        .map(|(n, oom)| Envelope {
            key: format!("pve1/oom/{n}"),
            captured_at_ms: oom_at_ms() + i64::try_from(n).unwrap_or(0),
            event: Event::Oom(Box::new(oom)),
        })
        .collect();
    let batch = Batch {
        schema_version: SCHEMA_VERSION,
        host_id: "pve1".into(),
        agent_version: "0.1.0".into(),
        events,
    };
    let settings = crate::correlation::CorrelationSettings::default();
    let clusters = crate::clusters::Clusters::default();
    crate::ingest::store_batch(
        store.as_ref(),
        batch,
        "pve1",
        crate::now_ms(),
        &crate::ingest::IngestSettings {
            correlation: &settings,
            clusters: &clusters,
            notify: &[],
        },
    )
    .await
    .expect("stored");
    let state = AppState::new(
        Arc::clone(&store),
        ApiConfig {
            dashboard: DashboardSettings {
                auth: DashboardAuth::None,
                ..DashboardSettings::default()
            },
            ..ApiConfig::default()
        },
    );

    let (status, page) = get(&state, "/ooms/1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let side = page
        .split("id=\"host-took\"")
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .unwrap_or_default();
    assert!(side.contains("host_took_memory"), "{side}");
    assert!(side.contains("virtio_mem"), "{side}");
    assert!(side.contains("virtio-mem unplugged"), "{side}");
    assert!(side.contains("512 MiB"), "{side}");
    // The balloon's verdict keeps its meaning beside it.
    assert!(page.contains("Correlation verdict: "), "{page}");
    assert!(
        page.contains("lowered the virtio-mem request by 512 MiB 40 s before the OOM"),
        "{page}"
    );
    assert!(
        page.contains("virtio-mem plugged"),
        "the trajectory charts it"
    );
    // The guest-chosen VM name is escaped wherever shown.
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains("&lt;script&gt;"), "{page}");

    // A balloon-only OOM shows the balloon as the host's part, without virtio-mem rows.
    let (_, page) = get(&state, "/ooms/2").await;
    let side = page
        .split("id=\"host-took\"")
        .nth(1)
        .and_then(|rest| rest.split("</section>").next())
        .unwrap_or_default();
    assert!(side.contains("host_took_memory</span> (balloon)"), "{side}");
    assert!(!side.contains("virtio-mem"), "{side}");

    let (status, list) = get(&state, "/ooms?host_took=host_took_memory").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list.matches("class=\"oom-row\"").count(), 2, "{list}");
    assert!(!list.contains("tor-relay"), "{list}");
    let (status, _) = get(&state, "/ooms?host_took=balloon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, overview) = get(&state, "/?range=30d").await;
    assert_eq!(status, StatusCode::OK, "{overview}");
    let stat = overview
        .split("id=\"host-took\"")
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
        .unwrap_or_default();
    assert!(stat.contains(">2<"), "{stat}");
}
