//! The agent's main loop: poll, capture, enrich, emit.
//!
//! One monitor thread does the blocking work in ticks of at most a second:
//! 1. every poll interval: one bulk balloon poll of all VMs ([`Fleet::apply_poll`]),
//!    the configuration of VMs that appeared, QEMU's counters when enabled, minute
//!    rollups, the status file;
//! 2. hypervisor events (balloon changes, lifecycle) as they arrive;
//! 3. every tick: the serial console logs of all VMs, guest-agent reads of the guest
//!    kernel log (`capture.guest_agent`: never when `off`; after a suspicion — usable
//!    memory collapsed, the oom-kill counter, a partial serial report — when
//!    `on_suspicion`; also every `guest_agent_interval_secs` when `periodic`; handed to the guest agent threads of
//!    [`GuestAgentWorker`], their results taken back the next ticks: a guest agent
//!    that does not answer never holds this thread), held partial reports;
//! 4. every captured OOM is analyzed with the host's balloon figures
//!    ([`crate::enrich`]) and handed to the [`EventSink`] with its idempotency key.
//!
//! One VM's failure never stops the others: per-VM errors are logged (rate-limited),
//! counted and skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ballast_model::{
    AgentHealth, AgentHello, BalloonChange, Envelope, Event, Inventory, NearMiss as WireNearMiss,
    OomKind, VmConfig, VmInventory,
};

use crate::capture::ga_worker::{FetchDone, GuestAgentWorker, Submitted};
use crate::capture::host_kernel::{HostKernelConfig, HostKernelReader, KnownVm};
use crate::capture::{Capture, CaptureEvent, CaptureSettings, CapturedOom, FetchReason};
use crate::config::{GuestAgentMode, Settings};
use crate::enrich::{self, epoch_ms, vm_ref};
use crate::fleet::{Change, Fleet};
use crate::hypervisor::{DomainEvent, DomainId, DomainState, Hypervisor};
use crate::metrics::AgentCounters;
use crate::shared::{SharedGuard, SharedLock};
use crate::status::Status;

/// Where the loop puts what it captured (the durable spool, or a file in tests).
pub trait EventSink: Send {
    /// Stores one event durably before returning; an error is logged and counted.
    fn emit(&mut self, envelope: Envelope) -> Result<(), std::io::Error>;
}

/// Appends events as JSON lines to a file (no collector configured, and tests).
pub struct JsonLinesSink {
    path: PathBuf,
}

impl JsonLinesSink {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl EventSink for JsonLinesSink {
    fn emit(&mut self, envelope: Envelope) -> Result<(), std::io::Error> {
        use std::io::Write;
        let mut line = serde_json::to_vec(&envelope).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&line)?;
        file.sync_data()
    }
}

/// The production sink: every event into the durable spool (the sender delivers it),
/// and optionally a copy into a JSON-lines journal for debugging.
pub struct SpoolSink {
    spool: crate::spool::SpoolHandle,
    journal: Option<JsonLinesSink>,
    counters: SharedLock<AgentCounters>,
}

impl SpoolSink {
    pub fn new(
        spool: crate::spool::SpoolHandle,
        journal: Option<PathBuf>,
        counters: SharedLock<AgentCounters>,
    ) -> Self {
        Self {
            spool,
            journal: journal.map(JsonLinesSink::new),
            counters,
        }
    }
}

impl EventSink for SpoolSink {
    fn emit(&mut self, envelope: Envelope) -> Result<(), std::io::Error> {
        if let Some(journal) = self.journal.as_mut() {
            journal.emit(envelope.clone())?;
        }
        let outcome = self.spool.push_blocking(&envelope);
        let stats = self.spool.stats();
        {
            let mut counters = self.counters.lock();
            counters.spool_bytes = stats.bytes;
            counters.spool_events = stats.events;
            counters.dropped_rollups = stats.rollups_lost();
        }
        match outcome {
            Ok(_) => Ok(()),
            Err(error) => Err(std::io::Error::other(error)),
        }
    }
}

/// Shared with the metrics exporter and the caller.
///
/// Lock rule ([`crate::shared`]): a thread holds at most one of `fleet`, `counters`
/// and `reload` at a time; copy out under one lock, release, then take the next.
#[derive(Debug, Clone)]
pub struct Handles {
    pub fleet: SharedLock<Fleet>,
    pub counters: SharedLock<AgentCounters>,
    pub stop: Arc<AtomicBool>,
    /// New settings from a SIGHUP, taken by the monitor between two ticks
    /// ([`crate::reload::apply_live`]).
    pub reload: SharedLock<Option<Settings>>,
    /// Notified once the first poll is done (systemd readiness).
    pub first_poll: Arc<tokio::sync::Notify>,
}

