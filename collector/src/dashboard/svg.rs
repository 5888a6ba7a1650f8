//! Server-side SVG charts: no JavaScript, styled by the embedded stylesheet through
//! classes (no inline styles, so the CSP needs no `'unsafe-inline'`). Labels go
//! through maud and are escaped like any other text.
//!
//! - [`line_chart`]: memory series over time with vertical OOM markers (and, with
//!   [`line_chart_with_bands`], shaded pressure episodes).
//! - [`rate_chart`]: pressure signals over time with shaded episodes.
//! - [`stacked_bars`]: counts per time bucket, stacked by group.

use maud::{html, Markup};

use crate::reports::format;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 74.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One series of a line chart: `(time ms, KiB)` points, oldest first.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    pub label: &'a str,
    /// CSS class (its stroke colour).
    pub class: &'static str,
    pub points: Vec<(i64, u64)>,
}

/// A vertical marker (an OOM).
#[derive(Debug, Clone)]
pub struct Mark {
    pub at_ms: i64,
    pub label: String,
    pub href: Option<String>,
}

struct Scale {
    x0: i64,
    x1: i64,
    y_max: f64,
}

impl Scale {
    /// Times are stored agent-sent figures: differences in i128, never overflowing.
    fn x(&self, t: i64) -> f64 {
        let span = (i128::from(self.x1) - i128::from(self.x0)).max(1) as f64;
        LEFT + (i128::from(t) - i128::from(self.x0)) as f64 / span * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, value: f64) -> f64 {
        HEIGHT - BOTTOM - value / self.y_max * (HEIGHT - TOP - BOTTOM)
    }
}

/// The time `part / parts` of the way from `x0` to `x1`, without overflow.
fn between(x0: i64, x1: i64, part: i64, parts: i64) -> i64 {
    let at =
        i128::from(x0) + (i128::from(x1) - i128::from(x0)) * i128::from(part) / i128::from(parts);
    i64::try_from(at).unwrap_or(x1)
}

fn time_label(ms: i64, span_ms: i64) -> String {
    if span_ms > 2 * 86_400_000 {
        format::date(ms)
    } else {
        format::hour_minute(ms)
    }
}

/// A shaded time span behind a chart's lines (a pressure episode).
#[derive(Debug, Clone)]
pub struct Band {
    pub from_ms: i64,
    /// The end; an open span reaches the chart's right edge.
    pub to_ms: Option<i64>,
    /// CSS class (its fill).
    pub class: &'static str,
    /// The tooltip (escaped by maud like all text).
    pub label: String,
}

/// The legend entries of the band classes present: `(class, label)` once each.
fn band_legend<'a>(
    bands: &[Band],
    kinds: &'a [(&'static str, &'static str)],
) -> Vec<&'a (&'static str, &'static str)> {
    kinds
        .iter()
        .filter(|(class, _)| bands.iter().any(|band| band.class == *class))
        .collect()
}

/// The band classes and their legend labels.
pub const BAND_KINDS: [(&str, &str); 2] = [
    ("episode-elevated", "pressure episode: elevated"),
    ("episode-critical", "pressure episode: critical"),
];

fn band_rects(scale: &Scale, bands: &[Band], x0: i64, x1: i64) -> Markup {
    html! {
        @for band in bands {
            @let from = band.from_ms.max(x0);
            @let to = band.to_ms.unwrap_or(x1).min(x1);
            @if from <= to {
                @let left = scale.x(from);
                rect class={ "band " (band.class) } x=(fmt(left)) y=(TOP)
                    width=(fmt((scale.x(to) - left).max(2.0))) height=(HEIGHT - TOP - BOTTOM) {
                    title { (band.label) }
                }
            }
        }
    }
}

