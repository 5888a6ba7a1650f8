//! The agent's picture of every VM, updated by polls and hypervisor events.
//!
//! Pure: samples and events in, [`Change`]s out; the run loop does the I/O and
//! acts on the changes (fetch the guest log when an OOM is suspected, send
//! rollups, write the status file). Time always comes from the caller (host clock).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ballast_model::{BalloonRollup, NearMissKind, PressureEpisode, PressureSnapshot};
use ballast_oom::HostBalloon;

use crate::guard::{Decision, GuardInput, GuardSettings, HostGuard, VmGuard};
use crate::history::{epoch_secs, History, HistoryPoint};
use crate::hypervisor::{BalloonSample, DomainConfig, DomainId, GuestCounters};
use crate::pressure::risk::rank;
use crate::pressure::vm_risk::VmRisk;
use crate::pressure::{GuestPsi, PressureWindow, SignalTracker};

/// Polls in a row with `last-update` standing still before a running VM's stats are stale.
pub const STALE_AFTER_POLLS: u32 = 3;
/// MemAvailable below this share of MemTotal counts as collapsed.
const USABLE_COLLAPSED_PCT: u64 = 5;
/// A deflate-on-oom balloon giving back at least this much on its own is a near miss.
const SILENT_DEFLATE_MIN_KIB: u64 = 8 * 1024;
/// The same near miss of one VM is reported at most this often.
const NEAR_MISS_EVERY: Duration = Duration::from_secs(600);
/// Rollups cover this many seconds.
pub const ROLLUP_SECS: u64 = 60;

/// Why an OOM is suspected before any report arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspectReason {
    /// QEMU's `stat-oom-kills` counter went up.
    OomKillCounter,
    /// MemAvailable fell under 5 % of MemTotal.
    UsableCollapsed,
}

/// Something the run loop should act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Appeared(DomainId),
    Gone(DomainId),
    BecameStale(DomainId),
    Recovered(DomainId),
    /// The guest's counters went backwards: it rebooted.
    Rebooted(DomainId),
    SuspectOom {
        id: DomainId,
        reason: SuspectReason,
    },
    NearMiss {
        id: DomainId,
        kind: NearMissKind,
        detail: String,
        actual_kib: Option<u64>,
        usable_kib: Option<u64>,
    },
    BalloonMoved {
        id: DomainId,
        actual_kib: u64,
        previous_kib: Option<u64>,
    },
    /// A pressure episode started, peaked or ended.
    Pressure {
        id: DomainId,
        episode: Box<PressureEpisode>,
    },
}

impl Change {
    /// The VM it is about.
    pub fn id(&self) -> &DomainId {
        match self {
            Change::Appeared(id)
            | Change::Gone(id)
            | Change::BecameStale(id)
            | Change::Recovered(id)
            | Change::Rebooted(id)
            | Change::SuspectOom { id, .. }
            | Change::NearMiss { id, .. }
            | Change::BalloonMoved { id, .. }
            | Change::Pressure { id, .. } => id,
        }
    }
}

/// One VM's state.
#[derive(Debug, Clone)]
pub struct VmState {
    pub id: DomainId,
    pub history: History,
    pub config: Option<DomainConfig>,
    pub counters: Option<GuestCounters>,
    /// The guest's latest PSI reading ([`Fleet::apply_psi`]), until it expires.
    pub psi: Option<PsiReading>,
    pub last_sample: Option<BalloonSample>,
    pub stale: bool,
    pub last_oom_at: Option<SystemTime>,
    pub oom_count: u64,
    /// The risk model's state: its latest assessment and the episode under way.
    pub risk: VmRisk,
    /// The guard's state for this VM (docs/guard.md).
    pub guard: VmGuard,
    last_update_seen: Option<u64>,
    unchanged_polls: u32,
    last_near_miss: BTreeMap<NearMissKind, SystemTime>,
    rollup: Option<BalloonRollup>,
    rollup_period: u64,
    /// When the last bulk poll sampled this VM.
    sampled_at: Option<SystemTime>,
    /// `counters` were read in this poll ([`Fleet::apply_counters`]).
    counters_fresh: bool,
    signals: SignalTracker,
    /// The signals at the last poll; None when the VM has none (`signals: none`).
    pressure: Option<PressureSnapshot>,
    pressure_window: PressureWindow,
}

impl VmState {
    fn new(id: DomainId, history_capacity: usize) -> Self {
        Self {
            id,
            history: History::new(history_capacity),
            config: None,
            counters: None,
            psi: None,
            last_sample: None,
            stale: false,
            last_oom_at: None,
            oom_count: 0,
            risk: VmRisk::default(),
            guard: VmGuard::default(),
            last_update_seen: None,
            unchanged_polls: 0,
            last_near_miss: BTreeMap::new(),
            rollup: None,
            rollup_period: 0,
            sampled_at: None,
            counters_fresh: false,
            signals: SignalTracker::new(),
            pressure: None,
            pressure_window: PressureWindow::default(),
        }
    }

    /// The VM's pressure signals at the last poll; None when it has none (no balloon
    /// stats rates yet, no 6.12 counters read, no PSI): unknown, not "no pressure".
    pub fn pressure_snapshot(&self) -> Option<&PressureSnapshot> {
        self.pressure.as_ref()
    }

    /// The VM's recent snapshots with their poll times, oldest first (at most
    /// [`crate::pressure::window::WINDOW_POINTS`]; polls without signals are left out;
    /// PSI totals only in [`Self::pressure_snapshot`]).
    pub fn pressure_window(&self) -> Vec<(SystemTime, PressureSnapshot)> {
        self.pressure_window.snapshots()
    }

