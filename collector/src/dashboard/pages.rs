//! `/vms/{host}/{uuid}` and `/hosts/{host}`: memory over time with OOM markers, the
//! VM's configuration audit, the host's VMs, recent OOMs. A VM is (host, uuid); the
//! older `/vms/{uuid}` redirects to its one host's VM, or lists the hosts when several
//! reported the uuid.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use ballast_model::AuditFinding;
use maud::{html, Markup};
use serde::Deserialize;

use crate::dashboard::guard;
use crate::dashboard::layout::{self, host_link, kib, path_segment, vm_link, vm_path};
use crate::dashboard::oom_page;
use crate::dashboard::overview::{range, RANGES, RANGE_ERROR};
use crate::dashboard::pressure;
use crate::dashboard::svg::{self, Line, Mark};
use crate::dashboard::virtio_mem;
use crate::dashboard::DashboardError;
use crate::records::{OomPage, OomSummary};
use crate::reports::{audit_words, format};
use crate::state::AppState;
use crate::storage::aggregates::{self as data, SeriesPoint};
use crate::storage::episodes;
use crate::storage::guard_reads;
use crate::storage::queries::{self, OomFilter};
use crate::storage::virtio_mem_reads::{self, MemoryDeviceFilter};
use crate::storage::Store;

/// Points per chart.
const CHART_POINTS: i64 = 720;
/// Pressure points per chart: a day of minutes, 90 days of hours.
const PRESSURE_POINTS: i64 = 2_200;

#[derive(Debug, Deserialize)]
pub struct RangeParams {
    range: Option<String>,
}

fn window(params: &RangeParams) -> Result<(String, i64, i64), DashboardError> {
    let name = params.range.clone().unwrap_or_else(|| "24h".to_string());
    let (range_ms, _) =
        range(&name).ok_or_else(|| DashboardError::BadRequest(RANGE_ERROR.into()))?;
    let until = crate::now_ms();
    Ok((name, until - range_ms, until))
}

fn range_links(base: &str, current: &str) -> Markup {
    html! {
        nav.ranges {
            "Range: "
            @for name in RANGES {
                @if name == current { strong { (name) } } @else { a href={ (base) "?range=" (name) } { (name) } }
                " "
            }
        }
    }
}

/// The OOMs of `scope` (a VM or a host) a page shows: those inside the chart's
/// `[since, until]` window, marked on it, and the most recent ones for its table.
async fn charted_and_recent_ooms(
    store: &dyn Store,
    scope: OomFilter,
    since: i64,
    until: i64,
) -> Result<(OomPage, OomPage), DashboardError> {
    let charted = queries::list_ooms(
        store,
        &OomFilter {
            since_ms: Some(since),
            until_ms: Some(until),
            limit: 200,
            ..scope.clone()
        },
    )
    .await?;
    let recent = queries::list_ooms(store, &OomFilter { limit: 20, ..scope }).await?;
    Ok((charted, recent))
}

/// One value of the series as chart points, skipping the buckets without it.
fn points(series: &[SeriesPoint], value: fn(&SeriesPoint) -> Option<u64>) -> Vec<(i64, u64)> {
    series
        .iter()
        .filter_map(|p| Some((p.at_ms, value(p)?)))
        .collect()
}

/// A chart marker per OOM, linking to its page.
fn oom_marks(ooms: &[OomSummary], label: impl Fn(&OomSummary) -> String) -> Vec<Mark> {
    ooms.iter()
        .map(|oom| Mark {
            at_ms: oom.time_ms,
            label: label(oom),
            href: Some(format!("/ooms/{}", oom.id)),
        })
        .collect()
}

/// `GET /vms/{uuid}` (links made before a VM was (host, uuid)): a redirect to the
/// VM of the one host that reported the uuid, a 300 page linking each host's VM when
/// several did, 404 when none did.
pub async fn vm_by_uuid(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    Query(params): Query<RangeParams>,
) -> Result<Response, DashboardError> {
    let hosts = queries::hosts_of_vm(state.store.as_ref(), &uuid).await?;
    let range = params
        .range
        .as_deref()
        .map(|range| format!("?range={}", path_segment(range)))
        .unwrap_or_default();
    match hosts.as_slice() {
        [] => Err(DashboardError::NotFound),
        [host] => Ok(Redirect::to(&format!("{}{range}", vm_path(host, &uuid))).into_response()),
        several => {
            let body = html! {
                p { "VM uuid " code { (uuid) } " is known on " (several.len()) " hosts; each is a VM of its own:" }
                ul {
                    @for host in several {
                        li { a href={ (vm_path(host, &uuid)) (range) } { (host) } }
                    }
                }
            };
            let page = layout::page(&format!("VM {uuid} on several hosts"), body);
            Ok((StatusCode::MULTIPLE_CHOICES, page).into_response())
        }
    }
}

