//! The top of the collector's layers: the router that mounts the API and the
//! dashboard on one [`AppState`], and [`ApiConfig::from_settings`], which derives the
//! handlers' settings from the whole checked configuration.

use axum::extract::{MatchedPath, Request};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::state::{ApiConfig, AppState};

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

/// The whole HTTP surface: the API ([`crate::api::routes`]) and the dashboard
/// ([`crate::dashboard::routes`]), each request in one tracing span.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(crate::api::routes(state.clone()))
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
