//! A kill line re-logged by Kubernetes or node-problem-detector next to the kernel's
//! own report of it is one kill: every real fixture's reports stay exactly what they
//! were when events carrying its kill line come before and after it, whole or streamed.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use crate::common;

use ballast_oom::{Envelope, Report, SourceSpan, StreamParser};

fn fixtures() -> Vec<(String, String)> {
    common::fixture_logs()
        .into_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path.display().to_string(), text))
        })
        .collect()
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

mod soup {
    use super::*;
    use proptest::prelude::*;

    /// A window holds whole lines of the soup (a line longer than a stream's window is
    /// read in pieces, and an envelope's start may be in the piece before its kill line).
    const MAX_SOUP_LINE: usize = 200;

    /// Byte soup made of envelope and kill line pieces, in lines of at most
    /// [`MAX_SOUP_LINE`] bytes.
    fn envelope_soup() -> impl Strategy<Value = Vec<u8>> {
        const TOKENS: &[&str] = &[
            "  Warning  OOMKilling  2m (x3 over 5m)  kernel-monitor  ",
            "default   5m   Warning   OOMKilling   node/n1   ",
            "    \"message\": \"",
            "{\"log\":\"{\\\"message\\\":\\\"",
            "  message: '",
            "  message: \"",
            "Reason:OOMKilling Message:",
            "Memory cgroup out of memory: ",
            "Out of memory: ",
            "Killed process 7 (a) total-vm:10kB, anon-rss:5kB, file-rss:0kB",
            "Killed process 8 (it''s) total-vm:12kB,",
            "Killed process 9 (b\\\"c\\u003e) total-vm:14kB, anon-rss:6kB",
            " UID:0 pgtables:8kB oom_score_adj:0",
            "\\ud83d\\ude00",
            "\\u12",
            "\\n",
            "\\\\",
            "\"",
            "'",
            "''",
            "}]",
            "   ",
            "\n    ",
            "\n",
            "\r\n",
            "[ 5.3] ",
            "Jun 13 14:35:38 n1 node-problem-detector[9]: ",
        ];
        let token = prop_oneof![
            6 => proptest::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
            1 => proptest::collection::vec(any::<u8>(), 0..6),
        ];
        proptest::collection::vec(token, 0..80).prop_map(|parts| {
            let mut soup = Vec::new();
            let mut line = 0;
            for byte in parts.concat() {
                line = if byte == b'\n' { 0 } else { line + 1 };
                if line > MAX_SOUP_LINE {
                    soup.push(b'\n');
                    line = 1;
                }
                soup.push(byte);
            }
            soup
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn envelope_soup_never_panics_and_streams_to_the_same_reports(input in envelope_soup()) {
            let whole = ballast_oom::parse(&input).reports;
            for report in &whole {
                prop_assert!(report.span.start_byte <= report.span.end_byte);
                prop_assert!(report.span.end_byte <= input.len());
            }
            for window in [512, 2048] {
                prop_assert_eq!(&streamed(&input, window), &whole, "window {}", window);
            }
        }
    }
}
