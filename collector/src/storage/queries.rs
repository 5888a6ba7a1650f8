//! Every read and maintenance query, written once over the [`Store`] trait so both
//! engines answer alike. Ordering that depends on text collation is done here in
//! Rust (byte order), never in SQL's default collation: PostgreSQL's may differ from
//! SQLite's. The one exception, the keyset of [`list_vms_page`], orders in SQL with
//! byte order spelled out (`COLLATE "C"` on PostgreSQL, SQLite's default BINARY).

use ballast_model::{MinMaxLast, VmConfig};

use crate::records::{
    CorrelationShort, KilledShort, OomCount, OomCounts, OomDetail, OomPage, OomSummary,
    RepeatOffender, RepeatOffenders, RollupPoint, Signals, TokenInfo, VmList, VmMemory, VmName,
    VmRecord,
};
use crate::storage::host_took_sql;
use crate::storage::rows::VmContext;
use crate::storage::sql::{Param, Query, Row};
use crate::storage::{pressure, tiers, virtio_mem};
use crate::storage::{Store, StoreError};

/// Filters and paging of `GET /api/v1/ooms`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OomFilter {
    pub host: Option<String>,
    pub vm: Option<String>,
    /// Correlation verdict.
    pub verdict: Option<ballast_model::CorrelationVerdict>,
    /// `host_took.verdict` (every mechanism; `storage::host_took_sql`).
    pub host_took: Option<ballast_model::HostTookVerdict>,
    pub report_verdict: Option<ballast_model::ReportVerdict>,
    pub kind: Option<ballast_model::OomKind>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Continue after this (time, id), exclusive.
    pub cursor: Option<(i64, i64)>,
    pub limit: i64,
}

/// How OOM counts are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Host,
    Vm,
    Verdict,
    ReportVerdict,
    Kind,
    /// `host_took.verdict` (every mechanism).
    HostTook,
}

impl GroupBy {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "host" => GroupBy::Host,
            "vm" => GroupBy::Vm,
            "verdict" => GroupBy::Verdict,
            "report_verdict" => GroupBy::ReportVerdict,
            "kind" => GroupBy::Kind,
            "host_took" => GroupBy::HostTook,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Host => "host",
            GroupBy::Vm => "vm",
            GroupBy::Verdict => "verdict",
            GroupBy::ReportVerdict => "report_verdict",
            GroupBy::Kind => "kind",
            GroupBy::HostTook => "host_took",
        }
    }

    fn column(self, engine: crate::storage::Engine) -> String {
        match self {
            GroupBy::Host => "host_id".into(),
            // A VM is (host, uuid): the group reads `host/uuid`.
            GroupBy::Vm => "host_id || '/' || vm_uuid".into(),
            GroupBy::Verdict => "corr_verdict".into(),
            GroupBy::ReportVerdict => "report_verdict".into(),
            GroupBy::Kind => "kind".into(),
            GroupBy::HostTook => host_took_sql::verdict(engine),
        }
    }
}

/// Formats a paging cursor.
pub fn cursor_text(time_ms: i64, id: i64) -> String {
    format!("{time_ms}.{id}")
}

/// Reads a paging cursor.
pub fn parse_cursor(text: &str) -> Option<(i64, i64)> {
    let (time, id) = text.split_once('.')?;
    Some((time.parse().ok()?, id.parse().ok()?))
}

const OOM_SUMMARY_COLUMNS: &str =
    "id, host_id, vm_uuid, vm_name, captured_at_ms, kind, killed_pid, \
     killed_comm, killed_anon_rss_kb, report_verdict, corr_verdict, balloon_held_kb, \
     inflated_kb_before, seconds_from_inflation, correlation_json";