impl Handles {
    pub fn new(settings: &Settings) -> Self {
        Self {
            fleet: SharedLock::new("fleet", Fleet::new(settings.history_samples)),
            counters: SharedLock::new("counters", AgentCounters::default()),
            stop: Arc::new(AtomicBool::new(false)),
            reload: SharedLock::new("reload", None),
            first_poll: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

/// The monitor: owns capture and drives the fleet.
pub struct Monitor {
    settings: Settings,
    hypervisor: Arc<dyn Hypervisor>,
    sink: Box<dyn EventSink>,
    handles: Handles,
    capture: Capture,
    /// The host kernel log reader (`capture.host_kernel`), opened on the first tick;
    /// `host_kernel_tried` stops retrying after a failed open (one warning).
    host_kernel: Option<HostKernelReader>,
    host_kernel_tried: bool,
    events: Option<Receiver<DomainEvent>>,
    pending_fetch: BTreeMap<String, (DomainId, FetchReason)>,
    /// Runs the guest agent calls; None if its threads could not start (then the
    /// calls run on this thread, as a last resort).
    guest_agent: Option<GuestAgentWorker>,
    /// VMs the hypervisor said are not running (paused, shut off): no guest agent calls.
    not_running: BTreeSet<String>,
    /// QEMU pids by VM uuid, for host kernel OOM attribution: read when a VM appears
    /// or (re)starts, dropped when it goes.
    qemu_pids: BTreeMap<String, u32>,
    inventory_dirty: bool,
    error_log: RateLimitedLog,
    sequence: u64,
    /// `WATCHDOG=1` to systemd on every turn of the loop (`WatchdogSec=` in the unit).
    watchdog: Option<crate::systemd::Watchdog>,
    /// TEST ONLY ([`STALL_ENV`]): while this file exists the loop stands still.
    stall_file: Option<PathBuf>,
}

/// TEST ONLY: the path of a file; while it exists, the monitor loop stands still
/// (no poll, no capture, no watchdog ping), as a hung loop would. The watchdog test
/// (agent/tests/reload.rs) uses it; never set it in production.
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
/// How long the exit waits for guest agent calls under way.
const GUEST_AGENT_EXIT_WAIT: Duration = Duration::from_secs(3);

impl Monitor {
    pub fn new(
        settings: Settings,
        hypervisor: Arc<dyn Hypervisor>,
        sink: Box<dyn EventSink>,
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
        Self {
            settings,
            hypervisor,
            sink,
            handles,
            capture,
            host_kernel: None,
            host_kernel_tried: false,
            events: None,
            pending_fetch: BTreeMap::new(),
            guest_agent,
            not_running: BTreeSet::new(),
            qemu_pids: BTreeMap::new(),
            inventory_dirty: true,
            error_log: RateLimitedLog::new(Duration::from_secs(300)),
            sequence: 0,
            watchdog: crate::systemd::Watchdog::from_env(),
            stall_file: std::env::var_os(STALL_ENV).map(PathBuf::from),
        }
    }

    /// Runs until `handles.stop` is set.
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
        let mut next_health = Instant::now() + HEALTH_EVERY;
        let mut next_trim = Instant::now() + TRIM_EVERY;
        while !self.handles.stop.load(Ordering::Relaxed) {
            self.stall_for_tests();
            if let Some(watchdog) = self.watchdog.as_mut() {
                watchdog.tick(Instant::now());
            }
            let now = Instant::now();
            if now >= next_poll {
                self.poll();
                if next_poll <= started {
                    self.handles.first_poll.notify_one();
                }
                next_poll = now + self.settings.poll_interval;
            }
            if let Some(new) = self.take_reload() {
                crate::reload::apply_live(&mut self.settings, &new);
                next_poll = next_poll.min(Instant::now() + self.settings.poll_interval);
            }
            if self.drain_events() {
                next_poll = Instant::now();
            }
            self.capture_tick();
            if now >= next_health {
                self.emit_health();
                next_health = now + HEALTH_EVERY;
            }
            if now >= next_trim {
                crate::allocator::release_free_memory();
                next_trim = now + TRIM_EVERY;
            }
            let sleep = next_poll
                .saturating_duration_since(Instant::now())
                .min(TICK);
            std::thread::sleep(sleep.max(Duration::from_millis(50)));
        }
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

    /// TEST ONLY ([`STALL_ENV`]): stands still while the stall file exists.
    fn stall_for_tests(&self) {
        let Some(file) = &self.stall_file else {
            return;
        };
        while file.exists() && !self.handles.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn poll(&mut self) {
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
        let changes = self.fleet().apply_poll(at, samples);
        self.handle_changes(changes);
        // Proxmox's backend reads the counters in the same QMP conversation as the stats,
        // at no extra cost; libvirt needs a monitor command that taints the domain.
        if self.settings.libvirt.read_qemu_counters || self.hypervisor.backend() == "proxmox" {
            self.read_counters();
        }
        let rollups = self.fleet().take_finished_rollups();
        let host = crate::hostmem::read(&self.settings.procfs_root);
        for mut rollup in rollups {
            rollup.host = Some(wire_host(&host));
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

    fn read_counters(&mut self) {
        let ids: Vec<DomainId> = self.fleet().vms().map(|vm| vm.id.clone()).collect();
        for id in ids {
            match self.hypervisor.guest_counters(&id) {
                Ok(Some(counters)) => {
                    let changes = self.fleet().apply_counters(&id, counters);
                    self.handle_changes(changes);
                }
                Ok(None) => {}
                Err(error) => {
                    let _vm = id.span().entered();
                    self.error_log
                        .warn(&id.uuid, &format!("QEMU counters of {}: {error}", id.name));
                }
            }
        }
    }

    fn handle_changes(&mut self, changes: Vec<Change>) {
        for change in changes {
            let span = change.id().span();
            let _vm = span.enter();
            match change {
                Change::Appeared(id) => {
                    tracing::info!("VM appeared.");
                    self.refresh_qemu_pid(&id);
                    match self.hypervisor.domain_config(&id) {
                        Ok(config) => self.fleet().set_config(&id, config),
                        Err(error) => self
                            .error_log
                            .warn(&id.uuid, &format!("Configuration of {}: {error}", id.name)),
                    }
                    self.inventory_dirty = true;
                }
                Change::Gone(id) => {
                    tracing::info!("VM went away.");
                    self.capture.forget(&id.uuid);
                    self.qemu_pids.remove(&id.uuid);
                    self.not_running.remove(&id.uuid);
                    self.inventory_dirty = true;
                }
                Change::BecameStale(_) => {
                    tracing::warn!("Balloon stats stopped updating.");
                }
                Change::Recovered(_) => tracing::info!("Balloon stats update again."),
                Change::Rebooted(_) => tracing::info!("Guest rebooted (counters went back)."),
                Change::SuspectOom { id, reason } => {
                    tracing::info!(?reason, "Guest OOM suspected; reading its kernel log.");
                    let fetch = match reason {
                        crate::fleet::SuspectReason::OomKillCounter => FetchReason::OomKillCounter,
                        crate::fleet::SuspectReason::UsableCollapsed => {
                            FetchReason::UsableCollapsed
                        }
                    };
                    self.pending_fetch.insert(id.uuid.clone(), (id, fetch));
                }
                Change::NearMiss {
                    id,
                    kind,
                    detail,
                    actual_kib,
                    usable_kib,
                } => {
                    *self
                        .counters()
                        .near_misses
                        .entry(kind.to_string())
                        .or_default() += 1;
                    let key = self.sequenced_key(&format!("nm/{}/{kind}", id.uuid));
                    self.emit(
                        key,
                        Event::NearMiss(WireNearMiss {
                            vm: vm_ref(&id),
                            kind: kind.to_string(),
                            detail,
                            actual_kib,
                            usable_kib,
                        }),
                    );
                }
                Change::BalloonMoved {
                    id,
                    actual_kib,
                    previous_kib,
                } => {
                    let key = self.sequenced_key(&format!("bc/{}", id.uuid));
                    self.emit(
                        key,
                        Event::BalloonChange(BalloonChange {
                            vm: vm_ref(&id),
                            actual_kib,
                            previous_kib,
                        }),
                    );
                }
            }
        }
    }

    /// Handles pushed events; true when the VM set changed and a poll should come early.
    fn drain_events(&mut self) -> bool {
        let mut lifecycle = false;
        let mut received = Vec::new();
        if let Some(events) = &self.events {
            loop {
                match events.try_recv() {
                    Ok(event) => received.push(event),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        tracing::warn!("Hypervisor event stream ended; polling only.");
                        self.events = None;
                        break;
                    }
                }
            }
        }
        for event in received {
            match event {
                DomainEvent::BalloonChange { id, actual_kib, at } => {
                    let changes = self.fleet().apply_balloon_change(&id, at, actual_kib);
                    self.handle_changes(changes);
                }
                DomainEvent::Lifecycle { id, state, .. } => {
                    tracing::debug!(domain = %id.uuid, ?state, "Lifecycle event.");
                    lifecycle = true;
                    if state == DomainState::Running {
                        self.not_running.remove(&id.uuid);
                        self.inventory_dirty = true;
                        self.refresh_qemu_pid(&id);
                    } else {
                        self.not_running.insert(id.uuid.clone());
                        if state == DomainState::ShutOff {
                            self.qemu_pids.remove(&id.uuid);
                        }
                    }
                }
                DomainEvent::AgentLifecycle { id, connected, .. } => {
                    tracing::debug!(domain = %id.uuid, connected, "Guest agent lifecycle.");
                }
            }
        }
        lifecycle
    }

    /// Reads the QEMU pid of `id` again (a restarted VM has a new QEMU process).
    fn refresh_qemu_pid(&mut self, id: &DomainId) {
        match self.hypervisor.qemu_pid(id) {
            Some(pid) => {
                self.qemu_pids.insert(id.uuid.clone(), pid);
            }
            None => {
                self.qemu_pids.remove(&id.uuid);
            }
        }
    }

    fn capture_tick(&mut self) {
        let now = Instant::now();
        // Per VM: its serial log, and whether it may have a guest agent (a channel in
        // its configuration, or a configuration not read yet).
        let vms: Vec<(DomainId, Option<PathBuf>, bool)> = self
            .fleet()
            .vms()
            .map(|vm| {
                (
                    vm.id.clone(),
                    vm.config.as_ref().and_then(|c| c.serial_log_path.clone()),
                    vm.config.as_ref().is_none_or(|c| c.guest_agent_channel),
                )
            })
            .collect();
        let mut events = Vec::new();
        if self.settings.capture.serial {
            for (id, path, _) in &vms {
                let Some(path) = path else {
                    continue;
                };
                let _vm = id.span().entered();
                match self.capture.poll_serial(id, path, now) {
                    Ok(poll) => {
                        if poll.wants_guest_agent {
                            self.pending_fetch
                                .entry(id.uuid.clone())
                                .or_insert_with(|| (id.clone(), FetchReason::PartialReport));
                        }
                        events.extend(poll.events);
                    }
                    Err(error) => self
                        .error_log
                        .warn(&id.uuid, &format!("Serial capture of {}: {error}", id.name)),
                }
            }
        }
        if let Some(worker) = self.guest_agent.as_mut() {
            // Taken even with capture.guest_agent switched off by a reload.
            let done = worker.finished();
            self.take_guest_agent_results(done, now, &mut events);
        }
        let mode = self.settings.capture.guest_agent;
        if !mode.enabled() {
            // Off: no guest agent call; what a suspicion asked for is dropped.
            self.pending_fetch.clear();
        } else {
            self.capture
                .set_agent_exec(self.settings.capture.guest_agent_exec);
            if mode == GuestAgentMode::Periodic {
                let interval = Duration::from_secs(self.settings.capture.guest_agent_interval_secs);
                // A VM without a guest agent channel is asked only when its serial
                // console shows a partial report, never periodically.
                for (id, _, _) in vms.iter().filter(|(_, _, channel)| *channel) {
                    if self.capture.guest_agent_due(id, now, interval)
                        && !self.guest_agent_in_flight(&id.uuid)
                    {
                        self.pending_fetch
                            .entry(id.uuid.clone())
                            .or_insert_with(|| (id.clone(), FetchReason::Periodic));
                    }
                }
            }
            let known: BTreeSet<&str> = vms.iter().map(|(id, _, _)| id.uuid.as_str()).collect();
            let pending = std::mem::take(&mut self.pending_fetch);
            for (uuid, (id, reason)) in pending {
                if !known.contains(uuid.as_str()) || self.not_running.contains(&uuid) {
                    continue;
                }
                if self.guest_agent_in_flight(&uuid) {
                    // Asked again while a call runs (which may have started before the
                    // report was complete): once more after it.
                    if reason != FetchReason::Periodic {
                        self.pending_fetch.insert(uuid, (id, reason));
                    }
                    continue;
                }
                self.start_guest_agent_fetch(id, reason, now, &mut events);
            }
        }
        events.extend(self.capture.release_held(now));
        self.handle_capture(events);
        if self.settings.capture.host_kernel {
            self.host_kernel_tick(now);
        }
    }

    fn guest_agent_in_flight(&self, uuid: &str) -> bool {
        self.guest_agent
            .as_ref()
            .is_some_and(|worker| worker.in_flight(uuid))
    }

    /// Hands one fetch to the guest agent threads (unless the VM backs off).
    fn start_guest_agent_fetch(
        &mut self,
        id: DomainId,
        reason: FetchReason,
        now: Instant,
        events: &mut Vec<CaptureEvent>,
    ) {
        let span = id.span();
        let _vm = span.enter();
        let Some(worker) = self.guest_agent.as_mut() else {
            let answered_before = self.capture.guest_agent_answering(&id.uuid);
            let fetched =
                self.capture
                    .fetch_guest_agent(self.hypervisor.as_ref(), &id, reason, now);
            self.guest_agent_fetched(&id, answered_before, fetched, events);
            return;
        };
        match self.capture.begin_guest_agent(&id, reason, now) {
            Ok(true) => {}
            // Backing off after a failure: no call.
            Ok(false) => return,
            Err(error) => {
                self.error_log.warn(
                    &id.uuid,
                    &format!("Guest agent capture of {}: {error}", id.name),
                );
                return;
            }
        }
        let allow_exec = self.settings.capture.guest_agent_exec;
        if worker.submit(&id, reason, allow_exec) == Submitted::Refused {
            // Every thread is busy and the queue is full: on a later tick.
            self.pending_fetch.insert(id.uuid.clone(), (id, reason));
        }
    }

    /// Feeds finished guest agent calls to capture, on this thread.
    fn take_guest_agent_results(
        &mut self,
        done: Vec<FetchDone>,
        now: Instant,
        events: &mut Vec<CaptureEvent>,
    ) {
        for FetchDone {
            id,
            reason,
            output,
            took,
        } in done
        {
            if self.fleet().get(&id.uuid).is_none() {
                // The VM went away meanwhile.
                continue;
            }
            let _vm = id.span().entered();
            tracing::debug!(
                ?reason,
                took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                "Guest agent call finished."
            );
            let answered_before = self.capture.guest_agent_answering(&id.uuid);
            let fetched = self.capture.finish_guest_agent(&id, output, now);
            self.guest_agent_fetched(&id, answered_before, fetched, events);
        }
    }

    fn guest_agent_fetched(
        &mut self,
        id: &DomainId,
        answered_before: Option<bool>,
        fetched: Result<Vec<CaptureEvent>, crate::capture::CaptureError>,
        events: &mut Vec<CaptureEvent>,
    ) {
        if self.capture.guest_agent_answering(&id.uuid) != answered_before {
            // The audit's "guest agent answering" changed: tell the collector.
            self.inventory_dirty = true;
        }
        match fetched {
            Ok(found) => events.extend(found),
            Err(error) => self.error_log.warn(
                &id.uuid,
                &format!("Guest agent capture of {}: {error}", id.name),
            ),
        }
    }

    /// Reads the host kernel log for OOMs about VMs (host OOMs, VM-cgroup OOMs).
    fn host_kernel_tick(&mut self, now: Instant) {
        if self.host_kernel.is_none() && !self.host_kernel_tried {
            self.host_kernel_tried = true;
            let config = HostKernelConfig::new(
                &self.settings.state_dir.join("capture"),
                CaptureSettings::new(self.settings.state_dir.join("capture")).detector(),
            );
            match HostKernelReader::open(config) {
                Ok(reader) => self.host_kernel = Some(reader),
                Err(error) => tracing::warn!(
                    error = %crate::error_text::error_chain(&error),
                    "Host kernel log unavailable: host and VM-cgroup OOMs are not captured."
                ),
            }
        }
        let Some(reader) = self.host_kernel.as_mut() else {
            return;
        };
        let proxmox = self.hypervisor.backend() == "proxmox";
        let vms: Vec<KnownVm> = self
            .handles
            .fleet
            .lock()
            .vms()
            .map(|vm| KnownVm {
                id: vm.id.clone(),
                // Proxmox ids are the vmid unless the VM has an smbios uuid.
                vmid: if proxmox {
                    vm.id.uuid.parse().ok()
                } else {
                    None
                },
                qemu_pid: self.qemu_pids.get(&vm.id.uuid).copied(),
            })
            .collect();
        match reader.poll(now, &vms) {
            Ok((found, state_error)) => {
                if let Some(error) = state_error {
                    self.error_log.warn("host-kmsg-state", &format!("{error}"));
                }
                for oom in found {
                    self.handle_oom(oom.captured, oom.kind);
                }
            }
            Err(error) => self
                .error_log
                .warn("host-kmsg", &format!("Host kernel log: {error}")),
        }
    }

    /// Emits what capture found, and publishes its flood count: suppressed reports
    /// produce no event, so the count is read after every capture step.
    fn handle_capture(&mut self, events: Vec<CaptureEvent>) {
        let suppressed = self.capture.flood_suppressed_total();
        self.counters().flood_suppressed = suppressed;
        for event in events {
            match event {
                CaptureEvent::Oom(captured) | CaptureEvent::OomCompleted(captured) => {
                    self.handle_oom(captured, OomKind::Guest);
                }
                CaptureEvent::NearMiss(miss) => {
                    *self
                        .counters()
                        .near_misses
                        .entry("out_of_puff".to_string())
                        .or_default() += 1;
                    let key = self.sequenced_key(&format!("nm/{}/out_of_puff", miss.domain.uuid));
                    self.emit_at(
                        key,
                        epoch_ms(miss.captured_at),
                        Event::NearMiss(WireNearMiss {
                            vm: vm_ref(&miss.domain),
                            kind: "out_of_puff".to_string(),
                            detail: miss.line,
                            actual_kib: None,
                            usable_kib: None,
                        }),
                    );
                }
            }
        }
    }

    fn handle_oom(&mut self, captured: CapturedOom, kind: OomKind) {
        let host = crate::hostmem::read(&self.settings.procfs_root);
        let oom = {
            let fleet = self.fleet();
            enrich::oom_event(&captured, kind, fleet.get(&captured.domain.uuid), &host)
        };
        let _vm = captured.domain.span().entered();
        tracing::warn!(
            verdict = %oom.analysis.verdict,
            killed = oom.report.killed.as_ref().map(|k| k.comm.as_str()).unwrap_or("?"),
            "{}",
            match kind {
                OomKind::Guest => "Guest OOM captured.",
                OomKind::VmCgroup => "VM cgroup OOM on the host captured.",
                OomKind::Host => "Host OOM killed a VM's QEMU process.",
            }
        );
        self.fleet()
            .record_oom(&captured.domain, captured.captured_at);
        *self
            .counters()
            .ooms
            .entry((
                captured.domain.uuid.clone(),
                captured.domain.name.clone(),
                oom.analysis.verdict.clone(),
            ))
            .or_default() += 1;
        let key = format!("{}/oom/{}", self.settings.host_id, captured.dedupe_key);
        self.emit_at(
            key,
            epoch_ms(captured.captured_at),
            Event::Oom(Box::new(oom)),
        );
    }

    fn emit_hello(&mut self) {
        let host = crate::hostmem::read(&self.settings.procfs_root);
        let mut capabilities = Vec::new();
        if self.settings.capture.serial {
            capabilities.push("serial_capture".to_string());
        }
        if self.settings.capture.guest_agent.enabled() {
            capabilities.push("guest_agent_capture".to_string());
        }
        if self.settings.libvirt.read_qemu_counters {
            capabilities.push("qemu_balloon_counters".to_string());
        }
        if self.settings.capture.host_kernel {
            capabilities.push("host_kernel_capture".to_string());
        }
        let key = self.sequenced_key("hello");
        self.emit(
            key,
            Event::Hello(AgentHello {
                backend: self.hypervisor.backend().to_string(),
                capabilities,
                host_memory_kib: host.total_kib,
            }),
        );
    }

    fn emit_inventory(&mut self) {
        let vms = {
            let fleet = self.fleet();
            fleet
                .vms()
                .map(|vm| {
                    let config = vm.config.clone().unwrap_or_default();
                    VmInventory {
                        vm: vm_ref(&vm.id),
                        state: "running".to_string(),
                        findings: crate::audit::observed_finding_names(
                            &config,
                            crate::audit::Observed {
                                agent_answered: self.capture.guest_agent_answering(&vm.id.uuid),
                                stats_stale: vm.stale,
                                ..crate::audit::Observed::default()
                            },
                        ),
                        config: VmConfig {
                            memory_kib: config.memory_kib,
                            balloon_floor_kib: config.current_memory_kib,
                            balloon_present: config.balloon_present,
                            stats_period_secs: config.stats_period_secs,
                            deflate_on_oom: config.deflate_on_oom,
                            free_page_reporting: config.free_page_reporting,
                            guest_agent_channel: config.guest_agent_channel,
                            serial_log: config.serial_log_path.is_some(),
                            shares: None,
                        },
                    }
                })
                .collect()
        };
        let key = self.sequenced_key("inventory");
        self.emit(key, Event::Inventory(Inventory { vms }));
        self.inventory_dirty = false;
    }

    fn emit_health(&mut self) {
        // One shared lock at a time (crate::shared): the fleet's size first, then the
        // counters. Holding the counters while taking the fleet deadlocked against a
        // `/metrics` scrape that held them the other way round.
        let vms = self.fleet().len();
        let health = {
            let counters = self.counters();
            AgentHealth {
                vms: u32::try_from(vms).unwrap_or(u32::MAX),
                poll_duration_ms: (counters.last_poll_seconds * 1000.0) as u64,
                poll_errors: counters.poll_errors,
                spool_bytes: counters.spool_bytes,
                spool_events: counters.spool_events,
                dropped_rollups: counters.dropped_rollups,
                flood_suppressed: counters.flood_suppressed,
            }
        };
        let key = self.sequenced_key("health");
        self.emit(key, Event::Health(health));
    }

    fn emit(&mut self, key: String, event: Event) {
        self.emit_at(key, epoch_ms(SystemTime::now()), event);
    }

    fn emit_at(&mut self, key: String, captured_at_ms: i64, event: Event) {
        let kind = event.kind_name();
        if let Err(error) = self.sink.emit(Envelope {
            key,
            captured_at_ms,
            event,
        }) {
            self.error_log
                .warn("sink", &format!("Failed to store a {kind} event: {error}"));
        }
    }

    /// `<host>/<middle>/<ms>-<n>`: a unique key for events with no natural identity.
    fn sequenced_key(&mut self, middle: &str) -> String {
        self.sequence += 1;
        format!(
            "{}/{middle}/{}-{}",
            self.settings.host_id,
            epoch_ms(SystemTime::now()),
            self.sequence
        )
    }

    fn take_reload(&self) -> Option<Settings> {
        self.handles.reload.lock().take()
    }

    fn fleet(&self) -> SharedGuard<'_, Fleet> {
        self.handles.fleet.lock()
    }

    fn counters(&self) -> SharedGuard<'_, AgentCounters> {
        self.handles.counters.lock()
    }
}

fn wire_host(host: &crate::hostmem::HostMemory) -> ballast_model::HostMemory {
    ballast_model::HostMemory {
        total_kib: host.total_kib,
        available_kib: host.available_kib,
        psi_some_avg10: host.psi_some_avg10,
        ksm_sharing_kib: host.ksm_sharing_kib,
    }
}

/// Logs a repeated error of one source at most once per interval (200 VMs x 10 s
/// polls must not flood the journal), counting what it held back.
struct RateLimitedLog {
    every: Duration,
    last: BTreeMap<String, (Instant, u64)>,
}

impl RateLimitedLog {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: BTreeMap::new(),
        }
    }

    fn warn(&mut self, source: &str, message: &str) {
        let now = Instant::now();
        match self.last.get_mut(source) {
            Some((last, held)) if now.duration_since(*last) < self.every => *held += 1,
            Some((last, held)) => {
                tracing::warn!(source, suppressed = *held, "{message}");
                *last = now;
                *held = 0;
            }
            None => {
                if self.last.len() >= 10_000 {
                    self.last.clear();
                }
                tracing::warn!(source, "{message}");
                self.last.insert(source.to_string(), (now, 0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;
    use crate::hypervisor::fake::{FakeDomain, FakeHypervisor};
    use crate::hypervisor::DomainConfig;

    fn vm(name: &str, dmesg: Option<&str>) -> (DomainId, FakeDomain) {
        let id = DomainId {
            uuid: format!("00000000-0000-4000-8000-{:012}", name.len()),
            name: name.to_string(),
        };
        let domain = FakeDomain {
            running: true,
            dmesg: dmesg.map(|text| text.as_bytes().to_vec()),
            config: DomainConfig {
                balloon_present: true,
                guest_agent_channel: true,
                ..DomainConfig::default()
            },
            ..FakeDomain::default()
        };
        (id, domain)
    }

    /// Settings with the state in `state_dir` and `extra_yaml` after it.
    fn test_settings(state_dir: &std::path::Path, extra_yaml: &str) -> Settings {
        let yaml = format!("state_dir: {}\n{extra_yaml}", state_dir.display());
        RawConfig::from_yaml(&yaml, std::path::Path::new("test.yaml"))
            .expect("yaml")
            .validate("host")
            .expect("settings")
    }

    /// A monitor on its own thread over `hypervisor`, polling every second, writing
    /// its events to `<dir>/events.jsonl` (host kernel log off).
    struct RunningMonitor {
        stop: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<()>,
    }

    impl RunningMonitor {
        /// With `capture.guest_agent: periodic` (every 60 s, so once per test).
        fn start(dir: &std::path::Path, hypervisor: Arc<dyn Hypervisor>) -> Self {
            let settings = test_settings(
                &dir.join("state"),
                "poll_interval_secs: 1\ncapture:\n  host_kernel: false\n  guest_agent: periodic\n  guest_agent_interval_secs: 60\n",
            );
            let handles = Handles::new(&settings);
            let stop = Arc::clone(&handles.stop);
            let monitor = Monitor::new(
                settings,
                hypervisor,
                Box::new(JsonLinesSink::new(dir.join("events.jsonl"))),
                handles,
            );
            let thread = std::thread::spawn(move || monitor.run());
            RunningMonitor { stop, thread }
        }

        fn stop(self) {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().expect("monitor thread");
        }
    }

    /// The findings of `name` in the last inventory event of the JSON-lines file.
    fn last_findings(events: &std::path::Path, name: &str) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(events).ok()?;
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|event| {
                let vms = event.get("vms")?.as_array()?.clone();
                vms.into_iter()
                    .find(|vm| vm.pointer("/vm/name").and_then(|n| n.as_str()) == Some(name))
            })
            .next_back()
            .and_then(|vm| serde_json::from_value(vm.get("findings")?.clone()).ok())
    }

    /// Whether the JSON-lines file holds an OOM event of the VM `name`.
    fn has_oom_of(events: &std::path::Path, name: &str) -> bool {
        std::fs::read_to_string(events)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .any(|event| {
                event
                    .get("key")
                    .and_then(|key| key.as_str())
                    .is_some_and(|key| key.contains("/oom/"))
                    && event.to_string().contains(&format!("\"name\":\"{name}\""))
            })
    }

    #[test]
    fn a_guest_agent_that_never_answers_does_not_hold_up_another_vms_oom() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hypervisor = Arc::new(FakeHypervisor::new());
        // A: its guest agent call blocks until the test releases it.
        let (a_id, a) = vm("a-vm", Some("[    1.000000] Linux version 6.1\n"));
        let gate = hypervisor.block_guest_exec(&a_id);
        hypervisor.set(a_id, a);
        // B: no guest agent; its OOM comes through its serial log.
        let serial = dir.path().join("b.log");
        std::fs::write(&serial, "[    0.500000] Linux version 6.1\n").expect("serial log");
        let (b_id, mut b) = vm("b-victim", None);
        b.config.serial_log_path = Some(serial.clone());
        hypervisor.set(b_id, b);
        let events = dir.path().join("events.jsonl");
        let monitor = RunningMonitor::start(dir.path(), hypervisor);
        // The periodic fetch of A starts on the first tick and does not come back.
        let entered = gate.entered.recv_timeout(Duration::from_secs(30));
        {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(&serial)
                .expect("serial log");
            log.write_all(crate::capture::detect::tests::LAB_LOG.as_bytes())
                .expect("write the OOM");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = false;
        while !seen && Instant::now() < deadline {
            seen = has_oom_of(&events, "b-victim");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Only now A's call may end (the monitor could not stop while it held it).
        drop(gate);
        monitor.stop();
        assert!(entered.is_ok(), "A's guest agent call never started");
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        assert!(seen, "no OOM of b-victim while A's call hung: {text}");
        assert!(!has_oom_of(&events, "a-vm"), "{text}");
    }

    #[test]
    fn the_inventory_says_which_guest_agents_do_not_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hypervisor = Arc::new(FakeHypervisor::new());
        let (quiet_id, quiet) = vm("quiet", None);
        let (talks_id, talks) = vm("talks-back", Some("[    1.000000] Linux version 6.1\n"));
        hypervisor.set(quiet_id, quiet);
        hypervisor.set(talks_id, talks);
        let events = dir.path().join("events.jsonl");
        let monitor = RunningMonitor::start(dir.path(), hypervisor);
        let deadline = Instant::now() + Duration::from_secs(30);
        let not_answering = "guest_agent_not_answering".to_string();
        let mut seen = (None, None);
        while Instant::now() < deadline {
            seen = (
                last_findings(&events, "quiet"),
                last_findings(&events, "talks-back"),
            );
            if seen.0.as_ref().is_some_and(|f| f.contains(&not_answering)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        monitor.stop();
        let (quiet, talks) = seen;
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        assert!(
            quiet.as_ref().is_some_and(|f| f.contains(&not_answering)),
            "{quiet:?} in {text}"
        );
        let talks = talks.expect("an inventory with talks-back");
        assert!(!talks.contains(&not_answering), "{talks:?}");
    }

    #[test]
    fn the_flood_counter_is_current_after_the_capture_tick_that_dropped_reports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hypervisor = Arc::new(FakeHypervisor::new());
        let serial = dir.path().join("flood.log");
        std::fs::write(&serial, "[    0.500000] Linux version 6.1\n").expect("serial log");
        let (id, mut domain) = vm("flooder", None);
        domain.config.serial_log_path = Some(serial.clone());
        domain.config.guest_agent_channel = false;
        hypervisor.set(id, domain);
        let settings = test_settings(
            &dir.path().join("state"),
            "capture:\n  host_kernel: false\n  guest_agent: false\n",
        );
        let handles = Handles::new(&settings);
        let counters = handles.counters.clone();
        let sink = Box::new(JsonLinesSink::new(dir.path().join("events.jsonl")));
        let mut monitor = Monitor::new(settings, hypervisor, sink, handles);
        monitor.poll();
        monitor.capture_tick();
        {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(&serial)
                .and_then(|mut log| {
                    log.write_all(
                        crate::capture::hub::tests::forged_kill_lines(1000..1500, None).as_bytes(),
                    )
                })
                .expect("flood");
        }
        // The tick that reads the flood, with no poll after it.
        monitor.capture_tick();
        let dropped = monitor.capture.flood_suppressed_total();
        assert!(
            dropped > 400,
            "flood control let {dropped} be dropped of 500"
        );
        let published = counters.lock().flood_suppressed;
        assert_eq!(published, dropped);
    }

    /// Counts what the monitor emits, without I/O.
    struct CountingSink(Arc<std::sync::atomic::AtomicU64>);

    impl EventSink for CountingSink {
        fn emit(&mut self, _envelope: Envelope) -> Result<(), std::io::Error> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    /// One `GET /metrics` over a new connection; the status line and body.
    fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    #[test]
    fn scraping_metrics_in_a_tight_loop_while_the_monitor_emits_health_never_hangs() {
        const ROUNDS: u64 = 5_000;
        const SCRAPERS: usize = 3;
        const MIN_SCRAPES: u64 = 3_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let hypervisor = Arc::new(FakeHypervisor::new());
        for n in 0..200 {
            let (mut id, domain) = vm(&format!("vm-{n}"), None);
            id.uuid = format!("00000000-0000-4000-8000-{n:012}");
            hypervisor.set(id, domain);
        }
        let settings = test_settings(
            &dir.path().join("state"),
            "capture:\n  host_kernel: false\n  guest_agent: false\n",
        );
        let handles = Handles::new(&settings);
        let shared = crate::metrics::Shared {
            fleet: handles.fleet.clone(),
            counters: handles.counters.clone(),
            sink: None,
        };
        let emitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sink = Box::new(CountingSink(Arc::clone(&emitted)));
        let mut monitor = Monitor::new(settings, hypervisor, sink, handles);
        monitor.poll();
        let before = emitted.load(Ordering::Relaxed);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        runtime.spawn(crate::metrics::serve_on(listener, shared));

        let stop = Arc::new(AtomicBool::new(false));
        let scraped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let scrapers: Vec<_> = (0..SCRAPERS)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let scraped = Arc::clone(&scraped);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match scrape(addr) {
                            Ok(answer) if answer.contains("ballast_agent_vms 200") => {
                                scraped.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(answer) => return Err(format!("unexpected answer: {answer:.200}")),
                            Err(error) => return Err(format!("scrape failed: {error}")),
                        }
                    }
                    Ok(())
                })
            })
            .collect();

        // Health rounds until there were thousands of them and thousands of scrapes
        // ran meanwhile (the scrapers are in their loop before the first round).
        let (done_tx, done) = std::sync::mpsc::channel();
        let during = Arc::clone(&scraped);
        std::thread::spawn(move || {
            while during.load(Ordering::Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
            let first = during.load(Ordering::Relaxed);
            let mut rounds = 0_u64;
            while rounds < ROUNDS || during.load(Ordering::Relaxed) - first < MIN_SCRAPES {
                monitor.emit_health();
                rounds += 1;
            }
            let _ = done_tx.send(rounds);
        });
        // A few seconds of work; a minute means a deadlock.
        let finished = done.recv_timeout(Duration::from_secs(60));
        stop.store(true, Ordering::Relaxed);
        let Ok(rounds) = finished else {
            // Without waiting for a render that never ends.
            runtime.shutdown_background();
            panic!("the monitor hung emitting health while /metrics was scraped (deadlock)");
        };
        for scraper in scrapers {
            let scraped = scraper.join().expect("scraper thread");
            scraped.expect("every scrape answered");
        }
        assert_eq!(
            emitted.load(Ordering::Relaxed) - before,
            rounds,
            "one health event per round"
        );
        assert!(scraped.load(Ordering::Relaxed) >= MIN_SCRAPES);
    }

    #[test]
    fn the_periodic_guest_agent_fetch_skips_vms_without_a_channel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hypervisor = Arc::new(FakeHypervisor::new());
        let (with_id, with) = vm("with-channel", Some("[    1.000000] Linux version 6.1\n"));
        let (without_id, mut without) = vm("no-channel", Some("[    1.000000] Linux 6.1\n"));
        without.config.guest_agent_channel = false;
        hypervisor.set(with_id.clone(), with);
        hypervisor.set(without_id.clone(), without);
        let monitor =
            RunningMonitor::start(dir.path(), Arc::clone(&hypervisor) as Arc<dyn Hypervisor>);
        let deadline = Instant::now() + Duration::from_secs(30);
        while hypervisor.guest_agent_calls(&with_id) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // A few more ticks in which the other VM's fetch would have started too.
        std::thread::sleep(Duration::from_secs(3));
        monitor.stop();
        assert!(
            hypervisor.guest_agent_calls(&with_id) >= 1,
            "the VM with a channel was never asked"
        );
        assert_eq!(hypervisor.guest_agent_calls(&without_id), 0);
        assert_eq!(
            hypervisor.guest_exec_calls(&with_id),
            0,
            "the file API answered: nothing was run in the guest"
        );
    }

    /// A sample of 458 MiB of guest memory with `usable_kib` available.
    fn usable(usable_kib: u64, update: u64) -> crate::hypervisor::BalloonSample {
        crate::hypervisor::BalloonSample {
            actual_kib: Some(524_288),
            maximum_kib: Some(524_288),
            available_kib: Some(468_416),
            usable_kib: Some(usable_kib),
            last_update_epoch_secs: Some(update),
            ..crate::hypervisor::BalloonSample::default()
        }
    }

    /// Ticks `monitor` until `done` or 10 s, giving the guest agent threads time.
    fn tick_until(monitor: &mut Monitor, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() && Instant::now() < deadline {
            monitor.capture_tick();
            std::thread::sleep(Duration::from_millis(50));
        }
        // A few more ticks: results are taken back, and a call that should not
        // happen has had its chance.
        for _ in 0..5 {
            monitor.capture_tick();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn the_guest_agent_mode_decides_when_a_guest_is_read_with_fake_hypervisor() {
        for mode in ["off", "on_suspicion", "periodic"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let hypervisor = Arc::new(FakeHypervisor::new());
            let (id, mut domain) = vm("guest", Some(crate::capture::detect::tests::LAB_LOG));
            domain.sample = usable(100_000, 1);
            hypervisor.set(id.clone(), domain);
            let settings = test_settings(
                &dir.path().join("state"),
                &format!("capture:\n  host_kernel: false\n  guest_agent: {mode}\n  guest_agent_interval_secs: 60\n"),
            );
            let handles = Handles::new(&settings);
            let events = dir.path().join("events.jsonl");
            let sink = Box::new(JsonLinesSink::new(events.clone()));
            let mut monitor = Monitor::new(
                settings,
                Arc::clone(&hypervisor) as Arc<dyn Hypervisor>,
                sink,
                handles,
            );
            // A healthy guest: only `periodic` reads it (at once, then every 60 s).
            monitor.poll();
            tick_until(&mut monitor, || hypervisor.guest_agent_calls(&id) > 0);
            let healthy = hypervisor.guest_agent_calls(&id);
            match mode {
                "periodic" => assert!(healthy > 0, "{mode}: the periodic read did not come"),
                _ => assert_eq!(healthy, 0, "{mode}: a healthy guest was read"),
            }
            let oom_before = has_oom_of(&events, "guest");
            // The host sees a sign: the guest's usable memory collapsed.
            hypervisor.update(&id, |domain| domain.sample = usable(3_000, 2));
            monitor.poll();
            tick_until(&mut monitor, || hypervisor.guest_agent_calls(&id) > healthy);
            let after = hypervisor.guest_agent_calls(&id);
            match mode {
                "off" => {
                    assert_eq!(after, 0, "off: the guest agent was called");
                    assert!(!has_oom_of(&events, "guest"));
                }
                _ => {
                    assert!(
                        after > healthy,
                        "{mode}: the suspicion did not read the guest"
                    );
                    assert!(
                        has_oom_of(&events, "guest") || oom_before,
                        "{mode}: no OOM event"
                    );
                }
            }
            assert_eq!(
                hypervisor.guest_exec_calls(&id),
                0,
                "{mode}: exec without guest_agent_exec"
            );
            drop(monitor);
        }
    }
}
