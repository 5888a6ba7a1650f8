//! A skipped test says so where it is counted: a loud banner on stderr (which `cargo
//! test` hides for a passing test) and one line `BALLAST-SKIP: <test>: <why>` appended
//! to the file named by `BALLAST_SKIP_LOG`, which `scripts/test.sh` sets, counts and
//! prints at the end of the run (a failure in CI).

use std::io::Write;

/// The variable naming the skip log.
pub const SKIP_LOG_VAR: &str = "BALLAST_SKIP_LOG";

/// Records that `test` skipped (all or part of its checks) because of `why`. The caller
/// decides whether it may skip (never in CI: see [`crate::in_ci`]).
pub fn skip(test: &str, why: &str) {
    let line = marker(test, why);
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED {test}: {why}\n\
         !!! Run scripts/install-deps.sh (as root). In CI this is a failure.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    let Some(path) = std::env::var_os(SKIP_LOG_VAR) else {
        return;
    };
    // One write of one line in append mode: lines of parallel tests do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(error) = written {
        panic!(
            "{test}: cannot record the skip in {SKIP_LOG_VAR}={}: {error}",
            std::path::Path::new(&path).display()
        );
    }
}

/// The running test's name as libtest reports it (libtest names each test's thread
/// after the test), for helpers that skip on a test's behalf; `unnamed test` elsewhere.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_owned()
}

/// The skip log's line for one skip: one line, whatever `why` holds.
fn marker(test: &str, why: &str) -> String {
    let flat = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("BALLAST-SKIP: {}: {}\n", flat(test), flat(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_one_line_naming_the_test_and_the_reason() {
        assert_eq!(
            marker("pg_suite", "initdb failed:\n  no space left\n"),
            "BALLAST-SKIP: pg_suite: initdb failed: no space left\n"
        );
    }
}
