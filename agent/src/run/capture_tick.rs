//! The capture step of every tick: serial console logs, the guest agent reads
//! (which VMs are due, handed to the guest agent threads, their results taken
//! back), held partial reports, then the host kernel log.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Monitor;
use crate::capture::ga_worker::{FetchDone, Submitted};
use crate::capture::{CaptureEvent, FetchReason};
use crate::config::GuestAgentMode;
use crate::hypervisor::DomainId;

impl Monitor {
    pub(super) fn capture_tick(&mut self) {
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

    pub(super) fn guest_agent_in_flight(&self, uuid: &str) -> bool {
        self.guest_agent
            .as_ref()
            .is_some_and(|worker| worker.in_flight(uuid))
    }

    /// Hands one fetch to the guest agent threads (unless the VM backs off).
    pub(super) fn start_guest_agent_fetch(
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
    pub(super) fn take_guest_agent_results(
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

    pub(super) fn guest_agent_fetched(
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
}
