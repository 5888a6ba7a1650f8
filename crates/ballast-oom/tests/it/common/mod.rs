//! What the integration tests of ballast-oom share: the fixture logs.

use std::path::{Path, PathBuf};

/// `tests/fixtures/oom/`.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oom")
}

/// Every `*.log` under [`fixture_dir`], sorted (there are more than 20).
pub fn fixture_logs() -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixture dir")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    assert!(logs.len() > 20, "only {} fixtures", logs.len());
    logs
}