const ROLLUP_COLUMNS: &str = "period_start_ms, period_secs, samples, maximum_kib, \
     actual_min, actual_max, actual_last, available_min, available_max, available_last, \
     usable_min, usable_max, usable_last, unused_min, unused_max, unused_last, \
     rss_min, rss_max, rss_last, oom_kills, alloc_stalls, stale, host_total_kib, host_available_kib, \
     pressure_risk, pressure_src_counters, pressure_src_stats, pressure_src_psi, \
     alloc_stalls_per_s_milli, direct_scan_kib_per_s_milli, direct_reclaim_kib_per_s_milli, \
     async_scan_kib_per_s_milli, async_reclaim_kib_per_s_milli, major_faults_per_s_milli, \
     swap_in_kib_per_s_milli, available_slope_kib_per_s_milli, psi_some_avg10_milli, \
     psi_full_avg10_milli, psi_some_total_us, psi_full_total_us, \
     vmem_plugged_min, vmem_plugged_max, vmem_plugged_last, vmem_requested_min, \
     vmem_requested_max, vmem_requested_last, vmem_max_kib, vmem_unconverged_secs";

fn decode_summary(row: &Row) -> OomSummary {
    let id = row.int_or_zero(0);
    let killed_pid = row.int(6);
    let killed_comm = row.text(7);
    OomSummary {
        id,
        host: row.text_or_empty(1),
        vm: VmName {
            uuid: row.text_or_empty(2),
            name: row.text_or_empty(3),
        },
        time_ms: row.int_or_zero(4),
        kind: ballast_model::OomKind::parse(&row.text_or_empty(5)),
        killed: (killed_pid.is_some() || killed_comm.is_some()).then(|| KilledShort {
            pid: killed_pid,
            comm: killed_comm,
            anon_rss_kb: row.int(8),
        }),
        report_verdict: ballast_model::ReportVerdict::parse(&row.text_or_empty(9)),
        correlation: CorrelationShort {
            verdict: ballast_model::CorrelationVerdict::parse(&row.text_or_empty(10)),
            balloon_held_kb: row.int(11),
            inflated_kb_before: row.int(12),
            seconds_from_inflation: row.int(13),
            host_took: crate::records::host_took_of(
                &row.text_or_empty(14),
                ballast_model::CorrelationVerdict::parse(&row.text_or_empty(10)),
                row.kib(11),
            ),
        },
        link: format!("/api/v1/ooms/{id}"),
    }
}

fn mml(row: &Row, first: usize) -> MinMaxLast {
    MinMaxLast {
        min: row.kib(first),
        max: row.kib(first + 1),
        last: row.kib(first + 2),
    }
}

fn decode_rollup(row: &Row) -> RollupPoint {
    let pressure = pressure::decode_rollup(row, 24);
    RollupPoint {
        period_start_ms: row.int_or_zero(0),
        period_secs: row.int_or_zero(1),
        samples: row.int_or_zero(2),
        maximum_kib: row.kib(3),
        actual_kib: mml(row, 4),
        available_kib: mml(row, 7),
        usable_kib: mml(row, 10),
        unused_kib: mml(row, 13),
        rss_kib: mml(row, 16),
        oom_kills: row.kib(19),
        alloc_stalls: row.kib(20),
        stale: row.int_or_zero(21) != 0,
        host_total_kib: row.kib(22),
        host_available_kib: row.kib(23),
        signals: Signals::of(pressure.as_ref()),
        pressure,
        virtio_mem: virtio_mem::decode_sums(row, 24 + pressure::ROLLUP_COLUMNS.len()),
        devices: Vec::new(),
    }
}

