//! The subcommands behind the binary's command line, one file each (`run` is
//! [`crate::daemon`]). This is the binary's edge: errors are `anyhow`, and
//! [`exit_code`] maps them to the documented exit codes.

pub mod check_config;
pub mod explain;
pub mod spool;
pub mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{self, Settings};
use crate::paths;

/// Errors that mean "bad input": exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Exit 2 when the input or configuration could not be read or is invalid, 1 on
/// other errors.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    let usage = error.chain().any(|cause| {
        cause.is::<UsageError>()
            || cause.is::<config::ConfigError>()
            || cause.is::<config::ValidationError>()
    });
    ExitCode::from(if usage { 2 } else { 1 })
}

/// This host's name, the default `host_id`.
pub fn system_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// The explicit file, else the default file when it exists, else the defaults.
pub fn load_settings(path: Option<&Path>) -> anyhow::Result<Settings> {
    Ok(config::load(
        config_file(path).as_deref(),
        &system_host_name(),
    )?)
}

/// The file `run` reads: the explicit one, else the default file when it exists.
pub fn config_file(path: Option<&Path>) -> Option<PathBuf> {
    let default = Path::new(paths::CONFIG_FILE);
    path.or_else(|| default.exists().then_some(default))
        .map(Path::to_path_buf)
}
