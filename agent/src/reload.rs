//! Configuration reload on SIGHUP: which settings the running agent takes over and
//! which need a restart. Pure: two checked [`Settings`] in, a [`ReloadPlan`] out.
//!
//! The caller validates the new file completely first ([`crate::config::load`]); a
//! bad file never gets here and the running configuration stays. Then:
//! 1. [`plan`] compares the running settings with the new ones;
//! 2. every field of [`ReloadPlan::restart_required`] is logged as "field X changed:
//!    restart required" and keeps its running value;
//! 3. [`apply_live`] copies the live fields into the running settings (the monitor
//!    thread does this between two ticks).
//!
//! Live: `log_level`, `poll_interval_secs`, `capture.*`, `pressure.*`, `guard.*`,
//! `elastic.*`, `libvirt.read_qemu_counters`,
//! `procfs_root`, and `collector.url` / `collector.token_file` while a collector is
//! configured before and after (the sender takes them before its next send, also in
//! the middle of a backoff). Everything else is wired into long-lived objects at start-up
//! (the hypervisor connection, the spool, the sender, the metrics listener, the
//! per-VM history rings) and needs `systemctl restart ballast-agent`.

use crate::config::Settings;

/// What a reload changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Changed fields applied live, as `field: old -> new`.
    pub live: Vec<String>,
    /// Changed fields that keep their running value until a restart (config key names).
    pub restart_required: Vec<&'static str>,
}

impl ReloadPlan {
    /// True when the new file changes nothing.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.restart_required.is_empty()
    }
}

/// Compares the running settings with a newly validated file.
pub fn plan(running: &Settings, new: &Settings) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    let mut live = |name: &str, old: String, new: String| {
        if old != new {
            plan.live.push(format!("{name}: {old} -> {new}"));
        }
    };
    live(
        "log_level",
        running.log_level.clone(),
        new.log_level.clone(),
    );
    live(
        "poll_interval_secs",
        running.poll_interval.as_secs().to_string(),
        new.poll_interval.as_secs().to_string(),
    );
    live(
        "capture.guest_agent",
        running.capture.guest_agent.to_string(),
        new.capture.guest_agent.to_string(),
    );
    let capture = [
        ("capture.serial", running.capture.serial, new.capture.serial),
        (
            "capture.guest_agent_exec",
            running.capture.guest_agent_exec,
            new.capture.guest_agent_exec,
        ),
        (
            "capture.host_kernel",
            running.capture.host_kernel,
            new.capture.host_kernel,
        ),
        (
            "libvirt.read_qemu_counters",
            running.libvirt.read_qemu_counters,
            new.libvirt.read_qemu_counters,
        ),
    ];
    for (name, old, new) in capture {
        live(name, old.to_string(), new.to_string());
    }
    live(
        "pressure.guest_psi",
        running.pressure.guest_psi.to_string(),
        new.pressure.guest_psi.to_string(),
    );
    live(
        "pressure.guest_psi_interval_secs",
        running.pressure.guest_psi_interval_secs.to_string(),
        new.pressure.guest_psi_interval_secs.to_string(),
    );
    let guard = [
        (
            "guard.mode",
            running.guard.mode.to_string(),
            new.guard.mode.to_string(),
        ),
        (
            "guard.step_mib",
            running.guard.step_mib.to_string(),
            new.guard.step_mib.to_string(),
        ),
        (
            "guard.host_reserve_mib",
            running.guard.host_reserve_mib.to_string(),
            new.guard.host_reserve_mib.to_string(),
        ),
        (
            "guard.max_actions_per_vm_per_hour",
            running.guard.max_actions_per_vm_per_hour.to_string(),
            new.guard.max_actions_per_vm_per_hour.to_string(),
        ),
        (
            "guard.max_actions_per_host_per_minute",
            running.guard.max_actions_per_host_per_minute.to_string(),
            new.guard.max_actions_per_host_per_minute.to_string(),
        ),
        (
            "guard.proxmox_raise_floor",
            running.guard.proxmox_raise_floor.to_string(),
            new.guard.proxmox_raise_floor.to_string(),
        ),
    ];
    for (name, old, new) in guard {
        live(name, old, new);
    }
    live(
        "elastic.converge_timeout_secs",
        running.elastic.converge_timeout_secs.to_string(),
        new.elastic.converge_timeout_secs.to_string(),
    );
    live(
        "capture.guest_agent_interval_secs",
        running.capture.guest_agent_interval_secs.to_string(),
        new.capture.guest_agent_interval_secs.to_string(),
    );
    if collector_live(running, new) {
        live(
            "collector.url",
            running.collector.url.clone(),
            new.collector.url.clone(),
        );
        live(
            "collector.token_file",
            running.collector.token_file.display().to_string(),
            new.collector.token_file.display().to_string(),
        );
    }
    live(
        "procfs_root",
        running.procfs_root.display().to_string(),
        new.procfs_root.display().to_string(),
    );

    let restart = [
        ("host_id", running.host_id != new.host_id),
        ("backend", running.backend != new.backend),
        ("libvirt.uri", running.libvirt.uri != new.libvirt.uri),
        (
            "libvirt.set_stats_period_secs",
            running.libvirt.set_stats_period_secs != new.libvirt.set_stats_period_secs,
        ),
        ("proxmox", running.proxmox != new.proxmox),
        // The per-VM history rings are sized at start-up (history / poll interval).
        (
            "history_secs",
            running.history != new.history || running.history_samples != new.history_samples,
        ),
        ("state_dir", running.state_dir != new.state_dir),
        // Live while a sender runs (a url before and after); starting or stopping the
        // sender needs a restart.
        (
            "collector.url",
            running.collector.url != new.collector.url && !collector_live(running, new),
        ),
        (
            "collector.token_file",
            running.collector.token_file != new.collector.token_file
                && !collector_live(running, new),
        ),
        (
            "collector.ca_file",
            running.collector.ca_file != new.collector.ca_file
                || running.collector_ca != new.collector_ca,
        ),
        (
            "collector.allow_insecure_http",
            running.collector.allow_insecure_http != new.collector.allow_insecure_http,
        ),
        (
            "metrics.listen",
            running.metrics_listen != new.metrics_listen,
        ),
        ("journal_file", running.journal_file != new.journal_file),
        (
            "spool_max_mib",
            running.spool_max_bytes != new.spool_max_bytes,
        ),
    ];
    plan.restart_required = restart
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect();
    plan
}