/// One page of OOMs, newest first.
pub async fn list_ooms(store: &dyn Store, filter: &OomFilter) -> Result<OomPage, StoreError> {
    let host_took_filter = format!("{} = ?", host_took_sql::verdict(store.engine()));
    let mut conditions: Vec<&str> = Vec::new();
    let mut params = Vec::new();
    for (column, value) in [
        ("host_id = ?", filter.host.as_deref()),
        ("vm_uuid = ?", filter.vm.as_deref()),
        ("corr_verdict = ?", filter.verdict.map(|v| v.as_str())),
        (
            host_took_filter.as_str(),
            filter.host_took.map(|v| v.as_str()),
        ),
        (
            "report_verdict = ?",
            filter.report_verdict.map(|v| v.as_str()),
        ),
        ("kind = ?", filter.kind.map(|k| k.as_str())),
    ] {
        if let Some(value) = value {
            conditions.push(column);
            params.push(Param::text(value));
        }
    }
    if let Some(since) = filter.since_ms {
        conditions.push("captured_at_ms >= ?");
        params.push(Param::int(since));
    }
    if let Some(until) = filter.until_ms {
        conditions.push("captured_at_ms < ?");
        params.push(Param::int(until));
    }
    if let Some((time, id)) = filter.cursor {
        // A row value, so both engines seek the (captured_at_ms, id) index to the
        // cursor instead of filtering every newer row (deep pages cost no more).
        conditions.push("(captured_at_ms, id) < (?, ?)");
        params.extend([Param::int(time), Param::int(id)]);
    }
    let limit = filter.limit.clamp(1, OOM_PAGE_MAX);
    params.push(Param::int(limit + 1));
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {OOM_SUMMARY_COLUMNS} FROM ooms {where_clause} ORDER BY captured_at_ms DESC, id DESC LIMIT ?"
    );
    let rows = store.query(Query::new(sql, params)).await?;
    let mut items: Vec<OomSummary> = rows.iter().map(decode_summary).collect();
    let next_cursor = if items.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        items.pop();
        items.last().map(|last| cursor_text(last.time_ms, last.id))
    } else {
        None
    };
    Ok(OomPage { items, next_cursor })
}

/// One OOM with its report, analysis, correlation and the rollups before it.
pub async fn get_oom(
    store: &dyn Store,
    id: i64,
    window_secs: u64,
) -> Result<Option<OomDetail>, StoreError> {
    let sql = format!("SELECT {OOM_SUMMARY_COLUMNS}, source, event_json FROM ooms WHERE id = ?");
    let rows = store.query(Query::new(sql, vec![Param::int(id)])).await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let summary = decode_summary(row);
    // The event as stored by ingest (`ballast_model::OomEvent`): a row that does not
    // decode is an error, never an empty page.
    let event: ballast_model::OomEvent =
        serde_json::from_str(&row.text_or_empty(16)).map_err(|source| StoreError::Decode {
            what: "ooms.event_json",
            id,
            source,
        })?;
    let correlation_text = row.text_or_empty(14);
    let decode_error = |source| StoreError::Decode {
        what: "ooms.correlation_json",
        id,
        source,
    };
    let mut correlation_detail = serde_json::from_str(&correlation_text).map_err(decode_error)?;
    crate::records::fill_host_took(&mut correlation_detail);
    let window_ms = i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let rollups = rollups_between(
        store,
        &summary.host,
        &summary.vm.uuid,
        summary.time_ms.saturating_sub(window_ms),
        summary.time_ms.saturating_add(1),
        10_000,
    )
    .await?;
    Ok(Some(OomDetail {
        source: row.text_or_empty(15),
        raw_report: event.raw_report,
        raw_truncated: event.raw_truncated,
        flood_suppressed: event.flood_suppressed,
        report: event.report,
        analysis: event.analysis,
        balloon_at_oom: event.balloon_at_oom,
        balloon_history: event.balloon_history,
        host_memory: event.host,
        correlation_detail,
        rollups,
        summary,
    }))
}

/// A VM's (host, uuid) rollups with `since <= period_start < until`, oldest first.
pub async fn rollups_between(
    store: &dyn Store,
    host: &str,
    vm_uuid: &str,
    since_ms: i64,
    until_ms: i64,
    limit: i64,
) -> Result<Vec<RollupPoint>, StoreError> {
    rollups_of_hosts(
        store,
        &[host.to_string()],
        vm_uuid,
        since_ms,
        until_ms,
        limit,
    )
    .await
}

