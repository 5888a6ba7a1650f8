//! Serial console logs: read them and wait for lines to appear.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The log's text so far (lossy UTF-8; empty when the file does not exist yet).
pub(crate) fn read_text(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// How many lines of the log contain `needle`.
pub(crate) fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|line| line.contains(needle)).count()
}

/// Waits until at least `count` lines contain `needle`; returns the `count`-th such line.
pub(crate) fn wait_count(
    path: &Path,
    needle: &str,
    count: usize,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = read_text(path);
        if let Some(line) = text
            .lines()
            .filter(|line| line.contains(needle))
            .nth(count.saturating_sub(1))
        {
            return Ok(line.trim_end_matches('\r').to_owned());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("{count} line(s) with {needle:?} in {}", path.display()),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of the log, for failure messages.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = read_text(path);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
