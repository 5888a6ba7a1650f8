//! What the hypervisor pushed (balloon moves, lifecycle) and what the fleet made
//! of a poll ([`Change`]): VMs that appeared or went, suspicions that ask for the
//! guest kernel log, near misses and balloon moves as events.

use std::sync::mpsc::TryRecvError;

use ballast_model::{
    BalloonChange, EpisodePhase, Event, NearMiss as WireNearMiss, ResizePhase, RiskLevel,
};

use super::Monitor;
use crate::capture::FetchReason;
use crate::fleet::Change;
use crate::hypervisor::{DomainEvent, DomainId, DomainState};
use crate::wire::vm_ref;

impl Monitor {
    pub(super) fn handle_changes(&mut self, changes: Vec<Change>) {
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
                // The stats path's findings change: the collector hears of it.
                Change::BecameStale(_) => {
                    tracing::warn!("Balloon stats stopped updating.");
                    self.inventory_dirty = true;
                }
                Change::StatsNeverCame(_) => {
                    tracing::warn!("The balloon answers but the guest never sent stats: its balloon driver is silent.");
                    self.inventory_dirty = true;
                }
                Change::Recovered(_) => {
                    tracing::info!("Balloon stats update again.");
                    self.inventory_dirty = true;
                }
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
                    *self.counters().near_misses.entry(kind).or_default() += 1;
                    let key = self.sequenced_key(&format!("nm/{}/{kind}", id.uuid));
                    self.emit(
                        key,
                        Event::NearMiss(WireNearMiss {
                            vm: vm_ref(&id),
                            kind,
                            detail,
                            actual_kib,
                            usable_kib,
                        }),
                    );
                }
                Change::Pressure { id, episode } => self.handle_pressure(&id, episode),
                Change::MemoryDevice { change, at, .. } => self.handle_memory_device(change, at),
                // The audit's `virtio_mem_not_onlined` comes or goes: the collector hears
                // of it with the inventory.
                Change::VirtioMemOnline { change, .. } => {
                    match change.not_onlined_kib() {
                        Some(kib) => tracing::warn!(
                            not_onlined_kib = kib,
                            "virtio-mem memory plugged but not onlined: the guest's MemTotal did not take it in."
                        ),
                        None => tracing::info!("virtio-mem memory onlined (or unplugged) at last."),
                    }
                    self.inventory_dirty = true;
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

    /// A pressure episode's start, peak or end: logged, counted, and sent (spool
    /// Normal lane; key `<host>/pressure/<vm>/<started_at_ms>/<phase>/<at_ms>`, the
    /// same for the same phase of the same episode).
    fn handle_pressure(
        &mut self,
        id: &crate::hypervisor::DomainId,
        episode: Box<ballast_model::PressureEpisode>,
    ) {
        let drivers: Vec<&str> = episode.drivers.iter().map(|d| d.as_str()).collect();
        let exhaustion = episode.exhaustion_secs;
        match (episode.phase, episode.level) {
            (EpisodePhase::End, level) => {
                tracing::info!(worst = %level, "Memory pressure over.");
            }
            (phase, RiskLevel::Critical) => tracing::warn!(
                %phase, ?drivers, exhaustion_secs = ?exhaustion,
                deficit_kib = ?episode.deficit_kib,
                "Guest memory pressure critical."
            ),
            (phase, level) => tracing::info!(
                %phase, %level, ?drivers, exhaustion_secs = ?exhaustion,
                "Guest memory pressure."
            ),
        }
        if episode.phase == EpisodePhase::Start {
            *self
                .counters()
                .pressure_episodes
                .entry((id.uuid.clone(), id.name.clone()))
                .or_default() += 1;
        }
        let discriminator = format!(
            "{}/{}/{}",
            episode.started_at_ms, episode.phase, episode.at_ms
        );
        let at_ms = episode.at_ms;
        let event = Event::Pressure(episode);
        let key = crate::spool::key_for(&self.settings.host_id, &event, &discriminator);
        self.emit_at(key, at_ms, event);
    }

    /// A virtio-mem resize (docs/elastic.md): logged and sent (spool Normal
    /// lane; key `<host>/memory_device/<vm>/<device>/<phase>/<at_ms>`, the same for the
    /// same change of the same device).
    fn handle_memory_device(
        &mut self,
        change: Box<ballast_model::MemoryDeviceChange>,
        at: std::time::SystemTime,
    ) {
        let phase = change.phase;
        match phase {
            ResizePhase::Stuck => tracing::warn!(
                device = %change.device, requested_kib = ?change.requested_kib,
                plugged_kib = ?change.plugged_kib,
                "virtio-mem request not met: the guest does not plug or unplug."
            ),
            _ => tracing::info!(
                device = %change.device, %phase, requested_kib = ?change.requested_kib,
                plugged_kib = ?change.plugged_kib, "virtio-mem resize."
            ),
        }
        let at_ms = crate::wire::epoch_ms(at);
        let discriminator = format!("{}/{phase}/{at_ms}", change.device);
        let event = Event::MemoryDevice(change);
        let key = crate::spool::key_for(&self.settings.host_id, &event, &discriminator);
        self.emit_at(key, at_ms, event);
    }

    /// Handles pushed events; true when the VM set changed and a poll should come early.
    pub(super) fn drain_events(&mut self) -> bool {
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
                        // A (re)started domain may have other devices (virtio-mem).
                        self.virtio_mem_reread.insert(id.uuid.clone(), id.clone());
                    } else {
                        self.not_running.insert(id.uuid.clone());
                        if state == DomainState::ShutOff {
                            self.qemu_pids.remove(&id.uuid);
                        }
                    }
                }
                DomainEvent::MemoryDeviceSizeChange {
                    id,
                    device,
                    plugged_kib,
                    at,
                } => {
                    let changes =
                        self.fleet()
                            .apply_memory_device_size(&id, at, &device, plugged_kib);
                    self.handle_changes(changes);
                    // The domain XML is read again at the next poll (once, however
                    // many events came): a device plugged in meanwhile is learned there.
                    self.virtio_mem_reread.insert(id.uuid.clone(), id);
                }
                DomainEvent::AgentLifecycle { id, connected, .. } => {
                    tracing::debug!(domain = %id.uuid, connected, "Guest agent lifecycle.");
                }
            }
        }
        lifecycle
    }

    /// Reads the QEMU pid of `id` again (a restarted VM has a new QEMU process).
    pub(super) fn refresh_qemu_pid(&mut self, id: &DomainId) {
        match self.hypervisor.qemu_pid(id) {
            Some(pid) => {
                self.qemu_pids.insert(id.uuid.clone(), pid);
            }
            None => {
                self.qemu_pids.remove(&id.uuid);
            }
        }
    }
}
