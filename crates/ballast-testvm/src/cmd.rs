//! Running host commands: capture output, turn failures into [`Error`]s.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::error::{Error, Result};

/// Runs `program args...` and returns its stdout; a non-zero exit is an error.
pub(crate) fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    run_command(&mut command)
}

/// Runs a prepared command and returns its stdout; a non-zero exit is an error.
pub(crate) fn run_command(command: &mut Command) -> Result<String> {
    let output = output_of(command)?;
    if !output.status.success() {
        return Err(Error::CommandFailed {
            command: describe(command),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a prepared command (stdin closed) and returns its output whatever the exit status.
pub(crate) fn output_of(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: describe(command),
            source,
        })
}

/// `program arg arg` for error messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Finds `name` in PATH (plus the sbin directories a non-root PATH may lack).
pub(crate) fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Requires every tool in `names`, naming the first one missing.
pub(crate) fn require_tools(names: &[&str]) -> Result<()> {
    match names.iter().find(|name| which(name).is_none()) {
        Some(name) => Err(Error::MissingTool {
            tool: (*name).to_owned(),
        }),
        None => Ok(()),
    }
}

/// True when a process with this PID exists and is not a zombie.
pub(crate) fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised comm, which may itself contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Sends SIGTERM (or SIGKILL with `force`) to one PID, ignoring "no such process".
pub(crate) fn kill_pid(pid: u32, force: bool) {
    let signal = if force { "-KILL" } else { "-TERM" };
    // A failure here means the process is already gone; the caller re-checks.
    let _ = output_of(Command::new("kill").arg(signal).arg(pid.to_string()));
}

/// Terminates `pid` and waits up to `timeout` for it to go away (SIGKILL after half of it).
pub(crate) fn stop_pid(pid: u32, timeout: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    kill_pid(pid, false);
    let mut forced = false;
    while pid_alive(pid) {
        if start.elapsed() > timeout {
            return false;
        }
        if !forced && start.elapsed() > timeout / 2 {
            kill_pid(pid, true);
            forced = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}
