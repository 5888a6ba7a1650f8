//! Memory pressure (schema version 2): the signals of a guest's distress the agent
//! measured before any kill, the risk it read from them, and pressure episodes.
//!
//! Rates are per second of host time between two polls. Everything here is derived
//! from guest-reported figures (balloon stats, QEMU's `guest-stats`, the guest's PSI
//! file) and is untrusted. A missing signal is `None`, never 0: a VM whose sources
//! are empty has no pressure signals, which is not the same as no pressure.

use serde::{Deserialize, Serialize};

use crate::kinds::{
    EpisodePhase, GuardMode, GuardOutcome, PressureSignal, RiskLevel, SignalSource,
};
use crate::VmRef;

/// One VM's pressure signals at one poll (rates since the poll before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PressureSnapshot {
    /// Allocation stalls (the guest's `allocstall_*` summed) per second.
    #[serde(default)]
    pub alloc_stalls_per_s: Option<f64>,
    /// Pages scanned by direct reclaim, KiB per second.
    #[serde(default)]
    pub direct_scan_kib_per_s: Option<f64>,
    /// Pages reclaimed by direct reclaim, KiB per second.
    #[serde(default)]
    pub direct_reclaim_kib_per_s: Option<f64>,
    /// Pages scanned by kswapd, KiB per second.
    #[serde(default)]
    pub async_scan_kib_per_s: Option<f64>,
    /// Pages reclaimed by kswapd, KiB per second.
    #[serde(default)]
    pub async_reclaim_kib_per_s: Option<f64>,
    /// Major page faults per second.
    #[serde(default)]
    pub major_faults_per_s: Option<f64>,
    /// Swapped-in memory, KiB per second.
    #[serde(default)]
    pub swap_in_kib_per_s: Option<f64>,
    /// MemAvailable's slope over the recent polls, KiB per second (negative: falling).
    #[serde(default)]
    pub available_slope_kib_per_s: Option<f64>,
    /// `/proc/pressure/memory` `some avg10` (percent).
    #[serde(default)]
    pub psi_some_avg10: Option<f64>,
    /// `/proc/pressure/memory` `full avg10` (percent).
    #[serde(default)]
    pub psi_full_avg10: Option<f64>,
    /// `/proc/pressure/memory` `some total` (microseconds since the guest booted).
    #[serde(default)]
    pub psi_some_total_us: Option<u64>,
    /// `/proc/pressure/memory` `full total` (microseconds since the guest booted).
    #[serde(default)]
    pub psi_full_total_us: Option<u64>,
}

impl PressureSnapshot {
    /// The snapshot with every figure [`crate::validate()`] would refuse made missing
    /// (not finite, negative where it cannot be, beyond [`crate::MAX_EVENTS_PER_S`],
    /// [`crate::MAX_KIB_PER_S`], 100 % or [`crate::MAX_PSI_TOTAL_US`]): what an agent
    /// puts on the wire, so one hostile guest figure never gets a whole event refused.
    pub fn bounded(&self) -> Self {
        let within = |value: Option<f64>, min: f64, max: f64| {
            value.filter(|v| v.is_finite() && *v >= min && *v <= max)
        };
        let count = |value| within(value, 0.0, crate::MAX_EVENTS_PER_S);
        let kib = |value| within(value, 0.0, crate::MAX_KIB_PER_S);
        let total = |value: Option<u64>| value.filter(|v| *v <= crate::MAX_PSI_TOTAL_US);
        Self {
            alloc_stalls_per_s: count(self.alloc_stalls_per_s),
            direct_scan_kib_per_s: kib(self.direct_scan_kib_per_s),
            direct_reclaim_kib_per_s: kib(self.direct_reclaim_kib_per_s),
            async_scan_kib_per_s: kib(self.async_scan_kib_per_s),
            async_reclaim_kib_per_s: kib(self.async_reclaim_kib_per_s),
            major_faults_per_s: count(self.major_faults_per_s),
            swap_in_kib_per_s: kib(self.swap_in_kib_per_s),
            available_slope_kib_per_s: within(
                self.available_slope_kib_per_s,
                -crate::MAX_KIB_PER_S,
                crate::MAX_KIB_PER_S,
            ),
            psi_some_avg10: within(self.psi_some_avg10, 0.0, 100.0),
            psi_full_avg10: within(self.psi_full_avg10, 0.0, 100.0),
            psi_some_total_us: total(self.psi_some_total_us),
            psi_full_total_us: total(self.psi_full_total_us),
        }
    }