/// `collector.*` is applied live when both the running and the new file name a
/// collector (the sender runs and takes the new settings).
fn collector_live(running: &Settings, new: &Settings) -> bool {
    !running.collector.url.trim().is_empty() && !new.collector.url.trim().is_empty()
}

/// Copies the live fields of `new` into `running`; restart-only fields keep their
/// running values (also `history_samples`: the rings keep their size).
pub fn apply_live(running: &mut Settings, new: &Settings) {
    running.log_level.clone_from(&new.log_level);
    running.poll_interval = new.poll_interval;
    running.capture = new.capture.clone();
    running.pressure = new.pressure.clone();
    running.guard = new.guard.clone();
    running.elastic = new.elastic.clone();
    running.libvirt.read_qemu_counters = new.libvirt.read_qemu_counters;
    running.procfs_root.clone_from(&new.procfs_root);
    if collector_live(running, new) {
        running.collector = new.collector.clone();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::RawConfig;

    fn settings(yaml: &str) -> Settings {
        RawConfig::from_yaml(yaml, Path::new("agent.yaml"))
            .expect("parses")
            .validate("pve1")
            .expect("valid")
    }

    #[test]
    fn a_fixed_collector_url_is_applied_live() {
        let mut running = settings("collector:\n  url: http://127.0.0.1:8470/wrong/\n");
        let new = settings("collector:\n  url: http://127.0.0.1:8470\n");
        let plan = plan(&running, &new);
        assert_eq!(
            plan.live,
            ["collector.url: http://127.0.0.1:8470/wrong/ -> http://127.0.0.1:8470"]
        );
        assert!(plan.restart_required.is_empty(), "{plan:?}");
        apply_live(&mut running, &new);
        assert_eq!(running.collector.url, "http://127.0.0.1:8470");
        // Adding a collector to an agent without one starts a sender: a restart.
        let none = settings("poll_interval_secs: 10\n");
        assert_eq!(super::plan(&none, &new).restart_required, ["collector.url"]);
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let running = settings("poll_interval_secs: 10\n");
        assert!(plan(&running, &running.clone()).is_empty());
    }

    #[test]
    fn live_fields_are_applied_and_restart_fields_kept() {
        let mut running = settings("poll_interval_secs: 10\nhistory_secs: 600\n");
        let new = settings(
            "poll_interval_secs: 2\nhistory_secs: 600\nlog_level: debug\n\
             capture:\n  serial: false\nhost_id: other\nmetrics:\n  listen: 127.0.0.1:9471\n",
        );
        let plan = plan(&running, &new);
        assert_eq!(
            plan.live,
            [
                "log_level: info -> debug",
                "poll_interval_secs: 10 -> 2",
                "capture.serial: true -> false"
            ]
        );
        // 600 s / 2 s is another ring size: a restart resizes the rings.
        assert_eq!(
            plan.restart_required,
            ["host_id", "history_secs", "metrics.listen"]
        );
        apply_live(&mut running, &new);
        assert_eq!(running.poll_interval.as_secs(), 2);
        assert_eq!(
            running.collector.url, "",
            "no collector before: no sender to take one"
        );
        assert_eq!(running.log_level, "debug");
        assert!(!running.capture.serial);
        assert_eq!(running.host_id, "pve1", "host_id needs a restart");
        assert_eq!(
            running.metrics_listen, None,
            "metrics.listen needs a restart"
        );
        assert_eq!(running.history_samples, 60, "the rings keep their size");
    }

    #[test]
    fn the_guard_mode_and_limits_change_live() {
        let mut running = settings("poll_interval_secs: 10\n");
        let new = settings("guard:\n  mode: act\n  step_mib: 64\n");
        let plan = plan(&running, &new);
        assert_eq!(
            plan.live,
            ["guard.mode: observe -> act", "guard.step_mib: 128 -> 64"]
        );
        assert!(plan.restart_required.is_empty(), "{plan:?}");
        apply_live(&mut running, &new);
        assert_eq!(running.guard.mode, ballast_model::GuardMode::Act);
        assert_eq!(running.guard.settings().step_kib, 64 * 1024);
    }

    #[test]
    fn the_guest_agent_mode_and_exec_change_live() {
        let mut running = settings("capture:\n  guest_agent: periodic\n");
        let new = settings("capture:\n  guest_agent: off\n  guest_agent_exec: true\n");
        let plan = plan(&running, &new);
        assert_eq!(
            plan.live,
            [
                "capture.guest_agent: periodic -> off",
                "capture.guest_agent_exec: false -> true"
            ]
        );
        assert!(
            plan.restart_required.is_empty(),
            "{:?}",
            plan.restart_required
        );
        apply_live(&mut running, &new);
        assert_eq!(
            running.capture.guest_agent,
            crate::config::GuestAgentMode::Off
        );
        assert!(running.capture.guest_agent_exec);
    }
}
