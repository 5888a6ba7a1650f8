#![allow(clippy::tests_outside_test_module)]
//! Delivery end to end: spool + sender against an in-test stub collector that
//! behaves like the real one (bearer token, gzip JSON batch, dedupe by key), can be
//! stopped and restarted on the same port, and can answer 500, 400, 429 or hang.
//! The same scenarios are to run against the real collector later.
//!
//! Also: torn-write recovery, a full disk (a 1 MiB tmpfs), the size cap, and
//! `examples/spool_pusher` killed with SIGKILL at random points.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ballast_agent::sink::{self, CollectorClient, Reachability, SinkConfig, SinkStats};
use ballast_agent::spool::{
    key_for, BatchLimits, PushOutcome, Spool, SpoolConfig, SpoolError, SpoolHandle,
};
use ballast_model::{
    BalloonRollup, Batch, CaptureSource, Envelope, ErrorBody, Event, IngestResponse, OomAnalysis,
    OomEvent, OomKind, ParsedReport, VmRef,
};
use ballast_testenv::{wait_until_async, wait_until_showing};

const TOKEN: &str = "s3cret-token";
/// A minute boundary an hour before the test started, Unix ms: recent on any date.
fn base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(0));
        (now / 60_000) * 60_000 - 3_600_000
    })
}

// ---------------------------------------------------------------------------
// Stub collector

/// How the stub answers ingest requests.
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Normal,
    /// 500 for every request.
    ServerError,
    /// Never answers.
    Hang,
    /// 429 with `Retry-After: <secs>` once, then normal.
    RateLimitOnce(u64),
    /// 404 on the health endpoint, normal ingest.
    NoHealth,
    /// Every ingest answered with this status and an HTML page, as a reverse proxy
    /// in front of the collector would.
    ProxyPage(u16),
}

#[derive(Debug)]
struct StubState {
    /// Key -> how many times it was stored (always 1: the stub dedupes).
    stored: Mutex<HashMap<String, u32>>,
    /// Events received in accepted batches, duplicates included.
    received: AtomicU64,
    requests: AtomicU64,
    request_times: Mutex<Vec<Instant>>,
    mode: Mutex<Mode>,
    /// A batch holding this key is refused with 422 naming it, as the collector's
    /// validation does.
    poison_key: Mutex<Option<String>>,
}

impl StubState {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            stored: Mutex::new(HashMap::new()),
            received: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            request_times: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Normal),
            poison_key: Mutex::new(None),
        })
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("mode lock") = mode;
    }

    fn keys(&self) -> BTreeSet<String> {
        self.stored.lock().expect("lock").keys().cloned().collect()
    }

    fn n_stored(&self) -> usize {
        self.stored.lock().expect("lock").len()
    }
}

