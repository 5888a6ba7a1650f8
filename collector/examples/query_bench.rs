//! Query benchmark at fleet scale (issue 7): fills a store with what a fleet holds
//! under the default retention, then times the collector's own query functions.
//!
//! `cargo run --release -p ballast-collector --example query_bench -- [--engine sqlite|postgres|both]
//!  [--hosts 1000] [--rollup-hosts 20] [--iterations 200] [--dir DIR]`
//! (scripts/bench-collector-queries.sh runs it as recorded in BENCHMARKS.md).
//!
//! The store (per engine), "now" = the fixtures' OOM time:
//! - inventory: `hosts` x 50 VMs (a real inventory batch per host, through `Store::ingest`);
//! - OOM events: 3 per host per week over `retention.oom_days` (365), 2 % with a
//!   64 KiB raw report, the lab report with its one-hour balloon history otherwise,
//!   through `Store::ingest` (the ingest path's own inserts);
//! - rollups of `rollup-hosts` hosts x 50 VMs in the default tiers: 48 h of minute
//!   rollups and the 28 days before of hourly rollups (`INSERT ... SELECT` over a
//!   recursive CTE: the same SQL on both engines).
//!
//! `GET /api/v1/vms` pages (first page, page 25 by cursor, limit 1000) are also timed
//! against the whole list: all pages walked, and the one unpaged query the API ran
//! before it paged (their p50 ratio is printed after the table).
//!
//! Baseline in the same run: the same queries on a store of 1/100 the size
//! (hosts / 100, rollup hosts / 100, at least 1). Also printed: each query's plan
//! (EXPLAIN QUERY PLAN / EXPLAIN), the store size per tier and per host per day,
//! and the rate of the compaction the retention pass runs (one hour of minutes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../src/test_fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use ballast_collector::correlation::CorrelationSettings;
use ballast_collector::ingest::prepare_batch;
use ballast_collector::retention;
use ballast_collector::retention::RetentionSettings;
use ballast_collector::storage::postgres::PostgresStore;
use ballast_collector::storage::queries::{self, OomFilter, Resolution};
use ballast_collector::storage::sqlite::SqliteStore;
use ballast_collector::storage::{EventRow, PreparedBatch, VmUpsert};
use ballast_collector::storage::{Param, Query, Row, Store, StoreError};
use ballast_model::{
    Batch, CorrelationVerdict, Envelope, Event, IngestResponse, VmConfig, SCHEMA_VERSION,
};

const VMS_PER_HOST: u64 = 50;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
const MINUTE_HOURS: i64 = 48;
const ROLLUP_DAYS: i64 = 30;
const OOM_DAYS: i64 = 365;
const OOMS_PER_HOST_WEEK: i64 = 3;
/// The benchmark's "now": the fixtures' OOM time (three hours before the run started).
fn now() -> i64 {
    fixtures::oom_at_ms()
}

struct Args {
    engines: Vec<String>,
    hosts: u64,
    rollup_hosts: u64,
    iterations: usize,
    dir: Option<PathBuf>,
}

fn args() -> Args {
    let mut args = Args {
        engines: vec!["sqlite".into(), "postgres".into()],
        hosts: 1000,
        rollup_hosts: 20,
        iterations: 200,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--engine" if value == "both" => {}
            "--engine" => args.engines = vec![value],
            "--hosts" => args.hosts = value.parse().expect("--hosts N"),
            "--rollup-hosts" => args.rollup_hosts = value.parse().expect("--rollup-hosts N"),
            "--iterations" => args.iterations = value.parse().expect("--iterations N"),
            "--dir" => args.dir = Some(PathBuf::from(value)),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// xorshift64*: reproducible choices without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn host_name(host: u64) -> String {
    format!("pve{host:04}")
}

fn vm_uuid(host: u64, vm: u64) -> String {
    format!("{host:08x}-0000-4000-8000-{vm:012x}")
}

/// A store that remembers the last query it ran (for EXPLAIN).
#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn Store>,
    last: Mutex<Option<Query>>,
}

