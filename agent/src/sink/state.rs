//! The sender's state for `ballast-agent status`: `<state_dir>/delivery.json`, written
//! by the sender when delivery is held (at most every few seconds) and when it
//! resumes, replaced atomically. Guest text never reaches it: the collector's error
//! text is cut and printed without control characters.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What `delivery.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// `collector.url`.
    pub url: String,
    pub updated_at_epoch_secs: u64,
    /// The last batch the collector confirmed.
    pub last_success_epoch_secs: Option<u64>,
    /// Set while the spool is held.
    pub held: Option<HeldState>,
}

/// Why delivery is held.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldState {
    pub since_epoch_secs: u64,
    /// The `reason` label of `ballast_agent_delivery_refusals_total`.
    pub reason: String,
    /// HTTP status, when one came.
    pub status: Option<u16>,
    pub error: String,
    pub hint: String,
    pub attempts: u32,
}

impl DeliveryState {
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let temp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&temp, json)?;
        std::fs::rename(&temp, path)
    }

    pub fn read(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read(path)?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }

    /// The lines `ballast-agent status` prints about delivery.
    pub fn lines(&self, now_epoch_secs: u64) -> String {
        let mut out = String::new();
        let url = printable(&self.url, 200);
        match &self.held {
            Some(held) => {
                let status = held
                    .status
                    .map_or_else(String::new, |status| format!(", HTTP {status}"));
                let _ = writeln!(
                    out,
                    "delivery to {url}: BLOCKED for {} s ({}{status}, {} attempts): {}",
                    now_epoch_secs.saturating_sub(held.since_epoch_secs),
                    printable(&held.reason, 40),
                    held.attempts,
                    printable(&held.error, 300)
                );
                let _ = writeln!(
                    out,
                    "  events stay in the spool and are retried; {}",
                    printable(&held.hint, 200)
                );
            }
            None => {
                let last = self.last_success_epoch_secs.map_or_else(
                    || "nothing confirmed yet".to_string(),
                    |at| {
                        format!(
                            "last batch confirmed {} s ago",
                            now_epoch_secs.saturating_sub(at)
                        )
                    },
                );
                let _ = writeln!(out, "delivery to {url}: OK, {last}");
            }
        }
        out
    }
}

/// Control characters replaced, cut at `max` characters.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_delivery_says_why_and_since_when() {
        let state = DeliveryState {
            url: "http://127.0.0.1:8470/wrong/".into(),
            updated_at_epoch_secs: 1_000,
            last_success_epoch_secs: None,
            held: Some(HeldState {
                since_epoch_secs: 900,
                reason: "not_found".into(),
                status: Some(404),
                error: "<html>\u{1b}[2J404</html>".into(),
                hint: "collector.url does not point at a ballast collector".into(),
                attempts: 7,
            }),
        };
        let text = state.lines(1_000);
        assert!(
            text.contains(
                "delivery to http://127.0.0.1:8470/wrong/: BLOCKED for 100 s (not_found, HTTP 404, 7 attempts)"
            ),
            "{text}"
        );
        assert!(text.contains("collector.url does not point"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("delivery.json");
        state.write(&path).expect("written");
        assert_eq!(DeliveryState::read(&path).expect("read"), state);
        let ok = DeliveryState {
            held: None,
            last_success_epoch_secs: Some(990),
            ..state
        };
        assert!(ok
            .lines(1_000)
            .contains(": OK, last batch confirmed 10 s ago"));
    }
}
