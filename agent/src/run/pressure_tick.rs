//! The pressure step of every tick: the guests whose PSI file is due are handed to
//! the guest agent threads (`pressure.guest_psi`), and the readings that came back
//! go to the fleet. Never a guest agent call on this thread: without the threads
//! no PSI is read. A PSI read only takes an idle thread (it never waits in the queue
//! ahead of a kernel log fetch, which the capture step hands out first).

use std::time::{Instant, SystemTime};

use super::Monitor;
use crate::capture::ga_worker::{PsiDone, Submitted};
use crate::hypervisor::DomainId;

/// A reading stands for this many intervals (then the VM's PSI is missing again).
const VALID_INTERVALS: u32 = 3;

impl Monitor {
    pub(super) fn pressure_tick(&mut self, now: Instant) {
        let done = self
            .guest_agent
            .as_mut()
            .map(|worker| worker.take_psi())
            .unwrap_or_default();
        for read in done {
            self.psi_read(read, now);
        }
        if !self.settings.pressure.reads_psi(&self.settings.capture) {
            return;
        }
        let interval = self.settings.pressure.psi_interval();
        // Only VMs whose configuration is read and has a guest agent channel.
        let vms: Vec<DomainId> = self
            .fleet()
            .vms()
            .filter(|vm| vm.config.as_ref().is_some_and(|c| c.guest_agent_channel))
            .map(|vm| vm.id.clone())
            .collect();
        self.psi_schedule
            .retain(|uuid| vms.iter().any(|id| id.uuid == uuid));
        let Some(worker) = self.guest_agent.as_mut() else {
            return;
        };
        for id in vms {
            if !worker.has_idle_thread() {
                break;
            }
            if self.not_running.contains(&id.uuid)
                || worker.in_flight(&id.uuid)
                || !self.psi_schedule.due(&id.uuid, now)
            {
                continue;
            }
            match worker.submit_psi(&id) {
                Submitted::Queued => self.psi_schedule.started(&id.uuid, now, interval),
                Submitted::InFlight => {}
                // The queue is full: the others wait for a later tick.
                Submitted::Refused => break,
            }
        }
    }

    fn psi_read(&mut self, read: PsiDone, now: Instant) {
        let PsiDone { id, output, took } = read;
        let interval = self.settings.pressure.psi_interval();
        let _vm = id.span().entered();
        match output {
            Ok(psi) => {
                self.psi_schedule.succeeded(&id.uuid);
                self.fleet().apply_psi(
                    &id,
                    SystemTime::now(),
                    psi,
                    interval.saturating_mul(VALID_INTERVALS),
                );
            }
            Err(error) => {
                let wait = self
                    .psi_schedule
                    .failed(&id.uuid, now, interval, error.is_lasting());
                tracing::debug!(
                    %error,
                    next_in_secs = wait.as_secs(),
                    took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                    "Guest PSI not read; backing off."
                );
            }
        }
    }
}
