//! config/agent.example.yaml is generated from the code's defaults: this fails when the
//! two drift apart, and proves the shipped example is a valid configuration.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::path::PathBuf;
use std::process::Command;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/agent.example.yaml")
}

#[test]
fn the_example_config_matches_the_defaults() {
    let output = Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
        .arg("--print-default-config")
        .output()
        .expect("ballast-agent runs");
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).expect("utf-8");
    let committed = std::fs::read_to_string(example()).expect("config/agent.example.yaml exists");
    assert_eq!(
        committed, generated,
        "config/agent.example.yaml is stale: run `ballast-agent --print-default-config > config/agent.example.yaml`"
    );
}

#[test]
fn the_example_config_passes_check_config() {
    let output = Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
        .arg("check-config")
        .arg(example())
        .output()
        .expect("ballast-agent runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_bad_config_is_refused_at_start_up_naming_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("ballast-bad-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("agent.yaml");
    std::fs::write(&file, "poll_interval_secs: 10\ncapture:\n  serail: true\n").expect("written");
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let output = Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
            .args(args)
            .arg(&file)
            .output()
            .expect("ballast-agent runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("agent.yaml"), "names the file: {stderr}");
        assert!(stderr.contains("serail"), "names the field: {stderr}");
        assert!(stderr.contains("line 3"), "names the line: {stderr}");
    }
    std::fs::write(&file, "poll_interval_secs: 0\n").expect("written");
    let output = Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
        .args(["check-config"])
        .arg(&file)
        .output()
        .expect("ballast-agent runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("poll_interval_secs (0) below minimum (1)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_value_is_named_once_with_its_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, "poll_interval_secs: 0\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("ballast-agent runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert_eq!(
        stderr
            .matches("poll_interval_secs (0) below minimum")
            .count(),
        1,
        "{stderr}"
    );
}

/// `guard: {mode: act}` reading its VMs only every 10 s (the agent's default poll with
/// the guard's own poll off) is valid but reaches only guests that take 40 s to run out
/// (docs/guard.md "Reach"): check-config says so, and is quiet with the guard's default
/// 2 s poll.
#[test]
fn act_on_a_slow_poll_is_accepted_with_a_warning_naming_its_reach() {
    let dir = std::env::temp_dir().join(format!("ballast-guard-reach-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let check = |name: &str, guard_poll: &str| {
        let file = dir.join(format!("agent-{name}.yaml"));
        std::fs::write(
            &file,
            format!("poll_interval_secs: 10\nguard:\n  mode: act\n{guard_poll}"),
        )
        .expect("written");
        let output = Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("ballast-agent runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let slow = check("slow", "  poll_interval_secs: 0\n");
    assert!(
        slow.contains("warning: ") && slow.contains("agent-slow.yaml"),
        "{slow}"
    );
    assert!(slow.contains("more than 40 s"), "{slow}");
    let default = check("default", "");
    assert!(!default.contains("guard.mode is act"), "{default}");
    let _ = std::fs::remove_dir_all(&dir);
}
