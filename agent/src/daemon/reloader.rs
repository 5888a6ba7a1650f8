//! SIGHUP's work: the configuration file re-read and validated whole, the plan
//! ([`crate::reload::plan`]) logged, the log filter, the sender's collector
//! settings and the monitor's live settings ([`MonitorCommand::Reload`]) updated.

use std::path::{Path, PathBuf};

use crate::cli::{config_file, system_host_name};
use crate::config::{self, Settings};
use crate::reload;
use crate::run::{MonitorCommand, MonitorCommands};
use crate::sink;

/// Re-reads the configuration on SIGHUP: a file that does not validate as a whole
/// changes nothing; otherwise the live fields go to the monitor thread and each
/// restart-only field that changed is named in the log (docs/deploy.md, "Reload").
pub(super) struct Reloader {
    /// The file `run` was given (None: the default file when it exists).
    pub(super) file: Option<PathBuf>,
    pub(super) running: Settings,
    pub(super) log: super::logging::LogFilter,
    /// The monitor thread, told the new settings.
    pub(super) monitor: MonitorCommands,
    /// The running sender's settings (`collector.url`, `collector.token_file`).
    pub(super) sink_updates: Option<tokio::sync::watch::Sender<sink::SinkConfig>>,
}

impl Reloader {
    pub(super) fn reload(&mut self) {
        let file = self.file.clone().or_else(|| config_file(None));
        tracing::info!(
            file = %file.as_deref().unwrap_or(Path::new("(defaults)")).display(),
            "SIGHUP: reloading the configuration."
        );
        let new = match config::load(file.as_deref(), &system_host_name()) {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(
                    "Configuration not reloaded, the running one stays: {}",
                    ballast_daemon::error_chain(&error)
                );
                return;
            }
        };
        for deprecation in &new.deprecations {
            tracing::warn!("Deprecated configuration: {deprecation}.");
        }
        if let Some(advice) =
            crate::guard::reach::advisory(new.guard.mode, new.guard.cadence(new.poll_interval))
        {
            tracing::warn!("{advice}.");
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
            self.log.set_level(&new.log_level);
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
        self.monitor
            .send(MonitorCommand::Reload(Box::new(self.running.clone())));
        tracing::info!(
            live = plan.live.len(),
            restart_required = plan.restart_required.len(),
            "Configuration reloaded."
        );
    }
}