/// A line chart of memory figures with markers. `range` fixes the time axis.
pub fn line_chart(
    aria: &str,
    lines: &[Line<'_>],
    marks: &[Mark],
    range: Option<(i64, i64)>,
) -> Markup {
    line_chart_with_bands(aria, lines, marks, &[], range)
}

/// A guard action's marker on a memory chart: a vertical line with a dot on top,
/// its class one of [`GUARD_KINDS`] (deflated, would deflate, overridden, held back).
#[derive(Debug, Clone, PartialEq)]
pub struct GuardMark {
    pub at_ms: i64,
    pub class: &'static str,
    /// The tooltip (escaped by maud like all text).
    pub label: String,
}

/// The guard marker classes and their legend labels, in legend order.
pub const GUARD_KINDS: [(&str, &str); 4] = [
    ("guard-deflated", "guard: deflated"),
    ("guard-would", "guard: would have deflated (observe)"),
    ("guard-overridden", "guard: overridden by host policy"),
    (
        "guard-held",
        "guard: held back (nothing to give, beyond maximum, rate limit, failed)",
    ),
];

/// [`line_chart`] with shaded spans behind the lines.
pub fn line_chart_with_bands(
    aria: &str,
    lines: &[Line<'_>],
    marks: &[Mark],
    bands: &[Band],
    range: Option<(i64, i64)>,
) -> Markup {
    line_chart_with_guard(aria, lines, marks, &[], bands, range)
}

/// The virtio-mem resize marker classes and their legend labels (a [`GuardMark`] of
/// one of these is drawn as a line with a square at the foot).
pub const RESIZE_KINDS: [(&str, &str); 2] = [
    ("resize-changed", "virtio-mem resize"),
    ("resize-stuck", "virtio-mem resize stuck"),
];

/// [`line_chart_with_bands`] with the guard's actions marked.
pub fn line_chart_with_guard(
    aria: &str,
    lines: &[Line<'_>],
    marks: &[Mark],
    guard: &[GuardMark],
    bands: &[Band],
    range: Option<(i64, i64)>,
) -> Markup {
    line_chart_with_resizes(aria, lines, marks, guard, &[], bands, range)
}

/// [`line_chart_with_guard`] with virtio-mem resizes marked (classes of
/// [`RESIZE_KINDS`]).
pub fn line_chart_with_resizes(
    aria: &str,
    lines: &[Line<'_>],
    marks: &[Mark],
    guard: &[GuardMark],
    resizes: &[GuardMark],
    bands: &[Band],
    range: Option<(i64, i64)>,
) -> Markup {
    let all = lines.iter().flat_map(|l| l.points.iter());
    let (t_min, t_max) = all.clone().fold((i64::MAX, i64::MIN), |(lo, hi), (t, _)| {
        (lo.min(*t), hi.max(*t))
    });
    let (x0, x1) = match range {
        Some(range) => range,
        None if t_min <= t_max => {
            let marks_min = marks.iter().map(|m| m.at_ms).min().unwrap_or(t_min);
            let marks_max = marks.iter().map(|m| m.at_ms).max().unwrap_or(t_max);
            (t_min.min(marks_min), t_max.max(marks_max))
        }
        None => {
            return html! { p.empty { "No memory samples in this range." } };
        }
    };
    let y_top = all.map(|(_, v)| *v).max().unwrap_or(0).max(1024) as f64 * 1.08;
    let scale = Scale {
        x0,
        x1: x1.max(x0.saturating_add(1)),
        y_max: y_top,
    };
    let y_ticks: Vec<f64> = (0..=4).map(|i| y_top * f64::from(i) / 4.0).collect();
    let x_ticks: Vec<i64> = (0..=5).map(|i| between(x0, x1, i, 5)).collect();
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(aria) {
                @for value in &y_ticks {
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(fmt(scale.y(*value))) y2=(fmt(scale.y(*value))) {}
                    text.axis x=(LEFT - 6.0) y=(fmt(scale.y(*value) + 4.0)) text-anchor="end" { (format::kib(*value as u64)) }
                }
                @for (i, t) in x_ticks.iter().enumerate() {
                    text.axis x=(fmt(scale.x(*t))) y=(HEIGHT - 8.0) text-anchor=(anchor(i, x_ticks.len())) { (time_label(*t, x1.saturating_sub(x0))) }
                }
                (band_rects(&scale, bands, x0, x1))
                line.axis-line x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(HEIGHT - BOTTOM) {}
                line.axis-line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(HEIGHT - BOTTOM) y2=(HEIGHT - BOTTOM) {}
                @for line in lines {
                    @if !line.points.is_empty() {
                        polyline class={ "series " (line.class) } points=(polyline(&scale, &line.points, x0, x1)) {
                            title { (line.label) }
                        }
                    }
                }
                @for mark in guard {
                    @if mark.at_ms >= x0 && mark.at_ms <= x1 {
                        @let x = fmt(scale.x(mark.at_ms));
                        g class={ "guard-mark " (mark.class) } {
                            title { (mark.label) }
                            line x1=(x) x2=(x) y1=(TOP + 14.0) y2=(HEIGHT - BOTTOM) {}
                            circle cx=(x) cy=(TOP + 14.0) r="4" {}
                        }
                    }
                }
                @for mark in resizes {
                    @if mark.at_ms >= x0 && mark.at_ms <= x1 {
                        @let x = scale.x(mark.at_ms);
                        g class={ "resize " (mark.class) } {
                            title { (mark.label) }
                            line x1=(fmt(x)) x2=(fmt(x)) y1=(TOP + 20.0) y2=(HEIGHT - BOTTOM) {}
                            rect x=(fmt(x - 4.0)) y=(HEIGHT - BOTTOM - 8.0) width="8" height="8" {}
                        }
                    }
                }
                @for mark in marks {
                    @if mark.at_ms >= x0 && mark.at_ms <= x1 {
                        @let x = fmt(scale.x(mark.at_ms));
                        @match &mark.href {
                            Some(href) => {
                                a href=(href) {
                                    line.oom-mark x1=(x) x2=(x) y1=(TOP) y2=(HEIGHT - BOTTOM) { title { (mark.label) } }
                                    text.oom-label x=(x) y=(TOP + 10.0) text-anchor=(label_anchor(mark.at_ms, x0, x1)) { "OOM" }
                                }
                            }
                            None => {
                                line.oom-mark x1=(x) x2=(x) y1=(TOP) y2=(HEIGHT - BOTTOM) { title { (mark.label) } }
                                text.oom-label x=(x) y=(TOP + 10.0) text-anchor=(label_anchor(mark.at_ms, x0, x1)) { "OOM" }
                            }
                        }
                    }
                }
            }
            figcaption {
                ul.legend {
                    @for line in lines {
                        li { span class={ "swatch " (line.class) } {} (line.label) }
                    }
                    @if !marks.is_empty() {
                        li { span class="swatch oom" {} "OOM" }
                    }
                    @for (class, label) in band_legend(bands, &BAND_KINDS) {
                        li { span class={ "swatch " (class) } {} (label) }
                    }
                    @for (class, label) in GUARD_KINDS.iter().filter(|(class, _)| guard.iter().any(|g| g.class == *class)) {
                        li { span class={ "swatch " (class) } {} (label) }
                    }
                    @for (class, label) in RESIZE_KINDS.iter().filter(|(class, _)| resizes.iter().any(|r| r.class == *class)) {
                        li { span class={ "swatch " (class) } {} (label) }
                    }
                }
            }
        }
    }
}

/// One series of a rate chart: `(time ms, value)` points, oldest first.
#[derive(Debug, Clone)]
pub struct RateLine<'a> {
    pub label: &'a str,
    pub class: &'static str,
    pub points: Vec<(i64, f64)>,
}

/// A chart of pressure rates over `range` (plain numbers on the axis; each line's
/// label names its unit), with shaded episodes; says so when no line has a point.
pub fn rate_chart(aria: &str, lines: &[RateLine<'_>], bands: &[Band], range: (i64, i64)) -> Markup {
    let (x0, x1) = range;
    let y_top = lines
        .iter()
        .flat_map(|line| line.points.iter().map(|(_, v)| *v))
        .filter(|v| v.is_finite())
        .fold(1.0_f64, f64::max)
        * 1.08;
    let scale = Scale {
        x0,
        x1: x1.max(x0.saturating_add(1)),
        y_max: y_top,
    };
    let y_ticks: Vec<f64> = (0..=4).map(|i| y_top * f64::from(i) / 4.0).collect();
    let x_ticks: Vec<i64> = (0..=5).map(|i| between(x0, x1, i, 5)).collect();
    let empty = lines.iter().all(|line| line.points.is_empty());
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(aria) {
                @for value in &y_ticks {
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(fmt(scale.y(*value))) y2=(fmt(scale.y(*value))) {}
                    text.axis x=(LEFT - 6.0) y=(fmt(scale.y(*value) + 4.0)) text-anchor="end" { (format!("{value:.1}")) }
                }
                @for (i, t) in x_ticks.iter().enumerate() {
                    text.axis x=(fmt(scale.x(*t))) y=(HEIGHT - 8.0) text-anchor=(anchor(i, x_ticks.len())) { (time_label(*t, x1.saturating_sub(x0))) }
                }
                (band_rects(&scale, bands, x0, x1))
                line.axis-line x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(HEIGHT - BOTTOM) {}
                line.axis-line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(HEIGHT - BOTTOM) y2=(HEIGHT - BOTTOM) {}
                @for line in lines {
                    @if !line.points.is_empty() {
                        polyline class={ "series " (line.class) } points=(rate_polyline(&scale, &line.points, x0, x1)) {
                            title { (line.label) }
                        }
                    }
                }
            }
            figcaption {
                ul.legend {
                    @for line in lines {
                        li { span class={ "swatch " (line.class) } {} (line.label) }
                    }
                    @for (class, label) in band_legend(bands, &BAND_KINDS) {
                        li { span class={ "swatch " (class) } {} (label) }
                    }
                }
                @if empty {
                    p.empty { "No pressure signals in this range (signals: none): not the same as no pressure." }
                }
            }
        }
    }
}

