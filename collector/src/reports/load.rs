//! Gathers a balloon-policy report's facts from the store: the only part of
//! `reports` that does I/O, and only through `Store::query`, with the SQL of
//! `storage::report_sql` (written once for both engines). Aggregation happens in the
//! database (histogram bins, sums, maxima per VM), so the rows read back are per VM,
//! not per rollup; only the near-miss periods, OOMs and the replay's Proxmox series
//! are read row by row, each with a hard row cap.

use std::collections::{BTreeMap, HashMap};

use ballast_model::{
    CorrelationVerdict, GuardOutcome, NearMissKind, OomKind, ReportKind, VmConfig,
};

use crate::correlation::outcome::Correlation;
use crate::reports::autoballoon::{HostPoint, ReplayPoint};
use crate::reports::balloon_policy::{
    GuardOverride, HostFacts, NearMissFact, OomFact, Platform, PolicyInput, PolicySettings,
    VmFacts, WorkingSetHistogram,
};
use crate::reports::elastic_policy::ElasticOomFact;
use crate::reports::starvation::EpisodeFact;
use crate::storage::guard_reads::{self, GuardFilter, GUARD_MAX};
use crate::storage::{episodes, report_sql, Param, Query, Store, StoreError};

/// Working-set histogram bins (KiB).
pub const BIN_KIB: u64 = 16 * 1024;
/// Row cap of each row-by-row read.
const ROW_CAP: i64 = 200_000;

