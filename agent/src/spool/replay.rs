//! Replaying dead letters (`ballast-agent spool replay-dead-letters`): the events of
//! the dead-letter files go back into the spool and are delivered again.
//!
//! The running agent is the spool's only writer, so the command does not touch the
//! segments. It moves the dead-letter files aside (an atomic rename: the agent's next
//! dead letter starts a new file), writes their events to
//! `<spool>/replay-inbox/<id>.jsonl` (one `Envelope` per line, fsynced, renamed into
//! place), and only then removes the moved files. The sender imports each inbox file
//! into the spool ([`import_inbox`]) before it reads the next batch, then removes it.
//! A crash anywhere repeats a step at worst; a repeated event has the same key, and
//! the collector stores each key once, so replaying twice stores nothing twice.
//! Entries whose events were not kept (too large) or do not decode stay in
//! `dead-letter.unreplayable.jsonl`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ballast_model::Envelope;
use tracing::{info, warn};

use super::{io_error, Spool, SpoolError};

/// The directory (inside the spool directory) the sender imports from.
pub const INBOX_DIR: &str = "replay-inbox";
const CLAIMED_PREFIX: &str = "dead-letter.replaying.";
const UNREPLAYABLE: &str = "dead-letter.unreplayable.jsonl";

/// What [`queue_dead_letters`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Queued {
    /// Dead-letter entries read.
    pub entries: usize,
    /// Events handed to the agent.
    pub events: usize,
    /// Entries kept in `dead-letter.unreplayable.jsonl`.
    pub unreplayable: usize,
    /// The inbox file written (none when there was nothing to replay).
    pub inbox_file: Option<PathBuf>,
}

/// Moves every dead-lettered event of `spool_dir` into the replay inbox.
pub fn queue_dead_letters(spool_dir: &Path) -> Result<Queued, SpoolError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    // Older first: the rotated file, then the current one.
    for (index, name) in ["dead-letter.jsonl.1", "dead-letter.jsonl"]
        .iter()
        .enumerate()
    {
        let from = spool_dir.join(name);
        if from.exists() {
            let to = spool_dir.join(format!("{CLAIMED_PREFIX}{stamp}-{index}.jsonl"));
            fs::rename(&from, &to).map_err(|source| io_error(&from, source))?;
        }
    }
    // Claimed files: these, and any a crashed earlier run left behind.
    let mut claimed: Vec<PathBuf> = fs::read_dir(spool_dir)
        .map_err(|source| io_error(spool_dir, source))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(CLAIMED_PREFIX))
        })
        .collect();
    claimed.sort();
    let mut queued = Queued::default();
    let mut events = String::new();
    let mut unreplayable = String::new();
    for path in &claimed {
        let text = fs::read_to_string(path).map_err(|source| io_error(path, source))?;
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            queued.entries += 1;
            match entry_events(line) {
                Some(envelopes) => {
                    for envelope in envelopes {
                        let json = serde_json::to_string(&envelope)
                            .map_err(|source| io_error(path, std::io::Error::other(source)))?;
                        events.push_str(&json);
                        events.push('\n');
                        queued.events += 1;
                    }
                }
                None => {
                    queued.unreplayable += 1;
                    unreplayable.push_str(line);
                    unreplayable.push('\n');
                }
            }
        }
    }
    if !events.is_empty() {
        let inbox = spool_dir.join(INBOX_DIR);
        fs::create_dir_all(&inbox).map_err(|source| io_error(&inbox, source))?;
        let file = inbox.join(format!("{stamp}-{}.jsonl", std::process::id()));
        write_durably(&file, events.as_bytes())?;
        queued.inbox_file = Some(file);
    }
    if !unreplayable.is_empty() {
        let path = spool_dir.join(UNREPLAYABLE);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| io_error(&path, source))?;
        file.write_all(unreplayable.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|source| io_error(&path, source))?;
    }
    for path in &claimed {
        fs::remove_file(path).map_err(|source| io_error(path, source))?;
    }
    Ok(queued)
}

/// The envelopes of one dead-letter line, or `None` when it cannot be replayed.
fn entry_events(line: &str) -> Option<Vec<Envelope>> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    entry["events"]
        .as_array()?
        .iter()
        .map(|event| serde_json::from_value::<Envelope>(event.clone()).ok())
        .collect()
}

/// Temp file, fsync, rename, fsync of the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let temp = path.with_extension("jsonl.tmp");
    let mut file = fs::File::create(&temp).map_err(|source| io_error(&temp, source))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(&temp, source))?;
    fs::rename(&temp, path).map_err(|source| io_error(path, source))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| io_error(dir, source))?;
    }
    Ok(())
}

/// The sender's side: pushes the events of every inbox file into `spool`, then removes
/// the file. Returns how many events were pushed.
pub fn import_inbox(spool: &mut Spool) -> Result<usize, SpoolError> {
    let inbox = spool.config().dir.join(INBOX_DIR);
    let Ok(entries) = fs::read_dir(&inbox) else {
        return Ok(0);
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    let mut pushed = 0;
    for path in files {
        let text = fs::read_to_string(&path).map_err(|source| io_error(&path, source))?;
        for (number, line) in text.lines().enumerate() {
            match serde_json::from_str::<Envelope>(line) {
                Ok(envelope) => {
                    spool.push(&envelope)?;
                    pushed += 1;
                }
                Err(error) => warn!(
                    path = %path.display(),
                    line = number + 1,
                    %error,
                    "Replay inbox line is not an event; skipped."
                ),
            }
        }
        fs::remove_file(&path).map_err(|source| io_error(&path, source))?;
        info!(path = %path.display(), events = pushed, "Replayed dead-lettered events into the spool.");
    }
    Ok(pushed)
}

/// Path of the inbox of a spool directory.
pub fn inbox_dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join(INBOX_DIR)
}
