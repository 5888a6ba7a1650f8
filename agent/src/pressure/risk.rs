//! The risk model: one VM's recent pressure points read as `ok | elevated | critical`,
//! with the signals that drove it, a predicted time to exhaustion and the memory the
//! guest lacks. Pure; every figure in is guest-reported and hostile (NaN, infinity,
//! negative rates, MemAvailable above MemTotal are read as missing or clamped).
//!
//! The reading, as the guest kernel's memory management sees it:
//! - MemAvailable already counts reclaimable page cache, so kswapd scanning and
//!   reclaiming (the async counters) with MemAvailable steady is a guest using its page
//!   cache, not pressure; the async counters never drive a level.
//! - Direct reclaim, allocation stalls, PSI, major faults and swap-in are distress only
//!   while MemAvailable is short ([`RiskSettings::comfort_pct`]); with plenty available
//!   they are cache turnover. PSI `full` (every task stalled on memory: thrashing) counts
//!   whatever MemAvailable says, since a file-backed working set counts as available.
//! - Major faults and swap-in count against the VM's own calm-time [`Baseline`].
//! - MemAvailable falling toward zero is read from a slope over the recent points,
//!   confirmed by the last three distinct guest reports (a drop that stopped is no
//!   longer falling; a report two polls saw is one figure).
//! - Persistence: a level is reported only when the poll before was not `ok` either, so
//!   one bad poll never starts an episode.
//!
//! Time figures are host seconds between polls; a TCG guest (about ten times slower)
//! falls or stalls more slowly per host second, so its predicted exhaustion is simply
//! further away, and the horizons below hold for it (the critical horizon is also at
//! least two polls).

use std::time::SystemTime;

use ballast_model::{PressureSignal, PressureSnapshot, RiskLevel, SignalSource};

/// MemAvailable below this share of MemTotal is low (elevated).
pub const AVAILABLE_LOW_PCT: f64 = 10.0;
/// MemAvailable below this share of MemTotal, with the guest stalling or MemAvailable
/// still falling, is critical (the kernel is near its watermarks).
pub const AVAILABLE_CRITICAL_PCT: f64 = 4.0;
/// MemAvailable at or above this share of MemTotal: reclaim and faults are cache turnover.
pub const COMFORT_PCT: f64 = 25.0;
/// MemAvailable predicted to run out within this many seconds: elevated.
pub const ELEVATED_HORIZON_SECS: f64 = 600.0;
/// MemAvailable predicted to run out within this many seconds (or two polls): critical.
pub const CRITICAL_HORIZON_SECS: f64 = 60.0;
/// The critical horizon covers at least this many polls.
pub const CRITICAL_HORIZON_POLLS: f64 = 2.0;
/// A fall counts only when the slope window lost at least this share of MemTotal.
pub const MIN_FALL_PCT: f64 = 1.0;
/// A fall alone is critical only after this many reports in a row each fell.
pub const SUSTAINED_FALLS: usize = 3;
/// Allocation stalls per second that are distress, and that are a hard stall.
pub const ALLOC_STALLS_PER_S: f64 = 0.5;
pub const ALLOC_STALLS_HARD_PER_S: f64 = 20.0;
/// Direct reclaim and direct scan rates (KiB/s) that are distress.
pub const DIRECT_RECLAIM_KIB_PER_S: f64 = 256.0;
pub const DIRECT_SCAN_KIB_PER_S: f64 = 1024.0;
/// Major faults per second and swap-in KiB/s that are distress, at least; and the
/// factor over the VM's own baseline they must also exceed.
pub const MAJOR_FAULTS_PER_S: f64 = 20.0;
pub const SWAP_IN_KIB_PER_S: f64 = 256.0;
pub const BASELINE_FACTOR: f64 = 10.0;
/// PSI avg10 percentages: `some` and `full` that are distress, `full` that is a hard stall.
pub const PSI_SOME_PCT: f64 = 10.0;
pub const PSI_FULL_PCT: f64 = 5.0;
pub const PSI_FULL_HARD_PCT: f64 = 20.0;
/// Points the MemAvailable slope is fitted over (when the snapshot has none).
pub const SLOPE_POINTS: usize = 6;
/// Seconds of the current direct reclaim rate counted as missing memory.
pub const STALL_DEFICIT_SECS: f64 = 10.0;
/// A predicted exhaustion further away than this is no prediction.
pub const MAX_EXHAUSTION_SECS: f64 = 86_400.0;

