//! Rooms of a size one can read (issue 18): no product source file over 32 KiB, held on
//! the real sources of the agent, the collector and the crates under `crates/`. A file
//! that grows past it is split along its seams (its test module moves to
//! `<file>/tests.rs` first). Test code is not product source: files named `tests.rs`
//! and directories named `tests` are left out.

use std::path::{Path, PathBuf};

/// The largest product source file, in bytes.
pub(crate) const MAX_SOURCE_BYTES: u64 = 32 * 1024;

/// The `.rs` files under `dir` larger than `max` bytes, with their sizes, sorted.
pub(crate) fn oversized(dir: &Path, max: u64) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let test_code = path
                .file_name()
                .is_some_and(|name| name == "tests" || name == "tests.rs");
            if test_code {
                continue;
            }
            if meta.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") && meta.len() > max {
                found.push((path, meta.len()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn no_product_source_file_is_over_32_kib() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut dirs = vec![root.join("agent/src"), root.join("collector/src")];
    let crates = std::fs::read_dir(root.join("crates")).expect("crates/");
    dirs.extend(crates.flatten().map(|entry| entry.path().join("src")));
    let found: Vec<_> = dirs
        .iter()
        .flat_map(|dir| oversized(dir, MAX_SOURCE_BYTES))
        .collect();
    assert!(
        found.is_empty(),
        "product source files over {MAX_SOURCE_BYTES} bytes (split them): {found:?}"
    );
}

#[test]
fn an_oversized_file_is_found_in_a_subdirectory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("a/b")).expect("dirs");
    std::fs::write(dir.path().join("a/b/big.rs"), vec![b'x'; 101]).expect("big");
    std::fs::write(dir.path().join("a/small.rs"), vec![b'x'; 100]).expect("small");
    std::fs::write(dir.path().join("a/big.txt"), vec![b'x'; 500]).expect("txt");
    std::fs::write(dir.path().join("a/tests.rs"), vec![b'x'; 500]).expect("tests.rs");
    std::fs::create_dir_all(dir.path().join("a/tests")).expect("tests/");
    std::fs::write(dir.path().join("a/tests/t.rs"), vec![b'x'; 500]).expect("tests/t.rs");
    let found = oversized(dir.path(), 100);
    assert_eq!(found, vec![(dir.path().join("a/b/big.rs"), 101)]);
}
