//! `/ooms` (filtered, paged list) and `/ooms/{id}` (one OOM: verdict first).

use axum::extract::{Path, Query, State};
use maud::{html, Markup};
use serde::Deserialize;

use ballast_model::{
    BalloonPoint, CorrelationVerdict, HostTookVerdict, OomAnalysis, OomKind, ParsedReport,
};

use crate::correlation::outcome::HostTook;
use crate::dashboard::layout::{self, badge, host_link, kib, path_segment, vm_link};
use crate::dashboard::svg::{self, Line, Mark};
use crate::dashboard::DashboardError;
use crate::records::{OomDetail, OomSummary};
use crate::reports::format;
use crate::state::AppState;
use crate::storage::queries::{self, OomFilter};

const PAGE_SIZE: i64 = 50;

/// The list's filters, as the form sends them (empty fields mean "any").
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    host: Option<String>,
    vm: Option<String>,
    verdict: Option<String>,
    host_took: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn time_param(value: &Option<String>, field: &str) -> Result<Option<i64>, DashboardError> {
    match non_empty(value) {
        None => Ok(None),
        Some(text) => format::parse_date_time(&text).map(Some).ok_or_else(|| {
            DashboardError::BadRequest(format!(
                "{field} must be a date like 2026-11-26T06:00 (UTC)"
            ))
        }),
    }
}

