//! The guard's decision for one VM at one poll (pure: figures and state in, a
//! [`Decision`] out; no I/O). docs/guard.md describes the rules:
//! - it acts only at `critical` (after the risk model's persistence), confirmed by a
//!   second guest report when only MemAvailable drove it ([`CONFIRM_REPORTS`]), and
//!   only when the balloon holds memory (`actual < maximum`);
//! - a step is `max(step, deficit)`, capped at what the balloon holds and at what the
//!   host can give (MemAvailable minus the reserve);
//! - after a step it waits for the guest to answer: `settle_polls` polls, or less when
//!   the balloon reached the step's target and a guest report made after that still
//!   reads critical (a hog still growing into what was given);
//! - steps are rate-limited per VM (an hour) and per host (a minute);
//! - `host_has_nothing`, `rate_limited` and an empty balloon's `beyond_maximum` are
//!   reported once per pressure episode, not every poll;
//! - it never inflates: every target is above the balloon's `actual`.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use ballast_model::{
    GuardAction, GuardMode, GuardOutcome, PressureSignal, PressureSnapshot, RiskLevel, VmRef,
};

use crate::pressure::risk::Assessment;
use crate::wire::epoch_ms;

const MIB: u64 = 1024;
const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

/// The guard's settings (`guard:` in the config, docs/guard.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    pub mode: GuardMode,
    /// The smallest step (KiB).
    pub step_kib: u64,
    /// What the guard leaves the host (KiB of its MemAvailable).
    pub host_reserve_kib: u64,
    pub max_actions_per_vm_per_hour: u32,
    pub max_actions_per_host_per_minute: u32,
    /// Polls to wait after a step for the guest to answer before the next.
    pub settle_polls: u32,
    /// Where the host's balloon policy takes a deflation back, raise the VM's floor
    /// (`guard.proxmox_raise_floor` on a Proxmox host): `floor_raised` instead of
    /// `overridden_by_host`.
    pub raise_floor: bool,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            mode: GuardMode::Observe,
            step_kib: 128 * MIB,
            host_reserve_kib: 1024 * MIB,
            max_actions_per_vm_per_hour: 6,
            max_actions_per_host_per_minute: 10,
            settle_polls: 3,
            raise_floor: false,
        }
    }
}

/// What the decision reads for one VM at one poll.
#[derive(Debug, Clone, Copy)]
pub struct GuardInput<'a> {
    pub at: SystemTime,
    pub assessment: &'a Assessment,
    /// The pressure episode under way (its `started_at_ms`).
    pub episode_started_at_ms: Option<i64>,
    pub signals: &'a PressureSnapshot,
    pub actual_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
    /// The VM's balloon floor (Proxmox `balloon:`, libvirt `currentMemory`).
    pub floor_kib: Option<u64>,
    /// The host's MemAvailable.
    pub host_available_kib: Option<u64>,
    /// When the guest made the balloon stats report the assessment read (host epoch
    /// seconds); None when unknown (then every poll is a report of its own).
    pub report_epoch_secs: Option<u64>,
}

/// What the guard decided for one VM at one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: GuardOutcome,
    /// The balloon target to set (`act`) or that would be set (`observe`); None when
    /// nothing is given back.
    pub target_kib: Option<u64>,
    /// `overridden_by_host`: the floor that would hold; `floor_raised`: the floor to set.
    pub floor_after_kib: Option<u64>,
    pub detail: String,
}

impl Decision {
    /// The hypervisor should be asked to set `target_kib` (mode `act` and a target).
    pub fn target_to_set(&self, mode: GuardMode) -> Option<u64> {
        match mode {
            GuardMode::Act => self.target_kib,
            _ => None,
        }
    }

    /// The audited event for this decision.
    pub fn action(
        &self,
        vm: &VmRef,
        settings: &GuardSettings,
        input: &GuardInput<'_>,
    ) -> GuardAction {
        GuardAction {
            vm: vm.clone(),
            mode: settings.mode,
            outcome: self.outcome,
            at_ms: epoch_ms(input.at),
            episode_started_at_ms: input.episode_started_at_ms,
            level: input.assessment.level,
            drivers: input.assessment.drivers.clone(),
            signals: *input.signals,
            exhaustion_secs: input.assessment.exhaustion_secs,
            deficit_kib: input.assessment.deficit_kib,
            actual_before_kib: input.actual_kib,
            target_kib: self.target_kib,
            maximum_kib: input.maximum_kib,
            host_available_kib: input.host_available_kib,
            host_reserve_kib: Some(settings.host_reserve_kib),
            floor_before_kib: input.floor_kib,
            floor_after_kib: self.floor_after_kib,
            detail: self.detail.clone(),
        }
    }
}

