//! How fast a growth the guard can reach with the agent's poll interval (pure; checked
//! at start-up and on reload, docs/guard.md "Reach").
//!
//! The guard acts on `critical`, which a fall of MemAvailable alone reaches after
//! [`crate::pressure::risk::SUSTAINED_FALLS`] falling guest reports and a confirming one
//! ([`super::decide::CONFIRM_REPORTS`]): about four reports after the fall began. The
//! agent reads at most one balloon-stats report per poll, so a guest whose free memory
//! lasts less than about four polls under the growth is killed before the guard's
//! first step, however fast the host could deflate.

use std::time::Duration;

use ballast_model::GuardMode;

/// Guest reports from the start of a fall to the guard's first step on MemAvailable alone.
pub const REPORTS_TO_ACT: u32 = crate::pressure::risk::SUSTAINED_FALLS as u32 + 1;

/// The poll interval the guard suite measured its figures with (BENCHMARKS.md): the
/// balloon stats period QEMU runs on Proxmox.
pub const GUARD_POLL_SECS: u64 = 2;

/// The shortest time a guest's free memory must last for the guard to act before it is
/// gone, at `poll` (one report per poll at best).
pub fn time_to_act(poll: Duration) -> Duration {
    poll.saturating_mul(REPORTS_TO_ACT)
}

/// A start-up warning when `act` reads its VMs too seldom: the guard would step only
/// for guests that take minutes to run out. `cadence`: how often the guard reads a VM
/// whose balloon holds memory (its own poll, else the agent's).
pub fn advisory(mode: GuardMode, cadence: Duration) -> Option<String> {
    (mode == GuardMode::Act && cadence.as_secs() > GUARD_POLL_SECS).then(|| {
        format!(
            "guard.mode is act and the guard reads a VM every {poll} s (poll_interval_secs, \
             guard.poll_interval_secs): it reads at most one guest report per poll and needs \
             about {REPORTS_TO_ACT} in a row to act, so it only reaches a guest whose free \
             memory lasts more than {reach} s under the growth; guard.poll_interval_secs: \
             {GUARD_POLL_SECS} (with a balloon stats period of {GUARD_POLL_SECS} s or less) \
             reaches {fast} s (docs/guard.md, \"Reach\")",
            poll = cadence.as_secs(),
            reach = time_to_act(cadence).as_secs(),
            fast = time_to_act(Duration::from_secs(GUARD_POLL_SECS)).as_secs(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_on_the_default_ten_second_poll_is_told_what_it_reaches() {
        let advice = advisory(GuardMode::Act, Duration::from_secs(10)).expect("a warning");
        assert!(advice.contains("every 10 s"), "{advice}");
        assert!(advice.contains("more than 40 s"), "{advice}");
        assert!(advice.contains("reaches 8 s"), "{advice}");
        // The guard's own poll, observe and off: nothing to say.
        assert_eq!(advisory(GuardMode::Act, Duration::from_secs(2)), None);
        assert_eq!(advisory(GuardMode::Act, Duration::from_secs(1)), None);
        assert_eq!(advisory(GuardMode::Observe, Duration::from_secs(10)), None);
        assert_eq!(advisory(GuardMode::Off, Duration::from_secs(60)), None);
    }
}
