//! Relates one OOM to the VM's balloon: pure, no I/O, never panics.
//!
//! Inputs: the OOM event as the agent sent it (report, analysis, the balloon at the
//! OOM, the agent's balloon history, host memory), the VM's configuration from the
//! inventory when known, and the collector's stored rollups of the window before.
//!
//! 1. The balloon at the OOM: maximum and actual from the host (`balloon_at_oom`,
//!    the agent's last sample before the kill was printed; else the newest history
//!    point or rollup that ended before `balloon_at_oom.kill_after_ms`, never one
//!    taken later: a stalled inflation completes once the kill frees memory). held =
//!    maximum - actual. Without host figures, the report's own balloon evidence
//!    (reserved far above normal) stands in.
//! 2. The window before the OOM: the peak `actual` in it, how much the balloon
//!    inflated from that peak down to the OOM, when that started and how fast.
//! 3. Context: MemAvailable before the OOM, allocation stalls in the window, host
//!    memory use against the ballooning target, unaccounted memory vs balloon size.
//! 4. Counterfactual (the report analysis's, with the host-measured balloon): with the
//!    balloon deflated the guest gains the held memory; it would have survived if that
//!    covers its shortfall at the OOM (the zones below their high watermark plus the
//!    failed allocation of its order: working set + watermarks + allocation, less
//!    what it had). A kill that returning the pages would not have prevented is never
//!    the balloon's, however much it held: a memcg limit, a host OOM of the VM's
//!    process, a working set above the VM's maximum (held below the shortfall).
//! 5. Verdict: `unknown` (no balloon figures), `not_balloon` (the balloon held
//!    nothing worth naming, or returning it would not have prevented the kill),
//!    `balloon` (it held enough that the guest would have survived without it),
//!    `balloon_contributed` (it held memory but the report lacks the figures to tell).
//! 6. The host's side over every mechanism (`host_took`, module [`host_took`]): the
//!    balloon's part plus virtio-mem's unplugged blocks, the same counterfactual with
//!    both given back; `verdict` above keeps its balloon-only meaning.

use ballast_model::{OomEvent, OomKind, ReportKind, VmConfig};

use crate::records::RollupPoint;

/// Tunables of the correlation.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationSettings {
    /// How far before the OOM to look.
    pub window_secs: u64,
    /// Host memory use above which ballooning is expected (percent).
    pub host_target_pct: f64,
    /// A balloon holding less than this is noise (KiB) ...
    pub noise_kib: u64,
    /// ... or less than this share of the maximum (percent).
    pub noise_pct: f64,
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        Self {
            window_secs: 3600,
            host_target_pct: 80.0,
            noise_kib: 16 * 1024,
            noise_pct: 2.0,
        }
    }
}

/// The correlation verdict (a wire vocabulary: `ballast_model`).
pub use ballast_model::CorrelationVerdict;

mod host_took;
pub mod outcome;
mod units;
use outcome::{Correlation, HeldSource};
use units::{mib, pct_of};

/// What the correlation looks at.
#[derive(Debug, Clone, Copy)]
pub struct CorrelationInput<'a> {
    /// When the OOM was captured (host clock, Unix ms).
    pub oom_at_ms: i64,
    pub event: &'a OomEvent,
    pub vm_config: Option<&'a VmConfig>,
    /// The VM's stored rollups, any order.
    pub rollups: &'a [RollupPoint],
}

/// One host observation of the balloon.
#[derive(Debug, Clone, Copy)]
struct Point {
    at_ms: i64,
    actual_kib: Option<u64>,
    /// The highest actual in the period (rollups), else `actual_kib`.
    actual_peak_kib: Option<u64>,
    maximum_kib: Option<u64>,
    usable_kib: Option<u64>,
}

