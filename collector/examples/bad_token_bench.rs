//! Bad-token flood benchmark: the ingest latency of real agents' batches with and
//! without a client sending bad tokens as fast as it can, in one run.
//!
//! `scripts/bench-bad-tokens.sh` builds and runs it; by hand:
//! `bad_token_bench --collector target/release/ballast-collector [--secs 30]`
//!
//! It starts the real `ballast-collector` binary (SQLite in a temp dir, loopback,
//! default configuration except a per-host rate limit raised so the agents' own
//! rate never meets it), creates `--agents` host tokens with `token create`, then:
//! 1. baseline: each agent posts an agent-sized gzip batch (`--vms` rollups)
//!    every `--interval-ms` for `--secs` seconds; latency of each 200 answer;
//! 2. flood: the same, while `--flooders` connections (bound to 127.0.0.2, so they
//!    are another source address than the agents' 127.0.0.1; spread over
//!    `--flood-addresses` loopback addresses for a many-address flood) post the
//!    same batch with random bad tokens back to back.
//!
//! The agents run on a 2-thread runtime, the flood on its own 1-thread runtime
//! (so it takes at most one core and never delays the agents' tasks); the
//! collector is a separate process. On a 2-core machine all three still share
//! the cores, which a flood from another machine would not.
//!
//! The two phases alternate `--rounds` times (the noise of a shared machine then
//! falls on both); each phase's latencies are pooled.
//!
//! Prints p50/p99/max of both phases, their p99 ratio, the flood's request rate
//! and answers, and the collector's `ballast_collector_token_table_loads_total`
//! and `ballast_collector_auth_failures_total` (scraped from `/metrics`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use ballast_model::{BalloonRollup, Batch, Envelope, Event, MinMaxLast, VmRef, SCHEMA_VERSION};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Parser, Debug, Clone)]
#[command(about = "Ingest p99 with and without a bad-token flood")]
struct Args {
    /// The ballast-collector binary.
    #[arg(long)]
    collector: PathBuf,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Baseline and flood phases alternate this many times.
    #[arg(long, default_value_t = 6)]
    rounds: u64,
    /// Simulated agents (one host token each).
    #[arg(long, default_value_t = 10)]
    agents: usize,
    /// Rollups per batch.
    #[arg(long, default_value_t = 50)]
    vms: usize,
    /// Each agent posts a batch this often.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Concurrent bad-token connections.
    #[arg(long, default_value_t = 32)]
    flooders: usize,
    /// Source addresses the flood comes from (127.0.0.2, then 127.0.1.1, ...),
    /// as from a botnet: each has its own failed-auth allowance.
    #[arg(long, default_value_t = 1)]
    flood_addresses: u16,
}

