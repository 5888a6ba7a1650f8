//! A kill line re-logged by Kubernetes or node-problem-detector next to the kernel's
//! own report of it is one kill: every real fixture's reports stay exactly what they
//! were when events carrying its kill line come before and after it, whole or streamed.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;

use ballast_oom::{Envelope, Report, SourceSpan, StreamParser};

fn fixtures() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oom");
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path.display().to_string(), text))
        })
        .collect();
    logs.sort();
    logs
}

/// The kernel's kill line as the kernel printed it (prefix cut), when it is whole on one
/// line of `text`.
fn kill_line(text: &str, report: &Report) -> Option<String> {
    let killed = report.killed.as_ref()?;
    let needle = format!("Killed process {} (", killed.pid);
    let line = text.lines().find(|line| line.contains(&needle))?;
    let at = line.find(&needle)?;
    let start = ["Memory cgroup out of memory: ", "Out of memory: "]
        .iter()
        .find(|opening| line[..at].ends_with(*opening))
        .map_or(at, |opening| at - opening.len());
    let kill = line[start..].trim_end();
    (kill.contains("total-vm:") && kill.contains("anon-rss:")).then(|| kill.to_string())
}

fn facts(reports: Vec<Report>) -> Vec<Report> {
    reports
        .into_iter()
        .map(|mut report| {
            report.span = SourceSpan {
                start_byte: 0,
                end_byte: 0,
                first_line: 0,
            };
            report
        })
        .collect()
}

fn streamed(input: &[u8], window: usize) -> Vec<Report> {
    let mut parser = StreamParser::with_window(window);
    let mut reports = parser.push(input);
    reports.extend(parser.finish().0);
    reports
}

#[test]
fn events_relogging_a_fixtures_kill_add_no_report() {
    let mut checked = 0;
    for (name, text) in fixtures() {
        let own = ballast_oom::parse(text.as_bytes()).reports;
        // The kernel's own report (a fixture that is itself an event is left out).
        let [report] = own.as_slice() else {
            continue;
        };
        if report.envelope.is_some() {
            continue;
        }
        let Some(kill) = kill_line(&text, report) else {
            continue;
        };
        // Only where the event's line alone reads as the same kill (not a wrapped one).
        let row = format!("3m   Warning   OOMKilling   node/n1   {kill}\n");
        let alone = ballast_oom::parse(row.as_bytes()).reports;
        let same_kill = alone
            .first()
            .and_then(|r| r.killed.as_ref())
            .is_some_and(|k| {
                report.killed.as_ref().is_some_and(|own| {
                    (own.pid, &own.comm, own.total_vm_kb, own.anon_rss_kb)
                        == (k.pid, &k.comm, k.total_vm_kb, k.anon_rss_kb)
                })
            });
        if !same_kill {
            continue;
        }
        assert_eq!(alone[0].envelope, Some(Envelope::EventTable), "{name}");
        let json = kill.replace('\\', "\\\\").replace('"', "\\\"");
        let json = format!("    \"message\": \"{json}\",\n");
        let input = format!("{row}{json}{text}\n{json}{row}");
        let whole = ballast_oom::parse(input.as_bytes()).reports;
        assert_eq!(facts(whole.clone()), facts(own.clone()), "{name}");
        for window in [512, 4096] {
            assert_eq!(
                streamed(input.as_bytes(), window),
                whole,
                "{name}, window {window}"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} fixtures with a one-line kill"
    );
}