#[async_trait]
impl Store for Recorder {
    async fn query(&self, query: Query) -> Result<Vec<Row>, StoreError> {
        *self.last.lock().unwrap() = Some(query.clone());
        self.inner.query(query).await
    }
    async fn execute(&self, query: Query) -> Result<u64, StoreError> {
        self.inner.execute(query).await
    }
    async fn execute_all(&self, queries: Vec<Query>) -> Result<Vec<u64>, StoreError> {
        self.inner.execute_all(queries).await
    }
    async fn ingest(&self, batch: PreparedBatch) -> Result<IngestResponse, StoreError> {
        self.inner.ingest(batch).await
    }
    fn engine(&self) -> ballast_collector::storage::Engine {
        self.inner.engine()
    }
}

async fn load_inventory(store: &dyn Store, hosts: u64) {
    let config = serde_json::to_string(&VmConfig {
        memory_kib: Some(4 << 20),
        balloon_floor_kib: Some(1 << 20),
        balloon_present: true,
        stats_period_secs: Some(10),
        deflate_on_oom: Some(false),
        free_page_reporting: Some(false),
        guest_agent_channel: true,
        serial_log: true,
        shares: None,
        virtio_mem: Vec::new(),
    })
    .unwrap();
    for host in 0..hosts {
        let vms = (0..VMS_PER_HOST)
            .map(|vm| VmUpsert {
                vm_uuid: vm_uuid(host, vm),
                vm_name: format!("h{host:04}-vm{vm:02}"),
                state: ballast_model::VmState::Running,
                config_json: Some(config.clone()),
                findings_json: Some("[\"no_deflate_on_oom\"]".into()),
                updated_at_ms: now() - HOUR_MS,
            })
            .collect();
        let batch = PreparedBatch {
            host_id: host_name(host),
            received_at_ms: now() - HOUR_MS,
            events: vec![EventRow {
                key: format!("{}/inv/1", host_name(host)),
                captured_at_ms: now() - HOUR_MS,
                kind: "inventory".into(),
                vm_uuid: None,
                body_json: "{}".into(),
                vms,
                episode: None,
                guard: None,
                memory_device: None,
            }],
            ..PreparedBatch::default()
        };
        store.ingest(batch).await.unwrap();
    }
}

/// 3 OOMs per host per week over 365 days; returns how many.
async fn load_ooms(store: &dyn Store, hosts: u64, rng: &mut Rng) -> u64 {
    // One prepared OOM (the ingest path's own preparation and correlation) as a template.
    let batch = Batch {
        schema_version: SCHEMA_VERSION,
        host_id: "template".into(),
        agent_version: "bench".into(),
        events: vec![Envelope {
            key: "template".into(),
            captured_at_ms: now(),
            event: Event::Oom(Box::new(fixtures::lab_inflated())),
        }],
    };
    let template = prepare_batch(
        batch,
        now(),
        &std::collections::HashMap::new(),
        &CorrelationSettings::default(),
    )
    .ooms
    .remove(0);
    let big_raw = {
        let raw = fixtures::lab_inflated().raw_report;
        let mut big = String::new();
        while big.len() < 64 * 1024 {
            big.push_str(&raw);
        }
        big.truncate(64 * 1024);
        serde_json::to_string(&big).unwrap()
    };
    let small_raw = serde_json::to_string(&fixtures::lab_inflated().raw_report).unwrap();
    let per_host = OOMS_PER_HOST_WEEK * OOM_DAYS / 7;
    let verdicts = [
        CorrelationVerdict::Balloon,
        CorrelationVerdict::BalloonContributed,
        CorrelationVerdict::NotBalloon,
        CorrelationVerdict::NotBalloon,
        CorrelationVerdict::Unknown,
    ];
    let mut n = 0;
    for host in 0..hosts {
        let mut ooms = Vec::new();
        for i in 0..per_host {
            let vm = rng.below(VMS_PER_HOST);
            let uuid = vm_uuid(host, vm);
            let mut row = template.clone();
            row.key = format!("{}/oom/{i}", host_name(host));
            row.captured_at_ms =
                now() - i64::try_from(rng.below(OOM_DAYS as u64 * 86_400_000)).unwrap();
            row.vm_uuid = uuid.clone();
            row.vm_name = format!("h{host:04}-vm{vm:02}");
            row.corr_verdict = verdicts[usize::try_from(rng.below(5)).unwrap()];
            row.event_json = row.event_json.replace(fixtures::LAB_UUID, &uuid);
            if rng.below(50) == 0 {
                row.event_json = row.event_json.replacen(&small_raw, &big_raw, 1);
            }
            ooms.push(row);
        }
        n += ooms.len() as u64;
        store
            .ingest(PreparedBatch {
                host_id: host_name(host),
                received_at_ms: now(),
                ooms,
                ..PreparedBatch::default()
            })
            .await
            .unwrap();
    }
    n
}

