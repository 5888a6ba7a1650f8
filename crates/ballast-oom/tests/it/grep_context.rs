//! `grep -C`/`-A`/`-B` output: a `--` line, where grep left lines out, never ends or
//! splits the report it falls in, wherever it falls.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;

use ballast_oom::Report;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/oom")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The facts of a report, without where it sits in the input.
fn facts(mut report: Report) -> Report {
    report.span = ballast_oom::SourceSpan {
        start_byte: 0,
        end_byte: 0,
        first_line: 0,
    };
    report
}

fn only_report(input: &str) -> Report {
    let mut parsed = ballast_oom::parse(input.as_bytes());
    assert_eq!(parsed.reports.len(), 1, "{input}");
    facts(parsed.reports.remove(0))
}

#[test]
fn a_separator_after_any_line_of_a_report_changes_none_of_its_facts() {
    for name in [
        "debian9-kvm-1g-tor.log",
        "lab-debian12-6.1-balloon-200m-of-512m.serial.log",
        "5.2-memcg-v1-swap-oomkill-line.log",
    ] {
        let text = fixture(name);
        let lines: Vec<&str> = text.lines().collect();
        let whole = only_report(&text);
        // `grep -C0`: matches only, `--` between groups; with `-n`, the same after `N:`.
        for at in 1..lines.len() {
            for separator in ["--", "--\n--"] {
                let mut cut = lines[..at].join("\n");
                cut.push('\n');
                cut.push_str(separator);
                cut.push('\n');
                cut.push_str(&lines[at..].join("\n"));
                // Ends in a line break as the fixture does (a last number without one
                // may be cut, and is dropped).
                cut.push('\n');
                assert_eq!(
                    only_report(&cut),
                    whole,
                    "{name}: `{separator}` after line {at}"
                );
            }
        }
    }
}

#[test]
fn grep_context_output_with_separators_is_the_report_also_pasted_as_one_line() {
    let original = only_report(&fixture("debian9-kvm-1g-tor.log"));
    let grepped = fixture("transport-grep-C-separators-debian9-tor.log");
    assert!(grepped.lines().filter(|line| *line == "--").count() >= 4);
    assert_eq!(only_report(&grepped), original);
    let joined = grepped.lines().collect::<Vec<_>>().join(" ");
    assert_eq!(only_report(&joined), original);
}