fn rate_polyline(scale: &Scale, points: &[(i64, f64)], x0: i64, x1: i64) -> String {
    points
        .iter()
        .filter(|(t, v)| *t >= x0 && *t <= x1 && v.is_finite())
        .map(|(t, v)| format!("{},{}", fmt(scale.x(*t)), fmt(scale.y(*v))))
        .collect::<Vec<_>>()
        .join(" ")
}

fn polyline(scale: &Scale, points: &[(i64, u64)], x0: i64, x1: i64) -> String {
    let mut out = String::with_capacity(points.len() * 14);
    for (t, value) in points.iter().filter(|(t, _)| *t >= x0 && *t <= x1) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&fmt(scale.x(*t)));
        out.push(',');
        out.push_str(&fmt(scale.y(*value as f64)));
    }
    out
}

/// Axis labels: the first starts at its tick, the last ends at it (never clipped).
fn anchor(index: usize, count: usize) -> &'static str {
    if index == 0 {
        "start"
    } else if index + 1 == count {
        "end"
    } else {
        "middle"
    }
}

/// A marker label near the right edge ends at its line.
fn label_anchor(at_ms: i64, x0: i64, x1: i64) -> &'static str {
    if at_ms.saturating_sub(x0) as f64 > x1.saturating_sub(x0) as f64 * 0.95 {
        "end"
    } else {
        "middle"
    }
}