/// The largest rate or size believed (KiB, KiB/s, per second): beyond any machine.
const MAX_FIGURE: f64 = 1e12;

/// The model's thresholds; [`RiskSettings::default`] holds the documented constants
/// above (no configuration keys this round).
#[derive(Debug, Clone, PartialEq)]
pub struct RiskSettings {
    pub available_low_pct: f64,
    pub available_critical_pct: f64,
    pub comfort_pct: f64,
    pub elevated_horizon_secs: f64,
    pub critical_horizon_secs: f64,
    pub critical_horizon_polls: f64,
    pub min_fall_pct: f64,
    pub sustained_falls: usize,
    pub alloc_stalls_per_s: f64,
    pub alloc_stalls_hard_per_s: f64,
    pub direct_reclaim_kib_per_s: f64,
    pub direct_scan_kib_per_s: f64,
    pub major_faults_per_s: f64,
    pub swap_in_kib_per_s: f64,
    pub baseline_factor: f64,
    pub psi_some_pct: f64,
    pub psi_full_pct: f64,
    pub psi_full_hard_pct: f64,
    pub slope_points: usize,
    pub stall_deficit_secs: f64,
}

impl Default for RiskSettings {
    fn default() -> Self {
        Self {
            available_low_pct: AVAILABLE_LOW_PCT,
            available_critical_pct: AVAILABLE_CRITICAL_PCT,
            comfort_pct: COMFORT_PCT,
            elevated_horizon_secs: ELEVATED_HORIZON_SECS,
            critical_horizon_secs: CRITICAL_HORIZON_SECS,
            critical_horizon_polls: CRITICAL_HORIZON_POLLS,
            min_fall_pct: MIN_FALL_PCT,
            sustained_falls: SUSTAINED_FALLS,
            alloc_stalls_per_s: ALLOC_STALLS_PER_S,
            alloc_stalls_hard_per_s: ALLOC_STALLS_HARD_PER_S,
            direct_reclaim_kib_per_s: DIRECT_RECLAIM_KIB_PER_S,
            direct_scan_kib_per_s: DIRECT_SCAN_KIB_PER_S,
            major_faults_per_s: MAJOR_FAULTS_PER_S,
            swap_in_kib_per_s: SWAP_IN_KIB_PER_S,
            baseline_factor: BASELINE_FACTOR,
            psi_some_pct: PSI_SOME_PCT,
            psi_full_pct: PSI_FULL_PCT,
            psi_full_hard_pct: PSI_FULL_HARD_PCT,
            slope_points: SLOPE_POINTS,
            stall_deficit_secs: STALL_DEFICIT_SECS,
        }
    }
}

/// A level's rank: 0 ok, 1 elevated, 2 critical (`unknown`, a newer peer's name,
/// ranks as ok: the model never makes it). The `ballast_vm_pressure_risk` value.
pub fn rank(level: RiskLevel) -> u8 {
    match level {
        RiskLevel::Ok | RiskLevel::Unknown => 0,
        RiskLevel::Elevated => 1,
        RiskLevel::Critical => 2,
    }
}

/// One poll of one VM, as the model reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskPoint {
    /// The poll's host time.
    pub at: SystemTime,
    pub snapshot: PressureSnapshot,
    /// Guest MemAvailable (the balloon stats' `usable`).
    pub usable_kib: Option<u64>,
    /// Guest MemTotal (the balloon stats' `available`).
    pub total_kib: Option<u64>,
    /// The balloon as the host sees it.
    pub actual_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
    /// The lowest the host's balloon policy may take the VM.
    pub floor_kib: Option<u64>,
    /// When the guest made the balloon stats report (host epoch seconds): two polls
    /// that saw the same report are one figure, not a flat line.
    pub report_epoch_secs: Option<u64>,
}

impl RiskPoint {
    /// A point with no figures but its time.
    pub fn empty(at: SystemTime) -> Self {
        Self {
            at,
            snapshot: PressureSnapshot::default(),
            usable_kib: None,
            total_kib: None,
            actual_kib: None,
            maximum_kib: None,
            floor_kib: None,
            report_epoch_secs: None,
        }
    }