/// `(?, ?)` and its parameters: the correlation verdicts that give the balloon a part
/// in an OOM ([`ballast_model::CorrelationVerdict::is_balloon`]), for `corr_verdict IN`.
pub(crate) fn balloon_verdicts() -> (String, Vec<Param>) {
    let params: Vec<Param> = ballast_model::CorrelationVerdict::KNOWN
        .iter()
        .filter(|verdict| verdict.is_balloon())
        .map(|verdict| Param::text(verdict.as_str()))
        .collect();
    (format!("({})", vec!["?"; params.len()].join(", ")), params)
}

/// `host_id IN (?, ?, ...)` for `n` hosts (at least one).
pub(crate) fn host_in(n: usize) -> String {
    format!("host_id IN ({})", vec!["?"; n.max(1)].join(", "))
}

/// The rollups of uuid `vm_uuid` on any of `hosts` (one cluster's, `crate::clusters`)
/// with `since <= period_start < until`, oldest first.
pub async fn rollups_of_hosts(
    store: &dyn Store,
    hosts: &[String],
    vm_uuid: &str,
    since_ms: i64,
    until_ms: i64,
    limit: i64,
) -> Result<Vec<RollupPoint>, StoreError> {
    let sql = format!(
        "SELECT {ROLLUP_COLUMNS} FROM rollups WHERE {} AND vm_uuid = ? \
         AND period_start_ms >= ? AND period_start_ms < ? ORDER BY period_start_ms, id LIMIT ?",
        host_in(hosts.len())
    );
    let mut params: Vec<Param> = hosts.iter().map(|h| Param::text(h.as_str())).collect();
    params.extend([
        Param::text(vm_uuid),
        Param::int(since_ms),
        Param::int(until_ms),
        Param::int(limit.clamp(1, MEMORY_POINTS_MAX)),
    ]);
    let rows = store.query(Query::new(sql, params)).await?;
    Ok(rows.iter().map(decode_rollup).collect())
}

/// The resolution of a memory series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resolution {
    /// The rollups as stored: minutes within `retention.minute_rollup_hours`, hours
    /// before (the tier follows the range asked).
    #[default]
    Stored,
    /// One point per hour throughout (recent minutes folded on read like the
    /// compaction folds them).
    Hour,
}

/// A VM's (host, uuid) balloon series.
pub async fn vm_memory(
    store: &dyn Store,
    host: &str,
    vm_uuid: &str,
    since_ms: i64,
    until_ms: i64,
    limit: i64,
    resolution: Resolution,
) -> Result<VmMemory, StoreError> {
    let points = match resolution {
        Resolution::Stored => {
            rollups_between(store, host, vm_uuid, since_ms, until_ms, limit).await?
        }
        Resolution::Hour => {
            let stored = rollups_between(
                store,
                host,
                vm_uuid,
                tiers::hour_start(since_ms),
                until_ms,
                100_000,
            )
            .await?;
            let mut hours = tiers::hourly(&stored);
            hours
                .truncate(usize::try_from(limit.clamp(1, MEMORY_POINTS_MAX)).unwrap_or(usize::MAX));
            hours
        }
    };
    Ok(VmMemory {
        host: host.to_string(),
        uuid: vm_uuid.to_string(),
        points,
    })
}

/// What the correlation of a new OOM of this VM (host, uuid) needs from the store:
/// the configuration and balloon history its own host reported, never another
/// host's VM of the same uuid; see [`vm_context_in`] for a host in a cluster.
pub async fn vm_context(
    store: &dyn Store,
    host: &str,
    vm_uuid: &str,
    oom_at_ms: i64,
    window_secs: u64,
) -> Result<VmContext, StoreError> {
    vm_context_in(
        store,
        host,
        &[host.to_string()],
        vm_uuid,
        oom_at_ms,
        window_secs,
    )
    .await
}