    /// The rates and PSI percentages (the totals aside), in field order: alloc stalls,
    /// direct scan, direct reclaim, async scan, async reclaim, major faults, swap-in,
    /// MemAvailable slope, PSI some avg10, PSI full avg10.
    pub fn rates(&self) -> [Option<f64>; 10] {
        let snapshot = self;
        [
            snapshot.alloc_stalls_per_s,
            snapshot.direct_scan_kib_per_s,
            snapshot.direct_reclaim_kib_per_s,
            snapshot.async_scan_kib_per_s,
            snapshot.async_reclaim_kib_per_s,
            snapshot.major_faults_per_s,
            snapshot.swap_in_kib_per_s,
            snapshot.available_slope_kib_per_s,
            snapshot.psi_some_avg10,
            snapshot.psi_full_avg10,
        ]
    }

    /// The sources that gave at least one figure of this snapshot.
    pub fn sources(&self) -> Vec<SignalSource> {
        let counters = [
            self.alloc_stalls_per_s,
            self.direct_scan_kib_per_s,
            self.direct_reclaim_kib_per_s,
            self.async_scan_kib_per_s,
            self.async_reclaim_kib_per_s,
        ];
        let stats = [
            self.major_faults_per_s,
            self.swap_in_kib_per_s,
            self.available_slope_kib_per_s,
        ];
        let psi = [self.psi_some_avg10, self.psi_full_avg10];
        let mut sources = Vec::new();
        if counters.iter().any(Option::is_some) {
            sources.push(SignalSource::BalloonCounters);
        }
        if stats.iter().any(Option::is_some) {
            sources.push(SignalSource::BalloonStats);
        }
        if psi.iter().any(Option::is_some)
            || self.psi_some_total_us.is_some()
            || self.psi_full_total_us.is_some()
        {
            sources.push(SignalSource::GuestPsi);
        }
        sources
    }
}

/// One VM's pressure over a rollup period ([`crate::BalloonRollup::pressure`]); absent
/// when the VM had no pressure signal in the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PressureRollup {
    /// Where the period's signals came from.
    #[serde(default)]
    pub sources: Vec<SignalSource>,
    /// Each rate's highest value in the period; for the MemAvailable slope its lowest
    /// (steepest fall); for PSI totals the last.
    #[serde(default)]
    pub peak: PressureSnapshot,
    /// The highest risk assessed in the period.
    #[serde(default = "risk_ok")]
    pub risk: RiskLevel,
}

fn risk_ok() -> RiskLevel {
    RiskLevel::Ok
}

/// A pressure episode's start, a new peak, or its end: from risk leaving `ok` until it
/// is back to `ok`. `vm` with `started_at_ms` names the episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PressureEpisode {
    pub vm: VmRef,
    pub phase: EpisodePhase,
    /// When risk left `ok` (Unix ms, host clock).
    pub started_at_ms: i64,
    /// This phase's moment: the start, the poll of the new peak, the first calm poll.
    pub at_ms: i64,
    /// The risk at this phase; for `end`, the episode's worst.
    pub level: RiskLevel,
    /// The signals that drove the assessment, strongest first.
    #[serde(default)]
    pub drivers: Vec<PressureSignal>,
    /// Predicted seconds until MemAvailable runs out at the current slope; None when it
    /// is not falling or cannot be told.
    #[serde(default)]
    pub exhaustion_secs: Option<u64>,
    /// The signals at this phase.
    #[serde(default)]
    pub signals: PressureSnapshot,
    /// The balloon (host view) at this phase.
    #[serde(default)]
    pub actual_kib: Option<u64>,
    #[serde(default)]
    pub maximum_kib: Option<u64>,
    /// The lowest the host's balloon policy may take the VM to (libvirt currentMemory,
    /// Proxmox `balloon:`).
    #[serde(default)]
    pub balloon_floor_kib: Option<u64>,
    /// The balloon sat at its floor (within one auto-ballooning step) at this phase.
    #[serde(default)]
    pub at_balloon_floor: bool,
    /// The memory the guest lacked, estimated (KiB): what, given back, would have ended
    /// the pressure.
    #[serde(default)]
    pub deficit_kib: Option<u64>,
}

