//! OpenStack compute nodes (issue 20 item 4): nova's identity of a VM, sent in the
//! inventory (`VmInventory.openstack`), is stored with the VM (migration 0012),
//! served by the VM APIs and the OOM list, filterable by project (id or name), and
//! shown escaped on the dashboard. The storage case runs on SQLite here and on
//! PostgreSQL in `storage_postgres`; the API and dashboard cases run the collector's
//! router in process on a real SQLite file.
//!
//! Times are relative to the fixtures' clock (any date).
#![allow(clippy::tests_outside_test_module)]

use crate::util;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use ballast_collector::app::app;
use ballast_collector::auth::token_sha256;
use ballast_collector::state::{ApiConfig, AppState};
use ballast_collector::storage::queries::{self, OomFilter, VmFilter};
use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::Store;
use ballast_model::{Batch, Envelope, Event, NovaInstance};

use util::{batch, inventory, lab_inflated, oom, oom_at_ms, tor_flat, LAB_UUID, TOR_UUID};

const TOKEN: &str = "blt_openstack_test_token_00000000000000";
const PROJECT_ID: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";

/// Nova's identity of instance `name` in project `acme`, flavor `m1.small`.
fn nova(name: &str) -> NovaInstance {
    NovaInstance {
        name: Some(name.into()),
        instance_uuid: Some(LAB_UUID.into()),
        project_id: Some(PROJECT_ID.into()),
        project_name: Some("acme".into()),
        user_id: Some("8e1f0c2ab7d44d6f9a3e5b7c9d1f2a4b".into()),
        user_name: Some("alice".into()),
        flavor_name: Some("m1.small".into()),
        flavor_memory_mib: Some(512),
        flavor_vcpus: Some(1),
        nova_version: Some("27.1.0".into()),
        created: Some("2026-11-30 14:02:11".into()),
    }
}

/// An inventory at `at_ms` of the lab VM as nova instance `identity` (None: not
/// nova's) beside a VM nova did not define.
fn nova_inventory(key: &str, at_ms: i64, identity: Option<NovaInstance>) -> Envelope {
    let mut envelope = inventory(
        key,
        at_ms,
        &[(LAB_UUID, "instance-0000001a"), (TOR_UUID, "plain-vm")],
    );
    if let Event::Inventory(inventory) = &mut envelope.event {
        inventory.vms[0].openstack = identity;
    }
    envelope
}

/// An inventory naming the lab VM `identity`, then a batch with the lab VM's OOM
/// and the plain VM's (as an agent sends them: the inventory at start).
fn nova_batches(identity: NovaInstance) -> [Batch; 2] {
    [
        batch(
            "pve1",
            vec![nova_inventory(
                "pve1/inv/1",
                oom_at_ms() - 600_000,
                Some(identity),
            )],
        ),
        batch(
            "pve1",
            vec![
                oom("pve1/oom/1", oom_at_ms(), lab_inflated()),
                oom("pve1/oom/2", oom_at_ms() + 60_000, tor_flat()),
            ],
        ),
    ]
}

fn vm_filter(project: Option<&str>) -> VmFilter {
    VmFilter {
        host: None,
        cursor: None,
        limit: 100,
        project: project.map(str::to_string),
    }
}

async fn vm_names(store: &dyn Store, project: Option<&str>) -> Vec<String> {
    queries::list_vms_page(store, &vm_filter(project))
        .await
        .expect("vms")
        .items
        .into_iter()
        .map(|vm| vm.name)
        .collect()
}

async fn oom_vms(store: &dyn Store, project: Option<&str>) -> Vec<String> {
    let filter = OomFilter {
        limit: 100,
        project: project.map(str::to_string),
        ..OomFilter::default()
    };
    queries::list_ooms(store, &filter)
        .await
        .expect("ooms")
        .items
        .into_iter()
        .map(|oom| oom.vm.uuid)
        .collect()
}

