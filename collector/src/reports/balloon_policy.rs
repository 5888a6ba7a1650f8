//! The balloon-policy report: for every VM with a balloon, what ballooning cost it
//! (OOMs, near misses), what it really uses (working set = MemTotal − MemAvailable
//! from the rollups), the floor that would have been safe, and the exact settings
//! to change. Pure: [`build`] takes facts gathered by `reports::load` (or built by
//! hand in tests) and returns the report; renderers are in `reports::render`.
//!
//! Rules, all in [`PolicySettings`]:
//! 1. Working set per rollup period = `available_last − usable_last` (MemTotal and
//!    MemAvailable of the same sample). p50/p95 come from a histogram (bin upper
//!    edge, so they never under-state), the maximum is exact.
//! 2. Recommended floor = the larger of the maximum working set and every OOM's
//!    demand, + 20 %, rounded up to 64 MiB, capped at the VM's memory. The maximum,
//!    not p95: a floor is a promise the balloon never breaks, and one period above it
//!    is an OOM. An OOM's demand is the guest size it needed: for a `balloon` /
//!    `balloon_contributed` OOM its size at the OOM (maximum - held) plus what it
//!    lacked (the correlation's shortfall), and for every guest OOM at least the
//!    memory in use its report shows plus that shortfall. The rollups miss growth
//!    between two samples (a hog that grew and was killed within a minute); the
//!    report does not, so a floor is never at or below a size that just OOMed.
//!    The floor is then checked against the period's recorded demand (the working-set
//!    series and each balloon OOM's demand): [`FloorCheck`], "with this floor, 0 of N
//!    recorded OOMs would recur".
//! 3. A VM whose configured floor is below its maximum working set is flagged.
//! 4. Near misses: MemAvailable under 10 % of the VM's memory while the balloon held
//!    at least 16 MiB (from rollups), plus the agent's own near-miss events.
//! 5. Shrink candidates: maximum working set under 50 % of the VM's memory over at
//!    least an hour of samples, and no OOM or near miss in the period (the samples
//!    of a VM that ran out did not see its peak); suggested memory = maximum
//!    working set + 50 %.
//! 7. Starvation (`reports::starvation`): pressure episodes at the balloon floor of at
//!    least 3 minutes with allocation stalls of at least 1/s or memory PSI some of at
//!    least 10 %, and no OOM in them; the floor that would have ended them is the
//!    floor plus the agent's deficit estimate, rounded up, capped at the memory.
//! 8. Guard overridden (issue 19 item 3): the guard's `overridden_by_host` actions of
//!    the period (the host's balloon policy took back what the guard gave, and the
//!    guard may not raise the floor) are listed with the floor that would hold.
//! 6. Fleet summary: memory reclaimed = Σ over VMs of the average (maximum − actual)
//!    across their rollups, against the OOMs the balloon caused.

use serde::Serialize;

use ballast_model::VmConfig;

use ballast_model::{CorrelationVerdict, NearMissKind};

use crate::reports::autoballoon::{self, HostPoint, HostReplay, ReplaySettings, ReplayVm};
use crate::reports::format::{kib, mib_ceil, round_up, MIB};
use crate::reports::starvation::{self, EpisodeFact, Starvation, StarvationSettings};
use crate::reports::stats_path::StatsPathVm;

/// The report's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySettings {
    /// Margin over the maximum working set, percent.
    pub margin_pct: u64,
    /// Floors and sizes are rounded up to this (KiB).
    pub round_kib: u64,
    /// A near miss: MemAvailable under this share of the VM's memory (percent) ...
    pub near_miss_pct: u64,
    /// ... while the balloon held at least this (KiB).
    pub held_noise_kib: u64,
    /// A shrink candidate's maximum working set is under this share of its memory.
    pub shrink_below_pct: u64,
    /// Rollup periods needed before a VM may be called a shrink candidate.
    pub shrink_min_samples: u64,
    pub replay: ReplaySettings,
    /// What counts as starvation at the balloon floor (`reports::starvation`).
    pub starvation: StarvationSettings,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            margin_pct: 20,
            round_kib: 64 * MIB,
            near_miss_pct: 10,
            held_noise_kib: 16 * MIB,
            shrink_below_pct: 50,
            shrink_min_samples: 60,
            replay: ReplaySettings::default(),
            starvation: StarvationSettings::default(),
        }
    }
}

