//! Fault-matrix support, pure: the OOM reports a test makes a guest kernel print, the
//! guest shell script that prints them through `/dev/kmsg`, and the count-in /
//! count-out comparison. No I/O here; the test file runs the processes.
//!
//! An injected report is the lab's real 6.1 report
//! (`crates/ballast-oom/tests/fixtures/oom/lab-debian12-6.1-balloon-200m-of-512m.serial.log`,
//! from the "invoked oom-killer" line through the kill line) with the killed task's pid
//! and comm replaced, so every report is distinct for the agent's dedupe (pid + the
//! guest kernel's own time stamp, which `/dev/kmsg` assigns to each line).

use std::collections::BTreeMap;

const LAB_SERIAL: &str = include_str!(
    "../../crates/ballast-oom/tests/fixtures/oom/lab-debian12-6.1-balloon-200m-of-512m.serial.log"
);

/// The placeholders [`report_template`] leaves for the guest script to fill in.
pub const PID: &str = "@PID@";
pub const COMM: &str = "@COMM@";

/// One injected OOM: the killed task. Pids are 5 digits (10000..=32767) so the
/// fixed-width task table stays aligned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Injected {
    pub pid: u32,
    pub comm: String,
}

impl Injected {
    /// `count` reports named `<tag><nnn>` (tag at most 8 characters, so comm fits the
    /// kernel's 15), pids from `first_pid` on.
    pub fn batch(tag: &str, first_pid: u32, count: u32) -> Vec<Injected> {
        (0..count)
            .map(|n| Injected {
                pid: first_pid + n,
                comm: format!("{tag}{n:03}"),
            })
            .collect()
    }
}

/// The report lines without time stamps, the killed task as [`PID`] / [`COMM`].
pub fn report_template() -> Vec<String> {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in LAB_SERIAL.lines() {
        let body = line.split_once("] ").map_or(line, |(_, body)| body);
        if body.contains("invoked oom-killer") {
            inside = true;
        }
        if !inside {
            continue;
        }
        let body = body
            .replace("PID: 113 ", &format!("PID: {PID} "))
            .replace("[    113]     0   113", &format!("[  {PID}]     0 {PID}"))
            .replace("pid=113,", &format!("pid={PID},"))
            .replace("Killed process 113 ", &format!("Killed process {PID} "))
            .replace("memhog", COMM);
        lines.push(body);
        if body_is_kill_line(&lines[lines.len() - 1]) {
            break;
        }
    }
    lines
}

fn body_is_kill_line(line: &str) -> bool {
    line.contains("Killed process")
}

/// One report as the guest kernel would print it (no time stamps).
pub fn render(injected: &Injected) -> Vec<String> {
    report_template()
        .into_iter()
        .map(|line| {
            line.replace(PID, &injected.pid.to_string())
                .replace(COMM, &injected.comm)
        })
        .collect()
}

/// How the guest script prints the reports.
#[derive(Debug, Clone, Default)]
pub struct Pace {
    /// `usleep` between two lines (0: as fast as the shell goes).
    pub line_delay_us: u32,
    /// Pause this long between two reports.
    pub report_gap_ms: u32,
    /// Stop the LAST report after the first line containing this text (already filled
    /// in), then sleep: a report cut mid-way, as when the VM dies while writing it.
    pub cut_last_after: Option<String>,
}

/// A busybox `sh -c` script that writes each report line by line into `/dev/kmsg`
/// (one write = one kernel log record, stamped by the guest kernel, printed on the
/// serial console at loglevel 4), in the background so guest-exec returns at once.
/// The guest needs `printk.devkmsg=on` (else the kernel rate-limits user writes).
/// Running the same script twice prints the reports once (a marker dir in /tmp).
pub fn kmsg_script(reports: &[Injected], pace: &Pace) -> String {
    let template = report_template().join("\n");
    let mut script = String::new();
    // Once per batch even if a lost guest-exec reply makes the test send it again.
    if let Some(first) = reports.first() {
        script.push_str(&format!(
            "mkdir /tmp/injected.{}.{} 2>/dev/null || exit 0\n",
            first.comm, first.pid
        ));
    }
    script.push_str("cat > /tmp/oom.tpl <<'BALLAST_EOF'\n");
    script.push_str(&template);
    script.push_str("\nBALLAST_EOF\n(\n");
    for (index, report) in reports.iter().enumerate() {
        let last = index + 1 == reports.len();
        let cut = if last {
            pace.cut_last_after.as_deref()
        } else {
            None
        };
        script.push_str(&format!(
            "sed -e 's/{PID}/{}/g' -e 's/{COMM}/{}/g' /tmp/oom.tpl | while IFS= read -r l; do echo \"$l\" > /dev/kmsg;",
            report.pid, report.comm
        ));
        if pace.line_delay_us > 0 {
            script.push_str(&format!(" usleep {};", pace.line_delay_us));
        }
        if let Some(needle) = cut {
            script.push_str(&format!(
                " case \"$l\" in *'{}'*) sleep 600;; esac;",
                needle.replace('\'', "")
            ));
        }
        script.push_str(" done\n");
        if pace.report_gap_ms > 0 && !last {
            script.push_str(&format!(
                "usleep {}\n",
                u64::from(pace.report_gap_ms) * 1000
            ));
        }
    }
    script.push_str(") > /dev/null 2>&1 &\n");
    script
}

