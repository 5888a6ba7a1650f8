//! Load generator: N simulated agents against running collectors over real HTTP, each
//! sending every `--interval-secs` what a real agent on a host with `--vms` VMs sends,
//! for a bounded time; prints latency, throughput, the collector's CPU and RSS and
//! the database's growth per host per day.
//!
//! `cargo run --release -p ballast-collector --example load_gen -- --url URL --tokens FILE [...]`
//! (`scripts/bench-collector-load.sh` starts the collector and PostgreSQL around it.)
//!
//! What one agent sends (the agent's spool hands out one batch of everything due,
//! critical lane first, gzip JSON, `Authorization: Bearer`):
//! - on start: a hello and the inventory of its VMs;
//! - each tick: a balloon change for each VM whose balloon moved (probability
//!   `--balloon-move`), near misses and OOM events at `--near-misses-per-host-hour` and
//!   `--ooms-per-host-hour`; OOMs carry a real report from
//!   crates/ballast-oom/tests/fixtures/oom (parsed and analyzed like the agent does)
//!   and the hour of balloon history before it (360 points);
//! - after each minute boundary: one rollup per VM for the minute that ended;
//! - every 300 s: its health.
//!
//! Agents start with a random phase within the first interval. A batch the collector
//! did not acknowledge stays queued and goes again on the next tick (to the next
//! `--url` when several are given, as behind a load balancer); `--resend` sends every
//! batch to a second collector too: in odd rounds at the same time as to the first
//! (each event must then be accepted by exactly one), in even rounds after the first
//! acknowledged it (all of it must come back as duplicates). Meanwhile a probe GETs `/healthz` every 100 ms: the
//! baseline latency of the same server under the same load.
//!
//! Measurements: `/proc/<pid>/stat` CPU of each `--pid` (and of `--db-pid` with its
//! children, e.g. the postmaster), peak RSS, and the store's size (`--sqlite FILE`:
//! page_count x page_size; `--pg CONN`: `pg_database_size`) over a window of whole
//! minutes starting one interval after a minute boundary (so it holds exactly one
//! rollup burst per minute; see `measurement_window`). Bytes per host per day =
//! growth / agents / window seconds x 86400. `--out FILE` writes the figures and
//! every acknowledged OOM as JSON.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use axum::body::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use ballast_model::{
    AgentHealth, AgentHello, BalloonAtOom, BalloonChange, BalloonPoint, BalloonRollup, Batch,
    CaptureSource, Envelope, Event, HostMemory, IngestResponse, Inventory, MinMaxLast, NearMiss,
    OomAnalysis, OomEvent, OomKind, ParsedReport, VmConfig, VmInventory, VmRef, SCHEMA_VERSION,
};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const KIB_PER_MIB: u64 = 1024;
const HEALTH_EVERY_MS: i64 = 300_000;
const MAX_BATCH_EVENTS: usize = 500;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug, Clone)]
#[command(about = "Simulated ballast agents against running collectors")]
struct Args {
    /// Collector base URL (repeat for several collectors sharing one store).
    #[arg(long, required = true)]
    url: Vec<String>,
    /// `HOST TOKEN` per line, as `ballast-collector token create HOST` printed them.
    #[arg(long)]
    tokens: PathBuf,
    /// Agents to run (at most the number of tokens).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    #[arg(long, default_value_t = 50)]
    vms: usize,
    #[arg(long, default_value_t = 10)]
    interval_secs: u64,
    /// How long the agents run.
    #[arg(long, default_value_t = 180)]
    secs: u64,
    /// Probability that one VM's balloon moves between two ticks.
    #[arg(long, default_value_t = 0.02)]
    balloon_move: f64,
    #[arg(long, default_value_t = 1.0)]
    ooms_per_host_hour: f64,
    #[arg(long, default_value_t = 2.0)]
    near_misses_per_host_hour: f64,
    /// Rollup period (the agent's is a wall-clock minute; shorter only for tests).
    #[arg(long, default_value_t = 60)]
    rollup_secs: u32,
    /// Send every batch to the next URL too (at once, or after the first answer).
    #[arg(long)]
    resend: bool,
    /// Collector process ids to measure.
    #[arg(long)]
    pid: Vec<u32>,
    /// Database server process id to measure together with its children.
    #[arg(long)]
    db_pid: Option<u32>,
    /// The collector's SQLite file.
    #[arg(long)]
    sqlite: Option<PathBuf>,
    /// The collector's PostgreSQL connection string.
    #[arg(long)]
    pg: Option<String>,
    /// Directory of kernel OOM reports (`*.log`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/ballast-oom/tests/fixtures/oom"))]
    fixtures: PathBuf,
    /// Figures and acknowledged OOMs as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Label of the summary row.
    #[arg(long, default_value = "run")]
    label: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// xorshift64*: reproducible draws without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// One kernel OOM report, parsed and analyzed once.
struct OomTemplate {
    raw: String,
    report: ParsedReport,
    analysis: OomAnalysis,
}

fn load_templates(dir: &Path) -> anyhow::Result<Vec<OomTemplate>> {
    let max_raw = ballast_model::Limits::default().max_raw_report_bytes;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("Cannot read the fixture dir {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    names.sort();
    let mut templates = Vec::new();
    for path in names {
        let text = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
        let parsed = ballast_oom::parse(&text);
        let Some(report) = parsed.reports.first() else {
            continue;
        };
        let analysis = ballast_oom::analyze(report, None);
        let raw = text
            .get(report.span.start_byte..report.span.end_byte)
            .unwrap_or(&text);
        let raw = &raw[..raw.len().min(max_raw)];
        templates.push(OomTemplate {
            raw: String::from_utf8_lossy(raw).into_owned(),
            report: ParsedReport::from(report),
            analysis: OomAnalysis::from(&analysis),
        });
    }
    if templates.is_empty() {
        bail!("No OOM report in {}", dir.display());
    }
    Ok(templates)
}

struct Vm {
    vm: VmRef,
    maximum_kib: u64,
    actual_kib: u64,
    /// Balloon history, one point per tick, the last hour.
    history: VecDeque<BalloonPoint>,
    minute: MinuteStats,
}

#[derive(Default)]
struct MinuteStats {
    samples: u32,
    actual: MinMaxLast,
    available: MinMaxLast,
    usable: MinMaxLast,
    unused: MinMaxLast,
    rss: MinMaxLast,
}

/// One simulated agent's state: its VMs and its queue (the spool).
struct Agent {
    host: String,
    token: String,
    vms: Vec<Vm>,
    rng: Rng,
    queue: VecDeque<Envelope>,
    sequence: u64,
    minute_start_ms: i64,
    next_health_ms: i64,
    oom_serial: u64,
}

fn host_memory(rng: &mut Rng) -> HostMemory {
    HostMemory {
        total_kib: Some(256 * 1024 * KIB_PER_MIB),
        available_kib: Some((40 + rng.below(60)) * 1024 * KIB_PER_MIB),
        psi_some_avg10: Some(rng.unit() * 3.0),
        ksm_sharing_kib: Some(rng.below(8 * 1024) * KIB_PER_MIB),
    }
}

impl Agent {
    fn new(index: usize, host: String, token: String, n_vms: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x0100_0000_01B3));
        let vms = (0..n_vms)
            .map(|v| {
                let maximum_kib = (2 + rng.below(15)) * 1024 * KIB_PER_MIB;
                Vm {
                    vm: VmRef {
                        uuid: format!("{index:08x}-0000-4000-8000-{v:012x}"),
                        name: format!("{host}-vm{v}"),
                    },
                    maximum_kib,
                    actual_kib: maximum_kib,
                    history: VecDeque::new(),
                    minute: MinuteStats::default(),
                }
            })
            .collect();
        Self {
            host,
            token,
            vms,
            rng,
            queue: VecDeque::new(),
            sequence: 0,
            minute_start_ms: 0,
            next_health_ms: 0,
            oom_serial: 0,
        }
    }

