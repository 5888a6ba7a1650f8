//! A real `ballast-agent run` over Proxmox-style guests, for the scenario suite: the
//! agent's Proxmox backend reads the guests through a fake node root of links to their
//! sockets and configs, and writes every event to its JSON-lines journal, which
//! [`AgentRun::events`] reads back. The process is killed when dropped.
//!
//! Also the pure readings of those events a scenario needs: the lead time of `critical`
//! before an OOM ([`critical_lead_ms`]) and the episodes that reached `critical` in a
//! time window ([`critical_episodes_between`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::proxmox::ProxmoxGuest;

/// A running agent; killed (and reaped) on drop.
#[derive(Debug)]
pub struct AgentRun {
    child: Child,
    journal: PathBuf,
    log: PathBuf,
}

impl AgentRun {
    /// Starts `binary run` with its files under `dir` (which must exist and be short:
    /// the guests' socket paths are linked under it): a node root of links to the
    /// guests, a journal, a log, state, and a config polling every 2 s with guest PSI
    /// every 5 s, serial capture off (the harness holds the serial sockets), and
    /// `extra_yaml` appended (e.g. `guard:\n  mode: observe\n`); a top-level
    /// `poll_interval_secs:` line in it replaces the 2 s poll.
    pub fn start(
        binary: &Path,
        dir: &Path,
        guests: &[&ProxmoxGuest],
        extra_yaml: &str,
    ) -> Result<AgentRun> {
        Self::start_with_env(binary, dir, guests, extra_yaml, &[])
    }

    /// [`AgentRun::start`] with more environment for the agent (e.g. a `PATH` holding a
    /// mock `qm` and its `BALLAST_PVE_*` directories: see [`AgentRun::conf_dir`]).
    pub fn start_with_env(
        binary: &Path,
        dir: &Path,
        guests: &[&ProxmoxGuest],
        extra_yaml: &str,
        env: &[(String, String)],
    ) -> Result<AgentRun> {
        let run_dir = Self::run_dir(dir);
        let config_dir = Self::conf_dir(dir);
        for folder in [&run_dir, &config_dir] {
            std::fs::create_dir_all(folder).map_err(Error::io(folder))?;
        }
        for guest in guests {
            let vmid = guest.vmid();
            let links = [
                (guest.qmp_socket(), run_dir.join(format!("{vmid}.qmp"))),
                (guest.qga_socket(), run_dir.join(format!("{vmid}.qga"))),
                (
                    guest.serial_socket(),
                    run_dir.join(format!("{vmid}.serial0")),
                ),
                (guest.pidfile(), run_dir.join(format!("{vmid}.pid"))),
                (guest.conf_path(), config_dir.join(format!("{vmid}.conf"))),
            ];
            for (target, link) in links {
                std::os::unix::fs::symlink(&target, &link).map_err(Error::io(&link))?;
            }
        }
        let journal = dir.join("journal.jsonl");
        let log = dir.join("agent.log");
        let config = dir.join("agent.yaml");
        let poll = if extra_yaml
            .lines()
            .any(|line| line.starts_with("poll_interval_secs:"))
        {
            ""
        } else {
            "poll_interval_secs: 2\n"
        };
        let text = format!(
            "backend: proxmox\nproxmox:\n  run_dir: {run}\n  config_dir: {conf}\n\
             state_dir: {state}\njournal_file: {journal}\nhost_id: scenario\n\
             {poll}capture:\n  host_kernel: false\n  serial: false\n\
             pressure:\n  guest_psi_interval_secs: 5\n{extra_yaml}",
            run = run_dir.display(),
            conf = config_dir.display(),
            state = dir.join("state").display(),
            journal = journal.display(),
        );
        std::fs::write(&config, text).map_err(Error::io(&config))?;
        let log_file = std::fs::File::create(&log).map_err(Error::io(&log))?;
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(&config)
            .env("BALLAST_LOG", "info")
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(Error::io(binary))?;
        Ok(AgentRun {
            child,
            journal,
            log,
        })
    }

    /// The agent's Proxmox config directory under `dir` (links to the guests' configs;
    /// a `qm set` replaces a link with the file it writes) and its run directory.
    pub fn conf_dir(dir: &Path) -> PathBuf {
        dir.join("conf")
    }

    pub fn run_dir(dir: &Path) -> PathBuf {
        dir.join("run")
    }

