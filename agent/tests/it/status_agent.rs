//! A real `ballast-agent run` on the local libvirt for the agent's real-VM tests that
//! read its status file: a fresh state directory, the agent polling every 2 s with
//! `extra_yaml` appended (killed when dropped), and a VM's line of `status.json`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The running agent; killed (and reaped) on drop.
pub(crate) struct StatusAgent {
    child: Child,
    /// Its state directory (`status.json`, `agent.log`, `journal.jsonl`).
    pub dir: PathBuf,
}

impl StatusAgent {
    /// Starts the agent with its state in a fresh `<temp>/ballast-agent-<label>-<pid>`.
    pub(crate) fn start(label: &str, extra_yaml: &str) -> StatusAgent {
        let dir =
            std::env::temp_dir().join(format!("ballast-agent-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("state dir");
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "state_dir: {dir}\npoll_interval_secs: 2\nhost_id: test-host\n\
                 journal_file: {dir}/journal.jsonl\n{extra_yaml}",
                dir = dir.display()
            ),
        )
        .expect("config written");
        let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_ballast-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .env("BALLAST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ballast-agent starts");
        StatusAgent { child, dir }
    }
}

impl Drop for StatusAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status line of the VM named `name` in `dir/status.json`.
pub(crate) fn vm_status(dir: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join("status.json")).ok()?;
    let status: Value = serde_json::from_str(&text).ok()?;
    status["vms"]
        .as_array()?
        .iter()
        .find(|vm| vm["name"] == name)
        .cloned()
}
