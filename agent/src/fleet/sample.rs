//! One VM's balloon sample at one poll, the part every poll shares (the agent's full
//! poll, `Fleet::apply_poll`, and the guard's own, `Fleet::apply_guard_poll`): the
//! OOM suspicion and near misses it shows, the history ring, the poll's time, the
//! minute rollup. Pure.

use std::time::SystemTime;

use ballast_model::BalloonRollup;

use super::{detect_pressure, Change, VmState};
use crate::hypervisor::BalloonSample;

impl VmState {
    /// Takes `sample` (already made plausible) as this VM's at `at`; the minute rollup
    /// it finished, if any. The caller keeps it as `last_sample` afterwards.
    pub(super) fn take_sample(
        &mut self,
        at: SystemTime,
        sample: &BalloonSample,
        changes: &mut Vec<Change>,
    ) -> Option<BalloonRollup> {
        detect_pressure(self, at, sample, changes);
        self.history.push_sample(at, sample);
        self.sampled_at = Some(at);
        self.roll(at, sample)
    }
}
