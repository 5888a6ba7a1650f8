//! The stats path and free page reporting (issue 20 item 3) from a stored inventory to
//! the balloon-policy report (JSON, Markdown, the dashboard page) and the VM page, on
//! SQLite and on a real PostgreSQL server: what the agent's findings say, in words,
//! with a hostile VM name escaped everywhere.
#![allow(clippy::tests_outside_test_module)]

use crate::util;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

use ballast_collector::dashboard::{DashboardAuth, DashboardSettings};
use ballast_collector::reports::{self, PolicySettings, ReportFormat};
use ballast_collector::state::{ApiConfig, AppState};
use ballast_collector::storage::postgres::PostgresStore;
use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::Store;
use ballast_model::{
    AgentHello, Envelope, Event, Inventory, VmConfig, VmInventory, VmRef, VmState,
};

const SILENT: &str = "5b0bd0f9-1d53-4d89-a8d6-000000000a01";
const STOPPED: &str = "5b0bd0f9-1d53-4d89-a8d6-000000000a02";
const HOSTILE: &str = "5b0bd0f9-1d53-4d89-a8d6-000000000a03";
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>";

fn vm(
    uuid: &str,
    name: &str,
    period: Option<u32>,
    fpr: Option<bool>,
    findings: &[&str],
) -> VmInventory {
    VmInventory {
        vm: VmRef {
            uuid: uuid.into(),
            name: name.into(),
        },
        state: VmState::Running,
        config: VmConfig {
            memory_kib: Some(1024 * util::MIB),
            balloon_present: true,
            stats_period_secs: period,
            deflate_on_oom: Some(true),
            free_page_reporting: fpr,
            ..VmConfig::default()
        },
        findings: findings.iter().map(|name| (*name).to_string()).collect(),
        openstack: None,
    }
}

/// What a libvirt agent sends: its hello, then an inventory of three VMs.
async fn feed(store: &dyn Store, at_ms: i64) {
    let events = vec![
        Envelope {
            key: "kvm1/hello/1".into(),
            captured_at_ms: at_ms,
            event: Event::Hello(AgentHello {
                backend: "libvirt".into(),
                capabilities: Vec::new(),
                host_memory_kib: Some(16 * 1024 * util::MIB),
            }),
        },
        Envelope {
            key: "kvm1/inventory/1".into(),
            captured_at_ms: at_ms,
            event: Event::Inventory(Inventory {
                vms: vec![
                    vm(
                        SILENT,
                        "win-no-service",
                        Some(5),
                        Some(false),
                        &["balloon_driver_silent", "free_page_reporting_off"],
                    ),
                    vm(
                        STOPPED,
                        "frozen",
                        Some(5),
                        Some(true),
                        &["stale_stats", "free_page_reporting_on"],
                    ),
                    vm(
                        HOSTILE,
                        HOSTILE_NAME,
                        None,
                        None,
                        &["stats_period_off", "free_page_reporting_unknown"],
                    ),
                ],
            }),
        },
    ];
    store
        .ingest(util::prepared(util::batch("kvm1", events)))
        .await
        .expect("ingest");
}

async fn get(state: &AppState, path: &str) -> String {
    let response = ballast_collector::app::app(state.clone())
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
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{path}: {text}");
    text
}

async fn the_stats_path_reaches_the_report_and_the_vm_page(store: Arc<dyn Store>) {
    let now = ballast_collector::now_ms();
    feed(store.as_ref(), now - 3_600_000).await;
    let settings = PolicySettings::default();
    let (since, until) = (now - 86_400_000, now);

    let json = reports::balloon_policy(store.as_ref(), since, until, &settings, ReportFormat::Json)
        .await
        .expect("json");
    let report: serde_json::Value = serde_json::from_str(&json).expect("report json");
    let section: Vec<(String, String, String)> = report["stats_path"]
        .as_array()
        .expect("a stats_path section")
        .iter()
        .map(|vm| {
            let text = |key: &str| vm[key].as_str().unwrap_or_default().to_string();
            (text("uuid"), text("stats"), text("free_page_reporting"))
        })
        .collect();
    let expect =
        |uuid: &str, stats: &str, fpr: &str| (uuid.to_string(), stats.to_string(), fpr.to_string());
    assert_eq!(
        section,
        [
            expect(SILENT, "driver_silent", "off"),
            expect(STOPPED, "stopped", "on"),
            expect(HOSTILE, "period_off", "unknown"),
        ],
        "worst first"
    );
    let silent = &report["stats_path"][0];
    assert_eq!(silent["platform"], "libvirt");
    assert!(silent["figures"][0]
        .as_str()
        .is_some_and(|text| text.contains("MemAvailable is unknown")));
    assert!(silent["fix"][0]
        .as_str()
        .is_some_and(|text| text.starts_with(
            "virsh edit win-no-service: <memballoon model='virtio' freePageReporting='on'>"
        )));

    let md = reports::balloon_policy(
        store.as_ref(),
        since,
        until,
        &settings,
        ReportFormat::Markdown,
    )
    .await
    .expect("markdown");
    let (_, md) = md
        .split_once("## Stats path and free page reporting")
        .expect("the section in Markdown");
    assert!(
        md.contains(
            "**win-no-service** on kvm1: stats path balloon driver silent; free page reporting off."
        ),
        "{md}"
    );
    assert!(
        md.contains("&lt;img src=x onerror=alert\\(1\\)&gt;"),
        "{md}"
    );
    assert!(!md.contains("<img"), "{md}");

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
    let page = get(&state, "/reports/balloon-policy").await;
    assert!(
        page.contains("Stats path and free page reporting"),
        "{page}"
    );
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!page.contains("<img"));

    let page = get(&state, &format!("/vms/kvm1/{SILENT}")).await;
    assert!(page.contains("balloon_driver_silent"), "{page}");
    assert!(page.contains("The balloon driver is silent"));
    assert!(page.contains("MemAvailable is unknown (never 0)"));
    assert!(page.contains("free page reporting off"));
    let page = get(&state, &format!("/vms/kvm1/{STOPPED}")).await;
    assert!(page.contains("came, then stopped"), "{page}");
    assert!(page.contains("never memory the host took"));
    let page = get(&state, &format!("/vms/kvm1/{HOSTILE}")).await;
    assert!(page.contains("not known until a period is set"), "{page}");
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!page.contains("<img"));
}

#[tokio::test]
async fn the_stats_path_reaches_the_report_and_the_vm_page_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("open");
    the_stats_path_reaches_the_report_and_the_vm_page(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_path_reaches_the_report_and_the_vm_page_on_postgresql() {
    let Some(cluster) = util::pg_cluster() else {
        return;
    };
    let url = cluster.create_database().expect("createdb");
    let store = PostgresStore::open(&url, 2).await.expect("open");
    the_stats_path_reaches_the_report_and_the_vm_page(Arc::new(store)).await;
}