    /// MemAvailable as a percentage of MemTotal (MemAvailable above MemTotal is clamped).
    fn available_pct(&self) -> Option<f64> {
        let total = self.total_kib.filter(|total| *total > 0)?;
        let usable = self.usable_kib?.min(total);
        Some(usable as f64 * 100.0 / total as f64)
    }
}

/// A VM's own calm-time rates of major faults and swap-in (a moving average over polls
/// whose own reading was `ok`, [`Assessment::raw_level`]): some workloads fault a lot
/// all the time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Baseline {
    pub major_faults_per_s: Option<f64>,
    pub swap_in_kib_per_s: Option<f64>,
}

impl Baseline {
    /// Weight of a new poll in the moving average.
    const WEIGHT: f64 = 0.1;

    /// Folds a calm poll's rates in (the caller calls it only for polls whose
    /// `raw_level` is `ok`: a first bad poll must not raise the bar for the next).
    pub fn learn(&mut self, snapshot: &PressureSnapshot) {
        let fold = |old: Option<f64>, new: Option<f64>| match (old, rate(new)) {
            (Some(old), Some(new)) => Some(old + (new - old) * Self::WEIGHT),
            (None, new) => new,
            (old, None) => old,
        };
        self.major_faults_per_s = fold(self.major_faults_per_s, snapshot.major_faults_per_s);
        self.swap_in_kib_per_s = fold(self.swap_in_kib_per_s, snapshot.swap_in_kib_per_s);
    }
}

/// What [`assess`] reads: the recent points (oldest first, bounded by the caller) and
/// the VM's baseline.
#[derive(Debug, Clone, Copy)]
pub struct RiskInput<'a> {
    pub window: &'a [RiskPoint],
    pub baseline: &'a Baseline,
    pub settings: &'a RiskSettings,
}

/// The model's answer for the newest point.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The level after persistence (what episodes, metrics and status show).
    pub level: RiskLevel,
    /// The newest poll's level alone, before persistence.
    pub raw_level: RiskLevel,
    /// The signals that drove the level, strongest first (empty when `ok`).
    pub drivers: Vec<PressureSignal>,
    /// Seconds until MemAvailable runs out at its current fall; None when it is not
    /// falling (or not known).
    pub exhaustion_secs: Option<u64>,
    /// KiB that, given back, would bring MemAvailable above the low threshold and cover
    /// the fall over the critical horizon and the direct reclaim; None when `ok`.
    pub deficit_kib: Option<u64>,
    /// The part of the deficit missing now (MemAvailable below the low threshold, and
    /// direct reclaim), without the fall still to come; None when `ok`. What the guard
    /// compares with the balloon before it says a need is beyond the VM's maximum.
    pub shortfall_kib: Option<u64>,
    /// Where the newest point's figures came from; empty: the model had nothing to
    /// read, and its `ok` means unknown ([`Assessment::has_signals`]).
    pub sources: Vec<SignalSource>,
}

impl Assessment {
    /// The model had at least one figure to read.
    pub fn has_signals(&self) -> bool {
        !self.sources.is_empty()
    }
}

/// Assesses the newest point of `input.window` (an empty window: `ok`, no signals).
pub fn assess(input: RiskInput<'_>) -> Assessment {
    let window = input.window;
    let Some(last) = window.last() else {
        return Assessment {
            level: RiskLevel::Ok,
            raw_level: RiskLevel::Ok,
            drivers: Vec::new(),
            exhaustion_secs: None,
            deficit_kib: None,
            shortfall_kib: None,
            sources: Vec::new(),
        };
    };
    let now = read(window, input.baseline, input.settings);
    let before = match newest_report_start(window) {
        0 => None,
        start => Some(read(&window[..start], input.baseline, input.settings)),
    };
    // One bad report is not an episode: the reading of the guest's report before this
    // one must not have been ok. Two polls that saw the same report are one reading
    // (a TCG guest reports more slowly than the agent polls).
    let level = match before.as_ref().map(|b| b.level) {
        Some(RiskLevel::Elevated | RiskLevel::Critical) => now.level,
        _ => RiskLevel::Ok,
    };
    let mut sources = last.snapshot.sources();
    if last.available_pct().is_some() && !sources.contains(&SignalSource::BalloonStats) {
        sources.push(SignalSource::BalloonStats);
    }
    let calm = level == RiskLevel::Ok;
    Assessment {
        level,
        raw_level: now.level,
        drivers: if calm { Vec::new() } else { now.drivers },
        exhaustion_secs: now.exhaustion_secs,
        deficit_kib: if calm { None } else { now.deficit_kib },
        shortfall_kib: if calm { None } else { now.shortfall_kib },
        sources,
    }
}

