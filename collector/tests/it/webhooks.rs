//! Webhook notifications against a real HTTP receiver on 127.0.0.1 (axum, in the
//! test), with the real collector in-process (HTTP ingest, the store, the senders):
//! bodies, escaping, filters, retries after 500 / a hang / a stopped receiver, a
//! collector restart with pending notifications, the rate limit's summary, duplicate
//! ingests, and two collectors sharing one PostgreSQL.
#![allow(clippy::tests_outside_test_module)]

use crate::util;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::Value;

use ballast_collector::auth::token_sha256;
use ballast_collector::config::{RawConfig, Settings};
use ballast_collector::notify::{self, Notifier};
use ballast_collector::server::serve_listener;
use ballast_collector::state::{ApiConfig, AppState};
use ballast_collector::storage::outbox;
use ballast_collector::storage::outbox::Limit;
use ballast_collector::storage::{self, queries, Store};
use ballast_model::{Envelope, OomEvent};
use ballast_testenv::wait_until_async;

const HOST: &str = "pve1";
const TOKEN: &str = "blt_webhook-test-token-0123456789";

// ---------------------------------------------------------------- the receiver

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Ok,
    Status(u16),
    /// Never answers (the sender's timeout fires).
    Hang,
}

#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: HeaderMap,
    body: Value,
    /// The status it got (`None`: hung).
    status: Option<u16>,
    /// When it arrived.
    at: Instant,
}

#[derive(Debug, Default)]
struct Recorder {
    requests: Vec<Request>,
    script: VecDeque<Answer>,
    /// Every answer waits this long (senders overlap).
    delay: Duration,
}

/// A webhook receiver: records every request, answers from a script (then 200).
struct Receiver {
    addr: SocketAddr,
    recorder: Arc<Mutex<Recorder>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

async fn record(
    State(recorder): State<Arc<Mutex<Recorder>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (answer, delay) = {
        let mut recorder = recorder.lock().expect("lock");
        let answer = recorder.script.pop_front().unwrap_or(Answer::Ok);
        recorder.requests.push(Request {
            path: uri.path().to_string(),
            headers,
            body,
            at: Instant::now(),
            status: match answer {
                Answer::Ok => Some(200),
                Answer::Status(status) => Some(status),
                Answer::Hang => None,
            },
        });
        (answer, recorder.delay)
    };
    // The receiver's configured answer time (the scenario: a slow receiver).
    tokio::time::sleep(delay).await;
    // No keep-alive: a stopped receiver must refuse connections, not serve old ones.
    let close = [(axum::http::header::CONNECTION, "close")];
    match answer {
        Answer::Ok => (StatusCode::OK, close, "ok").into_response(),
        Answer::Status(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            close,
            "receiver says no",
        )
            .into_response(),
        Answer::Hang => {
            // The scenario: a receiver that never answers.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (StatusCode::OK, close).into_response()
        }
    }
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut receiver = Self {
            addr,
            recorder: Arc::default(),
            server: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(record))
            .with_state(Arc::clone(&self.recorder));
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn script(&self, answers: &[Answer]) {
        self.recorder
            .lock()
            .expect("lock")
            .script
            .extend(answers.iter().copied());
    }

    /// Requests to `path` so far.
    fn requests(&self, path: &str) -> Vec<Request> {
        self.recorder
            .lock()
            .expect("lock")
            .requests
            .iter()
            .filter(|r| r.path == format!("/{path}"))
            .cloned()
            .collect()
    }

    /// Requests to `path` answered 2xx: what the receiver's user saw.
    fn delivered(&self, path: &str) -> Vec<Request> {
        self.requests(path)
            .into_iter()
            .filter(|r| r.status == Some(200))
            .collect()
    }

    /// Stops listening (connections are refused until [`Receiver::restart`]).
    async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind the same port");
        self.serve(listener);
    }
}

// ---------------------------------------------------------------- the collector