    /// The signals of the poll at `at`: its sample, the counters read in it, the PSI
    /// reading while fresh.
    fn observe_pressure(&mut self, at: SystemTime) -> Option<Change> {
        let sample = self.last_sample.clone()?;
        let counters = self.counters.as_ref().filter(|_| self.counters_fresh);
        let psi = self.psi.as_ref().and_then(|reading| reading.fresh_at(at));
        let snapshot = self.signals.observe(at, &sample, counters, psi);
        self.counters_fresh = false;
        if snapshot.sources().is_empty() {
            self.pressure = None;
        } else {
            self.pressure_window.push(at, &snapshot);
            if let Some(rollup) = self.rollup.as_mut() {
                // What the collector accepts: a hostile figure is missing, not the rollup.
                crate::pressure::rollup::fold(&mut rollup.pressure, &snapshot.bounded());
            }
            self.pressure = Some(snapshot);
        }
        // The risk reads the sample too (MemAvailable, the balloon) when no signal
        // rate is known yet.
        let change = self.observe_risk(at, &snapshot, &sample);
        if let Some(level) = self.risk.level() {
            self.raise_rollup_risk(level);
        }
        change
    }

    /// The balloon as the host saw it at an OOM, and that sample's time. Never a sample
    /// taken after the kill: a stalled inflation completes once the kill frees memory.
    /// `bound`: the kill was printed after it (the last sample before it is taken,
    /// unless it holds clearly less than `report_held_kb`: the balloon inflated after
    /// that poll). Without one, `report_held_kb`: what the guest's own report shows the balloon held
    /// (its pages sit in `pages reserved`). The newest sample up to `captured_at` stands
    /// when it holds no more than that (+ `slack_kb`); one holding more was taken after
    /// the kill freed memory, and an older sample stands only when it agrees with the
    /// report (within `slack_kb`): the balloon may have moved between it and the kill.
    /// Without either, no `actual`.
    pub fn host_balloon_at_oom(
        &self,
        bound: Option<SystemTime>,
        captured_at: SystemTime,
        report_held_kb: Option<u64>,
        slack_kb: u64,
    ) -> (HostBalloon, Option<SystemTime>) {
        let held = |p: &HistoryPoint| Some(p.maximum_kib?.saturating_sub(p.actual_kib?));
        let point = match (bound, report_held_kb) {
            // Unless the balloon inflated between it and the kill (the report's evidence
            // against the newest sample; `ballast_oom::sample_before_kill_stands`).
            (Some(bound), Some(report)) => {
                let newest = self
                    .history
                    .last_until(captured_at, |p| held(p).is_some())
                    .and_then(|p| held(&p));
                self.history.last_before(bound).filter(|p| {
                    ballast_oom::sample_before_kill_stands(held(p), newest, report, slack_kb)
                })
            }
            (Some(bound), None) => self.history.last_before(bound),
            (None, Some(report)) => {
                let ceiling = report.saturating_add(slack_kb);
                match self.history.last_until(captured_at, |p| held(p).is_some()) {
                    Some(newest) if held(&newest).is_some_and(|h| h <= ceiling) => Some(newest),
                    _ => self.history.last_until(captured_at, |p| {
                        held(p)
                            .is_some_and(|h| h <= ceiling && h.saturating_add(slack_kb) >= report)
                    }),
                }
            }
            (None, None) => None,
        };
        let maximum = point
            .and_then(|p| p.maximum_kib)
            .or(self.last_sample.as_ref().and_then(|s| s.maximum_kib));
        (
            HostBalloon {
                maximum_kb: maximum,
                actual_kb: point.and_then(|p| p.actual_kib),
                deflate_on_oom: self.config.as_ref().and_then(|c| c.deflate_on_oom),
            },
            point.map(|p| p.at),
        )
    }

    fn near_miss_due(&mut self, kind: NearMissKind, at: SystemTime) -> bool {
        let due = self
            .last_near_miss
            .get(&kind)
            .is_none_or(|last| at.duration_since(*last).unwrap_or_default() >= NEAR_MISS_EVERY);
        if due {
            self.last_near_miss.insert(kind, at);
        }
        due
    }

    /// Folds a sample into the current minute; returns the finished rollup of a past minute.
    fn roll(&mut self, at: SystemTime, sample: &BalloonSample) -> Option<BalloonRollup> {
        let period = epoch_secs(at) / ROLLUP_SECS;
        let finished = if self.rollup.is_some() && period != self.rollup_period {
            self.rollup.take()
        } else {
            None
        };
        let id = &self.id;
        let rollup = self.rollup.get_or_insert_with(|| BalloonRollup {
            vm: crate::wire::vm_ref(id),
            period_start_ms: i64::try_from(period * ROLLUP_SECS * 1000).unwrap_or(i64::MAX),
            period_secs: u32::try_from(ROLLUP_SECS).unwrap_or(60),
            ..BalloonRollup::default()
        });
        self.rollup_period = period;
        rollup.samples += 1;
        rollup.maximum_kib = sample.maximum_kib.or(rollup.maximum_kib);
        rollup.actual_kib.add(sample.actual_kib);
        rollup.available_kib.add(sample.available_kib);
        rollup.usable_kib.add(sample.usable_kib);
        rollup.unused_kib.add(sample.unused_kib);
        rollup.rss_kib.add(sample.rss_kib);
        rollup.stale |= self.stale;
        if let Some(counters) = &self.counters {
            rollup.oom_kills = counters.oom_kills.or(rollup.oom_kills);
            rollup.alloc_stalls = counters.alloc_stalls.or(rollup.alloc_stalls);
        }
        finished
    }