/// Reads everything [`crate::reports::balloon_policy::build`] needs for `[since, until)`.
pub async fn load(
    store: &dyn Store,
    since_ms: i64,
    until_ms: i64,
    settings: &PolicySettings,
) -> Result<PolicyInput, StoreError> {
    let window = || vec![Param::int(since_ms), Param::int(until_ms)];
    // A VM is (host, uuid): the same uuid on two hosts is two VMs.
    let mut vms: BTreeMap<(String, String), VmFacts> = BTreeMap::new();
    let platforms = platforms(store).await?;
    let new_vm = |uuid: &str, name: String, host: String| VmFacts {
        uuid: uuid.to_string(),
        platform: platforms.get(&host).copied().unwrap_or(Platform::Unknown),
        name,
        host,
        config: None,
        findings: Vec::new(),
        working_set: WorkingSetHistogram {
            bin_kib: BIN_KIB,
            ..WorkingSetHistogram::default()
        },
        held_periods: 0,
        held_sum_kib: 0,
        maximum_kib: None,
        ooms: Vec::new(),
        near_misses: Vec::new(),
        replay_series: Vec::new(),
        episodes: Vec::new(),
        guard_overridden: Vec::new(),
    };

    for row in store
        .query(Query::new(report_sql::POLICY_VMS, Vec::new()))
        .await?
    {
        let uuid = row.text_or_empty(0);
        let host = row.text_or_empty(2);
        let mut facts = new_vm(&uuid, row.text_or_empty(1), host.clone());
        facts.config = row
            .text(3)
            .and_then(|text| serde_json::from_str::<VmConfig>(&text).ok());
        facts.findings = row
            .text(4)
            .and_then(|text| serde_json::from_str::<Vec<String>>(&text).ok())
            .unwrap_or_default();
        vms.insert((host, uuid), facts);
    }

    // Counts are in minutes: an hourly rollup (the compacted tier, storage::tiers)
    // weighs its 60 minutes, so a 30-day window is not dominated by the minute tier.
    let aggregates = report_sql::POLICY_AGGREGATES;
    for row in store.query(Query::new(aggregates, window())).await? {
        let uuid = row.text_or_empty(0);
        let host = row.text_or_empty(2);
        let facts = vms
            .entry((host.clone(), uuid.clone()))
            .or_insert_with(|| new_vm(&uuid, row.text_or_empty(1), host));
        facts.working_set.max_kib = row.kib(3);
        facts.held_periods = row.kib(4).unwrap_or(0);
        facts.held_sum_kib = row.kib(5).unwrap_or(0);
        facts.maximum_kib = row.kib(6);
    }

    let histogram = report_sql::POLICY_HISTOGRAM;
    let mut params = vec![Param::int(i64::try_from(BIN_KIB).unwrap_or(16_384))];
    params.extend(window());
    for row in store.query(Query::new(histogram, params)).await? {
        if let (Some(facts), Some(bin), Some(count)) =
            (vms.get_mut(&vm_key(&row, 0)), row.kib(2), row.kib(3))
        {
            facts.working_set.bins.push((bin, count));
        }
    }

    let mut params = window();
    params.push(Param::int(ROW_CAP));
    for row in store
        .query(Query::new(report_sql::POLICY_OOMS, params))
        .await?
    {
        if let Some(facts) = vms.get_mut(&vm_key(&row, 1)) {
            let id = row.int_or_zero(0);
            let verdict = CorrelationVerdict::parse(&row.text_or_empty(4));
            // A stored correlation that does not decode fails the report, naming the OOM.
            let correlation: Correlation =
                serde_json::from_str(&row.text_or_empty(8)).map_err(|source| {
                    StoreError::Decode {
                        what: "ooms.correlation_json",
                        id,
                        source,
                    }
                })?;
            let demand_kib = oom_demand(
                verdict,
                OomKind::parse(&row.text_or_empty(6)),
                ReportKind::parse(&row.text_or_empty(7)),
                &correlation,
            );
            facts.ooms.push(OomFact {
                id,
                time_ms: row.int_or_zero(3),
                verdict,
                balloon_held_kb: row.kib(5),
                demand_kib,
            });
        }
    }

    let mut params = window();
    params.extend([
        Param::kib(Some(settings.held_noise_kib)),
        Param::kib(Some(settings.near_miss_pct)),
        Param::int(ROW_CAP),
    ]);
    for row in store
        .query(Query::new(report_sql::POLICY_HELD_ROLLUPS, params))
        .await?
    {
        if let Some(facts) = vms.get_mut(&vm_key(&row, 0)) {
            facts.near_misses.push(NearMissFact {
                time_ms: row.int_or_zero(2),
                kind: NearMissKind::UsableLow,
                usable_kib: row.kib(3),
                held_kib: row.kib(4),
            });
        }
    }

    let mut params = window();
    params.push(Param::int(ROW_CAP));
    for row in store
        .query(Query::new(report_sql::POLICY_NEAR_MISS_EVENTS, params))
        .await?
    {
        let body = row.json(3);
        if let Some(facts) = vms.get_mut(&vm_key(&row, 0)) {
            let held = match (
                facts.maximum_kib,
                body.get("actual_kib").and_then(|v| v.as_u64()),
            ) {
                (Some(maximum), Some(actual)) => Some(maximum.saturating_sub(actual)),
                _ => None,
            };
            facts.near_misses.push(NearMissFact {
                time_ms: row.int_or_zero(2),
                kind: NearMissKind::parse(
                    body.get("kind")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default(),
                ),
                usable_kib: body.get("usable_kib").and_then(|v| v.as_u64()),
                held_kib: held,
            });
        }
    }

    for episode in episodes::episodes_between(store, since_ms, until_ms, ROW_CAP).await? {
        if let Some(facts) = vms.get_mut(&(episode.host.clone(), episode.uuid.clone())) {
            facts.episodes.push(EpisodeFact {
                started_at_ms: episode.started_at_ms,
                last_at_ms: episode.last_at_ms,
                ended_at_ms: episode.ended_at_ms,
                at_balloon_floor: episode.at_balloon_floor,
                balloon_floor_kib: episode.balloon_floor_kib,
                deficit_kib: episode.deficit_kib,
                peak_alloc_stalls_per_s: episode.peak_alloc_stalls_per_s,
                peak_psi_some_avg10: episode.peak_psi_some_avg10,
                peak_psi_full_avg10: episode.peak_psi_full_avg10,
            });
        }
    }

    let overridden = GuardFilter {
        outcome: Some(GuardOutcome::OverriddenByHost),
        since_ms: Some(since_ms),
        until_ms: Some(until_ms),
        ..GuardFilter::default()
    };
    for action in guard_reads::guard_actions(store, &overridden, GUARD_MAX).await? {
        if let Some(facts) = vms.get_mut(&(action.host.clone(), action.uuid.clone())) {
            facts.guard_overridden.push(GuardOverride {
                at_ms: action.at_ms,
                target_kib: action.target_kib,
                floor_before_kib: action.floor_before_kib,
                floor_after_kib: action.floor_after_kib,
            });
        }
    }

    let mut hosts = Vec::new();
    let proxmox_hosts: Vec<String> = platforms
        .iter()
        .filter(|(_, platform)| **platform == Platform::Proxmox)
        .map(|(host, _)| host.clone())
        .collect();
    for host in proxmox_hosts {
        let mut params = vec![Param::text(host.as_str())];
        params.extend(window());
        params.push(Param::int(ROW_CAP));
        let series = store
            .query(Query::new(report_sql::POLICY_HOST_SERIES, params))
            .await?
            .iter()
            .filter_map(|row| {
                Some(HostPoint {
                    at_ms: row.int(0)?,
                    total_kib: row.kib(1)?,
                    available_kib: row.kib(2)?,
                })
            })
            .collect::<Vec<_>>();
        if series.is_empty() {
            continue;
        }
        for facts in vms.values_mut().filter(|vm| vm.host == host) {
            let mut params = vec![
                Param::text(facts.host.as_str()),
                Param::text(facts.uuid.as_str()),
            ];
            params.extend(window());
            params.push(Param::int(ROW_CAP));
            facts.replay_series = store
                .query(Query::new(report_sql::POLICY_REPLAY_SERIES, params))
                .await?
                .iter()
                .filter_map(|row| {
                    Some(ReplayPoint {
                        at_ms: row.int(0)?,
                        period_secs: row.int_or_zero(1),
                        actual_kib: row.kib(2)?,
                        free_kib: row.kib(3),
                    })
                })
                .collect();
        }
        hosts.push(HostFacts { host, series });
    }

    Ok(PolicyInput {
        since_ms,
        until_ms,
        vms: vms.into_values().collect(),
        hosts,
    })
}

