//! config/collector.example.yaml is generated from the code's defaults: this fails when
//! the two drift apart, and proves the shipped example starts a collector.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_example_config_matches_the_defaults() {
    let output = Command::new(env!("CARGO_BIN_EXE_ballast-collector"))
        .arg("--print-default-config")
        .output()
        .expect("ballast-collector runs");
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).expect("utf-8");
    let example =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/collector.example.yaml");
    let committed = std::fs::read_to_string(example).expect("config/collector.example.yaml exists");
    assert_eq!(
        committed, generated,
        "config/collector.example.yaml is stale: run `ballast-collector --print-default-config > config/collector.example.yaml`"
    );
}