/// Where the run of polls that saw the newest guest report starts in `window` (the
/// newest poll alone when the report's time is unknown).
fn newest_report_start(window: &[RiskPoint]) -> usize {
    let Some(last) = window.last() else {
        return 0;
    };
    let Some(stamp) = last.report_epoch_secs else {
        return window.len() - 1;
    };
    window
        .iter()
        .rposition(|p| p.report_epoch_secs != Some(stamp))
        .map_or(0, |index| index + 1)
}

/// One poll's reading, before persistence.
struct Reading {
    level: RiskLevel,
    drivers: Vec<PressureSignal>,
    exhaustion_secs: Option<u64>,
    deficit_kib: Option<u64>,
    shortfall_kib: Option<u64>,
}

/// A rate as the model believes it: finite, not negative, below any machine's figures.
fn rate(value: Option<f64>) -> Option<f64> {
    value
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v.min(MAX_FIGURE))
}

/// A PSI percentage: finite, clamped to 0..=100.
fn percent(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite()).map(|v| v.clamp(0.0, 100.0))
}

/// Seconds between two host times (0 when the clock went back).
fn secs_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).unwrap_or_default().as_secs_f64()
}

/// Least-squares slope (KiB/s) of `value` over `points` (distinct reports); None with
/// fewer than `min_points` of them or no time between them.
fn fitted_slope(
    points: &[&RiskPoint],
    min_points: usize,
    value: impl Fn(&RiskPoint) -> Option<f64>,
) -> Option<f64> {
    let origin = points.first()?.at;
    let xy: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| Some((secs_between(origin, p.at), value(p)?)))
        .collect();
    if xy.len() < min_points.max(2) {
        return None;
    }
    let n = xy.len() as f64;
    let mean_x = xy.iter().map(|(x, _)| x).sum::<f64>() / n;
    let mean_y = xy.iter().map(|(_, y)| y).sum::<f64>() / n;
    let var: f64 = xy.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    if var <= f64::EPSILON {
        return None;
    }
    let cov: f64 = xy.iter().map(|(x, y)| (x - mean_x) * (y - mean_y)).sum();
    let slope = cov / var;
    slope.is_finite().then_some(slope)
}

/// What the guest's own use left of its memory at `point`, as the trend reads it:
/// MemAvailable less MemTotal when `net_of_total` (a balloon without deflate-on-oom
/// takes its pages out of MemTotal, so the host inflating it lowers both alike and this
/// stays put: the host's step is not the guest running out), else MemAvailable alone.
fn headroom(point: &RiskPoint, net_of_total: bool) -> Option<f64> {
    let usable = point.usable_kib? as f64;
    if !net_of_total {
        return Some(usable);
    }
    let total = point.total_kib.filter(|t| *t > 0)? as f64;
    Some(usable.min(total) - total)
}

/// The points of `window` with a MemAvailable figure, each guest report once (the
/// first poll that saw it).
fn distinct_reports(window: &[RiskPoint]) -> Vec<&RiskPoint> {
    let mut out: Vec<&RiskPoint> = Vec::with_capacity(window.len());
    for point in window.iter().filter(|p| p.usable_kib.is_some()) {
        let repeat = point.report_epoch_secs.is_some()
            && out
                .last()
                .is_some_and(|last| last.report_epoch_secs == point.report_epoch_secs);
        if !repeat {
            out.push(point);
        }
    }
    out
}

/// How MemAvailable falls: its rate (KiB/s, positive) and what the slope window lost.
#[derive(Debug, Clone, Copy)]
struct Fall {
    kib_per_s: f64,
    lost_kib: f64,
    /// How many reports in a row, up to the newest, each fell from the one before.
    streak: usize,
}

/// How many reports in a row at the end of `reports` each read lower than the one
/// before.
fn falling_streak(reports: &[&RiskPoint], value: impl Fn(&RiskPoint) -> Option<f64>) -> usize {
    reports
        .windows(2)
        .rev()
        .take_while(|pair| match (value(pair[0]), value(pair[1])) {
            (Some(before), Some(after)) => after < before,
            _ => false,
        })
        .count()
}

