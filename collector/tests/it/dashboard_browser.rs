//! The dashboard in a real headless Chromium (Debian's `chromium`, installed by
//! scripts/install-deps.sh), against a real collector in-process on 127.0.0.1:0
//! with a temporary SQLite store, fed through the HTTP ingest API with a token:
//! the real lab balloon OOM (lab-debian12-6.1-balloon-200m-of-512m.serial.log)
//! and the seed tor report (debian9-kvm-1g-tor.log) with rollups and balloon
//! histories, plus a VM named `<script>alert(1)</script>`.
//!
//! Chromium runs with `--dump-dom` (the DOM after parsing, to assert on) and
//! `--screenshot` (kept in artifacts/screenshots/ for people to look at). The
//! authentication modes and /explain are checked over plain HTTP.
#![allow(clippy::tests_outside_test_module)]

use crate::util;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use base64::Engine as _;
use http_body_util::Full;

use ballast_collector::app::app;
use ballast_collector::auth::token_sha256;
use ballast_collector::dashboard::{DashboardAuth, DashboardSettings, CONTENT_SECURITY_POLICY};
use ballast_collector::server::serve_listener;
use ballast_collector::state::{ApiConfig, AppState};
use ballast_collector::storage::queries;
use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::Store;
use ballast_model::{
    AgentHello, BalloonRollup, Batch, Envelope, Event, HostMemory, Inventory, MinMaxLast, OomEvent,
    VmConfig, VmInventory, VmRef,
};

use util::client::HttpClient;
use util::{batch, lab_config, lab_inflated, oom, oom_at_ms, tor_flat, LAB_UUID, MIB, TOR_UUID};

const EVIL_UUID: &str = "6a000000-0000-4000-8000-000000000666";
const EVIL_NAME: &str = "<script>alert(1)</script>";

struct Reply {
    status: u16,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(client: &HttpClient, request: hyper::Request<Full<Bytes>>) -> Reply {
    let reply = util::client::send(client, request).await.expect("request");
    Reply {
        status: reply.status,
        headers: reply.headers,
        body: String::from_utf8_lossy(&reply.body).into_owned(),
    }
}

async fn get(client: &HttpClient, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = hyper::Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(
        client,
        request.body(Full::new(Bytes::new())).expect("request"),
    )
    .await
}

async fn ingest(client: &HttpClient, base: &str, token: &str, batch: &Batch) {
    let request = hyper::Request::post(format!("{base}/api/v1/ingest"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(batch).expect("json"),
        )))
        .expect("request");
    let reply = send(client, request).await;
    assert_eq!(reply.status, 200, "ingest: {}", reply.body);
}

/// Moves an OOM fixture's times by `delta_ms` (the fixtures are fixed in time).
fn shifted(mut event: OomEvent, delta_ms: i64) -> OomEvent {
    for point in &mut event.balloon_history {
        point.at_ms += delta_ms;
    }
    event
}

fn rollup(
    key: String,
    vm: &VmRef,
    start: i64,
    actual: u64,
    memtotal: u64,
    usable: u64,
    maximum: u64,
) -> Envelope {
    let mml = |v: u64| MinMaxLast {
        min: Some(v),
        max: Some(v),
        last: Some(v),
    };
    Envelope {
        key,
        captured_at_ms: start + 60_000,
        event: Event::Rollup(Box::new(BalloonRollup {
            vm: vm.clone(),
            period_start_ms: start,
            period_secs: 60,
            samples: 6,
            maximum_kib: Some(maximum),
            actual_kib: mml(actual),
            available_kib: mml(memtotal),
            usable_kib: mml(usable),
            host: Some(HostMemory {
                total_kib: Some(24 * 1024 * MIB),
                available_kib: Some(if actual < maximum {
                    3 * 1024 * MIB
                } else {
                    18 * 1024 * MIB
                }),
                ..HostMemory::default()
            }),
            ..BalloonRollup::default()
        })),
    }
}

