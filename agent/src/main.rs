//! `ballast-agent`: the host agent's command line.
//!
//! - `run [--config FILE]`: watch every VM of this host (the daemon).
//! - `check-config FILE`: validate a configuration file, check that `collector.url`
//!   answers as a collector (a 404 on its health check is an error), and exit.
//! - `status [--config FILE] [--json]`: the running agent's table of VMs and whether
//!   delivery to the collector is held.
//! - `spool replay-dead-letters [--config FILE]`: hand the dead-lettered events back to
//!   the agent for delivery.
//! - `explain [--json] [FILE|-]`: analyze a pasted kernel OOM report offline.
//! - `--print-default-config`: the defaults as YAML.
//!
//! Exit codes: 0 when the command ran (also when `explain` found no report), 2 when
//! the input or configuration could not be read or is invalid, 1 on other errors.
//!
//! `run` under systemd (`Type=notify`): READY=1 once the first poll is done; SIGHUP
//! re-reads the configuration file ([`Reloader`]), SIGTERM/SIGINT stop.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use ballast_agent::config::{self, BackendChoice, RawConfig, Settings};
use ballast_agent::hypervisor::Hypervisor;
use ballast_agent::run::{Handles, Monitor, SpoolSink};
use ballast_agent::spool::{Spool, SpoolConfig, SpoolHandle};
use ballast_agent::status::Status;
use ballast_agent::systemd::{self, NotifyState};
use ballast_agent::{explain, metrics, paths, reload, sink};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "ballast-agent",
    version,
    about = "ballast host agent for QEMU/KVM hypervisors"
)]
struct Cli {
    /// Print the default configuration as YAML and exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Watch every VM of this host: balloon stats, guest OOM reports.
    Run {
        /// Configuration file (default /etc/ballast/agent.yaml when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and exit.
    CheckConfig { file: PathBuf },
    /// Show the running agent's VMs.
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Work on the agent's spool.
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// Analyze a kernel OOM report (a file, or `-` / nothing for standard input).
    Explain {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The kernel log or pasted report; `-` reads standard input.
        file: Option<String>,
    },
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// Move the events of the dead-letter files back into the spool; the running agent
    /// delivers them (again refused ones return to the dead-letter file). Safe to
    /// repeat: the collector stores each event once.
    ReplayDeadLetters {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Errors that mean "bad input": exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    ballast_agent::allocator::fix_mmap_threshold();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if cli.print_default_config {
        print!("{}", RawConfig::default_yaml());
        return ExitCode::SUCCESS;
    }
    let result = match cli.command {
        None => Err(anyhow::Error::new(UsageError(
            "a subcommand is needed; see --help".into(),
        ))),
        Some(Command::Explain { json, file }) => return run_explain(json, file.as_deref()),
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Status { config, json }) => status(config.as_deref(), json),
        Some(Command::Spool {
            command: SpoolCommand::ReplayDeadLetters { config },
        }) => replay_dead_letters(config.as_deref()),
        Some(Command::Run { config }) => run(config.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ballast-agent: {error:#}");
            let usage = error.chain().any(|cause| {
                cause.is::<UsageError>()
                    || cause.is::<config::ConfigError>()
                    || cause.is::<config::ValidationError>()
            });
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn system_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// The explicit file, else the default file when it exists, else the defaults.
fn load_settings(path: Option<&Path>) -> anyhow::Result<Settings> {
    Ok(config::load(
        config_file(path).as_deref(),
        &system_host_name(),
    )?)
}

/// The file `run` reads: the explicit one, else the default file when it exists.
fn config_file(path: Option<&Path>) -> Option<PathBuf> {
    let default = Path::new(paths::CONFIG_FILE);
    path.or_else(|| default.exists().then_some(default))
        .map(Path::to_path_buf)
}

fn check_config(file: &Path) -> anyhow::Result<()> {
    let settings = config::load(Some(file), &system_host_name())?;
    check_collector(file, &settings)?;
    println!(
        "{}: OK (host {}, backend {:?}, poll every {} s, history {} s)",
        file.display(),
        settings.host_id,
        settings.backend,
        settings.poll_interval.as_secs(),
        settings.history.as_secs()
    );
    println!("{}", guest_agent_summary(&settings));
    for deprecation in &settings.deprecations {
        eprintln!("warning: {}: {deprecation}", file.display());
    }
    Ok(())
}

/// `GET <collector.url>/api/v1/health`: a 404 means nothing answers as a collector
/// under that URL (a wrong path prefix or port), a configuration error. An unreachable
/// collector or a refused token is printed as a warning (the collector may be down
/// right now; the agent keeps events in its spool).
fn check_collector(file: &Path, settings: &Settings) -> anyhow::Result<()> {
    let Some(mut sink_config) = sink::SinkConfig::from_settings(settings) else {
        return Ok(());
    };
    sink_config.connect_timeout = std::time::Duration::from_secs(3);
    sink_config.request_timeout = std::time::Duration::from_secs(5);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Failed to start the async runtime")?;
    let client = sink::CollectorClient::new(&sink_config)?;
    let reachability = runtime.block_on(client.check_health());
    match (&reachability, reachability.problem(&sink_config.url)) {
        (sink::Reachability::WrongUrl, Some(problem)) => Err(anyhow::Error::new(UsageError(
            format!("{}: {problem}", file.display()),
        ))),
        (_, Some(problem)) => {
            eprintln!("{}: warning: {problem}", file.display());
            Ok(())
        }
        (_, None) => Ok(()),
    }
}

/// What the agent will do inside guests, in one line (check-config, start-up log).
fn guest_agent_summary(settings: &Settings) -> String {
    use ballast_agent::config::GuestAgentMode;
    let capture = &settings.capture;
    let exec = if capture.guest_agent_exec {
        "; guest-exec /bin/dmesg where a guest refuses the file API"
    } else {
        "; never guest-exec"
    };
    match capture.guest_agent {
        GuestAgentMode::Off => "Guest agent: off (no call into any guest)".to_string(),
        GuestAgentMode::OnSuspicion => format!(
            "Guest agent: on_suspicion (reads /dev/kmsg with guest-file-open/read/close only after a host-visible sign of an OOM{exec})"
        ),
        GuestAgentMode::Periodic => format!(
            "Guest agent: periodic (reads /dev/kmsg with guest-file-open/read/close after a sign of an OOM and every {} s{exec})",
            capture.guest_agent_interval_secs
        ),
    }
}

fn status(config: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let settings = load_settings(config)?;
    let path = settings.state_dir.join(paths::STATUS_FILE_NAME);
    let mut status = Status::read(&path).with_context(|| {
        format!(
            "No status at {} (is `ballast-agent run` running?)",
            path.display()
        )
    })?;
    // Without a collector there is no sender (a file from an earlier one is stale).
    if !settings.collector.url.trim().is_empty() {
        status.delivery =
            sink::DeliveryState::read(&settings.state_dir.join(paths::DELIVERY_FILE_NAME)).ok();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.table(std::time::SystemTime::now()));
    }
    Ok(())
}

fn replay_dead_letters(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = load_settings(config)?;
    let spool_dir = settings.state_dir.join("spool");
    if !spool_dir.is_dir() {
        println!("No spool at {}: nothing to replay.", spool_dir.display());
        return Ok(());
    }
    let queued =
        ballast_agent::spool::replay::queue_dead_letters(&spool_dir).with_context(|| {
            format!(
                "Failed to replay the dead letters in {}",
                spool_dir.display()
            )
        })?;
    if queued.entries == 0 {
        println!("No dead letters in {}.", spool_dir.display());
        return Ok(());
    }
    println!(
        "{} dead-lettered events handed to the agent for delivery ({}); the running agent sends them within seconds, a stopped one when it starts.",
        queued.events,
        queued
            .inbox_file
            .as_deref()
            .map_or_else(|| "-".to_string(), |path| path.display().to_string())
    );
    if queued.unreplayable > 0 {
        println!(
            "{} entries kept only their keys (too large) or do not decode: left in {}.",
            queued.unreplayable,
            spool_dir.join("dead-letter.unreplayable.jsonl").display()
        );
    }
    Ok(())
}

fn choose_backend(settings: &Settings) -> anyhow::Result<Arc<dyn Hypervisor>> {
    let choice = match settings.backend {
        BackendChoice::Auto if Path::new(paths::LIBVIRT_SOCKET).exists() => BackendChoice::Libvirt,
        BackendChoice::Auto if settings.proxmox.config_dir.exists() => BackendChoice::Proxmox,
        BackendChoice::Auto => BackendChoice::Libvirt,
        other => other,
    };
    match choice {
        BackendChoice::Libvirt => libvirt_backend(settings),
        BackendChoice::Proxmox | BackendChoice::Auto => {
            use ballast_agent::hypervisor::proxmox::{ProxmoxHypervisor, ProxmoxSettings};
            let hypervisor = ProxmoxHypervisor::new(ProxmoxSettings::from_config(
                &settings.proxmox,
                &settings.state_dir,
            ));
            hypervisor.check().with_context(|| {
                format!(
                    "Failed to read the Proxmox VE directories {} and {}",
                    settings.proxmox.config_dir.display(),
                    settings.proxmox.run_dir.display()
                )
            })?;
            Ok(Arc::new(hypervisor))
        }
    }
}

#[cfg(feature = "libvirt")]
fn libvirt_backend(settings: &Settings) -> anyhow::Result<Arc<dyn Hypervisor>> {
    use ballast_agent::hypervisor::libvirt::{LibvirtConfig, LibvirtHypervisor};
    let hypervisor = LibvirtHypervisor::new(LibvirtConfig {
        uri: settings.libvirt.uri.clone(),
        ..LibvirtConfig::default()
    });
    match hypervisor.connect() {
        Ok(()) => {}
        // libvirtd stopped, or not up yet at boot: start anyway (spool, delivery and
        // /metrics work meanwhile); every poll tries to connect again.
        Err(error) if LibvirtHypervisor::daemon_unreachable(&error) => {
            tracing::warn!(
                uri = %settings.libvirt.uri,
                error = %ballast_agent::error_text::error_chain(&error),
                "libvirt does not answer (is libvirtd running?); polling starts once it does."
            );
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("Failed to reach libvirt at {}", settings.libvirt.uri))
        }
    }
    Ok(Arc::new(hypervisor))
}

#[cfg(not(feature = "libvirt"))]
fn libvirt_backend(_settings: &Settings) -> anyhow::Result<Arc<dyn Hypervisor>> {
    Err(anyhow::Error::new(UsageError(
        "this build has no libvirt support (feature `libvirt`)".into(),
    )))
}

fn run(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = load_settings(config)?;
    // BALLAST_LOG, when set, overrides log_level (also across reloads).
    let env_filter = std::env::var("BALLAST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty());
    let filter = EnvFilter::try_new(env_filter.as_deref().unwrap_or(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, log_filter) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    std::fs::create_dir_all(&settings.state_dir).with_context(|| {
        format!(
            "Failed to create the state directory {}",
            settings.state_dir.display()
        )
    })?;
    let hypervisor = choose_backend(&settings)?;
    tracing::info!(host = %settings.host_id, backend = hypervisor.backend(), "ballast-agent starting.");
    tracing::info!("{}", guest_agent_summary(&settings));
    for deprecation in &settings.deprecations {
        tracing::warn!("Deprecated configuration: {deprecation}.");
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
    let sink = Box::new(SpoolSink::new(
        spool.clone(),
        settings.journal_file.clone(),
        handles.counters.clone(),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("Failed to start the async runtime")?;
    let mut sink_updates = None;
    let mut sink_stats = None;
    match sink::SinkConfig::from_settings(&settings) {
        Some(sink_config) => {
            let stop = handles.stop.clone();
            let stats = Arc::new(sink::SinkStats::default());
            sink_stats = Some(Arc::clone(&stats));
            let shutdown = async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
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
    let signals = install_signals(&runtime)?;
    let first_poll = handles.first_poll.clone();
    runtime.spawn(async move {
        first_poll.notified().await;
        systemd::notify(&[NotifyState::Ready, NotifyState::Status("Polling.")]);
    });
    let mut reloader = Reloader {
        file: config_file(config),
        running: settings.clone(),
        log_filter,
        log_from_env: env_filter.is_some(),
        slot: handles.reload.clone(),
        sink_updates,
    };
    let stop = handles.stop.clone();
    runtime.spawn(async move {
        handle_signals(signals, &mut reloader).await;
        systemd::notify(&[NotifyState::Stopping]);
        tracing::info!("Stopping.");
        stop.store(true, Ordering::Relaxed);
    });
    let monitor = Monitor::new(settings, hypervisor, sink, handles);
    std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || monitor.run())
        .context("Failed to start the monitor thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("The monitor thread panicked"))?;
    Ok(())
}

/// SIGTERM, SIGINT and SIGHUP streams, installed before anything can send them.
type Signals = (
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

fn install_signals(runtime: &tokio::runtime::Runtime) -> anyhow::Result<Signals> {
    use tokio::signal::unix::{signal, SignalKind};
    let _context = runtime.enter();
    Ok((
        signal(SignalKind::terminate()).context("Failed to handle SIGTERM")?,
        signal(SignalKind::interrupt()).context("Failed to handle SIGINT")?,
        signal(SignalKind::hangup()).context("Failed to handle SIGHUP")?,
    ))
}

/// Reloads on SIGHUP; returns on SIGTERM or SIGINT.
async fn handle_signals(signals: Signals, reloader: &mut Reloader) {
    let (mut terminate, mut interrupt, mut hangup) = signals;
    loop {
        tokio::select! {
            _ = terminate.recv() => return,
            _ = interrupt.recv() => return,
            _ = hangup.recv() => {
                systemd::notify(&[NotifyState::Reloading]);
                reloader.reload();
                systemd::notify(&[NotifyState::Ready, NotifyState::Status("Polling.")]);
            }
        }
    }
}

/// Re-reads the configuration on SIGHUP: a file that does not validate as a whole
/// changes nothing; otherwise the live fields go to the monitor thread and each
/// restart-only field that changed is named in the log (docs/deploy.md, "Reload").
struct Reloader {
    file: Option<PathBuf>,
    running: Settings,
    log_filter: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    log_from_env: bool,
    slot: ballast_agent::shared::SharedLock<Option<Settings>>,
    /// The running sender's settings (`collector.url`, `collector.token_file`).
    sink_updates: Option<tokio::sync::watch::Sender<sink::SinkConfig>>,
}

impl Reloader {
    fn reload(&mut self) {
        let file = self.file.clone().or_else(|| config_file(None));
        tracing::info!(
            file = %file.as_deref().unwrap_or(Path::new("(defaults)")).display(),
            "SIGHUP: reloading the configuration."
        );
        let new = match config::load(file.as_deref(), &system_host_name()) {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(
                    "Configuration not reloaded, the running one stays: {:#}",
                    anyhow::Error::new(error)
                );
                return;
            }
        };
        for deprecation in &new.deprecations {
            tracing::warn!("Deprecated configuration: {deprecation}.");
        }
        let plan = reload::plan(&self.running, &new);
        for field in &plan.restart_required {
            tracing::warn!(
                field,
                "Field {field} changed: restart required (the running value stays until then)."
            );
        }
        for change in &plan.live {
            tracing::info!("Applied {change}.");
        }
        if self.running.log_level != new.log_level {
            if self.log_from_env {
                tracing::warn!("log_level changed, but BALLAST_LOG is set and overrides it.");
            } else if let Err(error) = EnvFilter::try_new(&new.log_level)
                .map_err(|error| error.to_string())
                .and_then(|filter| {
                    self.log_filter
                        .reload(filter)
                        .map_err(|error| error.to_string())
                })
            {
                tracing::error!(%error, "Failed to change the log filter.");
            }
        }
        reload::apply_live(&mut self.running, &new);
        if let (Some(updates), Some(config)) = (
            &self.sink_updates,
            sink::SinkConfig::from_settings(&self.running),
        ) {
            updates.send_if_modified(|running| {
                let changed = *running != config;
                if changed {
                    *running = config;
                }
                changed
            });
        }
        *self.slot.lock() = Some(self.running.clone());
        tracing::info!(
            live = plan.live.len(),
            restart_required = plan.restart_required.len(),
            "Configuration reloaded."
        );
    }
}

fn run_explain(json: bool, file: Option<&str>) -> ExitCode {
    let mut input = match explain::open_input(file) {
        Ok(input) => input,
        Err(error) => {
            eprintln!("ballast-agent explain: {error:#}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    match explain::explain_to(&mut input, file.unwrap_or("-"), json, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ explain::ExplainError::Read { .. }) => {
            eprintln!("ballast-agent explain: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("ballast-agent explain: {error:#}");
            ExitCode::from(1)
        }
    }
}