/// Which management stack runs the VM (from the agent's hello).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Proxmox,
    Libvirt,
    Unknown,
}

impl Platform {
    pub fn from_backend(backend: &str) -> Self {
        match backend {
            "proxmox" => Platform::Proxmox,
            "libvirt" => Platform::Libvirt,
            _ => Platform::Unknown,
        }
    }
}

/// Everything known about the report's period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyInput {
    pub since_ms: i64,
    pub until_ms: i64,
    pub vms: Vec<VmFacts>,
    /// Host memory series of Proxmox hosts, for the auto-balloon replay.
    pub hosts: Vec<HostFacts>,
}

/// One VM's facts.
#[derive(Debug, Clone, PartialEq)]
pub struct VmFacts {
    pub uuid: String,
    pub name: String,
    pub host: String,
    pub platform: Platform,
    pub config: Option<VmConfig>,
    pub findings: Vec<String>,
    pub working_set: WorkingSetHistogram,
    /// Periods with both maximum and actual, and the sum of (maximum − actual) over them.
    pub held_periods: u64,
    pub held_sum_kib: u64,
    /// The largest maximum seen in the rollups.
    pub maximum_kib: Option<u64>,
    pub ooms: Vec<OomFact>,
    pub near_misses: Vec<NearMissFact>,
    /// The recorded balloon, for the replay (Proxmox only; may be empty).
    pub replay_series: Vec<autoballoon::ReplayPoint>,
    /// The VM's pressure episodes of the period (issue 19), for the starvation finding.
    pub episodes: Vec<EpisodeFact>,
    /// The guard's `overridden_by_host` actions of the period.
    pub guard_overridden: Vec<GuardOverride>,
}

/// A guard action the host's balloon policy overrode: the floor that would hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardOverride {
    pub at_ms: i64,
    /// The target the guard set, that the host's policy took back.
    pub target_kib: Option<u64>,
    pub floor_before_kib: Option<u64>,
    /// The floor that would hold the guard's target.
    pub floor_after_kib: Option<u64>,
}

/// Working-set samples in bins of `bin_kib`: `(bin index, count)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkingSetHistogram {
    pub bin_kib: u64,
    pub bins: Vec<(u64, u64)>,
    pub max_kib: Option<u64>,
}

/// One OOM of the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OomFact {
    pub id: i64,
    pub time_ms: i64,
    /// The correlation verdict.
    pub verdict: CorrelationVerdict,
    pub balloon_held_kb: Option<u64>,
    /// The guest size this OOM needed (KiB): see rule 2. None without figures.
    pub demand_kib: Option<u64>,
}

/// One near miss (merged from consecutive periods).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NearMissFact {
    pub time_ms: i64,
    /// `usable_low` (from rollups or the agent), `out_of_puff`, `silent_deflate`.
    pub kind: NearMissKind,
    pub usable_kib: Option<u64>,
    pub held_kib: Option<u64>,
}

