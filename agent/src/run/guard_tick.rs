//! The guard step of every poll (docs/guard.md): after the risk step, the fleet decides
//! per VM ([`crate::fleet::Fleet::decide_guard`]); in `act` this thread makes the one
//! hypervisor call a decision needs (the balloon target; `qm set` for a floor the
//! operator allowed raising runs on a thread of its own, since it may take seconds,
//! and its event goes out when it is done), and every decision goes out as an audited
//! `Event::Guard`, counted on `/metrics`.

use std::time::SystemTime;

use ballast_model::{Event, GuardAction, GuardMode, GuardOutcome};

use super::floor_job::{floor_result, FloorJob};
use super::Monitor;
use crate::hypervisor::DomainId;

impl Monitor {
    /// The guard's own poll (`guard.poll_interval_secs`, between the agent's polls of
    /// all VMs): the VMs whose balloon holds memory read again, their counters (free on
    /// Proxmox: the same QMP conversation), risk and the guard step, as in a full poll.
    pub(super) fn guard_poll(&mut self) {
        let ids = self.fleet().guard_poll_ids();
        if ids.is_empty() {
            return;
        }
        let at = SystemTime::now();
        let samples = match self.hypervisor.balloon_samples_of(&ids) {
            Ok(samples) => samples,
            Err(error) => {
                self.error_log
                    .warn("guard-poll", &format!("The guard's poll failed: {error}"));
                self.counters().poll_errors += 1;
                return;
            }
        };
        let order: Vec<DomainId> = samples.iter().map(|(id, _)| id.clone()).collect();
        let changes = self.fleet().apply_guard_poll(at, samples);
        self.handle_changes(changes);
        self.risk_and_guard(at, &order);
        self.counters().guard_polls += 1;
    }

    pub(super) fn guard_tick(&mut self, at: SystemTime, host_available_kib: Option<u64>) {
        self.finish_floor_jobs(false);
        let mut settings = self.settings.guard.settings();
        if settings.mode == GuardMode::Off {
            return;
        }
        settings.raise_floor =
            self.settings.guard.proxmox_raise_floor && self.hypervisor.backend() == "proxmox";
        let mut host = std::mem::take(&mut self.guard_host);
        let decisions = self
            .fleet()
            .decide_guard(at, &settings, &mut host, host_available_kib);
        self.guard_host = host;
        for (id, decision, mut action) in decisions {
            let _vm = id.span().entered();
            let mut deflated_bytes = 0;
            if let Some(target) = decision.target_to_set(settings.mode) {
                match self.hypervisor.set_balloon_target(&id, target) {
                    Ok(()) => {
                        let before = action.actual_before_kib.unwrap_or(target);
                        deflated_bytes = target.saturating_sub(before).saturating_mul(1024);
                    }
                    Err(error) => {
                        self.fleet().guard_step_failed(&id);
                        action.outcome = GuardOutcome::Failed;
                        action.detail = format!(
                            "the hypervisor did not set the balloon target of {} MiB: {}",
                            target / 1024,
                            ballast_daemon::error_chain(&error)
                        );
                    }
                }
            }
            let raise_with_step =
                action.outcome == GuardOutcome::Deflated && action.floor_after_kib.is_some();
            if action.outcome == GuardOutcome::FloorRaised || raise_with_step {
                // `qm set` takes the cluster's config lock and may take seconds: it runs
                // on a thread of its own, and the event goes out when it is done.
                match self.spawn_floor_raise(&id, action, deflated_bytes) {
                    Ok(()) => continue,
                    Err(returned) => action = *returned,
                }
                let floor = action.floor_after_kib.unwrap_or(0);
                let result = self
                    .hypervisor
                    .raise_balloon_floor(&id, floor)
                    .map_err(|error| ballast_daemon::error_chain(&error));
                if result.is_err() {
                    self.fleet().guard_floor_raise_failed(&id);
                }
                action = floor_result(action, result);
            }
            self.record_guard_action(&id, action, deflated_bytes);
        }
    }

    /// Logs, counts and emits one decision.
    fn record_guard_action(&mut self, id: &DomainId, action: GuardAction, deflated_bytes: u64) {
        let _vm = id.span().entered();
        match action.outcome {
            GuardOutcome::Deflated | GuardOutcome::FloorRaised => tracing::warn!(
                outcome = %action.outcome,
                target_kib = ?action.target_kib,
                floor_after_kib = ?action.floor_after_kib,
                detail = %action.detail,
                "Guard acted."
            ),
            outcome => tracing::info!(
                %outcome,
                target_kib = ?action.target_kib,
                detail = %action.detail,
                "Guard decision."
            ),
        }
        {
            let mut counters = self.counters();
            *counters.guard_actions.entry(action.outcome).or_default() += 1;
            counters.guard_deflated_bytes =
                counters.guard_deflated_bytes.saturating_add(deflated_bytes);
        }
        let key = format!(
            "{}/guard/{}/{}",
            self.settings.host_id, id.uuid, action.at_ms
        );
        let action = crate::guard::fit_for_wire(action);
        self.emit_at(key, action.at_ms, Event::Guard(Box::new(action)));
    }

    /// Starts raising a VM's floor on a thread of its own; the action comes back when
    /// the thread cannot start.
    fn spawn_floor_raise(
        &mut self,
        id: &DomainId,
        action: GuardAction,
        deflated_bytes: u64,
    ) -> Result<(), Box<GuardAction>> {
        let floor = action.floor_after_kib.unwrap_or(0);
        let hypervisor = self.hypervisor.clone();
        let thread_id = id.clone();
        let spawned = std::thread::Builder::new()
            .name("ballast-floor".into())
            .spawn(move || {
                hypervisor
                    .raise_balloon_floor(&thread_id, floor)
                    .map_err(|error| ballast_daemon::error_chain(&error))
            });
        match spawned {
            Ok(handle) => {
                self.floor_jobs.push(FloorJob {
                    id: id.clone(),
                    action,
                    deflated_bytes,
                    handle,
                });
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "No thread for the floor raise; it runs on the monitor.");
                Err(Box::new(action))
            }
        }
    }

    /// Emits the floor raises that are done (all of them, waiting, when `wait`: the
    /// monitor is stopping, and `qm set` has its own time limit).
    pub(super) fn finish_floor_jobs(&mut self, wait: bool) {
        let jobs = std::mem::take(&mut self.floor_jobs);
        for job in jobs {
            if !wait && !job.handle.is_finished() {
                self.floor_jobs.push(job);
                continue;
            }
            let result = job
                .handle
                .join()
                .unwrap_or_else(|_| Err("the floor raise's thread panicked".to_owned()));
            if result.is_err() {
                self.fleet().guard_floor_raise_failed(&job.id);
            }
            let action = floor_result(job.action, result);
            self.record_guard_action(&job.id, action, job.deflated_bytes);
        }
    }
}