/// A stub collector instance on its own thread and runtime; dropping it stops it and
/// closes every connection (like a killed process).
struct StubCollector {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StubCollector {
    /// Starts on `addr` (port 0: any free port).
    fn start(state: Arc<StubState>, addr: SocketAddr) -> Self {
        let listener = bind_retrying(addr);
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("stub runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = Router::new()
                    .route("/api/v1/ingest", post(ingest))
                    .route("/api/v1/health", get(health))
                    .with_state(state);
                tokio::select! {
                    result = axum::serve(listener, app) => result.expect("stub serves"),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task.
            runtime.shutdown_background();
        });
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StubCollector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bind_retrying(addr: SocketAddr) -> std::net::TcpListener {
    let listener = wait_until_showing(
        &format!("{addr} to be free to bind again"),
        Duration::from_secs(5),
        || std::net::TcpListener::bind(addr).ok(),
        || format!("{:?}", std::net::TcpListener::bind(addr).err()),
    );
    listener.set_nonblocking(true).expect("nonblocking");
    listener
}

async fn health(State(state): State<Arc<StubState>>, headers: HeaderMap) -> Response {
    if *state.mode.lock().expect("mode lock") == Mode::NoHealth {
        return StatusCode::NOT_FOUND.into_response();
    }
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn ingest(
    State(state): State<Arc<StubState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    state
        .request_times
        .lock()
        .expect("lock")
        .push(Instant::now());
    let mode = state.mode.lock().expect("mode lock").clone();
    match mode {
        Mode::ServerError => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        Mode::Hang => {
            // The scenario: a collector that never answers.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Mode::RateLimitOnce(secs) => {
            state.set_mode(Mode::Normal);
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "slow down");
            response.headers_mut().insert(
                "retry-after",
                secs.to_string().parse().expect("header value"),
            );
            return response;
        }
        Mode::ProxyPage(status) => {
            let status = StatusCode::from_u16(status).expect("status");
            return (
                status,
                [("content-type", "text/html")],
                format!("<html><body><h1>{status}</h1><hr>nginx</body></html>\n"),
            )
                .into_response();
        }
        Mode::Normal | Mode::NoHealth => {}
    }
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "bad token");
    }
    if headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        != Some("gzip")
    {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "gzip expected");
    }
    let mut json = Vec::new();
    if flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut json)
        .is_err()
    {
        return error(StatusCode::BAD_REQUEST, "bad gzip");
    }
    let batch: Batch = match serde_json::from_slice(&json) {
        Ok(batch) => batch,
        Err(parse_error) => return error(StatusCode::BAD_REQUEST, &parse_error.to_string()),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(0));
    if let Err(field_error) =
        ballast_model::validate(&batch, &ballast_model::Limits::default(), now_ms)
    {
        // As the real collector answers (collector/src/api/ingest.rs).
        let body = ErrorBody {
            error: field_error.message,
            field: Some(field_error.path),
        };
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    let poison = state.poison_key.lock().expect("lock").clone();
    if let Some(position) = poison
        .as_ref()
        .and_then(|poison| batch.events.iter().position(|event| &event.key == poison))
    {
        let body = ErrorBody {
            error: "refused by test".into(),
            field: Some(format!("events[{position}].key")),
        };
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    let mut stored = state.stored.lock().expect("lock");
    let (mut accepted, mut duplicates) = (0, 0);
    for event in &batch.events {
        if stored.contains_key(&event.key) {
            duplicates += 1;
        } else {
            stored.insert(event.key.clone(), 1);
            accepted += 1;
        }
    }
    state
        .received
        .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
    Json(IngestResponse {
        accepted,
        duplicates,
    })
    .into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.to_string(),
            field: None,
        }),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Agent side helpers

fn vm(index: u64) -> VmRef {
    VmRef {
        uuid: vm_uuid(index),
        name: format!("guest{}", index % 10),
    }
}

/// One of ten VM UUIDs.
fn vm_uuid(index: u64) -> String {
    format!("00000000-0000-4000-8000-{:012}", index % 10)
}

fn rollup(index: u64, minute: i64) -> Envelope {
    let event = Event::Rollup(Box::new(BalloonRollup {
        vm: vm(index),
        period_start_ms: base_ms() + minute * 60_000,
        period_secs: 60,
        samples: 6,
        ..BalloonRollup::default()
    }));
    Envelope {
        key: key_for("h1", &event, &format!("{index}")),
        captured_at_ms: base_ms() + minute * 60_000 + 500,
        event,
    }
}