/// The fall of MemAvailable the guest itself causes, when it is falling now: the
/// newest report is below the one before, the slope over the window and over the last
/// three reports both fall, and the window lost a significant share of MemTotal. The
/// gentler of the two slopes counts.
///
/// Read net of MemTotal where every report has one ([`headroom`]): the host inflating
/// the balloon is a step with an end (its target), not a trend; the level checks still
/// read MemAvailable itself, so a guest the balloon squeezes reads low and stalls. The
/// snapshot's own slope (MemAvailable alone) counts only where MemTotal is unknown.
fn falling_kib_per_s(window: &[RiskPoint], settings: &RiskSettings) -> Option<Fall> {
    let last = window.last()?;
    let reports = distinct_reports(window);
    let span = &reports[reports.len().saturating_sub(settings.slope_points.max(3))..];
    let recent = &reports[reports.len().saturating_sub(3)..];
    let net = span
        .iter()
        .all(|p| p.total_kib.is_some_and(|total| total > 0));
    let value = |p: &RiskPoint| headroom(p, net);
    let newest_fell = match recent {
        [.., before, newest] => matches!(
            (value(before), value(newest)),
            (Some(before), Some(newest)) if newest < before
        ),
        _ => false,
    };
    if !newest_fell {
        return None;
    }
    let snapshot_slope = (!net)
        .then_some(last.snapshot.available_slope_kib_per_s)
        .flatten()
        .filter(|s| s.is_finite());
    let long = snapshot_slope.or_else(|| fitted_slope(span, 3, value))?;
    let short = fitted_slope(recent, 3, value)?;
    let fall = -(long.max(short));
    if fall.is_nan() || fall <= 0.0 {
        return None;
    }
    let highest = span
        .iter()
        .filter_map(|p| value(p))
        .fold(f64::NEG_INFINITY, f64::max);
    let lost = (highest - value(last)?).max(0.0);
    let significant = match last.total_kib.filter(|t| *t > 0) {
        Some(total) => lost * 100.0 >= total as f64 * settings.min_fall_pct,
        None => lost >= 4096.0,
    };
    (significant && lost.is_finite()).then_some(Fall {
        kib_per_s: fall.min(MAX_FIGURE),
        lost_kib: lost,
        streak: falling_streak(&reports, value),
    })
}

