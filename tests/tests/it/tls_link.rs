//! The agent -> collector link over TLS with a private CA generated at test time
//! (`ballast_testpg::pki`): the REAL collector binary serves HTTPS with a certificate
//! for `localhost` signed by that CA, and the agent's own spool and sender, configured
//! from an agent YAML file with `collector.ca_file`, deliver OOM events to it. Without
//! the CA the handshake fails with an error naming the certificate, and the spool keeps
//! every event (nothing dead-lettered) until a sender that trusts the CA sends them.
//! Also: `ballast-agent check-config` refuses `http://` to a remote collector.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ballast_agent::sink::{self, CollectorClient, Reachability, SinkConfig, SinkStats};
use ballast_agent::spool::{key_for, Spool, SpoolConfig, SpoolHandle};
use ballast_model::{
    CaptureSource, Envelope, Event, OomAnalysis, OomEvent, OomKind, ParsedReport, VmRef,
};
use ballast_testenv::wait_until_async;
use ballast_testpg::pki::TestPki;
use ballast_tests::{binary, create_token, free_port, write_collector_config};

const HOST: &str = "h1";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .expect("clock after 1970")
}

/// OOM event `index` of a series tagged `tag`, captured a minute ago (plus `index` ms).
fn oom(tag: &str, index: u64, base_ms: i64) -> Envelope {
    let event = Event::Oom(Box::new(OomEvent {
        vm: VmRef {
            uuid: "00000000-0000-4000-8000-000000000001".into(),
            name: "guest1".into(),
        },
        kind: OomKind::Guest,
        source: CaptureSource::Serial,
        raw_report: format!("Out of memory: Killed process {index} (stress)"),
        raw_truncated: false,
        report: ParsedReport {
            kind: ballast_model::ReportKind::Global,
            ..ParsedReport::default()
        },
        analysis: OomAnalysis {
            verdict: ballast_model::ReportVerdict::Unknown,
            ..OomAnalysis::default()
        },
        balloon_at_oom: Default::default(),
        balloon_history: Vec::new(),
        host: None,
        flood_suppressed: 0,
    }));
    Envelope {
        key: key_for(HOST, &event, &format!("{tag}-{index}")),
        captured_at_ms: base_ms + i64::try_from(index).expect("small"),
        event,
    }
}

fn open_spool(dir: &Path) -> SpoolHandle {
    let (spool, _) =
        Spool::open(SpoolConfig::with_cap(dir.join("spool"), 64 << 20)).expect("spool opens");
    SpoolHandle::new(spool)
}

/// The agent's sender settings as `ballast-agent run` builds them from `agent.yaml`,
/// with short retry delays for the test.
fn sink_config_from_yaml(dir: &Path, yaml: &str) -> SinkConfig {
    let path = dir.join("agent.yaml");
    std::fs::write(&path, yaml).expect("agent.yaml");
    let settings = ballast_agent::config::load(Some(&path), "unused").expect("agent.yaml is valid");
    let mut config = SinkConfig::from_settings(&settings).expect("a collector is configured");
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(300);
    config.idle_poll = Duration::from_millis(50);
    config
}

fn agent_yaml(dir: &Path, url: &str, token_file: &Path, ca_file: Option<&Path>) -> String {
    let ca = ca_file.map_or_else(String::new, |path| {
        format!("  ca_file: {}\n", path.display())
    });
    format!(
        "host_id: {HOST}\nstate_dir: {}\ncollector:\n  url: {url}\n  token_file: {}\n{ca}",
        dir.display(),
        token_file.display()
    )
}

struct Sender {
    stats: Arc<SinkStats>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), sink::SinkError>>,
}