/// The collector in-process: HTTP API on 127.0.0.1:0 and the webhook senders.
struct Collector {
    base: String,
    store: Arc<dyn Store>,
    notifier: Notifier,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

fn settings(yaml: &str) -> Settings {
    RawConfig::from_yaml(yaml, std::path::Path::new("collector.yaml"))
        .expect("the test config parses")
        .validate()
        .expect("the test config is valid")
}

impl Collector {
    async fn start(settings: &Settings) -> Self {
        let store = storage::open(&settings.storage).await.expect("open store");
        // put_token refuses a second token for the host: only the first start adds it.
        let _ = queries::put_token(
            store.as_ref(),
            HOST,
            &token_sha256(TOKEN),
            ballast_collector::now_ms(),
            true,
        )
        .await;
        let notifier = notify::spawn(Arc::clone(&store), &settings.notify);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state = AppState::new(Arc::clone(&store), ApiConfig::from_settings(settings));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = serve_listener(listener, state, None, async {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            base,
            store,
            notifier,
            stop: Some(stop),
            server,
        }
    }

    async fn ingest(&self, events: Vec<Envelope>) -> Value {
        let batch = util::batch(HOST, events);
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/ingest", self.base))
            .bearer_auth(TOKEN)
            .json(&batch)
            .send()
            .await
            .expect("ingest request");
        assert_eq!(response.status().as_u16(), 200, "ingest answered");
        response.json().await.expect("ingest answer")
    }

    /// Outbox rows of `webhook` in `state`.
    async fn outbox(&self, webhook: &str, state: &str) -> i64 {
        outbox::counts(self.store.as_ref())
            .await
            .expect("outbox counts")
            .into_iter()
            .filter(|(w, s, _)| w == webhook && s == state)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// Waits until `webhook` has nothing left to send (no pending row): then nothing
    /// more can arrive, so a check after it sees every message the notifier will
    /// ever send for it.
    async fn wait_drained(&self, webhook: &str) {
        wait_until_async(
            &format!("the {webhook} outbox to drain"),
            Duration::from_secs(10),
            async || self.outbox(webhook, "pending").await == 0,
        )
        .await;
    }

    /// Stops serving and sending, as a shutdown would.
    async fn stop(self) -> Arc<dyn Store> {
        let Self {
            store,
            notifier,
            stop,
            server,
            ..
        } = self;
        notifier.shutdown().await;
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let _ = server.await;
        store
    }
}

fn sqlite_yaml(dir: &std::path::Path, notify: &str) -> String {
    format!(
        "state_dir: {}\nnotify:\n  public_url: https://ballast.example.org/\n  poll_interval_ms: 100\n{notify}",
        dir.display()
    )
}

/// A webhook entry with fast retries.
fn hook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    url: {url}\n    timeout_secs: 1\n    backoff_initial_ms: 100\n    backoff_max_secs: 1\n{extra}"
    )
}

/// A receiver and a SQLite collector in a fresh directory whose one webhook, `ops`,
/// sends to the receiver's `/hook` with fast retries.
async fn with_one_hook() -> (tempfile::TempDir, Receiver, Collector) {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let yaml = sqlite_yaml(
        dir.path(),
        &format!("  webhooks:\n{}", hook("ops", &receiver.url("hook"), "")),
    );
    let collector = Collector::start(&settings(&yaml)).await;
    (dir, receiver, collector)
}

fn oom(key: &str, offset_ms: i64, event: OomEvent) -> Envelope {
    util::oom(key, util::oom_at_ms() + offset_ms, event)
}

fn ids(requests: &[Request]) -> Vec<i64> {
    let mut ids: Vec<i64> = requests
        .iter()
        .filter_map(|r| r.body["oom_id"].as_i64())
        .collect();
    ids.sort_unstable();
    ids
}

// ---------------------------------------------------------------- the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_slack_bodies_carry_what_a_user_checks_and_hostile_names_are_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, "hook-secret-42\n").expect("secret");
    let yaml = sqlite_yaml(
        dir.path(),
        &format!(
            "  webhooks:\n{}{}{}",
            hook(
                "generic",
                &receiver.url("json"),
                &format!("    secret_file: {}\n", secret.display())
            ),
            hook("chat", &receiver.url("slack"), "    format: slack\n"),
            hook(
                "balloon-only",
                &receiver.url("balloon"),
                "    verdicts: [balloon, balloon_contributed]\n    kinds: [guest]\n"
            ),
        ),
    );
    let collector = Collector::start(&settings(&yaml)).await;
    let lab = util::lab_inflated();
    let tor = util::tor_flat();
    let mut hostile = util::tor_flat();
    hostile.vm.name = "evil *vm* @here".into();
    if let Some(killed) = hostile.report.killed.as_mut() {
        killed.comm = "<!channel> <script>".into();
    }
    let answer = collector
        .ingest(vec![
            oom("lab-1", 0, lab.clone()),
            oom("tor-1", 1_000, tor.clone()),
            oom("hostile-1", 2_000, hostile),
        ])
        .await;
    assert_eq!(answer["accepted"], 3);

    wait_until_async(
        "3 JSON and 3 Slack messages",
        Duration::from_secs(15),
        async || receiver.delivered("json").len() == 3 && receiver.delivered("slack").len() == 3,
    )
    .await;