fn fmt(value: f64) -> String {
    format!("{value:.1}")
}

/// One group of a stacked bar chart.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    pub key: &'a str,
    pub label: &'a str,
    pub class: &'static str,
}

struct Bar {
    class: &'static str,
    x: f64,
    y: f64,
    height: f64,
    title: String,
}

/// Counts per bucket stacked by group. `counts`: `(bucket start ms, group key, count)`.
pub fn stacked_bars(
    aria: &str,
    counts: &[(i64, String, i64)],
    groups: &[Group<'_>],
    range: (i64, i64),
    bucket_ms: i64,
) -> Markup {
    let (x0, x1) = range;
    let bucket_ms = bucket_ms.max(1);
    let n_buckets =
        usize::try_from((x1.saturating_sub(x0) / bucket_ms).clamp(1, 2000)).unwrap_or(1);
    let mut stacks: Vec<Vec<i64>> = vec![vec![0; groups.len()]; n_buckets];
    for (bucket, group, count) in counts {
        let index =
            usize::try_from(bucket.saturating_sub(x0).div_euclid(bucket_ms)).unwrap_or(usize::MAX);
        let group_index = groups
            .iter()
            .position(|g| g.key == group.as_str())
            .unwrap_or(groups.len().saturating_sub(1));
        if let Some(stack) = stacks.get_mut(index) {
            if let Some(cell) = stack.get_mut(group_index) {
                *cell = cell.saturating_add(*count);
            }
        }
    }
    let y_max = stacks
        .iter()
        .map(|s| s.iter().fold(0i64, |sum, count| sum.saturating_add(*count)))
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = Scale {
        x0: 0,
        x1: i64::try_from(n_buckets).unwrap_or(1),
        y_max: y_max as f64 * 1.1,
    };
    let bar_width = ((WIDTH - LEFT - RIGHT) / n_buckets as f64 * 0.8).max(1.0);
    let y_ticks: Vec<i64> = (0..=4)
        .map(|i| y_max.saturating_mul(i).saturating_add(3) / 4)
        .collect();
    let mut bars = Vec::new();
    for (index, stack) in stacks.iter().enumerate() {
        let mut base = 0i64;
        for (group, count) in groups.iter().zip(stack).filter(|(_, count)| **count > 0) {
            let top = scale.y(base.saturating_add(*count) as f64);
            let bottom = scale.y(base as f64);
            bars.push(Bar {
                class: group.class,
                x: scale.x(index as i64),
                y: top,
                height: (bottom - top).max(0.5),
                title: format!(
                    "{}: {count} ({})",
                    group.label,
                    format::date_time(x0.saturating_add((index as i64).saturating_mul(bucket_ms)))
                ),
            });
            base = base.saturating_add(*count);
        }
    }
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(aria) {
                @for value in &y_ticks {
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(fmt(scale.y(*value as f64))) y2=(fmt(scale.y(*value as f64))) {}
                    text.axis x=(LEFT - 6.0) y=(fmt(scale.y(*value as f64) + 4.0)) text-anchor="end" { (value) }
                }
                @for i in 0..=4i64 {
                    @let t = between(x0, x1, i, 4);
                    text.axis x=(fmt(LEFT + (WIDTH - LEFT - RIGHT) * i as f64 / 4.0)) y=(HEIGHT - 8.0) text-anchor=(anchor(usize::try_from(i).unwrap_or(0), 5)) { (time_label(t, x1.saturating_sub(x0))) }
                }
                line.axis-line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(HEIGHT - BOTTOM) y2=(HEIGHT - BOTTOM) {}
                @for bar in &bars {
                    rect class={ "bar " (bar.class) } x=(fmt(bar.x)) y=(fmt(bar.y))
                        width=(fmt(bar_width)) height=(fmt(bar.height)) {
                        title { (bar.title) }
                    }
                }
            }
            figcaption {
                ul.legend {
                    @for group in groups {
                        li { span class={ "swatch " (group.class) } {} (group.label) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_marks_drawn() {
        let chart = line_chart(
            "memory of <b>",
            &[Line {
                label: "<script>alert(1)</script>",
                class: "s-actual",
                points: vec![(0, 1024), (60_000, 2048)],
            }],
            &[Mark {
                at_ms: 30_000,
                label: "OOM <x>".into(),
                href: Some("/ooms/1".into()),
            }],
            None,
        )
        .into_string();
        assert!(
            chart.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{chart}"
        );
        assert!(!chart.contains("<script>"));
        assert!(chart.contains("class=\"oom-mark\""));
        assert!(chart.contains("OOM &lt;x&gt;"));
    }

    #[test]
    fn extreme_stored_times_and_figures_draw_without_overflow() {
        // Stored points come from agents; a store may hold any i64 time and u64 size.
        let extremes = [i64::MIN, -1, 0, i64::MAX];
        for &t0 in &extremes {
            for &t1 in &extremes {
                let chart = line_chart(
                    "memory",
                    &[Line {
                        label: "actual",
                        class: "s-actual",
                        points: vec![(t0, u64::MAX), (t1, 0)],
                    }],
                    &[Mark {
                        at_ms: t1,
                        label: "OOM".into(),
                        href: None,
                    }],
                    None,
                )
                .into_string();
                assert!(
                    chart.contains("<svg") || chart.contains("No memory"),
                    "{chart}"
                );
                let bars = stacked_bars(
                    "ooms",
                    &[(t0, "a".into(), i64::MAX), (t1, "a".into(), i64::MAX)],
                    &[Group {
                        key: "a",
                        label: "a",
                        class: "v-a",
                    }],
                    (t0, t1),
                    3_600_000,
                )
                .into_string();
                assert!(bars.contains("<svg"), "{bars}");
            }
        }
    }

    #[test]
    fn bars_stack_per_bucket() {
        let groups = [
            Group {
                key: "balloon",
                label: "balloon",
                class: "v-balloon",
            },
            Group {
                key: "other",
                label: "other",
                class: "v-other",
            },
        ];
        let chart = stacked_bars(
            "ooms",
            &[
                (0, "balloon".into(), 2),
                (0, "weird".into(), 1),
                (3_600_000, "balloon".into(), 1),
            ],
            &groups,
            (0, 7_200_000),
            3_600_000,
        )
        .into_string();
        assert_eq!(chart.matches("<rect").count(), 3, "{chart}");
        assert!(chart.contains("other: 1"));
    }
}
