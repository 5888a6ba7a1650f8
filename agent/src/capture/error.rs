//! [`CaptureError`]: the failures of capture, each naming the file or call that failed.

use std::path::PathBuf;

use crate::hypervisor::HypervisorError;

/// Failures of capture; each names the domain's file or call that failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("Failed to read serial log {path}")]
    ReadLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to read capture state {path}")]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to write capture state {path}")]
    WriteState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to read the kernel log of {domain} through the guest agent")]
    GuestAgent {
        domain: String,
        #[source]
        source: HypervisorError,
    },
}