fn inventory(key: &str, at: i64, vms: Vec<(VmRef, VmConfig, Vec<String>)>) -> Envelope {
    Envelope {
        key: key.into(),
        captured_at_ms: at,
        event: Event::Inventory(Inventory {
            vms: vms
                .into_iter()
                .map(|(vm, config, findings)| VmInventory {
                    openstack: Default::default(),
                    vm,
                    state: ballast_model::VmState::Running,
                    config,
                    findings,
                })
                .collect(),
        }),
    }
}

fn hello(key: &str, at: i64, backend: &str) -> Envelope {
    Envelope {
        key: key.into(),
        captured_at_ms: at,
        event: Event::Hello(AgentHello {
            backend: backend.into(),
            capabilities: vec!["serial_capture".into()],
            host_memory_kib: Some(24 * 1024 * MIB),
        }),
    }
}

/// What the test store holds: (lab OOM time, tor OOM time).
async fn feed(client: &HttpClient, base: &str) -> (i64, i64) {
    let now = ballast_collector::now_ms();
    let lab_at = now - 2 * 3_600_000;
    let tor_at = now - 5 * 3_600_000;
    let lab = VmRef {
        uuid: LAB_UUID.into(),
        name: "lab-512".into(),
    };
    let tor = VmRef {
        uuid: TOR_UUID.into(),
        name: "tor-relay".into(),
    };
    let evil = VmRef {
        uuid: EVIL_UUID.into(),
        name: EVIL_NAME.into(),
    };
    let lab_config = lab_config();
    ingest(
        client,
        base,
        "blt_lab",
        &batch(
            "lab-host",
            vec![
                hello("lab/hello", lab_at - 7_200_000, "libvirt"),
                inventory(
                    "lab/inv",
                    lab_at - 7_200_000,
                    vec![
                        (
                            lab.clone(),
                            lab_config.clone(),
                            vec!["deflate_on_oom_off".into()],
                        ),
                        (
                            evil.clone(),
                            VmConfig {
                                stats_period_secs: None,
                                guest_agent_channel: false,
                                ..lab_config
                            },
                            vec!["stats_period_off".into(), "no_guest_agent_channel".into()],
                        ),
                    ],
                ),
            ],
        ),
    )
    .await;
    let mut rollups = Vec::new();
    for minute in 0..60i64 {
        let start = lab_at - (60 - minute) * 60_000;
        rollups.push(if minute < 58 {
            rollup(
                format!("lab/r/{minute}"),
                &lab,
                start,
                512 * MIB,
                500 * MIB,
                380 * MIB,
                512 * MIB,
            )
        } else {
            rollup(
                format!("lab/r/{minute}"),
                &lab,
                start,
                200 * MIB,
                188 * MIB,
                20 * MIB,
                512 * MIB,
            )
        });
        rollups.push(rollup(
            format!("evil/r/{minute}"),
            &evil,
            start,
            512 * MIB,
            500 * MIB,
            300 * MIB,
            512 * MIB,
        ));
    }
    ingest(client, base, "blt_lab", &batch("lab-host", rollups)).await;
    let lab_event = shifted(lab_inflated(), lab_at - oom_at_ms());
    let mut evil_event = shifted(lab_inflated(), lab_at - 600_000 - oom_at_ms());
    evil_event.vm = evil.clone();
    if let Some(killed) = evil_event.report.killed.as_mut() {
        killed.comm = "<img src=x onerror=alert(2)>".into();
    }
    ingest(
        client,
        base,
        "blt_lab",
        &batch(
            "lab-host",
            vec![
                oom("lab/oom/1", lab_at, lab_event),
                oom("lab/oom/evil", lab_at - 600_000, evil_event),
            ],
        ),
    )
    .await;

    let mut tor_rollups = vec![hello("tor/hello", tor_at - 7_200_000, "proxmox")];
    for minute in 0..60i64 {
        let start = tor_at - (60 - minute) * 60_000;
        tor_rollups.push(rollup(
            format!("tor/r/{minute}"),
            &tor,
            start,
            1024 * MIB,
            996 * MIB,
            300 * MIB,
            1024 * MIB,
        ));
    }
    ingest(client, base, "blt_tor", &batch("tor-host", tor_rollups)).await;
    ingest(
        client,
        base,
        "blt_tor",
        &batch(
            "tor-host",
            vec![oom(
                "tor/oom/1",
                tor_at,
                shifted(tor_flat(), tor_at - oom_at_ms()),
            )],
        ),
    )
    .await;
    (lab_at, tor_at)
}

struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

/// Serves `state` on 127.0.0.1:0 (with peer addresses, which proxy auth needs).
fn serve(state: AppState) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let _ = axum::serve(
            listener,
            app(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await;
    });
    Server {
        base,
        stop: Some(stop),
        task,
    }
}

async fn store(dir: &Path) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.join("c.sqlite"))
            .await
            .expect("open"),
    );
    for (host, token) in [("lab-host", "blt_lab"), ("tor-host", "blt_tor")] {
        queries::put_token(store.as_ref(), host, &token_sha256(token), 1, false)
            .await
            .expect("token");
    }
    store
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts/screenshots");
    std::fs::create_dir_all(&dir).expect("artifacts/screenshots");
    dir
}

fn chromium_binary() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("Chromium is not installed: run scripts/install-deps.sh (Debian package `chromium`)");
}

/// Runs headless Chromium with `args` on `url`; returns stdout. Killed after 90 s.
fn chromium(url: &str, args: &[String]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut command = Command::new(chromium_binary());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        // The browser runs on the real clock: under scripts/test-future-clock.sh only
        // the collector's clock is moved (Chromium hangs with libfaketime preloaded).
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start chromium");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let text = reader.join().expect("reader");
            assert!(
                status.success() || !text.is_empty(),
                "chromium failed on {url}: {status}"
            );
            return text;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish on {url} within 90 s");
        }
        // A poll, not wait_until: on a timeout Chromium is killed before the panic.
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) async fn dump_dom(url: &str) -> String {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || chromium(&url, &["--dump-dom".into()]))
        .await
        .expect("chromium thread")
}

pub(crate) async fn screenshot(url: &str, name: &str) -> PathBuf {
    let path = screenshots_dir().join(name);
    let _ = std::fs::remove_file(&path);
    let url = url.to_string();
    let target = path.clone();
    tokio::task::spawn_blocking(move || {
        chromium(
            &url,
            &[
                format!("--screenshot={}", target.display()),
                "--window-size=1280,1600".into(),
            ],
        )
    })
    .await
    .expect("chromium thread");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        path.display()
    );
    path
}

