//! The one rule every ballast test uses for "is this a CI run": there, a missing tool,
//! lab or database is a failure; elsewhere it is a loud skip. `.ci/run` sets `CI=true`;
//! other CI systems set `CI` to `true`, `True`, `1` or `yes`. Also the one
//! [`wait_until`] (and [`wait_until_async`]) every test uses to wait for a condition,
//! and [`skip`], which records a skipped test where `scripts/test.sh` counts it, and
//! [`plan`], which test executables a build made (for `ballast-run-tests`).

pub mod plan;
mod skip;
mod wait;

pub use skip::{current_test, skip, SKIP_LOG_VAR};
pub use wait::{wait_until, wait_until_async, Outcome};

/// True when the `CI` variable is set to anything but empty, `0`, `false` or `no` (in
/// any case).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| says_ci(&value))
}

/// The rule on the variable's value.
fn says_ci(value: &str) -> bool {
    let value = value.trim();
    !(value.is_empty()
        || value == "0"
        || value.eq_ignore_ascii_case("false")
        || value.eq_ignore_ascii_case("no"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_ci_counts_and_the_negatives_do_not() {
        for yes in ["true", "True", "TRUE", "1", "yes", "gitlab"] {
            assert!(says_ci(yes), "{yes}");
        }
        for no in ["", " ", "0", "false", "False", "no", "NO"] {
            assert!(!says_ci(no), "{no:?}");
        }
    }
}
