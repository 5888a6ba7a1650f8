//! `run`: the daemon's start-up and its threads. The configuration is loaded and
//! checked, the log set up (`logging`), the backend chosen (`backend`), the
//! spool opened; then, on a small tokio runtime, the collector sender
//! ([`crate::sink`]), the `/metrics` listener and the signals (`signals`:
//! SIGHUP reloads through `reloader`, SIGTERM/SIGINT stop); the monitor
//! ([`crate::run`]) runs on a thread of its own until it is told to stop.
//!
//! Under systemd (`Type=notify`): READY=1 once the first poll is done.

mod backend;
mod logging;
mod reloader;
mod signals;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use self::logging::LogFilter;
use self::reloader::Reloader;
use crate::cli::check_config::guest_agent_summary;
use crate::cli::{config_file, load_settings};
use crate::run::{Handles, Monitor, SpoolOutlet};
use crate::spool::{Spool, SpoolConfig, SpoolHandle};
use crate::systemd::{self, NotifyState};
use crate::{metrics, sink};

/// Runs the agent with the configuration `config` (else the default file when it
/// exists, else the defaults) until SIGTERM or SIGINT.
pub fn run(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = load_settings(config)?;
    let log = LogFilter::init(&settings.log_level);
    std::fs::create_dir_all(&settings.state_dir).with_context(|| {
        format!(
            "Failed to create the state directory {}",
            settings.state_dir.display()
        )
    })?;
    let hypervisor = backend::choose_backend(&settings)?;
    tracing::info!(host = %settings.host_id, backend = hypervisor.backend(), "ballast-agent starting.");
    tracing::info!("{}", guest_agent_summary(&settings));
    for deprecation in &settings.deprecations {
        tracing::warn!("Deprecated configuration: {deprecation}.");
    }
    if let Some(advice) = crate::guard::reach::advisory(
        settings.guard.mode,
        settings.guard.cadence(settings.poll_interval),
    ) {
        tracing::warn!("{advice}.");
    }
    let handles = Handles::new(&settings);
    let spool_config =
        SpoolConfig::with_cap(settings.state_dir.join("spool"), settings.spool_max_bytes);
    let (spool, opened) = Spool::open(spool_config).context("Failed to open the spool")?;
    if opened.damaged_regions > 0 || opened.cursor_reset {
        tracing::warn!(
            damaged_regions = opened.damaged_regions,
            damaged_bytes = opened.damaged_bytes,
            cursor_reset = opened.cursor_reset,
            "The spool was damaged (a crash during a write?); every intact event is kept."
        );
    }
    tracing::info!(events = opened.events, "Spool opened.");
    let spool = SpoolHandle::new(spool);
    let outlet = Box::new(SpoolOutlet::new(
        spool.clone(),
        settings.journal_file.clone(),
        handles.counters.clone(),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("Failed to start the async runtime")?;
    // The sender ends when the signal task says so (or is gone).
    let (stop_sender, sender_stop) = tokio::sync::oneshot::channel::<()>();
    let mut sink_updates = None;
    let mut sink_stats = None;
    match sink::SinkConfig::from_settings(&settings) {
        Some(sink_config) => {
            let stats = Arc::new(sink::SinkStats::default());
            sink_stats = Some(Arc::clone(&stats));
            let shutdown = async move {
                let _ = sender_stop.await;
            };
            let spool = spool.clone();
            let (updates, receiver) = tokio::sync::watch::channel(sink_config);
            sink_updates = Some(updates);
            runtime.spawn(async move {
                if let Err(error) = sink::run_reloadable(receiver, spool, stats, shutdown).await {
                    tracing::error!(%error, "The collector sender stopped.");
                }
            });
        }
        None => tracing::info!("No collector configured: events stay in the spool."),
    }
    if let Some(listen) = settings.metrics_listen {
        let shared = metrics::Shared {
            fleet: handles.fleet.clone(),
            counters: handles.counters.clone(),
            sink: sink_stats,
        };
        // Bind now so a taken port is a start-up error, not a log line later.
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("Failed to listen on {listen}"))?;
        drop(listener);
        runtime.spawn(async move {
            if let Err(error) = metrics::serve(listen, shared).await {
                tracing::error!(%error, "Metrics listener stopped.");
            }
        });
    }
    // Before READY=1: a reload right after it must not find SIGHUP's default action.
    let signals = signals::install_signals(&runtime)?;
    let first_poll = handles.first_poll.clone();
    runtime.spawn(async move {
        first_poll.notified().await;
        systemd::notify(&[NotifyState::Ready, NotifyState::Status("Polling.")]);
    });
    let monitor = Monitor::new(settings.clone(), hypervisor, outlet, handles);
    let commands = monitor.commands();
    let mut reloader = Reloader {
        file: config_file(config),
        running: settings,
        log,
        monitor: commands.clone(),
        sink_updates,
    };
    runtime.spawn(async move {
        signals::handle_signals(signals, &mut reloader).await;
        systemd::notify(&[NotifyState::Stopping]);
        tracing::info!("Stopping.");
        commands.stop();
        let _ = stop_sender.send(());
    });
    std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || monitor.run())
        .context("Failed to start the monitor thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("The monitor thread panicked"))?;
    Ok(())
}
