//! The dashboard's pressure pieces (issue 19): the VM page's pressure chart (alloc
//! stalls, PSI, MemAvailable falling) with its episodes shaded, the episodes table,
//! and the overview's "VMs under pressure now". Every guest-derived text (VM names)
//! goes through maud and is escaped.

use maud::{html, Markup};

use ballast_model::{PressureSignal, RiskLevel};

use crate::dashboard::layout::{host_link, kib, vm_link};
use crate::dashboard::svg::{self, Band, RateLine};
use crate::records::{EpisodeRecord, RollupPoint};
use crate::reports::format;

/// The most open episodes the overview lists.
pub const OPEN_LISTED: i64 = 20;

fn level_class(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::Critical => "episode-critical",
        _ => "episode-elevated",
    }
}

/// A risk level as a badge.
pub fn level_badge(level: RiskLevel) -> Markup {
    let class = match level {
        RiskLevel::Critical => "r-critical",
        RiskLevel::Elevated => "r-elevated",
        _ => "v-unknown",
    };
    html! { span class={ "badge " (class) } { (level.as_str()) } }
}

/// The episodes as chart bands, elevated and critical in two tints.
pub fn bands(episodes: &[EpisodeRecord]) -> Vec<Band> {
    episodes
        .iter()
        .map(|episode| Band {
            from_ms: episode.started_at_ms,
            to_ms: episode.ended_at_ms,
            class: level_class(episode.level),
            label: format!(
                "pressure episode ({}) from {}{}",
                episode.level.as_str(),
                format::date_time(episode.started_at_ms),
                episode.ended_at_ms.map_or_else(
                    || ", still open".to_string(),
                    |end| format!(" to {}", format::date_time(end))
                )
            ),
        })
        .collect()
}

fn period_mid(point: &RollupPoint) -> i64 {
    point
        .period_start_ms
        .saturating_add(point.period_secs.saturating_mul(500))
}

/// The pressure chart of a VM's memory points and episodes over `range`.
pub fn chart(points: &[RollupPoint], episodes: &[EpisodeRecord], range: (i64, i64)) -> Markup {
    let series = |value: fn(&RollupPoint) -> Option<f64>| -> Vec<(i64, f64)> {
        points
            .iter()
            .filter_map(|point| Some((period_mid(point), value(point)?)))
            .collect()
    };
    let lines = [
        RateLine {
            label: "alloc stalls (/s)",
            class: "s-stalls",
            points: series(|p| p.pressure.as_ref()?.peak.alloc_stalls_per_s),
        },
        RateLine {
            label: "PSI some avg10 (%)",
            class: "s-psi-some",
            points: series(|p| p.pressure.as_ref()?.peak.psi_some_avg10),
        },
        RateLine {
            label: "PSI full avg10 (%)",
            class: "s-psi-full",
            points: series(|p| p.pressure.as_ref()?.peak.psi_full_avg10),
        },
        RateLine {
            label: "MemAvailable falling (MiB/s)",
            class: "s-slope",
            points: series(|p| {
                let slope = p.pressure.as_ref()?.peak.available_slope_kib_per_s?;
                Some((-slope).max(0.0) / 1024.0)
            }),
        },
    ];
    svg::rate_chart(
        "VM pressure signals over time",
        &lines,
        &bands(episodes),
        range,
    )
}

pub fn drivers(drivers: &[PressureSignal]) -> String {
    if drivers.is_empty() {
        return "-".to_string();
    }
    drivers
        .iter()
        .map(|driver| driver.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn exhaustion(secs: Option<u64>) -> String {
    secs.map_or_else(|| "-".to_string(), |secs| format!("{secs} s"))
}

/// A VM's episodes, newest first.
pub fn episodes_table(episodes: &[EpisodeRecord]) -> Markup {
    html! {
        @if episodes.is_empty() {
            p.empty { "No pressure episode in this range." }
        } @else {
            table {
                thead { tr {
                    th { "Started" } th { "Ended" } th { "Worst" } th { "Drivers" }
                    th { "Exhaustion in" } th { "Deficit" } th { "At balloon floor" }
                } }
                tbody {
                    @for episode in episodes.iter().rev() {
                        tr {
                            td { (format::date_time(episode.started_at_ms)) }
                            td { (episode.ended_at_ms.map_or_else(|| "open".to_string(), format::date_time)) }
                            td { (level_badge(episode.level)) }
                            td { (drivers(&episode.drivers)) }
                            td { (exhaustion(episode.exhaustion_secs)) }
                            td { (kib(episode.deficit_kib)) }
                            td {
                                @if episode.at_balloon_floor {
                                    "yes (floor " (kib(episode.balloon_floor_kib)) ")"
                                } @else { "no" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The overview's "VMs under pressure now": open episodes, newest activity first.
pub fn under_pressure_now(open: &[EpisodeRecord]) -> Markup {
    html! {
        section #under-pressure {
            h2 { "VMs under pressure now" }
            @if open.is_empty() {
                p.empty { "No open pressure episode." }
            } @else {
                table {
                    thead { tr {
                        th { "VM" } th { "Host" } th { "Level" } th { "Since" }
                        th { "Last activity" } th { "Drivers" } th { "Exhaustion in" }
                    } }
                    tbody {
                        @for episode in open {
                            tr {
                                td { (vm_link(&episode.host, &episode.uuid, &episode.name)) }
                                td { (host_link(&episode.host)) }
                                td { (level_badge(episode.level)) }
                                td { (format::date_time(episode.started_at_ms)) }
                                td { (format::date_time(episode.last_at_ms)) }
                                td { (drivers(&episode.drivers)) }
                                td { (exhaustion(episode.exhaustion_secs)) }
                            }
                        }
                    }
                }
                @if open.len() >= usize::try_from(OPEN_LISTED).unwrap_or(usize::MAX) {
                    p.note { "The " (OPEN_LISTED) " with the newest activity; "
                        a href="/api/v1/pressure/open" { "all open episodes" } "." }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_model::PressureSnapshot;

    fn episode(name: &str, level: RiskLevel, ended: Option<i64>) -> EpisodeRecord {
        EpisodeRecord {
            host: "pve1".into(),
            uuid: "3f2a".into(),
            name: name.into(),
            started_at_ms: 1_000_000,
            last_at_ms: 1_060_000,
            ended_at_ms: ended,
            level,
            drivers: vec![PressureSignal::PsiFull],
            exhaustion_secs: Some(40),
            signals: PressureSnapshot::default(),
            peak_alloc_stalls_per_s: None,
            peak_psi_some_avg10: None,
            peak_psi_full_avg10: None,
            deficit_kib: Some(65_536),
            at_balloon_floor: true,
            balloon_floor_kib: Some(262_144),
            actual_kib: None,
            maximum_kib: None,
        }
    }

    #[test]
    fn a_guest_named_vm_is_escaped_in_the_list() {
        let html = under_pressure_now(&[episode("<script>x</script>", RiskLevel::Critical, None)])
            .into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("r-critical"));
    }

    #[test]
    fn episodes_shade_in_two_tints_with_a_legend() {
        let episodes = [
            episode("a", RiskLevel::Elevated, Some(1_030_000)),
            episode("b", RiskLevel::Critical, None),
        ];
        let html = chart(&[], &episodes, (900_000, 1_200_000)).into_string();
        assert!(html.contains("band episode-elevated"), "{html}");
        assert!(html.contains("band episode-critical"), "{html}");
        assert!(html.contains("pressure episode: elevated"));
        assert!(html.contains("pressure episode: critical"));
        assert!(html.contains("signals: none"), "no signal says so");
    }
}
