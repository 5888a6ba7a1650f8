//! `ballast-agent explain` as a user runs it: the binary, real fixture files, stdin.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/ballast-oom/tests/fixtures/oom")
        .join(name)
}

fn agent(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ballast-agent starts");
    let mut pipe = child.stdin.take().expect("stdin piped");
    pipe.write_all(stdin.unwrap_or_default())
        .expect("stdin written");
    drop(pipe);
    child.wait_with_output().expect("ballast-agent exits")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

/// Every key the issue names as the JSON contract, present (null allowed) in each report.
const CONTRACT: [&str; 20] = [
    "/kernel",
    "/kind",
    "/partial",
    "/trigger/comm",
    "/trigger/pid",
    "/trigger/gfp_mask",
    "/trigger/order",
    "/trigger/oom_score_adj",
    "/constraint",
    "/memcg",
    "/killed/pid",
    "/killed/comm",
    "/killed/uid",
    "/killed/total_vm_kb",
    "/killed/anon_rss_kb",
    "/tasks",
    "/ram_pages",
    "/balloon_in_trace",
    "/analysis/verdict",
    "/analysis/explanation",
];

#[test]
fn json_output_carries_the_contract_and_the_golden_numbers() {
    let path = fixture("debian9-kvm-1g-tor.joined.log");
    let json = json_of(&agent(
        &["explain", "--json", path.to_str().expect("utf-8 path")],
        None,
    ));
    let report = &json["reports"][0];
    for key in CONTRACT {
        assert!(report.pointer(key).is_some(), "missing {key}");
    }
    for key in [
        "managed_kb",
        "reserved_kb",
        "accounted_kb",
        "unaccounted_kb",
        "file_rss_kb",
        "shmem_rss_kb",
    ] {
        let found = report["analysis"]
            .get(key)
            .or_else(|| report["killed"].get(key));
        assert!(found.is_some(), "missing {key}");
    }
    assert_eq!(json["reports"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["kernel"], "4.9.0-4-amd64");
    assert_eq!(report["trigger"]["gfp_mask"], "0x24201ca");
    assert_eq!(report["killed"]["anon_rss_kb"], 374956);
    assert_eq!(report["killed"]["uid"], Value::Null);
    assert_eq!(report["tasks"], 14);
    assert_eq!(report["analysis"]["managed_kb"], 1020360);
    assert_eq!(report["analysis"]["accounted_kb"], 635528);
    assert_eq!(report["analysis"]["unaccounted_kb"], 384832);
    assert_eq!(report["analysis"]["verdict"], "kernel_unaccounted");
}

#[test]
fn text_output_leads_with_the_verdict_in_mib() {
    let path = fixture("lab-debian12-6.1-balloon-200m-of-512m.serial.log");
    let output = agent(&["explain", path.to_str().expect("utf-8 path")], None);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let first_report_line = text
        .lines()
        .find(|l| l.starts_with("Report 1"))
        .expect("a report line");
    assert!(
        first_report_line.ends_with("verdict balloon"),
        "{first_report_line}"
    );
    assert!(text.contains("366 MiB"), "reserved memory in MiB: {text}");
    assert!(
        text.contains("deflate-on-oom"),
        "says what to change: {text}"
    );
}

#[test]
fn reads_standard_input_with_a_dash_and_without_a_file() {
    let input = std::fs::read(fixture("debian9-kvm-1g-tor.log")).expect("fixture");
    for args in [&["explain", "--json", "-"][..], &["explain", "--json"][..]] {
        let json = json_of(&agent(args, Some(&input)));
        assert_eq!(json["reports"][0]["killed"]["comm"], "tor", "{args:?}");
    }
}

#[test]
fn no_report_found_is_success_and_says_so() {
    let output = agent(
        &["explain", "-"],
        Some(b"[    0.000000] Linux version 6.1.0\n"),
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("No kernel OOM report found"));
    let json = json_of(&agent(&["explain", "--json", "-"], Some(b"nothing here")));
    assert_eq!(json["reports"], Value::Array(Vec::new()));
}

#[test]
fn unreadable_input_exits_2_and_names_the_file() {
    let output = agent(&["explain", "/nonexistent/kern.log"], None);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/kern.log"), "{stderr}");
    let bad_flag = agent(&["explain", "--no-such-flag"], None);
    assert_eq!(bad_flag.status.code(), Some(2));
}

#[test]
fn guest_text_reaches_the_terminal_with_its_escape_sequences_neutralised() {
    // A guest names its process so that printing the name clears the screen, sets the
    // window title and reverses the rest of the line; the kernel copies comm verbatim.
    let report = std::fs::read(fixture("debian9-kvm-1g-tor.log")).expect("fixture");
    let hostile_name = "t\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}or";
    let text = String::from_utf8_lossy(&report)
        .replace("] tor invoked", &format!("] {hostile_name} invoked"))
        .replace("(tor)", &format!("({hostile_name})"));
    let output = agent(&["explain", "-"], Some(text.as_bytes()));
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        !stdout
            .chars()
            .any(|c| c != '\n' && ballast_agent::terminal::is_unsafe(c)),
        "raw control characters reached the terminal:\n{stdout:?}"
    );
    assert!(
        stdout.contains("\\x1b[2J\\x1b]0;pwned\\x07\\u{202e}"),
        "the name is shown with visible escapes:\n{stdout}"
    );
}