/// [`vm_context`] of `host`'s VM `vm_uuid` whose history spans `history_hosts` (its
/// cluster's hosts, `crate::clusters`, `host` among them): the rollups of the uuid
/// on any of them, the configuration `host` reported, else the newest one of the
/// cluster (a VM that just migrated here keeps its past).
pub async fn vm_context_in(
    store: &dyn Store,
    host: &str,
    history_hosts: &[String],
    vm_uuid: &str,
    oom_at_ms: i64,
    window_secs: u64,
) -> Result<VmContext, StoreError> {
    let mut params: Vec<Param> = history_hosts
        .iter()
        .map(|h| Param::text(h.as_str()))
        .collect();
    params.push(Param::text(vm_uuid));
    let rows = store
        .query(Query::new(
            format!(
                "SELECT host_id, config_json, updated_at_ms FROM vms WHERE {} AND vm_uuid = ?",
                host_in(history_hosts.len())
            ),
            params,
        ))
        .await?;
    let own = rows.iter().find(|row| row.text(0).as_deref() == Some(host));
    let newest = rows
        .iter()
        .filter(|row| row.text(1).is_some())
        .max_by_key(|row| row.int_or_zero(2));
    let config = own
        .filter(|row| row.text(1).is_some())
        .or(newest)
        .and_then(|row| row.text(1))
        .and_then(|text| serde_json::from_str::<VmConfig>(&text).ok());
    let window_ms = i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let rollups = rollups_of_hosts(
        store,
        history_hosts,
        vm_uuid,
        oom_at_ms.saturating_sub(window_ms),
        oom_at_ms.saturating_add(1),
        2_000,
    )
    .await?;
    Ok(VmContext { config, rollups })
}

/// Largest page of `GET /api/v1/ooms`.
pub const OOM_PAGE_MAX: i64 = 1000;

/// Most points one `GET /api/v1/vms/{uuid}/memory` returns.
pub const MEMORY_POINTS_MAX: i64 = 100_000;

/// Page size of `GET /api/v1/vms` when none is asked for.
pub const VM_PAGE_DEFAULT: i64 = 1000;
/// Largest page of `GET /api/v1/vms` (and the page [`list_vms`] walks by).
pub const VM_PAGE_MAX: i64 = 10_000;
/// Longest cursor [`VmCursor::parse`] reads: three base64 fields of names far longer
/// than the ingest limits let into the store.
const VM_CURSOR_MAX_CHARS: usize = 8192;

/// Where a VM page continues: after this (host, name, uuid), exclusive, in byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmCursor {
    pub host: String,
    pub name: String,
    pub uuid: String,
}

impl VmCursor {
    /// Where a listing that ended with `vm` continues.
    pub fn after(vm: &VmRecord) -> Self {
        VmCursor {
            host: vm.host.clone(),
            name: vm.name.clone(),
            uuid: vm.uuid.clone(),
        }
    }

    /// The cursor as handed out: each field URL-safe base64 (no padding), joined by
    /// `.`, so any text (the separator, quotes, non-ASCII) round-trips exactly.
    pub fn text(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.{}",
            b64.encode(&self.host),
            b64.encode(&self.name),
            b64.encode(&self.uuid)
        )
    }

    /// Reads a cursor [`VmCursor::text`] made; None for anything else (including
    /// NUL, which the store never holds: both engines store it as U+FFFD).
    pub fn parse(text: &str) -> Option<Self> {
        use base64::Engine as _;
        if text.len() > VM_CURSOR_MAX_CHARS {
            return None;
        }
        let field = |part: &str| -> Option<String> {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()?;
            String::from_utf8(bytes).ok().filter(|s| !s.contains('\0'))
        };
        let mut parts = text.split('.');
        let cursor = VmCursor {
            host: field(parts.next()?)?,
            name: field(parts.next()?)?,
            uuid: field(parts.next()?)?,
        };
        parts.next().is_none().then_some(cursor)
    }
}