/// Correlates one OOM with the balloon.
pub fn correlate(input: &CorrelationInput<'_>, settings: &CorrelationSettings) -> Correlation {
    let event = input.event;
    let window_ms = i64::try_from(settings.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let window_start = input.oom_at_ms.saturating_sub(window_ms);
    let points = window_points(input, window_start);
    let kill_after_ms = event.balloon_at_oom.kill_after_ms;
    let maximum_kib = event
        .balloon_at_oom
        .maximum_kib
        .or_else(|| points.iter().rev().find_map(|p| p.maximum_kib))
        .or_else(|| input.vm_config.and_then(|c| c.memory_kib));
    let deflate_on_oom = event
        .balloon_at_oom
        .deflate_on_oom
        .or_else(|| input.vm_config.and_then(|c| c.deflate_on_oom));
    // Without a host figure from the agent and without deflate-on-oom, the report's
    // reserved pages are the kernel's own figure of what the balloon held at the OOM.
    let report_held = (event.balloon_at_oom.actual_kib.is_none() && deflate_on_oom == Some(false))
        .then_some(event.analysis.balloon_held_kb)
        .flatten();
    // Only a point that ended before the kill was printed stands for the balloon at it,
    // and not one holding clearly less than the report shows when the newest point
    // agrees with the report: the balloon inflated between them, within one poll of
    // the kill. (A host figure that never moved stands against the report.)
    let held_at = |p: &Point| Some(maximum_kib?.saturating_sub(p.actual_kib?));
    let newest_held = points.iter().rev().find_map(held_at);
    let before_kill = kill_after_ms
        .and_then(|bound| points.iter().rev().find(|p| p.at_ms < bound))
        .filter(|p| {
            report_held.is_none_or(|report| {
                ballast_oom::sample_before_kill_stands(
                    held_at(p),
                    newest_held,
                    report,
                    settings.noise_kib,
                )
            })
        });
    let (actual_kib, from_event) = match event.balloon_at_oom.actual_kib {
        Some(actual) => (Some(actual), true),
        None => (before_kill.and_then(|p| p.actual_kib), false),
    };
    let floor_kib = input.vm_config.and_then(|c| c.balloon_floor_kib);

    let not_preventable = not_preventable(event);
    let (held, held_source) = match (maximum_kib, actual_kib) {
        _ if deflate_on_oom == Some(true) && not_preventable.is_none() => {
            (Some(0), Some(HeldSource::DeflatedBeforeKill))
        }
        (Some(maximum), Some(actual)) => (
            Some(maximum.saturating_sub(actual)),
            Some(if from_event {
                HeldSource::HostAtOom
            } else {
                HeldSource::HostHistory
            }),
        ),
        _ => match event.analysis.balloon_held_kb {
            Some(held) => (Some(held), Some(HeldSource::Report)),
            None => (None, None),
        },
    };

    let inflation = inflation(&points, actual_kib, settings.noise_kib);
    let usable_kib_before = points.iter().rev().find_map(|p| p.usable_kib);
    let alloc_stalls_in_window = stalls(input.rollups, window_start, input.oom_at_ms);
    let (host_used_pct, host_above_target) = host_use(event, input.rollups, settings);
    let unaccounted_kb = event.analysis.unaccounted_kb;
    let needed_kb = needed(event);
    let in_use_kb = in_use(event);
    let would_have_survived = match (held, needed_kb) {
        _ if not_preventable.is_some() => Some(false),
        (Some(held), Some(needed)) => Some(held > 0 && held >= needed),
        _ => None,
    };
    let noise = maximum_kib
        .map(|maximum| pct_of(maximum, settings.noise_pct))
        .unwrap_or(0)
        .max(settings.noise_kib);
    let held_explains_unaccounted = match (held, unaccounted_kb, deflate_on_oom) {
        (Some(held), Some(unaccounted), Some(true)) if unaccounted > noise => {
            Some(held.saturating_mul(10) >= unaccounted.saturating_mul(8))
        }
        // Without deflate-on-oom the balloon's pages leave managed memory: they show
        // as reserved, never as unaccounted.
        (Some(_), Some(unaccounted), Some(false)) if unaccounted > noise => Some(false),
        (Some(0), Some(unaccounted), _) if unaccounted > noise => Some(false),
        _ => None,
    };

    let verdict = match held {
        None => CorrelationVerdict::Unknown,
        Some(_) if not_preventable.is_some() => CorrelationVerdict::NotBalloon,
        Some(held) if held <= noise => CorrelationVerdict::NotBalloon,
        Some(_) => match would_have_survived {
            Some(true) => CorrelationVerdict::Balloon,
            Some(false) => CorrelationVerdict::NotBalloon,
            None => CorrelationVerdict::BalloonContributed,
        },
    };

    let mut correlation = Correlation {
        verdict,
        reasons: Vec::new(),
        maximum_kib,
        actual_kib,
        balloon_held_kb: held,
        held_source,
        deflate_on_oom,
        floor_kib,
        window_points: points.len(),
        inflated_kb_before: inflation.map(|i| i.inflated_kib),
        inflation_started_at_ms: inflation.and_then(|i| i.started_at_ms),
        seconds_from_inflation: inflation
            .and_then(|i| i.started_at_ms)
            .map(|start| input.oom_at_ms.saturating_sub(start) / 1000),
        inflation_kib_per_sec: inflation.and_then(|i| i.kib_per_sec),
        usable_kib_before,
        alloc_stalls_in_window,
        host_used_pct,
        host_above_target,
        unaccounted_kb,
        held_explains_unaccounted,
        needed_kb,
        in_use_kb,
        not_preventable: not_preventable.map(str::to_string),
        would_have_survived,
        host_took: None,
    };
    correlation.host_took = host_took::host_took(
        event,
        input.oom_at_ms,
        window_start,
        &correlation,
        (settings.noise_kib, settings.noise_pct),
    );
    correlation.reasons = reasons(&correlation, settings, event);
    let virtio_mem = host_took::reasons(&correlation, input.oom_at_ms);
    // virtio-mem's story goes first when it, not the balloon, holds the answer.
    let virtio_first = !correlation.verdict.is_balloon()
        && correlation.host_took.as_ref().is_some_and(|took| {
            matches!(
                took.verdict,
                ballast_model::HostTookVerdict::HostTookMemory
                    | ballast_model::HostTookVerdict::HostContributed
            )
        });
    if virtio_first {
        correlation.reasons.splice(0..0, virtio_mem);
    } else {
        correlation.reasons.extend(virtio_mem);
    }
    correlation
}

/// History points and rollups inside the window, oldest first.
fn window_points(input: &CorrelationInput<'_>, window_start: i64) -> Vec<Point> {
    // Rollups first: the sort below is stable, so a rollup ending in the very second a
    // history point is stamped in (the agent's points keep whole seconds; a minute's
    // first poll is stamped in the second the previous minute's rollup ends) comes
    // before that point, as all its samples did. After it, the rollup's older `actual`
    // would pass for the newest figure.
    let mut points: Vec<Point> = input
        .rollups
        .iter()
        .map(|r| Point {
            at_ms: r
                .period_start_ms
                .saturating_add(r.period_secs.saturating_mul(1000)),
            actual_kib: r.actual_kib.last,
            actual_peak_kib: r.actual_kib.max.or(r.actual_kib.last),
            maximum_kib: r.maximum_kib,
            usable_kib: r.usable_kib.min.or(r.usable_kib.last),
        })
        .chain(input.event.balloon_history.iter().map(|p| Point {
            at_ms: p.at_ms,
            actual_kib: p.actual_kib,
            actual_peak_kib: p.actual_kib,
            maximum_kib: p.maximum_kib,
            usable_kib: p.usable_kib,
        }))
        .filter(|p| p.at_ms >= window_start && p.at_ms <= input.oom_at_ms)
        .collect();
    points.sort_by_key(|p| p.at_ms);
    points
}

#[derive(Debug, Clone, Copy)]
struct Inflation {
    inflated_kib: u64,
    started_at_ms: Option<i64>,
    kib_per_sec: Option<u64>,
}

/// How far `actual` came down from its peak in the window to the OOM.
fn inflation(points: &[Point], actual_at_oom: Option<u64>, noise_kib: u64) -> Option<Inflation> {
    let actual_at_oom = actual_at_oom?;
    let (peak_index, peak) = points
        .iter()
        .enumerate()
        .filter_map(|(index, p)| p.actual_peak_kib.map(|peak| (index, peak)))
        // The LATEST point at the peak: the descent starts after it.
        .fold(
            None,
            |best: Option<(usize, u64)>, (index, peak)| match best {
                Some((_, best_peak)) if best_peak > peak => best,
                _ => Some((index, peak)),
            },
        )?;
    let inflated_kib = peak.saturating_sub(actual_at_oom);
    if inflated_kib <= noise_kib {
        return Some(Inflation {
            inflated_kib,
            started_at_ms: None,
            kib_per_sec: None,
        });
    }
    let started_at_ms = points.get(peak_index).map(|p| p.at_ms);
    // Reached: the first point after the peak within noise of the OOM's actual.
    let reached_at_ms = points
        .iter()
        .skip(peak_index + 1)
        .find(|p| {
            p.actual_kib
                .is_some_and(|actual| actual <= actual_at_oom.saturating_add(noise_kib))
        })
        .map(|p| p.at_ms);
    let kib_per_sec = match (started_at_ms, reached_at_ms) {
        (Some(start), Some(end)) if end > start => {
            let millis = u64::try_from(end - start).unwrap_or(u64::MAX).max(1);
            Some(inflated_kib.saturating_mul(1000) / millis)
        }
        _ => None,
    };
    Some(Inflation {
        inflated_kib,
        started_at_ms,
        kib_per_sec,
    })
}

/// Allocation stalls counted over the window (the counter is cumulative).
fn stalls(rollups: &[RollupPoint], window_start: i64, oom_at_ms: i64) -> Option<u64> {
    let mut in_window: Vec<&RollupPoint> = rollups
        .iter()
        .filter(|r| r.period_start_ms >= window_start && r.period_start_ms <= oom_at_ms)
        .filter(|r| r.alloc_stalls.is_some())
        .collect();
    in_window.sort_by_key(|r| r.period_start_ms);
    let first = in_window.first()?.alloc_stalls?;
    let last = in_window.last()?.alloc_stalls?;
    Some(last.saturating_sub(first))
}

fn host_use(
    event: &OomEvent,
    rollups: &[RollupPoint],
    settings: &CorrelationSettings,
) -> (Option<f64>, Option<bool>) {
    let from_event = event
        .host
        .as_ref()
        .and_then(|h| Some((h.total_kib?, h.available_kib?)));
    let from_rollups = || {
        rollups
            .iter()
            .max_by_key(|r| r.period_start_ms)
            .and_then(|r| Some((r.host_total_kib?, r.host_available_kib?)))
    };
    let Some((total, available)) = from_event.or_else(from_rollups) else {
        return (None, None);
    };
    if total == 0 {
        return (None, None);
    }
    let used = total.saturating_sub(available) as f64 * 100.0 / total as f64;
    let used = (used * 10.0).round() / 10.0;
    (Some(used), Some(used > settings.host_target_pct))
}

/// What the guest lacked at the OOM: per zone with memory, how far free was below the
/// high watermark (the min one from agents that do not send it), plus the failed
/// allocation (2^order pages). The agent's own figure when the zones say nothing.
fn needed(event: &OomEvent) -> Option<u64> {
    let report = &event.report;
    let below: Vec<u64> = report
        .zones
        .iter()
        .filter(|z| z.managed_kb != Some(0))
        .filter_map(|z| Some(z.high_kb.or(z.min_kb)?.saturating_sub(z.free_kb?)))
        .collect();
    if below.is_empty() {
        return event.analysis.shortfall_kb;
    }
    let page_kb = report.page_size_kb.unwrap_or(4);
    let order = report.trigger.as_ref().and_then(|t| t.order).unwrap_or(0);
    let allocation = page_kb.saturating_mul(1u64 << order.min(20));
    Some(
        below
            .into_iter()
            .fold(0u64, u64::saturating_add)
            .saturating_add(allocation),
    )
}

/// Managed memory less the zones' free memory, from the report.
fn in_use(event: &OomEvent) -> Option<u64> {
    let managed = event.analysis.managed_kb?;
    let free = event
        .report
        .zones
        .iter()
        .filter_map(|z| z.free_kb)
        .fold(None, |sum: Option<u64>, free| {
            Some(sum.unwrap_or(0).saturating_add(free))
        })?;
    Some(managed.saturating_sub(free))
}

/// A kill that pages returned to the guest could not have prevented.
fn not_preventable(event: &OomEvent) -> Option<&'static str> {
    match event.kind {
        OomKind::Host => return Some("the host ran out of memory and killed the VM's process; returning balloon pages to the guest would only have made the host shorter"),
        OomKind::VmCgroup => return Some("the VM's cgroup on the host hit its limit; returning balloon pages to the guest does not raise it"),
        // An unknown kind never gets here: ingest refuses it.
        OomKind::Guest | OomKind::Unknown => {}
    }
    // A memcg OOM the kernel answered with a panic (`compulsory panic_on_oom`) is one too.
    let memcg_ran_out = event.report.kind == ReportKind::Memcg
        || (event.report.kind == ReportKind::Panic
            && event.report.memcg.as_ref().is_some_and(|m| m.oom.is_some()));
    memcg_ran_out
        .then_some("a memory cgroup inside the guest hit its limit; returning balloon pages to the guest does not raise it")
}