/// The `<tr class="oom-row">` rows of a page.
fn rows(dom: &str) -> Vec<&str> {
    dom.split("<tr class=\"oom-row\">")
        .skip(1)
        .map(|row| row.split("</tr>").next().unwrap_or(""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_in_chromium_with_charts_filters_and_escaping() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    let server = serve(AppState::new(store.clone(), ApiConfig::default()));
    let base = server.base.clone();
    let client = util::client::client();
    let (lab_at, _tor_at) = feed(&client, &base).await;

    let ooms: serde_json::Value = serde_json::from_str(
        &get(&client, &format!("{base}/api/v1/ooms?vm={LAB_UUID}"), &[])
            .await
            .body,
    )
    .expect("json");
    let lab_id = ooms["items"][0]["id"].as_i64().expect("lab OOM id");
    assert_eq!(ooms["items"][0]["correlation"]["verdict"], "balloon");

    // Overview.
    let dom = dump_dom(&format!("{base}/")).await;
    assert!(dom.contains("<h1>Fleet overview</h1>"), "{dom}");
    assert!(dom.contains("aria-label=\"OOMs over time by verdict\""));
    assert!(dom.matches("<rect class=\"bar").count() >= 2, "bars drawn");
    assert!(dom.contains("lab-host") && dom.contains("tor-host"));
    screenshot(&format!("{base}/"), "overview.png").await;

    // One OOM: the verdict first, then the chart with the OOM marked.
    let url = format!("{base}/ooms/{lab_id}");
    let dom = dump_dom(&url).await;
    let verdict_at = dom.find("id=\"verdict\"").expect("verdict section");
    let chart_at = dom.find("id=\"trajectory\"").expect("trajectory section");
    assert!(verdict_at < chart_at, "the verdict comes first");
    let verdict = &dom[verdict_at..chart_at];
    assert!(
        verdict.contains("class=\"badge v-balloon\">balloon</span>"),
        "{verdict}"
    );
    let chart = &dom[chart_at..];
    assert!(chart.contains("aria-label=\"Balloon trajectory before the OOM\""));
    assert!(chart.contains("class=\"oom-mark\""), "OOM marked");
    assert!(chart.contains("class=\"series s-actual\""));
    assert!(dom.contains("memhog"), "killed task shown");
    assert!(
        dom.contains("DMA32") && dom.contains("below min watermark"),
        "zones"
    );
    assert!(dom.contains("<pre class=\"raw\">"), "raw report");
    screenshot(&url, "oom-lab.png").await;

    // Filters: only matching rows.
    let dom = dump_dom(&format!("{base}/ooms?verdict=not_balloon")).await;
    let found = rows(&dom);
    assert_eq!(found.len(), 1, "{dom}");
    assert!(found[0].contains("tor-relay") && found[0].contains("not_balloon"));
    let dom = dump_dom(&format!("{base}/ooms?host=lab-host&kind=guest")).await;
    let found = rows(&dom);
    assert_eq!(found.len(), 2);
    assert!(found
        .iter()
        .all(|row| row.contains("lab-host") && !row.contains("tor-relay")));
    let since = ballast_collector::reports::format::datetime_local(lab_at - 30_000);
    let dom = dump_dom(&format!("{base}/ooms?since={since}")).await;
    let found = rows(&dom);
    assert_eq!(found.len(), 1, "time range keeps only the lab OOM");
    assert!(found[0].contains("lab-512"));
    screenshot(&format!("{base}/ooms?host=lab-host"), "ooms-filtered.png").await;

    // A hostile VM name (and killed comm) is text, never markup.
    for url in [
        format!("{base}/vms/{EVIL_UUID}"),
        format!("{base}/ooms"),
        format!("{base}/hosts/lab-host"),
    ] {
        let dom = dump_dom(&url).await;
        assert!(
            dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{url}: {dom}"
        );
        assert!(
            !dom.to_ascii_lowercase().contains("<script"),
            "{url}: no script element"
        );
        assert!(!dom.contains("<img"), "{url}: no img element from the comm");
    }
    let dom = dump_dom(&format!("{base}/vms/{EVIL_UUID}")).await;
    assert!(
        dom.contains("stats_period_off") && dom.contains("no_guest_agent_channel"),
        "audit findings"
    );
    assert!(dom.contains("aria-label=\"VM memory over time\""));
    screenshot(&format!("{base}/vms/{EVIL_UUID}"), "vm-hostile-name.png").await;
    screenshot(&format!("{base}/vms/{LAB_UUID}"), "vm-lab.png").await;

    // The balloon-policy report from the real balloon OOM ingested above.
    let dom = dump_dom(&format!("{base}/reports/balloon-policy")).await;
    assert!(
        dom.contains("<strong>256 MiB</strong>"),
        "lab floor recommendation: {dom}"
    );
    assert!(dom.contains("virsh setmem lab-512 256M --live --config"));
    assert!(dom.contains("the configured floor is below the observed working set"));
    screenshot(
        &format!("{base}/reports/balloon-policy"),
        "balloon-policy.png",
    )
    .await;
    let markdown = get(
        &client,
        &format!("{base}/reports/balloon-policy?format=md"),
        &[],
    )
    .await;
    assert_eq!(markdown.status, 200);
    assert!(
        markdown.body.contains("Recommended floor: **256 MiB**"),
        "{}",
        markdown.body
    );

    // Headers: the strict CSP everywhere.
    let reply = get(&client, &format!("{base}/ooms/{lab_id}"), &[]).await;
    assert_eq!(
        reply
            .headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok()),
        Some(CONTENT_SECURITY_POLICY)
    );
    assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self'"));
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
    assert_eq!(
        get(&client, &format!("{base}/ooms/999999"), &[])
            .await
            .status,
        404
    );

    server.stop().await;
    eprintln!("browser test took {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyses_an_upload_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    let mut config = ApiConfig::default();
    config.dashboard.explain_max_bytes = 64 * 1024;
    let server = serve(AppState::new(store.clone(), config));
    let client = util::client::client();
    let log = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/ballast-oom/tests/fixtures/oom/debian9-kvm-1g-tor.log"),
    )
    .expect("fixture");
    let multipart = |file: &[u8]| {
        let mut body = Vec::new();
        body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"report\"\r\n\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"log\"; filename=\"kern.log\"\r\nContent-Type: text/plain\r\n\r\n");
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        hyper::Request::post(format!("{}/explain", server.base))
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(Full::new(Bytes::from(body)))
            .expect("request")
    };
    let reply = send(&client, multipart(&log)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("1 OOM reports found"), "{}", reply.body);
    assert!(reply
        .body
        .contains("class=\"badge v-kernel\">kernel_unaccounted</span>"));
    assert!(reply.body.contains("tor"));
    let big = vec![b'x'; 100 * 1024];
    let reply = send(&client, multipart(&big)).await;
    assert!(reply.status == 413, "too large: {}", reply.status);
    let stored = queries::list_ooms(
        store.as_ref(),
        &queries::OomFilter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .expect("list");
    assert!(stored.items.is_empty(), "explain stores nothing");
    server.stop().await;
}

/// A VM squeezed to its balloon floor (issue 19): minute rollups with pressure over
/// the last half hour, an elevated episode that ended and a critical one still open,
/// POSTed to a real collector. The VM page shades both episodes in two tints with a
/// legend on both charts, draws the pressure lines, and lists the episodes; the
/// overview lists the VM under pressure now; the guest's hostile name stays text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_page_shades_pressure_episodes_and_the_overview_lists_them() {
    use ballast_model::{EpisodePhase, RiskLevel};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    let server = serve(AppState::new(store.clone(), ApiConfig::default()));
    let base = server.base.clone();
    let client = util::client::client();
    const UUID: &str = "6a000000-0000-4000-8000-00000000a19e";
    let start = (ballast_collector::now_ms() / 60_000) * 60_000 - 30 * 60_000;
    let vm = VmRef {
        uuid: UUID.into(),
        name: "<b>squeezed</b>".into(),
    };
    let mut events = vec![inventory(
        "lab/p/inv",
        start,
        vec![(vm.clone(), lab_config(), Vec::new())],
    )];
    for minute in 0..30 {
        let stalls = if (5..12).contains(&minute) || minute >= 20 {
            20.0 + f64::from(minute)
        } else {
            0.5
        };
        let risk = if minute >= 20 {
            RiskLevel::Critical
        } else if stalls > 1.0 {
            RiskLevel::Elevated
        } else {
            RiskLevel::Ok
        };
        let mut envelope = util::rollup_with_pressure(
            &format!("lab/p/r/{minute}"),
            UUID,
            start + i64::from(minute) * 60_000,
            128 * MIB,
            util::pressure(stalls, stalls.min(90.0), risk),
        );
        if let Event::Rollup(rollup) = &mut envelope.event {
            rollup.vm.name = vm.name.clone();
        }
        events.push(envelope);
    }
    let first = start + 5 * 60_000;
    let second = start + 20 * 60_000;
    for envelope in [
        util::episode(
            "lab/p/1s",
            UUID,
            EpisodePhase::Start,
            first,
            first,
            RiskLevel::Elevated,
            32 * MIB,
        ),
        util::episode(
            "lab/p/1e",
            UUID,
            EpisodePhase::End,
            first,
            start + 12 * 60_000,
            RiskLevel::Elevated,
            32 * MIB,
        ),
        util::episode(
            "lab/p/2s",
            UUID,
            EpisodePhase::Start,
            second,
            second,
            RiskLevel::Elevated,
            64 * MIB,
        ),
        util::episode(
            "lab/p/2p",
            UUID,
            EpisodePhase::Peak,
            second,
            second + 120_000,
            RiskLevel::Critical,
            96 * MIB,
        ),
    ] {
        let mut envelope = envelope;
        if let Event::Pressure(episode) = &mut envelope.event {
            episode.vm.name = vm.name.clone();
        }
        events.push(envelope);
    }
    ingest(&client, &base, "blt_lab", &batch("lab-host", events)).await;

    let url = format!("{base}/vms/lab-host/{UUID}");
    let dom = dump_dom(&url).await;
    let memory_at = dom.find("id=\"memory\"").expect("memory section");
    let pressure_at = dom.find("id=\"pressure\"").expect("pressure section");
    let memory = &dom[memory_at..pressure_at];
    let pressure = &dom[pressure_at..];
    for section in [memory, pressure] {
        assert_eq!(
            section.matches("class=\"band episode-elevated\"").count(),
            1,
            "{section}"
        );
        assert_eq!(
            section.matches("class=\"band episode-critical\"").count(),
            1,
            "{section}"
        );
        assert!(
            section.contains("pressure episode: elevated")
                && section.contains("pressure episode: critical"),
            "legend"
        );
    }
    assert!(pressure.contains("aria-label=\"VM pressure signals over time\""));
    for class in ["s-stalls", "s-psi-some", "s-psi-full", "s-slope"] {
        assert!(
            pressure.contains(&format!("class=\"series {class}\"")),
            "{class} drawn"
        );
    }
    assert!(!pressure.contains("signals: none"), "this VM has signals");
    assert!(
        pressure.contains(">open<"),
        "the open episode is listed as open"
    );
    assert!(
        dom.contains("&lt;b&gt;squeezed&lt;/b&gt;"),
        "the name is text"
    );
    assert!(!dom.contains("<b>squeezed"), "never markup");
    screenshot(&url, "vm-pressure.png").await;

    let dom = dump_dom(&format!("{base}/")).await;
    let listed_at = dom
        .find("id=\"under-pressure\"")
        .expect("under pressure section");
    let listed = &dom[listed_at..];
    let listed = &listed[..listed.find("</section>").unwrap_or(listed.len())];
    assert_eq!(
        listed.matches("<tr>").count(),
        2,
        "a header and the one open episode: {listed}"
    );
    assert!(
        listed.contains("&lt;b&gt;squeezed&lt;/b&gt;") && listed.contains("r-critical"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("href=\"/vms/lab-host/{UUID}\"")),
        "links the VM page"
    );
    screenshot(&format!("{base}/"), "overview-pressure.png").await;
    server.stop().await;
}

