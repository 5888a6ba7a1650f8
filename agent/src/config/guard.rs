//! `guard:`: what the guard may do for a VM at critical risk (docs/guard.md).

use std::time::Duration;

use ballast_model::GuardMode;
use serde::{Deserialize, Serialize};

use crate::guard::GuardSettings;

/// A `guard:` value out of range, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} ({value}) must be {min} to {max}")]
pub struct GuardConfigError {
    pub key: &'static str,
    pub value: u64,
    pub min: u64,
    pub max: u64,
}

/// `guard:` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// `off`, `observe` (default: report what it would do) or `act`.
    #[serde(deserialize_with = "guard_mode")]
    pub mode: GuardMode,
    /// The smallest step given back, MiB (1 to 65536).
    pub step_mib: u64,
    /// The host's MemAvailable the guard never gives away, MiB (64 to 1048576).
    pub host_reserve_mib: u64,
    /// Steps per VM in any hour (1 to 60).
    pub max_actions_per_vm_per_hour: u32,
    /// Steps per host in any minute (1 to 600).
    pub max_actions_per_host_per_minute: u32,
    /// Proxmox: where pvestatd takes a deflation back, raise the VM's `balloon:`
    /// floor persistently (`qm set <vmid> --balloon <MiB>`).
    pub proxmox_raise_floor: bool,
    /// Seconds between the guard's own polls of the VMs whose balloon holds memory,
    /// between the agent's polls of all (0 = only the agent's poll; 0 to 3600).
    pub poll_interval_secs: u64,
}

/// `guard.mode`: one of the known names; any other word is an error naming it (the
/// wire vocabulary would read it as `unknown`).
fn guard_mode<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<GuardMode, D::Error> {
    let text = String::deserialize(deserializer)?;
    match GuardMode::parse(&text) {
        GuardMode::Unknown => Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Str(&text),
            &"off, observe or act",
        )),
        mode => Ok(mode),
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        let settings = GuardSettings::default();
        Self {
            mode: settings.mode,
            step_mib: settings.step_kib / 1024,
            host_reserve_mib: settings.host_reserve_kib / 1024,
            max_actions_per_vm_per_hour: settings.max_actions_per_vm_per_hour,
            max_actions_per_host_per_minute: settings.max_actions_per_host_per_minute,
            proxmox_raise_floor: false,
            poll_interval_secs: crate::guard::reach::GUARD_POLL_SECS,
        }
    }
}

impl GuardConfig {
    /// The guard's own poll of the VMs whose balloon holds memory, when it runs: the
    /// guard is on and `guard.poll_interval_secs` is shorter than the agent's `poll`.
    pub fn fast_poll(&self, poll: Duration) -> Option<Duration> {
        let fast = Duration::from_secs(self.poll_interval_secs);
        (self.mode != GuardMode::Off && self.poll_interval_secs > 0 && fast < poll).then_some(fast)
    }

    /// How often the guard reads a VM whose balloon holds memory: its own poll, or the
    /// agent's `poll`.
    pub fn cadence(&self, poll: Duration) -> Duration {
        self.fast_poll(poll).unwrap_or(poll)
    }

    /// The decision's settings.
    pub fn settings(&self) -> GuardSettings {
        GuardSettings {
            mode: self.mode,
            step_kib: self.step_mib.saturating_mul(1024),
            host_reserve_kib: self.host_reserve_mib.saturating_mul(1024),
            max_actions_per_vm_per_hour: self.max_actions_per_vm_per_hour,
            max_actions_per_host_per_minute: self.max_actions_per_host_per_minute,
            ..GuardSettings::default()
        }
    }

    /// Checks every key (at start-up, `check-config` and reload).
    pub fn validate(&self) -> Result<(), GuardConfigError> {
        let checks = [
            ("guard.step_mib", self.step_mib, 1, 65_536),
            (
                "guard.host_reserve_mib",
                self.host_reserve_mib,
                64,
                1_048_576,
            ),
            (
                "guard.max_actions_per_vm_per_hour",
                u64::from(self.max_actions_per_vm_per_hour),
                1,
                60,
            ),
            (
                "guard.max_actions_per_host_per_minute",
                u64::from(self.max_actions_per_host_per_minute),
                1,
                600,
            ),
            ("guard.poll_interval_secs", self.poll_interval_secs, 0, 3600),
        ];
        for (key, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(GuardConfigError {
                    key,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }
}
