//! The API's routes: ingest and agent health (per-host token), the query API and
//! `GET /metrics` behind the read token, `GET /healthz`.

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::api::{health, ingest, memory_devices, query, scrape, AppError};
use crate::auth::{bearer, constant_time_eq};
use crate::state::AppState;

/// The API's routes, to mount on the app ([`crate::app::app`]).
pub fn routes(state: AppState) -> Router<AppState> {
    let read = Router::new()
        .route("/api/v1/ooms", get(query::list_ooms))
        .route("/api/v1/ooms/{id}", get(query::get_oom))
        .route("/api/v1/vms", get(query::list_vms))
        .route("/api/v1/vms/{host}/{uuid}/memory", get(query::vm_memory))
        .route("/api/v1/vms/{uuid}/memory", get(query::vm_memory_by_uuid))
        .route(
            "/api/v1/vms/{host}/{uuid}/memory-devices",
            get(memory_devices::vm_memory_devices),
        )
        .route(
            "/api/v1/vms/{host}/{uuid}/pressure",
            get(query::vm_pressure),
        )
        .route("/api/v1/pressure/open", get(query::open_pressure))
        .route("/api/v1/vms/{host}/{uuid}/guard", get(query::vm_guard))
        .route("/api/v1/guard", get(query::fleet_guard))
        .route("/api/v1/stats/ooms", get(query::oom_counts))
        .route(
            "/api/v1/stats/repeated-balloon-ooms",
            get(query::repeat_offenders),
        )
        .route("/metrics", get(scrape::scrape))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_read_token,
        ));
    Router::new()
        .route("/api/v1/ingest", post(ingest::ingest))
        .route("/api/v1/health", get(health::agent_health))
        .route("/healthz", get(|| async { "ok" }))
        .merge(read)
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
