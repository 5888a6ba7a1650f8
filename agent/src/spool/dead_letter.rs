//! The dead-letter file: events the collector named invalid (a 422 with their field),
//! and spool records that no longer decode,
//! kept for a person to look at, so one bad event never blocks the queue.
//!
//! `dead-letter.jsonl` holds one JSON object per line; when it would grow past its
//! limit it is renamed to `dead-letter.jsonl.1` (replacing the older one), so the
//! two files together stay under twice the limit. Example line:
//! ```json
//! {"at_ms":1795658493123,"reason":"HTTP 422: events[0].vm.uuid: not a UUID","keys":["pve1/oom/x/1"],"events":[{"key":"pve1/oom/x/1", "...": "..."}]}
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{io_error, SpoolError};

/// The bounded dead-letter file.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    max_bytes: u64,
}

impl DeadLetter {
    pub fn new(dir: &Path, max_bytes: u64) -> Self {
        Self {
            path: dir.join("dead-letter.jsonl"),
            max_bytes: max_bytes.max(1024),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry (fsynced). Event payloads are the spooled JSON (as a string if it does not parse); when
    /// they would not fit, only the keys are kept.
    pub fn append(
        &self,
        at_ms: i64,
        reason: &str,
        keys: &[&str],
        payloads: &[&[u8]],
    ) -> Result<(), SpoolError> {
        let events: Vec<serde_json::Value> = payloads
            .iter()
            .map(|payload| {
                serde_json::from_slice(payload).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
                })
            })
            .collect();
        let mut line = serde_json::json!({
            "at_ms": at_ms,
            "reason": reason,
            "keys": keys,
            "events": events,
        })
        .to_string();
        if line.len() as u64 + 1 > self.max_bytes / 2 {
            line = serde_json::json!({
                "at_ms": at_ms,
                "reason": reason,
                "keys": keys,
                "events_omitted": true,
            })
            .to_string();
        }
        line.push('\n');
        let current = fs::metadata(&self.path).map(|meta| meta.len()).unwrap_or(0);
        if current + line.len() as u64 > self.max_bytes {
            let mut old = self.path.as_os_str().to_owned();
            old.push(".1");
            let old = PathBuf::from(old);
            if let Ok(meta) = fs::metadata(&old) {
                tracing::warn!(
                    path = %old.display(),
                    bytes = meta.len(),
                    "The dead-letter files are full: the older one is replaced, its events are lost; replay the rest (ballast-agent spool replay-dead-letters) once the collector takes them."
                );
            }
            fs::rename(&self.path, old).map_err(|source| io_error(&self.path, source))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|source| io_error(&self.path, source))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|source| io_error(&self.path, source))
    }
}