/// The host's steps in the last minute (shared by all its VMs).
#[derive(Debug, Clone, Default)]
pub struct HostGuard {
    steps: VecDeque<SystemTime>,
}

/// One VM's guard state across polls.
#[derive(Debug, Clone, Default)]
pub struct VmGuard {
    /// The episode the once-per-episode reports belong to.
    episode: Option<i64>,
    reported: Vec<GuardOutcome>,
    /// Polls since the last step (None: no step yet).
    polls_since_step: Option<u32>,
    /// The last step's target, and the guest report read when the balloon was first
    /// seen there: a later report shows the guest with the memory given.
    step_target_kib: Option<u64>,
    landed_report: Option<Option<u64>>,
    /// The VM's steps in the last hour.
    steps: VecDeque<SystemTime>,
    /// The last decision made (what status shows).
    last: Option<(i64, GuardOutcome, Option<u64>)>,
    /// A deflation set in `act`, watched for the host taking it back.
    watch: Option<Watch>,
    /// The balloon floor this guard last raised (with a deflation or after an override),
    /// until the raise is known to have failed: what counts while the VM's config gives
    /// no floor.
    floor_raised_kib: Option<u64>,
    /// Distinct guest reports in a row read `critical` (and the last one's stamp).
    critical_reports: u32,
    critical_report_stamp: Option<u64>,
    /// The host took a deflation back and the floor may not be raised: no step before
    /// this time (each would be taken back as well; with Proxmox the deflation ends the
    /// episode and the re-inflation starts the next, so an episode is no bound).
    overridden_until: Option<SystemTime>,
}

/// A deflation under watch: the balloon before, the target, the highest `actual`
/// seen since, polls since.
#[derive(Debug, Clone, Copy)]
struct Watch {
    before_kib: u64,
    target_kib: u64,
    peak_kib: u64,
    polls: u32,
    /// The balloon came back down to this (reported at the next poll under pressure).
    fell_to_kib: Option<u64>,
}

/// Guest reports in a row that must read `critical` before the guard steps when only
/// MemAvailable drove the level (its fall, its level): a working set taken at once
/// falls as fast as a hog for a report or two and stops (the guard suite's control
/// runs). Stalls, reclaim, faults and PSI are distress now and need no second report.
pub const CONFIRM_REPORTS: u32 = 2;

/// Polls a deflation is watched for the host taking it back: pvestatd's 10 s cycle,
/// the balloon's fall and the risk model's two-poll persistence at a 2 s poll (a real
/// guest's override was seen 6 polls after the step).
pub const OVERRIDE_WATCH_POLLS: u32 = 10;
/// How far the balloon must come back down from its peak to count as taken back
/// (the balloon driver moves in pages; a few MiB of jitter is no override).
pub const OVERRIDE_TOLERANCE_KIB: u64 = 16 * 1024;
/// After `overridden_by_host`, how long the guard takes no step for that VM.
pub const OVERRIDE_HOLD: Duration = HOUR;

impl VmGuard {
    /// The last decision: when (Unix ms), its outcome and target.
    pub fn last(&self) -> Option<(i64, GuardOutcome, Option<u64>)> {
        self.last
    }

    /// The hypervisor refused the deflation: nothing to watch.
    pub fn step_failed(&mut self) {
        self.watch = None;
        self.step_target_kib = None;
    }

    /// The VM's balloon floor as far as the guard knows: its configuration's when the
    /// poll read one (an operator may have lowered a floor the guard raised), else the
    /// one this guard raised last.
    fn floor_now(&self, input: &GuardInput<'_>) -> u64 {
        ballast_model::plausible_kib(input.floor_kib)
            .or(self.floor_raised_kib)
            .unwrap_or(0)
    }

    /// The floor raise failed: the VM's floor is what its config says.
    pub fn floor_raise_failed(&mut self) {
        self.floor_raised_kib = None;
    }

    /// Counts the distinct guest reports in a row that read `critical`.
    fn count_critical_report(&mut self, input: &GuardInput<'_>) {
        if input.assessment.level != RiskLevel::Critical {
            self.critical_reports = 0;
            self.critical_report_stamp = None;
            return;
        }
        let new_report = input.report_epoch_secs.is_none()
            || input.report_epoch_secs != self.critical_report_stamp;
        if new_report {
            self.critical_reports = self.critical_reports.saturating_add(1);
            self.critical_report_stamp = input.report_epoch_secs;
        }
    }

