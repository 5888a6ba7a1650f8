//! Per-VM configuration audit: what in a VM's set-up makes guest OOMs likelier or
//! invisible. Pure: domain configuration and observations in, findings out. The
//! balloon-policy report turns these into the exact setting to change.

use crate::hypervisor::DomainConfig;

/// One finding about one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Finding {
    /// No virtio balloon device: no guest memory stats at all.
    NoBalloon,
    /// The balloon has no stats period (libvirt's default): the guest sends no stats.
    StatsPeriodOff,
    /// The balloon takes memory without deflate-on-oom: an inflated balloon can OOM the guest.
    DeflateOnOomOff,
    /// No guest agent channel: the guest kernel log cannot be fetched.
    NoGuestAgentChannel,
    /// The channel exists but the agent inside never answered.
    GuestAgentNotAnswering,
    /// The serial console is not logged to a file: OOM reports printed there are lost.
    NoSerialLog,
    /// The guest console hides most of an OOM report (`quiet` / loglevel below 7), seen
    /// from its command line or from partial reports.
    ConsoleHidesOomReports,
    /// The guest's stats stopped updating while it runs.
    StaleStats,
}

impl Finding {
    /// A stable snake_case name (metrics labels, wire format).
    pub fn as_str(self) -> &'static str {
        match self {
            Finding::NoBalloon => "no_balloon",
            Finding::StatsPeriodOff => "stats_period_off",
            Finding::DeflateOnOomOff => "deflate_on_oom_off",
            Finding::NoGuestAgentChannel => "no_guest_agent_channel",
            Finding::GuestAgentNotAnswering => "guest_agent_not_answering",
            Finding::NoSerialLog => "no_serial_log",
            Finding::ConsoleHidesOomReports => "console_hides_oom_reports",
            Finding::StaleStats => "stale_stats",
        }
    }
}

/// What the agent saw of the VM at run time, beyond its configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    pub agent_answered: Option<bool>,
    pub partial_reports_seen: bool,
    pub stats_stale: bool,
}

/// The findings for one VM, sorted.
pub fn audit(config: &DomainConfig, observed: Observed) -> Vec<Finding> {
    let mut findings = Vec::new();
    if !config.balloon_present {
        findings.push(Finding::NoBalloon);
    } else {
        if config.stats_period_secs.unwrap_or(0) == 0 {
            findings.push(Finding::StatsPeriodOff);
        }
        if config.deflate_on_oom != Some(true) {
            findings.push(Finding::DeflateOnOomOff);
        }
    }
    if !config.guest_agent_channel {
        findings.push(Finding::NoGuestAgentChannel);
    } else if observed.agent_answered == Some(false) {
        findings.push(Finding::GuestAgentNotAnswering);
    }
    if config.serial_log_path.is_none() {
        findings.push(Finding::NoSerialLog);
    }
    let cmdline_hides = config
        .kernel_cmdline
        .as_deref()
        .is_some_and(cmdline_hides_oom_reports);
    if cmdline_hides || observed.partial_reports_seen {
        findings.push(Finding::ConsoleHidesOomReports);
    }
    if observed.stats_stale {
        findings.push(Finding::StaleStats);
    }
    findings.sort();
    findings
}

/// The findings of a VM known only from its configuration and stats freshness, as the
/// stable names the status file and the inventory event carry.
pub fn finding_names(config: &DomainConfig, stats_stale: bool) -> Vec<String> {
    let observed = Observed {
        stats_stale,
        ..Observed::default()
    };
    observed_finding_names(config, observed)
}

/// The findings of a VM with what the agent observed at run time (the guest agent's
/// answers), as stable names.
pub fn observed_finding_names(config: &DomainConfig, observed: Observed) -> Vec<String> {
    audit(config, observed)
        .into_iter()
        .map(|finding| finding.as_str().to_string())
        .collect()
}

/// `quiet` sets the console loglevel to 4; the report's header and Mem-Info are
/// KERN_WARNING (4) and the task list KERN_INFO (6): a loglevel below 7 hides them.
pub fn cmdline_hides_oom_reports(cmdline: &str) -> bool {
    let mut hides = false;
    for word in cmdline.split_whitespace() {
        if word == "quiet" {
            hides = true;
        } else if let Some(level) = word.strip_prefix("loglevel=") {
            hides = level.parse::<u32>().map_or(hides, |level| level < 7);
        }
    }
    hides
}

#[cfg(test)]
mod tests {
    use super::*;

    fn well_configured() -> DomainConfig {
        DomainConfig {
            balloon_present: true,
            stats_period_secs: Some(2),
            deflate_on_oom: Some(true),
            serial_log_path: Some("/var/log/libvirt/qemu/vm.serial.log".into()),
            guest_agent_channel: true,
            kernel_cmdline: Some("console=ttyS0".into()),
            ..DomainConfig::default()
        }
    }

    #[test]
    fn a_well_configured_vm_has_no_findings() {
        assert!(audit(&well_configured(), Observed::default()).is_empty());
    }

    #[test]
    fn libvirt_defaults_are_flagged() {
        let config = DomainConfig {
            balloon_present: true,
            ..DomainConfig::default()
        };
        assert_eq!(
            audit(&config, Observed::default()),
            [
                Finding::StatsPeriodOff,
                Finding::DeflateOnOomOff,
                Finding::NoGuestAgentChannel,
                Finding::NoSerialLog
            ]
        );
    }

    #[test]
    fn quiet_consoles_and_silent_agents_are_flagged() {
        let mut config = well_configured();
        config.kernel_cmdline = Some("console=ttyS0 quiet".into());
        let observed = Observed {
            agent_answered: Some(false),
            ..Observed::default()
        };
        assert_eq!(
            audit(&config, observed),
            [
                Finding::GuestAgentNotAnswering,
                Finding::ConsoleHidesOomReports
            ]
        );
    }

    #[test]
    fn loglevel_decides_the_console() {
        assert!(cmdline_hides_oom_reports("quiet"));
        assert!(cmdline_hides_oom_reports("loglevel=4"));
        assert!(!cmdline_hides_oom_reports("quiet loglevel=7"));
        assert!(!cmdline_hides_oom_reports("console=ttyS0 loglevel=8"));
    }
}
