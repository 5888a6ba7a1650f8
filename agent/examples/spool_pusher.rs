//! Pushes N numbered events into a spool while the sender delivers them, then exits
//! once everything is acknowledged. The SIGKILL test in `tests/it/delivery.rs` kills it
//! at random moments and starts it again; it is also a quick throughput probe:
//!
//! ```text
//! cargo run --example spool_pusher -- DIR URL TOKEN_FILE N [BASE_MS]
//! ```
//!
//! Event `i` is stamped `BASE_MS + i` seconds (default: an hour before now, minute
//! aligned); restarts of one run must pass the same BASE_MS.
//!
//! Progress (how many events were pushed) is kept in `DIR/pushed`, written after each
//! push: a kill between the push and that write pushes the same event (same key) again,
//! which the collector dedupes. Event `i` has key `h1/<kind>/<vm>/<i>`; every tenth is
//! an OOM event, the rest rollups.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ballast_agent::sink::{self, SinkConfig, SinkStats};
use ballast_agent::spool::{key_for, Spool, SpoolConfig, SpoolHandle};
use ballast_model::{
    BalloonRollup, CaptureSource, Envelope, Event, OomAnalysis, OomEvent, OomKind, ParsedReport,
    VmRef,
};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, url, token_file, n_events, base_ms) = match args.as_slice() {
        [dir, url, token_file, n_events] => (dir, url, token_file, n_events, None),
        [dir, url, token_file, n_events, base_ms] => {
            (dir, url, token_file, n_events, Some(base_ms))
        }
        _ => anyhow::bail!("usage: spool_pusher DIR URL TOKEN_FILE N [BASE_MS]"),
    };
    let base_ms: i64 = match base_ms {
        Some(text) => text.parse().context("BASE_MS is a Unix time in ms")?,
        None => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the clock is before 1970")?
                .as_millis();
            let now_ms = i64::try_from(now_ms).context("the clock is past 2262")?;
            (now_ms / 60_000) * 60_000 - 3_600_000
        }
    };
    let dir = PathBuf::from(dir);
    let n_events: u64 = n_events.parse().context("N is a number")?;
    let mut config = SpoolConfig::with_cap(dir.join("spool"), 64 * 1024 * 1024);
    config.segment_max_bytes = 64 * 1024;
    let (spool, report) = Spool::open(config).context("opening the spool")?;
    if report.damaged_regions > 0 {
        eprintln!(
            "spool_pusher: repaired {} damaged regions ({} bytes)",
            report.damaged_regions, report.damaged_bytes
        );
    }
    let spool = SpoolHandle::new(spool);
    let progress_path = dir.join("pushed");
    let start = read_progress(&progress_path);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut sink_config = SinkConfig::new(url, PathBuf::from(token_file), "h1");
    sink_config.backoff_initial = Duration::from_millis(20);
    sink_config.backoff_max = Duration::from_millis(200);
    sink_config.idle_poll = Duration::from_millis(50);
    sink_config.batch.max_events = 100;
    let stats = Arc::new(SinkStats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sender = runtime.spawn(sink::run(
        sink_config,
        spool.clone(),
        Arc::clone(&stats),
        async {
            let _ = stopped.await;
        },
    ));

    let started = Instant::now();
    for index in start..n_events {
        spool
            .push_blocking(&event(index, base_ms))
            .with_context(|| format!("pushing event {index}"))?;
        write_progress(&progress_path, index + 1)?;
    }
    let pushed_in = started.elapsed();
    while spool.stats().events > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = stop.send(());
    runtime
        .block_on(sender)
        .context("sender task")?
        .context("sender")?;
    println!(
        "pushed {} events in {} ms, all acknowledged after {} ms",
        n_events - start.min(n_events),
        pushed_in.as_millis(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// Event `index`, stamped `base_ms + index` seconds: every tenth an OOM, the rest
/// rollups of ten VMs.
pub fn event(index: u64, base_ms: i64) -> Envelope {
    let vm = VmRef {
        uuid: format!("00000000-0000-4000-8000-{:012}", index % 10),
        name: format!("guest{}", index % 10),
    };
    let captured_at_ms = base_ms + index as i64 * 1_000;
    let event = if index.is_multiple_of(10) {
        Event::Oom(Box::new(OomEvent {
            vm,
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
        }))
    } else {
        Event::Rollup(Box::new(BalloonRollup {
            vm,
            period_start_ms: captured_at_ms,
            period_secs: 60,
            samples: 6,
            ..BalloonRollup::default()
        }))
    };
    Envelope {
        key: key_for("h1", &event, &index.to_string()),
        captured_at_ms,
        event,
    }
}

fn read_progress(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

fn write_progress(path: &Path, pushed: u64) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pushed.to_string()).context("writing progress")?;
    std::fs::rename(&tmp, path).context("renaming progress")?;
    Ok(())
}
