//! `check-config FILE`: the file validated as a whole, the collector URL tried
//! (a 404 on its health check is an error), and what the agent will do in guests.

use std::path::Path;

use anyhow::Context;

use super::{system_host_name, UsageError};
use crate::config::{self, Settings};
use crate::sink;

/// `check-config FILE`: exit 0 with a summary, or the first problem.
pub fn check_config(file: &Path) -> anyhow::Result<()> {
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
    let reach = crate::guard::reach::advisory(
        settings.guard.mode,
        settings.guard.cadence(settings.poll_interval),
    );
    if let Some(advice) = reach {
        eprintln!("warning: {}: {advice}", file.display());
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
pub fn guest_agent_summary(settings: &Settings) -> String {
    use crate::config::GuestAgentMode;
    let capture = &settings.capture;
    let exec = if capture.guest_agent_exec {
        "; guest-exec /bin/dmesg where a guest refuses the file API"
    } else {
        "; never guest-exec"
    };
    let psi = if settings.pressure.reads_psi(capture) {
        format!(
            "; reads /proc/pressure/memory the same way every {} s (pressure.guest_psi)",
            settings.pressure.guest_psi_interval_secs
        )
    } else {
        String::new()
    };
    let kmsg = match capture.guest_agent {
        GuestAgentMode::Off => "Guest agent: off (no call into any guest)".to_string(),
        GuestAgentMode::OnSuspicion => format!(
            "Guest agent: on_suspicion (reads /dev/kmsg with guest-file-open/read/close only after a host-visible sign of an OOM{exec})"
        ),
        GuestAgentMode::Periodic => format!(
            "Guest agent: periodic (reads /dev/kmsg with guest-file-open/read/close after a sign of an OOM and every {} s{exec})",
            capture.guest_agent_interval_secs
        ),
    };
    format!("{kmsg}{psi}")
}
