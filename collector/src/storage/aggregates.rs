//! The dashboard's reads: aggregates the JSON API does not need (top VMs and
//! hosts, host pressure, downsampled series, one VM). Written once over
//! `Store::query` for both engines; every query is bounded by an indexed time
//! range or key and a LIMIT, and aggregates in the database, so page cost does not
//! grow with the fleet's history.

use ballast_model::VmConfig;

use crate::records::VmRecord;
use crate::storage::queries::balloon_verdicts;
use crate::storage::{Param, Query, Row, Store, StoreError};

/// A VM or host with its OOM counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Top {
    /// The VM uuid or the host.
    pub key: String,
    pub name: String,
    pub host: String,
    pub ooms: i64,
    pub balloon_ooms: i64,
}

/// A host's recent memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPressure {
    pub host: String,
    pub total_kib: u64,
    pub available_min_kib: u64,
    pub newest_ms: i64,
    pub vms: i64,
}

impl HostPressure {
    /// Percent of host memory in use at the worst moment.
    pub fn used_pct(&self) -> f64 {
        if self.total_kib == 0 {
            return 0.0;
        }
        self.total_kib.saturating_sub(self.available_min_kib) as f64 * 100.0 / self.total_kib as f64
    }
}

/// One downsampled point of a VM's memory (worst value in the bucket).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeriesPoint {
    pub at_ms: i64,
    pub maximum_kib: Option<u64>,
    /// Lowest balloon actual.
    pub actual_kib: Option<u64>,
    /// Lowest guest MemTotal.
    pub memtotal_kib: Option<u64>,
    /// Lowest guest MemAvailable.
    pub usable_kib: Option<u64>,
    pub host_total_kib: Option<u64>,
    pub host_available_kib: Option<u64>,
    /// Lowest virtio-mem plugged (summed over the VM's devices); None: no device.
    pub plugged_kib: Option<u64>,
    /// Lowest virtio-mem request (summed over the VM's devices).
    pub requested_kib: Option<u64>,
    /// The devices' largest maximum size (summed over the VM's devices).
    pub vmem_max_kib: Option<u64>,
}

/// The VMs with the most OOMs since `since_ms`.
pub async fn top_vms(store: &dyn Store, since_ms: i64, limit: i64) -> Result<Vec<Top>, StoreError> {
    let (balloon, params) = balloon_verdicts();
    let sql = format!(
        "SELECT vm_uuid, MAX(vm_name), host_id, COUNT(*), \
         SUM(CASE WHEN corr_verdict IN {balloon} THEN 1 ELSE 0 END) \
         FROM ooms WHERE captured_at_ms >= ? GROUP BY host_id, vm_uuid \
         ORDER BY COUNT(*) DESC LIMIT ?"
    );
    top(store, sql, params, since_ms, limit).await
}

/// The hosts with the most OOMs since `since_ms`.
pub async fn top_hosts(
    store: &dyn Store,
    since_ms: i64,
    limit: i64,
) -> Result<Vec<Top>, StoreError> {
    let (balloon, params) = balloon_verdicts();
    let sql = format!(
        "SELECT host_id, host_id, host_id, COUNT(*), \
         SUM(CASE WHEN corr_verdict IN {balloon} THEN 1 ELSE 0 END) \
         FROM ooms WHERE captured_at_ms >= ? GROUP BY host_id ORDER BY COUNT(*) DESC LIMIT ?"
    );
    top(store, sql, params, since_ms, limit).await
}

/// `sql`'s parameters: the balloon verdicts' (`params`), then since and limit.
async fn top(
    store: &dyn Store,
    sql: String,
    mut params: Vec<Param>,
    since_ms: i64,
    limit: i64,
) -> Result<Vec<Top>, StoreError> {
    params.extend([Param::int(since_ms), Param::int(limit.clamp(1, 100))]);
    let rows = store.query(Query::new(sql, params)).await?;
    let mut items: Vec<Top> = rows
        .iter()
        .map(|row| Top {
            key: row.text_or_empty(0),
            name: row.text_or_empty(1),
            host: row.text_or_empty(2),
            ooms: row.int_or_zero(3),
            balloon_ooms: row.int_or_zero(4),
        })
        .collect();
    items.sort_by(|a, b| {
        b.ooms
            .cmp(&a.ooms)
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| a.host.cmp(&b.host))
    });
    Ok(items)
}

/// Every host's memory over the rollups since `since_ms` (worst availability), most used first.
pub async fn host_pressure(
    store: &dyn Store,
    since_ms: i64,
) -> Result<Vec<HostPressure>, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT host_id, MAX(host_total_kib), MIN(host_available_kib), MAX(period_start_ms), \
             COUNT(DISTINCT vm_uuid) FROM rollups WHERE period_start_ms >= ? \
             AND host_total_kib IS NOT NULL AND host_available_kib IS NOT NULL GROUP BY host_id",
            vec![Param::int(since_ms)],
        ))
        .await?;
    let mut items: Vec<HostPressure> = rows
        .iter()
        .map(|row| HostPressure {
            host: row.text_or_empty(0),
            total_kib: row.kib(1).unwrap_or(0),
            available_min_kib: row.kib(2).unwrap_or(0),
            newest_ms: row.int_or_zero(3),
            vms: row.int_or_zero(4),
        })
        .collect();
    items.sort_by(|a, b| {
        b.used_pct()
            .total_cmp(&a.used_pct())
            .then_with(|| a.host.cmp(&b.host))
    });
    Ok(items)
}