    // The generic JSON body: one per OOM, with what a receiver's user checks.
    let json = receiver.delivered("json");
    let lab_body = &json
        .iter()
        .find(|r| r.body["vm"]["uuid"] == util::LAB_UUID)
        .expect("the lab OOM was notified")
        .body;
    let lab_id = lab_body["oom_id"].as_i64().expect("oom_id");
    assert_eq!(lab_body["type"], "oom");
    assert_eq!(lab_body["host"], HOST);
    assert_eq!(lab_body["vm"]["name"], "lab-512");
    assert_eq!(lab_body["kind"], "guest");
    assert_eq!(lab_body["correlation"]["verdict"], "balloon");
    assert!(
        lab_body["correlation"]["balloon_held_kb"]
            .as_i64()
            .unwrap_or(0)
            > 300 * 1024,
        "the balloon held 312 MiB: {lab_body}"
    );
    let killed = lab
        .report
        .killed
        .as_ref()
        .expect("the lab report killed a process");
    assert_eq!(lab_body["killed"]["comm"], killed.comm.as_str());
    assert_eq!(lab_body["killed"]["pid"], killed.pid);
    assert_eq!(lab_body["report_verdict"], lab.analysis.verdict.as_str());
    assert_eq!(
        lab_body["links"]["api"],
        format!("https://ballast.example.org/api/v1/ooms/{lab_id}")
    );
    assert_eq!(
        lab_body["links"]["dashboard"],
        format!("https://ballast.example.org/ooms/{lab_id}")
    );
    // The link names the stored OOM: the query API answers it.
    let stored: Value = reqwest::get(format!("{}/api/v1/ooms/{lab_id}", collector.base))
        .await
        .expect("get oom")
        .json()
        .await
        .expect("json");
    assert_eq!(stored["id"], lab_id);
    assert_eq!(stored["vm"]["uuid"], util::LAB_UUID);
    for request in &json {
        assert_eq!(
            request.headers["authorization"], "Bearer hook-secret-42",
            "the secret header"
        );
        assert_eq!(request.headers["content-type"], "application/json");
        assert!(request.headers.contains_key("idempotency-key"));
    }
    let hostile_json = &json
        .iter()
        .find(|r| r.body["killed"]["comm"] == "<!channel> <script>")
        .expect("the hostile OOM, its comm as data in JSON")
        .body;
    assert_eq!(hostile_json["vm"]["name"], "evil *vm* @here");

    // Slack: one text per OOM, the facts in it, guest text neutralised.
    let slack = receiver.delivered("slack");
    for request in &slack {
        let keys: Vec<&String> = request.body.as_object().expect("object").keys().collect();
        assert_eq!(keys, vec!["text"], "a Slack body is just text");
        assert!(
            request.headers.get("authorization").is_none(),
            "no secret configured"
        );
    }
    let texts: Vec<&str> = slack
        .iter()
        .filter_map(|r| r.body["text"].as_str())
        .collect();
    let lab_text = texts
        .iter()
        .find(|t| t.contains("`lab-512`"))
        .expect("the lab OOM in Slack");
    assert!(lab_text.contains("caused by the balloon"), "{lab_text}");
    assert!(lab_text.contains(&format!("`{HOST}`")), "{lab_text}");
    assert!(
        lab_text.contains(&format!("`{}`", killed.comm)),
        "{lab_text}"
    );
    assert!(lab_text.contains("balloon held 3"), "{lab_text}");
    assert!(
        lab_text.contains(&format!(
            "<https://ballast.example.org/ooms/{lab_id}|dashboard>"
        )),
        "{lab_text}"
    );
    let hostile_text = texts
        .iter()
        .find(|t| t.contains("channel"))
        .expect("the hostile OOM in Slack");
    assert!(!hostile_text.contains("<!channel>"), "{hostile_text}");
    assert!(!hostile_text.contains("<script>"), "{hostile_text}");
    assert!(!hostile_text.contains("@here"), "{hostile_text}");
    assert!(
        hostile_text.contains("`&lt;!channel&gt; &lt;script&gt;`"),
        "{hostile_text}"
    );