/// The storage case, for both engines.
pub async fn identity_is_stored_filtered_and_replaced(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let hostile = NovaInstance {
        user_name: Some("al\0ice".into()),
        ..nova("web-3")
    };
    for batch in nova_batches(hostile) {
        store.ingest(util::prepared(batch)).await.expect("ingest");
    }

    let vms = queries::list_vms_page(store, &vm_filter(None))
        .await
        .expect("vms")
        .items;
    let lab = vms.iter().find(|vm| vm.uuid == LAB_UUID).expect("lab VM");
    let stored = lab.openstack.clone().expect("identity stored");
    assert_eq!(stored.name.as_deref(), Some("web-3"));
    assert_eq!(stored.flavor_name.as_deref(), Some("m1.small"));
    assert_eq!(stored.flavor_memory_mib, Some(512));
    assert_eq!(
        stored.user_name.as_deref(),
        Some("al\u{FFFD}ice"),
        "NUL stored as U+FFFD on both engines"
    );
    let plain = vms.iter().find(|vm| vm.uuid == TOR_UUID).expect("plain VM");
    assert_eq!(plain.openstack, None);

    assert_eq!(vm_names(store, Some("acme")).await, ["instance-0000001a"]);
    assert_eq!(
        vm_names(store, Some(PROJECT_ID)).await,
        ["instance-0000001a"],
        "a project matches by id too"
    );
    assert!(
        vm_names(store, Some("ACME")).await.is_empty(),
        "exact match"
    );
    assert!(vm_names(store, Some("other")).await.is_empty());

    assert_eq!(oom_vms(store, Some("acme")).await, [LAB_UUID]);
    assert_eq!(oom_vms(store, None).await.len(), 2);
    let ooms = queries::list_ooms(
        store,
        &OomFilter {
            limit: 100,
            ..OomFilter::default()
        },
    )
    .await
    .expect("ooms")
    .items;
    for item in &ooms {
        let name = item.openstack.as_ref().and_then(|nova| nova.name.clone());
        let expected = (item.vm.uuid == LAB_UUID).then(|| "web-3".to_string());
        assert_eq!(name, expected, "OOM {} of {}", item.id, item.vm.uuid);
        let detail = queries::get_oom(store, item.id, 3600)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(detail.summary.openstack, item.openstack, "the detail too");
    }

    // An older inventory changes nothing; a newer one without nova's metadata (the
    // domain redefined outside nova) clears the identity and the project.
    let older = batch(
        "pve1",
        vec![nova_inventory(
            "pve1/inv/0",
            oom_at_ms() - 900_000,
            Some(nova("stale-name")),
        )],
    );
    store.ingest(util::prepared(older)).await.expect("ingest");
    let vm = ballast_collector::storage::aggregates::vm(store, "pve1", LAB_UUID)
        .await
        .expect("vm")
        .expect("known");
    assert_eq!(
        vm.openstack.and_then(|nova| nova.name).as_deref(),
        Some("web-3")
    );
    assert_eq!(vm.oom_count, 1);
    let newer = batch(
        "pve1",
        vec![nova_inventory("pve1/inv/2", oom_at_ms() + 120_000, None)],
    );
    store.ingest(util::prepared(newer)).await.expect("ingest");
    assert!(vm_names(store, Some("acme")).await.is_empty());
    assert!(oom_vms(store, Some("acme")).await.is_empty());
}

#[tokio::test]
async fn identity_is_stored_filtered_and_replaced_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("open");
    identity_is_stored_filtered_and_replaced(Arc::new(store)).await;
}

/// The collector's router on a fresh SQLite file with pve1's token.
async fn router_state() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("open");
    queries::put_token(&store, "pve1", &token_sha256(TOKEN), 1, false)
        .await
        .expect("token");
    (dir, AppState::new(Arc::new(store), ApiConfig::default()))
}

async fn call(state: &AppState, request: Request<Body>) -> (StatusCode, Vec<u8>) {
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
        .to_bytes()
        .to_vec();
    (status, body)
}