impl Sender {
    fn start(config: SinkConfig, spool: &SpoolHandle) -> Self {
        let stats = Arc::new(SinkStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sink::run(
            config,
            spool.clone(),
            Arc::clone(&stats),
            async {
                let _ = stopped.await;
            },
        ));
        Self { stats, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("sender task")
            .expect("sender ends cleanly");
    }
}

struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client of the read API that trusts only `ca_pem`.
fn https_client(ca_pem: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA certificate");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// How many OOMs of `HOST` the API lists.
async fn listed_ooms(client: &reqwest::Client, base: &str) -> usize {
    let url = format!("{base}/api/v1/ooms?host={HOST}&limit=500");
    let Ok(response) = client.get(&url).send().await else {
        return 0;
    };
    let page: serde_json::Value = response.json().await.unwrap_or_default();
    page["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_delivers_over_tls_to_a_collector_signed_by_a_private_ca() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let pki = TestPki::generate("ballast test CA", &["localhost", "127.0.0.1"]).expect("pki");
    let ca_file = root.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).expect("ca.pem");
    std::fs::write(root.join("server.crt"), &pki.server_cert_pem).expect("server.crt");
    std::fs::write(root.join("server.key"), &pki.server_key_pem).expect("server.key");

    let port = free_port();
    let tls = format!(
        "tls:\n  cert_file: {}\n  key_file: {}\n",
        root.join("server.crt").display(),
        root.join("server.key").display()
    );
    let config = write_collector_config(&root.join("collector"), port, &root.join("store"), &tls);
    let token_file = root.join("agent.token");
    std::fs::write(&token_file, create_token(&config, HOST)).expect("token");
    let _collector = Collector(
        Command::new(binary("ballast-collector"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("collector.log")).expect("log"))
            .spawn()
            .expect("collector starts"),
    );
    let base = format!("https://localhost:{port}");
    let reader = https_client(&pki.ca_pem);
    wait_until_async("the collector to answer over TLS", Duration::from_secs(30), async || {
        matches!(reader.get(format!("{base}/healthz")).send().await, Ok(r) if r.status().is_success())
    })
    .await;

    // Without the CA: the handshake fails, the health check names the certificate
    // problem, the sender retries and the spool keeps every event.
    let plain_dir = root.join("agent-no-ca");
    std::fs::create_dir_all(&plain_dir).expect("dir");
    let without_ca = sink_config_from_yaml(
        &plain_dir,
        &agent_yaml(&plain_dir, &base, &token_file, None),
    );
    let reachability = CollectorClient::new(&without_ca)
        .expect("client")
        .check_health()
        .await;
    let Reachability::Unreachable { error } = &reachability else {
        panic!("the handshake must fail without the CA: {reachability:?}");
    };
    assert!(
        error.contains("certificate"),
        "the error names the certificate: {error}"
    );
    assert!(error.contains("UnknownIssuer"), "{error}");
    let spool = open_spool(&plain_dir);
    let base_ms = now_ms() - 60_000;
    for index in 0..20 {
        spool
            .push_blocking(&oom("held", index, base_ms))
            .expect("push");
    }
    let sender = Sender::start(without_ca, &spool);
    let stats = Arc::clone(&sender.stats);
    wait_until_async(
        "a second failed handshake (it keeps retrying)",
        Duration::from_secs(15),
        async || stats.send_errors.load(Ordering::Relaxed) >= 2,
    )
    .await;
    sender.stop().await;
    assert_eq!(stats.batches_sent.load(Ordering::Relaxed), 0);
    assert_eq!(
        stats.dead_lettered_batches.load(Ordering::Relaxed),
        0,
        "nothing set aside"
    );
    assert_eq!(spool.stats().events, 20, "the spool holds every event");
    assert_eq!(listed_ooms(&reader, &base).await, 0);

    // With collector.ca_file: the same spool drains, every event arrives.
    let with_ca = sink_config_from_yaml(
        &plain_dir,
        &agent_yaml(&plain_dir, &base, &token_file, Some(&ca_file)),
    );
    assert_eq!(
        CollectorClient::new(&with_ca)
            .expect("client")
            .check_health()
            .await,
        Reachability::Healthy
    );
    for index in 20..40 {
        spool
            .push_blocking(&oom("held", index, base_ms))
            .expect("push");
    }
    let sender = Sender::start(with_ca, &spool);
    wait_until_async("the spool to drain", Duration::from_secs(30), async || {
        spool.stats().events == 0
    })
    .await;
    let stats = Arc::clone(&sender.stats);
    sender.stop().await;
    assert_eq!(stats.events_sent.load(Ordering::Relaxed), 40);
    assert_eq!(stats.dead_lettered_batches.load(Ordering::Relaxed), 0);
    wait_until_async(
        "the collector to list 40 OOMs",
        Duration::from_secs(10),
        async || listed_ooms(&reader, &base).await == 40,
    )
    .await;
}

fn check_config(dir: &Path, yaml: &str) -> (bool, String) {
    let path: PathBuf = dir.join("agent.yaml");
    std::fs::write(&path, yaml).expect("agent.yaml");
    let output = Command::new(binary("ballast-agent"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("ballast-agent runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_refuses_clear_text_to_a_remote_collector_and_a_bad_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().display();
    let (ok, stderr) = check_config(
        dir.path(),
        &format!("state_dir: {state}\ncollector:\n  url: http://192.0.2.7:8470\n"),
    );
    assert!(!ok, "clear text to a remote collector must be refused");
    assert!(stderr.contains("collector.url"), "{stderr}");
    assert!(stderr.contains("allow_insecure_http"), "{stderr}");
    let (ok, stderr) = check_config(
        dir.path(),
        &format!("state_dir: {state}\ncollector:\n  url: http://192.0.2.7:8470\n  allow_insecure_http: true\n"),
    );
    assert!(ok, "allowed explicitly: {stderr}");
    let (ok, stderr) = check_config(
        dir.path(),
        &format!("state_dir: {state}\ncollector:\n  url: http://127.0.0.1:8470\n"),
    );
    assert!(ok, "loopback may be plain http: {stderr}");

    let bad_ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad_ca, "hello\n").expect("file");
    let (ok, stderr) = check_config(
        dir.path(),
        &format!(
            "state_dir: {state}\ncollector:\n  url: https://collector.example:8470\n  ca_file: {}\n",
            bad_ca.display()
        ),
    );
    assert!(!ok, "a CA file without a certificate must be refused");
    assert!(stderr.contains("collector.ca_file"), "{stderr}");
    assert!(stderr.contains("not-a-ca.pem"), "{stderr}");
}
