//! The host kernel log reader's saved position (`<state_dir>/host-kmsg.seq`): the
//! boot id, the sequence number to resume from and the emitted watermark, written
//! atomically.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The saved position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) boot_id: String,
    /// Records with a smaller sequence number were handled.
    pub(super) resume: u64,
    /// Reports starting before this sequence number were emitted.
    pub(super) emitted: u64,
}

impl Position {
    pub(super) fn render(&self) -> String {
        format!(
            "boot={}\nresume={}\nemitted={}\n",
            self.boot_id, self.resume, self.emitted
        )
    }

    pub(super) fn parse(text: &str) -> Option<Position> {
        let mut position = Position::default();
        let (mut resume, mut emitted) = (None, None);
        for line in text.lines() {
            match line.split_once('=') {
                Some(("boot", value)) => position.boot_id = value.trim().to_string(),
                Some(("resume", value)) => resume = value.trim().parse().ok(),
                Some(("emitted", value)) => emitted = value.trim().parse().ok(),
                _ => {}
            }
        }
        position.resume = resume?;
        position.emitted = emitted?;
        Some(position)
    }
}

pub(super) fn read_boot_id(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .unwrap_or_default()
}

pub(super) fn load_position(path: &Path) -> Option<Position> {
    let text = std::fs::read_to_string(path).ok()?;
    let position = Position::parse(&text);
    if position.is_none() {
        tracing::warn!(path = %path.display(), "Ignoring an unreadable host kernel log position.");
    }
    position
}

/// Temp file, fsync, rename, fsync of the directory.
pub(super) fn store_position(path: &Path, position: &Position) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(position.render().as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, path)?;
    File::open(dir)?.sync_all()
}
