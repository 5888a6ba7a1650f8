//! The read side: `GET /api/v1/ooms`, `/ooms/{id}`, `/vms`, `/vms/{host}/{uuid}/memory`
//! (and the older `/vms/{uuid}/memory` while the uuid names one host's VM),
//! `/vms/{host}/{uuid}/pressure`, `/pressure/open`, `/vms/{host}/{uuid}/guard`,
//! `/guard`, `/stats/ooms`,
//! `/stats/repeated-balloon-ooms`. Times are Unix milliseconds.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use ballast_model::{
    CorrelationVerdict, GuardMode, GuardOutcome, HostTookVerdict, OomKind, ReportVerdict,
};
use serde::Deserialize;

use crate::api::AppError;
use crate::records::{
    EpisodeRecord, GuardRecord, OomCounts, OomDetail, OomPage, RepeatOffenders, VmGuard, VmList,
    VmMemory, VmPressure,
};
use crate::state::AppState;
use crate::storage::episodes::{self, EPISODES_MAX};
use crate::storage::guard_reads::{self, GuardFilter, GUARD_MAX};
use crate::storage::queries::{self, GroupBy, OomFilter, Resolution, VmCursor, VmFilter};

const DAY_MS: i64 = 86_400_000;

pub(super) fn params<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, AppError> {
    query
        .map(|Query(value)| value)
        .map_err(|rejection| AppError::BadRequest(rejection.body_text()))
}

