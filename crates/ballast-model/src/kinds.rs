//! The closed vocabularies of the wire and the collector: verdicts, VM states, report
//! kinds, near-miss kinds. Each is serialised exactly as the string it always was, and
//! has an `Unknown` fallback (`#[serde(other)]`): a value a newer peer sends decodes as
//! `Unknown` instead of failing the whole message. [`crate::validate()`] still accepts
//! only the names listed in `NAMES`.

use serde::{Deserialize, Serialize};

/// Defines one vocabulary: its variants and their wire names, `Unknown` last.
/// `unknown_is_a_value` says that `unknown` is itself one of the accepted names.
macro_rules! vocabulary {
    (
        $(#[$doc:meta])*
        $name:ident {
            $($(#[$variant_doc:meta])* $variant:ident = $text:literal,)+
        }
        unknown_is_a_value = $unknown_valid:literal
    ) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        pub enum $name {
            $($(#[$variant_doc])* #[serde(rename = $text)] $variant,)+
            /// `unknown`, or a name this version does not know (a newer peer's).
            #[serde(other, rename = "unknown")]
            Unknown,
        }

        impl $name {
            /// Every variant but the fallback, in order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];
            /// The names [`crate::validate()`] accepts.
            pub const NAMES: &'static [&'static str] = if $unknown_valid {
                &[$($text,)+ "unknown"]
            } else {
                &[$($text),+]
            };

            /// The wire name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Unknown => "unknown",
                }
            }

            /// The variant named `text`; `Unknown` for any other text.
            pub fn parse(text: &str) -> Self {
                Self::KNOWN
                    .iter()
                    .copied()
                    .find(|known| known.as_str() == text)
                    .unwrap_or($name::Unknown)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// The collector's verdict on one OOM: did the balloon cause it?
    CorrelationVerdict {
        /// The balloon held enough memory that, deflated, the guest would have survived.
        Balloon = "balloon",
        /// The balloon held memory but is not the whole story.
        BalloonContributed = "balloon_contributed",
        /// The balloon held nothing worth naming at the OOM.
        NotBalloon = "not_balloon",
    }
    unknown_is_a_value = true
}

impl CorrelationVerdict {
    /// `balloon` or `balloon_contributed`: the balloon had a part in the OOM.
    pub fn is_balloon(self) -> bool {
        matches!(
            self,
            CorrelationVerdict::Balloon | CorrelationVerdict::BalloonContributed
        )
    }
}

vocabulary! {
    /// The report analysis' verdict ([`crate::OomAnalysis::verdict`]).
    ReportVerdict {
        Balloon = "balloon",
        KernelUnaccounted = "kernel_unaccounted",
        MemcgLimit = "memcg_limit",
        Fragmentation = "fragmentation",
        LowmemZone = "lowmem_zone",
        Overcommit = "overcommit",
        NoKillable = "no_killable",
    }
    unknown_is_a_value = true
}

vocabulary! {
    /// A VM's state in an inventory ([`crate::VmInventory::state`]).
    VmState {
        Running = "running",
        Paused = "paused",
        ShutOff = "shut_off",
        Crashed = "crashed",
        Other = "other",
    }
    unknown_is_a_value = false
}

vocabulary! {
    /// What kind of OOM report the kernel printed ([`crate::ParsedReport::kind`]).
    ReportKind {
        Global = "global",
        Memcg = "memcg",
        Cpuset = "cpuset",
        Mempolicy = "mempolicy",
        Panic = "panic",
    }
    unknown_is_a_value = false
}

vocabulary! {
    /// Signs of memory distress without a kill ([`crate::NearMiss::kind`]).
    NearMissKind {
        /// The balloon stalled.
        OutOfPuff = "out_of_puff",
        /// deflate-on-oom gave memory back.
        SilentDeflate = "silent_deflate",
        /// MemAvailable under the threshold while inflated.
        UsableLow = "usable_low",
    }
    unknown_is_a_value = false
}

vocabulary! {
    /// How hard a VM's memory is pressed ([`crate::PressureEpisode::level`]).
    RiskLevel {
        /// No sign of distress, or signs too weak to name.
        Ok = "ok",
        /// The guest reclaims or stalls, or MemAvailable falls towards exhaustion.
        Elevated = "elevated",
        /// Exhaustion is near (or the guest stalls hard): an OOM is likely soon.
        Critical = "critical",
    }
    unknown_is_a_value = false
}

vocabulary! {
    /// Where a VM's pressure signals come from ([`crate::PressureRollup::sources`]); a VM
    /// with none of them has no pressure signals, which is not the same as no pressure.
    SignalSource {
        /// The six Linux >= 6.12 balloon counters (stalls, scans, reclaims) from QEMU's
        /// `guest-stats` (QEMU >= 9.2; on libvirt only with `libvirt.read_qemu_counters`).
        BalloonCounters = "balloon_counters",
        /// Major faults, swap-in and MemAvailable from the balloon stats every backend reads.
        BalloonStats = "balloon_stats",
        /// The guest's `/proc/pressure/memory`, read through the guest agent's file API.
        GuestPsi = "guest_psi",
    }
    unknown_is_a_value = false
}

vocabulary! {
    /// One signal that drove a risk assessment ([`crate::PressureEpisode::drivers`]).
    PressureSignal {
        AllocStalls = "alloc_stalls",
        DirectScan = "direct_scan",
        DirectReclaim = "direct_reclaim",
        MajorFaults = "major_faults",
        SwapIn = "swap_in",
        /// MemAvailable falling towards zero.
        AvailableFalling = "available_falling",
        /// MemAvailable low against the guest's memory.
        AvailableLow = "available_low",
        PsiSome = "psi_some",
        PsiFull = "psi_full",
    }
    unknown_is_a_value = false
}

vocabulary! {
    /// Which moment of a pressure episode an event reports ([`crate::PressureEpisode::phase`]).
    EpisodePhase {
        /// Risk left `ok`.
        Start = "start",
        /// Risk reached a new worst level (or exhaustion came nearer) during the episode.
        Peak = "peak",
        /// Risk went back to `ok` and stayed (or the VM went away).
        End = "end",
    }
    unknown_is_a_value = false
}

vocabulary! {
    /// What a virtio-mem device event reports ([`crate::MemoryDeviceChange::phase`]).
    ResizePhase {
        /// The host changed the device's `requested-size`.
        Requested = "requested",
        /// The guest's plugged size moved.
        Resized = "resized",
        /// `plugged` has differed from `requested` for longer than the agent's
        /// `elastic.converge_timeout_secs`: the guest could not unplug, or did not online.
        Stuck = "stuck",
        /// A request that was stuck has been met.
        Converged = "converged",
    }
    unknown_is_a_value = false
}

vocabulary! {
    /// How a host takes memory from a guest (the collector's `host_took.mechanisms`).
    ElasticMechanism {
        /// The virtio balloon held memory (maximum - actual).
        Balloon = "balloon",
        /// virtio-mem blocks were unplugged, or never plugged up to the device's size.
        VirtioMem = "virtio_mem",
    }
    unknown_is_a_value = false
}

vocabulary! {
    /// The correlation's verdict over every way the host takes memory (the collector's
    /// `host_took.verdict`): [`CorrelationVerdict`] generalised beyond the balloon.
    HostTookVerdict {
        /// The host held enough memory that, given back, the guest would have survived.
        HostTookMemory = "host_took_memory",
        /// The host held memory but is not the whole story.
        HostContributed = "host_contributed",
        /// The host held nothing worth naming at the OOM.
        NotHost = "not_host",
    }
    unknown_is_a_value = true
}

vocabulary! {
    /// One finding of the agent's per-VM configuration audit ([`crate::VmInventory::findings`],
    /// sent as these names). The one list of the names: the agent's audit makes them, the
    /// collector's VM page and balloon-policy report read them (docs/stats-path.md says
    /// what each means for the figures shown).
    AuditFinding {
        /// No virtio balloon device: no guest memory statistics at all.
        NoBalloon = "no_balloon",
        /// The balloon has a stats period of 0 (libvirt's default): nobody asked the
        /// guest for stats, so whether its driver would answer is not known.
        StatsPeriodOff = "stats_period_off",
        /// The balloon takes memory without deflate-on-oom.
        DeflateOnOomOff = "deflate_on_oom_off",
        /// No guest agent channel: the guest kernel log cannot be fetched.
        NoGuestAgentChannel = "no_guest_agent_channel",
        /// The channel exists but the agent inside never answered.
        GuestAgentNotAnswering = "guest_agent_not_answering",
        /// The serial console is not logged to a file.
        NoSerialLog = "no_serial_log",
        /// The guest console hides most of an OOM report (`quiet`, loglevel below 7).
        ConsoleHidesOomReports = "console_hides_oom_reports",
        /// The guest's stats came, then stopped while the VM runs (driver hung, guest
        /// frozen): the last figures are old.
        StaleStats = "stale_stats",
        /// Stats were asked for, the VM runs, and the guest never sent any (`last-update`
        /// never set): no balloon driver, or one without stats (Windows without the
        /// balloon service, FreeBSD, a Linux guest without `virtio_balloon`).
        BalloonDriverSilent = "balloon_driver_silent",
        /// The balloon device has free page reporting: the guest hands free pages back
        /// to the host on its own.
        FreePageReportingOn = "free_page_reporting_on",
        /// The balloon device has no free page reporting: memory the guest freed stays
        /// with QEMU until the balloon takes it.
        FreePageReportingOff = "free_page_reporting_off",
        /// The balloon device's free page reporting could not be read.
        FreePageReportingUnknown = "free_page_reporting_unknown",
        /// A virtio-mem device plugged memory that the guest's MemTotal did not take
        /// in within `elastic.converge_timeout_secs`: the guest did not online it
        /// (docs/elastic.md, "Plugged but not onlined").
        VirtioMemNotOnlined = "virtio_mem_not_onlined",
    }
    unknown_is_a_value = false
}

/// A report whose kind was not read (what a default [`crate::ParsedReport`] holds).
impl Default for ReportKind {
    fn default() -> Self {
        ReportKind::Unknown
    }
}

/// An analysis that could not say (what a default [`crate::OomAnalysis`] holds).
impl Default for ReportVerdict {
    fn default() -> Self {
        ReportVerdict::Unknown
    }
}

vocabulary! {
    /// What the agent's guard may do (`guard.mode`; [`crate::GuardAction::mode`]).
    GuardMode {
        /// Never acts, reports nothing.
        Off = "off",
        /// Reports what it would have done, changes nothing (the default).
        Observe = "observe",
        /// Gives balloon memory back to a guest at critical risk.
        Act = "act",
    }
    unknown_is_a_value = false
}

vocabulary! {
    /// What one guard decision came to ([`crate::GuardAction::outcome`]).
    GuardOutcome {
        /// `act`: the balloon's target was raised (memory given back to the guest).
        Deflated = "deflated",
        /// `observe`: the deflation `act` would have made.
        WouldDeflate = "would_deflate",
        /// The host's balloon policy took the memory back (Proxmox's pvestatd re-sets
        /// targets every cycle); the VM's persistent floor was raised, as the operator
        /// allowed.
        FloorRaised = "floor_raised",
        /// The host's balloon policy took the memory back and the guard may not raise
        /// the floor: `floor_after_kib` is the floor that would hold.
        OverriddenByHost = "overridden_by_host",
        /// The host has nothing to give (its MemAvailable minus the reserve).
        HostHasNothing = "host_has_nothing",
        /// The guest's need exceeds the VM's maximum: no deflation ends it.
        BeyondMaximum = "beyond_maximum",
        /// A step was due but the per-VM or per-host rate limit held it back.
        RateLimited = "rate_limited",
        /// The hypervisor refused or failed the change (`detail` says why).
        Failed = "failed",
    }
    unknown_is_a_value = false
}

impl crate::OomKind {
    /// Every kind but the fallback, in order.
    pub const ALL: [crate::OomKind; 3] = [
        crate::OomKind::Guest,
        crate::OomKind::VmCgroup,
        crate::OomKind::Host,
    ];
    /// Their wire names, in the same order.
    pub const NAMES: [&'static str; 3] = ["guest", "vm_cgroup", "host"];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            crate::OomKind::Guest => "guest",
            crate::OomKind::VmCgroup => "vm_cgroup",
            crate::OomKind::Host => "host",
            crate::OomKind::Unknown => "unknown",
        }
    }

    /// The kind named `text`; `Unknown` for any other text.
    pub fn parse(text: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|known| known.as_str() == text)
            .unwrap_or(crate::OomKind::Unknown)
    }
}

impl std::fmt::Display for crate::OomKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serialises each variant as its name, decodes it back, and decodes an unheard-of
    /// name as `Unknown`.
    fn round_trips<T>(known: &[T], names: &[&str], as_str: fn(T) -> &'static str)
    where
        T: Copy + PartialEq + std::fmt::Debug + Serialize + for<'de> Deserialize<'de>,
    {
        for &variant in known {
            let json = serde_json::to_string(&variant).expect("serialise");
            assert_eq!(json, format!("\"{}\"", as_str(variant)));
            assert!(names.contains(&as_str(variant)), "{variant:?}");
            let back: T = serde_json::from_str(&json).expect("decode");
            assert_eq!(back, variant);
        }
        let future: T = serde_json::from_str("\"added_next_year\"").expect("fallback");
        assert_eq!(as_str(future), "unknown");
    }

    #[test]
    fn every_vocabulary_is_its_old_strings_with_an_unknown_fallback() {
        round_trips(
            CorrelationVerdict::KNOWN,
            CorrelationVerdict::NAMES,
            CorrelationVerdict::as_str,
        );
        round_trips(
            ReportVerdict::KNOWN,
            ReportVerdict::NAMES,
            ReportVerdict::as_str,
        );
        round_trips(VmState::KNOWN, VmState::NAMES, VmState::as_str);
        round_trips(ResizePhase::KNOWN, ResizePhase::NAMES, ResizePhase::as_str);
        round_trips(
            ElasticMechanism::KNOWN,
            ElasticMechanism::NAMES,
            ElasticMechanism::as_str,
        );
        round_trips(
            HostTookVerdict::KNOWN,
            HostTookVerdict::NAMES,
            HostTookVerdict::as_str,
        );
        round_trips(ReportKind::KNOWN, ReportKind::NAMES, ReportKind::as_str);
        round_trips(
            NearMissKind::KNOWN,
            NearMissKind::NAMES,
            NearMissKind::as_str,
        );
        assert_eq!(
            CorrelationVerdict::NAMES,
            ["balloon", "balloon_contributed", "not_balloon", "unknown"]
        );
        assert_eq!(
            ReportVerdict::NAMES,
            [
                "balloon",
                "kernel_unaccounted",
                "memcg_limit",
                "fragmentation",
                "lowmem_zone",
                "overcommit",
                "no_killable",
                "unknown"
            ]
        );
        assert_eq!(
            VmState::NAMES,
            ["running", "paused", "shut_off", "crashed", "other"]
        );
        assert_eq!(
            ReportKind::NAMES,
            ["global", "memcg", "cpuset", "mempolicy", "panic"]
        );
        assert_eq!(
            NearMissKind::NAMES,
            ["out_of_puff", "silent_deflate", "usable_low"]
        );
        assert_eq!(NearMissKind::parse("usable_low"), NearMissKind::UsableLow);
        assert_eq!(NearMissKind::UsableLow, "usable_low");
        assert!(CorrelationVerdict::Unknown != "not_balloon");
        assert_eq!(VmState::parse("unknown"), VmState::Unknown);
        assert!(CorrelationVerdict::parse("balloon_contributed").is_balloon());
        for (kind, name) in crate::OomKind::ALL.into_iter().zip(crate::OomKind::NAMES) {
            assert_eq!(kind.as_str(), name);
            let json = serde_json::to_string(&kind).expect("serialise");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        let future: crate::OomKind = serde_json::from_str("\"added_next_year\"").expect("fallback");
        assert_eq!(future, crate::OomKind::Unknown);
        assert_eq!(
            serde_json::to_string(&future).expect("serialise"),
            "\"unknown\""
        );
        assert!(!crate::OomKind::NAMES.contains(&future.as_str()));
    }

    /// The audit's names are the ones stored in every collector's `findings_json`: the
    /// old eight unchanged, the stats path, free page reporting and virtio-mem's
    /// onlining added.
    #[test]
    fn audit_findings_keep_their_stored_names() {
        round_trips(
            AuditFinding::KNOWN,
            AuditFinding::NAMES,
            AuditFinding::as_str,
        );
        assert_eq!(
            AuditFinding::NAMES,
            [
                "no_balloon",
                "stats_period_off",
                "deflate_on_oom_off",
                "no_guest_agent_channel",
                "guest_agent_not_answering",
                "no_serial_log",
                "console_hides_oom_reports",
                "stale_stats",
                "balloon_driver_silent",
                "free_page_reporting_on",
                "free_page_reporting_off",
                "free_page_reporting_unknown",
                "virtio_mem_not_onlined",
            ]
        );
        assert_eq!(
            AuditFinding::parse("balloon_driver_silent"),
            AuditFinding::BalloonDriverSilent
        );
    }
}