/// A Proxmox host's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub host: String,
    pub series: Vec<HostPoint>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalloonPolicyReport {
    pub since_ms: i64,
    pub until_ms: i64,
    pub fleet: FleetSummary,
    pub vms: Vec<VmPolicy>,
    pub replay: Vec<HostReplay>,
    /// How the recommended floor is computed, in words.
    pub floor_rule: String,
    /// Per VM: free page reporting and the stats path (filled by `reports::build`).
    pub stats_path: Vec<StatsPathVm>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FleetSummary {
    pub vms_with_balloon: usize,
    /// Σ over VMs of the average (maximum − actual).
    pub reclaimed_avg_kib: u64,
    pub balloon_ooms: usize,
    pub balloon_contributed_ooms: usize,
    pub near_misses: usize,
    pub floors_below_working_set: usize,
    pub shrink_candidates: usize,
    pub replay_inflations: usize,
    pub replay_inflations_before_ooms: usize,
    /// VMs starved at their balloon floor (stalls or PSI, no OOM).
    pub starved_vms: usize,
}

/// The verdict on one VM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmPolicy {
    pub uuid: String,
    pub name: String,
    pub host: String,
    pub platform: Platform,
    pub memory_kib: Option<u64>,
    pub floor_kib: Option<u64>,
    pub reclaimed_avg_kib: Option<u64>,
    /// OOMs with verdict `balloon` or `balloon_contributed`.
    pub balloon_ooms: Vec<OomFact>,
    pub other_ooms: usize,
    pub near_misses: Vec<NearMissFact>,
    pub working_set: Option<WorkingSet>,
    pub recommended_floor_kib: Option<u64>,
    pub floor_below_working_set: bool,
    /// The recommended floor replayed against the period's recorded demand.
    pub floor_check: Option<FloorCheck>,
    pub actions: Vec<Action>,
    pub shrink_to_kib: Option<u64>,
    /// Held at its balloon floor with sustained stalls or PSI but no OOM.
    pub starvation: Option<Starvation>,
    /// The guard's actions the host's balloon policy overrode, oldest first.
    pub guard_overridden: Vec<GuardOverride>,
}

/// The recommended floor against the period's recorded demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FloorCheck {
    /// The VM's `balloon` / `balloon_contributed` OOMs of the period.
    pub balloon_ooms: usize,
    /// Of those, the ones whose demand is above the floor: they would recur with it.
    pub ooms_would_recur: usize,
    /// Of those, the ones without the figures to replay (no size or shortfall).
    pub ooms_unchecked: usize,
    /// The largest OOM demand of the period (KiB), any verdict.
    pub oom_demand_max_kib: Option<u64>,
    /// Working-set periods (minutes) recorded, and those that may exceed the floor.
    pub working_set_periods: u64,
    pub working_set_periods_above_floor: u64,
    /// "with this floor, 0 of 1 recorded OOMs would recur".
    pub summary: String,
}

/// p50 / p95 / max of the working set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WorkingSet {
    pub samples: u64,
    pub p50_kib: u64,
    pub p95_kib: u64,
    pub max_kib: u64,
}

/// A problem and the exact change that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// Stable name: `raise_floor`, `deflate_on_oom_off`, ...
    pub issue: String,
    /// What is wrong, in words.
    pub why: String,
    /// The settings or commands to apply, one per line.
    pub fix: Vec<String>,
}