    // The filter: only the balloon-caused guest OOM.
    collector.wait_drained("balloon-only").await;
    let balloon = receiver.delivered("balloon");
    assert_eq!(
        ids(&balloon),
        vec![lab_id],
        "only the balloon OOM passes the filter"
    );
    assert_eq!(collector.outbox("balloon-only", "sent").await, 1);
    assert_eq!(collector.outbox("balloon-only", "pending").await, 0);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_ingest_notifies_once() {
    let (_dir, receiver, collector) = with_one_hook().await;
    let first = collector
        .ingest(vec![oom("dup-1", 0, util::lab_inflated())])
        .await;
    assert_eq!(first["accepted"], 1);
    wait_until_async(
        "the first notification",
        Duration::from_secs(10),
        async || receiver.delivered("hook").len() == 1,
    )
    .await;
    // The agent re-sends (its ack was lost): same key, in a batch with a new OOM.
    let again = collector
        .ingest(vec![
            oom("dup-1", 0, util::lab_inflated()),
            oom("dup-2", 5_000, util::tor_flat()),
        ])
        .await;
    assert_eq!(again["duplicates"], 1);
    wait_until_async(
        "the new OOM's notification",
        Duration::from_secs(10),
        async || receiver.delivered("hook").len() >= 2,
    )
    .await;
    collector.wait_drained("ops").await;
    let delivered = receiver.delivered("hook");
    let ids = ids(&delivered);
    assert_eq!(ids.len(), 2, "two OOMs, two messages: {ids:?}");
    assert_ne!(ids[0], ids[1]);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_and_a_hang_are_retried_and_the_message_arrives_once() {
    let (_dir, receiver, collector) = with_one_hook().await;
    receiver.script(&[Answer::Status(500), Answer::Hang, Answer::Status(503)]);
    collector
        .ingest(vec![oom("retry-1", 0, util::lab_inflated())])
        .await;
    wait_until_async(
        "delivery after 500, hang, 503",
        Duration::from_secs(20),
        async || !receiver.delivered("hook").is_empty(),
    )
    .await;
    collector.wait_drained("ops").await;
    let requests = receiver.requests("hook");
    let statuses: Vec<Option<u16>> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(500), None, Some(503), Some(200)]);
    assert_eq!(
        receiver.delivered("hook").len(),
        1,
        "delivered exactly once"
    );
    // Every attempt names the same notification, so a receiver can dedupe.
    let keys: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.headers.get("idempotency-key")?.to_str().ok())
        .collect();
    assert_eq!(keys.len(), 4);
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(
        collector
            .notifier
            .stats
            .retries
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(collector.outbox("ops", "sent").await, 1);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_receiver_gets_it_when_back_and_a_dead_one_is_given_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = Receiver::start().await;
    receiver.stop().await;
    // A port nothing listens on: attempts are bounded, then the row is failed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}/gone", dead.local_addr().expect("addr"));
    drop(dead);
    let yaml = sqlite_yaml(
        dir.path(),
        &format!(
            "  webhooks:\n{}{}",
            hook("ops", &receiver.url("hook"), ""),
            hook("dead", &dead_url, "    max_attempts: 3\n"),
        ),
    );
    let collector = Collector::start(&settings(&yaml)).await;
    collector
        .ingest(vec![oom("down-1", 0, util::lab_inflated())])
        .await;
    wait_until_async(
        "the dead webhook to be given up",
        Duration::from_secs(15),
        async || collector.outbox("dead", "failed").await > 0,
    )
    .await;
    assert_eq!(
        collector
            .notifier
            .stats
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        collector.outbox("ops", "pending").await,
        1,
        "still waiting for the receiver"
    );
    receiver.restart().await;
    wait_until_async(
        "delivery once the receiver is back",
        Duration::from_secs(10),
        async || receiver.delivered("hook").len() == 1,
    )
    .await;
    collector.wait_drained("ops").await;
    assert_eq!(receiver.requests("hook").len(), 1);
    assert_eq!(collector.outbox("ops", "sent").await, 1);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_notifications_survive_a_collector_restart_and_arrive_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = Receiver::start().await;
    receiver.stop().await;
    let yaml = sqlite_yaml(
        dir.path(),
        &format!("  webhooks:\n{}", hook("ops", &receiver.url("hook"), "")),
    );
    let settings = settings(&yaml);
    let collector = Collector::start(&settings).await;
    collector
        .ingest(vec![
            oom("restart-1", 0, util::lab_inflated()),
            oom("restart-2", 1_000, util::tor_flat()),
        ])
        .await;
    wait_until_async("a failed attempt", Duration::from_secs(10), async || {
        collector
            .notifier
            .stats
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    })
    .await;
    let store = collector.stop().await;
    let leased = store
        .query(storage::Query::new(
            "SELECT COUNT(*) FROM notify_outbox WHERE lease_owner IS NOT NULL",
            Vec::new(),
        ))
        .await
        .expect("query");
    assert_eq!(
        leased[0].int(0),
        Some(0),
        "a stopped collector holds no lease"
    );
    drop(store);

    receiver.restart().await;
    let collector = Collector::start(&settings).await;
    wait_until_async(
        "both after the restart",
        Duration::from_secs(10),
        async || receiver.delivered("hook").len() >= 2,
    )
    .await;
    collector.wait_drained("ops").await;
    let ids = ids(&receiver.delivered("hook"));
    assert_eq!(ids.len(), 2, "each OOM once: {ids:?}");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(collector.outbox("ops", "sent").await, 2);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_50_ooms_gives_the_rate_limit_plus_one_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let yaml = sqlite_yaml(
        dir.path(),
        &format!(
            "  webhooks:\n{}",
            hook(
                "ops",
                &receiver.url("hook"),
                "    rate_limit_messages: 5\n    rate_limit_window_secs: 2\n"
            )
        ),
    );
    let collector = Collector::start(&settings(&yaml)).await;
    let mut lab = util::lab_inflated();
    lab.balloon_history.truncate(10);
    lab.raw_report.truncate(2_000);
    let burst: Vec<Envelope> = (0..50)
        .map(|i| oom(&format!("burst-{i}"), i * 100, lab.clone()))
        .collect();
    assert_eq!(collector.ingest(burst).await["accepted"], 50);
    wait_until_async("the summary", Duration::from_secs(15), async || {
        receiver
            .delivered("hook")
            .iter()
            .any(|r| r.body["type"] == "suppressed")
    })
    .await;
    // Another rate-limit window passes (this sleep is the scenario: time must pass for
    // the limit): nothing more comes.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let delivered = receiver.delivered("hook");
    let single: Vec<&Request> = delivered
        .iter()
        .filter(|r| r.body["type"] == "oom")
        .collect();
    let summaries: Vec<&Request> = delivered
        .iter()
        .filter(|r| r.body["type"] == "suppressed")
        .collect();
    assert_eq!(single.len(), 5, "the limit");
    assert_eq!(summaries.len(), 1, "one summary");
    let summary = &summaries[0].body;
    assert_eq!(summary["suppressed"], 45, "{summary}");
    assert_eq!(summary["by_verdict"]["balloon"], 45, "{summary}");
    assert_eq!(summary["rate_limit"]["messages"], 5);
    assert_eq!(
        summary["links"]["dashboard"],
        "https://ballast.example.org/ooms"
    );
    assert_eq!(collector.outbox("ops", "summarized").await, 45);
    assert_eq!(collector.outbox("ops", "pending").await, 0);
    collector.stop().await;
}

