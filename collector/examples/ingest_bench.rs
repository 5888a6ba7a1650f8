//! Ingest benchmark: rollups and OOM events into SQLite over loopback HTTP from
//! many concurrent simulated agents, beside the raw batched insert rate of the same
//! rows (no HTTP, no JSON).
//!
//! `cargo run --release -p ballast-collector --example ingest_bench [-- --quick]`
//!
//! Phases (each on a fresh SQLite file in a temp dir, server in-process on
//! 127.0.0.1:0, clients on the same 2 cores):
//! 1. raw: `Store::ingest` of prepared 500-rollup batches, 8 at a time.
//! 2. rollups over HTTP: 64 agents (one host each) send gzip batches of 500
//!    rollups back to back.
//! 3. OOM events over HTTP: 64 agents send batches of 20 OOM events (the lab
//!    report with a 60-point balloon history), back to back.
//! 4. fleet: 1000 agents, each sending one batch (6 VMs x 1 rollup) every 10 s
//!    with random phase, for 30 s: request latency percentiles.
#![allow(clippy::unwrap_used)]

#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use ballast_collector::auth::token_sha256;
use ballast_collector::correlation::CorrelationSettings;
use ballast_collector::ingest::prepare_batch;
use ballast_collector::server::serve_listener;
use ballast_collector::state::{ApiConfig, AppState};
use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::{queries, Store};
use ballast_model::{
    BalloonRollup, Batch, Envelope, Event, MinMaxLast, OomEvent, VmRef, SCHEMA_VERSION,
};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn rollup(key: String, uuid: &str, at: i64) -> Envelope {
    Envelope {
        key,
        captured_at_ms: at,
        event: Event::Rollup(Box::new(BalloonRollup {
            vm: VmRef {
                uuid: uuid.into(),
                name: "bench-vm".into(),
            },
            period_start_ms: at - 60_000,
            period_secs: 60,
            samples: 6,
            maximum_kib: Some(4 << 20),
            actual_kib: MinMaxLast {
                min: Some(3 << 20),
                max: Some(4 << 20),
                last: Some(3 << 20),
            },
            usable_kib: MinMaxLast {
                min: Some(1 << 20),
                max: Some(2 << 20),
                last: Some(1 << 20),
            },
            rss_kib: MinMaxLast {
                min: Some(3 << 20),
                max: Some(3 << 20),
                last: Some(3 << 20),
            },
            alloc_stalls: Some(3),
            ..BalloonRollup::default()
        })),
    }
}

fn rollup_batch(host: &str, tag: &str, n: usize) -> Batch {
    let at = fixtures::oom_at_ms();
    Batch {
        schema_version: SCHEMA_VERSION,
        host_id: host.into(),
        agent_version: "bench".into(),
        events: (0..n)
            .map(|i| {
                let uuid = format!("00000000-0000-4000-8000-{:012}", i % 64);
                rollup(format!("{host}/{tag}/{i}"), &uuid, at + i as i64)
            })
            .collect(),
    }
}

fn oom_batch(host: &str, tag: &str, template: &OomEvent, n: usize) -> Batch {
    Batch {
        schema_version: SCHEMA_VERSION,
        host_id: host.into(),
        agent_version: "bench".into(),
        events: (0..n)
            .map(|i| Envelope {
                key: format!("{host}/{tag}/oom/{i}"),
                captured_at_ms: fixtures::oom_at_ms() + i as i64,
                event: Event::Oom(Box::new(template.clone())),
            })
            .collect(),
    }
}

fn gzip(batch: &Batch) -> Bytes {
    let json = serde_json::to_vec(batch).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&json).unwrap();
    Bytes::from(encoder.finish().unwrap())
}

async fn post(client: &HttpClient, url: &str, token: &str, body: Bytes) -> u16 {
    let request = hyper::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-encoding", "gzip")
        .body(Full::new(body))
        .unwrap();
    match client.request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            status
        }
        Err(_) => 0,
    }
}

struct Server {
    url: String,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn server(n_hosts: usize) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("b.sqlite"))
            .await
            .unwrap(),
    );
    for host in 0..n_hosts {
        let name = format!("h{host}");
        queries::put_token(
            store.as_ref(),
            &name,
            &token_sha256(&format!("t{host}")),
            1,
            false,
        )
        .await
        .unwrap();
    }
    let mut config = ApiConfig::default();
    config.ingest.rate_per_sec = 1e6;
    config.ingest.burst = 1_000_000;
    config.ingest.max_in_flight_per_host = 64;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1/ingest", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(Arc::clone(&store), config);
    tokio::spawn(serve_listener(listener, state, None, async {
        let _ = stopped.await;
    }));
    Server {
        url,
        store,
        _dir: dir,
        stop,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, rows: usize, elapsed: Duration, outcomes: Outcomes) {
    let Outcomes {
        mut latencies,
        errors,
    } = outcomes;
    latencies.sort();
    println!(
        "{name:<34} {rows:>8} rows in {:>6.2} s = {:>9.0} rows/s   requests {:>5}  p50 {:>7.1?}  p99 {:>7.1?}  max {:>7.1?}  errors {errors}",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
}

/// Latencies of the requests answered 200 and the count of the others.
#[derive(Default)]
struct Outcomes {
    latencies: Vec<Duration>,
    errors: usize,
}

impl Outcomes {
    /// Posts `body`, records the outcome and returns when it was sent.
    async fn post(&mut self, client: &HttpClient, url: &str, token: &str, body: Bytes) -> Instant {
        let sent = Instant::now();
        if post(client, url, token, body).await == 200 {
            self.latencies.push(sent.elapsed());
        } else {
            self.errors += 1;
        }
        sent
    }

    /// All the agents' outcomes together.
    async fn gather(tasks: Vec<tokio::task::JoinHandle<Outcomes>>) -> Outcomes {
        let mut all = Outcomes::default();
        for task in tasks {
            let outcomes = task.await.unwrap();
            all.latencies.extend(outcomes.latencies);
            all.errors += outcomes.errors;
        }
        all
    }
}

/// Closed loop: `agents` tasks post their pre-built bodies back to back.
async fn closed_loop(
    server: &Server,
    bodies: Vec<Vec<Bytes>>,
    rows_per_body: usize,
) -> (usize, Duration, Outcomes) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (agent, bodies) in bodies.into_iter().enumerate() {
        let client = client.clone();
        let url = server.url.clone();
        tasks.push(tokio::spawn(async move {
            let token = format!("t{agent}");
            let mut outcomes = Outcomes::default();
            for body in bodies {
                outcomes.post(&client, &url, &token, body).await;
            }
            outcomes
        }));
    }
    let outcomes = Outcomes::gather(tasks).await;
    let elapsed = start.elapsed();
    (outcomes.latencies.len() * rows_per_body, elapsed, outcomes)
}

