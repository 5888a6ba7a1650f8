//! Configuration reload on SIGHUP, and systemd readiness.
//!
//! 1. [`on_sighup`] re-reads the configuration file on every SIGHUP and validates it
//!    as a whole ([`crate::config::load`], which also reads the token files); a file
//!    that fails keeps the running configuration and the error names the field.
//! 2. [`plan`] (pure) sorts the changed fields: the live ones (`read.token_file`
//!    and its token, `dashboard.*` with its token file, `ingest.*` limits,
//!    `correlation.*`, `notify.*`) take effect for the next request; the others
//!    (`listen`, `tls`, `storage`, `retention`) are logged as "field X changed:
//!    restart required" and keep their running values.
//! 3. The API is rebuilt from the merged settings ([`crate::state::ApiConfig::from_settings`])
//!    and swapped into the [`LiveRouter`] that the server serves: requests in
//!    flight finish on the old one. Ingest tokens live in the store, so `token
//!    create`/`revoke` need no reload at all.
//!
//! Webhooks (`crate::notify`): the ingest side's routes come with the rebuilt API;
//! when `notify` changed, the senders are replaced too (the old ones are aborted;
//! the outbox is durable, so a row being sent is leased again by the new sender).
//! Another task spawned from `Settings` at start-up needs the same: its field
//! compared in [`plan`] and a respawn in `reload`, or a place in `restart_required`.

use std::path::PathBuf;
use std::sync::Arc;

pub use crate::live_router::LiveRouter;

use crate::app::app;
use crate::config::Settings;
use crate::state::{ApiConfig, AppState};
use ballast_daemon::error_chain;

/// What a reload changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Changed sections applied to the next request.
    pub live: Vec<&'static str>,
    /// Changed sections that keep their running value until a restart.
    pub restart_required: Vec<&'static str>,
}

/// Compares the running settings with a newly validated file.
pub fn plan(running: &Settings, new: &Settings) -> ReloadPlan {
    let live = [
        ("read.token_file", running.read_token != new.read_token),
        ("dashboard", running.dashboard != new.dashboard),
        ("ingest", running.ingest != new.ingest),
        ("correlation", running.correlation != new.correlation),
        ("notify", running.notify != new.notify),
        ("clusters", running.clusters != new.clusters),
    ];
    let restart = [
        ("listen", running.listen != new.listen),
        ("server", running.connections != new.connections),
        ("tls", running.tls != new.tls),
        ("storage", running.storage != new.storage),
        ("retention", running.retention != new.retention),
    ];
    let changed = |fields: &[(&'static str, bool)]| {
        fields
            .iter()
            .filter_map(|(name, changed)| changed.then_some(*name))
            .collect()
    };
    ReloadPlan {
        live: changed(&live),
        restart_required: changed(&restart),
    }
}

/// `new` with the restart-only fields of `running`: what the server runs on after
/// a reload.
pub fn merge(running: &Settings, new: &Settings) -> Settings {
    Settings {
        listen: running.listen,
        connections: running.connections.clone(),
        tls: running.tls.clone(),
        storage: running.storage.clone(),
        retention: running.retention.clone(),
        ..new.clone()
    }
}

/// Where the running configuration came from (`None`: the built-in defaults).
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
}

/// Reloads on every SIGHUP until the task is aborted (which drops `notifier`, so
/// aborts its senders). `state` is the running API state; its store carries over,
/// and its admission buckets unless `ingest` changed.
pub async fn on_sighup(
    mut hangup: tokio::signal::unix::Signal,
    source: ConfigSource,
    settings: Settings,
    state: AppState,
    live: LiveRouter,
    mut notifier: crate::notify::Notifier,
) {
    let mut running = settings;
    while hangup.recv().await.is_some() {
        ballast_daemon::systemd::notify(&[ballast_daemon::systemd::NotifyState::Reloading]);
        running = reload(&source, running, &state, &live, &mut notifier);
        ballast_daemon::systemd::notify(&[ballast_daemon::systemd::NotifyState::Ready]);
    }
}

fn reload(
    source: &ConfigSource,
    running: Settings,
    state: &AppState,
    live: &LiveRouter,
    notifier: &mut crate::notify::Notifier,
) -> Settings {
    let name = source.file.as_ref().map_or_else(
        || "(defaults)".to_string(),
        |file| file.display().to_string(),
    );
    tracing::info!(file = %name, "SIGHUP: reloading the configuration.");
    let new = match crate::config::load(source.file.as_deref()) {
        Ok(new) => new,
        Err(error) => {
            tracing::error!(
                "Configuration not reloaded, the running one stays: {}",
                error_chain(&error)
            );
            return running;
        }
    };
    let plan = plan(&running, &new);
    for field in &plan.restart_required {
        tracing::warn!(
            field,
            "Field {field} changed: restart required (the running value stays until then)."
        );
    }
    let merged = merge(&running, &new);
    let next = AppState {
        store: Arc::clone(&state.store),
        config: Arc::new(ApiConfig::from_settings(&merged)),
        admission: if plan.live.contains(&"ingest") {
            Arc::new(crate::auth::Admission::new(&merged.ingest))
        } else {
            Arc::clone(&state.admission)
        },
        metrics: Arc::clone(&state.metrics),
        tokens: Arc::clone(&state.tokens),
        auth_limit: Arc::clone(&state.auth_limit),
        sessions: Arc::clone(&state.sessions),
    };
    live.replace(app(next));
    if plan.live.contains(&"notify") {
        // Dropping the old notifier aborts its senders.
        *notifier = crate::notify::spawn_with_stats(
            Arc::clone(&state.store),
            &merged.notify,
            Arc::clone(&state.metrics.notify),
        );
    }
    tracing::info!(live = ?plan.live, restart_required = ?plan.restart_required, "Configuration reloaded.");
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    fn settings(yaml: &str) -> Settings {
        let raw: RawConfig = serde_yaml_ng::from_str(yaml).expect("parses");
        raw.validate().expect("valid")
    }

    #[test]
    fn live_and_restart_fields_are_told_apart_and_merged() {
        let running = settings("listen: 127.0.0.1:8470\n");
        assert_eq!(plan(&running, &running.clone()), ReloadPlan::default());
        let new = settings(
            "listen: 127.0.0.1:9999\ningest:\n  burst: 7\ncorrelation:\n  window_secs: 60\n",
        );
        let plan = plan(&running, &new);
        assert_eq!(plan.live, ["ingest", "correlation"]);
        assert_eq!(plan.restart_required, ["listen"]);
        let merged = merge(&running, &new);
        assert_eq!(merged.listen, running.listen, "listen needs a restart");
        assert_eq!(merged.ingest.burst, 7);
        assert_eq!(merged.correlation, new.correlation);
    }
}