/// One VM (host, uuid) from the inventory (or first seen in an OOM).
pub async fn vm(store: &dyn Store, host: &str, uuid: &str) -> Result<Option<VmRecord>, StoreError> {
    let rows = store
        .query(Query::new(
            "SELECT vm_uuid, vm_name, host_id, state, config_json, findings_json, updated_at_ms \
             FROM vms WHERE host_id = ? AND vm_uuid = ?",
            vec![Param::text(host), Param::text(uuid)],
        ))
        .await?;
    Ok(rows.first().map(|row| VmRecord {
        uuid: row.text_or_empty(0),
        name: row.text_or_empty(1),
        host: row.text_or_empty(2),
        state: ballast_model::VmState::parse(&row.text_or_empty(3)),
        config: row.json(4),
        findings: row.json(5),
        updated_ms: row.int_or_zero(6),
        oom_count: 0,
    }))
}

/// The VM's configuration, when an inventory named it.
pub fn vm_config(record: &VmRecord) -> Option<VmConfig> {
    serde_json::from_value(record.config.clone()).ok()
}

/// The memory of uuid `uuid` on any of `hosts` (one VM: a host, or the hosts of its
/// cluster, `crate::clusters`) in at most ~`buckets` points over `[since, until)`.
pub async fn vm_series(
    store: &dyn Store,
    hosts: &[String],
    uuid: &str,
    since_ms: i64,
    until_ms: i64,
    buckets: i64,
) -> Result<Vec<SeriesPoint>, StoreError> {
    let mut keys: Vec<&str> = hosts.iter().map(String::as_str).collect();
    keys.push(uuid);
    let rows = bucketed_rollups(
        store,
        format!(
            "SELECT (period_start_ms / ?) * ? AS b, MAX(maximum_kib), MIN(actual_min), \
             MIN(available_min), MIN(usable_min), MAX(host_total_kib), MIN(host_available_kib), \
             MIN(vmem_plugged_min), MIN(vmem_requested_min), MAX(vmem_max_kib) \
             FROM rollups WHERE {} AND vm_uuid = ? AND period_start_ms >= ? \
             AND period_start_ms < ? GROUP BY b ORDER BY b LIMIT 5000",
            crate::storage::queries::host_in(hosts.len())
        ),
        &keys,
        since_ms,
        until_ms,
        buckets,
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| SeriesPoint {
            at_ms: row.int_or_zero(0),
            maximum_kib: row.kib(1),
            actual_kib: row.kib(2),
            memtotal_kib: row.kib(3),
            usable_kib: row.kib(4),
            host_total_kib: row.kib(5),
            host_available_kib: row.kib(6),
            plugged_kib: row.kib(7),
            requested_kib: row.kib(8),
            vmem_max_kib: row.kib(9),
        })
        .collect())
}

/// A host's memory in at most ~`buckets` points (from its VMs' rollups).
pub async fn host_series(
    store: &dyn Store,
    host: &str,
    since_ms: i64,
    until_ms: i64,
    buckets: i64,
) -> Result<Vec<SeriesPoint>, StoreError> {
    let rows = bucketed_rollups(
        store,
        "SELECT (period_start_ms / ?) * ? AS b, MAX(host_total_kib), MIN(host_available_kib) \
         FROM rollups WHERE host_id = ? AND period_start_ms >= ? AND period_start_ms < ? \
         AND host_total_kib IS NOT NULL GROUP BY b ORDER BY b LIMIT 5000"
            .to_string(),
        &[host],
        since_ms,
        until_ms,
        buckets,
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| SeriesPoint {
            at_ms: row.int_or_zero(0),
            host_total_kib: row.kib(1),
            host_available_kib: row.kib(2),
            ..SeriesPoint::default()
        })
        .collect())
}

/// Runs a downsampling query over the rollups. `sql` takes, in order: the bucket
/// width twice (`(period_start_ms / ?) * ?`), the keys it selects on (a VM's host
/// and uuid, or a host), then `since_ms` and `until_ms`. Buckets are at least a minute wide
/// (the rollup period) and give at most ~`buckets` points over the window.
async fn bucketed_rollups(
    store: &dyn Store,
    sql: String,
    keys: &[&str],
    since_ms: i64,
    until_ms: i64,
    buckets: i64,
) -> Result<Vec<Row>, StoreError> {
    let bucket_ms = ((until_ms - since_ms) / buckets.max(1)).max(60_000);
    let mut params = vec![Param::int(bucket_ms), Param::int(bucket_ms)];
    params.extend(keys.iter().map(|key| Param::text(*key)));
    params.extend([Param::int(since_ms), Param::int(until_ms)]);
    store.query(Query::new(sql, params)).await
}