    /// Reads this poll's risk; the episode event it makes, as a change.
    /// Raises the open minute rollup's `pressure.risk` to `level` (never lowers it; a
    /// period without signals has no `pressure` and stays without one).
    fn raise_rollup_risk(&mut self, level: ballast_model::RiskLevel) {
        let pressure = self
            .rollup
            .as_mut()
            .and_then(|rollup| rollup.pressure.as_mut());
        if let Some(pressure) = pressure {
            if rank(level) > rank(pressure.risk) {
                pressure.risk = level;
            }
        }
    }

    fn observe_risk(
        &mut self,
        at: SystemTime,
        snapshot: &PressureSnapshot,
        sample: &BalloonSample,
    ) -> Option<Change> {
        let vm = crate::wire::vm_ref(&self.id);
        let episode = self
            .risk
            .observe(&vm, at, snapshot, sample, self.config.as_ref())?;
        Some(Change::Pressure {
            id: self.id.clone(),
            episode: Box::new(episode),
        })
    }
}

/// One read of a guest's `/proc/pressure/memory`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsiReading {
    /// When it was read (host clock).
    pub at: SystemTime,
    /// Polls after this no longer use it (the reads stopped coming).
    pub valid_until: SystemTime,
    pub psi: GuestPsi,
}

impl PsiReading {
    /// The reading, while it is fresh at `at`.
    pub fn fresh_at(&self, at: SystemTime) -> Option<&GuestPsi> {
        (at <= self.valid_until).then_some(&self.psi)
    }
}

/// Every VM the agent knows.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Boxed values: B-tree nodes hold 11 slots, often half empty, and a `VmState`
    /// is ~1.9 KiB inline since the pressure signals (~1.2 KiB before; measured with
    /// heaptrack at 500 VMs then: -0.25 MiB boxed).
    vms: BTreeMap<String, Box<VmState>>,
    history_capacity: usize,
    finished_rollups: Vec<BalloonRollup>,
    /// Pressure events suppressed for VMs that went away.
    gone_pressure_suppressed: u64,
}

impl Fleet {
    pub fn new(history_capacity: usize) -> Self {
        Self {
            vms: BTreeMap::new(),
            history_capacity,
            finished_rollups: Vec::new(),
            gone_pressure_suppressed: 0,
        }
    }

    pub fn vms(&self) -> impl Iterator<Item = &VmState> {
        self.vms.values().map(|vm| &**vm)
    }

    pub fn get(&self, uuid: &str) -> Option<&VmState> {
        self.vms.get(uuid).map(|vm| &**vm)
    }

    pub fn get_mut(&mut self, uuid: &str) -> Option<&mut VmState> {
        self.vms.get_mut(uuid).map(|vm| &mut **vm)
    }

    pub fn len(&self) -> usize {
        self.vms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vms.is_empty()
    }

    /// Applies one bulk poll: the running VMs and their samples.
    pub fn apply_poll(
        &mut self,
        at: SystemTime,
        samples: Vec<(DomainId, BalloonSample)>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (id, sample) in samples {
            let sample = sample.plausible();
            seen.insert(id.uuid.clone());
            let capacity = self.history_capacity;
            let vm = self.vms.entry(id.uuid.clone()).or_insert_with(|| {
                changes.push(Change::Appeared(id.clone()));
                Box::new(VmState::new(id.clone(), capacity))
            });
            vm.id.name.clone_from(&id.name);
            track_staleness(vm, &sample, &mut changes);
            detect_pressure(vm, at, &sample, &mut changes);
            vm.history.push_sample(at, &sample);
            vm.sampled_at = Some(at);
            if let Some(rollup) = vm.roll(at, &sample) {
                self.finished_rollups.push(rollup);
            }
            vm.last_sample = Some(sample);
        }
        let gone: Vec<String> = self
            .vms
            .keys()
            .filter(|uuid| !seen.contains(*uuid))
            .cloned()
            .collect();
        for uuid in gone {
            if let Some(mut vm) = self.vms.remove(&uuid) {
                if let Some(rollup) = vm.rollup.take() {
                    self.finished_rollups.push(rollup);
                }
                let ended = vm.risk.vm_gone(&crate::wire::vm_ref(&vm.id), at);
                self.gone_pressure_suppressed = self
                    .gone_pressure_suppressed
                    .saturating_add(vm.risk.episodes().suppressed());
                if let Some(episode) = ended {
                    changes.push(Change::Pressure {
                        id: vm.id.clone(),
                        episode: Box::new(episode),
                    });
                }
                changes.push(Change::Gone(vm.id));
            }
        }
        changes
    }

    /// Applies a balloon-change event (between polls).
    pub fn apply_balloon_change(
        &mut self,
        id: &DomainId,
        at: SystemTime,
        actual_kib: u64,
    ) -> Vec<Change> {
        let Some(vm) = self.vms.get_mut(&id.uuid) else {
            return Vec::new();
        };
        // QEMU's `actual` is the page count the guest's driver writes: hostile input.
        if ballast_model::plausible_kib(Some(actual_kib)).is_none() {
            return Vec::new();
        }
        let previous = vm.history.last().and_then(|p| p.actual_kib);
        let mut changes = vec![Change::BalloonMoved {
            id: vm.id.clone(),
            actual_kib,
            previous_kib: previous,
        }];
        if let Some(previous) = previous {
            silent_deflate(vm, at, previous, actual_kib, &mut changes);
        }
        vm.history.push_balloon_event(at, actual_kib);
        changes
    }

