//! The guard step of every poll (docs/guard.md): after the risk step, the fleet decides
//! per VM ([`crate::fleet::Fleet::decide_guard`]); in `act` this thread makes the one
//! hypervisor call a decision needs (the balloon target, or `qm set` for a floor the
//! operator allowed raising), and every decision goes out as an audited
//! `Event::Guard`, counted on `/metrics`.

use std::time::SystemTime;

use ballast_model::{Event, GuardMode, GuardOutcome};

use super::Monitor;

impl Monitor {
    pub(super) fn guard_tick(&mut self, at: SystemTime, host_available_kib: Option<u64>) {
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
            if action.outcome == GuardOutcome::FloorRaised {
                let floor = action.floor_after_kib.unwrap_or(0);
                if let Err(error) = self.hypervisor.raise_balloon_floor(&id, floor) {
                    action.outcome = GuardOutcome::Failed;
                    action.detail = format!(
                        "{}; but the floor was NOT raised: {}",
                        action.detail,
                        ballast_daemon::error_chain(&error)
                    );
                }
            }
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
    }
}
