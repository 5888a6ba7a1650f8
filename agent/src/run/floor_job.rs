//! A floor raise (`qm set`) under way on a thread of its own: what the monitor keeps
//! of it until the thread is done (`run::guard_tick` starts and finishes them), and
//! how its result changes the guard's event.

use std::thread::JoinHandle;

use ballast_model::{GuardAction, GuardOutcome};

use crate::hypervisor::DomainId;

/// A floor raise under way on its own thread.
pub(super) struct FloorJob {
    pub(super) id: DomainId,
    pub(super) action: GuardAction,
    /// What the deflation it goes with gave back (0 for a raise of its own).
    pub(super) deflated_bytes: u64,
    pub(super) handle: JoinHandle<Result<(), String>>,
}

/// The action as the floor raise left it: a `floor_raised` whose raise failed is
/// `failed`; a `deflated` that raised the floor with it stays `deflated` (the balloon
/// moved), and either says why the floor was not raised.
pub(super) fn floor_result(mut action: GuardAction, result: Result<(), String>) -> GuardAction {
    if let Err(error) = result {
        if action.outcome == GuardOutcome::FloorRaised {
            action.outcome = GuardOutcome::Failed;
        }
        action.floor_after_kib = action.floor_before_kib;
        action.detail = format!("{}; but the floor was NOT raised: {error}", action.detail);
    }
    action
}