/// Builds the report.
pub fn build(input: &PolicyInput, settings: &PolicySettings) -> BalloonPolicyReport {
    let mut vms: Vec<VmPolicy> = input
        .vms
        .iter()
        .filter(|vm| has_balloon(vm))
        .map(|vm| vm_policy(vm, settings))
        .collect();
    vms.sort_by(|a, b| {
        (
            b.balloon_ooms.len(),
            b.near_misses.len(),
            &a.host,
            &a.name,
            &a.uuid,
        )
            .cmp(&(
                a.balloon_ooms.len(),
                a.near_misses.len(),
                &b.host,
                &b.name,
                &b.uuid,
            ))
    });
    let replay = replay_hosts(input, settings);
    let fleet = FleetSummary {
        vms_with_balloon: vms.len(),
        reclaimed_avg_kib: vms.iter().filter_map(|vm| vm.reclaimed_avg_kib).sum(),
        balloon_ooms: count_verdict(&vms, CorrelationVerdict::Balloon),
        balloon_contributed_ooms: count_verdict(&vms, CorrelationVerdict::BalloonContributed),
        near_misses: vms.iter().map(|vm| vm.near_misses.len()).sum(),
        floors_below_working_set: vms.iter().filter(|vm| vm.floor_below_working_set).count(),
        shrink_candidates: vms.iter().filter(|vm| vm.shrink_to_kib.is_some()).count(),
        replay_inflations: replay.iter().map(|host| host.inflations.len()).sum(),
        replay_inflations_before_ooms: replay
            .iter()
            .flat_map(|host| &host.inflations)
            .filter(|inflation| !inflation.ooms_after_ms.is_empty())
            .count(),
        starved_vms: vms.iter().filter(|vm| vm.starvation.is_some()).count(),
    };
    BalloonPolicyReport {
        since_ms: input.since_ms,
        until_ms: input.until_ms,
        fleet,
        vms,
        replay,
        floor_rule: format!(
            "the larger of the maximum working set (MemTotal - MemAvailable) and every OOM's demand (its size at the OOM, or the memory in use its report shows, plus what it lacked) + {} %, rounded up to {}, capped at the VM's memory",
            settings.margin_pct,
            kib(settings.round_kib)
        ),
        stats_path: Vec::new(),
    }
}

fn count_verdict(vms: &[VmPolicy], verdict: CorrelationVerdict) -> usize {
    vms.iter()
        .flat_map(|vm| &vm.balloon_ooms)
        .filter(|oom| oom.verdict == verdict)
        .count()
}

fn has_balloon(vm: &VmFacts) -> bool {
    vm.config.as_ref().is_some_and(|c| c.balloon_present)
        || vm.held_sum_kib > 0
        || vm.ooms.iter().any(|oom| oom.verdict.is_balloon())
        || vm.episodes.iter().any(|episode| episode.at_balloon_floor)
}

fn vm_policy(vm: &VmFacts, settings: &PolicySettings) -> VmPolicy {
    let memory_kib = vm
        .config
        .as_ref()
        .and_then(|c| c.memory_kib)
        .or(vm.maximum_kib);
    let floor_kib = vm.config.as_ref().and_then(|c| c.balloon_floor_kib);
    let working_set = working_set(&vm.working_set);
    let oom_demand_max_kib = vm.ooms.iter().filter_map(|oom| oom.demand_kib).max();
    let demand_kib = working_set
        .map(|ws| ws.max_kib)
        .into_iter()
        .chain(oom_demand_max_kib)
        .max();
    let recommended_floor_kib = demand_kib.map(|demand| {
        let with_margin = demand
            .saturating_mul(100 + settings.margin_pct)
            .div_ceil(100);
        let rounded = round_up(with_margin, settings.round_kib);
        memory_kib.map_or(rounded, |memory| rounded.min(memory))
    });
    let floor_check = recommended_floor_kib.map(|floor| floor_check(vm, floor, oom_demand_max_kib));
    let floor_below_working_set = matches!(
        (floor_kib, working_set),
        (Some(floor), Some(ws)) if floor > 0 && floor < ws.max_kib
    );
    let troubled = !vm.ooms.is_empty() || !vm.near_misses.is_empty();
    let shrink_to_kib = match (working_set, memory_kib) {
        (Some(ws), Some(memory))
            if !troubled
                && ws.samples >= settings.shrink_min_samples
                && ws.max_kib.saturating_mul(100)
                    < memory.saturating_mul(settings.shrink_below_pct) =>
        {
            Some(round_up(
                ws.max_kib.saturating_mul(3).div_ceil(2),
                settings.round_kib,
            ))
            .filter(|&size| size < memory)
        }
        _ => None,
    };
    let (balloon_ooms, other): (Vec<&OomFact>, Vec<&OomFact>) =
        vm.ooms.iter().partition(|oom| oom.verdict.is_balloon());
    let mut balloon_ooms: Vec<OomFact> = balloon_ooms.into_iter().cloned().collect();
    balloon_ooms.sort_by_key(|oom| (oom.time_ms, oom.id));
    let mut policy = VmPolicy {
        uuid: vm.uuid.clone(),
        name: vm.name.clone(),
        host: vm.host.clone(),
        platform: vm.platform,
        memory_kib,
        floor_kib,
        reclaimed_avg_kib: (vm.held_periods > 0).then(|| vm.held_sum_kib / vm.held_periods),
        balloon_ooms,
        other_ooms: other.len(),
        near_misses: merge_near_misses(&vm.near_misses),
        working_set,
        recommended_floor_kib,
        floor_below_working_set,
        floor_check,
        actions: Vec::new(),
        shrink_to_kib,
        starvation: starvation::find(
            &vm.episodes,
            &vm.ooms.iter().map(|oom| oom.time_ms).collect::<Vec<_>>(),
            floor_kib,
            memory_kib,
            settings.round_kib,
            &settings.starvation,
        ),
        guard_overridden: {
            let mut overridden = vm.guard_overridden.clone();
            overridden.sort_by_key(|o| o.at_ms);
            overridden
        },
    };
    policy.actions = actions(vm, &policy);
    policy
}

