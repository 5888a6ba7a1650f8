//! Every real report under tests/fixtures/oom/ against the facts read off it by hand.
//!
//! Each `X.log` has an `X.expect.json`: `{"source", "notes", "reports": [...]}` where
//! each expected report is a subset of `ballast-agent explain --json` output
//! (plus `verdict`, compared with `analysis.verdict`). Keys not listed are not
//! checked; a `null` must be null in the output.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use crate::common;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Compares `expected` as a subset of `actual`, collecting mismatches with their JSON path.
fn compare(path: &str, expected: &Value, actual: &Value, problems: &mut Vec<String>) {
    match expected {
        Value::Object(fields) => {
            for (key, want) in fields {
                if key == "verdict_reason" || key == "notes" {
                    continue;
                }
                let got = if key == "verdict" && actual.get("analysis").is_some() {
                    actual.pointer("/analysis/verdict").unwrap_or(&Value::Null)
                } else {
                    actual.get(key).unwrap_or(&Value::Null)
                };
                compare(&format!("{path}.{key}"), want, got, problems);
            }
        }
        _ => {
            if expected != actual {
                problems.push(format!("{path}: expected {expected}, got {actual}"));
            }
        }
    }
}

fn check_fixture(log: &Path) -> Vec<String> {
    let expect_path = log.with_extension("expect.json");
    let expect_text = std::fs::read_to_string(&expect_path)
        .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
    let expected: Value = serde_json::from_str(&expect_text)
        .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
    let input = std::fs::read(log).expect("fixture readable");
    let explained = serde_json::to_value(ballast_oom::explain(&input)).expect("serializable");
    let want_reports = expected["reports"].as_array().expect("reports array");
    let got_reports = explained["reports"].as_array().expect("reports array");
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut problems = Vec::new();
    if want_reports.len() != got_reports.len() {
        problems.push(format!(
            "{name}: expected {} reports, found {}",
            want_reports.len(),
            got_reports.len()
        ));
    }
    for (index, (want, got)) in want_reports.iter().zip(got_reports).enumerate() {
        compare(&format!("{name}[{index}]"), want, got, &mut problems);
    }
    problems
}

#[test]
fn every_fixture_matches_its_hand_read_facts() {
    let logs: Vec<PathBuf> = common::fixture_logs()
        .into_iter()
        .filter(|path| path.with_extension("expect.json").exists())
        .collect();
    assert!(logs.len() >= 12, "only {} fixtures with facts", logs.len());
    let problems: Vec<String> = logs.iter().flat_map(|log| check_fixture(log)).collect();
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
