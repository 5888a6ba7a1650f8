//! What every handler shares: [`AppState`] (the store, counters, tokens, sessions)
//! and [`ApiConfig`] (the settings the API and the dashboard run on). Low in the
//! layers: it names the modules whose handles it holds, none of them names it back
//! except through handlers.

use std::sync::Arc;

use crate::auth::{Admission, IngestLimits};
use crate::correlation::CorrelationSettings;
use crate::storage::Store;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ApiConfig>,
    pub admission: Arc<Admission>,
    /// Prometheus counters (`GET /metrics`), kept across reloads.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The ingest tokens in memory (`crate::token_table`), kept across reloads.
    pub tokens: Arc<crate::token_table::TokenTable>,
    /// Failed token checks per address (`crate::auth_limit`), kept across reloads.
    pub auth_limit: Arc<crate::auth_limit::FailedAuthLimiter>,
    /// Dashboard login sessions, kept across reloads.
    pub sessions: Arc<crate::dashboard::sessions::Sessions>,
}

/// The API's settings.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    pub ingest: IngestLimits,
    pub read_token: Option<String>,
    pub correlation: CorrelationSettings,
    pub limits: ballast_model::Limits,
    pub dashboard: crate::dashboard::DashboardSettings,
    /// Webhooks (and their filters) new OOMs are queued for.
    pub notify: Vec<crate::notify::Route>,
    /// Hosts a VM's history is joined across (`clusters:`).
    pub clusters: crate::clusters::Clusters,
    /// Without a read token on a loopback listener: the listener, whose names
    /// are the only `Host` values the read API answers (`crate::loopback_host`).
    pub read_host_check: Option<std::net::SocketAddr>,
    /// The same for the dashboard without login.
    pub dashboard_host_check: Option<std::net::SocketAddr>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ApiConfig) -> Self {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        Self {
            admission: Arc::new(Admission::new(&config.ingest)),
            store,
            config: Arc::new(config),
            tokens: Arc::new(crate::token_table::TokenTable::new(Arc::clone(
                &metrics.auth,
            ))),
            auth_limit: Arc::new(crate::auth_limit::FailedAuthLimiter::new()),
            sessions: Arc::new(crate::dashboard::sessions::Sessions::new()),
            metrics,
        }
    }
}