/// Filter and paging of `GET /api/v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFilter {
    pub host: Option<String>,
    pub cursor: Option<VmCursor>,
    /// Clamped to 1..=[`VM_PAGE_MAX`].
    pub limit: i64,
}

/// One page of known VMs (optionally of one host), ordered by host, name, uuid in
/// byte order, each with its OOM count.
///
/// Order and seek are in SQL (a row-value keyset over the `vms_keyset` index) in
/// byte order on both engines: SQLite's default BINARY collation, PostgreSQL's
/// `COLLATE "C"` (its default collation may order text differently). The OOM counts
/// are taken for the page's rows only, after the LIMIT.
pub async fn list_vms_page(store: &dyn Store, filter: &VmFilter) -> Result<VmList, StoreError> {
    let bytewise = if store.engine() == crate::storage::Engine::Postgres {
        " COLLATE \"C\""
    } else {
        ""
    };
    let key = format!("v.host_id{bytewise}, v.vm_name{bytewise}, v.vm_uuid{bytewise}");
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(host) = &filter.host {
        conditions.push(format!("v.host_id{bytewise} = ?"));
        params.push(Param::text(crate::storage::rows::clean(host)));
    }
    if let Some(cursor) = &filter.cursor {
        conditions.push(format!("({key}) > (?, ?, ?)"));
        params.extend([
            Param::text(cursor.host.as_str()),
            Param::text(cursor.name.as_str()),
            Param::text(cursor.uuid.as_str()),
        ]);
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let limit = filter.limit.clamp(1, VM_PAGE_MAX);
    params.push(Param::int(limit + 1));
    let sql = format!(
        "SELECT p.vm_uuid, p.vm_name, p.host_id, p.state, p.config_json, p.findings_json, \
         p.updated_at_ms, (SELECT COUNT(*) FROM ooms o WHERE o.host_id = p.host_id AND o.vm_uuid = p.vm_uuid) FROM \
         (SELECT v.vm_uuid, v.vm_name, v.host_id, v.state, v.config_json, v.findings_json, \
         v.updated_at_ms FROM vms v {where_clause} ORDER BY {key} LIMIT ?) p \
         ORDER BY p.host_id{bytewise}, p.vm_name{bytewise}, p.vm_uuid{bytewise}"
    );
    let rows = store.query(Query::new(sql, params)).await?;
    let mut items: Vec<VmRecord> = rows
        .iter()
        .map(|row| VmRecord {
            uuid: row.text_or_empty(0),
            name: row.text_or_empty(1),
            host: row.text_or_empty(2),
            state: ballast_model::VmState::parse(&row.text_or_empty(3)),
            config: row.json(4),
            findings: row.json(5),
            updated_ms: row.int_or_zero(6),
            oom_count: row.int_or_zero(7),
        })
        .collect();
    let next_cursor = if items.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        items.pop();
        items.last().map(|last| VmCursor::after(last).text())
    } else {
        None
    };
    Ok(VmList { items, next_cursor })
}

/// Every known VM (optionally of one host), ordered by host, name, uuid: the pages
/// of [`list_vms_page`] walked to the end (for the dashboard's host page and tools
/// that need the whole list; the API hands out pages).
pub async fn list_vms(store: &dyn Store, host: Option<&str>) -> Result<VmList, StoreError> {
    let mut filter = VmFilter {
        host: host.map(str::to_string),
        cursor: None,
        limit: VM_PAGE_MAX,
    };
    let mut items = Vec::new();
    loop {
        let page = list_vms_page(store, &filter).await?;
        let after = page.items.last().map(VmCursor::after);
        items.extend(page.items);
        match after {
            Some(cursor) if page.next_cursor.is_some() => filter.cursor = Some(cursor),
            _ => break,
        }
    }
    Ok(VmList {
        items,
        next_cursor: None,
    })
}