/// Replays the period's recorded demand against `floor`: each balloon OOM recurs when
/// its demand is above the floor; working-set periods count when their bin's upper
/// edge is above it (at most; none when the exact maximum is not).
fn floor_check(vm: &VmFacts, floor: u64, oom_demand_max_kib: Option<u64>) -> FloorCheck {
    let balloon: Vec<&OomFact> = vm
        .ooms
        .iter()
        .filter(|oom| oom.verdict.is_balloon())
        .collect();
    let ooms_would_recur = balloon
        .iter()
        .filter(|oom| oom.demand_kib.is_some_and(|demand| demand > floor))
        .count();
    let ooms_unchecked = balloon
        .iter()
        .filter(|oom| oom.demand_kib.is_none())
        .count();
    let histogram = &vm.working_set;
    let working_set_periods = histogram.bins.iter().map(|(_, count)| count).sum();
    let working_set_periods_above_floor = if histogram.max_kib.is_some_and(|max| max > floor) {
        histogram
            .bins
            .iter()
            .filter(|(index, _)| (index + 1).saturating_mul(histogram.bin_kib) > floor)
            .map(|(_, count)| count)
            .sum()
    } else {
        0
    };
    let mut summary = format!(
        "with this floor, {ooms_would_recur} of {} recorded OOMs would recur",
        balloon.len()
    );
    if ooms_unchecked > 0 {
        summary.push_str(&format!(" ({ooms_unchecked} without the figures to check)"));
    }
    if working_set_periods_above_floor > 0 {
        summary.push_str(&format!(
            "; the working set may have been above it in {working_set_periods_above_floor} of {working_set_periods} minutes"
        ));
    }
    FloorCheck {
        balloon_ooms: balloon.len(),
        ooms_would_recur,
        ooms_unchecked,
        oom_demand_max_kib,
        working_set_periods,
        working_set_periods_above_floor,
        summary,
    }
}

/// p50/p95 (bin upper edges, never above the exact maximum) and the maximum.
pub fn working_set(histogram: &WorkingSetHistogram) -> Option<WorkingSet> {
    let max_kib = histogram.max_kib?;
    let mut bins = histogram.bins.clone();
    bins.sort_unstable();
    let samples: u64 = bins.iter().map(|(_, count)| count).sum();
    if samples == 0 {
        return None;
    }
    let percentile = |pct: u64| -> u64 {
        let rank = (samples * pct).div_ceil(100).max(1);
        let mut seen = 0;
        for (index, count) in &bins {
            seen += count;
            if seen >= rank {
                return (index + 1).saturating_mul(histogram.bin_kib).min(max_kib);
            }
        }
        max_kib
    };
    Some(WorkingSet {
        samples,
        p50_kib: percentile(50),
        p95_kib: percentile(95),
        max_kib,
    })
}