/// `GET /vms/{host}/{uuid}`.
pub async fn vm(
    State(state): State<AppState>,
    Path((host, uuid)): Path<(String, String)>,
    Query(params): Query<RangeParams>,
) -> Result<Markup, DashboardError> {
    let store = state.store.as_ref();
    let record = data::vm(store, &host, &uuid)
        .await?
        .ok_or(DashboardError::NotFound)?;
    let (range_name, since, until) = window(&params)?;
    // In a configured cluster the uuid's rows on the cluster's hosts are this VM's
    // history (a VM that migrated); elsewhere the same uuid is another VM.
    let clusters = &state.config.clusters;
    let cluster_hosts = clusters.history_hosts(&host);
    let elsewhere: Vec<String> = queries::hosts_of_vm(store, &uuid)
        .await?
        .into_iter()
        .filter(|other| *other != host)
        .collect();
    let mut joined = vec![host.clone()];
    joined.extend(
        elsewhere
            .iter()
            .filter(|other| cluster_hosts.contains(other))
            .cloned(),
    );
    joined.sort();
    let series = data::vm_series(store, &joined, &uuid, since, until, CHART_POINTS).await?;
    let (mut ooms, mut recent) = (OomPage::default(), OomPage::default());
    for one in &joined {
        let scope = OomFilter {
            host: Some(one.clone()),
            vm: Some(uuid.clone()),
            ..OomFilter::default()
        };
        let (charted, latest) = charted_and_recent_ooms(store, scope, since, until).await?;
        ooms.items.extend(charted.items);
        recent.items.extend(latest.items);
    }
    for page in [&mut ooms, &mut recent] {
        page.items
            .sort_by_key(|oom| std::cmp::Reverse((oom.time_ms, oom.id)));
    }
    recent.items.truncate(20);
    let cluster = clusters.cluster_of(&host);
    let config = data::vm_config(&record);
    let findings: Vec<String> = serde_json::from_value(record.findings.clone()).unwrap_or_default();
    let mut lines = vec![
        Line {
            label: "maximum",
            class: "s-max",
            points: points(&series, |p| p.maximum_kib),
        },
        Line {
            label: "balloon actual",
            class: "s-actual",
            points: points(&series, |p| p.actual_kib),
        },
        Line {
            label: "guest MemTotal",
            class: "s-memtotal",
            points: points(&series, |p| p.memtotal_kib),
        },
        Line {
            label: "guest MemAvailable",
            class: "s-usable",
            points: points(&series, |p| p.usable_kib),
        },
    ];
    // virtio-mem beside the balloon (a VM without it gets no line, marker or list).
    lines.extend(virtio_mem::lines(&series));
    let resizes = virtio_mem_reads::vm_memory_devices(
        store,
        &host,
        &uuid,
        &MemoryDeviceFilter {
            since_ms: Some(since),
            until_ms: Some(until.saturating_add(1)),
            limit: virtio_mem::VM_LISTED,
            ..MemoryDeviceFilter::default()
        },
    )
    .await?
    .items;
    let marks = oom_marks(&ooms.items, |oom| {
        format!(
            "OOM {} ({})",
            format::date_time(oom.time_ms),
            oom.correlation.verdict
        )
    });
    // Pressure is this host's VM's (episodes are per host): minutes for a day, hours
    // for longer ranges.
    let resolution = if until - since <= 86_400_000 {
        queries::Resolution::Stored
    } else {
        queries::Resolution::Hour
    };
    let pressure_points = queries::vm_memory(
        store,
        &host,
        &uuid,
        since,
        until,
        PRESSURE_POINTS,
        resolution,
    )
    .await?
    .points;
    let episodes = episodes::vm_episodes(store, &host, &uuid, since, until, 200).await?;
    let bands = pressure::bands(&episodes);
    let guard_actions =
        guard_reads::vm_guard_actions(store, &host, &uuid, since, until, guard::VM_LISTED).await?;
    let guard_marks = guard::marks(&guard_actions);
    let base = vm_path(&host, &uuid);
    let title = super::openstack::title(&record);
    let body = html! {
        dl.facts {
            dt { "uuid" } dd { (record.uuid) }
            (super::openstack::vm_facts(&record))
            dt { "Host" } dd { (host_link(&record.host)) }
            @if let (Some(cluster), true) = (cluster, joined.len() > 1) {
                dt { "Cluster " (cluster) } dd.note {
                    "History joined with "
                    @for other in joined.iter().filter(|h| **h != host) { (vm_link(other, &uuid, other)) " " }
                    "(the same uuid on this cluster's hosts is one VM that migrated)"
                }
            }
            @if elsewhere.iter().any(|h| !joined.contains(h)) {
                dt { "Same uuid on" } dd.note {
                    @for other in elsewhere.iter().filter(|h| !joined.contains(h)) { (vm_link(other, &uuid, other)) " " }
                    "(another VM each: histories are not joined)"
                }
            }
            dt { "State" } dd { (record.state) }
            @if let Some(config) = &config {
                dt { "Memory / floor" } dd { (kib(config.memory_kib)) " / " (kib(config.balloon_floor_kib)) }
                (virtio_mem::config_facts(&config.virtio_mem))
                dt { "Balloon" } dd {
                    (if config.balloon_present { "present" } else { "absent" })
                    ", stats period " (config.stats_period_secs.map_or("off".to_string(), |s| format!("{s} s")))
                    ", deflate-on-oom " (config.deflate_on_oom.map_or("unknown", |d| if d { "on" } else { "off" }))
                    ", free page reporting " (config.free_page_reporting.map_or("unknown", |d| if d { "on" } else { "off" }))
                }
                dt { "Guest agent / serial log" } dd {
                    (if config.guest_agent_channel { "channel" } else { "no channel" }) " / "
                    (if config.serial_log { "captured" } else { "not captured" })
                }
            }
        }
        (range_links(&base, &range_name))
        section #memory {
            h2 { "Memory" }
            (svg::line_chart_with_resizes("VM memory over time", &lines, &marks, &guard_marks, &virtio_mem::marks(&resizes), &bands, Some((since, until))))
        }
        (virtio_mem::table(&resizes))
        section #guard {
            h2 { "Guard actions" }
            (guard::actions_table(&guard_actions))
        }
        section #pressure {
            h2 { "Pressure" }
            (pressure::chart(&pressure_points, &episodes, (since, until)))
            (pressure::episodes_table(&episodes))
        }
        section #findings {
            h2 { "Configuration audit" }
            @if findings.is_empty() {
                p.empty { "No findings (or no inventory from this VM's agent yet)." }
            } @else {
                ul.findings {
                    @for finding in &findings {
                        @let known = AuditFinding::parse(finding);
                        li {
                            code { (finding) } ": " (audit_words::finding_text(known))
                            @if let Some(meaning) = audit_words::figures_meaning(known) {
                                " " span.note { (meaning) }
                            }
                        }
                    }
                }
                p { "The " a href="/reports/balloon-policy" { "balloon-policy report" } " gives the exact setting to change." }
            }
        }
        section {
            h2 { "Recent OOMs" }
            (oom_page::table(&recent.items))
        }
    };
    Ok(layout::page(&format!("VM {title}"), body))
}