/// Guard actions POSTed to the collector: the VM page marks them on the memory chart
/// (deflated, overridden and would-deflate in distinct marks with a legend) and lists
/// them with the detail escaped; the overview counts the episode the deflation ended
/// with no OOM as averted and says what observe would have done before an OOM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_page_marks_guard_actions_and_the_overview_counts_averted_ooms() {
    use ballast_model::{EpisodePhase, GuardMode, GuardOutcome, RiskLevel};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    let server = serve(AppState::new(store.clone(), ApiConfig::default()));
    let base = server.base.clone();
    let client = util::client::client();
    const ACTED: &str = "6a000000-0000-4000-8000-0000000000a1";
    const OBSERVED: &str = "6a000000-0000-4000-8000-0000000000b2";
    let start = (ballast_collector::now_ms() / 60_000) * 60_000 - 30 * 60_000;
    let named = |uuid: &str, name: &str| VmRef {
        uuid: uuid.into(),
        name: name.into(),
    };
    let mut events = vec![inventory(
        "lab/g/inv",
        start,
        vec![
            (named(ACTED, "acted"), lab_config(), Vec::new()),
            (named(OBSERVED, "observed"), lab_config(), Vec::new()),
        ],
    )];
    for minute in 0..30 {
        for uuid in [ACTED, OBSERVED] {
            events.push(util::rollup(
                &format!("lab/g/r/{uuid}/{minute}"),
                uuid,
                start + i64::from(minute) * 60_000,
                if minute < 6 { 128 * MIB } else { 384 * MIB },
            ));
        }
    }
    // The acted VM: an episode from minute 5 to 12, a deflation at 6, a second step
    // the host's policy undid at 8. The observed VM: an episode from 20, a decision
    // it would have taken at 20:20, the OOM at 21:00.
    let (acted_start, observed_start) = (start + 5 * 60_000, start + 20 * 60_000);
    events.push(util::episode(
        "lab/g/e1s",
        ACTED,
        EpisodePhase::Start,
        acted_start,
        acted_start,
        RiskLevel::Critical,
        256 * MIB,
    ));
    events.push(util::episode(
        "lab/g/e1e",
        ACTED,
        EpisodePhase::End,
        acted_start,
        start + 12 * 60_000,
        RiskLevel::Critical,
        MIB,
    ));
    events.push(util::episode(
        "lab/g/e2s",
        OBSERVED,
        EpisodePhase::Start,
        observed_start,
        observed_start,
        RiskLevel::Critical,
        256 * MIB,
    ));
    let mut actions = vec![
        util::guard_action(
            "lab/g/a1",
            ACTED,
            start + 6 * 60_000,
            GuardMode::Act,
            GuardOutcome::Deflated,
            384 * MIB,
        ),
        util::guard_action(
            "lab/g/a2",
            ACTED,
            start + 8 * 60_000,
            GuardMode::Act,
            GuardOutcome::OverriddenByHost,
            448 * MIB,
        ),
        util::guard_action(
            "lab/g/o1",
            OBSERVED,
            observed_start + 20_000,
            GuardMode::Observe,
            GuardOutcome::WouldDeflate,
            384 * MIB,
        ),
    ];
    for (envelope, started) in actions
        .iter_mut()
        .zip([acted_start, acted_start, observed_start])
    {
        if let Event::Guard(action) = &mut envelope.event {
            action.episode_started_at_ms = Some(started);
            action.detail = "<img src=x onerror=alert(1)> step".into();
        }
    }
    events.extend(actions);
    let oom_time = observed_start + 60_000;
    let mut killed = shifted(lab_inflated(), oom_time - oom_at_ms());
    killed.vm = named(OBSERVED, "observed");
    events.push(oom("lab/g/oom", oom_time, killed));
    ingest(&client, &base, "blt_lab", &batch("lab-host", events)).await;

    let url = format!("{base}/vms/lab-host/{ACTED}");
    let dom = dump_dom(&url).await;
    let memory_at = dom.find("id=\"memory\"").expect("memory section");
    let guard_at = dom.find("id=\"guard\"").expect("guard section");
    let memory = &dom[memory_at..guard_at];
    let listed = &dom[guard_at..];
    assert_eq!(
        memory
            .matches("class=\"guard-mark guard-deflated\"")
            .count(),
        1,
        "{memory}"
    );
    assert_eq!(
        memory
            .matches("class=\"guard-mark guard-overridden\"")
            .count(),
        1
    );
    assert!(!memory.contains("guard-mark guard-would"), "the other VM's");
    assert!(
        memory.contains("guard: deflated") && memory.contains("guard: overridden by host policy"),
        "legend"
    );
    assert!(listed.contains("128 MiB -&gt; 384 MiB"), "before -> target");
    assert!(listed.contains("overridden_by_host") && listed.contains("psi_full, alloc_stalls"));
    assert!(
        listed.contains("&lt;img src=x onerror=alert(1)&gt; step"),
        "escaped"
    );
    assert!(!dom.contains("<img src=x"), "never markup");
    screenshot(&url, "vm-guard.png").await;

    let dom = dump_dom(&format!("{base}/vms/lab-host/{OBSERVED}")).await;
    assert_eq!(dom.matches("class=\"guard-mark guard-would\"").count(), 1);
    assert!(dom.contains("guard: would have deflated (observe)"));

    let dom = dump_dom(&format!("{base}/")).await;
    let guard_at = dom.find("id=\"guard\"").expect("guard section");
    let section = &dom[guard_at..];
    let section = &section[..section.find("</section>").unwrap_or(section.len())];
    assert!(
        section.contains("<span class=\"num\">1</span> OOMs averted"),
        "{section}"
    );
    assert!(
        section.contains(&format!("href=\"/vms/lab-host/{ACTED}\"")),
        "the averted episode's VM: {section}"
    );
    assert!(
        section.contains("would have deflated 256 MiB 40 s before the OOM"),
        "{section}"
    );
    screenshot(&format!("{base}/"), "overview-guard.png").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_proxy_authentication() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    let client = util::client::client();
    let token = "dashboard-token-0123456789";

    let config = ApiConfig {
        dashboard: DashboardSettings {
            auth: DashboardAuth::Token(token.into()),
            ..DashboardSettings::default()
        },
        ..ApiConfig::default()
    };
    let server = serve(AppState::new(store.clone(), config));
    let base = server.base.clone();
    let reply = get(&client, &format!("{base}/"), &[]).await;
    assert_eq!(reply.status, 401);
    assert!(reply.headers.contains_key("www-authenticate"));
    assert_eq!(
        get(&client, &format!("{base}/assets/style.css"), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&client, &format!("{base}/login"), &[]).await.status,
        200
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ops:{token}"))
    );
    assert_eq!(
        get(&client, &format!("{base}/"), &[("authorization", &basic)])
            .await
            .status,
        200
    );
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ops:nope")
    );
    assert_eq!(
        get(&client, &format!("{base}/"), &[("authorization", &wrong)])
            .await
            .status,
        401
    );
    let login = send(
        &client,
        hyper::Request::post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!("token={token}"))))
            .expect("request"),
    )
    .await;
    assert_eq!(login.status, 303);
    let cookie = login
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!cookie.contains(token), "the cookie is not the token");
    let pair = cookie.split(';').next().expect("pair").to_string();
    assert_eq!(
        get(&client, &format!("{base}/ooms"), &[("cookie", &pair)])
            .await
            .status,
        200
    );
    server.stop().await;

    for (trusted, header, expected) in [
        ("127.0.0.1", Some("alice"), 200),
        ("127.0.0.1", None, 403),
        ("10.9.8.7", Some("alice"), 403),
    ] {
        let config = ApiConfig {
            dashboard: DashboardSettings {
                auth: DashboardAuth::Proxy {
                    header: axum::http::HeaderName::from_static("x-remote-user"),
                    trusted: vec![trusted.parse().expect("ip")],
                },
                ..DashboardSettings::default()
            },
            ..ApiConfig::default()
        };
        let server = serve(AppState::new(store.clone(), config));
        let headers: Vec<(&str, &str)> = header
            .map(|user| ("x-remote-user", user))
            .into_iter()
            .collect();
        let reply = get(&client, &format!("{}/", server.base), &headers).await;
        assert_eq!(reply.status, expected, "proxy {trusted} user {header:?}");
        server.stop().await;
    }

    // The real server passes peer addresses too: a trusted proxy's user gets in.
    let mut config = ApiConfig::default();
    config.dashboard.auth = DashboardAuth::Proxy {
        header: axum::http::HeaderName::from_static("x-remote-user"),
        trusted: vec!["127.0.0.1".parse().expect("ip")],
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(store.clone(), config);
    let task = tokio::spawn(async move {
        let _ = serve_listener(listener, state, None, async {
            let _ = stopped.await;
        })
        .await;
    });
    let reply = get(&client, &format!("{base}/"), &[("x-remote-user", "alice")]).await;
    assert_eq!(reply.status, 200, "trusted proxy through serve_listener");
    let _ = stop.send(());
    let _ = task.await;
}