fn oom(index: u64) -> Envelope {
    let event = Event::Oom(Box::new(OomEvent {
        vm: vm(index),
        kind: OomKind::Guest,
        source: CaptureSource::Serial,
        raw_report: format!("Out of memory: Killed process {index} (stress)\n").repeat(8),
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
        key: key_for("h1", &event, &format!("{index}")),
        captured_at_ms: base_ms() + index as i64,
        event,
    }
}

/// Event `index`: every tenth an OOM, the rest rollups (one per minute).
fn mixed(index: u64) -> Envelope {
    if index.is_multiple_of(10) {
        oom(index)
    } else {
        rollup(index, index as i64)
    }
}

/// Logs to the test's output (`BALLAST_LOG=debug` for more).
fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("BALLAST_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

fn spool_config(dir: &Path, max_bytes: u64) -> SpoolConfig {
    let mut config = SpoolConfig::with_cap(dir.join("spool"), max_bytes);
    config.segment_max_bytes = 16 * 1024;
    config
}

fn open_spool(dir: &Path) -> SpoolHandle {
    let (spool, _) = Spool::open(spool_config(dir, 64 << 20)).expect("spool opens");
    SpoolHandle::new(spool)
}

fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("agent.token");
    std::fs::write(&path, format!("{token}\n")).expect("token file");
    path
}

fn sink_config(url: &str, token_file: PathBuf) -> SinkConfig {
    let mut config = SinkConfig::new(url, token_file, "h1");
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(300);
    config.request_timeout = Duration::from_millis(700);
    config.connect_timeout = Duration::from_millis(300);
    config.idle_poll = Duration::from_millis(50);
    config.batch = BatchLimits {
        max_events: 50,
        max_bytes: 1 << 20,
    };
    config
}

/// The sender running on the test's runtime.
struct RunningSender {
    stats: Arc<SinkStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), sink::SinkError>>,
}

impl RunningSender {
    fn start(config: SinkConfig, spool: &SpoolHandle) -> Self {
        let (updates, receiver) = tokio::sync::watch::channel(config);
        // No reload comes: the sender half may go.
        drop(updates);
        Self::start_reloadable(receiver, spool)
    }

    /// A sender that takes new settings from `updates` (a SIGHUP in the agent).
    fn start_reloadable(
        updates: tokio::sync::watch::Receiver<SinkConfig>,
        spool: &SpoolHandle,
    ) -> Self {
        init_logs();
        let stats = Arc::new(SinkStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sink::run_reloadable(
            updates,
            spool.clone(),
            Arc::clone(&stats),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            stats,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("sender task")
            .expect("sender ends cleanly");
    }
}

async fn push_all(spool: &SpoolHandle, events: Vec<Envelope>) {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || {
        for event in &events {
            spool.push_blocking(event).expect("push");
        }
    })
    .await
    .expect("push task");
}

fn expected_keys(events: &[Envelope]) -> BTreeSet<String> {
    events.iter().map(|event| event.key.clone()).collect()
}

// ---------------------------------------------------------------------------
// Tests against the stub collector

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_then_back_delivers_everything_exactly_once_against_stub_collector() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StubState::new();
    // Learn a free port, then stop: the collector is down when the agent starts.
    let stub = StubCollector::start(Arc::clone(&state), "127.0.0.1:0".parse().expect("addr"));
    let (addr, url) = (stub.addr, stub.url());
    drop(stub);

    let spool = open_spool(dir.path());
    let sender = RunningSender::start(sink_config(&url, token_file(dir.path(), TOKEN)), &spool);
    let events: Vec<Envelope> = (0..400).map(mixed).collect();
    push_all(&spool, events[..200].to_vec()).await;
    wait_until_async(
        "a failed send to the stopped collector",
        Duration::from_secs(10),
        async || sender.stats.send_errors.load(Ordering::Relaxed) > 0,
    )
    .await;
    assert_eq!(spool.stats().events, 200, "everything waits in the spool");

    // Back, but failing with 500 for a while.
    state.set_mode(Mode::ServerError);
    let stub = StubCollector::start(Arc::clone(&state), addr);
    push_all(&spool, events[200..300].to_vec()).await;
    wait_until_async(
        "a send answered with 500",
        Duration::from_secs(10),
        async || state.requests.load(Ordering::Relaxed) > 0,
    )
    .await;
    assert_eq!(state.n_stored(), 0);

    // Healthy again; more events come in meanwhile.
    state.set_mode(Mode::Normal);
    push_all(&spool, events[300..].to_vec()).await;
    wait_until_async("the spool to drain", Duration::from_secs(20), async || {
        spool.stats().events == 0
    })
    .await;
    assert_eq!(state.keys(), expected_keys(&events));
    assert!(state.stored.lock().expect("lock").values().all(|&n| n == 1));
    let stats = spool.stats();
    assert_eq!((stats.bytes, stats.segments), (0, 0), "{stats:?}");
    assert_eq!(sender.stats.events_sent.load(Ordering::Relaxed), 400);
    sender.stop().await;
    drop(stub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_events_overtake_queued_rollups_against_stub_collector() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StubState::new();
    let stub = StubCollector::start(Arc::clone(&state), "127.0.0.1:0".parse().expect("addr"));
    let spool = open_spool(dir.path());
    let rollups: Vec<Envelope> = (1..200).filter(|i| i % 10 != 0).map(mixed).collect();
    push_all(&spool, rollups).await;
    push_all(&spool, vec![oom(1000)]).await;
    let mut config = sink_config(&stub.url(), token_file(dir.path(), TOKEN));
    config.batch.max_events = 10;
    let sender = RunningSender::start(config, &spool);
    wait_until_async("the first batch", Duration::from_secs(10), async || {
        state.n_stored() > 0
    })
    .await;
    let first_batch_had_oom = state
        .stored
        .lock()
        .expect("lock")
        .contains_key(&oom(1000).key);
    assert!(first_batch_had_oom, "the OOM goes in the first batch");
    wait_until_async("the spool to drain", Duration::from_secs(20), async || {
        spool.stats().events == 0
    })
    .await;
    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangs_are_timed_out_and_retried_against_stub_collector() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StubState::new();
    state.set_mode(Mode::Hang);
    let stub = StubCollector::start(Arc::clone(&state), "127.0.0.1:0".parse().expect("addr"));
    let spool = open_spool(dir.path());
    let events: Vec<Envelope> = (0..30).map(mixed).collect();
    push_all(&spool, events.clone()).await;
    let sender = RunningSender::start(
        sink_config(&stub.url(), token_file(dir.path(), TOKEN)),
        &spool,
    );
    wait_until_async("two hung requests", Duration::from_secs(10), async || {
        state.requests.load(Ordering::Relaxed) >= 2
    })
    .await;
    assert_eq!(
        spool.stats().events,
        30,
        "nothing acknowledged while hanging"
    );
    state.set_mode(Mode::Normal);
    wait_until_async("the spool to drain", Duration::from_secs(20), async || {
        spool.stats().events == 0
    })
    .await;
    assert_eq!(state.keys(), expected_keys(&events));
    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_dead_lettered_and_the_rest_arrives_against_stub_collector() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StubState::new();
    let poison = mixed(37);
    *state.poison_key.lock().expect("lock") = Some(poison.key.clone());
    let stub = StubCollector::start(Arc::clone(&state), "127.0.0.1:0".parse().expect("addr"));
    let spool = open_spool(dir.path());
    let events: Vec<Envelope> = (0..120).map(mixed).collect();
    push_all(&spool, events.clone()).await;
    let sender = RunningSender::start(
        sink_config(&stub.url(), token_file(dir.path(), TOKEN)),
        &spool,
    );
    wait_until_async("the spool to drain", Duration::from_secs(20), async || {
        spool.stats().events == 0
    })
    .await;
    let mut expected = expected_keys(&events);
    expected.remove(&poison.key);
    assert_eq!(state.keys(), expected, "every other event arrives");
    let dead_letter =
        std::fs::read_to_string(spool.lock().dead_letter_path()).expect("dead letter");
    assert_eq!(dead_letter.lines().count(), 1, "{dead_letter}");
    assert!(dead_letter.contains(&poison.key), "{dead_letter}");
    assert!(dead_letter.contains("HTTP 422") && dead_letter.contains("refused by test"));
    assert_eq!(
        sender.stats.dead_lettered_batches.load(Ordering::Relaxed),
        1
    );
    assert_eq!(spool.stats().counters.dead_lettered, 1);
    assert_eq!(sender.stats.dead_letters.load(Ordering::Relaxed), 1);
    assert!(ballast_agent::metrics::render_sink(&sender.stats, 0)
        .contains("ballast_agent_dead_letters_total 1\n"));
    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_against_stub_collector() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StubState::new();
    state.set_mode(Mode::RateLimitOnce(1));
    let stub = StubCollector::start(Arc::clone(&state), "127.0.0.1:0".parse().expect("addr"));
    let spool = open_spool(dir.path());
    push_all(&spool, vec![oom(1)]).await;
    let sender = RunningSender::start(
        sink_config(&stub.url(), token_file(dir.path(), TOKEN)),
        &spool,
    );
    wait_until_async("delivery", Duration::from_secs(10), async || {
        state.n_stored() == 1
    })
    .await;
    let times = state.request_times.lock().expect("lock").clone();
    assert_eq!(times.len(), 2, "one 429, one success");
    let waited = times[1] - times[0];
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_retried_not_dead_lettered_against_stub_collector() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StubState::new();
    let stub = StubCollector::start(Arc::clone(&state), "127.0.0.1:0".parse().expect("addr"));
    let spool = open_spool(dir.path());
    push_all(&spool, (0..5).map(mixed).collect()).await;
    let token_path = token_file(dir.path(), "wrong");
    let sender = RunningSender::start(sink_config(&stub.url(), token_path.clone()), &spool);
    wait_until_async("refused requests", Duration::from_secs(10), async || {
        state.requests.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert_eq!(spool.stats().events, 5);
    // The operator fixes the token file: the sender re-reads it.
    token_file(dir.path(), TOKEN);
    wait_until_async("the spool to drain", Duration::from_secs(10), async || {
        spool.stats().events == 0
    })
    .await;
    assert_eq!(state.n_stored(), 5);
    assert_eq!(spool.stats().counters.dead_lettered, 0);
    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_names_the_problem_against_stub_collector() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StubState::new();
    let stub = StubCollector::start(Arc::clone(&state), "127.0.0.1:0".parse().expect("addr"));
    let good = sink_config(&stub.url(), token_file(dir.path(), TOKEN));
    let client = CollectorClient::new(&good).expect("client");
    assert_eq!(client.check_health().await, Reachability::Healthy);
    state.set_mode(Mode::NoHealth);
    assert_eq!(client.check_health().await, Reachability::WrongUrl);
    // A wrong path prefix is a 404 on the health check too: a configuration error.
    let wrong = sink_config(
        &format!("{}/wrong/", stub.url()),
        token_file(dir.path(), TOKEN),
    );
    let reachability = CollectorClient::new(&wrong)
        .expect("client")
        .check_health()
        .await;
    assert_eq!(reachability, Reachability::WrongUrl);
    let problem = reachability
        .problem(&wrong.url)
        .expect("a 404 is a problem");
    assert!(
        problem.contains("collector.url") && problem.contains("/wrong/"),
        "{problem}"
    );
    state.set_mode(Mode::Normal);
    let bad_dir = tempfile::tempdir().expect("temp dir");
    let bad = sink_config(&stub.url(), token_file(bad_dir.path(), "wrong"));
    let client = CollectorClient::new(&bad).expect("client");
    assert_eq!(
        client.check_health().await,
        Reachability::TokenRefused { status: 401 }
    );
    let addr = stub.addr;
    drop(stub);
    let down = sink_config(&format!("http://{addr}"), token_file(dir.path(), TOKEN));
    let client = CollectorClient::new(&down).expect("client");
    let reachability = client.check_health().await;
    let Reachability::Unreachable { error } = reachability else {
        panic!("expected unreachable, got {reachability:?}");
    };
    assert!(error.to_lowercase().contains("connect"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_url_prefix_holds_the_spool_until_a_reload_fixes_it_against_stub_collector() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StubState::new();
    let stub = StubCollector::start(Arc::clone(&state), "127.0.0.1:0".parse().expect("addr"));
    let spool = open_spool(dir.path());
    let events: Vec<Envelope> = (0..30).map(mixed).collect();
    push_all(&spool, events.clone()).await;
    let token = token_file(dir.path(), TOKEN);
    let mut wrong = sink_config(&format!("{}/wrong/", stub.url()), token.clone());
    wrong.state_file = Some(dir.path().join("delivery.json"));
    let (updates, receiver) = tokio::sync::watch::channel(wrong.clone());
    let sender = RunningSender::start_reloadable(receiver, &spool);
    // The stub answers 404 for the unknown path: many rounds of retries.
    wait_until_async(
        "several refused rounds",
        Duration::from_secs(10),
        async || {
            sender.stats.refusals[sink::Refusal::NotFound.index()].load(Ordering::Relaxed) >= 5
        },
    )
    .await;
    assert_eq!(spool.stats().events, 30, "nothing leaves the spool");
    assert_eq!(
        spool.stats().counters.dead_lettered,
        0,
        "nothing is dead-lettered"
    );
    let metrics = ballast_agent::metrics::render_sink(&sender.stats, i64::MAX / 2);
    assert!(
        !metrics.contains("ballast_agent_delivery_held_seconds 0.0\n"),
        "{metrics}"
    );
    let held = sink::DeliveryState::read(&dir.path().join("delivery.json")).expect("state");
    let reason = held.held.as_ref().expect("held").reason.clone();
    assert_eq!(reason, "not_found");
    assert!(held.lines(u64::MAX / 2).contains("BLOCKED"));

    // The operator fixes collector.url and reloads.
    updates
        .send(SinkConfig {
            url: stub.url(),
            ..wrong
        })
        .expect("sender listens");
    // The spool drains, then the sender records that the hold is over (delivery.json):
    // wait for both, as an operator reading the state would.
    let state_file = dir.path().join("delivery.json");
    wait_until_async(
        "the spool to drain and the hold to lift",
        Duration::from_secs(10),
        async || {
            spool.stats().events == 0
                && sink::DeliveryState::read(&state_file).is_ok_and(|now| now.held.is_none())
        },
    )
    .await;
    assert_eq!(state.keys(), expected_keys(&events), "every event, once");
    assert_eq!(state.received.load(Ordering::Relaxed), 30, "no resends");
    assert!(
        ballast_agent::metrics::render_sink(&sender.stats, i64::MAX / 2)
            .contains("ballast_agent_delivery_held_seconds 0.0\n")
    );
    let resumed = sink::DeliveryState::read(&dir.path().join("delivery.json")).expect("state");
    assert_eq!(resumed.held, None);
    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_error_pages_hold_the_spool_against_stub_collector() {
    for status in [400, 404, 405, 413, 502] {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StubState::new();
        state.set_mode(Mode::ProxyPage(status));
        let stub = StubCollector::start(Arc::clone(&state), "127.0.0.1:0".parse().expect("addr"));
        let spool = open_spool(dir.path());
        let events: Vec<Envelope> = (0..8).map(mixed).collect();
        push_all(&spool, events.clone()).await;
        let sender = RunningSender::start(
            sink_config(&stub.url(), token_file(dir.path(), TOKEN)),
            &spool,
        );
        wait_until_async("refused rounds", Duration::from_secs(10), async || {
            state.requests.load(Ordering::Relaxed) >= 8
        })
        .await;
        assert_eq!(spool.stats().events, 8, "HTTP {status}: the spool is held");
        assert_eq!(spool.stats().counters.dead_lettered, 0, "HTTP {status}");
        state.set_mode(Mode::Normal);
        wait_until_async("the spool to drain", Duration::from_secs(10), async || {
            spool.stats().events == 0
        })
        .await;
        assert_eq!(state.keys(), expected_keys(&events), "HTTP {status}");
        sender.stop().await;
    }
}

// ---------------------------------------------------------------------------
// Crash safety

/// `target/<profile>/examples/spool_pusher`, next to this test binary's `deps/`.
fn pusher_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("examples").join("spool_pusher");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "ballast-agent", "--example", "spool_pusher"])
            .status()
            .expect("cargo build --example spool_pusher");
        assert!(status.success(), "building the spool_pusher example failed");
    }
    assert!(binary.exists(), "{} missing", binary.display());
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_and_doubles_nothing_against_stub_collector() {
    const N_EVENTS: u64 = 1_500;
    let binary = pusher_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StubState::new();
    let stub = StubCollector::start(Arc::clone(&state), "127.0.0.1:0".parse().expect("addr"));
    let token = token_file(dir.path(), TOKEN);
    let run = |dir: &Path| {
        Command::new(&binary)
            .arg(dir)
            .arg(stub.url())
            .arg(&token)
            .arg(N_EVENTS.to_string())
            .arg(base_ms().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start spool_pusher")
    };
    let started = Instant::now();
    let mut kills = 0;
    for round in 0..12u64 {
        let mut child = run(dir.path());
        let delay = Duration::from_millis(30 + fastrand::u64(0..250));
        // The scenario: a kill at a random moment of the push, not a wait.
        std::thread::sleep(delay);
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        // SIGKILL.
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        kills += 1;
        eprintln!(
            "round {round}: killed after {delay:?}; collector has {} keys",
            state.n_stored()
        );
    }
    let output = run(dir.path()).wait_with_output().expect("final run");
    assert!(output.status.success(), "final run failed");
    eprintln!(
        "{kills} kills; final run: {}",
        String::from_utf8_lossy(&output.stdout).trim()
    );
    let expected: BTreeSet<String> = (0..N_EVENTS).map(mixed_pusher_key).collect();
    assert_eq!(state.keys(), expected, "every pushed event arrived");
    assert!(state.stored.lock().expect("lock").values().all(|&n| n == 1));
    let received = state.received.load(Ordering::Relaxed);
    eprintln!(
        "received {received} events for {N_EVENTS} keys ({} resent) in {:?}",
        received - N_EVENTS,
        started.elapsed()
    );
    assert!(kills >= 1, "the pusher was never killed");
    // Nothing is left in the spool.
    let (spool, report) =
        Spool::open(SpoolConfig::with_cap(dir.path().join("spool"), 64 << 20)).expect("reopen");
    assert_eq!(spool.stats().events, 0, "{report:?}");
}

/// The key `examples/spool_pusher` gives event `index`.
fn mixed_pusher_key(index: u64) -> String {
    let kind = if index.is_multiple_of(10) {
        "oom"
    } else {
        "rollup"
    };
    format!("h1/{kind}/{}/{index}", vm_uuid(index))
}

#[test]
fn torn_writes_at_random_offsets_keep_every_intact_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pristine = dir.path().join("pristine");
    let (mut spool, _) = Spool::open(spool_config(&pristine, 64 << 20)).expect("open");
    let events: Vec<Envelope> = (0..300).map(mixed).collect();
    for event in &events {
        spool.push(event).expect("push");
    }
    drop(spool);
    let segments: Vec<PathBuf> = std::fs::read_dir(pristine.join("spool"))
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    assert!(segments.len() > 3, "several segments: {segments:?}");

    for round in 0..40 {
        let copy = dir.path().join(format!("round{round}"));
        copy_dir(&pristine.join("spool"), &copy.join("spool"));
        let victim = &segments[fastrand::usize(..segments.len())];
        let victim_copy = copy.join("spool").join(victim.file_name().expect("name"));
        let mut bytes = std::fs::read(&victim_copy).expect("read");
        let flip = round % 2 == 1;
        let offset = fastrand::usize(1..bytes.len());
        if flip {
            bytes[offset] ^= 0x5a; // corruption inside the file
        } else {
            bytes.truncate(offset); // torn write
        }
        std::fs::write(&victim_copy, &bytes).expect("damage");

        let (mut spool, report) = Spool::open(spool_config(&copy, 64 << 20)).expect("opens anyway");
        let mut seen = BTreeSet::new();
        loop {
            let batch = spool.next_batch(BatchLimits::default()).expect("batch");
            if batch.is_empty() {
                break;
            }
            seen.extend(batch.events.iter().map(|event| event.key.clone()));
            spool.ack(&batch).expect("ack");
        }
        let lost = events.len() - seen.len();
        assert!(seen.is_subset(&expected_keys(&events)));
        if report.damaged_regions == 0 {
            assert_eq!(lost, 0, "round {round}: no damage reported, nothing lost");
        } else {
            assert_eq!(report.repaired_files.len(), 1, "round {round}: {report:?}");
            // Only records overlapping the damage are lost: one for a flipped byte, the
            // tail of one segment for a cut.
            let per_segment = events.len() / segments.len() + 10;
            let bound = if flip { 1 } else { per_segment };
            assert!(lost <= bound, "round {round}: lost {lost}, {report:?}");
            assert!(lost >= 1, "round {round}: damage without loss? {report:?}");
        }
        // A second open finds a clean spool.
        drop(spool);
        let (_, again) = Spool::open(spool_config(&copy, 64 << 20)).expect("reopen");
        assert_eq!(again.damaged_regions, 0, "round {round}: repaired for good");
    }
}

/// A temporary directory in /dev/shm where it exists (fsync is free there).
fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

// ---------------------------------------------------------------------------
// Full disk and the cap

/// A 1 MiB tmpfs, unmounted on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(status) if status.success() => Some(Self { dir }),
            other => {
                ballast_testenv::skip(
                    &ballast_testenv::current_test(),
                    &format!("cannot mount a tmpfs here (needs root): {other:?}"),
                );
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_delivery_resumes_against_stub_collector() {
    let Some(tmpfs) = SmallTmpfs::mount() else {
        assert!(
            !ballast_testenv::in_ci(),
            "CI runs as root: the tmpfs must mount"
        );
        return;
    };
    let state = StubState::new();
    let token_dir = tempfile::tempdir().expect("temp dir");
    let token = token_file(token_dir.path(), TOKEN);
    // Cap far above the 1 MiB disk: the disk fills first.
    let (spool, _) = Spool::open(spool_config(tmpfs.path(), 64 << 20)).expect("open");
    let spool = SpoolHandle::new(spool);
    let mut pushed = Vec::new();
    let full_error = loop {
        let event = oom(pushed.len() as u64);
        match spool.push_blocking(&event) {
            Ok(PushOutcome::Stored { .. }) => pushed.push(event),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(error) => {
                // Refused by the disk, held in memory: it arrives once there is room.
                pushed.push(event);
                break error;
            }
        }
        assert!(pushed.len() < 100_000, "the disk never filled");
    };
    assert!(full_error.is_disk_full(), "{full_error:?}");
    let message = full_error.to_string();
    assert!(message.starts_with("Disk full while writing"), "{message}");
    let behind = oom(999_999);
    assert!(spool
        .push_blocking(&behind)
        .is_err_and(|error| error.is_disk_full()));
    pushed.push(behind);
    assert_eq!(
        spool.held_count(),
        2,
        "OOM events the disk refused are held"
    );
    assert!(spool.stats().counters.disk_full_errors >= 2);
    eprintln!("disk full after {} OOM events", pushed.len());

    // The agent keeps running; once the collector is reachable the sender drains the
    // spool (acknowledging works on a full disk), which frees space for new pushes.
    let stub = StubCollector::start(Arc::clone(&state), "127.0.0.1:0".parse().expect("addr"));
    let sender = RunningSender::start(sink_config(&stub.url(), token), &spool);
    wait_until_async("the spool to drain", Duration::from_secs(20), async || {
        spool.stats().events == 0
    })
    .await;
    let late = oom(1_000_000);
    spool.push_blocking(&late).expect("space is back");
    pushed.push(late);
    wait_until_async("the late event", Duration::from_secs(10), async || {
        state.n_stored() == pushed.len()
    })
    .await;
    assert_eq!(state.keys(), expected_keys(&pushed));
    sender.stop().await;
    drop(spool);

    // Nothing torn was left behind by the failed writes.
    let (_, report) = Spool::open(spool_config(tmpfs.path(), 64 << 20)).expect("reopen");
    assert_eq!(report.damaged_regions, 0, "{report:?}");
}

#[test]
fn a_full_disk_with_a_filler_file_recovers_when_it_is_removed() {
    let Some(tmpfs) = SmallTmpfs::mount() else {
        assert!(
            !ballast_testenv::in_ci(),
            "CI runs as root: the tmpfs must mount"
        );
        return;
    };
    let (mut spool, _) = Spool::open(spool_config(tmpfs.path(), 64 << 20)).expect("open");
    spool.push(&oom(0)).expect("push");
    let filler = tmpfs.path().join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);
    // The last pages of open files may still take a record or two.
    let mut extra = 0;
    let error = loop {
        match spool.push(&oom(100 + extra)) {
            Ok(_) => extra += 1,
            Err(error) => break error,
        }
        assert!(extra < 100, "the disk never filled");
    };
    assert!(error.is_disk_full(), "{error:?}");
    std::fs::remove_file(&filler).expect("free space");
    spool.push(&oom(1)).expect("space is back");
    drop(spool);
    let (mut spool, report) = Spool::open(spool_config(tmpfs.path(), 64 << 20)).expect("reopen");
    assert_eq!(report.damaged_regions, 0);
    let batch = spool.next_batch(BatchLimits::default()).expect("batch");
    let keys: Vec<String> = batch.events.iter().map(|e| e.key.clone()).collect();
    let mut expected = vec![oom(0).key];
    expected.extend((0..extra).map(|n| oom(100 + n).key));
    expected.push(oom(1).key);
    assert_eq!(keys, expected);
}

#[test]
fn the_cap_thins_and_drops_rollups_counts_them_and_keeps_oom_events() {
    // Logic, not disk speed: on tmpfs when there is one (5 000 fsyncs take ~14 s on ext4).
    let dir = fast_tempdir();
    // 500 OOM events (~1.2 KiB each) fit; 4 500 rollups (~0.5 KiB each) on top do not.
    let cap = 1024 * 1024;
    let (mut spool, _) = Spool::open(spool_config(dir.path(), cap)).expect("open");
    let mut oom_keys = BTreeSet::new();
    for index in 0..5_000u64 {
        let event = mixed(index);
        if index % 10 == 0 {
            oom_keys.insert(event.key.clone());
        }
        match spool.push(&event) {
            Ok(_) => {}
            Err(SpoolError::Full { .. }) => panic!("room is made from rollups for OOM {index}"),
            Err(error) => panic!("{error}"),
        }
        assert!(spool.stats().bytes <= cap);
    }
    let stats = spool.stats();
    eprintln!("{stats:?}");
    assert!(stats.counters.downsampled_rollups > 0);
    assert!(stats.counters.dropped_rollups > 0);
    assert_eq!(
        stats.rollups_lost(),
        stats.counters.downsampled_rollups + stats.counters.dropped_rollups
    );
    assert_eq!(
        stats.events + stats.rollups_lost(),
        5_000,
        "every event kept or counted"
    );
    let mut seen = BTreeSet::new();
    loop {
        let batch = spool.next_batch(BatchLimits::default()).expect("batch");
        if batch.is_empty() {
            break;
        }
        seen.extend(batch.events.iter().map(|event| event.key.clone()));
        spool.ack(&batch).expect("ack");
    }
    assert!(oom_keys.is_subset(&seen), "every OOM event kept");
}