/// Phase 1: `Store::ingest` of `batches` (prepared before the clock starts), 8 at a time.
async fn raw_insert(server: &Server, name: &str, batches: Vec<Batch>) {
    let prepared: Vec<_> = batches
        .into_iter()
        .map(|batch| prepare_batch(batch, 0, &HashMap::new(), &CorrelationSettings::default()))
        .collect();
    let start = Instant::now();
    let mut rows = 0;
    for chunk in prepared.chunks(8) {
        rows += futures_join(chunk.iter().cloned().map(|b| {
            let store = Arc::clone(&server.store);
            tokio::spawn(async move { store.ingest(b).await.unwrap().accepted as usize })
        }))
        .await;
    }
    report(name, rows, start.elapsed(), Outcomes::default());
}

/// Phases 2 and 3: `agents` agents (host `h<a>`) each post `per_agent` bodies
/// (`body(agent, index)`, `rows_per_body` rows each) back to back.
async fn over_http(
    name: &str,
    agents: usize,
    per_agent: usize,
    rows_per_body: usize,
    body: impl Fn(usize, usize) -> Bytes,
) {
    let server = server(agents).await;
    let bodies: Vec<Vec<Bytes>> = (0..agents)
        .map(|a| (0..per_agent).map(|b| body(a, b)).collect())
        .collect();
    let (rows, elapsed, outcomes) = closed_loop(&server, bodies, rows_per_body).await;
    report(name, rows, elapsed, outcomes);
    let _ = server.stop.send(());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let mut template = fixtures::lab_inflated();
    template.balloon_history.drain(..300);
    println!("ingest_bench: SQLite (WAL, synchronous=FULL), HTTP/1.1 loopback, gzip bodies, 2 worker threads");

    // 1. Raw batched insert.
    {
        let server = server(1).await;
        let rollups = (0..400 / scale)
            .map(|b| rollup_batch("h0", &format!("raw{b}"), 500))
            .collect();
        raw_insert(&server, "raw insert, rollups (500/batch)", rollups).await;
        let ooms = (0..(100 / scale))
            .map(|b| oom_batch("h0", &format!("rawoom{b}"), &template, 20))
            .collect();
        raw_insert(&server, "raw insert, OOM events (20/batch)", ooms).await;
        let _ = server.stop.send(());
    }

    // 2. Rollups over HTTP.
    over_http(
        "HTTP rollups, 64 agents x 500/batch",
        64,
        20 / scale.min(10),
        500,
        |a, b| gzip(&rollup_batch(&format!("h{a}"), &format!("b{b}"), 500)),
    )
    .await;

    // 3. OOM events over HTTP.
    over_http(
        "HTTP OOM events, 64 agents x 20/batch",
        64,
        10 / scale.min(10),
        20,
        |a, b| {
            gzip(&oom_batch(
                &format!("h{a}"),
                &format!("b{b}"),
                &template,
                20,
            ))
        },
    )
    .await;

    // 4. A fleet of 1000 agents at a 10 s interval.
    {
        let agents = 1000;
        let seconds: u64 = if quick { 10 } else { 30 };
        let server = server(agents).await;
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(2000)
            .build_http();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for agent in 0..agents {
            let client = client.clone();
            let url = server.url.clone();
            tasks.push(tokio::spawn(async move {
                let token = format!("t{agent}");
                let host = format!("h{agent}");
                let phase = Duration::from_millis((agent as u64 * 7919) % 10_000);
                tokio::time::sleep(phase).await;
                let mut outcomes = Outcomes::default();
                let mut round = 0;
                while start.elapsed() < Duration::from_secs(seconds) {
                    let body = gzip(&rollup_batch(&host, &format!("f{round}"), 6));
                    let sent = outcomes.post(&client, &url, &token, body).await;
                    round += 1;
                    tokio::time::sleep(Duration::from_secs(10).saturating_sub(sent.elapsed()))
                        .await;
                }
                outcomes
            }));
        }
        let outcomes = Outcomes::gather(tasks).await;
        let rows = outcomes.latencies.len() * 6;
        report(
            "fleet: 1000 agents every 10 s",
            rows,
            start.elapsed(),
            outcomes,
        );
        let _ = server.stop.send(());
    }
}

async fn futures_join(handles: impl Iterator<Item = tokio::task::JoinHandle<usize>>) -> usize {
    let mut total = 0;
    for handle in handles.collect::<Vec<_>>() {
        total += handle.await.unwrap();
    }
    total
}
