//! The agent's audit findings (`ballast_model::AuditFinding`, stored as names in a VM's
//! `findings_json`) in words: what each says, and for the stats path and free page
//! reporting what it means for the figures ballast shows of the VM. Written once for
//! the VM page and the balloon-policy report's stats-path section (docs/stats-path.md).

use ballast_model::AuditFinding;

/// What the finding says, one sentence.
pub fn finding_text(finding: AuditFinding) -> &'static str {
    match finding {
        AuditFinding::NoBalloon => "No virtio balloon device: no guest memory statistics.",
        AuditFinding::StatsPeriodOff => {
            "The balloon has no stats period: nobody asks the guest for MemAvailable."
        }
        AuditFinding::DeflateOnOomOff => {
            "The balloon has no deflate-on-oom: an inflated balloon can OOM the guest."
        }
        AuditFinding::NoGuestAgentChannel => {
            "No guest agent channel: the guest kernel log cannot be fetched."
        }
        AuditFinding::GuestAgentNotAnswering => {
            "The guest agent channel exists but nothing answers."
        }
        AuditFinding::NoSerialLog => {
            "The serial console is not captured: OOM reports printed there are lost."
        }
        AuditFinding::ConsoleHidesOomReports => {
            "The guest console hides OOM report headers (quiet / loglevel below 7)."
        }
        AuditFinding::StaleStats => {
            "The guest's balloon statistics came, then stopped while it runs (driver hung, guest frozen or paused)."
        }
        AuditFinding::BalloonDriverSilent => {
            "The balloon driver is silent: stats are asked for, the VM runs, and the guest never sent any (no virtio_balloon, a Windows guest without the balloon service, FreeBSD)."
        }
        AuditFinding::FreePageReportingOn => {
            "Free page reporting is on: the guest hands free pages back to the host by itself."
        }
        AuditFinding::FreePageReportingOff => {
            "Free page reporting is off: memory the guest freed stays with QEMU until the balloon takes it."
        }
        AuditFinding::FreePageReportingUnknown => {
            "Whether the balloon reports free pages could not be read."
        }
        AuditFinding::VirtioMemNotOnlined => {
            "A virtio-mem device plugged memory the guest did not online: the host gave it, the guest cannot use it."
        }
        AuditFinding::Unknown => "Unrecognised finding.",
    }
}

/// What the finding means for the figures ballast shows of the VM; None for the
/// findings that change no figure.
pub fn figures_meaning(finding: AuditFinding) -> Option<&'static str> {
    Some(match finding {
        AuditFinding::NoBalloon => {
            "No guest figures and no balloon: the VM's memory is its configured size; an OOM is analysed from the guest's report alone."
        }
        AuditFinding::StatsPeriodOff => {
            "MemAvailable and MemTotal are unknown (not 0), so no working set, no recommended floor from it and no low-memory near misses; the balloon's actual is QEMU's figure and still true; whether the guest has a balloon driver at all is not known until a period is set."
        }
        AuditFinding::StaleStats => {
            "The guest figures shown are the last ones sent, not the current ones: MemAvailable, the working set and the pressure signals stop at that time; the balloon's actual is QEMU's and still true; an OOM's analysis uses its report, and the correlation's MemAvailable before it is old."
        }
        AuditFinding::BalloonDriverSilent => {
            "MemAvailable is unknown (never 0) and so are the working set and the pressure signals from balloon stats; the balloon's actual is QEMU's own figure and still true (without a driver nothing inflates, so a lower target is never met); an OOM's analysis cannot use guest figures, only the guest's report."
        }
        AuditFinding::FreePageReportingOn => {
            "QEMU's RSS for the VM can sit far below what the guest uses with the balloon at its maximum: pages the guest reported come back on touch, so they are never memory the host took; the correlation counts only the balloon and virtio-mem."
        }
        AuditFinding::FreePageReportingOff => {
            "The VM's host memory (QEMU's RSS) follows the guest's peak, not its use: the balloon is the only way the host gets memory back."
        }
        AuditFinding::FreePageReportingUnknown => {
            "Whether QEMU's RSS for the VM follows the guest's use or its peak is not known."
        }
        AuditFinding::VirtioMemNotOnlined => {
            "The virtio-mem plugged size overstates the guest's memory: MemTotal lacks the memory not onlined, and so would the guest in an OOM; the counterfactual's \"blocks back\" cannot help a guest that does not online them."
        }
        AuditFinding::DeflateOnOomOff
        | AuditFinding::NoGuestAgentChannel
        | AuditFinding::GuestAgentNotAnswering
        | AuditFinding::NoSerialLog
        | AuditFinding::ConsoleHidesOomReports
        | AuditFinding::Unknown => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_finding_has_words_and_each_stats_path_finding_a_meaning() {
        for finding in AuditFinding::KNOWN {
            assert_ne!(finding_text(*finding), finding_text(AuditFinding::Unknown));
        }
        for finding in [
            AuditFinding::StatsPeriodOff,
            AuditFinding::StaleStats,
            AuditFinding::BalloonDriverSilent,
            AuditFinding::FreePageReportingOn,
            AuditFinding::FreePageReportingOff,
            AuditFinding::FreePageReportingUnknown,
        ] {
            assert!(figures_meaning(finding).is_some(), "{finding}");
        }
        assert!(figures_meaning(AuditFinding::BalloonDriverSilent)
            .is_some_and(|words| words.contains("MemAvailable is unknown")));
        assert_eq!(figures_meaning(AuditFinding::NoSerialLog), None);
    }
}
