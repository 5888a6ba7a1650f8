//! What can go wrong in the spool ([`SpoolError`]), and the file operations that
//! map I/O errors to it (a full disk or quota is [`SpoolError::DiskFull`]).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// The spool failed to do what was asked; variants name the action.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("Disk full while writing {path}")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Spool full: {needed_bytes} bytes do not fit under the cap of {max_bytes} bytes")]
    Full { needed_bytes: u64, max_bytes: u64 },
    #[error("Event {key} is {bytes} bytes, above the record limit of {max_bytes}")]
    RecordTooLarge {
        key: String,
        bytes: usize,
        max_bytes: u32,
    },
    #[error("Failed to encode event {key}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Failed to create spool directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SpoolError {
    /// ENOSPC (or a quota): the caller should keep running and try again later.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SpoolError::DiskFull { .. })
    }
}

/// Maps an I/O error on `path`; ENOSPC and quota errors become [`SpoolError::DiskFull`].
pub(super) fn io_error(path: &Path, source: std::io::Error) -> SpoolError {
    let disk_full = matches!(
        source.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || source.raw_os_error() == Some(ENOSPC);
    let path = path.to_path_buf();
    if disk_full {
        SpoolError::DiskFull { path, source }
    } else {
        SpoolError::Write { path, source }
    }
}

/// ENOSPC on Linux (for kernels/filesystems whose error `kind()` is not mapped).
const ENOSPC: i32 = 28;

pub(super) fn remove(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SpoolError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// fsyncs a directory so created, renamed and removed entries are durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| io_error(dir, source))
}
