//! The monitor: its state, the loop of ticks, and the balloon poll (between two, the
//! guard's own poll of the VMs whose balloon holds memory: `run/guard_tick.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ballast_model::Event;

use super::command::{MonitorCommand, MonitorCommands};
use super::log_limit::RateLimitedLog;
use super::{EventOutlet, Handles};
use crate::capture::ga_worker::GuestAgentWorker;
use crate::capture::host_kernel::HostKernelReader;
use crate::capture::{Capture, CaptureSettings, FetchReason};
use crate::config::Settings;
use crate::fleet::Fleet;
use crate::hypervisor::{DomainEvent, DomainId, Hypervisor};
use crate::metrics::AgentCounters;
use crate::shared::SharedGuard;
use crate::status::Status;

/// The monitor: owns capture and drives the fleet. Fields are the run module's
/// (each step of a tick lives in a file of its own there).
pub struct Monitor {
    pub(super) settings: Settings,
    pub(super) hypervisor: Arc<dyn Hypervisor>,
    pub(super) outlet: Box<dyn EventOutlet>,
    pub(super) handles: Handles,
    /// What the loop is told ([`MonitorCommand`]); `command_handle` is a sender of
    /// the same channel, so it never disconnects while the monitor lives.
    commands: Receiver<MonitorCommand>,
    command_handle: MonitorCommands,
    /// A [`MonitorCommand::Stop`] arrived: the loop ends after this turn.
    stopping: bool,
    pub(super) capture: Capture,
    /// The host kernel log reader (`capture.host_kernel`), opened on the first tick;
    /// `host_kernel_tried` stops retrying after a failed open (one warning).
    pub(super) host_kernel: Option<HostKernelReader>,
    pub(super) host_kernel_tried: bool,
    pub(super) events: Option<Receiver<DomainEvent>>,
    pub(super) pending_fetch: BTreeMap<String, (DomainId, FetchReason)>,
    /// Runs the guest agent calls; None if its threads could not start (then the
    /// calls run on this thread, as a last resort).
    pub(super) guest_agent: Option<GuestAgentWorker>,
    /// VMs the hypervisor said are not running (paused, shut off): no guest agent calls.
    pub(super) not_running: BTreeSet<String>,
    /// QEMU pids by VM uuid, for host kernel OOM attribution: read when a VM appears
    /// or (re)starts, dropped when it goes.
    pub(super) qemu_pids: BTreeMap<String, u32>,
    /// VMs that gave no QEMU counters (no balloon, an older guest or QEMU), or whose
    /// read failed: not asked again before the time here.
    pub(super) no_counters_until: BTreeMap<String, Instant>,
    /// When each VM's PSI file is next read (`pressure.guest_psi`), with its backoff.
    pub(super) psi_schedule: crate::pressure::PsiSchedule,
    /// The guard's host-wide rate limit (its per-VM state lives in the fleet).
    pub(super) guard_host: crate::guard::HostGuard,
    /// VMs whose domain configuration is read again at the next poll (a virtio-mem
    /// size event came, or the domain (re)started: libvirt's XML is re-read for its
    /// devices), however many events came.
    pub(super) virtio_mem_reread: BTreeMap<String, DomainId>,
    /// Floor raises (`qm set`) under way on threads of their own.
    pub(super) floor_jobs: Vec<super::floor_job::FloorJob>,
    pub(super) inventory_dirty: bool,
    pub(super) error_log: RateLimitedLog,
    pub(super) sequence: u64,
    /// `WATCHDOG=1` to systemd on every turn of the loop (`WatchdogSec=` in the unit).
    watchdog: Option<crate::systemd::Watchdog>,
    /// TEST ONLY ([`STALL_ENV`]): while this file exists the loop stands still.
    stall_file: Option<PathBuf>,
}

/// TEST ONLY: the path of a file; while it exists, the monitor loop stands still
/// (no poll, no capture, no watchdog ping), as a hung loop would. The watchdog test
/// (agent/tests/it/reload.rs) uses it; never set it in production.
pub const STALL_ENV: &str = "BALLAST_TEST_STALL_MONITOR";