/// The guest size an OOM needed, from its stored correlation (balloon_policy rule 2):
/// for a balloon OOM its size at the OOM (the host's actual, else maximum - held) plus
/// what it lacked; for any guest OOM at least the memory in use its report shows plus
/// that. None for a memcg limit or a host-side kill (no guest size decides those): the
/// correlation's `not_preventable` says so for every kind (a memcg limit answered by
/// `compulsory panic_on_oom` is kind `panic`); `report_kind` covers rows stored before it.
fn oom_demand(
    verdict: CorrelationVerdict,
    kind: OomKind,
    report_kind: ReportKind,
    correlation: &Correlation,
) -> Option<u64> {
    if kind != OomKind::Guest
        || report_kind == ReportKind::Memcg
        || correlation.not_preventable.is_some()
    {
        return None;
    }
    let shortfall = correlation.needed_kb.unwrap_or(0);
    let size = correlation.actual_kib.or_else(|| {
        Some(
            correlation
                .maximum_kib?
                .saturating_sub(correlation.balloon_held_kb?),
        )
    });
    let in_use = correlation
        .in_use_kb
        .map(|used| used.saturating_add(shortfall));
    let at_size = verdict
        .is_balloon()
        .then(|| size.map(|size| size.saturating_add(shortfall)))
        .flatten();
    at_size.into_iter().chain(in_use).max()
}

/// The (host, uuid) of a VM in `row`'s columns `first` (host) and `first + 1` (uuid).
fn vm_key(row: &crate::storage::Row, first: usize) -> (String, String) {
    (row.text_or_empty(first), row.text_or_empty(first + 1))
}

/// Each host's backend, from its newest hello.
async fn platforms(store: &dyn Store) -> Result<HashMap<String, Platform>, StoreError> {
    let rows = store
        .query(Query::new(report_sql::HOST_HELLOS, Vec::new()))
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let backend = row.json(1);
            (
                row.text_or_empty(0),
                Platform::from_backend(
                    backend
                        .get("backend")
                        .and_then(|b| b.as_str())
                        .unwrap_or(""),
                ),
            )
        })
        .collect())
}

/// The OOMs of `[since, until)` with virtio-mem figures, for
/// [`crate::reports::elastic_policy::build`]; a stored correlation that does not decode
/// fails the report, naming the OOM.
pub async fn elastic_ooms(
    store: &dyn Store,
    since_ms: i64,
    until_ms: i64,
) -> Result<Vec<ElasticOomFact>, StoreError> {
    let params = vec![
        Param::int(since_ms),
        Param::int(until_ms),
        Param::int(ROW_CAP),
    ];
    let rows = store
        .query(Query::new(report_sql::POLICY_ELASTIC_OOMS, params))
        .await?;
    let mut facts = Vec::new();
    for row in rows {
        let id = row.int_or_zero(0);
        let correlation: Correlation =
            serde_json::from_str(&row.text_or_empty(4)).map_err(|source| StoreError::Decode {
                what: "ooms.correlation_json",
                id,
                source,
            })?;
        let Some(host_took) = correlation.host_took else {
            continue;
        };
        let devices = row
            .text(6)
            .and_then(|text| serde_json::from_str::<VmConfig>(&text).ok())
            .map(|config| config.virtio_mem)
            .unwrap_or_default();
        facts.push(ElasticOomFact {
            id,
            time_ms: row.int_or_zero(3),
            host: row.text_or_empty(1),
            vm_uuid: row.text_or_empty(2),
            vm_name: row.text(5).unwrap_or_else(|| row.text_or_empty(7)),
            host_took,
            needed_kib: correlation.needed_kb,
            devices,
        });
    }
    Ok(facts)
}