    fn push(&mut self, key: String, at_ms: i64, event: Event) {
        self.queue.push_back(Envelope {
            key,
            captured_at_ms: at_ms,
            event,
        });
    }

    fn sequenced_key(&mut self, middle: &str, now_ms: i64) -> String {
        self.sequence += 1;
        format!("{}/{middle}/{now_ms}-{}", self.host, self.sequence)
    }

    fn start(&mut self, now_ms: i64, period_ms: i64) {
        self.minute_start_ms = now_ms - now_ms % period_ms;
        self.next_health_ms = now_ms + HEALTH_EVERY_MS;
        let key = self.sequenced_key("hello", now_ms);
        self.push(
            key,
            now_ms,
            Event::Hello(AgentHello {
                backend: "libvirt".into(),
                capabilities: vec!["serial_capture".into(), "guest_agent_capture".into()],
                host_memory_kib: Some(256 * 1024 * KIB_PER_MIB),
            }),
        );
        let vms = self
            .vms
            .iter()
            .map(|vm| VmInventory {
                openstack: Default::default(),
                vm: vm.vm.clone(),
                state: ballast_model::VmState::Running,
                config: VmConfig {
                    virtio_mem: Default::default(),
                    memory_kib: Some(vm.maximum_kib),
                    balloon_floor_kib: Some(vm.maximum_kib / 2),
                    balloon_present: true,
                    stats_period_secs: Some(10),
                    deflate_on_oom: Some(false),
                    free_page_reporting: Some(false),
                    guest_agent_channel: true,
                    serial_log: true,
                    shares: None,
                },
                findings: vec!["deflate_on_oom_off".into()],
            })
            .collect();
        let key = self.sequenced_key("inventory", now_ms);
        self.push(key, now_ms, Event::Inventory(Inventory { vms }));
    }

