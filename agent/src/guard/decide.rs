//! The guard's decision for one VM at one poll (pure: figures and state in, a
//! [`Decision`] out; no I/O). docs/guard.md describes the rules:
//! - it acts only at `critical` (after the risk model's persistence) and only when the
//!   balloon holds memory (`actual < maximum`);
//! - a step is `max(step, deficit)`, capped at what the balloon holds and at what the
//!   host can give (MemAvailable minus the reserve);
//! - after a step it waits `settle_polls` polls for the guest to answer;
//! - steps are rate-limited per VM (an hour) and per host (a minute);
//! - `host_has_nothing`, `rate_limited` and an empty balloon's `beyond_maximum` are
//!   reported once per pressure episode, not every poll;
//! - it never inflates: every target is above the balloon's `actual`.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use ballast_model::{GuardAction, GuardMode, GuardOutcome, PressureSnapshot, RiskLevel, VmRef};

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
    /// The VM's steps in the last hour.
    steps: VecDeque<SystemTime>,
    /// The last decision made (what status shows).
    last: Option<(i64, GuardOutcome, Option<u64>)>,
    /// A deflation set in `act`, watched for the host taking it back.
    watch: Option<Watch>,
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
    let settling = match vm.polls_since_step.as_mut() {
        Some(polls) => {
            *polls = polls.saturating_add(1);
            *polls <= settings.settle_polls
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
    if settings.raise_floor {
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
    if input.assessment.level != RiskLevel::Critical || settling || held_off {
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
    let (outcome, detail) = if deficit > holds {
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
    vm.steps.push_back(input.at);
    host.steps.push_back(input.at);
    vm.polls_since_step = Some(0);
    if settings.mode == GuardMode::Act {
        vm.watch = Some(Watch {
            before_kib: actual,
            target_kib: target,
            peak_kib: actual,
            polls: 0,
            fell_to_kib: None,
        });
    }
    Some(Decision {
        outcome,
        target_kib: Some(target),
        floor_after_kib: None,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const GIB: u64 = 1024 * MIB;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn assessment(level: RiskLevel, deficit_mib: u64) -> Assessment {
        Assessment {
            level,
            raw_level: level,
            drivers: vec![ballast_model::PressureSignal::AllocStalls],
            exhaustion_secs: Some(30),
            deficit_kib: (level != RiskLevel::Ok).then_some(deficit_mib * MIB),
            sources: vec![ballast_model::SignalSource::BalloonStats],
        }
    }

    struct Case {
        settings: GuardSettings,
        vm: VmGuard,
        host: HostGuard,
        snapshot: PressureSnapshot,
    }

    impl Case {
        fn new(mode: GuardMode) -> Self {
            Self {
                settings: GuardSettings {
                    mode,
                    ..GuardSettings::default()
                },
                vm: VmGuard::default(),
                host: HostGuard::default(),
                snapshot: PressureSnapshot::default(),
            }
        }

        /// One poll at `secs` with the balloon at `actual_mib` of 2 GiB and the host
        /// at `host_mib` available.
        fn poll(
            &mut self,
            secs: u64,
            assessment: &Assessment,
            actual_mib: u64,
            host_mib: u64,
        ) -> Option<Decision> {
            let input = GuardInput {
                at: at(secs),
                assessment,
                episode_started_at_ms: Some(epoch_ms(at(0))),
                signals: &self.snapshot,
                actual_kib: Some(actual_mib * MIB),
                maximum_kib: Some(2 * GIB),
                floor_kib: Some(512 * MIB),
                host_available_kib: Some(host_mib * MIB),
            };
            decide(&self.settings, &mut self.vm, &mut self.host, &input)
        }
    }

    #[test]
    fn act_deflates_by_the_deficit_when_it_is_larger_than_a_step() {
        let mut case = Case::new(GuardMode::Act);
        let critical = assessment(RiskLevel::Critical, 300);
        let decision = case.poll(0, &critical, 1024, 8192).expect("a step");
        assert_eq!(decision.outcome, GuardOutcome::Deflated);
        assert_eq!(decision.target_kib, Some(1324 * MIB));
        assert_eq!(decision.target_to_set(GuardMode::Act), Some(1324 * MIB));
        assert!(
            decision.detail.contains("gave back 300 MiB"),
            "{decision:?}"
        );
        // A small deficit still gets a whole step.
        let mut case = Case::new(GuardMode::Act);
        let small = assessment(RiskLevel::Critical, 10);
        let decision = case.poll(0, &small, 1024, 8192).expect("a step");
        assert_eq!(decision.target_kib, Some(1152 * MIB));
    }

    #[test]
    fn observe_reports_the_same_target_act_would_set_and_sets_nothing() {
        let critical = assessment(RiskLevel::Critical, 300);
        let mut act = Case::new(GuardMode::Act);
        let mut observe = Case::new(GuardMode::Observe);
        let acted = act.poll(0, &critical, 1024, 8192).expect("act");
        let observed = observe.poll(0, &critical, 1024, 8192).expect("observe");
        assert_eq!(observed.outcome, GuardOutcome::WouldDeflate);
        assert_eq!(observed.target_kib, acted.target_kib);
        assert_eq!(observed.target_to_set(GuardMode::Observe), None);
        assert!(observed.detail.contains("would give back 300 MiB"));
        let event = observed.action(
            &VmRef::default(),
            &observe.settings,
            &GuardInput {
                at: at(0),
                assessment: &critical,
                episode_started_at_ms: Some(7),
                signals: &observe.snapshot,
                actual_kib: Some(1024 * MIB),
                maximum_kib: Some(2 * GIB),
                floor_kib: Some(512 * MIB),
                host_available_kib: Some(8 * GIB),
            },
        );
        assert_eq!(event.mode, GuardMode::Observe);
        assert_eq!(event.actual_before_kib, Some(1024 * MIB));
        assert_eq!(event.target_kib, Some(1324 * MIB));
        assert_eq!(event.deficit_kib, Some(300 * MIB));
        assert_eq!(event.host_reserve_kib, Some(GIB));
        assert_eq!(event.episode_started_at_ms, Some(7));
        // Off decides nothing at all.
        let mut off = Case::new(GuardMode::Off);
        assert_eq!(off.poll(0, &critical, 1024, 8192), None);
    }

    #[test]
    fn nothing_below_critical_nor_when_the_balloon_figures_are_unknown_or_contradict() {
        let mut case = Case::new(GuardMode::Act);
        for level in [RiskLevel::Ok, RiskLevel::Elevated] {
            assert_eq!(case.poll(0, &assessment(level, 300), 1024, 8192), None);
        }
        let critical = assessment(RiskLevel::Critical, 300);
        let snapshot = PressureSnapshot::default();
        let base = GuardInput {
            at: at(0),
            assessment: &critical,
            episode_started_at_ms: None,
            signals: &snapshot,
            actual_kib: Some(1024 * MIB),
            maximum_kib: Some(2 * GIB),
            floor_kib: None,
            host_available_kib: Some(8 * GIB),
        };
        let hostile = [
            GuardInput {
                actual_kib: None,
                ..base
            },
            GuardInput {
                maximum_kib: None,
                ..base
            },
            GuardInput {
                actual_kib: Some(0),
                ..base
            },
            // actual above maximum
            GuardInput {
                actual_kib: Some(3 * GIB),
                ..base
            },
            // an implausible maximum (beyond any real VM)
            GuardInput {
                maximum_kib: Some(u64::MAX),
                ..base
            },
        ];
        for input in hostile {
            let mut vm = VmGuard::default();
            let mut host = HostGuard::default();
            assert_eq!(
                decide(&case.settings, &mut vm, &mut host, &input),
                None,
                "{input:?}"
            );
        }
    }

    #[test]
    fn a_step_never_exceeds_what_the_balloon_holds_nor_what_the_host_can_give() {
        // The host has 1.2 GiB; 1 GiB is the reserve: 200 MiB to give.
        let mut case = Case::new(GuardMode::Act);
        let critical = assessment(RiskLevel::Critical, 600);
        let decision = case.poll(0, &critical, 1024, 1224).expect("a step");
        assert_eq!(decision.outcome, GuardOutcome::Deflated);
        assert_eq!(decision.target_kib, Some(1224 * MIB));
        assert!(
            decision.detail.contains("capped at the host"),
            "{decision:?}"
        );
        // A hostile deficit and a huge host: capped at the maximum, reported beyond.
        let mut case = Case::new(GuardMode::Act);
        let huge = Assessment {
            deficit_kib: Some(u64::MAX),
            ..critical.clone()
        };
        let decision = case.poll(0, &huge, 1024, u64::MAX / MIB).expect("a step");
        assert_eq!(decision.target_kib, Some(2 * GIB));
        assert_eq!(decision.outcome, GuardOutcome::BeyondMaximum);
    }

    #[test]
    fn host_has_nothing_is_reported_once_per_episode() {
        let mut case = Case::new(GuardMode::Act);
        let critical = assessment(RiskLevel::Critical, 300);
        let first = case.poll(0, &critical, 1024, 1024).expect("reported");
        assert_eq!(first.outcome, GuardOutcome::HostHasNothing);
        assert_eq!(first.target_kib, None);
        assert_eq!(first.target_to_set(GuardMode::Act), None);
        assert!(first.detail.contains("1024 MiB reserve"), "{first:?}");
        for poll in 1..10 {
            assert_eq!(case.poll(poll * 5, &critical, 1024, 512), None);
        }
        // Once the host has memory again, the guard steps.
        let step = case.poll(60, &critical, 1024, 4096).expect("a step");
        assert_eq!(step.outcome, GuardOutcome::Deflated);
        // An unknown host figure gives nothing either.
        let mut case = Case::new(GuardMode::Act);
        let snapshot = PressureSnapshot::default();
        let input = GuardInput {
            at: at(0),
            assessment: &critical,
            episode_started_at_ms: None,
            signals: &snapshot,
            actual_kib: Some(GIB),
            maximum_kib: Some(2 * GIB),
            floor_kib: None,
            host_available_kib: None,
        };
        let unknown = decide(&case.settings, &mut case.vm, &mut case.host, &input);
        assert_eq!(
            unknown.map(|d| d.outcome),
            Some(GuardOutcome::HostHasNothing)
        );
    }

    #[test]
    fn an_empty_balloon_is_beyond_maximum_once_and_never_claims_a_target() {
        let mut case = Case::new(GuardMode::Act);
        let critical = assessment(RiskLevel::Critical, 300);
        let first = case.poll(0, &critical, 2048, 8192).expect("reported");
        assert_eq!(first.outcome, GuardOutcome::BeyondMaximum);
        assert_eq!(first.target_kib, None);
        assert!(first.detail.contains("no deflation ends this"));
        assert_eq!(case.poll(5, &critical, 2048, 8192), None);
        // A new episode reports it again.
        let snapshot = PressureSnapshot::default();
        let input = GuardInput {
            at: at(100),
            assessment: &critical,
            episode_started_at_ms: Some(epoch_ms(at(90))),
            signals: &snapshot,
            actual_kib: Some(2 * GIB),
            maximum_kib: Some(2 * GIB),
            floor_kib: None,
            host_available_kib: Some(8 * GIB),
        };
        let again = decide(&case.settings, &mut case.vm, &mut case.host, &input);
        assert_eq!(again.map(|d| d.outcome), Some(GuardOutcome::BeyondMaximum));
    }

    #[test]
    fn after_a_step_it_waits_for_the_guest_to_answer() {
        let mut case = Case::new(GuardMode::Act);
        let critical = assessment(RiskLevel::Critical, 100);
        assert!(case.poll(0, &critical, 1024, 8192).is_some());
        for poll in 1..=case.settings.settle_polls as u64 {
            assert_eq!(
                case.poll(poll * 5, &critical, 1152, 8192),
                None,
                "poll {poll}"
            );
        }
        let next = case
            .poll(
                5 * (case.settings.settle_polls as u64 + 1),
                &critical,
                1152,
                8192,
            )
            .expect("the next step");
        assert_eq!(next.target_kib, Some(1280 * MIB));
    }

    #[test]
    fn rate_limits_hold_steps_back_and_say_so_once_per_episode() {
        // Per VM: 6 steps an hour.
        let mut case = Case::new(GuardMode::Act);
        case.settings.settle_polls = 0;
        case.settings.step_kib = 16 * MIB;
        let critical = assessment(RiskLevel::Critical, 0);
        let mut outcomes = Vec::new();
        for poll in 0..20u64 {
            let actual = 1024 + 16 * outcomes.len() as u64;
            if let Some(d) = case.poll(poll * 60, &critical, actual, 8192) {
                outcomes.push(d.outcome);
            }
        }
        let deflated = outcomes
            .iter()
            .filter(|o| **o == GuardOutcome::Deflated)
            .count();
        assert_eq!(deflated, 6, "{outcomes:?}");
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == GuardOutcome::RateLimited)
                .count(),
            1,
            "{outcomes:?}"
        );
        // An hour after the first step the VM may step again.
        let later = case.poll(3600 + 1, &critical, 1200, 8192).expect("a step");
        assert_eq!(later.outcome, GuardOutcome::Deflated);
        // Per host: 10 steps a minute across VMs.
        let mut host = HostGuard::default();
        let settings = GuardSettings {
            mode: GuardMode::Act,
            ..GuardSettings::default()
        };
        let snapshot = PressureSnapshot::default();
        let mut results = Vec::new();
        for n in 0..12 {
            let mut vm = VmGuard::default();
            let input = GuardInput {
                at: at(n),
                assessment: &critical,
                episode_started_at_ms: Some(1),
                signals: &snapshot,
                actual_kib: Some(GIB),
                maximum_kib: Some(2 * GIB),
                floor_kib: None,
                host_available_kib: Some(64 * GIB),
            };
            results.push(decide(&settings, &mut vm, &mut host, &input).map(|d| d.outcome));
        }
        assert!(results[..10]
            .iter()
            .all(|o| *o == Some(GuardOutcome::Deflated)));
        assert_eq!(results[10], Some(GuardOutcome::RateLimited));
        assert!(results[11] == Some(GuardOutcome::RateLimited));
    }

    #[test]
    fn a_clock_stepping_back_neither_frees_nor_wedges_the_rate_limit() {
        let mut steps: VecDeque<SystemTime> = (0..3).map(|n| at(1000 + n)).collect();
        prune(&mut steps, at(10), HOUR);
        assert_eq!(steps.len(), 3);
        prune(&mut steps, at(10 + 3600), HOUR);
        assert!(steps.is_empty());
    }

    #[test]
    fn a_deflation_the_host_takes_back_is_overridden_by_host_with_the_floor_that_would_hold() {
        let mut case = Case::new(GuardMode::Act);
        let critical = assessment(RiskLevel::Critical, 100);
        let step = case.poll(0, &critical, 1024, 8192).expect("a step");
        assert_eq!(step.target_kib, Some(1152 * MIB));
        assert_eq!(case.poll(5, &critical, 1152, 8192), None);
        // pvestatd sets its own target again: the balloon inflates back.
        let overridden = case.poll(10, &critical, 1030, 8192).expect("overridden");
        assert_eq!(overridden.outcome, GuardOutcome::OverriddenByHost);
        assert_eq!(overridden.floor_after_kib, Some(1152 * MIB));
        assert_eq!(overridden.target_kib, None);
        assert!(overridden.detail.contains("would hold"), "{overridden:?}");
        // No more steps this episode: they would be taken back as well.
        for poll in 3..20 {
            assert_eq!(case.poll(poll * 5, &critical, 1030, 8192), None);
        }
        // Allowed to raise the floor: floor_raised, and the guard goes on stepping.
        let mut case = Case::new(GuardMode::Act);
        case.settings.raise_floor = true;
        case.poll(0, &critical, 1024, 8192).expect("a step");
        let raised = case.poll(5, &critical, 1152, 8192);
        assert_eq!(raised, None);
        let raised = case.poll(10, &critical, 1024, 8192).expect("raised");
        assert_eq!(raised.outcome, GuardOutcome::FloorRaised);
        assert_eq!(raised.floor_after_kib, Some(1152 * MIB));
        assert!(raised
            .detail
            .contains("raising the VM's balloon floor to 1152 MiB"));
        let again = (3..8).find_map(|poll| case.poll(poll * 5, &critical, 1024, 8192));
        assert_eq!(again.map(|d| d.outcome), Some(GuardOutcome::Deflated));
    }

    #[test]
    fn a_deflation_that_ends_the_episode_and_is_taken_back_is_still_an_override() {
        // Seen on a real guest: the deflation ends the episode at the next poll, the
        // host re-inflates, a new episode starts; the guard must not deflate again.
        let mut case = Case::new(GuardMode::Act);
        let critical = assessment(RiskLevel::Critical, 100);
        let ok = assessment(RiskLevel::Ok, 0);
        case.poll(0, &critical, 1024, 8192).expect("a step");
        assert_eq!(case.poll(2, &ok, 1152, 8192), None);
        assert_eq!(case.poll(4, &ok, 1024, 8192), None);
        let snapshot = PressureSnapshot::default();
        let input = GuardInput {
            at: at(6),
            assessment: &critical,
            episode_started_at_ms: Some(epoch_ms(at(6))),
            signals: &snapshot,
            actual_kib: Some(1024 * MIB),
            maximum_kib: Some(2 * GIB),
            floor_kib: None,
            host_available_kib: Some(8 * GIB),
        };
        let overridden = decide(&case.settings, &mut case.vm, &mut case.host, &input);
        assert_eq!(
            overridden.map(|d| d.outcome),
            Some(GuardOutcome::OverriddenByHost)
        );
        // Held off for an hour across episodes, then free to step again.
        for secs in [20, 600, 3000] {
            let input = GuardInput {
                at: at(secs),
                episode_started_at_ms: Some(epoch_ms(at(secs))),
                ..input
            };
            assert_eq!(
                decide(&case.settings, &mut case.vm, &mut case.host, &input),
                None
            );
        }
        let input = GuardInput {
            at: at(3700),
            episode_started_at_ms: Some(epoch_ms(at(3700))),
            ..input
        };
        let later = decide(&case.settings, &mut case.vm, &mut case.host, &input);
        assert_eq!(later.map(|d| d.outcome), Some(GuardOutcome::Deflated));
    }

    #[test]
    fn a_slow_guest_or_ended_pressure_is_no_override() {
        let critical = assessment(RiskLevel::Critical, 100);
        // The guest takes its time to reach the target and never comes back down.
        let mut case = Case::new(GuardMode::Act);
        case.poll(0, &critical, 1024, 8192).expect("a step");
        for (poll, actual) in [(1, 1024), (2, 1040), (3, 1100), (4, 1150), (5, 1148)] {
            let decision = case.poll(poll * 5, &critical, actual, 8192);
            assert!(
                decision
                    .as_ref()
                    .is_none_or(|d| d.outcome == GuardOutcome::Deflated),
                "{decision:?}"
            );
        }
        // The pressure ended, then the host re-inflated: its right, no override.
        let mut case = Case::new(GuardMode::Act);
        case.poll(0, &critical, 1024, 8192).expect("a step");
        case.poll(5, &critical, 1152, 8192);
        let ok = assessment(RiskLevel::Ok, 0);
        assert_eq!(case.poll(10, &ok, 1024, 8192), None);
        // Observe changes nothing, so there is nothing to take back.
        let mut case = Case::new(GuardMode::Observe);
        case.poll(0, &critical, 1024, 8192).expect("would deflate");
        case.poll(5, &critical, 1152, 8192);
        assert_eq!(case.poll(10, &critical, 1024, 8192), None);
    }

    #[test]
    fn an_oscillating_risk_does_not_flap_and_never_inflates() {
        let mut case = Case::new(GuardMode::Act);
        let critical = assessment(RiskLevel::Critical, 50);
        let elevated = assessment(RiskLevel::Elevated, 50);
        let mut actual = 512;
        let mut targets = Vec::new();
        // Two hours of 5 s polls, critical every other poll.
        for poll in 0..1440u64 {
            let risk = if poll % 2 == 0 { &critical } else { &elevated };
            if let Some(decision) = case.poll(poll * 5, risk, actual, 8192) {
                if let Some(target) = decision.target_kib {
                    assert!(target > actual * MIB, "{decision:?} at {actual} MiB");
                    actual = target / MIB;
                    targets.push(poll);
                }
            }
        }
        // At most 6 steps an hour, each at least settle_polls + 1 polls apart.
        assert_eq!(targets.len(), 12, "{targets:?}");
        assert!(targets
            .windows(2)
            .all(|w| w[1] - w[0] > u64::from(case.settings.settle_polls)));
        assert!(actual <= 2048);
    }
}