/// OOMs per time bucket and group, for dashboards.
pub async fn oom_counts(
    store: &dyn Store,
    group_by: GroupBy,
    bucket_secs: i64,
    since_ms: i64,
    until_ms: i64,
) -> Result<OomCounts, StoreError> {
    let bucket_ms = bucket_secs.max(1).saturating_mul(1000);
    let column = group_by.column(store.engine());
    let sql = format!(
        "SELECT (captured_at_ms / ?) * ? AS bucket, {column}, COUNT(*) FROM ooms \
         WHERE captured_at_ms >= ? AND captured_at_ms < ? GROUP BY bucket, {column}"
    );
    let rows = store
        .query(Query::new(
            sql,
            vec![
                Param::int(bucket_ms),
                Param::int(bucket_ms),
                Param::int(since_ms),
                Param::int(until_ms),
            ],
        ))
        .await?;
    let mut items: Vec<OomCount> = rows
        .iter()
        .map(|row| OomCount {
            bucket_start_ms: row.int_or_zero(0),
            group: row.text_or_empty(1),
            count: row.int_or_zero(2),
        })
        .collect();
    items.sort_by(|a, b| (a.bucket_start_ms, &a.group).cmp(&(b.bucket_start_ms, &b.group)));
    Ok(OomCounts {
        group_by: group_by.as_str().to_string(),
        bucket_secs,
        items,
    })
}

/// VMs with at least `min_count` balloon or balloon-contributed OOMs since `since_ms`.
pub async fn repeat_offenders(
    store: &dyn Store,
    since_ms: i64,
    min_count: i64,
) -> Result<RepeatOffenders, StoreError> {
    let (balloon, mut params) = balloon_verdicts();
    let sql = format!(
        "SELECT o.vm_uuid, v.vm_name, o.host_id, o.n, o.first_ms, o.last_ms FROM \
         (SELECT host_id, vm_uuid, COUNT(*) AS n, MIN(captured_at_ms) AS first_ms, \
          MAX(captured_at_ms) AS last_ms \
          FROM ooms WHERE corr_verdict IN {balloon} AND captured_at_ms >= ? \
          GROUP BY host_id, vm_uuid HAVING COUNT(*) >= ?) o \
         LEFT JOIN vms v ON v.host_id = o.host_id AND v.vm_uuid = o.vm_uuid"
    );
    params.extend([Param::int(since_ms), Param::int(min_count.max(1))]);
    let rows = store.query(Query::new(sql, params)).await?;
    let mut items: Vec<RepeatOffender> = rows
        .iter()
        .map(|row| RepeatOffender {
            vm: VmName {
                uuid: row.text_or_empty(0),
                name: row.text_or_empty(1),
            },
            host: row.text_or_empty(2),
            count: row.int_or_zero(3),
            first_ms: row.int_or_zero(4),
            last_ms: row.int_or_zero(5),
        })
        .collect();
    items.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.vm.uuid.cmp(&b.vm.uuid))
            .then_with(|| a.host.cmp(&b.host))
    });
    Ok(RepeatOffenders { items })
}

/// Most hosts [`hosts_of_vm`] reads (a uuid on more hosts than this is ambiguous anyway).
pub const HOSTS_OF_VM_MAX: i64 = 100;

/// The hosts that reported a VM with this uuid, in byte order: the old
/// `/api/v1/vms/{uuid}/...` and `/vms/{uuid}` paths serve the VM when there is
/// exactly one (a VM is (host, uuid); the same uuid may run on several hosts).
pub async fn hosts_of_vm(store: &dyn Store, vm_uuid: &str) -> Result<Vec<String>, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT host_id FROM vms WHERE vm_uuid = ? LIMIT ?",
            vec![Param::text(vm_uuid), Param::int(HOSTS_OF_VM_MAX)],
        ))
        .await?;
    let mut hosts: Vec<String> = rows.iter().map(|row| row.text_or_empty(0)).collect();
    hosts.sort();
    Ok(hosts)
}

