//! The HTTP API: `fn app(state) -> Router`.
//!
//! Write side (agents, per-host bearer token):
//! - `POST /api/v1/ingest`: a `ballast_model::Batch` (JSON, optionally gzip).
//!
//! Read side (the read token when configured; none on a loopback listener):
//! - `GET /api/v1/ooms`, `GET /api/v1/ooms/{id}`
//! - `GET /api/v1/vms`, `GET /api/v1/vms/{host}/{uuid}/memory` (`/vms/{uuid}/memory`
//!   while one host reported the uuid)
//! - `GET /api/v1/stats/ooms`, `GET /api/v1/stats/repeated-balloon-ooms`
//!
//! And `GET /metrics` (Prometheus text, read token like the query API; see
//! `crate::metrics`), `GET /healthz` (no auth). docs/collector.md documents every
//! parameter and answer. Each request gets one tracing span with its method and
//! `matched_path`.

mod error;
mod health;
mod ingest;
mod query;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

pub use error::AppError;

use crate::auth::{constant_time_eq, Admission};
use crate::config::{IngestLimits, Settings};
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

impl ApiConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            ingest: settings.ingest.clone(),
            read_token: settings.read_token.clone(),
            correlation: settings.correlation.clone(),
            limits: ballast_model::Limits::default(),
            dashboard: settings.dashboard.clone(),
            notify: crate::notify::routes(&settings.notify),
            clusters: settings.clusters.clone(),
            read_host_check: (settings.read_token.is_none() && settings.listen.ip().is_loopback())
                .then_some(settings.listen),
            dashboard_host_check: (settings.dashboard.auth
                == crate::dashboard::DashboardAuth::None
                && settings.listen.ip().is_loopback())
            .then_some(settings.listen),
        }
    }
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

/// The whole API.
pub fn app(state: AppState) -> Router {
    let read = Router::new()
        .route("/api/v1/ooms", get(query::list_ooms))
        .route("/api/v1/ooms/{id}", get(query::get_oom))
        .route("/api/v1/vms", get(query::list_vms))
        .route("/api/v1/vms/{host}/{uuid}/memory", get(query::vm_memory))
        .route("/api/v1/vms/{uuid}/memory", get(query::vm_memory_by_uuid))
        .route("/api/v1/stats/ooms", get(query::oom_counts))
        .route(
            "/api/v1/stats/repeated-balloon-ooms",
            get(query::repeat_offenders),
        )
        .route("/metrics", get(crate::metrics::scrape))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_read_token,
        ));
    Router::new()
        .route("/api/v1/ingest", post(ingest::ingest))
        .route("/api/v1/health", get(health::agent_health))
        .route("/healthz", get(|| async { "ok" }))
        .merge(read)
        .merge(crate::dashboard::routes(state.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let matched_path = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str);
                tracing::info_span!("request", method = %request.method(), matched_path)
            }),
        )
        .with_state(state)
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

async fn require_read_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    if let Some(expected) = &state.config.read_token {
        let given = bearer(request.headers()).unwrap_or_default();
        if !constant_time_eq(given, expected) {
            return Err(AppError::Unauthorized);
        }
    } else if let Some(listen) = state.config.read_host_check {
        if let Some(refused) =
            crate::loopback_host::refusal(request.headers(), request.uri(), listen)
        {
            return Ok(refused);
        }
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests;
