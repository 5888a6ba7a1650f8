//! Small state files: a `key=value` text format and an atomic write
//! (temp file + fsync + rename + directory fsync).
//!
//! Internal state is not a wire type, so it is not `Serialize`; the format is
//! line-based so an operator can read it:
//! ```text
//! ballast-capture serial 1
//! dev=2049
//! ino=1835021
//! ```
//! Unknown keys are ignored; a file with another header or version reads as absent.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::CaptureError;

/// Key/value pairs of one state file, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateFile {
    pub values: BTreeMap<String, String>,
    /// Free-form lines after the `--` separator (e.g. dedupe records).
    pub records: Vec<String>,
}

impl StateFile {
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.values.get(key)?.parse().ok()
    }

    pub fn set(&mut self, key: &str, value: impl ToString) {
        self.values.insert(key.to_owned(), value.to_string());
    }

    fn render(&self, kind: &str) -> String {
        let mut text = format!("ballast-capture {kind} 1\n");
        for (key, value) in &self.values {
            text.push_str(key);
            text.push('=');
            text.push_str(value);
            text.push('\n');
        }
        if !self.records.is_empty() {
            text.push_str("--\n");
            for record in &self.records {
                text.push_str(record);
                text.push('\n');
            }
        }
        text
    }

    fn parse(kind: &str, text: &str) -> Option<StateFile> {
        let mut lines = text.lines();
        if lines.next()? != format!("ballast-capture {kind} 1") {
            return None;
        }
        let mut state = StateFile::default();
        let mut in_records = false;
        for line in lines {
            if in_records {
                state.records.push(line.to_owned());
            } else if line == "--" {
                in_records = true;
            } else if let Some((key, value)) = line.split_once('=') {
                state.values.insert(key.to_owned(), value.to_owned());
            }
        }
        Some(state)
    }
}

/// The state file of one domain: `<dir>/<uuid>.<kind>`. UUIDs from the
/// hypervisor are sanitized so a strange one cannot leave the directory.
pub fn state_path(dir: &Path, uuid: &str, kind: &str) -> PathBuf {
    let safe: String = uuid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    dir.join(format!("{safe}.{kind}"))
}

/// Reads a state file; `Ok(None)` when it does not exist or is not ours.
pub fn load(path: &Path, kind: &str) -> Result<Option<StateFile>, CaptureError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let state = StateFile::parse(kind, &text);
            if state.is_none() {
                tracing::warn!(path = %path.display(), "Ignoring unreadable capture state file.");
            }
            Ok(state)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) if error.kind() == io::ErrorKind::InvalidData => Ok(None),
        Err(source) => Err(CaptureError::ReadState {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a state file atomically: temp file, fsync, rename, fsync of the directory.
pub fn store(path: &Path, kind: &str, state: &StateFile) -> Result<(), CaptureError> {
    let error = |source| CaptureError::WriteState {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(error)?;
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(".tmp");
    let temp = PathBuf::from(temp_name);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(error)?;
        file.write_all(state.render(kind).as_bytes())
            .map_err(error)?;
        file.sync_all().map_err(error)?;
    }
    fs::rename(&temp, path).map_err(error)?;
    // The rename is durable only once the directory entry is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(error)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh empty directory under the system temp dir, removed on drop.
    pub(crate) fn temp_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("ballast-capture-{name}-"))
            .tempdir()
            .expect("create temp dir")
    }

    #[test]
    fn round_trip_and_foreign_files() {
        let dir = temp_dir("state");
        let path = state_path(dir.path(), "../../etc/x", "serial");
        assert!(path.starts_with(dir.path()));
        assert_eq!(load(&path, "serial").expect("load"), None);
        let mut state = StateFile::default();
        state.set("ino", 42);
        state.records.push("a b c".to_owned());
        store(&path, "serial", &state).expect("store");
        assert_eq!(load(&path, "serial").expect("load"), Some(state.clone()));
        assert_eq!(load(&path, "dedupe").expect("load"), None);
        assert!(!dir.path().join("______etc_x.serial.tmp").exists());
    }
}