/// Collapses near misses of the same kind less than 10 minutes apart (keeps the worst).
fn merge_near_misses(misses: &[NearMissFact]) -> Vec<NearMissFact> {
    let mut sorted = misses.to_vec();
    sorted.sort_by(|a, b| (a.time_ms, &a.kind).cmp(&(b.time_ms, &b.kind)));
    let mut merged: Vec<(NearMissFact, i64)> = Vec::new();
    for miss in sorted {
        if let Some((last, last_at)) = merged
            .iter_mut()
            .rev()
            .find(|(existing, _)| existing.kind == miss.kind)
        {
            if miss.time_ms - *last_at < 600_000 {
                *last_at = miss.time_ms;
                if miss.usable_kib.unwrap_or(u64::MAX) < last.usable_kib.unwrap_or(u64::MAX) {
                    last.usable_kib = miss.usable_kib;
                    last.held_kib = miss.held_kib;
                }
                continue;
            }
        }
        let at = miss.time_ms;
        merged.push((miss, at));
    }
    merged.into_iter().map(|(miss, _)| miss).collect()
}

/// A shell word: single-quoted unless plainly safe.
pub(crate) fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The Proxmox vmid when the agent's identity shows it (uuid = vmid, or `vm<vmid>`).
pub(crate) fn vmid(vm: &VmFacts) -> String {
    let digits = |text: &str| !text.is_empty() && text.chars().all(|c| c.is_ascii_digit());
    if digits(&vm.uuid) {
        return vm.uuid.clone();
    }
    match vm.name.strip_prefix("vm") {
        Some(rest) if digits(rest) => rest.to_string(),
        _ => "<vmid>".to_string(),
    }
}