    /// One poll: samples, balloon moves, rollups when a minute ended, rare events.
    fn tick(&mut self, now_ms: i64, args: &Args, templates: &[OomTemplate]) -> Vec<OomAck> {
        let ticks_per_hour = 3600.0 / args.interval_secs.max(1) as f64;
        let history_len = usize::try_from(3600 / args.interval_secs.max(1)).unwrap_or(360);
        let mut changes = Vec::new();
        for (index, vm) in self.vms.iter_mut().enumerate() {
            if self.rng.unit() < args.balloon_move {
                let previous = vm.actual_kib;
                let floor = vm.maximum_kib / 2;
                vm.actual_kib = floor + self.rng.below(vm.maximum_kib - floor) / 1024 * 1024;
                changes.push((index, vm.actual_kib, previous));
            }
            let usable = vm.actual_kib / 4 + self.rng.below(vm.actual_kib / 4);
            let point = BalloonPoint {
                virtio_mem: Default::default(),
                at_ms: now_ms,
                actual_kib: Some(vm.actual_kib),
                maximum_kib: Some(vm.maximum_kib),
                available_kib: Some(vm.actual_kib.saturating_sub(60 * KIB_PER_MIB)),
                usable_kib: Some(usable),
                event: false,
            };
            vm.history.push_back(point);
            while vm.history.len() > history_len {
                vm.history.pop_front();
            }
            let minute = &mut vm.minute;
            minute.samples += 1;
            minute.actual.add(Some(vm.actual_kib));
            minute.available.add(point.available_kib);
            minute.usable.add(Some(usable));
            minute.unused.add(Some(usable / 3));
            minute.rss.add(Some(vm.maximum_kib - vm.maximum_kib / 8));
        }
        for (index, actual_kib, previous) in changes {
            let vm = self.vms[index].vm.clone();
            let key = self.sequenced_key(&format!("bc/{}", vm.uuid), now_ms);
            self.push(
                key,
                now_ms,
                Event::BalloonChange(BalloonChange {
                    vm,
                    actual_kib,
                    previous_kib: Some(previous),
                }),
            );
        }
        let period_ms = i64::from(args.rollup_secs.max(1)) * 1000;
        if now_ms - self.minute_start_ms >= period_ms {
            let period_start_ms = self.minute_start_ms;
            self.minute_start_ms = now_ms - now_ms % period_ms;
            let host = host_memory(&mut self.rng);
            let mut rollups = Vec::with_capacity(self.vms.len());
            for vm in &mut self.vms {
                let minute = std::mem::take(&mut vm.minute);
                rollups.push((
                    format!("{}/rollup/{}/{period_start_ms}", self.host, vm.vm.uuid),
                    BalloonRollup {
                        virtio_mem: Default::default(),
                        vm: vm.vm.clone(),
                        period_start_ms,
                        period_secs: args.rollup_secs.max(1),
                        samples: minute.samples,
                        maximum_kib: Some(vm.maximum_kib),
                        actual_kib: minute.actual,
                        available_kib: minute.available,
                        usable_kib: minute.usable,
                        unused_kib: minute.unused,
                        rss_kib: minute.rss,
                        oom_kills: Some(0),
                        alloc_stalls: Some(0),
                        stale: false,
                        host: Some(host.clone()),
                        pressure: None,
                    },
                ));
            }
            for (key, rollup) in rollups {
                self.push(key, now_ms, Event::Rollup(Box::new(rollup)));
            }
        }
        if self.rng.unit() < args.near_misses_per_host_hour / ticks_per_hour {
            let index = self.rng.below(self.vms.len() as u64) as usize;
            let vm = &self.vms[index];
            let (vm_ref, actual, usable) = (
                vm.vm.clone(),
                vm.actual_kib,
                vm.history.back().and_then(|p| p.usable_kib),
            );
            let key = self.sequenced_key(&format!("nm/{}/usable_low", vm_ref.uuid), now_ms);
            self.push(
                key,
                now_ms,
                Event::NearMiss(NearMiss {
                    vm: vm_ref,
                    kind: ballast_model::NearMissKind::UsableLow,
                    detail: "MemAvailable below 5 % of the balloon target while inflated".into(),
                    actual_kib: Some(actual),
                    usable_kib: usable,
                }),
            );
        }
        let mut acks = Vec::new();
        if !self.vms.is_empty() && self.rng.unit() < args.ooms_per_host_hour / ticks_per_hour {
            let index = self.rng.below(self.vms.len() as u64) as usize;
            let template = &templates[self.rng.below(templates.len() as u64) as usize];
            self.oom_serial += 1;
            // Distinct per host even for two OOMs in one tick.
            let at_ms = now_ms + (self.oom_serial % 1000) as i64;
            let host = host_memory(&mut self.rng);
            let vm = &self.vms[index];
            let event = OomEvent {
                vm: vm.vm.clone(),
                kind: OomKind::Guest,
                source: CaptureSource::Serial,
                raw_report: template.raw.clone(),
                raw_truncated: false,
                report: template.report.clone(),
                analysis: template.analysis.clone(),
                balloon_at_oom: BalloonAtOom {
                    maximum_kib: Some(vm.maximum_kib),
                    actual_kib: Some(vm.actual_kib),
                    deflate_on_oom: Some(false),
                    ..BalloonAtOom::default()
                },
                balloon_history: vm.history.iter().copied().collect(),
                host: Some(host),
                flood_suppressed: 0,
            };
            let key = format!(
                "{}/oom/{}:serial-{}-{}",
                self.host, vm.vm.uuid, self.oom_serial, at_ms
            );
            acks.push(OomAck {
                key: key.clone(),
                host: self.host.clone(),
                vm_uuid: vm.vm.uuid.clone(),
                time_ms: at_ms,
            });
            self.push(key, at_ms, Event::Oom(Box::new(event)));
        }
        if now_ms >= self.next_health_ms {
            self.next_health_ms = now_ms + HEALTH_EVERY_MS;
            let health = AgentHealth {
                vms: u32::try_from(self.vms.len()).unwrap_or(u32::MAX),
                poll_duration_ms: 40 + self.rng.below(40),
                ..AgentHealth::default()
            };
            let key = self.sequenced_key("health", now_ms);
            self.push(key, now_ms, Event::Health(health));
        }
        acks
    }

