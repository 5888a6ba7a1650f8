//! `GET /api/v1/vms/{host}/{uuid}/memory-devices`: a VM's virtio-mem resize events
//! (issue 20), newest first, paged by `cursor` like `GET /api/v1/ooms`, filtered by
//! `phase` and time.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use ballast_model::ResizePhase;
use serde::Deserialize;

use crate::api::query::{checked_limit, named, params};
use crate::api::AppError;
use crate::records::VmMemoryDevices;
use crate::state::AppState;
use crate::storage::queries;
use crate::storage::virtio_mem_reads::{self, MemoryDeviceFilter, MEMORY_DEVICES_MAX};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MemoryDevicesParams {
    phase: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /api/v1/vms/{host}/{uuid}/memory-devices`.
pub(super) async fn vm_memory_devices(
    State(state): State<AppState>,
    Path((host, uuid)): Path<(String, String)>,
    query: Result<Query<MemoryDevicesParams>, QueryRejection>,
) -> Result<Json<VmMemoryDevices>, AppError> {
    let params = params(query)?;
    let filter = MemoryDeviceFilter {
        phase: named(
            "phase",
            params.phase.as_deref(),
            ResizePhase::NAMES,
            ResizePhase::parse,
        )?,
        since_ms: params.since,
        until_ms: params.until,
        cursor: match &params.cursor {
            Some(text) => Some(queries::parse_cursor(text).ok_or(AppError::Unprocessable {
                message: "cursor is not one this API gave out".into(),
                field: Some("cursor".into()),
            })?),
            None => None,
        },
        limit: checked_limit(params.limit, 100, MEMORY_DEVICES_MAX)?,
    };
    Ok(Json(
        virtio_mem_reads::vm_memory_devices(state.store.as_ref(), &host, &uuid, &filter).await?,
    ))
}
