//! Per-VM configuration audit: what in a VM's set-up makes guest OOMs likelier or
//! invisible. Pure: domain configuration and observations in, findings out. The
//! balloon-policy report turns these into the exact setting to change.

use crate::fleet::VmState;
use crate::hypervisor::DomainConfig;

/// One finding about one VM: the names are `ballast_model`'s, the one list of them.
pub use ballast_model::AuditFinding as Finding;

/// What the agent saw of the VM at run time, beyond its configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    pub agent_answered: Option<bool>,
    pub partial_reports_seen: bool,
    /// The guest's stats came, then stopped (`VmState::stale`).
    pub stats_stale: bool,
    /// The balloon answers but the guest never sent stats (`VmState::stats_unreported`).
    pub stats_unreported: bool,
    /// A virtio-mem device plugged memory the guest did not online
    /// ([`crate::elastic::onlined`]).
    pub virtio_mem_not_onlined: bool,
}

impl Observed {
    /// The stats path as the fleet saw it over the polls.
    pub fn from_fleet(vm: &VmState) -> Self {
        Self {
            stats_stale: vm.stale,
            stats_unreported: vm.stats_unreported,
            virtio_mem_not_onlined: vm
                .elastic
                .as_ref()
                .is_some_and(|elastic| elastic.not_onlined_kib().is_some()),
            ..Self::default()
        }
    }
}