/// The host a token hash belongs to.
pub async fn host_for_token_hash(
    store: &dyn Store,
    token_sha256: &str,
) -> Result<Option<(String, String)>, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT host_id, token_sha256 FROM tokens WHERE token_sha256 = ?",
            vec![Param::text(token_sha256)],
        ))
        .await?;
    Ok(rows
        .first()
        .map(|row| (row.text_or_empty(0), row.text_or_empty(1))))
}

/// Every (host, token hash) pair: the table [`crate::token_table`] keeps in memory.
pub async fn all_token_hashes(store: &dyn Store) -> Result<Vec<(String, String)>, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT host_id, token_sha256 FROM tokens",
            Vec::new(),
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.text_or_empty(0), row.text_or_empty(1)))
        .collect())
}

/// Stores a host's token hash; with `replace`, an existing token is rotated.
pub async fn put_token(
    store: &dyn Store,
    host: &str,
    token_sha256: &str,
    now_ms: i64,
    replace: bool,
) -> Result<(), StoreError> {
    let sql = if replace {
        "INSERT INTO tokens (host_id, token_sha256, created_at_ms) VALUES (?, ?, ?) \
         ON CONFLICT (host_id) DO UPDATE SET token_sha256 = excluded.token_sha256, \
         created_at_ms = excluded.created_at_ms"
    } else {
        "INSERT INTO tokens (host_id, token_sha256, created_at_ms) VALUES (?, ?, ?) \
         ON CONFLICT (host_id) DO NOTHING"
    };
    let changed = store
        .execute(Query::new(
            sql,
            vec![
                Param::text(host),
                Param::text(token_sha256),
                Param::int(now_ms),
            ],
        ))
        .await?;
    if changed == 0 {
        return Err(StoreError::TokenExists(host.to_string()));
    }
    Ok(())
}

/// Removes a host's token; false when it had none.
pub async fn revoke_token(store: &dyn Store, host: &str) -> Result<bool, StoreError> {
    Ok(store
        .execute(Query::new(
            "DELETE FROM tokens WHERE host_id = ?",
            vec![Param::text(host)],
        ))
        .await?
        > 0)
}

/// Hosts with a token, by name.
pub async fn list_tokens(store: &dyn Store) -> Result<Vec<TokenInfo>, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT host_id, created_at_ms FROM tokens",
            Vec::new(),
        ))
        .await?;
    let mut tokens: Vec<TokenInfo> = rows
        .iter()
        .map(|row| TokenInfo {
            host: row.text_or_empty(0),
            created_ms: row.int_or_zero(1),
        })
        .collect();
    tokens.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(tokens)
}

/// What retention deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    Rollups,
    Events,
    Ooms,
    /// Pressure episodes, by their last phase.
    Episodes,
    /// Guard actions, by when they were decided.
    Guard,
    /// virtio-mem devices of rollups, by their period (with the rollups).
    VirtioMemRollups,
    /// virtio-mem resize events, by when they were seen (with the small events).
    MemoryDevices,
}

/// Deletes at most `batch_rows` expired rows (one short statement); returns how many.
pub async fn delete_expired(
    store: &dyn Store,
    what: Expiring,
    before_ms: i64,
    batch_rows: u32,
) -> Result<u64, StoreError> {
    let (table, column) = match what {
        Expiring::Rollups => ("rollups", "period_start_ms"),
        Expiring::Events => ("events", "captured_at_ms"),
        Expiring::Ooms => ("ooms", "captured_at_ms"),
        Expiring::Episodes => ("pressure_episodes", "last_at_ms"),
        Expiring::Guard => ("guard_actions", "at_ms"),
        Expiring::VirtioMemRollups => ("virtio_mem_rollups", "period_start_ms"),
        Expiring::MemoryDevices => ("memory_device_events", "at_ms"),
    };
    let sql = format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {column} < ? LIMIT ?)"
    );
    store
        .execute(Query::new(
            sql,
            vec![Param::int(before_ms), Param::int(i64::from(batch_rows))],
        ))
        .await
}