    /// The critical reading is confirmed: distress beyond MemAvailable's figures, or
    /// [`CONFIRM_REPORTS`] guest reports in a row.
    fn critical_confirmed(&self, assessment: &Assessment) -> bool {
        let memavailable_only = assessment.drivers.iter().all(|signal| {
            matches!(
                signal,
                PressureSignal::AvailableFalling | PressureSignal::AvailableLow
            )
        });
        !memavailable_only || self.critical_reports >= CONFIRM_REPORTS
    }

    /// The last step's deflation has landed (`actual` within
    /// [`OVERRIDE_TOLERANCE_KIB`] of its target) and the report read now, made after
    /// the poll that first saw it there, still reads critical, as has every poll since
    /// the step: the guest has answered the step and it was not enough. A report of
    /// unknown time never counts (it may predate the landing).
    fn answered_after_landing(&mut self, input: &GuardInput<'_>) -> bool {
        let Some(target) = self.step_target_kib else {
            return false;
        };
        if input.assessment.level != RiskLevel::Critical {
            // The emergency eased after the step: the next one, if any, waits
            // `settle_polls` (no flapping on a reading that comes and goes).
            self.step_target_kib = None;
            return false;
        }
        let actual = ballast_model::plausible_kib(input.actual_kib).unwrap_or(0);
        match self.landed_report {
            None if actual.saturating_add(OVERRIDE_TOLERANCE_KIB) >= target => {
                self.landed_report = Some(input.report_epoch_secs);
                false
            }
            None => false,
            Some(landed) => match (landed, input.report_epoch_secs) {
                (Some(landed), Some(now)) => now > landed,
                _ => false,
            },
        }
    }

    /// A report due once per episode: true the first time.
    fn first_report(&mut self, outcome: GuardOutcome) -> bool {
        if self.reported.contains(&outcome) {
            return false;
        }
        self.reported.push(outcome);
        true
    }
}

/// Drops the steps older than `span` before `at`; a step "in the future" (the host
/// clock went back) is taken as made now, so a clock step neither frees nor blocks
/// the limit for long.
fn prune(steps: &mut VecDeque<SystemTime>, at: SystemTime, span: Duration) {
    for step in steps.iter_mut() {
        if *step > at {
            *step = at;
        }
    }
    while let Some(first) = steps.front() {
        match at.duration_since(*first) {
            Ok(age) if age >= span => {
                steps.pop_front();
            }
            _ => break,
        }
    }
}

fn mib(kib: u64) -> u64 {
    kib / MIB
}

/// Decides for one VM at one poll; None when there is nothing to do or report.
pub fn decide(
    settings: &GuardSettings,
    vm: &mut VmGuard,
    host: &mut HostGuard,
    input: &GuardInput<'_>,
) -> Option<Decision> {
    if settings.mode == GuardMode::Off {
        return None;
    }
    if vm.episode != input.episode_started_at_ms {
        vm.episode = input.episode_started_at_ms;
        vm.reported.clear();
    }
    if let Some(decision) = taken_back(settings, vm, input) {
        vm.last = Some((epoch_ms(input.at), decision.outcome, None));
        return Some(decision);
    }
    vm.count_critical_report(input);
    let answered = vm.answered_after_landing(input);
    let settling = match vm.polls_since_step.as_mut() {
        Some(polls) => {
            *polls = polls.saturating_add(1);
            *polls <= settings.settle_polls && !answered
        }
        None => false,
    };
    let decision = decide_step(settings, vm, host, input, settling)?;
    vm.last = Some((epoch_ms(input.at), decision.outcome, decision.target_kib));
    Some(decision)
}