/// How often the loop wakes up at most.
const TICK: Duration = Duration::from_secs(1);
/// Health events go out this often.
const HEALTH_EVERY: Duration = Duration::from_secs(300);
/// How often freed heap pages go back to the kernel (crate::allocator).
const TRIM_EVERY: Duration = Duration::from_secs(60);
/// Guest agent threads, and the requests that may wait for one.
const GUEST_AGENT_THREADS: usize = 2;
const GUEST_AGENT_QUEUE: usize = 64;
/// A VM without QEMU counters is asked again after this (a 6.12 guest that has not
/// reported yet gives none at first, so not much longer).
const NO_COUNTERS_RETRY: Duration = Duration::from_secs(120);
/// A VM whose counters could not be read is asked again after this.
const COUNTERS_ERROR_RETRY: Duration = Duration::from_secs(60);
/// How long the exit waits for guest agent calls under way.
const GUEST_AGENT_EXIT_WAIT: Duration = Duration::from_secs(3);

impl Monitor {
    pub fn new(
        settings: Settings,
        hypervisor: Arc<dyn Hypervisor>,
        outlet: Box<dyn EventOutlet>,
        handles: Handles,
    ) -> Self {
        let capture = Capture::new(CaptureSettings::new(settings.state_dir.join("capture")));
        let guest_agent = match GuestAgentWorker::start(
            Arc::clone(&hypervisor),
            capture.settings(),
            GUEST_AGENT_THREADS,
            GUEST_AGENT_QUEUE,
        ) {
            Ok(worker) => Some(worker),
            Err(error) => {
                tracing::warn!(%error, "Failed to start the guest agent threads; guest agent calls run on the monitor thread.");
                None
            }
        };
        let (command_handle, commands) = MonitorCommands::channel();
        Self {
            settings,
            hypervisor,
            outlet,
            handles,
            commands,
            command_handle,
            stopping: false,
            capture,
            host_kernel: None,
            host_kernel_tried: false,
            events: None,
            pending_fetch: BTreeMap::new(),
            guest_agent,
            not_running: BTreeSet::new(),
            qemu_pids: BTreeMap::new(),
            no_counters_until: BTreeMap::new(),
            psi_schedule: crate::pressure::PsiSchedule::default(),
            guard_host: crate::guard::HostGuard::default(),
            virtio_mem_reread: BTreeMap::new(),
            floor_jobs: Vec::new(),
            inventory_dirty: true,
            error_log: RateLimitedLog::new(Duration::from_secs(300)),
            sequence: 0,
            watchdog: crate::systemd::Watchdog::from_env(),
            stall_file: std::env::var_os(STALL_ENV).map(PathBuf::from),
        }
    }

    /// Where to send this monitor its [`MonitorCommand`]s (take it before [`Self::run`]).
    pub fn commands(&self) -> MonitorCommands {
        self.command_handle.clone()
    }