/// `GET /hosts/{host}`.
pub async fn host(
    State(state): State<AppState>,
    Path(host): Path<String>,
    Query(params): Query<RangeParams>,
) -> Result<Markup, DashboardError> {
    let store = state.store.as_ref();
    let (range_name, since, until) = window(&params)?;
    let vms = queries::list_vms(store, Some(&host)).await?;
    let series = data::host_series(store, &host, since, until, CHART_POINTS).await?;
    let scope = OomFilter {
        host: Some(host.clone()),
        ..OomFilter::default()
    };
    let (ooms, recent) = charted_and_recent_ooms(store, scope, since, until).await?;
    if vms.items.is_empty() && series.is_empty() && recent.items.is_empty() {
        return Err(DashboardError::NotFound);
    }
    let lines = [
        Line {
            label: "host total",
            class: "s-max",
            points: points(&series, |p| p.host_total_kib),
        },
        Line {
            label: "host available (lowest)",
            class: "s-host",
            points: points(&series, |p| p.host_available_kib),
        },
    ];
    let marks = oom_marks(&ooms.items, |oom| {
        format!(
            "OOM in {} at {}",
            oom.vm.name,
            format::date_time(oom.time_ms)
        )
    });
    let base = format!("/hosts/{}", path_segment(&host));
    let body = html! {
        (range_links(&base, &range_name))
        section #memory {
            h2 { "Host memory" }
            (svg::line_chart("Host memory over time", &lines, &marks, Some((since, until))))
        }
        section {
            h2 { "VMs" }
            table {
                thead { tr { th { "VM" } th { "State" } th.num { "Memory" } th.num { "Floor" } th { "Findings" } th.num { "OOMs" } } }
                tbody {
                    @for vm in &vms.items {
                        @let config = data::vm_config(vm);
                        tr {
                            td { (vm_link(&vm.host, &vm.uuid, &vm.name)) (super::openstack::vm_identity(vm)) }
                            td { (vm.state) }
                            td.num { (kib(config.as_ref().and_then(|c| c.memory_kib))) }
                            td.num { (kib(config.as_ref().and_then(|c| c.balloon_floor_kib))) }
                            td { @for finding in serde_json::from_value::<Vec<String>>(vm.findings.clone()).unwrap_or_default() { code { (finding) } " " } }
                            td.num { (vm.oom_count) }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Recent OOMs" }
            (oom_page::table(&recent.items))
            p { a href={ "/ooms?host=" (path_segment(&host)) } { "All OOMs of this host" } }
        }
    };
    Ok(layout::page(&format!("Host {host}"), body))
}