/// Count in versus count out: what was injected, what the collector listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub injected: usize,
    /// Distinct injected reports listed at least once.
    pub stored: usize,
    /// Injected reports listed more than once (extra copies).
    pub dupes: usize,
    pub missing: Vec<Injected>,
    /// Listed under an injected comm prefix but never injected.
    pub unexpected: Vec<Injected>,
}

impl Tally {
    /// `listed`: every (pid, comm) the collector lists for the VM, with repeats.
    /// Only comms starting with one of `prefixes` count (other OOMs of the VM are not
    /// this scenario's).
    pub fn of(injected: &[Injected], listed: &[Injected], prefixes: &[&str]) -> Tally {
        let mut counts: BTreeMap<&Injected, usize> = BTreeMap::new();
        for item in listed {
            if prefixes.iter().any(|prefix| item.comm.starts_with(prefix)) {
                *counts.entry(item).or_default() += 1;
            }
        }
        let mut tally = Tally {
            injected: injected.len(),
            ..Tally::default()
        };
        for report in injected {
            match counts.remove(report) {
                Some(n) => {
                    tally.stored += 1;
                    tally.dupes += n - 1;
                }
                None => tally.missing.push(report.clone()),
            }
        }
        tally.unexpected = counts.into_keys().cloned().collect();
        tally
    }

    /// Each injected report listed exactly once, nothing else.
    pub fn exactly_once(&self) -> bool {
        self.stored == self.injected && self.dupes == 0 && self.unexpected.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_the_lab_report_with_the_killed_task_left_open() {
        let lines = report_template();
        assert!(lines[0].starts_with(&format!("{COMM} invoked oom-killer")));
        assert!(lines.last().is_some_and(
            |line| line.starts_with(&format!("Out of memory: Killed process {PID} ({COMM})"))
        ));
        assert!(lines
            .iter()
            .any(|line| line.contains(&format!("task={COMM},pid={PID},"))));
        assert!(lines
            .iter()
            .all(|line| !line.contains("memhog") && !line.contains(" 113")));
        assert_eq!(lines.len(), 60);
    }

    #[test]
    fn rendered_reports_differ_by_pid_and_comm() {
        let batch = Injected::batch("fmtest", 20_000, 2);
        let first = render(&batch[0]);
        assert!(first[1].contains("PID: 20000 Comm: fmtest000"));
        assert_ne!(first, render(&batch[1]));
    }

    #[test]
    fn script_cuts_only_the_last_report() {
        let batch = Injected::batch("fmcut", 21_000, 2);
        let pace = Pace {
            cut_last_after: Some("Mem-Info".into()),
            ..Pace::default()
        };
        let script = kmsg_script(&batch, &pace);
        assert_eq!(script.matches("sleep 600").count(), 1);
        let cut_at = script.find("sleep 600").unwrap_or(0);
        assert!(script[..cut_at].contains("s/@COMM@/fmcut001/g"));
        assert!(script.ends_with("&\n"));
        assert!(script.starts_with("mkdir /tmp/injected.fmcut000.21000 2>/dev/null || exit 0\n"));
    }

    #[test]
    fn tally_counts_missing_doubled_and_foreign_reports() {
        let injected = Injected::batch("fmt", 10_000, 3);
        let listed = vec![
            injected[0].clone(),
            injected[0].clone(),
            injected[2].clone(),
            Injected {
                pid: 99,
                comm: "fmtx".into(),
            },
            Injected {
                pid: 1,
                comm: "memhog".into(),
            },
        ];
        let tally = Tally::of(&injected, &listed, &["fmt"]);
        assert_eq!(tally.stored, 2);
        assert_eq!(tally.dupes, 1);
        assert_eq!(tally.missing, vec![injected[1].clone()]);
        assert_eq!(tally.unexpected.len(), 1);
        assert!(!tally.exactly_once());
        let clean = Tally::of(&injected, &injected, &["fmt"]);
        assert!(clean.exactly_once());
    }
}