/// The findings for one VM, sorted.
pub fn audit(config: &DomainConfig, observed: Observed) -> Vec<Finding> {
    let mut findings = Vec::new();
    if config.balloon_present {
        findings.extend(stats_path(config, observed));
        if config.deflate_on_oom != Some(true) {
            findings.push(Finding::DeflateOnOomOff);
        }
        findings.push(free_page_reporting(config));
    } else {
        findings.push(Finding::NoBalloon);
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
    if observed.virtio_mem_not_onlined {
        findings.push(Finding::VirtioMemNotOnlined);
    }
    findings.sort();
    findings
}

/// The stats path of a VM with a balloon, at most one finding: nobody asked for stats
/// (period 0: whatever the guest would answer is not known), the guest never sent any
/// while asked (no driver, or one without stats), or they came and stopped.
fn stats_path(config: &DomainConfig, observed: Observed) -> Option<Finding> {
    if config.stats_period_secs.unwrap_or(0) == 0 {
        Some(Finding::StatsPeriodOff)
    } else if observed.stats_unreported {
        Some(Finding::BalloonDriverSilent)
    } else if observed.stats_stale {
        Some(Finding::StaleStats)
    } else {
        None
    }
}

/// Free page reporting of a VM with a balloon, as its configuration or the live device
/// says (libvirt `<memballoon freePageReporting=..>`, QEMU's `free-page-reporting`).
fn free_page_reporting(config: &DomainConfig) -> Finding {
    match config.free_page_reporting {
        Some(true) => Finding::FreePageReportingOn,
        Some(false) => Finding::FreePageReportingOff,
        None => Finding::FreePageReportingUnknown,
    }
}

/// The findings of a VM, as the stable names the status file and the inventory event
/// carry.
pub fn finding_names(config: &DomainConfig, observed: Observed) -> Vec<String> {
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
            free_page_reporting: Some(true),
            serial_log_path: Some("/var/log/libvirt/qemu/vm.serial.log".into()),
            guest_agent_channel: true,
            kernel_cmdline: Some("console=ttyS0".into()),
            ..DomainConfig::default()
        }
    }

    #[test]
    fn a_well_configured_vm_has_only_the_free_page_reporting_fact() {
        assert_eq!(
            audit(&well_configured(), Observed::default()),
            [Finding::FreePageReportingOn]
        );
    }

    #[test]
    fn libvirt_defaults_are_flagged() {
        let config = DomainConfig {
            balloon_present: true,
            free_page_reporting: Some(false),
            ..DomainConfig::default()
        };
        assert_eq!(
            audit(&config, Observed::default()),
            [
                Finding::StatsPeriodOff,
                Finding::DeflateOnOomOff,
                Finding::NoGuestAgentChannel,
                Finding::NoSerialLog,
                Finding::FreePageReportingOff,
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
                Finding::ConsoleHidesOomReports,
                Finding::FreePageReportingOn,
            ]
        );
    }

    /// The three ways the stats path fails are three findings, at most one at a time:
    /// a stats period of 0 explains silence or stillness, so it alone is named.
    #[test]
    fn the_stats_path_is_off_silent_or_stopped() {
        let stats = |period: Option<u32>, observed: Observed| {
            let config = DomainConfig {
                stats_period_secs: period,
                ..well_configured()
            };
            audit(&config, observed)
                .into_iter()
                .filter(|finding| {
                    matches!(
                        finding,
                        Finding::StatsPeriodOff
                            | Finding::BalloonDriverSilent
                            | Finding::StaleStats
                    )
                })
                .collect::<Vec<_>>()
        };
        let silent = Observed {
            stats_unreported: true,
            ..Observed::default()
        };
        let stopped = Observed {
            stats_stale: true,
            ..Observed::default()
        };
        assert!(stats(Some(2), Observed::default()).is_empty());
        assert_eq!(stats(Some(2), silent), [Finding::BalloonDriverSilent]);
        assert_eq!(stats(Some(2), stopped), [Finding::StaleStats]);
        assert_eq!(stats(Some(0), silent), [Finding::StatsPeriodOff]);
        assert_eq!(stats(None, stopped), [Finding::StatsPeriodOff]);
        let no_balloon = DomainConfig {
            balloon_present: false,
            ..well_configured()
        };
        assert_eq!(
            audit(&no_balloon, silent),
            [Finding::NoBalloon],
            "no balloon: no stats path, no free page reporting to speak of"
        );
    }

    #[test]
    fn free_page_reporting_is_on_off_or_unknown() {
        let fpr = |value: Option<bool>| {
            let config = DomainConfig {
                free_page_reporting: value,
                ..well_configured()
            };
            audit(&config, Observed::default())
        };
        assert_eq!(fpr(Some(true)), [Finding::FreePageReportingOn]);
        assert_eq!(fpr(Some(false)), [Finding::FreePageReportingOff]);
        assert_eq!(fpr(None), [Finding::FreePageReportingUnknown]);
    }

    /// Domain XML as libvirt writes it, with and without the balloon's attribute.
    #[cfg(feature = "libvirt")]
    #[test]
    fn libvirt_domain_xml_with_and_without_free_page_reporting() {
        use crate::hypervisor::libvirt::{parse_domain_config, xml_fixture as fixture};
        let names = |xml: &str| {
            let config = parse_domain_config(xml).expect("parse");
            finding_names(&config, Observed::default())
        };
        let with = names(&fixture("file-serial.xml"));
        assert!(
            with.contains(&"free_page_reporting_on".to_string()),
            "{with:?}"
        );
        let without = names(&fixture("harness-live.xml"));
        assert!(
            without.contains(&"free_page_reporting_off".to_string()),
            "{without:?}"
        );
        let balloon = |attribute: &str| {
            names(&format!(
                "<domain><devices><memballoon model='virtio' {attribute}><stats period='5'/></memballoon></devices></domain>"
            ))
        };
        assert!(balloon("freePageReporting='off'").contains(&"free_page_reporting_off".to_string()));
        assert!(balloon("freePageReporting='maybe'")
            .contains(&"free_page_reporting_unknown".to_string()));
        assert!(!balloon("")
            .iter()
            .any(|name| name == "free_page_reporting_on"));
    }

    #[test]
    fn plugged_memory_not_onlined_is_a_finding_of_its_own() {
        let observed = Observed {
            virtio_mem_not_onlined: true,
            ..Observed::default()
        };
        assert_eq!(
            finding_names(&well_configured(), observed),
            ["free_page_reporting_on", "virtio_mem_not_onlined"]
        );
        assert!(!finding_names(&well_configured(), Observed::default())
            .contains(&"virtio_mem_not_onlined".to_string()));
    }

    #[test]
    fn loglevel_decides_the_console() {
        assert!(cmdline_hides_oom_reports("quiet"));
        assert!(cmdline_hides_oom_reports("loglevel=4"));
        assert!(!cmdline_hides_oom_reports("quiet loglevel=7"));
        assert!(!cmdline_hides_oom_reports("console=ttyS0 loglevel=8"));
    }
}