/// `count` rollups per VM of `host`, `secs` apart, the first starting at `first_ms`.
fn rollup_sql(host: u64, first_ms: i64, secs: i64, count: i64, hourly: bool) -> Query {
    let step = secs * 1000;
    let key = if hourly {
        format!("'~hour/' || v.vm_uuid || '/' || CAST({first_ms} + n.i * {step} AS TEXT)")
    } else {
        "v.host_id || '/r/' || v.vm_uuid || '/' || CAST(n.i AS TEXT)".to_string()
    };
    let samples = secs / 10;
    let a = format!("(4194304 - ((n.i * 7919 + {host} * 104729) % 1048576))");
    let u = format!("(1048576 + ((n.i * 4391 + {host} * 7) % 524288))");
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT CAST(0 AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
         INSERT INTO rollups (host_id, key, captured_at_ms, vm_uuid, vm_name, \
         period_start_ms, period_secs, samples, maximum_kib, \
         actual_min, actual_max, actual_last, available_min, available_max, available_last, \
         usable_min, usable_max, usable_last, unused_min, unused_max, unused_last, \
         rss_min, rss_max, rss_last, oom_kills, alloc_stalls, stale, host_total_kib, \
         host_available_kib) \
         SELECT v.host_id, {key}, {first_ms} + n.i * {step} + {step}, v.vm_uuid, v.vm_name, \
         {first_ms} + n.i * {step}, {secs}, {samples}, 4194304, \
         {a} - 65536, {a}, {a} - 1024, 4028000, 4028000, 4028000, \
         {u} - 40000, {u} + 40000, {u}, {u} / 2, {u} / 2 + 9000, {u} / 2, \
         {a} - 300000, {a} - 200000, {a} - 250000, 0, n.i / 100, 0, 67108864, \
         33554432 - (n.i % 1000) * 1000 \
         FROM vms v CROSS JOIN n WHERE v.host_id = ?",
        last = count - 1,
    );
    Query::new(sql, vec![Param::text(host_name(host))])
}

/// Rollups of the first `rollup_hosts` hosts in the default tiers; returns (hourly, minute) rows.
async fn load_rollups(store: &dyn Store, rollup_hosts: u64, minute_tier: bool) -> u64 {
    let minute_start = now() - MINUTE_HOURS * HOUR_MS;
    let hourly_start = now() - ROLLUP_DAYS * DAY_MS;
    let mut rows = 0;
    for host in 0..rollup_hosts {
        let query = if minute_tier {
            rollup_sql(host, minute_start, 60, MINUTE_HOURS * 60, false)
        } else {
            rollup_sql(
                host,
                hourly_start,
                3600,
                (ROLLUP_DAYS * 24) - MINUTE_HOURS,
                true,
            )
        };
        rows += store.execute(query).await.unwrap();
    }
    rows
}

async fn size_bytes(store: &dyn Store, path: Option<&Path>) -> u64 {
    match path {
        Some(path) => {
            let mut total = 0;
            for suffix in ["", "-wal"] {
                let mut name = path.as_os_str().to_owned();
                name.push(suffix);
                total += std::fs::metadata(&name).map(|m| m.len()).unwrap_or(0);
            }
            total
        }
        None => {
            let rows = store
                .query(Query::new(
                    "SELECT CAST(pg_database_size(current_database()) AS BIGINT)",
                    Vec::new(),
                ))
                .await
                .unwrap();
            rows[0].kib(0).unwrap_or(0)
        }
    }
}

struct Sizes {
    base: u64,
    hourly: u64,
    minute: u64,
    hourly_rows: u64,
    minute_rows: u64,
    ooms: u64,
}

