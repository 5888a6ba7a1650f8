//! The agent's picture of every VM, updated by polls and hypervisor events.
//!
//! Pure: samples and events in, [`Change`]s out; the run loop does the I/O and
//! acts on the changes (fetch the guest log when an OOM is suspected, send
//! rollups, write the status file). Time always comes from the caller (host clock).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ballast_model::{BalloonRollup, NearMissKind, PressureEpisode, PressureSnapshot};
use ballast_oom::HostBalloon;

use crate::elastic::VmElastic;
use crate::guard::{Decision, GuardInput, GuardSettings, HostGuard, VmGuard};
use crate::history::{epoch_secs, History, HistoryPoint};
use crate::hypervisor::{BalloonSample, DomainConfig, DomainId, GuestCounters};
use crate::pressure::risk::rank;
use crate::pressure::vm_risk::VmRisk;
use crate::pressure::{GuestPsi, PressureWindow, SignalTracker};

mod guard_poll;
mod sample;

/// Polls in a row with `last-update` standing still before a running VM's stats are stale.
pub const STALE_AFTER_POLLS: u32 = 3;
/// A running VM whose balloon answers (`actual` known) but whose guest has never sent
/// stats (`last-update` never set) for this long, and [`STALE_AFTER_POLLS`] polls, has a
/// silent balloon driver: a Linux guest's driver reports when it loads, seconds into
/// boot, so longer means none will (docs/stats-path.md).
pub const SILENT_AFTER: Duration = Duration::from_secs(30);
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
    /// The guest never sent balloon stats over [`SILENT_AFTER`] (`VmState::stats_unreported`).
    StatsNeverCame(DomainId),
    /// Stale or never-sent stats came again.
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
    /// A virtio-mem device's request, plugged size or convergence changed
    /// ([`crate::elastic`]); `at` is the poll or event time.
    MemoryDevice {
        id: DomainId,
        change: Box<ballast_model::MemoryDeviceChange>,
        at: SystemTime,
    },
    /// Plugged virtio-mem memory not onlined, or onlined at last.
    VirtioMemOnline {
        id: DomainId,
        change: crate::elastic::OnlineChange,
    },
}