    /// Applies QEMU's balloon counters of one VM.
    pub fn apply_counters(&mut self, id: &DomainId, counters: GuestCounters) -> Vec<Change> {
        let Some(vm) = self.vms.get_mut(&id.uuid) else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        let before = vm.counters.as_ref().and_then(|c| c.oom_kills);
        match (before, counters.oom_kills) {
            (Some(before), Some(now)) if now > before => changes.push(Change::SuspectOom {
                id: vm.id.clone(),
                reason: SuspectReason::OomKillCounter,
            }),
            (Some(before), Some(now)) if now < before => {
                changes.push(Change::Rebooted(vm.id.clone()))
            }
            _ => {}
        }
        vm.counters = Some(counters);
        vm.counters_fresh = true;
        changes
    }

    /// Turns the poll at `at` into each sampled VM's pressure snapshot, after its
    /// counters were applied ([`Self::apply_counters`]), and reads its risk; VMs not
    /// sampled at `at` keep theirs. The pressure episodes it starts, peaks or ends.
    pub fn observe_pressure(&mut self, at: SystemTime) -> Vec<Change> {
        self.vms
            .values_mut()
            .filter(|vm| vm.sampled_at == Some(at))
            .filter_map(|vm| vm.observe_pressure(at))
            .collect()
    }

    /// The guard's decisions for the VMs sampled at `at` (after [`Self::observe_pressure`]),
    /// each with its audited event. `host` holds the host-wide rate limit.
    pub fn decide_guard(
        &mut self,
        at: SystemTime,
        settings: &GuardSettings,
        host: &mut HostGuard,
        host_available_kib: Option<u64>,
    ) -> Vec<(DomainId, Decision, ballast_model::GuardAction)> {
        let mut decisions = Vec::new();
        for vm in self.vms.values_mut().filter(|vm| vm.sampled_at == Some(at)) {
            let Some(assessment) = vm.risk.assessment() else {
                continue;
            };
            let sample = vm.last_sample.clone().unwrap_or_default();
            let signals = vm.pressure.unwrap_or_default();
            let input = GuardInput {
                at,
                assessment,
                episode_started_at_ms: vm.risk.episodes().open_started_at_ms(),
                signals: &signals,
                actual_kib: sample.actual_kib,
                maximum_kib: sample.maximum_kib,
                floor_kib: ballast_model::plausible_kib(
                    vm.config.as_ref().and_then(|c| c.current_memory_kib),
                ),
                host_available_kib,
            };
            if let Some(decision) = crate::guard::decide(settings, &mut vm.guard, host, &input) {
                let action = decision.action(&crate::wire::vm_ref(&vm.id), settings, &input);
                decisions.push((vm.id.clone(), decision, action));
            }
        }
        decisions
    }

    /// The hypervisor refused the guard's deflation of `id`: nothing to watch.
    pub fn guard_step_failed(&mut self, id: &DomainId) {
        if let Some(vm) = self.vms.get_mut(&id.uuid) {
            vm.guard.step_failed();
        }
    }

    /// Raises the risk of the VM's open minute rollup to `level` (for the risk model:
    /// a rollup's `pressure.risk` is the period's highest); a period without signals
    /// has no `pressure` and stays without one.
    pub fn raise_rollup_risk(&mut self, id: &DomainId, level: ballast_model::RiskLevel) {
        if let Some(vm) = self.vms.get_mut(&id.uuid) {
            vm.raise_rollup_risk(level);
        }
    }

    /// Records a PSI reading of the guest, taken at `at`, used by the polls of the
    /// next `valid_for`.
    pub fn apply_psi(&mut self, id: &DomainId, at: SystemTime, psi: GuestPsi, valid_for: Duration) {
        if let Some(vm) = self.vms.get_mut(&id.uuid) {
            vm.psi = Some(PsiReading {
                at,
                valid_until: at + valid_for,
                psi,
            });
        }
    }

    /// Records the VM's configuration (fetched when it appeared).
    pub fn set_config(&mut self, id: &DomainId, config: DomainConfig) {
        if let Some(vm) = self.vms.get_mut(&id.uuid) {
            vm.config = Some(config);
        }
    }

    /// Records that an OOM of this VM was captured.
    pub fn record_oom(&mut self, id: &DomainId, at: SystemTime) {
        if let Some(vm) = self.vms.get_mut(&id.uuid) {
            vm.last_oom_at = Some(at);
            vm.oom_count += 1;
        }
    }

    /// Pressure episode events not sent since start: VMs over their hourly budget.
    pub fn pressure_events_suppressed(&self) -> u64 {
        self.vms
            .values()
            .map(|vm| vm.risk.episodes().suppressed())
            .fold(self.gone_pressure_suppressed, u64::saturating_add)
    }

    /// Rollups of minutes that ended (their VM was sampled in a later minute, or went away).
    pub fn take_finished_rollups(&mut self) -> Vec<BalloonRollup> {
        std::mem::take(&mut self.finished_rollups)
    }
}

fn track_staleness(vm: &mut VmState, sample: &BalloonSample, changes: &mut Vec<Change>) {
    let update = sample.last_update_epoch_secs.filter(|secs| *secs > 0);
    if update.is_some() && update == vm.last_update_seen {
        vm.unchanged_polls += 1;
    } else if update.is_some() {
        vm.unchanged_polls = 0;
    }
    vm.last_update_seen = update.or(vm.last_update_seen);
    let stale = vm.unchanged_polls >= STALE_AFTER_POLLS;
    if stale && !vm.stale {
        changes.push(Change::BecameStale(vm.id.clone()));
    } else if !stale && vm.stale {
        changes.push(Change::Recovered(vm.id.clone()));
    }
    vm.stale = stale;
}