    /// The next batch: up to 500 events, critical ones (OOMs, near misses) first.
    fn batch(&self) -> Batch {
        let critical = |e: &&Envelope| matches!(e.event, Event::Oom(_) | Event::NearMiss(_));
        let mut events: Vec<Envelope> = self.queue.iter().filter(critical).cloned().collect();
        events.extend(self.queue.iter().filter(|e| !critical(e)).cloned());
        events.truncate(MAX_BATCH_EVENTS);
        Batch {
            schema_version: SCHEMA_VERSION,
            host_id: self.host.clone(),
            agent_version: "load-gen".into(),
            events,
        }
    }

    fn acknowledge(&mut self, batch: &Batch) {
        let sent: std::collections::HashSet<&str> =
            batch.events.iter().map(|e| e.key.as_str()).collect();
        self.queue.retain(|e| !sent.contains(e.key.as_str()));
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct OomAck {
    key: String,
    host: String,
    vm_uuid: String,
    time_ms: i64,
}

#[derive(Default)]
struct Tally {
    ingest: Vec<Duration>,
    ingest_with_rollups: Vec<Duration>,
    events: u64,
    request_bytes: u64,
    errors: BTreeMap<String, u64>,
    acked_ooms: Vec<OomAck>,
    resends: u64,
    resend_mismatches: Vec<String>,
}

fn gzip_json(batch: &Batch) -> anyhow::Result<Bytes> {
    let json = serde_json::to_vec(batch)?;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::default(),
    );
    encoder.write_all(&json)?;
    Ok(Bytes::from(encoder.finish()?))
}

/// POSTs one gzip batch; Ok(answer) on 2xx, Err(reason) otherwise.
async fn post(
    client: &HttpClient,
    base: &str,
    token: &str,
    body: Bytes,
) -> Result<IngestResponse, String> {
    let request = hyper::Request::post(format!("{base}/api/v1/ingest"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Full::new(body))
        .map_err(|error| format!("request: {error}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| format!("connect/send: {error}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("body: {error}"))?
            .to_bytes();
        if !(200..300).contains(&status) {
            return Err(format!("HTTP {status}"));
        }
        serde_json::from_slice::<IngestResponse>(&bytes)
            .map_err(|error| format!("answer not an IngestResponse: {error}"))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err("timeout".into()),
    }
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[allow(clippy::too_many_arguments)]
async fn run_agent(
    index: usize,
    mut agent: Agent,
    client: HttpClient,
    args: Arc<Args>,
    templates: Arc<Vec<OomTemplate>>,
    tally: Arc<Mutex<Tally>>,
    start: Instant,
    end: Instant,
) {
    let interval = Duration::from_secs(args.interval_secs);
    let phase = Duration::from_millis(agent.rng.below(interval.as_millis() as u64));
    tokio::time::sleep_until((start + phase).into()).await;
    agent.start(epoch_ms(), i64::from(args.rollup_secs.max(1)) * 1000);
    let mut round = index;
    let mut next = Instant::now();
    let mut pending_acks: Vec<OomAck> = Vec::new();
    while Instant::now() < end {
        pending_acks.extend(agent.tick(epoch_ms(), &args, &templates));
        if !agent.queue.is_empty() {
            let batch = agent.batch();
            let has_rollups = batch
                .events
                .iter()
                .any(|e| matches!(e.event, Event::Rollup(_)));
            let Ok(body) = gzip_json(&batch) else {
                tally
                    .lock()
                    .map(|mut t| *t.errors.entry("encode".into()).or_default() += 1)
                    .ok();
                break;
            };
            let url = &args.url[round % args.url.len()];
            let other = &args.url[(round + 1) % args.url.len()];
            let twice = args.resend && args.url.len() > 1;
            // Every other round of `--resend` sends to both at once (a retry after a
            // timeout while the first request is still being served).
            let at_once = twice && round % 2 == 1;
            round += 1;
            let sent = Instant::now();
            let (result, latency, resend) = if at_once {
                let (first, second) = tokio::join!(
                    post(&client, url, &agent.token, body.clone()),
                    post(&client, other, &agent.token, body.clone())
                );
                (first, sent.elapsed(), Some((true, second)))
            } else {
                let result = post(&client, url, &agent.token, body.clone()).await;
                let latency = sent.elapsed();
                let resend = match (&result, twice) {
                    (Ok(_), true) => Some((
                        false,
                        post(&client, other, &agent.token, body.clone()).await,
                    )),
                    _ => None,
                };
                (result, latency, resend)
            };
            if let Ok(mut tally) = tally.lock() {
                match &result {
                    Ok(_) => {
                        tally.ingest.push(latency);
                        if has_rollups {
                            tally.ingest_with_rollups.push(latency);
                        }
                        tally.events += batch.events.len() as u64;
                        tally.request_bytes += body.len() as u64;
                        let sent_keys: std::collections::HashSet<&str> =
                            batch.events.iter().map(|e| e.key.as_str()).collect();
                        let (acked, waiting): (Vec<_>, Vec<_>) = pending_acks
                            .drain(..)
                            .partition(|a| sent_keys.contains(a.key.as_str()));
                        tally.acked_ooms.extend(acked);
                        pending_acks = waiting;
                    }
                    Err(reason) => *tally.errors.entry(reason.clone()).or_default() += 1,
                }
                if let Some((at_once, resend)) = resend {
                    tally.resends += 1;
                    let n = batch.events.len();
                    // Sent after the first answer: all duplicates. Sent at the same
                    // time: each event stored by exactly one of the two.
                    let fine = match (&result, &resend) {
                        (Ok(first), Ok(second)) if at_once => {
                            (first.accepted + second.accepted) as usize == n
                                && (first.duplicates + second.duplicates) as usize == n
                        }
                        (_, Ok(second)) => second.accepted == 0 && second.duplicates as usize == n,
                        _ => false,
                    };
                    if !fine {
                        tally.resend_mismatches.push(format!(
                            "{}: {n} events sent twice{}: answers {result:?} and {resend:?}",
                            agent.host,
                            if at_once { " at once" } else { "" },
                        ));
                    }
                }
            }
            if result.is_ok() {
                agent.acknowledge(&batch);
            }
        }
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
}

/// When CPU and store size are measured: from one interval after a minute boundary
/// (every agent has sent that minute's rollups) over whole minutes, so the window
/// holds exactly one rollup burst per minute; runs shorter than that measure from the
/// end of the first interval (all hellos and inventories in) to the end.
fn measurement_window(
    start: Instant,
    end: Instant,
    interval: Duration,
) -> (Instant, Instant, bool) {
    let now = Instant::now();
    let start_ms =
        epoch_ms() + i64::try_from(start.saturating_duration_since(now).as_millis()).unwrap_or(0);
    let end_ms = start_ms + i64::try_from(end.duration_since(start).as_millis()).unwrap_or(0);
    let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(10_000);
    let first_boundary = (start_ms + interval_ms) / 60_000 * 60_000 + 60_000;
    let from_ms = first_boundary + interval_ms + 1_000;
    let minutes = (end_ms - from_ms).max(0) / 60_000;
    let at = |ms: i64| start + Duration::from_millis(u64::try_from(ms - start_ms).unwrap_or(0));
    if minutes == 0 {
        return ((start + interval).min(end), end, false);
    }
    (at(from_ms), at(from_ms + minutes * 60_000), true)
}

/// utime + stime (+ children's when `with_children`) of one process, in clock ticks.
fn cpu_ticks(pid: u32, with_children: bool) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // fields[0] is field 3 (state): utime = 14, stime = 15, cutime = 16, cstime = 17.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let own = field(14)? + field(15)?;
    Some(if with_children {
        own + field(16)? + field(17)?
    } else {
        own
    })
}

fn parent_pid(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A server process and its live children (PostgreSQL backends) plus reaped ones.
fn tree_ticks(pid: u32) -> u64 {
    let mut total = cpu_ticks(pid, true).unwrap_or(0);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if parent_pid(child) == Some(pid) {
                total += cpu_ticks(child, false).unwrap_or(0);
            }
        }
    }
    total
}

fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

async fn db_bytes(args: &Args) -> anyhow::Result<Option<u64>> {
    if let Some(path) = &args.sqlite {
        let conn =
            rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .with_context(|| format!("Cannot open {}", path.display()))?;
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
        let size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        return Ok(Some(u64::try_from(pages * size).unwrap_or(0)));
    }
    if let Some(url) = &args.pg {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .context("Cannot connect to PostgreSQL")?;
        let task = tokio::spawn(connection);
        let row = client
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await?;
        let bytes: i64 = row.get(0);
        drop(client);
        let _ = task.await;
        return Ok(Some(u64::try_from(bytes).unwrap_or(0)));
    }
    Ok(None)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn read_tokens(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("Cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(host), Some(token), None) => Ok((host.to_string(), token.to_string())),
                _ => bail!("{}:{}: expected `HOST TOKEN`", path.display(), n + 1),
            }
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if args.interval_secs == 0 || args.vms == 0 {
        bail!("--interval-secs and --vms must be at least 1");
    }
    let tokens = read_tokens(&args.tokens)?;
    if tokens.len() < args.agents {
        bail!(
            "{} names {} hosts, fewer than --agents {}",
            args.tokens.display(),
            tokens.len(),
            args.agents
        );
    }
    let templates = Arc::new(load_templates(&args.fixtures)?);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.agents * 2 + 4)
        .build_http();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let interval = Duration::from_secs(args.interval_secs);
    let run_for = Duration::from_secs(args.secs);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + run_for;
    let ticks = clock_ticks_per_sec();

    let mut tasks = Vec::new();
    for (index, (host, token)) in tokens.into_iter().take(args.agents).enumerate() {
        let agent = Agent::new(index, host, token, args.vms, args.seed);
        tasks.push(tokio::spawn(run_agent(
            index,
            agent,
            client.clone(),
            Arc::clone(&args),
            Arc::clone(&templates),
            Arc::clone(&tally),
            start,
            end,
        )));
    }
    // The baseline: /healthz of the first collector, every 100 ms, under the same load.
    let probe = {
        let client = client.clone();
        let url = format!("{}/healthz", args.url[0]);
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < end {
                let sent = Instant::now();
                let ok = match hyper::Request::get(&url).body(Full::new(Bytes::new())) {
                    Ok(request) => match client.request(request).await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            let _ = response.into_body().collect().await;
                            ok
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                if ok {
                    latencies.push(sent.elapsed());
                } else {
                    failures += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (latencies, failures)
        })
    };
    // Peak RSS of the collectors, once a second.
    let sampler = {
        let pids = args.pid.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            while Instant::now() < end {
                let rss: u64 = pids.iter().filter_map(|&pid| rss_kib(pid)).sum();
                peak = peak.max(rss);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            peak
        })
    };

    let (window_from, window_to, whole_minutes) = measurement_window(start, end, interval);
    tokio::time::sleep_until(window_from.into()).await;
    let measured_from = Instant::now();
    let collector_ticks_0: u64 = args.pid.iter().filter_map(|&p| cpu_ticks(p, false)).sum();
    let db_ticks_0 = args.db_pid.map(tree_ticks);
    let self_ticks_0 = cpu_ticks(std::process::id(), false).unwrap_or(0);
    let db_bytes_0 = db_bytes(&args).await?;
    let events_0 = tally.lock().map(|t| t.events).unwrap_or(0);

    tokio::time::sleep_until(window_to.into()).await;
    let measured_secs = measured_from.elapsed().as_secs_f64();
    let collector_ticks_1: u64 = args.pid.iter().filter_map(|&p| cpu_ticks(p, false)).sum();
    let db_ticks_1 = args.db_pid.map(tree_ticks);
    let self_ticks_1 = cpu_ticks(std::process::id(), false).unwrap_or(0);
    let db_bytes_1 = db_bytes(&args).await?;
    let events_1 = tally.lock().map(|t| t.events).unwrap_or(0);
    for task in tasks {
        task.await.context("an agent task panicked")?;
    }
    let (mut healthz, healthz_failures) = probe.await.context("the probe panicked")?;
    let peak_rss_kib = sampler.await.context("the sampler panicked")?;
    let end_rss_kib: u64 = args.pid.iter().filter_map(|&pid| rss_kib(pid)).sum();

    let mut tally = match Arc::try_unwrap(tally) {
        Ok(mutex) => mutex.into_inner().unwrap_or_default(),
        Err(_) => bail!("agent tasks still hold the tally"),
    };
    tally.ingest.sort();
    tally.ingest_with_rollups.sort();
    healthz.sort();
    let cpu_pct = |t0: u64, t1: u64| (t1.saturating_sub(t0)) as f64 / ticks / measured_secs * 100.0;
    let collector_cpu = cpu_pct(collector_ticks_0, collector_ticks_1);
    let db_cpu = match (db_ticks_0, db_ticks_1) {
        (Some(a), Some(b)) => Some(cpu_pct(a, b)),
        _ => None,
    };
    let self_cpu = cpu_pct(self_ticks_0, self_ticks_1);
    let elapsed = run_for.as_secs_f64();
    let requests = tally.ingest.len();
    let errors: u64 = tally.errors.values().sum();
    let events_measured = events_1.saturating_sub(events_0);
    // Linear extrapolation: growth over the measured window / hosts / seconds x 86400.
    let per_host_day = match (db_bytes_0, db_bytes_1) {
        (Some(a), Some(b)) if args.agents > 0 && measured_secs > 0.0 => {
            Some((b as f64 - a as f64) / args.agents as f64 / measured_secs * 86_400.0)
        }
        _ => None,
    };
    let p = |v: &[Duration], q: f64| ms(percentile(v, q));
    let figures = json!({
        "label": args.label,
        "agents": args.agents,
        "vms_per_agent": args.vms,
        "interval_secs": args.interval_secs,
        "run_secs": args.secs,
        "measured_secs": measured_secs,
        "measured_whole_minutes": whole_minutes,
        "requests": requests,
        "requests_per_sec": requests as f64 / elapsed,
        "events": tally.events,
        "events_per_sec_measured": events_measured as f64 / measured_secs,
        "request_bytes_mean": if requests > 0 { tally.request_bytes / requests as u64 } else { 0 },
        "ingest_ms": {"p50": p(&tally.ingest, 0.5), "p99": p(&tally.ingest, 0.99),
                      "max": tally.ingest.last().map_or(0.0, |d| ms(*d))},
        "rollup_batches": tally.ingest_with_rollups.len(),
        "ingest_with_rollups_ms": {"p50": p(&tally.ingest_with_rollups, 0.5),
                                   "p99": p(&tally.ingest_with_rollups, 0.99)},
        "healthz_ms": {"p50": p(&healthz, 0.5), "p99": p(&healthz, 0.99),
                       "max": healthz.last().map_or(0.0, |d| ms(*d)), "failures": healthz_failures},
        "errors": tally.errors,
        "collector_cpu_pct": collector_cpu,
        "db_server_cpu_pct": db_cpu,
        "load_gen_cpu_pct": self_cpu,
        "collector_rss_kib": {"peak": peak_rss_kib, "end": end_rss_kib},
        "db_bytes": {"window_start": db_bytes_0, "window_end": db_bytes_1},
        "db_bytes_per_host_day": per_host_day,
        "ooms_acknowledged": tally.acked_ooms.len(),
        "resends": tally.resends,
        "resend_mismatches": tally.resend_mismatches,
    });
    println!(
        "{}: {} agents x {} VMs every {} s for {} s: {} requests ({:.1}/s), {} events, {} errors",
        args.label,
        args.agents,
        args.vms,
        args.interval_secs,
        args.secs,
        requests,
        requests as f64 / elapsed,
        tally.events,
        errors
    );
    println!(
        "  ingest p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms | with rollups p50 {:.1} p99 {:.1} | /healthz p50 {:.1} ms  p99 {:.1} ms",
        p(&tally.ingest, 0.5),
        p(&tally.ingest, 0.99),
        tally.ingest.last().map_or(0.0, |d| ms(*d)),
        p(&tally.ingest_with_rollups, 0.5),
        p(&tally.ingest_with_rollups, 0.99),
        p(&healthz, 0.5),
        p(&healthz, 0.99),
    );
    println!(
        "  collector CPU {collector_cpu:.1} % of a core, RSS peak {} MiB; db server CPU {}; load_gen CPU {self_cpu:.1} %",
        peak_rss_kib / 1024,
        db_cpu.map_or("-".to_string(), |c| format!("{c:.1} %")),
    );
    println!(
        "  store {} -> {} bytes over {measured_secs:.0} s ({}) = {} per host per day (linear); {} OOMs acknowledged",
        db_bytes_0.map_or("-".into(), |b| b.to_string()),
        db_bytes_1.map_or("-".into(), |b| b.to_string()),
        if whole_minutes { "whole minutes" } else { "run too short for whole minutes" },
        per_host_day.map_or("-".into(), |b| format!("{:.1} MiB", b / 1_048_576.0)),
        tally.acked_ooms.len(),
    );
    // One table row for scripts/bench-collector-load.sh.
    println!(
        "ROW| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {errors} | {collector_cpu:.0} % | {} | {} | {} |",
        args.label,
        args.agents,
        requests as f64 / elapsed,
        p(&tally.ingest, 0.5),
        p(&tally.ingest, 0.99),
        tally.ingest.last().map_or(0.0, |d| ms(*d)),
        p(&healthz, 0.5),
        p(&healthz, 0.99),
        db_cpu.map_or("-".to_string(), |c| format!("{c:.0} %")),
        peak_rss_kib / 1024,
        per_host_day
            .filter(|_| whole_minutes)
            .map_or("-".into(), |b| format!("{:.2}", b / 1_048_576.0)),
    );
    for (reason, count) in &tally.errors {
        println!("  error x{count}: {reason}");
    }
    for mismatch in tally.resend_mismatches.iter().take(10) {
        println!("  resend mismatch: {mismatch}");
    }
    if let Some(out) = &args.out {
        let mut document = figures;
        document["acked_ooms"] = serde_json::to_value(&tally.acked_ooms)?;
        std::fs::write(out, serde_json::to_vec_pretty(&document)?)
            .with_context(|| format!("Cannot write {}", out.display()))?;
    }
    Ok(())
}
