//! Why a crate's graph could not be built: a file unread, Rust the parser rejects
//! (with its line and column), or no crate root.

use std::path::PathBuf;

/// Why a crate's graph could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: not Rust the parser reads: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}: neither lib.rs nor main.rs")]
    NoRoot(PathBuf),
}