/// Watches the last deflation: the balloon's `actual` rose and then came back down by
/// more than [`OVERRIDE_TOLERANCE_KIB`] while the guest is still under pressure (a
/// guest never inflates its own balloon): the host's balloon policy took it back.
fn taken_back(
    settings: &GuardSettings,
    vm: &mut VmGuard,
    input: &GuardInput<'_>,
) -> Option<Decision> {
    let mut watch = vm.watch.take()?;
    let Some(actual) = ballast_model::plausible_kib(input.actual_kib) else {
        vm.watch = Some(watch);
        return None;
    };
    watch.polls = watch.polls.saturating_add(1);
    watch.peak_kib = watch.peak_kib.max(actual);
    let rose = watch.peak_kib > watch.before_kib.saturating_add(OVERRIDE_TOLERANCE_KIB);
    if rose && actual.saturating_add(OVERRIDE_TOLERANCE_KIB) < watch.peak_kib {
        watch.fell_to_kib = Some(actual);
    }
    // The deflation often ends the episode at once (the guest is fine until the host
    // takes the memory back): the fall counts once the guest is under pressure again.
    if watch.fell_to_kib.is_none() || input.assessment.level == RiskLevel::Ok {
        if watch.polls < OVERRIDE_WATCH_POLLS {
            vm.watch = Some(watch);
        }
        return None;
    }
    let actual = watch.fell_to_kib.unwrap_or(actual).min(actual);
    let floor = watch.target_kib;
    let detail = format!(
        "the balloon reached {} MiB after the guard's target of {} MiB and is back at {} MiB \
         {} polls later while the guest is still at {} risk: the host's balloon policy \
         (Proxmox pvestatd) set its own target",
        mib(watch.peak_kib),
        mib(watch.target_kib),
        mib(actual),
        watch.polls,
        input.assessment.level.as_str(),
    );
    let floor_now = vm.floor_now(input);
    if settings.raise_floor && floor_now >= floor {
        // The floor already holds the deflation and the host took it back anyway: its
        // policy does not keep to the floor; another raise would change nothing.
        vm.overridden_until = input.at.checked_add(OVERRIDE_HOLD);
        Some(Decision {
            outcome: GuardOutcome::OverriddenByHost,
            target_kib: None,
            floor_after_kib: Some(floor_now),
            detail: format!(
                "{detail}, although the VM's balloon floor is already {} MiB; no further \
                 step for this VM for an hour",
                mib(floor_now)
            ),
        })
    } else if settings.raise_floor {
        vm.floor_raised_kib = Some(floor);
        Some(Decision {
            outcome: GuardOutcome::FloorRaised,
            target_kib: None,
            floor_after_kib: Some(floor),
            detail: format!(
                "{detail}; raising the VM's balloon floor to {} MiB",
                mib(floor)
            ),
        })
    } else {
        vm.overridden_until = input.at.checked_add(OVERRIDE_HOLD);
        Some(Decision {
            outcome: GuardOutcome::OverriddenByHost,
            target_kib: None,
            floor_after_kib: Some(floor),
            detail: format!(
                "{detail}; a balloon floor of {} MiB would hold (guard.proxmox_raise_floor \
                 is off); no further step for this VM for an hour",
                mib(floor)
            ),
        })
    }
}