async fn fill(store: &dyn Store, path: Option<&Path>, hosts: u64, rollup_hosts: u64) -> Sizes {
    let started = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let empty = size_bytes(store, path).await;
    load_inventory(store, hosts).await;
    let ooms = load_ooms(store, hosts, &mut rng).await;
    let after_base = size_bytes(store, path).await;
    eprintln!(
        "  inventory {} VMs + {ooms} OOMs: {:.0} s",
        hosts * VMS_PER_HOST,
        started.elapsed().as_secs_f64()
    );
    let hourly_rows = load_rollups(store, rollup_hosts, false).await;
    let after_hourly = size_bytes(store, path).await;
    eprintln!(
        "  hourly tier {hourly_rows} rows: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let minute_rows = load_rollups(store, rollup_hosts, true).await;
    let after_minute = size_bytes(store, path).await;
    eprintln!(
        "  minute tier {minute_rows} rows: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if store.engine() == ballast_collector::storage::Engine::Postgres {
        store
            .execute(Query::new("ANALYZE", Vec::new()))
            .await
            .unwrap();
    }
    Sizes {
        base: after_base.saturating_sub(empty),
        hourly: after_hourly.saturating_sub(after_base),
        minute: after_minute.saturating_sub(after_hourly),
        hourly_rows,
        minute_rows,
        ooms,
    }
}

#[derive(Clone, Copy)]
struct Stats {
    p50: Duration,
    p99: Duration,
}

async fn time<F, Fut>(iterations: usize, mut run: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..3 {
        run(i).await;
    }
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let started = Instant::now();
        run(i).await;
        samples.push(started.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: at(0.5),
        p99: at(0.99),
    }
}

async fn explain(recorder: &Recorder) -> String {
    let query = recorder.last.lock().unwrap().clone().unwrap();
    let prefix = if recorder.engine() == ballast_collector::storage::Engine::Sqlite {
        "EXPLAIN QUERY PLAN "
    } else {
        "EXPLAIN "
    };
    let rows = recorder
        .inner
        .query(Query::new(format!("{prefix}{}", query.sql), query.params))
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = (0..row.0.len()).filter_map(|i| row.text(i)).collect();
            format!("      {}", cells.last().cloned().unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

type Measured = Vec<(String, Stats, String)>;

/// Times `run` (given the recorder and the iteration, answering how many rows,
/// points or VMs it got) and adds the line `<name> (<count> <unit>)` with the
/// count of its last run and the plan of its last query.
async fn case<F, Fut>(
    out: &mut Measured,
    recorder: &Arc<Recorder>,
    iterations: usize,
    name: &str,
    unit: &str,
    run: F,
) where
    F: Fn(Arc<Recorder>, usize) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let count = std::cell::Cell::new(0);
    let count_ref = &count;
    let run_ref = &run;
    let stats = time(iterations, move |i| {
        let answered = run_ref(Arc::clone(recorder), i);
        async move { count_ref.set(answered.await) }
    })
    .await;
    out.push((
        format!("{name} ({} {unit})", count.get()),
        stats,
        explain(recorder).await,
    ));
}

async fn measure(
    store: Arc<dyn Store>,
    hosts: u64,
    rollup_hosts: u64,
    iterations: usize,
) -> Measured {
    let recorder = Arc::new(Recorder {
        inner: store,
        last: Mutex::new(None),
    });
    let mut out = Vec::new();
    let seed = std::cell::Cell::new(0x1234_5678_u64);
    let pick = |n: u64| {
        let mut rng = Rng(seed.get());
        let value = rng.below(n);
        seed.set(rng.0);
        value
    };
    // A VM is (host, uuid).
    let rollup_vms: Vec<(String, String)> = (0..iterations + 3)
        .map(|_| {
            let host = pick(rollup_hosts);
            (host_name(host), vm_uuid(host, pick(VMS_PER_HOST)))
        })
        .collect();
    // Baseline in the same store: one VM by primary key.
    case(
        &mut out,
        &recorder,
        iterations,
        "baseline: one VM by primary key",
        "row",
        |r, i| {
            let (host, uuid) = rollup_vms[i].clone();
            async move {
                let rows = r
                    .query(Query::new(
                        "SELECT vm_uuid, vm_name, host_id, state, config_json, findings_json, \
                         updated_at_ms FROM vms WHERE host_id = ? AND vm_uuid = ?",
                        vec![Param::text(host), Param::text(uuid)],
                    ))
                    .await
                    .unwrap();
                rows.len()
            }
        },
    )
    .await;
    for (name, resolution) in [
        ("memory 30 d, stored tiers", Resolution::Stored),
        ("memory 30 d, ?resolution=hour", Resolution::Hour),
    ] {
        case(&mut out, &recorder, iterations, name, "points", |r, i| {
            let (host, uuid) = rollup_vms[i].clone();
            async move {
                let memory = queries::vm_memory(
                    r.as_ref(),
                    &host,
                    &uuid,
                    now() - ROLLUP_DAYS * DAY_MS,
                    now(),
                    10_000,
                    resolution,
                )
                .await
                .unwrap();
                memory.points.len()
            }
        })
        .await;
    }

    let week = OomFilter {
        since_ms: Some(now() - 7 * DAY_MS),
        until_ms: Some(now()),
        limit: 100,
        ..OomFilter::default()
    };
    // The cursor of page 20 (rows 1901..2000 of the week), for the deep page.
    let mut deep = week.clone();
    for _ in 0..19 {
        let page = queries::list_ooms(recorder.as_ref(), &deep).await.unwrap();
        match page.next_cursor.as_deref().and_then(queries::parse_cursor) {
            Some(cursor) => deep.cursor = Some(cursor),
            None => break,
        }
    }
    let hosts_picked: Vec<String> = (0..iterations + 3)
        .map(|_| host_name(pick(hosts)))
        .collect();
    type Case<'a> = (&'a str, Box<dyn Fn(usize) -> OomFilter + 'a>);
    let cases: Vec<Case<'_>> = vec![
        ("OOM list, week, first page", Box::new(|_| week.clone())),
        (
            "OOM list, week, page 20 (cursor)",
            Box::new(|_| deep.clone()),
        ),
        (
            "OOM list, week, host filter",
            Box::new(|i| OomFilter {
                host: Some(hosts_picked[i].clone()),
                ..week.clone()
            }),
        ),
        (
            "OOM list, week, verdict=balloon",
            Box::new(|_| OomFilter {
                verdict: Some(ballast_model::CorrelationVerdict::Balloon),
                ..week.clone()
            }),
        ),
        (
            "OOM list, week, verdict=balloon after the page-20 cursor",
            Box::new(|_| OomFilter {
                verdict: Some(ballast_model::CorrelationVerdict::Balloon),
                cursor: deep.cursor,
                ..week.clone()
            }),
        ),
        (
            "OOM list, week, host + verdict",
            Box::new(|i| OomFilter {
                host: Some(hosts_picked[i].clone()),
                verdict: Some(ballast_model::CorrelationVerdict::NotBalloon),
                ..week.clone()
            }),
        ),
    ];
    for (name, filter) in cases {
        case(&mut out, &recorder, iterations, name, "rows", |r, i| {
            let filter = filter(i);
            async move {
                queries::list_ooms(r.as_ref(), &filter)
                    .await
                    .unwrap()
                    .items
                    .len()
            }
        })
        .await;
    }

    // The whole fleet's inventory is slow at scale: fewer runs.
    for (name, by_host, runs) in [
        ("inventory, ?host=", true, iterations),
        (WHOLE_FLEET_PAGED, false, (iterations / 20).max(5)),
    ] {
        case(&mut out, &recorder, runs, name, "VMs", |r, i| {
            let host = by_host.then(|| hosts_picked[i].clone());
            async move {
                queries::list_vms(r.as_ref(), host.as_deref())
                    .await
                    .unwrap()
                    .items
                    .len()
            }
        })
        .await;
    }
    vm_pages(&mut out, &recorder, iterations).await;
    out
}

const WHOLE_FLEET_PAGED: &str = "inventory, whole fleet (all pages of 10000)";
const WHOLE_FLEET_UNPAGED: &str = "inventory, whole fleet, one unpaged query (before paging)";
const VM_FIRST_PAGE: &str = "GET /api/v1/vms first page (limit 1000)";

/// `GET /api/v1/vms` pages (the handler's query function) against the whole list in
/// one query as the API answered before it paged (the SQL of d380e02^, byte-order
/// sort in Rust).
async fn vm_pages(out: &mut Measured, recorder: &Arc<Recorder>, iterations: usize) {
    let first = queries::VmFilter {
        host: None,
        cursor: None,
        limit: queries::VM_PAGE_DEFAULT,
    };
    // The cursor after 24 pages (the 25th of 50 at 1000 hosts; the last one on a
    // smaller store).
    let mut deep = first.clone();
    for _ in 0..24 {
        let page = queries::list_vms_page(recorder.as_ref(), &deep)
            .await
            .unwrap();
        match page
            .next_cursor
            .as_deref()
            .and_then(queries::VmCursor::parse)
        {
            Some(cursor) => deep.cursor = Some(cursor),
            None => break,
        }
    }
    for (name, filter) in [
        (VM_FIRST_PAGE, first),
        ("GET /api/v1/vms page 25 (cursor, limit 1000)", deep),
    ] {
        case(out, recorder, iterations, name, "VMs", |r, _| {
            let filter = filter.clone();
            async move {
                queries::list_vms_page(r.as_ref(), &filter)
                    .await
                    .unwrap()
                    .items
                    .len()
            }
        })
        .await;
    }
    let runs = (iterations / 20).max(5);
    case(
        out,
        recorder,
        runs,
        WHOLE_FLEET_UNPAGED,
        "VMs",
        |r, _| async move {
            let rows = r
                .query(Query::new(
                    "SELECT v.vm_uuid, v.vm_name, v.host_id, v.state, v.config_json, \
                 v.findings_json, v.updated_at_ms, \
                 (SELECT COUNT(*) FROM ooms o WHERE o.vm_uuid = v.vm_uuid) FROM vms v",
                    Vec::new(),
                ))
                .await
                .unwrap();
            let mut keys: Vec<(String, String, String)> = rows
                .iter()
                .map(|row| {
                    (
                        row.text_or_empty(2),
                        row.text_or_empty(1),
                        row.text_or_empty(0),
                    )
                })
                .collect();
            keys.sort();
            keys.len()
        },
    )
    .await;
}

/// Time of one retention pass that compacts the oldest hour of minute rollups.
async fn compaction(store: &dyn Store) -> (u64, Duration) {
    let settings = RetentionSettings {
        rollups: Duration::from_secs(u64::try_from(ROLLUP_DAYS * 86_400).unwrap()),
        minute_rollups: Duration::from_secs(u64::try_from((MINUTE_HOURS - 1) * 3600).unwrap()),
        ooms: Duration::from_secs(u64::try_from(OOM_DAYS * 86_400).unwrap() + 86_400),
        interval: Duration::from_secs(3600),
        batch_rows: 5000,
    };
    let started = Instant::now();
    let done = retention::run_pass(store, &settings, now()).await.unwrap();
    (done.compacted, started.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

async fn open(
    engine: &str,
    dir: &Path,
    name: &str,
    pg: Option<&ballast_testpg::TestPg>,
) -> (Arc<dyn Store>, Option<PathBuf>) {
    match engine {
        "sqlite" => {
            let path = dir.join(format!("{name}.sqlite"));
            let _ = std::fs::remove_file(&path);
            (
                Arc::new(SqliteStore::open(&path).await.unwrap()),
                Some(path),
            )
        }
        _ => {
            let url = pg.expect("PostgreSQL").create_database().unwrap();
            (Arc::new(PostgresStore::open(&url, 2).await.unwrap()), None)
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let temp = tempfile::tempdir().unwrap();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let small_hosts = (args.hosts / 100).max(1);
    let small_rollup_hosts = (args.rollup_hosts / 100).max(1);
    println!(
        "# Collector store at fleet scale: {} hosts x {VMS_PER_HOST} VMs inventory + OOMs, rollup tiers for {} hosts; baseline {} hosts, {} rollup host(s); {} iterations",
        args.hosts, args.rollup_hosts, small_hosts, small_rollup_hosts, args.iterations
    );
    for engine in &args.engines {
        let pg = (engine == "postgres").then(|| ballast_testpg::TestPg::start().unwrap());
        let mut results = Vec::new();
        for (name, hosts, rollup_hosts) in [
            ("small", small_hosts, small_rollup_hosts),
            ("fleet", args.hosts, args.rollup_hosts),
        ] {
            eprintln!("{engine} {name}: filling");
            let (store, path) = open(engine, &dir, name, pg.as_ref()).await;
            let sizes = fill(store.as_ref(), path.as_deref(), hosts, rollup_hosts).await;
            let measured = measure(Arc::clone(&store), hosts, rollup_hosts, args.iterations).await;
            let compacted = if name == "fleet" {
                Some(compaction(store.as_ref()).await)
            } else {
                None
            };
            results.push((sizes, measured, compacted, rollup_hosts));
            drop(store);
            if let Some(path) = path {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.as_os_str().to_owned();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
        }
        let (small, fleet) = (&results[0], &results[1]);
        println!("\n## {engine}\n");
        println!("| query | fleet p50 ms | fleet p99 ms | 1/100 store p50 ms | fleet / 1/100 p50 | fleet / 1/100 p99 | fleet p50 / PK lookup p50 |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let pk = fleet.1[0].1.p50.as_secs_f64();
        for ((name, big, _), (_, base, _)) in fleet.1.iter().zip(small.1.iter()) {
            println!(
                "| {name} | {} | {} | {} | {:.2} | {:.2} | {:.1} |",
                ms(big.p50),
                ms(big.p99),
                ms(base.p50),
                big.p50.as_secs_f64() / base.p50.as_secs_f64(),
                big.p99.as_secs_f64() / base.p99.as_secs_f64(),
                big.p50.as_secs_f64() / pk,
            );
        }
        let p50 = |name: &str| {
            fleet
                .1
                .iter()
                .find(|(case, _, _)| case.starts_with(name))
                .map(|(_, stats, _)| stats.p50.as_secs_f64())
                .unwrap()
        };
        let page = p50(VM_FIRST_PAGE);
        println!(
            "\nGET /api/v1/vms, fleet: one page of 1000 p50 {:.1} ms; whole list in one query (before paging) {:.1} ms = {:.1}x the page; all pages walked {:.1} ms = {:.1}x the page",
            page * 1e3,
            p50(WHOLE_FLEET_UNPAGED) * 1e3,
            p50(WHOLE_FLEET_UNPAGED) / page,
            p50(WHOLE_FLEET_PAGED) * 1e3,
            p50(WHOLE_FLEET_PAGED) / page,
        );
        let sizes = &fleet.0;
        let rh = fleet.3 as f64;
        let mib = |b: u64| b as f64 / 1048576.0;
        println!(
            "\nStore (fleet): inventory + {} OOMs {:.0} MiB; hourly tier {} rows {:.0} MiB; minute tier {} rows {:.0} MiB",
            sizes.ooms,
            mib(sizes.base),
            sizes.hourly_rows,
            mib(sizes.hourly),
            sizes.minute_rows,
            mib(sizes.minute)
        );
        let minute_per_host_day = mib(sizes.minute) / rh / (MINUTE_HOURS as f64 / 24.0);
        let hourly_per_host_day =
            mib(sizes.hourly) / rh / ((ROLLUP_DAYS * 24 - MINUTE_HOURS) as f64 / 24.0);
        let ooms_per_host_day = mib(sizes.base) / args.hosts as f64 / OOM_DAYS as f64;
        println!(
            "Per host (50 VMs) per day: minute rollups {minute_per_host_day:.2} MiB, hourly rollups {hourly_per_host_day:.3} MiB, inventory + OOMs {ooms_per_host_day:.3} MiB"
        );
        let steady = minute_per_host_day * (MINUTE_HOURS as f64 / 24.0)
            + hourly_per_host_day * ((ROLLUP_DAYS * 24 - MINUTE_HOURS) as f64 / 24.0)
            + ooms_per_host_day * OOM_DAYS as f64;
        let untiered =
            minute_per_host_day * ROLLUP_DAYS as f64 + ooms_per_host_day * OOM_DAYS as f64;
        println!(
            "Steady state per host: {steady:.0} MiB with tiers vs {untiered:.0} MiB with 30 days of minutes ({:.1}x); 1000 hosts: {:.0} GiB vs {:.0} GiB",
            untiered / steady,
            steady * 1000.0 / 1024.0,
            untiered * 1000.0 / 1024.0
        );
        if let Some((rows, took)) = fleet.2 {
            let fleet_hour_rows = 1000.0 * VMS_PER_HOST as f64 * 60.0;
            let rate = rows as f64 / took.as_secs_f64();
            println!(
                "Compaction (retention pass, batches of 5000): {rows} minute rows in {:.1} s = {rate:.0} rows/s; one fleet hour (1000 x 50 x 60 = {fleet_hour_rows:.0} rows) takes {:.0} s",
                took.as_secs_f64(),
                fleet_hour_rows / rate
            );
        }
        println!("\nPlans (fleet store):\n");
        for (name, _, plan) in &fleet.1 {
            println!("- {name}\n```\n{plan}\n```");
        }
    }
}