fn detect_pressure(
    vm: &mut VmState,
    at: SystemTime,
    sample: &BalloonSample,
    changes: &mut Vec<Change>,
) {
    let (Some(usable), Some(available)) = (sample.usable_kib, sample.available_kib) else {
        return;
    };
    if available == 0 {
        return;
    }
    let collapsed = usable * 100 < available * USABLE_COLLAPSED_PCT;
    let was_collapsed = vm
        .last_sample
        .as_ref()
        .and_then(|s| Some(s.usable_kib? * 100 < s.available_kib? * USABLE_COLLAPSED_PCT))
        .unwrap_or(false);
    if collapsed && !was_collapsed {
        changes.push(Change::SuspectOom {
            id: vm.id.clone(),
            reason: SuspectReason::UsableCollapsed,
        });
    }
    let inflated = match (sample.actual_kib, sample.maximum_kib) {
        (Some(actual), Some(maximum)) => actual < maximum,
        _ => false,
    };
    if collapsed && inflated && vm.near_miss_due(NearMissKind::UsableLow, at) {
        changes.push(Change::NearMiss {
            id: vm.id.clone(),
            kind: NearMissKind::UsableLow,
            detail: format!(
                "MemAvailable {} KiB of {} KiB while the balloon holds {} KiB",
                usable,
                available,
                sample
                    .maximum_kib
                    .unwrap_or(0)
                    .saturating_sub(sample.actual_kib.unwrap_or(0))
            ),
            actual_kib: sample.actual_kib,
            usable_kib: Some(usable),
        });
    }
    if let (Some(previous), Some(actual)) = (
        vm.last_sample.as_ref().and_then(|s| s.actual_kib),
        sample.actual_kib,
    ) {
        silent_deflate(vm, at, previous, actual, changes);
    }
}

