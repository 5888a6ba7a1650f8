//! `GET /api/v1/health`: the agent's start-up check. Answers 200 with the host the
//! bearer token belongs to, 401 for a missing or unknown ingest token, so an agent
//! with a wrong token says so at start-up instead of at its first OOM.
//! Also home of [`authenticate_host`], the ingest token check both endpoints share.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::Extension;
use axum::Json;
use serde::Serialize;

use crate::api::AppError;
use crate::auth::bearer;
use crate::auth::token_sha256;
use crate::state::AppState;

/// What an agent learns from its health check.
#[derive(Debug, Serialize)]
pub(super) struct AgentHealth {
    status: &'static str,
    host_id: String,
    schema_version: u32,
}

pub(super) async fn agent_health(
    State(state): State<AppState>,
    connect_info: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Json<AgentHealth>, AppError> {
    let host_id = authenticate_host(&state, &headers, peer_ip(connect_info.as_ref())).await?;
    Ok(Json(AgentHealth {
        status: "ok",
        host_id,
        schema_version: ballast_model::SCHEMA_VERSION,
    }))
}

/// The host whose ingest token the request carries: 401 for a missing or unknown
/// token, 429 when the source address failed too often (`crate::auth_limit`).
/// A known token is found in memory; an unknown one reads the store only as
/// `crate::token_table` allows.
pub(super) async fn authenticate_host(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<String, AppError> {
    let stats = &state.metrics.auth;
    let hash = bearer(headers).map(token_sha256);
    if let Some(host) = hash.as_deref().and_then(|hash| state.tokens.cached(hash)) {
        return Ok(host);
    }
    let now = Instant::now();
    if let Some(peer) = peer {
        if let Err(retry_after_secs) = state.auth_limit.take(peer, now) {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            // Held before the answer (a sleep costs no CPU): a client that does not
            // wait for Retry-After sends one request per second per connection.
            tokio::time::sleep(crate::auth_limit::REFUSAL_DELAY).await;
            return Err(AppError::TooManyRequests { retry_after_secs });
        }
    }
    let host = match &hash {
        Some(hash) => state.tokens.host_for(state.store.as_ref(), hash).await,
        None => Ok(None),
    };
    // A good token, or a store that could not say, is no failure of the address.
    let give_back = || {
        if let Some(peer) = peer {
            state.auth_limit.give_back(peer);
        }
    };
    match host {
        Ok(Some(host)) => {
            give_back();
            Ok(host)
        }
        Err(error) => {
            give_back();
            Err(error.into())
        }
        Ok(None) => {
            let counter = if hash.is_some() {
                &stats.unknown
            } else {
                &stats.missing
            };
            // The failure was taken from the address's bucket before the lookup.
            counter.fetch_add(1, Ordering::Relaxed);
            Err(AppError::Unauthorized)
        }
    }
}

/// The TCP peer's address, when the server recorded it.
pub(super) fn peer_ip(connect_info: Option<&Extension<ConnectInfo<SocketAddr>>>) -> Option<IpAddr> {
    connect_info.map(|Extension(ConnectInfo(addr))| addr.ip())
}
