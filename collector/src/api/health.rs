//! `GET /api/v1/health`: the agent's start-up check. Answers 200 with the host the
//! bearer token belongs to, 401 for a missing or unknown ingest token, so an agent
//! with a wrong token says so at start-up instead of at its first OOM.
//! Also home of [`authenticate_host`], the ingest token check both endpoints share.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use crate::api::{bearer, AppError, AppState};
use crate::auth::{constant_time_eq, token_sha256};
use crate::storage::queries;

/// What an agent learns from its health check.
#[derive(Debug, Serialize)]
pub(super) struct AgentHealth {
    status: &'static str,
    host_id: String,
    schema_version: u32,
}

pub(super) async fn agent_health(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<AgentHealth>, AppError> {
    let host_id = authenticate_host(&state, &headers).await?;
    Ok(Json(AgentHealth {
        status: "ok",
        host_id,
        schema_version: ballast_model::SCHEMA_VERSION,
    }))
}

/// The host whose ingest token the request carries (401 otherwise).
pub(super) async fn authenticate_host(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<String, AppError> {
    let token = bearer(headers).ok_or(AppError::Unauthorized)?;
    let hash = token_sha256(token);
    let (host, stored_hash) = queries::host_for_token_hash(state.store.as_ref(), &hash)
        .await?
        .ok_or(AppError::Unauthorized)?;
    if !constant_time_eq(&hash, &stored_hash) {
        return Err(AppError::Unauthorized);
    }
    Ok(host)
}