/// `limit` or its default; a value outside `1..=max` is a 422 naming `limit`
/// (never quietly capped: a client asking for more than a page holds must know).
pub(super) fn checked_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, AppError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(AppError::Unprocessable {
            message: format!("limit must be 1 to {max}"),
            field: Some("limit".into()),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OomsParams {
    host: Option<String>,
    vm: Option<String>,
    verdict: Option<String>,
    host_took: Option<String>,
    report_verdict: Option<String>,
    kind: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub(super) async fn list_ooms(
    State(state): State<AppState>,
    query: Result<Query<OomsParams>, QueryRejection>,
) -> Result<Json<OomPage>, AppError> {
    let params = params(query)?;
    let limit = checked_limit(params.limit, 100, queries::OOM_PAGE_MAX)?;
    let verdict = named(
        "verdict",
        params.verdict.as_deref(),
        CorrelationVerdict::NAMES,
        CorrelationVerdict::parse,
    )?;
    let host_took = named(
        "host_took",
        params.host_took.as_deref(),
        HostTookVerdict::NAMES,
        HostTookVerdict::parse,
    )?;
    let report_verdict = named(
        "report_verdict",
        params.report_verdict.as_deref(),
        ReportVerdict::NAMES,
        ReportVerdict::parse,
    )?;
    let kind = named(
        "kind",
        params.kind.as_deref(),
        &OomKind::NAMES,
        OomKind::parse,
    )?;
    let cursor = match &params.cursor {
        Some(text) => Some(queries::parse_cursor(text).ok_or(AppError::Unprocessable {
            message: "cursor is not one this API gave out".into(),
            field: Some("cursor".into()),
        })?),
        None => None,
    };
    let filter = OomFilter {
        host: params.host,
        vm: params.vm,
        verdict,
        host_took,
        report_verdict,
        kind,
        since_ms: params.since,
        until_ms: params.until,
        cursor,
        limit,
    };
    Ok(Json(
        queries::list_ooms(state.store.as_ref(), &filter).await?,
    ))
}

/// A filter's value read as its vocabulary: a name the vocabulary does not list is
/// refused (422), never read as `unknown`.
pub(super) fn named<T>(
    field: &str,
    value: Option<&str>,
    names: &[&str],
    parse: fn(&str) -> T,
) -> Result<Option<T>, AppError> {
    match value {
        None => Ok(None),
        Some(text) if names.contains(&text) => Ok(Some(parse(text))),
        Some(_) => Err(AppError::Unprocessable {
            message: format!("{field} must be one of {}", names.join(", ")),
            field: Some(field.into()),
        }),
    }
}

pub(super) async fn get_oom(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OomDetail>, AppError> {
    let id: i64 = id.parse().map_err(|_| AppError::NotFound)?;
    queries::get_oom(
        state.store.as_ref(),
        id,
        state.config.correlation.window_secs,
    )
    .await?
    .map(Json)
    .ok_or(AppError::NotFound)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VmsParams {
    host: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub(super) async fn list_vms(
    State(state): State<AppState>,
    query: Result<Query<VmsParams>, QueryRejection>,
) -> Result<Json<VmList>, AppError> {
    let params = params(query)?;
    let limit = checked_limit(params.limit, queries::VM_PAGE_DEFAULT, queries::VM_PAGE_MAX)?;
    let not_ours = || AppError::Unprocessable {
        message: "cursor is not one this API gave out".into(),
        field: Some("cursor".into()),
    };
    let cursor = match &params.cursor {
        Some(text) => {
            let cursor = VmCursor::parse(text).ok_or_else(not_ours)?;
            // A cursor continues the listing it came from: one of another host's
            // VMs cannot be where this host's listing stopped.
            if params
                .host
                .as_deref()
                .is_some_and(|host| crate::storage::rows::clean(host) != cursor.host)
            {
                return Err(not_ours());
            }
            Some(cursor)
        }
        None => None,
    };
    let filter = VmFilter {
        host: params.host,
        cursor,
        limit,
    };
    Ok(Json(
        queries::list_vms_page(state.store.as_ref(), &filter).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MemoryParams {
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<i64>,
    /// `stored` (default: minutes where still kept, hours before) or `hour`.
    resolution: Option<String>,
    /// `true`: each point lists its virtio-mem devices.
    devices: Option<bool>,
}

/// `GET /api/v1/vms/{host}/{uuid}/memory`: a VM is (host, uuid).
pub(super) async fn vm_memory(
    State(state): State<AppState>,
    Path((host, uuid)): Path<(String, String)>,
    query: Result<Query<MemoryParams>, QueryRejection>,
) -> Result<Json<VmMemory>, AppError> {
    memory(&state, &host, &uuid, params(query)?).await
}

/// `GET /api/v1/vms/{uuid}/memory` (before VMs were (host, uuid)): served while
/// exactly one host reported the uuid; 409 naming the hosts when several did, 404
/// when none did.
pub(super) async fn vm_memory_by_uuid(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    query: Result<Query<MemoryParams>, QueryRejection>,
) -> Result<Json<VmMemory>, AppError> {
    let params = params(query)?;
    let host = the_host_of(&state, &uuid).await?;
    memory(&state, &host, &uuid, params).await
}

/// The one host that reported a VM `uuid`, for the paths that name a VM by uuid alone.
pub(crate) async fn the_host_of(state: &AppState, uuid: &str) -> Result<String, AppError> {
    let hosts = queries::hosts_of_vm(state.store.as_ref(), uuid).await?;
    match hosts.as_slice() {
        [] => Err(AppError::NotFound),
        [host] => Ok(host.clone()),
        several => Err(AppError::Conflict(ambiguous_uuid(uuid, several))),
    }
}

/// What a 409 for a uuid several hosts reported says.
pub(crate) fn ambiguous_uuid(uuid: &str, hosts: &[String]) -> String {
    format!(
        "VM uuid {uuid:?} is known on {} hosts ({}): name the host, /api/v1/vms/{{host}}/{{uuid}}/memory",
        hosts.len(),
        hosts
            .iter()
            .map(|host| format!("{host:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

async fn memory(
    state: &AppState,
    host: &str,
    uuid: &str,
    params: MemoryParams,
) -> Result<Json<VmMemory>, AppError> {
    let since = params
        .since
        .unwrap_or_else(|| crate::now_ms().saturating_sub(DAY_MS));
    let until = params.until.unwrap_or(i64::MAX);
    let resolution = match params.resolution.as_deref() {
        None | Some("stored") => Resolution::Stored,
        Some("hour") => Resolution::Hour,
        Some(_) => {
            return Err(AppError::Unprocessable {
                message: "resolution must be stored or hour".into(),
                field: Some("resolution".into()),
            })
        }
    };
    let mut memory = queries::vm_memory(
        state.store.as_ref(),
        host,
        uuid,
        since,
        until,
        checked_limit(params.limit, 10_000, queries::MEMORY_POINTS_MAX)?,
        resolution,
    )
    .await?;
    if params.devices == Some(true) {
        crate::storage::virtio_mem_reads::attach_devices(
            state.store.as_ref(),
            host,
            uuid,
            &mut memory.points,
            resolution == Resolution::Hour,
        )
        .await?;
    }
    Ok(Json(memory))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PressureParams {
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v1/vms/{host}/{uuid}/pressure`: the VM's pressure episodes active in
/// the range (default the last 24 h), oldest first.
pub(super) async fn vm_pressure(
    State(state): State<AppState>,
    Path((host, uuid)): Path<(String, String)>,
    query: Result<Query<PressureParams>, QueryRejection>,
) -> Result<Json<VmPressure>, AppError> {
    let params = params(query)?;
    let since = params
        .since
        .unwrap_or_else(|| crate::now_ms().saturating_sub(DAY_MS));
    let episodes = episodes::vm_episodes(
        state.store.as_ref(),
        &host,
        &uuid,
        since,
        params.until.unwrap_or(i64::MAX),
        checked_limit(params.limit, 100, EPISODES_MAX)?,
    )
    .await?;
    Ok(Json(VmPressure {
        host,
        uuid,
        episodes,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OpenParams {
    limit: Option<i64>,
}

/// `GET /api/v1/pressure/open`: the open episodes (VMs under pressure now), newest
/// activity first.
pub(super) async fn open_pressure(
    State(state): State<AppState>,
    query: Result<Query<OpenParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let params = params(query)?;
    let items: Vec<EpisodeRecord> = episodes::open_episodes(
        state.store.as_ref(),
        0,
        checked_limit(params.limit, 100, EPISODES_MAX)?,
    )
    .await?;
    Ok(Json(serde_json::json!({ "items": items })))
}

/// `GET /api/v1/vms/{host}/{uuid}/guard`: the VM's guard actions decided in the
/// range (default the last 24 h), newest first.
pub(super) async fn vm_guard(
    State(state): State<AppState>,
    Path((host, uuid)): Path<(String, String)>,
    query: Result<Query<PressureParams>, QueryRejection>,
) -> Result<Json<VmGuard>, AppError> {
    let params = params(query)?;
    let since = params
        .since
        .unwrap_or_else(|| crate::now_ms().saturating_sub(DAY_MS));
    let actions = guard_reads::vm_guard_actions(
        state.store.as_ref(),
        &host,
        &uuid,
        since,
        params.until.unwrap_or(i64::MAX),
        checked_limit(params.limit, 100, GUARD_MAX)?,
    )
    .await?;
    Ok(Json(VmGuard {
        host,
        uuid,
        actions,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GuardParams {
    outcome: Option<String>,
    mode: Option<String>,
    host: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v1/guard`: the fleet's guard actions, newest first, filtered by
/// `outcome`, `mode`, `host` and time.
pub(super) async fn fleet_guard(
    State(state): State<AppState>,
    query: Result<Query<GuardParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let params = params(query)?;
    let limit = checked_limit(params.limit, 100, GUARD_MAX)?;
    let filter = GuardFilter {
        outcome: named(
            "outcome",
            params.outcome.as_deref(),
            GuardOutcome::NAMES,
            GuardOutcome::parse,
        )?,
        mode: named(
            "mode",
            params.mode.as_deref(),
            GuardMode::NAMES,
            GuardMode::parse,
        )?,
        host: params.host,
        since_ms: params.since,
        until_ms: params.until,
    };
    let items: Vec<GuardRecord> =
        guard_reads::guard_actions(state.store.as_ref(), &filter, limit).await?;
    Ok(Json(serde_json::json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CountParams {
    group_by: Option<String>,
    bucket_secs: Option<i64>,
    since: Option<i64>,
    until: Option<i64>,
}

pub(super) async fn oom_counts(
    State(state): State<AppState>,
    query: Result<Query<CountParams>, QueryRejection>,
) -> Result<Json<OomCounts>, AppError> {
    let params = params(query)?;
    let group_by = match params.group_by.as_deref() {
        None => GroupBy::Verdict,
        Some(text) => GroupBy::parse(text).ok_or(AppError::Unprocessable {
            message: "group_by must be host, vm, verdict, report_verdict, kind or host_took".into(),
            field: Some("group_by".into()),
        })?,
    };
    let bucket_secs = params.bucket_secs.unwrap_or(86_400);
    if !(60..=31 * 86_400).contains(&bucket_secs) {
        return Err(AppError::Unprocessable {
            message: "bucket_secs must be 60 to 2678400".into(),
            field: Some("bucket_secs".into()),
        });
    }
    let since = params
        .since
        .unwrap_or_else(|| crate::now_ms().saturating_sub(30 * DAY_MS));
    Ok(Json(
        queries::oom_counts(
            state.store.as_ref(),
            group_by,
            bucket_secs,
            since,
            params.until.unwrap_or(i64::MAX),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RepeatParams {
    since: Option<i64>,
    min_count: Option<i64>,
}

pub(super) async fn repeat_offenders(
    State(state): State<AppState>,
    query: Result<Query<RepeatParams>, QueryRejection>,
) -> Result<Json<RepeatOffenders>, AppError> {
    let params = params(query)?;
    let since = params
        .since
        .unwrap_or_else(|| crate::now_ms().saturating_sub(30 * DAY_MS));
    Ok(Json(
        queries::repeat_offenders(state.store.as_ref(), since, params.min_count.unwrap_or(2))
            .await?,
    ))
}
