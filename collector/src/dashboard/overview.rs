//! `/`: the fleet overview: OOMs over time by verdict and by kind, the VMs and
//! hosts with the most OOMs, hosts under memory pressure, the newest OOMs.

use axum::extract::{Query, State};
use maud::{html, Markup};
use serde::Deserialize;

use crate::dashboard::guard as dashboard_guard;
use crate::dashboard::layout::{self, host_link, vm_link};
use crate::dashboard::pressure as dashboard_pressure;
use crate::dashboard::svg::{self, Group};
use ballast_model::{CorrelationVerdict, GuardOutcome, HostTookVerdict, OomKind};

use crate::dashboard::DashboardError;
use crate::reports::format;
use crate::state::AppState;
use crate::storage::aggregates as data;
use crate::storage::guard_reads::{self, GuardFilter};
use crate::storage::queries::{self, GroupBy, OomFilter};

/// Host pressure looks at the last 15 minutes of rollups.
const PRESSURE_WINDOW_MS: i64 = 15 * 60_000;

#[derive(Debug, Deserialize)]
pub struct OverviewParams {
    range: Option<String>,
}

/// The ranges every page offers, shortest first (an hour: a guard run, an episode).
pub const RANGES: [&str; 5] = ["1h", "24h", "7d", "30d", "90d"];
/// What a page answers to a range it does not offer.
pub const RANGE_ERROR: &str = "range must be 1h, 24h, 7d, 30d or 90d";

/// `(range ms, bucket ms)` of a range name: its length and the overview's bucket.
pub fn range(name: &str) -> Option<(i64, i64)> {
    Some(match name {
        "1h" => (3_600_000, 300_000),
        "24h" => (86_400_000, 3_600_000),
        "7d" => (7 * 86_400_000, 6 * 3_600_000),
        "30d" => (30 * 86_400_000, 86_400_000),
        "90d" => (90 * 86_400_000, 3 * 86_400_000),
        _ => return None,
    })
}

pub const VERDICT_GROUPS: [Group<'static>; 5] = [
    Group {
        key: CorrelationVerdict::Balloon.as_str(),
        label: "balloon",
        class: "v-balloon",
    },
    Group {
        key: CorrelationVerdict::BalloonContributed.as_str(),
        label: "balloon contributed",
        class: "v-balloon_contributed",
    },
    Group {
        key: CorrelationVerdict::NotBalloon.as_str(),
        label: "not balloon",
        class: "v-not_balloon",
    },
    Group {
        key: CorrelationVerdict::Unknown.as_str(),
        label: "unknown",
        class: "v-unknown",
    },
    Group {
        key: "",
        label: "other",
        class: "v-other",
    },
];

const KIND_GROUPS: [Group<'static>; 4] = [
    Group {
        key: OomKind::Guest.as_str(),
        label: "guest kernel",
        class: "k-guest",
    },
    Group {
        key: OomKind::VmCgroup.as_str(),
        label: "VM cgroup (host)",
        class: "k-vm_cgroup",
    },
    Group {
        key: OomKind::Host.as_str(),
        label: "host",
        class: "k-host",
    },
    Group {
        key: "",
        label: "other",
        class: "k-other",
    },
];