/// Reads the newest point of `window` alone.
fn read(window: &[RiskPoint], baseline: &Baseline, settings: &RiskSettings) -> Reading {
    let Some(last) = window.last() else {
        return Reading {
            level: RiskLevel::Ok,
            drivers: Vec::new(),
            exhaustion_secs: None,
            deficit_kib: None,
            shortfall_kib: None,
        };
    };
    let s = &last.snapshot;
    let available_pct = last.available_pct();
    let usable = last
        .usable_kib
        .map(|u| last.total_kib.map_or(u, |t| u.min(t)) as f64);
    let poll_secs = match window.len() {
        0 | 1 => 0.0,
        len => secs_between(window[len - 2].at, last.at).min(3600.0),
    };
    let critical_horizon = settings
        .critical_horizon_secs
        .max(settings.critical_horizon_polls * poll_secs);

    let falling = falling_kib_per_s(window, settings);
    let exhaustion = match (falling, usable) {
        (Some(fall), Some(usable)) => Some(usable / fall.kib_per_s)
            .filter(|secs| secs.is_finite() && *secs <= MAX_EXHAUSTION_SECS),
        _ => None,
    };

    // (signal, strength: 1.0 at its threshold)
    let mut drivers: Vec<(PressureSignal, f64)> = Vec::new();
    if let Some(pct) = available_pct.filter(|p| *p < settings.available_low_pct) {
        drivers.push((
            PressureSignal::AvailableLow,
            settings.available_low_pct / pct.max(0.1),
        ));
    }
    // (A poll slower than the elevated horizon's half still names the fall.)
    let elevated_horizon = settings.elevated_horizon_secs.max(critical_horizon);
    if let Some(secs) = exhaustion.filter(|secs| *secs <= elevated_horizon) {
        drivers.push((
            PressureSignal::AvailableFalling,
            elevated_horizon / secs.max(1.0),
        ));
    }
    // Stalls and faults are distress only while MemAvailable is short (or unknown).
    let mut push = |signal, value: Option<f64>, threshold: f64| {
        if let Some(value) = value.filter(|v| *v >= threshold && threshold > 0.0) {
            drivers.push((signal, value / threshold));
        }
    };
    let short = available_pct.is_none_or(|pct| pct < settings.comfort_pct);
    let gated = |value: Option<f64>| if short { rate(value) } else { None };
    push(
        PressureSignal::AllocStalls,
        gated(s.alloc_stalls_per_s),
        settings.alloc_stalls_per_s,
    );
    push(
        PressureSignal::DirectReclaim,
        gated(s.direct_reclaim_kib_per_s),
        settings.direct_reclaim_kib_per_s,
    );
    push(
        PressureSignal::DirectScan,
        gated(s.direct_scan_kib_per_s),
        settings.direct_scan_kib_per_s,
    );
    let above_baseline = |floor: f64, base: Option<f64>| {
        floor.max(base.map_or(0.0, |b| b * settings.baseline_factor))
    };
    push(
        PressureSignal::MajorFaults,
        gated(s.major_faults_per_s),
        above_baseline(settings.major_faults_per_s, baseline.major_faults_per_s),
    );
    push(
        PressureSignal::SwapIn,
        gated(s.swap_in_kib_per_s),
        above_baseline(settings.swap_in_kib_per_s, baseline.swap_in_kib_per_s),
    );
    let psi_some = percent(s.psi_some_avg10);
    let psi_full = percent(s.psi_full_avg10);
    push(
        PressureSignal::PsiSome,
        if short { psi_some } else { None },
        settings.psi_some_pct,
    );
    push(PressureSignal::PsiFull, psi_full, settings.psi_full_pct);
    drivers.sort_by(|a, b| b.1.total_cmp(&a.1));

    let stalling = drivers
        .iter()
        .any(|(signal, _)| !matches!(signal, PressureSignal::AvailableLow));
    let hard_stall = psi_full.is_some_and(|v| v >= settings.psi_full_hard_pct)
        || gated(s.alloc_stalls_per_s).is_some_and(|v| v >= settings.alloc_stalls_hard_per_s);
    let low = available_pct.is_some_and(|pct| pct < settings.available_low_pct);
    let very_low = available_pct.is_some_and(|pct| pct < settings.available_critical_pct);
    // A fall alone is critical only once it has gone on for `sustained_falls` reports
    // in a row: a working set taken at once, or a short spike, falls as fast as a
    // hog for a report or two and then stops (the guard suite's control runs).
    let sustained = falling.is_some_and(|f| f.streak >= settings.sustained_falls);
    let level = if (sustained && exhaustion.is_some_and(|secs| secs <= critical_horizon))
        || (hard_stall && low)
        || (very_low && stalling)
    {
        RiskLevel::Critical
    } else if drivers.is_empty() {
        RiskLevel::Ok
    } else {
        RiskLevel::Elevated
    };

    // What the guest lacks now (MemAvailable below the low threshold, and what direct
    // reclaim tears out), and what its fall will take over the critical horizon.
    let gap = match (last.total_kib.filter(|t| *t > 0), usable) {
        (Some(total), Some(usable)) => {
            (total as f64 * settings.available_low_pct / 100.0 - usable).max(0.0)
        }
        _ => 0.0,
    };
    let reclaim = gated(s.direct_reclaim_kib_per_s).map_or(0.0, |r| {
        let cap = last.total_kib.map_or(MAX_FIGURE, |t| t as f64 / 4.0);
        (r * settings.stall_deficit_secs).min(cap)
    });
    // The fall over the critical horizon, at most what the window already lost: a
    // burst (a balloon inflating, a hog's first touch) falls tens of MiB a second for
    // a poll or two, which extrapolated is no deficit.
    let fall = falling.map_or(0.0, |f| (f.kib_per_s * critical_horizon).min(f.lost_kib));
    let as_kib = |kib: f64| {
        (level != RiskLevel::Ok && kib.is_finite() && kib >= 1.0)
            .then(|| kib.min(MAX_FIGURE) as u64)
    };
    let deficit_kib = as_kib(gap + fall + reclaim);
    let shortfall_kib = as_kib(gap + reclaim);

    Reading {
        level,
        drivers: drivers.into_iter().map(|(signal, _)| signal).collect(),
        exhaustion_secs: exhaustion.map(|secs| secs.round() as u64),
        deficit_kib,
        shortfall_kib,
    }
}

#[cfg(test)]
mod tests;