    /// The journal's events of `kind` (`pressure`, `guard`, `rollup`, ...) for the VM
    /// `vmid` (its `vm.uuid` on Proxmox), in journal order. Lines that do not parse
    /// are skipped (the last one may be half written).
    pub fn events(&self, kind: &str, vmid: u32) -> Vec<Value> {
        let uuid = vmid.to_string();
        std::fs::read_to_string(&self.journal)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["type"] == kind && event["vm"]["uuid"] == uuid.as_str())
            .collect()
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl AgentRun {
    /// The agent's process id (to read its CPU time from `/proc/<pid>/stat`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ballast-agent check-config` on a config carrying `guard:\n  mode: act`: does
/// this agent accept the guard's act mode? (An agent without the guard rejects the
/// unknown key.)
pub fn agent_supports_act(binary: &Path, dir: &Path) -> Result<bool> {
    let config = dir.join("act-probe.yaml");
    std::fs::write(
        &config,
        format!(
            "backend: proxmox\nstate_dir: {}\nguard:\n  mode: act\n",
            dir.join("probe-state").display()
        ),
    )
    .map_err(Error::io(&config))?;
    let output = Command::new(binary)
        .arg("check-config")
        .arg(&config)
        .output()
        .map_err(Error::io(binary))?;
    Ok(output.status.success())
}

fn at_ms(event: &Value) -> Option<i64> {
    event["at_ms"].as_i64()
}

/// How long before `killed_at_ms` the first `critical` pressure event (start or peak)
/// after `from_ms` came: the warning a guard had. None without one before the kill.
pub fn critical_lead_ms(pressure: &[Value], from_ms: u64, killed_at_ms: u64) -> Option<u64> {
    let from = i64::try_from(from_ms).ok()?;
    let killed = i64::try_from(killed_at_ms).ok()?;
    pressure
        .iter()
        .filter(|event| event["level"] == "critical" && event["phase"] != "end")
        .filter_map(at_ms)
        .filter(|at| (from..=killed).contains(at))
        .min()
        .and_then(|first| u64::try_from(killed - first).ok())
}

/// The episodes (by `started_at_ms`) with a `critical` start or peak between `from_ms`
/// and `to_ms`: false alarms, in a control run.
pub fn critical_episodes_between(pressure: &[Value], from_ms: u64, to_ms: u64) -> usize {
    let (Ok(from), Ok(to)) = (i64::try_from(from_ms), i64::try_from(to_ms)) else {
        return 0;
    };
    let mut started: Vec<i64> = pressure
        .iter()
        .filter(|event| event["level"] == "critical" && event["phase"] != "end")
        .filter(|event| at_ms(event).is_some_and(|at| (from..=to).contains(&at)))
        .filter_map(|event| event["started_at_ms"].as_i64())
        .collect();
    started.sort_unstable();
    started.dedup();
    started.len()
}

/// Guard actions with `outcome` between `from_ms` and `to_ms`.
pub fn guard_actions_between(guard: &[Value], outcome: &str, from_ms: u64, to_ms: u64) -> usize {
    let (Ok(from), Ok(to)) = (i64::try_from(from_ms), i64::try_from(to_ms)) else {
        return 0;
    };
    guard
        .iter()
        .filter(|event| event["outcome"] == outcome)
        .filter(|event| at_ms(event).is_some_and(|at| (from..=to).contains(&at)))
        .count()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(phase: &str, level: &str, started: i64, at: i64) -> Value {
        json!({"type": "pressure", "phase": phase, "level": level,
               "started_at_ms": started, "at_ms": at})
    }

    #[test]
    fn lead_time_is_from_the_first_critical_before_the_kill() {
        let events = [
            event("start", "elevated", 1_000, 1_000),
            event("peak", "critical", 1_000, 5_000),
            event("peak", "critical", 1_000, 9_000),
            event("end", "critical", 1_000, 20_000),
        ];
        assert_eq!(critical_lead_ms(&events, 500, 12_000), Some(7_000));
        // A critical after the kill, or before the run, is no warning.
        assert_eq!(critical_lead_ms(&events, 500, 4_000), None);
        assert_eq!(critical_lead_ms(&events, 6_000, 8_000), None);
    }

    #[test]
    fn false_alarms_count_episodes_not_events() {
        let events = [
            event("start", "critical", 1_000, 1_000),
            event("peak", "critical", 1_000, 3_000),
            event("start", "elevated", 8_000, 8_000),
            event("start", "critical", 30_000, 30_000),
        ];
        assert_eq!(critical_episodes_between(&events, 0, 10_000), 1);
        assert_eq!(critical_episodes_between(&events, 0, 40_000), 2);
        assert_eq!(critical_episodes_between(&events, 5_000, 10_000), 0);
    }

    #[test]
    fn guard_actions_count_by_outcome_in_the_window() {
        let guard = [
            json!({"outcome": "would_deflate", "at_ms": 10}),
            json!({"outcome": "deflated", "at_ms": 20}),
            json!({"outcome": "would_deflate", "at_ms": 30}),
        ];
        assert_eq!(guard_actions_between(&guard, "would_deflate", 0, 25), 1);
        assert_eq!(guard_actions_between(&guard, "would_deflate", 0, 30), 2);
    }
}