/// A deflate-on-oom balloon that gave memory back while the guest was short of it.
fn silent_deflate(
    vm: &mut VmState,
    at: SystemTime,
    previous_kib: u64,
    actual_kib: u64,
    changes: &mut Vec<Change>,
) {
    let deflate_on_oom = vm.config.as_ref().and_then(|c| c.deflate_on_oom) == Some(true);
    let grew = actual_kib.saturating_sub(previous_kib);
    let usable_low = vm
        .last_sample
        .as_ref()
        .and_then(|s| Some(s.usable_kib? * 10 < s.available_kib?))
        .unwrap_or(false);
    if deflate_on_oom
        && grew >= SILENT_DEFLATE_MIN_KIB
        && usable_low
        && vm.near_miss_due(NearMissKind::SilentDeflate, at)
    {
        changes.push(Change::NearMiss {
            id: vm.id.clone(),
            kind: NearMissKind::SilentDeflate,
            detail: format!("the balloon gave back {grew} KiB on its own (deflate-on-oom) while the guest was short of memory"),
            actual_kib: Some(actual_kib),
            usable_kib: vm.last_sample.as_ref().and_then(|s| s.usable_kib),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_model::MinMaxLast;
    use std::time::UNIX_EPOCH;

    fn id(n: u32) -> DomainId {
        DomainId {
            uuid: format!("00000000-0000-4000-8000-{n:012}"),
            name: format!("vm{n}"),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn sample(actual: u64, usable: u64, update: u64) -> BalloonSample {
        BalloonSample {
            actual_kib: Some(actual),
            maximum_kib: Some(524_288),
            available_kib: Some(468_416),
            usable_kib: Some(usable),
            last_update_epoch_secs: Some(update),
            ..BalloonSample::default()
        }
    }

    #[test]
    fn guest_figures_beyond_any_machine_are_kept_as_missing() {
        let mut fleet = Fleet::new(10);
        fleet.apply_poll(at(0), vec![(id(1), sample(524_288, u64::MAX, 1))]);
        let vm = fleet.get(&id(1).uuid).expect("tracked");
        let last = vm.last_sample.as_ref().expect("sampled");
        assert_eq!(
            last.usable_kib, None,
            "u64::MAX KiB is no guest's MemAvailable"
        );
        assert_eq!(last.actual_kib, Some(524_288));
        let forged = fleet.apply_balloon_change(&id(1), at(1), u64::MAX / 2);
        assert!(forged.is_empty(), "{forged:?}");
        assert_eq!(
            fleet.apply_balloon_change(&id(1), at(2), 262_144).len(),
            1,
            "a real change still counts"
        );
    }

    #[test]
    fn vms_appear_and_go() {
        let mut fleet = Fleet::new(10);
        let changes = fleet.apply_poll(
            at(0),
            vec![
                (id(1), sample(524_288, 400_000, 1)),
                (id(2), sample(524_288, 400_000, 1)),
            ],
        );
        assert_eq!(changes, [Change::Appeared(id(1)), Change::Appeared(id(2))]);
        let changes = fleet.apply_poll(at(10), vec![(id(2), sample(524_288, 400_000, 2))]);
        assert_eq!(changes, [Change::Gone(id(1))]);
        assert_eq!(fleet.len(), 1);
    }

    #[test]
    fn stats_that_stop_updating_become_stale_and_recover() {
        let mut fleet = Fleet::new(10);
        let mut all = Vec::new();
        for poll in 0..5 {
            all.extend(fleet.apply_poll(at(poll * 10), vec![(id(1), sample(524_288, 400_000, 7))]));
        }
        assert!(all.contains(&Change::BecameStale(id(1))));
        assert!(fleet.get(&id(1).uuid).is_some_and(|vm| vm.stale));
        let changes = fleet.apply_poll(at(60), vec![(id(1), sample(524_288, 400_000, 8))]);
        assert_eq!(changes, [Change::Recovered(id(1))]);
    }

    #[test]
    fn a_collapse_of_mem_available_is_suspected_once_and_flagged_when_inflated() {
        let mut fleet = Fleet::new(10);
        fleet.apply_poll(at(0), vec![(id(1), sample(204_800, 100_000, 1))]);
        let changes = fleet.apply_poll(at(10), vec![(id(1), sample(204_800, 3_000, 2))]);
        assert!(changes.contains(&Change::SuspectOom {
            id: id(1),
            reason: SuspectReason::UsableCollapsed
        }));
        assert!(changes.iter().any(|c| matches!(
            c,
            Change::NearMiss {
                kind: NearMissKind::UsableLow,
                ..
            }
        )));
        let again = fleet.apply_poll(at(20), vec![(id(1), sample(204_800, 2_000, 3))]);
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn the_oom_kill_counter_rising_or_falling_means_an_oom_or_a_reboot() {
        let mut fleet = Fleet::new(10);
        fleet.apply_poll(at(0), vec![(id(1), sample(524_288, 400_000, 1))]);
        let counters = |kills| GuestCounters {
            oom_kills: Some(kills),
            ..GuestCounters::default()
        };
        assert!(fleet.apply_counters(&id(1), counters(0)).is_empty());
        assert_eq!(
            fleet.apply_counters(&id(1), counters(1)),
            [Change::SuspectOom {
                id: id(1),
                reason: SuspectReason::OomKillCounter
            }]
        );
        assert_eq!(
            fleet.apply_counters(&id(1), counters(0)),
            [Change::Rebooted(id(1))]
        );
    }

    #[test]
    fn a_deflate_on_oom_balloon_giving_memory_back_is_a_near_miss() {
        let mut fleet = Fleet::new(10);
        fleet.apply_poll(at(0), vec![(id(1), sample(204_800, 20_000, 1))]);
        fleet.set_config(
            &id(1),
            DomainConfig {
                deflate_on_oom: Some(true),
                ..DomainConfig::default()
            },
        );
        let changes = fleet.apply_balloon_change(&id(1), at(3), 295_936);
        assert!(
            changes.iter().any(|c| matches!(
                c,
                Change::NearMiss {
                    kind: NearMissKind::SilentDeflate,
                    ..
                }
            )),
            "{changes:?}"
        );
        let vm = fleet.get(&id(1).uuid).expect("vm");
        let (host, sampled) = vm.host_balloon_at_oom(Some(at(4)), at(9), None, 0);
        assert_eq!(
            host.actual_kb,
            Some(295_936),
            "the event is newer than the poll"
        );
        assert_eq!(sampled, Some(at(3)));
        assert_eq!(host.held_kb(), Some(524_288 - 295_936));
        // A kill printed within the event's second: the event may be later; the poll is not.
        let (host, sampled) =
            vm.host_balloon_at_oom(Some(at(3) + Duration::from_millis(500)), at(9), None, 0);
        assert_eq!(host.actual_kb, Some(204_800));
        assert_eq!(sampled, Some(at(0)));
        // No bound: the newest sample when the report's balloon evidence allows it.
        let (host, sampled) = vm.host_balloon_at_oom(None, at(9), Some(220_000), 16_384);
        assert_eq!((host.actual_kb, sampled), (Some(295_936), Some(at(3))));
        // The newest holds more than the report shows, and the older one more still:
        // none stands.
        let (host, sampled) = vm.host_balloon_at_oom(None, at(9), Some(100_000), 16_384);
        assert_eq!((host.actual_kb, sampled), (None, None));
        // A bound and report evidence that agrees with the sample before the kill.
        let (host, sampled) =
            vm.host_balloon_at_oom(Some(at(1)), at(9), Some(524_288 - 204_800), 16_384);
        assert_eq!((host.actual_kb, sampled), (Some(204_800), Some(at(0))));
        // Neither a bound nor report evidence: no sample is known to predate the kill.
        let (host, sampled) = vm.host_balloon_at_oom(None, at(9), None, 0);
        assert_eq!((host.actual_kb, sampled), (None, None));
        assert_eq!(host.maximum_kb, Some(524_288));
    }

    /// The balloon inflated within one poll of the kill (QMP sends no balloon events):
    /// the sample before the kill shows it empty, the report and the next sample show
    /// it holding 312 MiB. The sample before does not stand; a host figure that never
    /// moved does (the report's reserved memory may be something else).
    #[test]
    fn a_sample_before_an_inflation_within_one_poll_of_the_kill_does_not_stand() {
        let mut fleet = Fleet::new(100);
        fleet.apply_poll(at(0), vec![(id(1), sample(524_288, 400_000, 1))]);
        fleet.apply_poll(at(2), vec![(id(1), sample(204_800, 20_000, 2))]);
        let vm = fleet.get(&id(1).uuid).expect("vm");
        let report = 319_488 - 4_096;
        let (host, sampled) = vm.host_balloon_at_oom(Some(at(1)), at(9), Some(report), 16_384);
        assert_eq!((host.actual_kb, sampled), (None, None));
        assert_eq!(host.maximum_kb, Some(524_288));
        // Without the report's evidence the sample before the kill is all there is.
        let (host, sampled) = vm.host_balloon_at_oom(Some(at(1)), at(9), None, 16_384);
        assert_eq!((host.actual_kb, sampled), (Some(524_288), Some(at(0))));
        // A balloon that never moved: the host's empty balloon stands against the report.
        let mut fleet = Fleet::new(100);
        fleet.apply_poll(at(0), vec![(id(1), sample(524_288, 400_000, 1))]);
        fleet.apply_poll(at(2), vec![(id(1), sample(524_288, 20_000, 2))]);
        let vm = fleet.get(&id(1).uuid).expect("vm");
        let (host, sampled) = vm.host_balloon_at_oom(Some(at(1)), at(9), Some(report), 16_384);
        assert_eq!((host.actual_kb, sampled), (Some(524_288), Some(at(0))));
    }

    #[test]
    fn risk_goes_into_the_rollup_and_a_vm_that_goes_away_ends_its_episode() {
        let mut fleet = Fleet::new(100);
        let mut changes = Vec::new();
        // MemAvailable under 10 % of MemTotal for three polls of one minute.
        for second in [0, 10, 20, 30] {
            let usable = if second == 0 { 300_000 } else { 30_000 };
            changes.extend(fleet.apply_poll(
                at(second),
                vec![(id(1), sample(524_288, usable, second + 1))],
            ));
            changes.extend(fleet.observe_pressure(at(second)));
        }
        let starts: Vec<&PressureEpisode> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Pressure { episode, .. } => Some(&**episode),
                _ => None,
            })
            .collect();
        assert_eq!(starts.len(), 1, "{changes:?}");
        assert_eq!(starts[0].phase, ballast_model::EpisodePhase::Start);
        fleet.apply_poll(at(60), vec![(id(1), sample(524_288, 30_000, 61))]);
        fleet.observe_pressure(at(60));
        let rollup = fleet.take_finished_rollups().pop().expect("a rollup");
        let pressure = rollup.pressure.expect("the minute's pressure");
        assert_eq!(pressure.risk, ballast_model::RiskLevel::Elevated);
        assert_eq!(
            pressure.sources,
            [ballast_model::SignalSource::BalloonStats]
        );
        let gone = fleet.apply_poll(at(70), Vec::new());
        assert!(
            matches!(
                gone.as_slice(),
                [Change::Pressure { episode, .. }, Change::Gone(_)]
                    if episode.phase == ballast_model::EpisodePhase::End
            ),
            "{gone:?}"
        );
        // A VM without guest figures has no pressure in its rollup.
        let mut fleet = Fleet::new(100);
        let blind = BalloonSample {
            actual_kib: Some(524_288),
            ..BalloonSample::default()
        };
        fleet.apply_poll(at(0), vec![(id(2), blind.clone())]);
        fleet.observe_pressure(at(0));
        fleet.apply_poll(at(60), vec![(id(2), blind)]);
        fleet.observe_pressure(at(60));
        let rollup = fleet.take_finished_rollups().pop().expect("a rollup");
        assert_eq!(rollup.pressure, None);
    }

    #[test]
    fn the_guests_own_stall_counters_drive_its_risk() {
        let mut fleet = Fleet::new(100);
        let mut episodes = Vec::new();
        // MemAvailable short but steady at 15 %; the guest stalls 10 times a second and
        // reclaims 4 MiB/s directly (QEMU's guest-stats, cumulative).
        for poll in 0..6u64 {
            let secs = poll * 10;
            fleet.apply_poll(at(secs), vec![(id(1), sample(524_288, 70_000, secs + 1))]);
            fleet.apply_counters(
                &id(1),
                GuestCounters {
                    oom_kills: Some(0),
                    alloc_stalls: Some(poll * 100),
                    direct_reclaims_bytes: Some(poll * 40 * 1024 * 1024),
                    direct_scans_bytes: Some(poll * 80 * 1024 * 1024),
                    async_scans_bytes: Some(0),
                    async_reclaims_bytes: Some(0),
                    last_update_epoch_secs: Some(1_800_000_000 + secs),
                },
            );
            episodes.extend(fleet.observe_pressure(at(secs)));
        }
        let vm = fleet.get(&id(1).uuid).expect("vm");
        let assessment = vm.risk.assessment().expect("assessed");
        assert_eq!(
            assessment.level,
            ballast_model::RiskLevel::Elevated,
            "{assessment:?}"
        );
        assert!(
            assessment
                .drivers
                .contains(&ballast_model::PressureSignal::AllocStalls),
            "{assessment:?}"
        );
        assert!(assessment
            .sources
            .contains(&ballast_model::SignalSource::BalloonCounters));
        assert!(
            matches!(episodes.as_slice(), [Change::Pressure { episode, .. }]
                if episode.phase == ballast_model::EpisodePhase::Start
                    && episode.signals.alloc_stalls_per_s.is_some()),
            "{episodes:?}"
        );
    }

    #[test]
    fn rollups_close_when_the_minute_ends() {
        let mut fleet = Fleet::new(100);
        for second in [0, 10, 20, 30, 40, 50] {
            fleet.apply_poll(
                at(second),
                vec![(id(1), sample(500_000 - second * 1000, 300_000, second))],
            );
        }
        assert!(fleet.take_finished_rollups().is_empty());
        fleet.apply_poll(at(60), vec![(id(1), sample(400_000, 300_000, 61))]);
        let rollups = fleet.take_finished_rollups();
        assert_eq!(rollups.len(), 1);
        let rollup = &rollups[0];
        assert_eq!(rollup.samples, 6);
        assert_eq!(
            rollup.actual_kib,
            MinMaxLast {
                min: Some(450_000),
                max: Some(500_000),
                last: Some(450_000)
            }
        );
        assert_eq!(rollup.vm.name, "vm1");
    }

    #[test]
    fn each_poll_gives_a_vm_its_signals_a_window_and_the_rollup_its_pressure() {
        let mut fleet = Fleet::new(100);
        let stats = |faults: u64, usable: u64, update: u64| BalloonSample {
            major_faults: Some(faults),
            ..sample(204_800, usable, 1_800_000_000 + update)
        };
        let counters = |stalls: u64, update: u64| GuestCounters {
            alloc_stalls: Some(stalls),
            direct_reclaims_bytes: Some(stalls * 4096),
            last_update_epoch_secs: Some(1_800_000_000 + update),
            ..GuestCounters::default()
        };
        // A 6.1-like VM: balloon stats only. A 6.12-like VM: counters too.
        let old = id(1);
        let new = id(2);
        for poll in 0..4u64 {
            let secs = poll * 10;
            fleet.apply_poll(
                at(secs),
                vec![
                    (old.clone(), stats(poll * 50, 300_000 - poll * 10_000, secs)),
                    (new.clone(), stats(poll * 50, 300_000, secs)),
                ],
            );
            fleet.apply_counters(&new, counters(poll * 20, secs));
            fleet.observe_pressure(at(secs));
        }
        let old_vm = fleet.get(&old.uuid).expect("old");
        let signals = old_vm.pressure_snapshot().expect("balloon stats signals");
        assert_eq!(signals.major_faults_per_s, Some(5.0));
        assert_eq!(signals.alloc_stalls_per_s, None);
        assert_eq!(signals.available_slope_kib_per_s, Some(-1000.0));
        assert_eq!(
            signals.sources(),
            [ballast_model::SignalSource::BalloonStats]
        );
        let new_vm = fleet.get(&new.uuid).expect("new");
        let signals = new_vm.pressure_snapshot().expect("signals");
        assert_eq!(signals.alloc_stalls_per_s, Some(2.0));
        assert_eq!(signals.direct_reclaim_kib_per_s, Some(8.0));
        // The first poll had no rate yet: three points in the window.
        let window = new_vm.pressure_window();
        assert_eq!(window.len(), 3);
        assert_eq!(window[0].0, at(10));
        // Counters not read in a poll (a skipped VM): no counter rates, not stale ones.
        fleet.apply_poll(at(40), vec![(new.clone(), stats(200, 300_000, 40))]);
        fleet.observe_pressure(at(40));
        let signals = fleet
            .get(&new.uuid)
            .and_then(VmState::pressure_snapshot)
            .expect("stats still");
        assert_eq!(signals.alloc_stalls_per_s, None);
        // The next minute closes the rollup with its pressure.
        fleet.apply_poll(at(60), vec![(new.clone(), stats(250, 300_000, 60))]);
        let rollups = fleet.take_finished_rollups();
        let pressure = rollups
            .iter()
            .find(|rollup| rollup.vm.uuid == new.uuid)
            .and_then(|rollup| rollup.pressure.clone())
            .expect("pressure in the rollup");
        assert_eq!(pressure.peak.alloc_stalls_per_s, Some(2.0));
        assert!(pressure
            .sources
            .contains(&ballast_model::SignalSource::BalloonCounters));
        let gone = rollups
            .iter()
            .find(|rollup| rollup.vm.uuid == old.uuid)
            .expect("the old VM went away: its rollup closed");
        // The risk model's reading: MemAvailable falling ~1 MiB/s, out within 600 s.
        assert_eq!(
            gone.pressure.as_ref().map(|p| p.risk),
            Some(ballast_model::RiskLevel::Elevated)
        );
        assert_eq!(
            gone.pressure.as_ref().map(|p| p.sources.clone()),
            Some(vec![ballast_model::SignalSource::BalloonStats])
        );
    }

    #[test]
    fn the_rollups_risk_is_the_periods_highest() {
        use ballast_model::RiskLevel;
        let mut fleet = Fleet::new(10);
        for poll in 0..3u64 {
            let stats = BalloonSample {
                major_faults: Some(poll),
                ..sample(524_288, 400_000, 1_800_000_000 + poll * 10)
            };
            fleet.apply_poll(at(poll * 10), vec![(id(1), stats)]);
            fleet.observe_pressure(at(poll * 10));
        }
        fleet.raise_rollup_risk(&id(1), RiskLevel::Critical);
        fleet.raise_rollup_risk(&id(1), RiskLevel::Elevated);
        fleet.apply_poll(at(60), Vec::new());
        let rollups = fleet.take_finished_rollups();
        assert_eq!(
            rollups[0].pressure.as_ref().map(|p| p.risk),
            Some(RiskLevel::Critical)
        );
    }

    #[test]
    fn a_vm_without_any_signal_has_none() {
        let mut fleet = Fleet::new(10);
        for poll in 0..3 {
            fleet.apply_poll(
                at(poll * 10),
                vec![(
                    id(1),
                    BalloonSample {
                        actual_kib: Some(524_288),
                        ..BalloonSample::default()
                    },
                )],
            );
            fleet.observe_pressure(at(poll * 10));
        }
        let vm = fleet.get(&id(1).uuid).expect("vm");
        assert_eq!(vm.pressure_snapshot(), None);
        assert!(vm.pressure_window().is_empty());
        fleet.apply_poll(at(60), Vec::new());
        let rollups = fleet.take_finished_rollups();
        assert_eq!(rollups.len(), 1);
        assert_eq!(rollups[0].pressure, None, "not a zero pressure");
    }
}