/// `GET /ooms`.
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Markup, DashboardError> {
    let verdict = match non_empty(&params.verdict) {
        None => None,
        Some(text) if CorrelationVerdict::NAMES.contains(&text.as_str()) => {
            Some(CorrelationVerdict::parse(&text))
        }
        Some(_) => return Err(DashboardError::BadRequest("unknown verdict".into())),
    };
    let host_took = match non_empty(&params.host_took) {
        None => None,
        Some(text) if HostTookVerdict::NAMES.contains(&text.as_str()) => {
            Some(HostTookVerdict::parse(&text))
        }
        Some(_) => return Err(DashboardError::BadRequest("unknown host_took".into())),
    };
    let kind = match non_empty(&params.kind) {
        None => None,
        Some(text) if OomKind::NAMES.contains(&text.as_str()) => Some(OomKind::parse(&text)),
        Some(_) => return Err(DashboardError::BadRequest("unknown kind".into())),
    };
    let cursor = match non_empty(&params.cursor) {
        Some(text) => Some(
            queries::parse_cursor(&text)
                .ok_or_else(|| DashboardError::BadRequest("bad cursor".into()))?,
        ),
        None => None,
    };
    let filter = OomFilter {
        host: non_empty(&params.host),
        vm: non_empty(&params.vm),
        verdict,
        host_took,
        report_verdict: None,
        kind,
        since_ms: time_param(&params.since, "since")?,
        until_ms: time_param(&params.until, "until")?,
        cursor,
        limit: PAGE_SIZE,
    };
    let page = queries::list_ooms(state.store.as_ref(), &filter).await?;
    let mut next_query = Vec::new();
    for (name, value) in [
        ("host", filter.host.clone()),
        ("vm", filter.vm.clone()),
        ("verdict", verdict.map(|v| v.to_string())),
        ("host_took", host_took.map(|v| v.to_string())),
        ("kind", kind.map(|k| k.to_string())),
        ("since", non_empty(&params.since)),
        ("until", non_empty(&params.until)),
    ] {
        if let Some(value) = value {
            next_query.push(format!("{name}={}", path_segment(&value)));
        }
    }
    let next_href = page.next_cursor.as_ref().map(|next| {
        let mut query = next_query.clone();
        query.push(format!("cursor={}", path_segment(next)));
        format!("/ooms?{}", query.join("&"))
    });
    let body = html! {
        form.filters method="get" action="/ooms" {
            label { "Host " input type="text" name="host" value=[filter.host.as_deref()]; }
            label { "VM uuid " input type="text" name="vm" value=[filter.vm.as_deref()]; }
            label { "Verdict "
                select name="verdict" {
                    option value="" { "any" }
                    @for v in CorrelationVerdict::KNOWN.iter().copied().chain([CorrelationVerdict::Unknown]) {
                        option value=(v) selected[verdict == Some(v)] { (v) }
                    }
                }
            }
            label { "Host took "
                select name="host_took" {
                    option value="" { "any" }
                    @for v in HostTookVerdict::KNOWN.iter().copied().chain([HostTookVerdict::Unknown]) {
                        option value=(v) selected[host_took == Some(v)] { (v) }
                    }
                }
            }
            label { "Kind "
                select name="kind" {
                    option value="" { "any" }
                    @for k in OomKind::ALL {
                        option value=(k) selected[kind == Some(k)] { (k) }
                    }
                }
            }
            label { "From (UTC) " input type="datetime-local" name="since" value=[non_empty(&params.since)]; }
            label { "To (UTC) " input type="datetime-local" name="until" value=[non_empty(&params.until)]; }
            button type="submit" { "Filter" }
            " " a href="/ooms" { "Clear" }
        }
        (table(&page.items))
        @if let Some(href) = &next_href {
            p.paging { a #older href=(href) { "Older OOMs" } }
        }
    };
    Ok(layout::page("OOMs", body))
}

/// The OOM table shared by the list, overview, VM and host pages.
pub fn table(items: &[OomSummary]) -> Markup {
    html! {
        @if items.is_empty() {
            p.empty { "No OOMs." }
        } @else {
            table.ooms {
                thead { tr {
                    th { "Time (UTC)" } th { "VM" } th { "Host" } th { "Kind" }
                    th { "Killed" } th { "Correlation" } th { "Host took" } th { "Report verdict" } th.num { "Balloon held" }
                } }
                tbody {
                    @for oom in items {
                        tr.oom-row {
                            td { a href={ "/ooms/" (oom.id) } { (format::date_time(oom.time_ms)) } }
                            td { (vm_link(&oom.host, &oom.vm.uuid, &oom.vm.name)) }
                            td { (host_link(&oom.host)) }
                            td.kind { (oom.kind) }
                            td { @if let Some(killed) = &oom.killed {
                                (killed.comm.as_deref().unwrap_or("?"))
                                @if let Some(pid) = killed.pid { " (" (pid) ")" }
                            } }
                            td.verdict { (badge(oom.correlation.verdict)) }
                            td.host-took { (badge(oom.correlation.host_took.verdict)) (mechanisms(&oom.correlation.host_took)) }
                            td { (oom.report_verdict) }
                            td.num { (kib(oom.correlation.balloon_held_kb.and_then(|v| u64::try_from(v).ok()))) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ooms/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Markup, DashboardError> {
    let id: i64 = id.parse().map_err(|_| DashboardError::NotFound)?;
    let detail = queries::get_oom(
        state.store.as_ref(),
        id,
        state.config.correlation.window_secs,
    )
    .await?
    .ok_or(DashboardError::NotFound)?;
    let title = format!(
        "OOM in {} at {}",
        if detail.summary.vm.name.is_empty() {
            &detail.summary.vm.uuid
        } else {
            &detail.summary.vm.name
        },
        format::date_time(detail.summary.time_ms)
    );
    Ok(layout::page(&title, detail_body(&detail)))
}

fn detail_body(detail: &OomDetail) -> Markup {
    let summary = &detail.summary;
    let analysis = &detail.analysis;
    let report = &detail.report;
    let history = &detail.balloon_history;
    let host = detail.host_memory.as_ref();
    let corr = &detail.correlation_detail;
    let reasons = &corr.reasons;
    html! {
        @if detail.flood_suppressed > 0 {
            p.flood #flood {
                "Flood: the agent's flood control dropped " (detail.flood_suppressed)
                " earlier OOM reports from this VM before this one (a guest printing OOM reports in a loop)."
            }
        }
        section.verdict-box #verdict {
            p.lead {
                "Correlation verdict: " (badge(summary.correlation.verdict))
                " · report verdict: " (badge(analysis.verdict))
            }
            @if !analysis.explanation.is_empty() { p.explanation { (analysis.explanation) } }
            @if !reasons.is_empty() {
                ul.reasons { @for reason in reasons { li { (reason) } } }
            }
            dl.facts {
                dt { "VM" } dd { (vm_link(&summary.host, &summary.vm.uuid, &summary.vm.name)) }
                dt { "Host" } dd { (host_link(&summary.host)) }
                dt { "Kind / source" } dd { (summary.kind) " / " (detail.source) }
                dt { "Balloon held" } dd { (kib(corr.balloon_held_kb)) " of " (kib(corr.maximum_kib)) }
                dt { "Inflated before" } dd { (kib(corr.inflated_kb_before))
                    @if let Some(secs) = summary.correlation.seconds_from_inflation { ", " (secs) " s before the OOM" } }
                dt { "Would have survived deflated" } dd { (corr.would_have_survived.map_or("unknown", |b| if b { "yes" } else { "no" })) }
            }
        }
        (host_side(corr.host_took.as_ref()))
        section #trajectory {
            h2 { "Balloon before the OOM" }
            (trajectory(detail, history))
        }
        section #host-memory {
            h2 { "Host memory" }
            @match &host {
                Some(host) => {
                    p { "At the OOM: " (kib(host.available_kib)) " available of " (kib(host.total_kib))
                        @if let Some(psi) = host.psi_some_avg10 { ", PSI some avg10 " (format!("{psi:.1}")) } }
                }
                None => { p.empty { "The agent sent no host figures with this OOM." } }
            }
            @let host_points: Vec<(i64, u64)> = detail.rollups.iter().filter_map(|r| Some((r.period_start_ms, r.host_available_kib?))).collect();
            @if !host_points.is_empty() {
                (svg::line_chart("Host available memory before the OOM", &[
                    Line { label: "host available", class: "s-host", points: host_points },
                ], &[Mark { at_ms: summary.time_ms, label: "OOM".into(), href: None }], None))
            }
        }
        section #report {
            h2 { "The report" }
            (parsed_report(report, analysis))
        }
        section #raw {
            h2 { "Raw report (guest-reported)" @if detail.raw_truncated { " - truncated" } }
            pre.raw { (detail.raw_report) }
        }
    }
}

/// ` (balloon, virtio_mem)`: the mechanisms that held memory at the OOM.
fn mechanisms(took: &HostTook) -> Markup {
    let names: Vec<&str> = took.mechanisms.iter().map(|m| m.as_str()).collect();
    html! { @if !names.is_empty() { " (" (names.join(", ")) ")" } }
}

/// The host's side over every mechanism: what the balloon and virtio-mem held back,
/// and whether the guest would have survived with all of it given back.
fn host_side(took: Option<&HostTook>) -> Markup {
    let Some(took) = took else {
        return html! {};
    };
    let virtio = took.virtio_mem;
    html! {
        section.verdict-box #host-took {
            p.lead { "The host's side (every mechanism): " (badge(took.verdict)) (mechanisms(took)) }
            dl.facts {
                dt { "Balloon held" } dd { (kib(took.balloon_kib)) }
                @if let Some(virtio) = virtio {
                    dt { "virtio-mem unplugged" } dd {
                        (kib(took.unplugged_kib)) " (plugged " (kib(virtio.plugged_kib))
                        ", requested " (kib(virtio.requested_kib)) " of " (kib(virtio.max_size_kib)) ")"
                    }
                    dt { "Request lowered" } dd {
                        @match (took.requested_lowered_kib, took.requested_lowered_at_ms) {
                            (Some(lowered), Some(at)) => { "by " (kib(Some(lowered))) " at " (format::date_time(at)) }
                            _ => { "not in the window" }
                        }
                    }
                }
                dt { "Host held in all" } dd { (kib(took.total_kib)) }
                dt { "Would have survived with all of it back" } dd { (took.would_have_survived.map_or("unknown", |b| if b { "yes" } else { "no" })) }
            }
        }
    }
}

fn trajectory(detail: &OomDetail, history: &[BalloonPoint]) -> Markup {
    let at = detail.summary.time_ms;
    let mut maximum = Vec::new();
    let mut actual = Vec::new();
    let mut memtotal = Vec::new();
    let mut usable = Vec::new();
    if history.is_empty() {
        for r in &detail.rollups {
            let t = r.period_start_ms;
            maximum.extend(r.maximum_kib.map(|v| (t, v)));
            actual.extend(r.actual_kib.min.map(|v| (t, v)));
            memtotal.extend(r.available_kib.min.map(|v| (t, v)));
            usable.extend(r.usable_kib.min.map(|v| (t, v)));
        }
    } else {
        for p in history {
            maximum.extend(p.maximum_kib.map(|v| (p.at_ms, v)));
            actual.extend(p.actual_kib.map(|v| (p.at_ms, v)));
            memtotal.extend(p.available_kib.map(|v| (p.at_ms, v)));
            usable.extend(p.usable_kib.map(|v| (p.at_ms, v)));
        }
    }
    if let Some(value) = detail.balloon_at_oom.actual_kib {
        actual.push((at, value));
    }
    // virtio-mem beside the balloon: what the guest had plugged and what was requested.
    let virtio = |figure: fn(&ballast_model::VirtioMemTotals) -> Option<u64>| -> Vec<(i64, u64)> {
        history
            .iter()
            .filter_map(|p| Some((p.at_ms, figure(p.virtio_mem.as_ref()?)?)))
            .chain(
                detail
                    .balloon_at_oom
                    .virtio_mem
                    .as_ref()
                    .and_then(figure)
                    .map(|v| (at, v)),
            )
            .collect()
    };
    let plugged = virtio(|t| t.plugged_kib);
    let requested = virtio(|t| t.requested_kib);
    let mut lines = vec![
        Line {
            label: "maximum",
            class: "s-max",
            points: maximum,
        },
        Line {
            label: "balloon actual",
            class: "s-actual",
            points: actual,
        },
        Line {
            label: "guest MemTotal",
            class: "s-memtotal",
            points: memtotal,
        },
        Line {
            label: "guest MemAvailable",
            class: "s-usable",
            points: usable,
        },
    ];
    if !plugged.is_empty() || !requested.is_empty() {
        lines.push(Line {
            label: "virtio-mem plugged",
            class: "s-vmem-plugged",
            points: plugged,
        });
        lines.push(Line {
            label: "virtio-mem requested",
            class: "s-vmem-requested",
            points: requested,
        });
    }
    svg::line_chart(
        "Balloon trajectory before the OOM",
        &lines,
        &[Mark {
            at_ms: at,
            label: format!("OOM at {}", format::date_time(at)),
            href: None,
        }],
        None,
    )
}

pub(crate) fn parsed_report(report: &ParsedReport, analysis: &OomAnalysis) -> Markup {
    html! {
        dl.facts {
            dt { "Kernel" } dd { (report.kernel.as_deref().unwrap_or("-")) }
            dt { "Kind" } dd { (report.kind) @if report.partial { " (partial: " (report.missing.join(", ")) ")" } }
            @if let Some(trigger) = &report.trigger {
                dt { "Trigger" } dd {
                    (trigger.comm) @if let Some(pid) = trigger.pid { " (pid " (pid) ")" }
                    ", gfp " (trigger.gfp_mask.as_deref().unwrap_or("?"))
                    ", order " (trigger.order.map_or("?".to_string(), |o| o.to_string()))
                }
            }
            @if let Some(killed) = &report.killed {
                dt { "Killed" } dd {
                    (killed.comm) " (pid " (killed.pid) "), anon-rss " (kib(killed.anon_rss_kb))
                    ", total-vm " (kib(killed.total_vm_kb))
                }
            }
            dt { "RAM / reserved" } dd {
                (report.ram_pages.map_or("-".to_string(), |p| p.to_string())) " pages / "
                (report.reserved_pages.map_or("-".to_string(), |p| p.to_string())) " pages"
            }
            dt { "Managed / accounted / unaccounted" } dd {
                (kib(analysis.managed_kb)) " / " (kib(analysis.accounted_kb)) " / " (kib(analysis.unaccounted_kb))
                @if let Some(pct) = analysis.unaccounted_pct { " (" (format!("{pct:.1}")) " %)" }
            }
            dt { "Balloon in the trace" } dd { (if report.balloon_in_trace { "yes" } else { "no" }) }
        }
        @if !report.zones.is_empty() {
            h3 { "Zones" }
            table.zones {
                thead { tr { th { "Node" } th { "Zone" } th.num { "Free" } th.num { "Min" } th.num { "Managed" } th.num { "Present" } th { "" } } }
                tbody {
                    @for zone in &report.zones {
                        @let below = matches!((zone.free_kb, zone.min_kb), (Some(free), Some(min)) if free < min);
                        tr class=[below.then_some("pressure")] {
                            td { (zone.node) } td { (zone.name) }
                            td.num { (kib(zone.free_kb)) } td.num { (kib(zone.min_kb)) }
                            td.num { (kib(zone.managed_kb)) } td.num { (kib(zone.present_kb)) }
                            td { @if below { "below min watermark" } }
                        }
                    }
                }
            }
        }
        @if !report.top_tasks.is_empty() {
            h3 { "Largest tasks" }
            table.tasks {
                thead { tr { th.num { "PID" } th { "Name" } th.num { "RSS" } } }
                tbody {
                    @for task in &report.top_tasks {
                        tr { td.num { (task.pid) } td.task { (task.name) } td.num { (format::kib(task.rss_kb)) } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use ballast_model::{Batch, Envelope, Event, SCHEMA_VERSION};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use crate::app::app;
    use crate::dashboard::{DashboardAuth, DashboardSettings};
    use crate::state::{ApiConfig, AppState};
    use crate::storage::sqlite::SqliteStore;
    use crate::storage::{Param, Query, Store};
    use crate::test_fixtures::{lab_inflated, oom_at_ms};

    async fn get(state: &AppState, path: &str) -> (StatusCode, String) {
        let response = app(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_stored_report_that_does_not_decode_is_an_error_page_not_an_empty_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("c.sqlite"))
            .await
            .expect("open");
        let store: Arc<dyn Store> = Arc::new(store);
        let batch = Batch {
            schema_version: SCHEMA_VERSION,
            host_id: "pve1".into(),
            agent_version: "0.1.0".into(),
            events: vec![Envelope {
                key: "pve1/oom/1".into(),
                captured_at_ms: oom_at_ms(),
                event: Event::Oom(Box::new(lab_inflated())),
            }],
        };
        let settings = crate::correlation::CorrelationSettings::default();
        let clusters = crate::clusters::Clusters::default();
        crate::ingest::store_batch(
            store.as_ref(),
            batch,
            "pve1",
            oom_at_ms() + 1000,
            &crate::ingest::IngestSettings {
                correlation: &settings,
                clusters: &clusters,
                notify: &[],
            },
        )
        .await
        .expect("stored");
        let config = ApiConfig {
            dashboard: DashboardSettings {
                auth: DashboardAuth::None,
                ..DashboardSettings::default()
            },
            ..ApiConfig::default()
        };
        let state = AppState::new(Arc::clone(&store), config);

        let (status, page) = get(&state, "/ooms/1").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            page.contains("memhog"),
            "the parsed report is shown: {page}"
        );

        // A correlation that does not decode (not one, no verdict, a figure of the
        // wrong type) is an error on the page and in the API; one without the figures
        // (an older collector's) still shows the report.
        for (correlation, expected) in [
            (r#""not an object""#, StatusCode::INTERNAL_SERVER_ERROR),
            ("{}", StatusCode::INTERNAL_SERVER_ERROR),
            (
                r#"{"verdict":"balloon","balloon_held_kb":"lots"}"#,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (r#"{"verdict":"balloon"}"#, StatusCode::OK),
        ] {
            store
                .execute(Query::new(
                    "UPDATE ooms SET correlation_json = ? WHERE id = 1",
                    vec![Param::text(correlation)],
                ))
                .await
                .expect("update");
            let (status, page) = get(&state, "/ooms/1").await;
            assert_eq!(status, expected, "{correlation}: {page}");
            assert_eq!(
                page.contains("memhog"),
                expected == StatusCode::OK,
                "{page}"
            );
            let (status, body) = get(&state, "/api/v1/ooms/1").await;
            assert_eq!(status, expected, "{correlation}: {body}");
        }

        // A row whose report no longer fits the model (a schema mismatch).
        store
            .execute(Query::new(
                "UPDATE ooms SET event_json = ? WHERE id = 1",
                vec![Param::text(
                    r#"{"vm":{"uuid":"x","name":"y"},"kind":"guest","report":7}"#,
                )],
            ))
            .await
            .expect("update");
        let (status, page) = get(&state, "/ooms/1").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{page}");
        assert!(page.contains("Internal error"), "{page}");
        assert!(!page.contains("memhog"), "{page}");
        let (status, _) = get(&state, "/api/v1/ooms/1").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}

#[cfg(test)]
mod host_took_tests;