fn actions(vm: &VmFacts, policy: &VmPolicy) -> Vec<Action> {
    let proxmox = vm.platform != Platform::Libvirt;
    let libvirt = vm.platform != Platform::Proxmox;
    let id = vmid(vm);
    let name = shell_word(&vm.name);
    let mut out = Vec::new();
    let mut fix = |issue: &str, why: String, pve: Vec<String>, virt: Vec<String>| {
        let mut lines = Vec::new();
        if proxmox {
            lines.extend(pve.into_iter().map(|l| prefix("Proxmox", &l, libvirt)));
        }
        if libvirt {
            lines.extend(virt.into_iter().map(|l| prefix("libvirt", &l, proxmox)));
        }
        out.push(Action {
            issue: issue.to_string(),
            why,
            fix: lines,
        });
    };
    if let (Some(recommended), memory) = (policy.recommended_floor_kib, policy.memory_kib) {
        let below = policy.floor_kib.is_none_or(|floor| floor < recommended);
        let trouble = !policy.balloon_ooms.is_empty() || !policy.near_misses.is_empty();
        if below && (trouble || policy.floor_below_working_set || policy.floor_kib.is_some()) {
            let recommended_mib = mib_ceil(recommended);
            let why = format!(
                "floor {} is below the recommended {} (maximum working set {}{})",
                policy.floor_kib.map_or_else(|| "unset".to_string(), kib),
                kib(recommended),
                policy
                    .working_set
                    .map_or_else(|| "-".to_string(), |ws| kib(ws.max_kib)),
                policy
                    .floor_check
                    .as_ref()
                    .and_then(|check| check.oom_demand_max_kib)
                    .map_or_else(String::new, |demand| format!(
                        ", an OOM needed {}",
                        kib(demand)
                    )),
            );
            if memory.is_some_and(|memory| recommended >= memory) {
                fix(
                    "disable_ballooning",
                    format!("{why}: the working set needs all of the VM's memory"),
                    vec![format!("qm set {id} --balloon 0")],
                    vec![format!(
                        "keep <currentMemory> equal to <memory>: virsh setmem {name} {}M --live --config",
                        memory.map_or(recommended_mib, mib_ceil)
                    )],
                );
            } else {
                fix(
                    "raise_floor",
                    why,
                    vec![format!("qm set {id} --balloon {recommended_mib}")],
                    vec![
                        format!("virsh setmem {name} {recommended_mib}M --live --config"),
                        format!("never set <currentMemory unit='MiB'> below {recommended_mib}"),
                    ],
                );
            }
        }
    }
    if let Some(starved) = &policy.starvation {
        let why = format!(
            "held at its balloon floor {} for {} s in {} episode(s) with allocation stalls up to {}/s and memory PSI some up to {} %, and no OOM: the guest thrashed instead",
            starved.floor_kib.map_or_else(|| "(unknown)".to_string(), kib),
            starved.total_secs,
            starved.episodes.len(),
            starved
                .peak_alloc_stalls_per_s
                .map_or_else(|| "-".to_string(), |v| format!("{v:.1}")),
            starved
                .peak_psi_some_avg10
                .map_or_else(|| "-".to_string(), |v| format!("{v:.1}")),
        );
        match starved.floor_to_end_kib {
            Some(_) if starved.needs_all_memory => fix(
                "starvation",
                format!("{why}; only all of its memory would have ended it"),
                vec![format!("qm set {id} --balloon 0")],
                vec![format!(
                    "keep <currentMemory> equal to <memory>: virsh setmem {name} {}M --live --config",
                    policy.memory_kib.map_or(0, mib_ceil)
                )],
            ),
            Some(floor) => {
                let floor_mib = mib_ceil(floor);
                fix(
                    "starvation",
                    format!("{why}; a floor of {} would have ended it", kib(floor)),
                    vec![format!("qm set {id} --balloon {floor_mib}")],
                    vec![
                        format!("virsh setmem {name} {floor_mib}M --live --config"),
                        format!("never set <currentMemory unit='MiB'> below {floor_mib}"),
                    ],
                );
            }
            None => fix(
                "starvation",
                format!("{why}; the agent estimated no deficit, so no floor is claimed"),
                Vec::new(),
                Vec::new(),
            ),
        }
    }
    let config = vm.config.as_ref();
    let has = |finding: &str| vm.findings.iter().any(|f| f == finding);
    if has("deflate_on_oom_off")
        || config.is_some_and(|c| c.balloon_present && c.deflate_on_oom == Some(false))
    {
        fix(
            "deflate_on_oom_off",
            "the balloon has no deflate-on-oom: the guest OOM-kills instead of taking memory back".into(),
            vec![format!(
                "qm set {id} --args '-global virtio-balloon-pci.deflate-on-oom=on' (replaces existing args; restart the VM)"
            )],
            vec![format!(
                "virsh edit {name}: <memballoon model='virtio' autodeflate='on'>, then restart the VM"
            )],
        );
    }
    if has("stats_period_off")
        || config.is_some_and(|c| c.balloon_present && c.stats_period_secs.unwrap_or(0) == 0)
    {
        fix(
            "stats_period_off",
            "the balloon has no stats period: no MemAvailable, so no working set and no warning".into(),
            vec![format!(
                "qm monitor {id}, then: qom-set /machine/peripheral/balloon0 guest-stats-polling-interval 10 (qemu-server sets it when ballooning is on)"
            )],
            vec![
                format!("virsh dommemstat {name} --period 10 --live --config"),
                "<memballoon model='virtio' autodeflate='on'><stats period='10'/></memballoon>".into(),
            ],
        );
    }
    if has("no_guest_agent_channel") || config.is_some_and(|c| !c.guest_agent_channel) {
        fix(
            "no_guest_agent",
            "no guest agent channel: ballast cannot read the guest's kernel log".into(),
            vec![format!(
                "qm set {id} --agent enabled=1, restart the VM, install qemu-guest-agent in the guest"
            )],
            vec![format!(
                "virsh edit {name}: <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>, install qemu-guest-agent in the guest"
            )],
        );
    }
    if has("guest_agent_not_answering") {
        fix(
            "guest_agent_not_answering",
            "the guest agent channel exists but nothing answers".into(),
            vec!["in the guest: apt install qemu-guest-agent && systemctl enable --now qemu-guest-agent".into()],
            Vec::new(),
        );
    }
    if has("console_hides_oom_reports") {
        fix(
            "console_hides_oom_reports",
            "the guest console hides OOM report headers (quiet / loglevel below 7)".into(),
            vec!["in the guest: drop `quiet` or add `loglevel=7` in GRUB_CMDLINE_LINUX_DEFAULT, update-grub; now: dmesg -n 7".into()],
            Vec::new(),
        );
    }
    if has("no_serial_log") {
        fix(
            "no_serial_log",
            "the serial console is not captured: OOM reports printed there are lost".into(),
            vec![format!("qm set {id} --serial0 socket, and enable the agent's serial reader")],
            vec![format!(
                "virsh edit {name}: <serial type='pty'><log file='/var/log/libvirt/qemu/{}-serial.log' append='on'/></serial>",
                vm.name.replace(['/', '\''], "_")
            )],
        );
    }
    if let Some(size) = policy.shrink_to_kib {
        let size_mib = mib_ceil(size);
        fix(
            "shrink",
            format!(
                "never uses most of its memory: maximum working set {} of {}",
                policy.working_set.map_or_else(|| "-".to_string(), |ws| kib(ws.max_kib)),
                policy.memory_kib.map_or_else(|| "-".to_string(), kib),
            ),
            vec![format!("qm set {id} --memory {size_mib}")],
            vec![format!(
                "virsh setmaxmem {name} {size_mib}M --config && virsh setmem {name} {size_mib}M --config"
            )],
        );
    }
    out
}

