//! `ballast-in-ci`: exits 0 when this is a CI run by the one rule of
//! [`ballast_testenv::in_ci`], 1 otherwise; for scripts (scripts/test.sh), so that the
//! shell does not keep a second rule.

use std::process::ExitCode;

fn main() -> ExitCode {
    if ballast_testenv::in_ci() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
