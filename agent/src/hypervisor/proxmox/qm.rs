//! `qm set <vmid> --balloon <MiB>`: the guard raises a VM's persistent balloon floor
//! (only where `guard.proxmox_raise_floor` allows it; docs/guard.md). `qm` is run from
//! PATH with a deadline; its stderr (bounded) becomes the error text.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a `qm set` may take (it takes the cluster config lock).
pub const QM_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes of `qm`'s stderr kept for the error.
const MAX_STDERR: u64 = 1024;

/// Runs `qm set <vmid> --balloon <floor_mib>` with `qm` (the agent passes
/// `Command::new("qm")`); the error says what `qm` said.
pub fn set_balloon_floor(
    mut qm: Command,
    vmid: u32,
    floor_mib: u64,
    timeout: Duration,
) -> Result<(), String> {
    let mut child = qm
        .args([
            "set",
            &vmid.to_string(),
            "--balloon",
            &floor_mib.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("qm could not be run: {error}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("qm set did not finish within {timeout:?}"));
            }
            Err(error) => return Err(format!("qm set: {error}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(pipe) = child.stderr.take() {
        let _ = pipe.take(MAX_STDERR).read_to_string(&mut stderr);
    }
    let said: String = stderr
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Err(format!(
        "qm set {vmid} --balloon {floor_mib} failed ({status}): {said}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn mock_qm(dir: &std::path::Path, fail: bool) -> Command {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/mock-pve/bin/qm");
        let mut command = Command::new(path);
        command
            .env("BALLAST_PVE_RUN_DIR", dir.join("run"))
            .env("BALLAST_PVE_CONFIG_DIR", dir.join("conf"));
        if fail {
            command.env("BALLAST_MOCK_PVE_FAIL", "set");
        }
        command
    }

    #[test]
    fn qm_set_rewrites_the_balloon_floor_against_mock_qm() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(dir.path().join("conf")).expect("conf dir");
        let conf = dir.path().join("conf/104.conf");
        std::fs::write(&conf, "memory: 2048\nballoon: 512\nname: web\n").expect("conf");
        set_balloon_floor(mock_qm(dir.path(), false), 104, 1152, QM_TIMEOUT).expect("qm set");
        let text = std::fs::read_to_string(&conf).expect("conf");
        assert!(text.contains("balloon: 1152\n"), "{text}");
        assert!(!text.contains("balloon: 512"), "{text}");
        assert!(text.contains("memory: 2048"), "{text}");
        // A refusal carries qm's own words; a missing VM too.
        let error = set_balloon_floor(mock_qm(dir.path(), true), 104, 1280, QM_TIMEOUT)
            .expect_err("mock failure");
        assert!(error.contains("mock failure"), "{error}");
        let error = set_balloon_floor(mock_qm(dir.path(), false), 999, 1280, QM_TIMEOUT)
            .expect_err("no such VM");
        assert!(error.contains("999.conf"), "{error}");
        let missing = set_balloon_floor(Command::new("/nonexistent/qm"), 104, 1, QM_TIMEOUT)
            .expect_err("no qm");
        assert!(missing.contains("could not be run"), "{missing}");
    }
}