/// A rate limit no test here reaches.
const UNLIMITED: Limit = Limit {
    messages: 10_000,
    window_ms: 60_000,
};

/// Claims on a store holding 10 queued notifications: a claim takes at most its
/// limit, two claims never take the same row, and a claimed row is not claimable.
async fn claims_respect_limit_and_owner(store: &dyn Store) {
    let events: Vec<Envelope> = (0..10)
        .map(|i| oom(&format!("claim-{i}"), i * 100, util::tor_flat()))
        .collect();
    let mut prepared = util::prepared(util::batch(HOST, events));
    prepared.notify = notify::targets(
        &prepared.ooms,
        &[notify::Route {
            webhook: "ops".into(),
            filter: notify::Filter::default(),
        }],
    );
    assert_eq!(store.ingest(prepared).await.expect("ingest").accepted, 10);
    let now = ballast_collector::now_ms();
    let claim = |webhook: &'static str, owner: &'static str, at_most: usize| async move {
        outbox::claim_pending(
            store,
            webhook,
            owner,
            UNLIMITED,
            now,
            now + 60_000,
            at_most,
            500,
        )
        .await
        .expect("claim")
        .rows
    };
    let first = claim("ops", "owner-1", 3).await;
    let second = claim("ops", "owner-2", 100).await;
    let third = claim("ops", "owner-3", 100).await;
    assert_eq!((first.len(), second.len(), third.len()), (3, 7, 0));
    let mut ids: Vec<i64> = first.iter().chain(&second).map(|c| c.outbox_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10, "no row claimed twice");
    assert!(first
        .iter()
        .all(|c| c.notice.as_ref().is_some_and(|n| n.host == HOST)));
    // Another webhook's rows are not this one's.
    let other = claim("other", "owner-4", 100).await;
    assert!(other.is_empty());
    // Only the owner marks; cleanup deletes finished rows, and pending ones only once
    // they were queued before the cutoff. (The rows were queued at oom_at_ms() + 5 s.)
    let marked_at = util::oom_at_ms() - 10;
    for claimed in &first {
        outbox::mark(store, claimed.outbox_id, "owner-2", "sent", marked_at, None)
            .await
            .expect("mark");
        outbox::mark(store, claimed.outbox_id, "owner-1", "sent", marked_at, None)
            .await
            .expect("mark");
    }
    outbox::release(store, "owner-2").await.expect("release");
    let cutoff = util::oom_at_ms();
    assert_eq!(
        outbox::delete_finished(store, cutoff, 2)
            .await
            .expect("cleanup"),
        2,
        "bounded batches"
    );
    assert_eq!(
        outbox::delete_finished(store, cutoff, 100)
            .await
            .expect("cleanup"),
        1
    );
    let counts = outbox::counts(store).await.expect("counts");
    assert_eq!(counts, vec![("ops".to_string(), "pending".to_string(), 7)]);
    assert_eq!(
        outbox::delete_finished(store, now, 100)
            .await
            .expect("cleanup"),
        7
    );
}

/// Queues `n` new OOMs (keys `<prefix>-<i>`) for the webhook "ops" on `store`.
async fn queue(store: &dyn Store, prefix: &str, n: i64) {
    let events: Vec<Envelope> = (0..n)
        .map(|i| oom(&format!("{prefix}-{i}"), i * 100, util::tor_flat()))
        .collect();
    let mut prepared = util::prepared(util::batch(HOST, events));
    prepared.notify = notify::targets(
        &prepared.ooms,
        &[notify::Route {
            webhook: "ops".into(),
            filter: notify::Filter::default(),
        }],
    );
    let accepted = store.ingest(prepared).await.expect("ingest").accepted;
    assert_eq!(i64::from(accepted), n);
}

