//! The harness's error type: one variant per failed action, carrying what failed.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while providing real guests to a test.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host tool the harness needs is not installed.
    #[error("Required tool {tool} not found (install with scripts/install-deps.sh)")]
    MissingTool { tool: String },
    /// A command could not be started at all.
    #[error("Failed to run {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A command ran and reported failure.
    #[error("Command `{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// A file or directory could not be read, written or removed.
    #[error("Failed to access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something the harness waited for did not happen in time.
    #[error("Timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },
    /// No usable guest kernel of the requested series in /boot nor in the lab's
    /// unpacked kernel packages.
    #[error("No guest kernel {series}.* in /boot with modules in /lib/modules, nor unpacked under {} (install with scripts/install-deps.sh)", lab_kernels.display())]
    KernelNotFound {
        series: String,
        lab_kernels: PathBuf,
    },
    /// A tool printed something the harness cannot read.
    #[error("Unexpected output from {what}: {detail}")]
    Parse { what: String, detail: String },
    /// QEMU's monitor (QMP) answered a command with an error.
    #[error("QMP command {command} failed: {message}")]
    Qmp { command: String, message: String },
    /// The guest agent answered a command with an error.
    #[error("Guest agent command {command} failed: {message}")]
    Agent { command: String, message: String },
    /// A UNIX socket path does not fit into sockaddr_un.
    #[error("Socket path too long ({len} bytes, at most 107): {path}")]
    SocketPathTooLong { path: PathBuf, len: usize },
    /// A virtio-mem resize the scenario needed to converge stopped short instead.
    #[error("virtio-mem {id} of {guest} stalled at {plugged_kib} KiB plugged, {requested_kib} KiB requested")]
    ResizeStalled {
        guest: String,
        id: String,
        plugged_kib: u64,
        requested_kib: u64,
    },
    /// The process-wide lab could not be set up (the first error, repeated).
    #[error("Real-VM lab unavailable: {0}")]
    Unavailable(String),
}

/// Result with the harness's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