fn prefix(stack: &str, line: &str, both: bool) -> String {
    if both {
        format!("{stack}: {line}")
    } else {
        line.to_string()
    }
}

fn replay_hosts(input: &PolicyInput, settings: &PolicySettings) -> Vec<HostReplay> {
    input
        .hosts
        .iter()
        .map(|host| {
            let vms: Vec<ReplayVm> = input
                .vms
                .iter()
                .filter(|vm| vm.host == host.host && vm.platform == Platform::Proxmox)
                .filter_map(|vm| {
                    let config = vm.config.as_ref()?;
                    Some(ReplayVm {
                        uuid: vm.uuid.clone(),
                        name: vm.name.clone(),
                        floor_kib: config.balloon_floor_kib.unwrap_or(0),
                        maximum_kib: config.memory_kib.or(vm.maximum_kib)?,
                        shares: config.shares.unwrap_or(1000),
                        series: vm.replay_series.clone(),
                        oom_times_ms: vm.ooms.iter().map(|oom| oom.time_ms).collect(),
                    })
                })
                .collect();
            autoballoon::replay(&host.host, &host.series, &vms, &settings.replay)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_bin_upper_edges_and_never_exceed_the_maximum() {
        let histogram = WorkingSetHistogram {
            bin_kib: 16 * MIB,
            // 90 samples in [128, 144) MiB, 9 in [160, 176), 1 in [192, 208).
            bins: vec![(8, 90), (10, 9), (12, 1)],
            max_kib: Some(200 * MIB),
        };
        assert_eq!(
            working_set(&histogram),
            Some(WorkingSet {
                samples: 100,
                p50_kib: 144 * MIB,
                p95_kib: 176 * MIB,
                max_kib: 200 * MIB,
            })
        );
        assert_eq!(working_set(&WorkingSetHistogram::default()), None);
    }

    #[test]
    fn names_are_quoted_for_the_shell() {
        assert_eq!(shell_word("web-1"), "web-1");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("a b;rm"), "'a b;rm'");
    }
}