/// `GET /`.
pub async fn overview(
    State(state): State<AppState>,
    Query(params): Query<OverviewParams>,
) -> Result<Markup, DashboardError> {
    let range_name = params.range.unwrap_or_else(|| "7d".to_string());
    let (range_ms, bucket_ms) =
        range(&range_name).ok_or_else(|| DashboardError::BadRequest(RANGE_ERROR.into()))?;
    let store = state.store.as_ref();
    let now = crate::now_ms();
    let until = (now / bucket_ms + 1) * bucket_ms;
    let since = until - range_ms;
    let by_verdict =
        queries::oom_counts(store, GroupBy::Verdict, bucket_ms / 1000, since, until).await?;
    let by_kind = queries::oom_counts(store, GroupBy::Kind, bucket_ms / 1000, since, until).await?;
    let by_host_took =
        queries::oom_counts(store, GroupBy::HostTook, bucket_ms / 1000, since, until).await?;
    let top_vms = data::top_vms(store, since, 10).await?;
    let top_hosts = data::top_hosts(store, since, 10).await?;
    let pressure = data::host_pressure(store, now - PRESSURE_WINDOW_MS).await?;
    let open_episodes =
        crate::storage::episodes::open_episodes(store, 0, dashboard_pressure::OPEN_LISTED).await?;
    let guard = guard_lines(store, since, now).await?;
    let newest = queries::list_ooms(
        store,
        &OomFilter {
            limit: 10,
            ..OomFilter::default()
        },
    )
    .await?;
    let target = state.config.correlation.host_target_pct;
    let total: i64 = by_verdict.items.iter().map(|c| c.count).sum();
    let balloon: i64 = by_verdict
        .items
        .iter()
        .filter(|c| CorrelationVerdict::parse(&c.group).is_balloon())
        .map(|c| c.count)
        .sum();
    // Every mechanism (balloon, virtio-mem): what `host_took` says, as the OOM pages show.
    let host_took: i64 = by_host_took
        .items
        .iter()
        .filter(|c| {
            matches!(
                HostTookVerdict::parse(&c.group),
                HostTookVerdict::HostTookMemory | HostTookVerdict::HostContributed
            )
        })
        .map(|c| c.count)
        .sum();
    let counts = |items: &[crate::records::OomCount]| -> Vec<(i64, String, i64)> {
        items
            .iter()
            .map(|c| (c.bucket_start_ms, c.group.clone(), c.count))
            .collect()
    };
    let body = html! {
        nav.ranges {
            "Range: "
            @for name in RANGES {
                @if name == range_name { strong { (name) } } @else { a href={ "/?range=" (name) } { (name) } }
                " "
            }
        }
        section.summary {
            div.stat { span.num { (total) } " OOMs" }
            div.stat { span.num { (balloon) } " balloon-induced or -contributed" }
            div.stat #host-took { a href="/ooms?host_took=host_took_memory" { span.num { (host_took) } } " the host took memory (balloon or virtio-mem)" }
            div.stat { span.num { (pressure.iter().filter(|h| h.used_pct() >= target).count()) } " hosts above the " (target) " % ballooning target" }
        }
        (dashboard_pressure::under_pressure_now(&open_episodes))
        (guard)
        section {
            h2 { "OOMs by correlation verdict" }
            (svg::stacked_bars("OOMs over time by verdict", &counts(&by_verdict.items), &VERDICT_GROUPS, (since, until), bucket_ms))
            h2 { "OOMs by kind" }
            (svg::stacked_bars("OOMs over time by kind", &counts(&by_kind.items), &KIND_GROUPS, (since, until), bucket_ms))
        }
        div.columns {
            section {
                h2 { "VMs with the most OOMs" }
                table {
                    thead { tr { th { "VM" } th { "Host" } th.num { "OOMs" } th.num { "balloon" } } }
                    tbody {
                        @for vm in &top_vms {
                            tr {
                                td { (vm_link(&vm.host, &vm.key, &vm.name)) }
                                td { (host_link(&vm.host)) }
                                td.num { a href={ "/ooms?host=" (layout::path_segment(&vm.host)) "&vm=" (layout::path_segment(&vm.key)) } { (vm.ooms) } }
                                td.num { (vm.balloon_ooms) }
                            }
                        }
                    }
                }
            }
            section {
                h2 { "Hosts with the most OOMs" }
                table {
                    thead { tr { th { "Host" } th.num { "OOMs" } th.num { "balloon" } } }
                    tbody {
                        @for host in &top_hosts {
                            tr {
                                td { (host_link(&host.key)) }
                                td.num { a href={ "/ooms?host=" (layout::path_segment(&host.key)) } { (host.ooms) } }
                                td.num { (host.balloon_ooms) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Host memory, last 15 minutes" }
            @if pressure.is_empty() {
                p.empty { "No host memory samples in the last 15 minutes." }
            } @else {
                table {
                    thead { tr { th { "Host" } th.num { "Total" } th.num { "Lowest available" } th.num { "Used" } th.num { "VMs" } th { "Newest sample" } } }
                    tbody {
                        @for host in &pressure {
                            tr class=[(host.used_pct() >= target).then_some("pressure")] {
                                td { (host_link(&host.host)) }
                                td.num { (format::kib(host.total_kib)) }
                                td.num { (format::kib(host.available_min_kib)) }
                                td.num { (format!("{:.1} %", host.used_pct())) }
                                td.num { (host.vms) }
                                td { (format::date_time(host.newest_ms)) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Newest OOMs" }
            (crate::dashboard::oom_page::table(&newest.items))
            p { a href="/ooms" { "All OOMs" } }
        }
    };
    Ok(layout::page("Fleet overview", body))
}

/// The most guard actions of each outcome the overview joins.
const GUARD_JOINED: i64 = 500;
/// The most VMs whose OOMs the overview reads for the guard's lines.
const GUARD_VMS: usize = 100;

/// The overview's guard section over the range: the `deflated` and `would_deflate`
/// actions since `since`, their VMs' episodes and OOMs, joined by
/// `dashboard::guard`.
async fn guard_lines(
    store: &dyn crate::storage::Store,
    since: i64,
    now: i64,
) -> Result<Markup, DashboardError> {
    let mut actions = Vec::new();
    for outcome in [GuardOutcome::Deflated, GuardOutcome::WouldDeflate] {
        let filter = GuardFilter {
            outcome: Some(outcome),
            since_ms: Some(since),
            ..GuardFilter::default()
        };
        actions.extend(guard_reads::guard_actions(store, &filter, GUARD_JOINED).await?);
    }
    if actions.is_empty() {
        return Ok(dashboard_guard::overview_section(&[], &[]));
    }
    let window = dashboard_guard::AFTER_EPISODE_MS;
    let episodes = crate::storage::episodes::episodes_between(
        store,
        since.saturating_sub(window),
        now.saturating_add(1),
        5_000,
    )
    .await?;
    let mut ooms = Vec::new();
    // Bounded: the VMs of the newest actions would do; a fleet-wide sweep is the API's.
    for (host, uuid) in dashboard_guard::vms_of(&actions)
        .into_iter()
        .take(GUARD_VMS)
    {
        let page = queries::list_ooms(
            store,
            &OomFilter {
                host: Some(host),
                vm: Some(uuid),
                since_ms: Some(since),
                limit: 200,
                ..OomFilter::default()
            },
        )
        .await?;
        ooms.extend(
            page.items
                .into_iter()
                .map(|oom| (oom.host, oom.vm.uuid, oom.time_ms)),
        );
    }
    let averted = dashboard_guard::averted(&actions, &episodes, &ooms, now);
    let would = dashboard_guard::would_have(&actions, &episodes, &ooms);
    Ok(dashboard_guard::overview_section(&averted, &would))
}