fn reasons(c: &Correlation, settings: &CorrelationSettings, event: &OomEvent) -> Vec<String> {
    let mut reasons = Vec::new();
    match (c.balloon_held_kb, c.held_source) {
        (_, Some(HeldSource::DeflatedBeforeKill)) => {
            let sampled = match (c.maximum_kib, c.actual_kib) {
                (Some(maximum), Some(actual)) if maximum > actual => format!(
                    " The host's last sample before it showed {} held: it predates the deflation.",
                    mib(maximum - actual)
                ),
                _ => String::new(),
            };
            reasons.push(format!(
                "deflate-on-oom was on: the guest's kernel takes the balloon's pages back before it kills (its OOM notifier runs first, the killer only once it returns nothing), so the balloon held nothing at this OOM and the guest ran out with the VM's whole memory.{sampled}"
            ));
        }
        (Some(held), Some(HeldSource::Report)) => reasons.push(format!(
            "No host balloon figures; the report's reserved memory suggests the balloon held about {}.",
            mib(held)
        )),
        (Some(held), _) => {
            let maximum = c.maximum_kib.map(mib).unwrap_or_else(|| "?".into());
            let actual = c.actual_kib.map(mib).unwrap_or_else(|| "?".into());
            reasons.push(format!(
                "The balloon held {} at the OOM (guest had {actual} of its {maximum}).",
                mib(held)
            ));
        }
        (None, _) => reasons.push(
            "No balloon figures: the host sent no balloon sample for this VM and the report shows no balloon evidence."
                .into(),
        ),
    }
    match (c.inflated_kb_before, c.seconds_from_inflation) {
        (Some(inflated), Some(seconds)) => {
            let speed = c
                .inflation_kib_per_sec
                .map(|rate| format!(" at {}/s", mib(rate)))
                .unwrap_or_default();
            reasons.push(format!(
                "The balloon inflated by {}{speed}, starting {seconds} s before the OOM.",
                mib(inflated)
            ));
        }
        (Some(_), None) if c.window_points > 0 => reasons.push(format!(
            "The balloon did not inflate in the {} min before the OOM ({} host samples).",
            settings.window_secs / 60,
            c.window_points
        )),
        _ => {}
    }
    if let (Some(floor), Some(actual)) = (c.floor_kib, c.actual_kib) {
        if actual.saturating_add(settings.noise_kib) < floor {
            reasons.push(format!(
                "The guest had {} although its configured floor is {}.",
                mib(actual),
                mib(floor)
            ));
        }
    }
    match c.deflate_on_oom {
        Some(false) if c.verdict != CorrelationVerdict::NotBalloon => reasons.push(
            "deflate-on-oom was off: the guest could not take balloon pages back under pressure."
                .into(),
        ),
        _ => {}
    }
    match (c.not_preventable.as_deref(), c.would_have_survived, c.needed_kb, c.balloon_held_kb) {
        (Some(why), _, _, _) => reasons.push(format!(
            "Not the balloon's, however much it held: {why}."
        )),
        (None, Some(true), Some(needed), Some(held)) if held > 0 => reasons.push(format!(
            "With the balloon deflated the guest would have had {} more, enough for the {} it lacked at the OOM (the zones below their high watermark plus the failed allocation).",
            mib(held),
            mib(needed)
        )),
        (None, Some(false), Some(needed), Some(held)) => reasons.push(format!(
            "Deflating the balloon ({}) would not have covered the {} the guest lacked at the OOM: {}.",
            mib(held),
            mib(needed),
            if c.host_took.as_ref().and_then(|took| took.unplugged_kib).is_some_and(|kib| kib > 0) {
                "the balloon alone could not give it back"
            } else {
                "its working set needed more than the VM's maximum"
            }
        )),
        (None, None, _, Some(_)) => reasons.push(
            "Cannot tell whether the guest would have survived: the report has no zone figures to say what it lacked."
                .into(),
        ),
        _ => {}
    }
    if let Some(usable) = c.usable_kib_before {
        reasons.push(format!("MemAvailable before the OOM: {}.", mib(usable)));
    }
    if let Some(stalls) = c.alloc_stalls_in_window.filter(|s| *s > 0) {
        reasons.push(format!(
            "The guest stalled in allocation {stalls} times in the window."
        ));
    }
    if let (Some(used), Some(above)) = (c.host_used_pct, c.host_above_target) {
        let target = settings.host_target_pct;
        reasons.push(if above {
            format!("Host memory was {used}% used, above the {target}% ballooning target: the host had reason to inflate.")
        } else {
            format!("Host memory was only {used}% used (target {target}%): the host had no need to take memory from the guest.")
        });
    }
    match (c.held_explains_unaccounted, c.unaccounted_kb) {
        (Some(true), Some(unaccounted)) => reasons.push(format!(
            "The {} the report cannot account for matches the balloon's size.",
            mib(unaccounted)
        )),
        (Some(false), Some(unaccounted)) => reasons.push(format!(
            "The report cannot account for {} of managed memory and the balloon does not explain it; look at kernel memory (network buffers, drivers, vmalloc). Report verdict: {}.",
            mib(unaccounted),
            event.analysis.verdict
        )),
        _ => {}
    }
    reasons
}

#[cfg(test)]
mod tests;
