//! The guard (issue 19 item 3): gives balloon memory back to a guest whose risk is
//! `critical`, within what the host can give, rate-limited and with hysteresis
//! (docs/guard.md).
//! - `decide`: the pure decision, figures and per-VM/per-host state in, a
//!   [`decide::Decision`] out; the run loop carries it out and reports it.
//! - `reach`: how fast a growth it can reach at the agent's poll interval (a start-up
//!   warning for `act` on a slow poll).

pub mod decide;
pub mod reach;

use ballast_model::{GuardAction, MAX_GUARD_DETAIL_BYTES};

pub use decide::{decide, Decision, GuardInput, GuardSettings, HostGuard, VmGuard};

/// `action` as the collector takes it: the detail (which may carry a hypervisor's
/// error text) cut to [`MAX_GUARD_DETAIL_BYTES`] on a character boundary, and the
/// episode's start no later than the action (a host clock stepped back meanwhile would
/// otherwise get the event refused).
pub fn fit_for_wire(mut action: GuardAction) -> GuardAction {
    if action.detail.len() > MAX_GUARD_DETAIL_BYTES {
        let mut cut = MAX_GUARD_DETAIL_BYTES;
        while !action.detail.is_char_boundary(cut) {
            cut -= 1;
        }
        action.detail.truncate(cut);
    }
    action.episode_started_at_ms = action
        .episode_started_at_ms
        .map(|started| started.min(action.at_ms));
    action
}

#[cfg(test)]
mod tests {
    use ballast_model::{GuardMode, GuardOutcome, RiskLevel, VmRef};

    use super::*;

    #[test]
    fn a_long_error_is_cut_on_a_character_boundary_and_the_episode_starts_before_the_action() {
        let action = GuardAction {
            vm: VmRef::default(),
            mode: GuardMode::Act,
            outcome: GuardOutcome::Failed,
            at_ms: 1_000,
            episode_started_at_ms: Some(5_000),
            level: RiskLevel::Critical,
            drivers: Vec::new(),
            signals: Default::default(),
            exhaustion_secs: None,
            deficit_kib: None,
            actual_before_kib: None,
            target_kib: None,
            maximum_kib: None,
            host_available_kib: None,
            host_reserve_kib: None,
            floor_before_kib: None,
            floor_after_kib: None,
            detail: "é".repeat(MAX_GUARD_DETAIL_BYTES),
        };
        let shipped = fit_for_wire(action);
        assert!(shipped.detail.len() <= MAX_GUARD_DETAIL_BYTES);
        assert_eq!(shipped.detail.len(), MAX_GUARD_DETAIL_BYTES);
        assert!(shipped.detail.chars().all(|c| c == 'é'));
        assert_eq!(shipped.episode_started_at_ms, Some(1_000));
    }
}