/// The rate limit (3 per 60 s) counted from the store, at chosen times, as two
/// senders ("a", "b": two collectors) see it: claimed rows in flight count, sent ones
/// count for one window, a summary in flight counts once, a released claim gives its
/// budget back, and a failed post counts.
async fn the_budget_counts_every_senders_messages(store: &dyn Store) {
    let limit = Limit {
        messages: 3,
        window_ms: 60_000,
    };
    let t0 = util::oom_at_ms() + 10_000;
    let lease = t0 + 600_000;
    let claim = |owner: &'static str, now: i64| async move {
        outbox::claim_pending(store, "ops", owner, limit, now, lease, 20, 500)
            .await
            .expect("claim")
    };
    queue(store, "budget", 10).await;
    // a takes the whole budget; b, at the same time, gets nothing and suppresses the
    // rest (a's three are claimed and in flight).
    let a = claim("a-1", t0).await;
    assert_eq!((a.rows.len(), a.suppressed), (3, 0));
    let b = claim("b-1", t0).await;
    assert_eq!((b.rows.len(), b.suppressed), (0, 7));
    // a's first post is accepted, the second fails (the pass stops: its claimed rows
    // count an attempt and wait); the failed post still counts.
    outbox::mark_sent(store, "ops", a.rows[0].outbox_id, "a-1", t0 + 100)
        .await
        .expect("sent");
    outbox::record_failure(store, "ops", "a-1", 5, t0 + 200, t0 + 150, "HTTP 503")
        .await
        .expect("failure");
    queue(store, "more", 2).await;
    let b = claim("b-2", t0 + 1_000).await;
    assert_eq!(
        (b.rows.len(), b.suppressed),
        (1, 0),
        "3 - sent - failed = 1"
    );
    // A claim given back unsent (a pass stopped early) gives its budget back.
    outbox::release(store, "b-2").await.expect("release");
    let b = claim("b-3", t0 + 1_000).await;
    assert_eq!((b.rows.len(), b.suppressed), (1, 0));
    // No summary while the window is full ...
    assert_eq!(
        outbox::claim_suppressed(store, "ops", "a-2", limit, t0 + 2_000, lease)
            .await
            .expect("claim"),
        0
    );
    outbox::mark_sent(store, "ops", b.rows[0].outbox_id, "b-3", t0 + 1_100)
        .await
        .expect("sent");
    // ... and one when the first messages leave it (t0 + 100 and t0 + 150 slide out at
    // t0 + 60 150; b's at t0 + 1 100 still counts): it takes every suppressed row, and
    // while it is in flight it counts once, so one message is left to claim.
    let after = t0 + 60_150;
    assert_eq!(
        outbox::claim_suppressed(store, "ops", "a-3", limit, after, lease)
            .await
            .expect("claim"),
        7
    );
    let b = claim("b-4", after).await;
    assert_eq!(
        (b.rows.len(), b.suppressed),
        (1, 0),
        "3 - b's sent - the summary"
    );
    assert_eq!(
        outbox::mark_summarized(store, "ops", "a-3", after + 10)
            .await
            .expect("summarized"),
        7
    );
    outbox::release(store, "b-4").await.expect("release");
    let logged = outbox::messages_since(store, "ops", t0)
        .await
        .expect("messages");
    assert_eq!(
        logged,
        vec![
            ("failed".to_string(), 1),
            ("oom".to_string(), 2),
            ("summary".to_string(), 1)
        ]
    );
    // Another webhook's budget is its own.
    let other = outbox::claim_suppressed(store, "other", "c-1", limit, t0, lease)
        .await
        .expect("claim");
    assert_eq!(other, 0);
    assert_eq!(
        outbox::delete_messages(store, after + 11, 2)
            .await
            .expect("cleanup"),
        2,
        "bounded batches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_counts_every_senders_messages_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = storage::sqlite::SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("open");
    the_budget_counts_every_senders_messages(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_take_at_most_their_limit_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = storage::sqlite::SqliteStore::open(&dir.path().join("c.sqlite"))
        .await
        .expect("open");
    claims_respect_limit_and_owner(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_sharing_postgresql_notify_each_oom_exactly_once() {
    let Some(cluster) = util::pg_cluster() else {
        return;
    };
    let claims =
        storage::postgres::PostgresStore::open(&cluster.create_database().expect("createdb"), 2)
            .await
            .expect("open");
    claims_respect_limit_and_owner(&claims).await;

    let url = cluster.create_database().expect("createdb");
    let receiver = Receiver::start().await;
    // Every answer takes a while, so both collectors' senders are busy at once.
    receiver.recorder.lock().expect("lock").delay = Duration::from_millis(20);
    let yaml = format!(
        "storage:\n  type: postgres\n  url: '{url}'\n  pool_size: 4\nnotify:\n  poll_interval_ms: 50\n  webhooks:\n{}",
        hook(
            "ops",
            &receiver.url("hook"),
            "    rate_limit_messages: 1000\n"
        )
    );
    let settings = settings(&yaml);
    let a = Collector::start(&settings).await;
    let b = Collector::start(&settings).await;
    // 40 new OOMs at once through one collector (twice the claim batch), the same
    // batch re-sent through the other: both senders find work at the same time.
    let events: Vec<Envelope> = (0..40)
        .map(|i| oom(&format!("pg-{i}"), i * 100, util::tor_flat()))
        .collect();
    assert_eq!(a.ingest(events.clone()).await["accepted"], 40);
    assert_eq!(b.ingest(events).await["duplicates"], 40);
    wait_until_async("40 notifications", Duration::from_secs(20), async || {
        receiver.delivered("hook").len() >= 40
    })
    .await;
    a.wait_drained("ops").await;
    let ids = ids(&receiver.delivered("hook"));
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids.len(), 40, "40 messages");
    assert_eq!(unique.len(), 40, "no OOM twice: {ids:?}");
    let per_collector: HashMap<&str, u64> = [
        (
            "a",
            a.notifier
                .stats
                .sent
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "b",
            b.notifier
                .stats
                .sent
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(per_collector.values().sum::<u64>(), 40, "{per_collector:?}");
    assert!(
        per_collector.values().all(|n| *n > 0),
        "both collectors sent (the shared outbox was contended): {per_collector:?}"
    );
    eprintln!("sent per collector: {per_collector:?}");
    assert_eq!(a.outbox("ops", "sent").await, 40);
    a.stop().await;
    b.stop().await;
}

/// Budget decisions racing: `rounds` times, 8 claims at once (4 through each of two
/// stores, i.e. two collectors' connections) on 30 queued rows of a fresh webhook
/// limited to 5 per minute. Returns the rows claimed per round (the limit: 5).
async fn racing_claims(a: &Arc<dyn Store>, b: &Arc<dyn Store>, rounds: usize) -> Vec<usize> {
    let limit = Limit {
        messages: 5,
        window_ms: 60_000,
    };
    let now = ballast_collector::now_ms();
    let mut claimed = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let webhook = format!("race-{round}");
        let events: Vec<Envelope> = (0..30)
            .map(|i| oom(&format!("race-{round}-{i}"), i * 100, util::tor_flat()))
            .collect();
        let mut prepared = util::prepared(util::batch(HOST, events));
        prepared.notify = notify::targets(
            &prepared.ooms,
            &[notify::Route {
                webhook: webhook.clone(),
                filter: notify::Filter::default(),
            }],
        );
        a.ingest(prepared).await.expect("ingest");
        // Spawned at once; awaited in turn.
        let claims: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(if i % 2 == 0 { a } else { b });
                let webhook = webhook.clone();
                tokio::spawn(async move {
                    outbox::claim_pending(
                        store.as_ref(),
                        &webhook,
                        &format!("owner-{round}-{i}"),
                        limit,
                        now,
                        now + 60_000,
                        20,
                        500,
                    )
                    .await
                    .expect("claim")
                })
            })
            .collect();
        let mut total = 0;
        for claim in claims {
            total += claim.await.expect("task").rows.len();
        }
        claimed.push(total);
    }
    claimed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_sharing_postgresql_share_one_rate_limit() {
    let Some(cluster) = util::pg_cluster() else {
        return;
    };
    let budget =
        storage::postgres::PostgresStore::open(&cluster.create_database().expect("createdb"), 2)
            .await
            .expect("open");
    the_budget_counts_every_senders_messages(&budget).await;
    let race = cluster.create_database().expect("createdb");
    let (race_a, race_b): (Arc<dyn Store>, Arc<dyn Store>) = (
        Arc::new(
            storage::postgres::PostgresStore::open(&race, 4)
                .await
                .expect("open"),
        ),
        Arc::new(
            storage::postgres::PostgresStore::open(&race, 4)
                .await
                .expect("open"),
        ),
    );
    let claimed = racing_claims(&race_a, &race_b, 10).await;
    eprintln!("racing claims, rows claimed per round (limit 5): {claimed:?}");
    assert!(claimed.iter().all(|n| *n == 5), "{claimed:?}");

    const LIMIT: usize = 5;
    const WINDOW: Duration = Duration::from_secs(4);
    const BURST: i64 = 30;
    let url = cluster.create_database().expect("createdb");
    let receiver = Receiver::start().await;
    // Every answer takes a while, so both collectors' senders are busy at once.
    receiver.recorder.lock().expect("lock").delay = Duration::from_millis(20);
    let yaml = format!(
        "storage:\n  type: postgres\n  url: '{url}'\n  pool_size: 4\nnotify:\n  poll_interval_ms: 50\n  webhooks:\n{}",
        hook(
            "ops",
            &receiver.url("hook"),
            &format!(
                "    rate_limit_messages: {LIMIT}\n    rate_limit_window_secs: {}\n",
                WINDOW.as_secs()
            )
        )
    );
    let settings = settings(&yaml);
    let a = Collector::start(&settings).await;
    let b = Collector::start(&settings).await;
    let start = Instant::now();
    // A burst of 30 new OOMs, half through each collector at once.
    let events: Vec<Envelope> = (0..BURST)
        .map(|i| oom(&format!("limit-{i}"), i * 100, util::lab_inflated()))
        .collect();
    let (first, second) = events.split_at(15);
    let (ra, rb) = tokio::join!(a.ingest(first.to_vec()), b.ingest(second.to_vec()));
    assert_eq!(ra["accepted"], 15);
    assert_eq!(rb["accepted"], 15);
    let accounted = |delivered: &[Request]| -> i64 {
        delivered
            .iter()
            .map(|r| match r.body["type"].as_str() {
                Some("oom") => 1,
                Some("suppressed") => r.body["suppressed"].as_i64().unwrap_or(0),
                _ => 0,
            })
            .sum()
    };
    wait_until_async(
        "every OOM sent or summarized",
        Duration::from_secs(30),
        async || accounted(&receiver.delivered("hook")) >= BURST,
    )
    .await;
    let elapsed = start.elapsed();
    // Nothing more comes in the next second (no duplicate, no second summary); this
    // sleep is the scenario: the rate-limit window must pass.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = receiver.delivered("hook");
    let single: Vec<&Request> = delivered
        .iter()
        .filter(|r| r.body["type"] == "oom")
        .collect();
    let summaries: Vec<&Request> = delivered
        .iter()
        .filter(|r| r.body["type"] == "suppressed")
        .collect();
    let ids = ids(&delivered);
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "no OOM sent twice: {ids:?}");
    assert_eq!(
        accounted(&delivered),
        BURST,
        "each OOM sent or summarized once"
    );
    assert!(
        single.len() <= LIMIT,
        "at most {LIMIT} OOM messages, got {}",
        single.len()
    );
    assert!(!summaries.is_empty(), "the rest is summarized");
    assert_eq!(
        a.outbox("ops", "sent").await,
        i64::try_from(single.len()).expect("n")
    );
    assert_eq!(
        a.outbox("ops", "summarized").await,
        BURST - i64::try_from(single.len()).expect("n")
    );
    assert_eq!(a.outbox("ops", "pending").await, 0);
    assert_eq!(a.outbox("ops", "suppressed").await, 0);
    // The sliding window on the collectors' own record of when each message went
    // (logged after the receiver answered): no LIMIT + 1 of them within one window.
    let logged = outbox::messages_since(a.store.as_ref(), "ops", 0)
        .await
        .expect("messages");
    assert_eq!(
        logged.iter().map(|(_, n)| *n).sum::<i64>(),
        i64::try_from(delivered.len()).expect("n"),
        "every delivered message logged once: {logged:?}"
    );
    let mut sent_at: Vec<i64> = a
        .store
        .query(storage::Query::new(
            "SELECT sent_at_ms FROM notify_messages ORDER BY sent_at_ms",
            Vec::new(),
        ))
        .await
        .expect("log")
        .iter()
        .map(|row| row.int_or_zero(0))
        .collect();
    sent_at.sort_unstable();
    let window_ms = i64::try_from(WINDOW.as_millis()).expect("ms");
    for pair in sent_at.windows(LIMIT + 1) {
        assert!(
            pair[LIMIT] - pair[0] >= window_ms,
            "{} messages within {window_ms} ms: {sent_at:?}",
            LIMIT + 1
        );
    }
    let stats = |c: &Collector| {
        let s = &c.notifier.stats;
        (
            s.sent.load(std::sync::atomic::Ordering::Relaxed),
            s.summaries.load(std::sync::atomic::Ordering::Relaxed),
            s.suppressed.load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    let (sa, sb) = (stats(&a), stats(&b));
    assert_eq!(
        sa.0 + sb.0,
        u64::try_from(single.len()).expect("n"),
        "{sa:?} {sb:?}"
    );
    // The same on the receiver's clock (a message arrives before it is logged, and
    // the next one is claimed after that: 50 ms allow for the two clocks).
    let first_at = delivered.first().map_or(start, |r| r.at);
    let arrived_ms: Vec<u128> = delivered
        .iter()
        .map(|r| r.at.duration_since(first_at).as_millis())
        .collect();
    for pair in arrived_ms.windows(LIMIT + 1) {
        assert!(
            pair[LIMIT] - pair[0] + 50 >= WINDOW.as_millis(),
            "{} messages arrived within {WINDOW:?}: {arrived_ms:?}",
            LIMIT + 1
        );
    }
    eprintln!(
        "rate limit {LIMIT}/{} s, {BURST} OOMs through 2 collectors: {} OOM messages + {} \
         summaries ({:?}) in {elapsed:?}; (sent, summaries, suppressed) a={sa:?} b={sb:?}; \
         arrivals (ms from the first): {:?}",
        WINDOW.as_secs(),
        single.len(),
        summaries.len(),
        summaries
            .iter()
            .map(|r| r.body["suppressed"].clone())
            .collect::<Vec<_>>(),
        delivered
            .iter()
            .zip(&arrived_ms)
            .map(|(r, ms)| format!("{}@{ms}", r.body["type"].as_str().unwrap_or("?")))
            .collect::<Vec<_>>(),
    );
    a.stop().await;
    b.stop().await;
}