impl Change {
    /// The VM it is about.
    pub fn id(&self) -> &DomainId {
        match self {
            Change::Appeared(id)
            | Change::Gone(id)
            | Change::BecameStale(id)
            | Change::StatsNeverCame(id)
            | Change::Recovered(id)
            | Change::Rebooted(id)
            | Change::SuspectOom { id, .. }
            | Change::NearMiss { id, .. }
            | Change::BalloonMoved { id, .. }
            | Change::Pressure { id, .. }
            | Change::MemoryDevice { id, .. }
            | Change::VirtioMemOnline { id, .. } => id,
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
    /// The balloon answers but the guest never sent stats ([`SILENT_AFTER`]); the audit
    /// names it `balloon_driver_silent` when stats were asked for.
    pub stats_unreported: bool,
    pub last_oom_at: Option<SystemTime>,
    pub oom_count: u64,
    /// The risk model's state: its latest assessment and the episode under way.
    pub risk: VmRisk,
    /// The guard's state for this VM (docs/guard.md).
    pub guard: VmGuard,
    /// Its virtio-mem devices (docs/elastic.md); None while it has none.
    pub elastic: Option<Box<VmElastic>>,
    last_update_seen: Option<u64>,
    unchanged_polls: u32,
    /// The first poll without any stats from the guest yet, and the polls since.
    unreported_since: Option<(SystemTime, u32)>,
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
            stats_unreported: false,
            last_oom_at: None,
            oom_count: 0,
            risk: VmRisk::default(),
            guard: VmGuard::default(),
            elastic: None,
            last_update_seen: None,
            unchanged_polls: 0,
            unreported_since: None,
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
            self.take_rollup()
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

    /// The open rollup with its virtio-mem devices' part, ended.
    fn take_rollup(&mut self) -> Option<BalloonRollup> {
        let mut rollup = self.rollup.take()?;
        if let Some(elastic) = self.elastic.as_mut() {
            let end = std::time::UNIX_EPOCH
                + Duration::from_secs(self.rollup_period.saturating_add(1) * ROLLUP_SECS);
            rollup.virtio_mem = elastic.finish_period(end);
        }
        Some(rollup)
    }

    /// One poll's virtio-mem devices (none read: nothing changes) and its sample; the
    /// resize events and the onlining's (docs/elastic.md).
    fn observe_virtio_mem(
        &mut self,
        at: SystemTime,
        (devices, sample): (Vec<ballast_model::VirtioMemDevice>, &BalloonSample),
        history_capacity: usize,
        converge_timeout: Duration,
        changes: &mut Vec<Change>,
    ) {
        if devices.is_empty() {
            return;
        }
        let vm = crate::wire::vm_ref(&self.id);
        let deflate = self.config.as_ref().and_then(|c| c.deflate_on_oom) == Some(true);
        let elastic = self
            .elastic
            .get_or_insert_with(|| Box::new(VmElastic::new(history_capacity)));
        changes.extend(
            elastic
                .observe(&vm, at, devices, converge_timeout)
                .into_iter()
                .map(|change| Change::MemoryDevice {
                    id: self.id.clone(),
                    change: Box::new(change),
                    at,
                }),
        );
        if let Some(change) = elastic.observe_sample(at, sample, deflate, converge_timeout) {
            let id = self.id.clone();
            changes.push(Change::VirtioMemOnline { id, change });
        }
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
    /// `elastic.converge_timeout_secs` ([`Self::set_converge_timeout`]).
    converge_timeout: Duration,
    /// virtio-mem events held back for VMs that went away.
    gone_memory_device_suppressed: u64,
}

impl Fleet {
    pub fn new(history_capacity: usize) -> Self {
        Self {
            vms: BTreeMap::new(),
            history_capacity,
            finished_rollups: Vec::new(),
            gone_pressure_suppressed: 0,
            converge_timeout: crate::elastic::DEFAULT_CONVERGE_TIMEOUT,
            gone_memory_device_suppressed: 0,
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
            let mut sample = sample.plausible();
            let virtio_mem = std::mem::take(&mut sample.virtio_mem);
            seen.insert(id.uuid.clone());
            let capacity = self.history_capacity;
            let vm = self.vms.entry(id.uuid.clone()).or_insert_with(|| {
                changes.push(Change::Appeared(id.clone()));
                Box::new(VmState::new(id.clone(), capacity))
            });
            vm.id.name.clone_from(&id.name);
            track_staleness(vm, at, &sample, &mut changes);
            if let Some(rollup) = vm.take_sample(at, &sample, &mut changes) {
                self.finished_rollups.push(rollup);
            }
            vm.observe_virtio_mem(
                at,
                (virtio_mem, &sample),
                capacity,
                self.converge_timeout,
                &mut changes,
            );
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
                if let Some(rollup) = vm.take_rollup() {
                    self.finished_rollups.push(rollup);
                }
                let ended = vm.risk.vm_gone(&crate::wire::vm_ref(&vm.id), at);
                self.gone_pressure_suppressed = self
                    .gone_pressure_suppressed
                    .saturating_add(vm.risk.episodes().suppressed());
                self.gone_memory_device_suppressed = self
                    .gone_memory_device_suppressed
                    .saturating_add(vm.elastic.as_ref().map_or(0, |e| e.suppressed()));
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

    /// How long a virtio-mem request may stay unmet before it is stuck
    /// (`elastic.converge_timeout_secs`; set at start-up and on reload).
    pub fn set_converge_timeout(&mut self, timeout: Duration) {
        self.converge_timeout = timeout;
    }

    /// Applies a pushed virtio-mem size (between polls): its `resized` event.
    pub fn apply_memory_device_size(
        &mut self,
        id: &DomainId,
        at: SystemTime,
        device: &str,
        plugged_kib: u64,
    ) -> Vec<Change> {
        let Some(vm) = self.vms.get_mut(&id.uuid) else {
            return Vec::new();
        };
        let vm_ref = crate::wire::vm_ref(&vm.id);
        let Some(elastic) = vm.elastic.as_mut() else {
            return Vec::new();
        };
        elastic
            .apply_size_event(&vm_ref, at, device, plugged_kib)
            .map(|change| Change::MemoryDevice {
                id: vm.id.clone(),
                change: Box::new(change),
                at,
            })
            .into_iter()
            .collect()
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
                report_epoch_secs: sample.last_update_epoch_secs,
            };
            if let Some(decision) = crate::guard::decide(settings, &mut vm.guard, host, &input) {
                let action = decision.action(&crate::wire::vm_ref(&vm.id), settings, &input);
                decisions.push((vm.id.clone(), decision, action));
            }
        }
        decisions
    }

    /// The guard's floor raise (`qm set`) of `id` failed.
    pub fn guard_floor_raise_failed(&mut self, id: &DomainId) {
        if let Some(vm) = self.vms.get_mut(&id.uuid) {
            vm.guard.floor_raise_failed();
        }
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

    /// virtio-mem `resized`/`stuck`/`converged` events held back by the per-VM rate
    /// limit since start.
    pub fn memory_device_events_suppressed(&self) -> u64 {
        self.vms
            .values()
            .filter_map(|vm| vm.elastic.as_ref())
            .map(|elastic| elastic.suppressed())
            .fold(self.gone_memory_device_suppressed, u64::saturating_add)
    }

    /// Rollups of minutes that ended (their VM was sampled in a later minute, or went away).
    pub fn take_finished_rollups(&mut self) -> Vec<BalloonRollup> {
        std::mem::take(&mut self.finished_rollups)
    }
}

fn track_staleness(
    vm: &mut VmState,
    at: SystemTime,
    sample: &BalloonSample,
    changes: &mut Vec<Change>,
) {
    let update = sample.last_update_epoch_secs.filter(|secs| *secs > 0);
    track_unreported(vm, at, sample, update, changes);
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

/// Never-sent stats: only from samples where the balloon answered (a sample without
/// figures says nothing about the guest), ended by the first `last-update`.
fn track_unreported(
    vm: &mut VmState,
    at: SystemTime,
    sample: &BalloonSample,
    update: Option<u64>,
    changes: &mut Vec<Change>,
) {
    if update.is_some() || vm.last_update_seen.is_some() {
        vm.unreported_since = None;
        if vm.stats_unreported {
            vm.stats_unreported = false;
            changes.push(Change::Recovered(vm.id.clone()));
        }
        return;
    }
    if sample.actual_kib.is_none() {
        return;
    }
    let (since, polls) = vm.unreported_since.get_or_insert((at, 0));
    *polls = polls.saturating_add(1);
    let silent = *polls >= STALE_AFTER_POLLS
        && at.duration_since(*since).unwrap_or_default() >= SILENT_AFTER;
    if silent && !vm.stats_unreported {
        vm.stats_unreported = true;
        changes.push(Change::StatsNeverCame(vm.id.clone()));
    }
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
mod tests;