async fn ingest(state: &AppState, batch: &Batch) {
    let request = Request::post("/api/v1/ingest")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(serde_json::to_vec(batch).expect("json")))
        .expect("request");
    let (status, body) = call(state, request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

async fn get(state: &AppState, path: &str) -> (StatusCode, Vec<u8>) {
    let request = Request::get(path).body(Body::empty()).expect("request");
    call(state, request).await
}

async fn get_json(state: &AppState, path: &str) -> serde_json::Value {
    let (status, body) = get(state, path).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("json")
}

#[tokio::test]
async fn the_vm_apis_and_the_oom_list_give_the_identity_and_filter_by_project() {
    let (_dir, state) = router_state().await;
    for batch in nova_batches(nova("web-3")) {
        ingest(&state, &batch).await;
    }

    let listed = get_json(&state, "/api/v1/vms?project=acme").await;
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["name"], "instance-0000001a");
    assert_eq!(items[0]["openstack"]["name"], "web-3");
    assert_eq!(items[0]["openstack"]["project_name"], "acme");
    assert_eq!(items[0]["openstack"]["flavor_name"], "m1.small");
    let by_id = get_json(&state, &format!("/api/v1/vms?project={PROJECT_ID}")).await;
    assert_eq!(by_id["items"], listed["items"]);
    let all = get_json(&state, "/api/v1/vms").await;
    let plain = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|vm| vm["uuid"] == TOR_UUID)
        .expect("the plain VM");
    assert!(plain["openstack"].is_null(), "{plain}");

    let own = get_json(&state, &format!("/api/v1/vms/pve1/{LAB_UUID}")).await;
    assert_eq!(own["openstack"]["name"], "web-3");
    assert_eq!(own["openstack"]["user_name"], "alice");
    assert_eq!(own["oom_count"], 1);
    let (status, _) = get(&state, "/api/v1/vms/pve1/no-such-vm").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let ooms = get_json(&state, "/api/v1/ooms?project=acme").await;
    let items = ooms["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{ooms}");
    assert_eq!(items[0]["vm"]["uuid"], LAB_UUID);
    assert_eq!(items[0]["openstack"]["name"], "web-3");
    let none = get_json(&state, "/api/v1/ooms?project=nobody").await;
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));

    let too_long = format!("/api/v1/vms?project={}", "p".repeat(256));
    for path in ["/api/v1/vms?project=", "/api/v1/ooms?project=", &too_long] {
        let (status, body) = get(&state, path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["field"], "project", "{path}: {body}");
    }
}

#[tokio::test]
async fn the_dashboard_shows_the_identity_escaped_and_filters_the_overview_by_project() {
    let (_dir, state) = router_state().await;
    let hostile = NovaInstance {
        name: Some("web-3 <script>alert(1)</script>".into()),
        ..nova("web-3")
    };
    for batch in nova_batches(hostile) {
        ingest(&state, &batch).await;
    }
    let page = |path: String| {
        let state = state.clone();
        async move {
            let (status, body) = get(&state, &path).await;
            let body = String::from_utf8(body).expect("utf-8");
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            body
        }
    };
    let escaped = "web-3 &lt;script&gt;alert(1)&lt;/script&gt;";

    let vm = page(format!("/vms/pve1/{LAB_UUID}")).await;
    assert!(!vm.contains("<script>"), "escaped everywhere");
    assert!(
        vm.contains(&format!(
            "{escaped} (instance-0000001a), project acme, flavor m1.small"
        )),
        "the identity beside the libvirt name"
    );
    assert!(vm.contains(&format!("<title>VM {escaped} (instance-0000001a)")));
    assert!(vm.contains("m1.small, 512 MiB, 1 vCPU"), "the flavor");
    assert!(vm.contains(&format!("href=\"/?project={PROJECT_ID}\"")));
    let plain = page(format!("/vms/pve1/{TOR_UUID}")).await;
    assert!(
        !plain.contains("OpenStack"),
        "no identity for a VM nova did not define"
    );

    let ooms = page("/ooms?project=acme".to_string()).await;
    assert!(
        ooms.contains(&format!(
            // The OOM's own VM name (the libvirt name the agent sent with it).
            "<span class=\"openstack\">{escaped} (lab-512), project acme, flavor m1.small</span>"
        )),
        "{ooms}"
    );
    assert_eq!(
        ooms.matches("class=\"oom-row\"").count(),
        1,
        "acme's OOM only"
    );
    let all = page("/ooms".to_string()).await;
    assert_eq!(all.matches("class=\"oom-row\"").count(), 2);
    assert_eq!(all.matches("class=\"openstack\"").count(), 1);

    let host = page("/hosts/pve1".to_string()).await;
    assert!(host.contains(&format!(
        "<span class=\"openstack\">{escaped} (instance-0000001a), project acme, flavor m1.small</span>"
    )), "the host page's VM list");

    let overview = page("/".to_string()).await;
    assert!(overview.contains("OpenStack projects"));
    assert!(overview.contains(&format!(
        "<option value=\"{PROJECT_ID}\">acme (1 VMs)</option>"
    )));
    let filtered = page("/?project=acme&range=7d".to_string()).await;
    assert!(
        filtered.contains("class=\"project-vms\""),
        "the project's VMs"
    );
    assert!(
        filtered.contains("selected"),
        "the chosen project stays chosen"
    );
    assert!(
        !filtered.contains("plain-vm"),
        "only the project's VMs and OOMs"
    );
    let other = page("/?project=nobody".to_string()).await;
    assert!(other.contains("No VM of this project."));
    assert!(!other.contains("class=\"oom-row\""));
}