/// One decision of the agent's guard (schema version 2): what it did, or in `observe`
/// what it would have done, with the sizes before and after and the signals that
/// triggered it. Every decision that changes or would change a balloon is one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardAction {
    pub vm: VmRef,
    pub mode: GuardMode,
    pub outcome: GuardOutcome,
    /// When it was decided (Unix ms, host clock).
    pub at_ms: i64,
    /// The pressure episode it answered (its `started_at_ms`), when one was under way.
    #[serde(default)]
    pub episode_started_at_ms: Option<i64>,
    /// The risk that triggered it.
    pub level: RiskLevel,
    #[serde(default)]
    pub drivers: Vec<PressureSignal>,
    #[serde(default)]
    pub signals: PressureSnapshot,
    #[serde(default)]
    pub exhaustion_secs: Option<u64>,
    #[serde(default)]
    pub deficit_kib: Option<u64>,
    /// The balloon's `actual` before the decision.
    #[serde(default)]
    pub actual_before_kib: Option<u64>,
    /// The target set (`deflated`) or that would have been set (`would_deflate`).
    #[serde(default)]
    pub target_kib: Option<u64>,
    #[serde(default)]
    pub maximum_kib: Option<u64>,
    /// The host's MemAvailable when it decided, and the reserve it keeps.
    #[serde(default)]
    pub host_available_kib: Option<u64>,
    #[serde(default)]
    pub host_reserve_kib: Option<u64>,
    /// The VM's balloon floor before and after (Proxmox `balloon:`; after is the one
    /// raised, or for `overridden_by_host` the one that would hold).
    #[serde(default)]
    pub floor_before_kib: Option<u64>,
    #[serde(default)]
    pub floor_after_kib: Option<u64>,
    /// A short explanation (the hypervisor's error for `failed`); agent-written.
    #[serde(default)]
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, Envelope, Event, NearMiss, NearMissKind};

    fn envelope(event: Event) -> Envelope {
        Envelope {
            key: "k".into(),
            captured_at_ms: 1_800_000_000_000,
            event,
        }
    }

    #[test]
    fn a_batch_needs_version_2_only_when_it_carries_a_pressure_episode() {
        let near_miss = Event::NearMiss(NearMiss {
            vm: VmRef::default(),
            kind: NearMissKind::UsableLow,
            detail: String::new(),
            actual_kib: None,
            usable_kib: None,
        });
        let episode = Event::Pressure(Box::new(PressureEpisode {
            vm: VmRef::default(),
            phase: EpisodePhase::Start,
            started_at_ms: 1,
            at_ms: 1,
            level: RiskLevel::Elevated,
            drivers: vec![PressureSignal::AllocStalls],
            exhaustion_secs: None,
            signals: PressureSnapshot::default(),
            actual_kib: None,
            maximum_kib: None,
            balloon_floor_kib: None,
            at_balloon_floor: false,
            deficit_kib: None,
        }));
        assert_eq!(Batch::schema_version_for(&[]), 1);
        assert_eq!(Batch::schema_version_for(&[envelope(near_miss.clone())]), 1);
        let both = [envelope(near_miss), envelope(episode)];
        assert_eq!(Batch::schema_version_for(&both), 2);
        let json = serde_json::to_value(&both[1]).expect("serialise");
        assert_eq!(json["type"], "pressure");
        assert_eq!(json["level"], "elevated");
        assert_eq!(json["drivers"][0], "alloc_stalls");
    }

    #[test]
    fn a_snapshot_names_the_sources_that_gave_a_figure() {
        assert!(PressureSnapshot::default().sources().is_empty());
        let snapshot = PressureSnapshot {
            alloc_stalls_per_s: Some(0.0),
            psi_full_total_us: Some(5),
            ..PressureSnapshot::default()
        };
        assert_eq!(
            snapshot.sources(),
            [SignalSource::BalloonCounters, SignalSource::GuestPsi]
        );
    }
}
