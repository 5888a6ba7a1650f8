//! Resource names: every domain and run folder carries `ballast-test-<pid>-<n>`.
//!
//! The PID is the test process that created the resource; the sweeper removes
//! resources whose process is gone and never touches any other name.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The prefix of every resource the harness creates.
pub const PREFIX: &str = "ballast-test-";

static NEXT: AtomicUsize = AtomicUsize::new(1);

/// A fresh name owned by this process: `ballast-test-<pid>-<n>`.
pub fn next_name() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}", std::process::id())
}

/// The owning PID of a harness resource name; `None` for every other name.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid) || !all_digits(n) {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_names_round_trip() {
        let name = next_name();
        assert_eq!(owner_pid(&name), Some(std::process::id()));
    }

    #[test]
    fn foreign_names_are_never_ours() {
        for name in [
            "web01",
            "ballast-test-",
            "ballast-test-12",
            "ballast-test-12-x",
            "ballast-test-a-1",
            "xballast-test-1-1",
        ] {
            assert_eq!(owner_pid(name), None, "{name}");
        }
    }
}
