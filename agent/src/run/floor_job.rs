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
    pub(super) handle: JoinHandle<Result<(), String>>,
}

/// The action as the floor raise left it: `failed`, saying why, when it failed.
pub(super) fn floor_result(mut action: GuardAction, result: Result<(), String>) -> GuardAction {
    if let Err(error) = result {
        action.outcome = GuardOutcome::Failed;
        action.detail = format!("{}; but the floor was NOT raised: {error}", action.detail);
    }
    action
}