struct Collector {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_collector(args: &Args) -> (Collector, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: {}\ningest:\n  rate_per_sec: 1000.0\n  burst: 1000\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut tokens = Vec::new();
    for n in 0..args.agents {
        let host = format!("bench{n}");
        let output = Command::new(&args.collector)
            .args(["token", "create", &host, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(output.status.success(), "token create: {output:?}");
        tokens.push((
            host,
            String::from_utf8(output.stdout).unwrap().trim().to_string(),
        ));
    }
    let child = Command::new(&args.collector)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the collector did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (
        Collector {
            child,
            port,
            _dir: dir,
        },
        tokens,
    )
}

fn batch_body(host: &str, vms: usize, round: u64) -> Bytes {
    let at = ballast_collector::now_ms();
    let events = (0..vms)
        .map(|vm| Envelope {
            key: format!("{host}/r/{round}/{vm}"),
            captured_at_ms: at,
            event: Event::Rollup(Box::new(BalloonRollup {
                vm: VmRef {
                    uuid: format!("00000000-0000-4000-8000-{vm:012}"),
                    name: format!("vm{vm}"),
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
                ..BalloonRollup::default()
            })),
        })
        .collect();
    let batch = Batch {
        schema_version: SCHEMA_VERSION,
        host_id: host.into(),
        agent_version: "bench".into(),
        events,
    };
    let json = serde_json::to_vec(&batch).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&json).unwrap();
    Bytes::from(encoder.finish().unwrap())
}

async fn post(client: &HttpClient, url: &str, token: &str, body: Bytes) -> u16 {
    let request = hyper::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
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

/// The agents for `secs`: latencies of their 200 answers, and the count of others.
async fn agents(
    args: &Args,
    url: &str,
    tokens: &[(String, String)],
    phase: u64,
) -> (Vec<Duration>, usize) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let until = Instant::now() + Duration::from_secs(args.secs);
    let mut tasks = Vec::new();
    for (n, (host, token)) in tokens.iter().enumerate() {
        let (client, url, host, token) =
            (client.clone(), url.to_string(), host.clone(), token.clone());
        let interval = Duration::from_millis(args.interval_ms);
        let vms = args.vms;
        let phase_offset = interval.mul_f64(n as f64 / tokens.len() as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(phase_offset).await;
            let mut ticker = tokio::time::interval(interval);
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            let mut round = phase * 1_000_000;
            while Instant::now() < until {
                ticker.tick().await;
                round += 1;
                let body = batch_body(&host, vms, round);
                let sent = Instant::now();
                if post(&client, &url, &token, body).await == 200 {
                    latencies.push(sent.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, e) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    all.sort();
    (all, errors)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn line(name: &str, latencies: &[Duration], errors: usize) {
    println!(
        "{name:<28} requests {:>6}  p50 {:>8.1?}  p99 {:>8.1?}  max {:>8.1?}  non-200 {errors}",
        latencies.len(),
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
}

async fn auth_metrics(port: u16) -> String {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let request = hyper::Request::get(format!("http://127.0.0.1:{port}/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let Ok(response) = client.request(request).await else {
        return String::from("(scrape failed)");
    };
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|line| {
            line.starts_with("ballast_collector_auth_failures_total")
                || line.starts_with("ballast_collector_token_table_loads_total")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let (collector, tokens) = start_collector(&args);
    let url = format!("http://127.0.0.1:{}/api/v1/ingest", collector.port);
    println!(
        "{} agents x one {}-rollup batch every {} ms, {} rounds of {} s per phase; {} flooding connections from {} address(es)",
        args.agents, args.vms, args.interval_ms, args.rounds, args.secs, args.flooders, args.flood_addresses
    );
    // Warm-up: every agent once (loads the token table, creates the VMs).
    let _ = agents(
        &Args {
            secs: 2,
            ..args.clone()
        },
        &url,
        &tokens,
        9,
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let active = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::default();
    let flood_clients: Vec<HttpClient> = (0..args.flood_addresses.max(1))
        .map(|n| {
            let address = if n == 0 {
                IpAddr::from([127, 0, 0, 2])
            } else {
                let [high, low] = n.to_be_bytes();
                IpAddr::from([127, 1, high, low])
            };
            let mut connector = HttpConnector::new();
            connector.set_local_address(Some(address));
            Client::builder(TokioExecutor::new()).build(connector)
        })
        .collect();
    let flood_body = batch_body("bench0", args.vms, 0);
    // The flood runs on its own one-thread runtime: it never delays the agents'
    // tasks in this process, and uses at most one core.
    let flood_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut flooders = Vec::new();
    for n in 0..args.flooders {
        let client = flood_clients[n % flood_clients.len()].clone();
        let (url, body) = (url.clone(), flood_body.clone());
        let (stop, active, answers) =
            (Arc::clone(&stop), Arc::clone(&active), Arc::clone(&answers));
        flooders.push(flood_runtime.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if !active.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                i += 1;
                let token = format!("blt_{n:08x}{i:056x}");
                let status = post(&client, &url, &token, body.clone()).await;
                *answers.lock().unwrap().entry(status).or_insert(0) += 1;
            }
        }));
    }
    // Alternating phases, so that the shared machine's noise falls on both.
    let (mut baseline, mut baseline_errors) = (Vec::new(), 0);
    let (mut flooded, mut flooded_errors) = (Vec::new(), 0);
    let mut flood_secs = 0.0;
    for round in 0..args.rounds.max(1) {
        let (latencies, errors) = agents(&args, &url, &tokens, 10 + round * 2).await;
        baseline.extend(latencies);
        baseline_errors += errors;
        active.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let (latencies, errors) = agents(&args, &url, &tokens, 11 + round * 2).await;
        active.store(false, Ordering::Relaxed);
        flood_secs += started.elapsed().as_secs_f64();
        flooded.extend(latencies);
        flooded_errors += errors;
        // Refusals held back by the collector finish before the next baseline.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        let _ = flooder.await;
    }
    flood_runtime.shutdown_background();
    baseline.sort();
    flooded.sort();
    line("baseline (no flood)", &baseline, baseline_errors);
    line("with bad-token flood", &flooded, flooded_errors);
    let answers = answers.lock().unwrap().clone();
    let total: u64 = answers.values().sum();
    println!(
        "flood: {total} requests in {flood_secs:.1} s = {:.0}/s, answers {answers:?}",
        total as f64 / flood_secs
    );
    let ratio = percentile(&flooded, 0.99).as_secs_f64()
        / percentile(&baseline, 0.99).as_secs_f64().max(1e-9);
    println!("p99 ratio (flood / baseline): {ratio:.2}");
    println!("{}", auth_metrics(collector.port).await);
}