fn decide_step(
    settings: &GuardSettings,
    vm: &mut VmGuard,
    host: &mut HostGuard,
    input: &GuardInput<'_>,
    settling: bool,
) -> Option<Decision> {
    let held_off = vm.overridden_until.is_some_and(|until| input.at < until);
    if input.assessment.level != RiskLevel::Critical
        || settling
        || held_off
        || !vm.critical_confirmed(input.assessment)
    {
        return None;
    }
    let actual = ballast_model::plausible_kib(input.actual_kib).filter(|kib| *kib > 0)?;
    let maximum = ballast_model::plausible_kib(input.maximum_kib).filter(|kib| *kib > 0)?;
    if actual > maximum {
        // Figures that contradict each other: nothing safe to do.
        return None;
    }
    let holds = maximum - actual;
    let deficit = input.assessment.deficit_kib.unwrap_or(0);
    if holds == 0 {
        return vm
            .first_report(GuardOutcome::BeyondMaximum)
            .then(|| Decision {
                outcome: GuardOutcome::BeyondMaximum,
                target_kib: None,
                floor_after_kib: None,
                detail: format!(
                    "the balloon holds nothing (actual = maximum = {} MiB) and the risk \
                     model still asks for {} MiB: no deflation ends this",
                    mib(maximum),
                    mib(deficit)
                ),
            });
    }
    let Some(available) = input.host_available_kib else {
        return vm
            .first_report(GuardOutcome::HostHasNothing)
            .then(|| Decision {
                outcome: GuardOutcome::HostHasNothing,
                target_kib: None,
                floor_after_kib: None,
                detail: "the host's MemAvailable is unknown: the guard gives nothing it \
                         cannot see"
                    .into(),
            });
    };
    let room = available.saturating_sub(settings.host_reserve_kib);
    if room == 0 {
        return vm
            .first_report(GuardOutcome::HostHasNothing)
            .then(|| Decision {
                outcome: GuardOutcome::HostHasNothing,
                target_kib: None,
                floor_after_kib: None,
                detail: format!(
                    "the host has {} MiB available and keeps a {} MiB reserve",
                    mib(available),
                    mib(settings.host_reserve_kib)
                ),
            });
    }
    prune(&mut vm.steps, input.at, HOUR);
    prune(&mut host.steps, input.at, MINUTE);
    let vm_full = vm.steps.len() >= settings.max_actions_per_vm_per_hour as usize;
    let host_full = host.steps.len() >= settings.max_actions_per_host_per_minute as usize;
    if vm_full || host_full {
        let which = if vm_full {
            format!(
                "{} steps for this VM in the last hour",
                settings.max_actions_per_vm_per_hour
            )
        } else {
            format!(
                "{} steps on this host in the last minute",
                settings.max_actions_per_host_per_minute
            )
        };
        return vm
            .first_report(GuardOutcome::RateLimited)
            .then(|| Decision {
                outcome: GuardOutcome::RateLimited,
                target_kib: None,
                floor_after_kib: None,
                detail: format!("a step was due; the rate limit holds it back ({which})"),
            });
    }
    let give = settings.step_kib.max(deficit).min(holds).min(room);
    if give == 0 {
        return None;
    }
    let target = actual.saturating_add(give);
    let verb = match settings.mode {
        GuardMode::Act => "gave back",
        _ => "would give back",
    };
    let capped = if give == room && room < holds.min(settings.step_kib.max(deficit)) {
        format!(
            " (capped at the host's {} MiB available minus its {} MiB reserve)",
            mib(available),
            mib(settings.host_reserve_kib)
        )
    } else {
        String::new()
    };
    // Only what the guest lacks now can be beyond the maximum; the fall still to come
    // is an extrapolation, a reason to give all the balloon holds, not a verdict.
    let shortfall = input.assessment.shortfall_kib.unwrap_or(0);
    let (outcome, detail) = if shortfall > holds {
        vm.first_report(GuardOutcome::BeyondMaximum);
        (
            GuardOutcome::BeyondMaximum,
            format!(
                "{verb} {} MiB{capped}, all the balloon holds; the guest needs {} MiB, more \
                 than its maximum allows: this does not end the pressure",
                mib(give),
                mib(deficit)
            ),
        )
    } else {
        let outcome = match settings.mode {
            GuardMode::Act => GuardOutcome::Deflated,
            _ => GuardOutcome::WouldDeflate,
        };
        (
            outcome,
            format!(
                "{verb} {} MiB (deficit {} MiB){capped}",
                mib(give),
                mib(deficit)
            ),
        )
    };
    // Proxmox, where the operator allows it: the floor goes up with the deflation.
    // pvestatd sets every VM's target again within its 10 s cycle, down to the floor
    // while the host is above its ballooning target, and a guest whose working set has
    // grown into the memory given back is OOM-killed by that re-inflation itself, before
    // any poll could see it taken back (the guard suite's pvestatd runs).
    let floor_before = vm.floor_now(input);
    let raise_with_step = settings.raise_floor
        && settings.mode == GuardMode::Act
        && outcome == GuardOutcome::Deflated
        && target > floor_before;
    let detail = if raise_with_step {
        format!(
            "{detail}; and raised the VM's balloon floor from {} to {} MiB with it \
             (guard.proxmox_raise_floor), so the host's balloon policy keeps it",
            mib(floor_before),
            mib(target)
        )
    } else {
        detail
    };
    vm.steps.push_back(input.at);
    host.steps.push_back(input.at);
    vm.polls_since_step = Some(0);
    // Only a target the hypervisor is asked to set can land (`observe` waits
    // `settle_polls`).
    vm.step_target_kib = (settings.mode == GuardMode::Act).then_some(target);
    vm.landed_report = None;
    if settings.mode == GuardMode::Act {
        vm.watch = Some(Watch {
            before_kib: actual,
            target_kib: target,
            peak_kib: actual,
            polls: 0,
            fell_to_kib: None,
        });
    }
    if raise_with_step {
        vm.floor_raised_kib = Some(target);
    }
    Some(Decision {
        outcome,
        target_kib: Some(target),
        floor_after_kib: raise_with_step.then_some(target),
        detail,
    })
}

#[cfg(test)]
mod tests;