    /// Runs until a [`MonitorCommand::Stop`].
    pub fn run(mut self) {
        if let Err(error) = std::fs::create_dir_all(self.settings.state_dir.join("capture")) {
            tracing::error!(%error, dir = %self.settings.state_dir.display(), "Failed to create the state directory.");
        }
        let (sender, receiver) = std::sync::mpsc::channel();
        match self.hypervisor.subscribe(sender) {
            Ok(()) => self.events = Some(receiver),
            Err(error) => {
                tracing::warn!(%error, "No hypervisor events for now (libvirt registers them on its next connection); balloon changes are seen at poll time meanwhile.")
            }
        }
        self.emit_hello();
        let started = Instant::now();
        let mut next_poll = started;
        let mut next_guard_poll = started;
        let mut next_health = Instant::now() + HEALTH_EVERY;
        let mut next_trim = Instant::now() + TRIM_EVERY;
        while !self.stopping {
            let mut commands = self.stall_for_tests();
            if let Some(watchdog) = self.watchdog.as_mut() {
                watchdog.tick(Instant::now());
            }
            let now = Instant::now();
            let guard_poll = self.settings.guard.fast_poll(self.settings.poll_interval);
            if now >= next_poll {
                self.poll();
                if next_poll <= started {
                    self.handles.first_poll.notify_one();
                }
                next_poll = now + self.settings.poll_interval;
                next_guard_poll = now + guard_poll.unwrap_or(self.settings.poll_interval);
            } else if let Some(every) = guard_poll.filter(|_| now >= next_guard_poll) {
                self.guard_poll();
                next_guard_poll = now + every;
            }
            commands.extend(self.commands.try_iter());
            for command in commands {
                self.obey(command, &mut next_poll);
            }
            if self.drain_events() {
                next_poll = Instant::now();
            }
            self.capture_tick();
            self.pressure_tick(Instant::now());
            if now >= next_health {
                self.emit_health();
                next_health = now + HEALTH_EVERY;
            }
            if now >= next_trim {
                crate::allocator::release_free_memory();
                next_trim = now + TRIM_EVERY;
            }
            if self.stopping {
                break;
            }
            let next = match guard_poll {
                Some(_) => next_poll.min(next_guard_poll),
                None => next_poll,
            };
            let sleep = next.saturating_duration_since(Instant::now()).min(TICK);
            // Sleeps until the next tick, or until a command comes.
            match self
                .commands
                .recv_timeout(sleep.max(Duration::from_millis(50)))
            {
                Ok(command) => self.obey(command, &mut next_poll),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
        }
        self.finish_floor_jobs(true);
        if let Some(worker) = self.guest_agent.take() {
            let done = worker.shutdown(GUEST_AGENT_EXIT_WAIT);
            let mut events = Vec::new();
            self.take_guest_agent_results(done, Instant::now(), &mut events);
            self.handle_capture(events);
        }
        let (events, result) = self.capture.shutdown(Instant::now());
        self.handle_capture(events);
        if let Err(error) = result {
            tracing::warn!(%error, "Failed to save capture state on exit.");
        }
        if let Some(reader) = self.host_kernel.as_mut() {
            if let Err(error) = reader.persist(Instant::now()) {
                tracing::warn!(%error, "Failed to save the host kernel log position on exit.");
            }
        }
    }

    /// Carries out one command; a reload may bring the next poll closer.
    fn obey(&mut self, command: MonitorCommand, next_poll: &mut Instant) {
        match command {
            MonitorCommand::Reload(new) => {
                crate::reload::apply_live(&mut self.settings, &new);
                *next_poll = (*next_poll).min(Instant::now() + self.settings.poll_interval);
            }
            MonitorCommand::Stop => self.stopping = true,
        }
    }

    /// TEST ONLY ([`STALL_ENV`]): stands still while the stall file exists. A
    /// [`MonitorCommand::Stop`] ends the stall; other commands that came meanwhile
    /// are returned, to be carried out in this turn.
    fn stall_for_tests(&mut self) -> Vec<MonitorCommand> {
        let mut held = Vec::new();
        let Some(file) = self.stall_file.clone() else {
            return held;
        };
        while file.exists() && !self.stopping {
            match self.commands.recv_timeout(Duration::from_millis(100)) {
                Ok(MonitorCommand::Stop) => self.stopping = true,
                Ok(command) => held.push(command),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
        }
        held
    }

    pub(super) fn poll(&mut self) {
        let started = Instant::now();
        let at = SystemTime::now();
        let samples = match self.hypervisor.balloon_samples() {
            Ok(samples) => samples,
            Err(error) => {
                self.error_log
                    .warn("poll", &format!("Balloon poll failed: {error}"));
                self.counters().poll_errors += 1;
                return;
            }
        };
        let order: Vec<DomainId> = samples.iter().map(|(id, _)| id.clone()).collect();
        let changes = {
            let mut fleet = self.fleet();
            fleet.set_converge_timeout(self.settings.elastic.converge_timeout());
            fleet.apply_poll(at, samples)
        };
        self.handle_changes(changes);
        self.reread_configs();
        let host = self.risk_and_guard(at, &order);
        let rollups = self.fleet().take_finished_rollups();
        for mut rollup in rollups {
            rollup.host = Some(crate::wire::wire_host(&host));
            let key = format!(
                "{}/rollup/{}/{}",
                self.settings.host_id, rollup.vm.uuid, rollup.period_start_ms
            );
            self.emit(key, Event::Rollup(Box::new(rollup)));
        }
        if self.inventory_dirty {
            self.emit_inventory();
        }
        let elapsed = started.elapsed();
        {
            let mut counters = self.counters();
            counters.polls += 1;
            counters.last_poll_seconds = elapsed.as_secs_f64();
        }
        let status = Status::from_fleet(
            &self.fleet(),
            &self.settings.host_id,
            self.hypervisor.backend(),
            at,
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        );
        let path = self.settings.state_dir.join(crate::paths::STATUS_FILE_NAME);
        if let Err(error) = status.write(&path) {
            self.error_log.warn(
                "status",
                &format!("Failed to write {}: {error}", path.display()),
            );
        }
    }

    /// After a poll's samples (the agent's or the guard's own) went into the fleet:
    /// the counters of the VMs in `order`, their risk, the guard step; the host's
    /// memory as read for the guard.
    pub(super) fn risk_and_guard(
        &mut self,
        at: SystemTime,
        order: &[DomainId],
    ) -> crate::hostmem::HostMemory {
        // Proxmox's backend reads the counters in the same QMP conversation as the stats,
        // at no extra cost; libvirt needs a monitor command that taints the domain.
        if self.settings.libvirt.read_qemu_counters || self.hypervisor.backend() == "proxmox" {
            self.read_counters(order);
        }
        // The signals of this poll: its samples, the counters just read, fresh PSI.
        let changes = self.fleet().observe_pressure(at);
        self.handle_changes(changes);
        let host = crate::hostmem::read(&self.settings.procfs_root);
        self.guard_tick(at, host.available_kib);
        host
    }

    /// The configurations [`Self::virtio_mem_reread`] asks for, read again.
    fn reread_configs(&mut self) {
        for (_, id) in std::mem::take(&mut self.virtio_mem_reread) {
            match self.hypervisor.domain_config(&id) {
                Ok(config) => {
                    let ids = |devices: &[ballast_model::VirtioMemDevice]| -> Vec<String> {
                        devices.iter().map(|d| d.id.clone()).collect()
                    };
                    let changed = {
                        let mut fleet = self.fleet();
                        let before = fleet
                            .get(&id.uuid)
                            .and_then(|vm| vm.config.as_ref())
                            .map(|config| ids(&config.virtio_mem));
                        let changed = before != Some(ids(&config.virtio_mem));
                        fleet.set_config(&id, config);
                        changed
                    };
                    // The inventory goes out again only for a new set of devices.
                    self.inventory_dirty |= changed;
                }
                Err(error) => self
                    .error_log
                    .warn(&id.uuid, &format!("Configuration of {}: {error}", id.name)),
            }
        }
    }

    /// QEMU's counters of the polled VMs, in the bulk poll's order, every poll; a VM
    /// without a balloon is not asked, one that gave none is asked again later.
    fn read_counters(&mut self, order: &[DomainId]) {
        let now = Instant::now();
        self.no_counters_until.retain(|_, until| *until > now);
        let ids: Vec<DomainId> = {
            let fleet = self.fleet();
            order
                .iter()
                .filter(|id| !self.no_counters_until.contains_key(&id.uuid))
                .filter(|id| {
                    fleet.get(&id.uuid).is_some_and(|vm| {
                        vm.config
                            .as_ref()
                            .is_none_or(|config| config.balloon_present)
                    })
                })
                .cloned()
                .collect()
        };
        for id in ids {
            match self.hypervisor.guest_counters(&id) {
                Ok(Some(counters)) => {
                    let changes = self.fleet().apply_counters(&id, counters);
                    self.handle_changes(changes);
                }
                Ok(None) => {
                    self.no_counters_until
                        .insert(id.uuid.clone(), now + NO_COUNTERS_RETRY);
                }
                Err(error) => {
                    self.no_counters_until
                        .insert(id.uuid.clone(), now + COUNTERS_ERROR_RETRY);
                    let _vm = id.span().entered();
                    self.error_log
                        .warn(&id.uuid, &format!("QEMU counters of {}: {error}", id.name));
                }
            }
        }
    }

    pub(super) fn fleet(&self) -> SharedGuard<'_, Fleet> {
        self.handles.fleet.lock()
    }

    pub(super) fn counters(&self) -> SharedGuard<'_, AgentCounters> {
        self.handles.counters.lock()
    }
}
