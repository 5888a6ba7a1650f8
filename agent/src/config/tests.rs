//! Unit tests of `config`.

use super::*;
use ballast_model::GuardMode;

fn parse(text: &str) -> Result<RawConfig, ConfigError> {
    RawConfig::from_yaml(text, Path::new("agent.yaml"))
}

#[test]
fn defaults_validate() {
    let settings = RawConfig::default()
        .validate("pve1")
        .expect("defaults are valid");
    assert_eq!(settings.host_id, "pve1");
    assert_eq!(settings.poll_interval, Duration::from_secs(10));
    assert_eq!(settings.history_samples, 360);
    assert_eq!(settings.metrics_listen, None);
}

#[test]
fn the_default_yaml_reads_back_as_the_defaults() {
    let yaml = RawConfig::default_yaml();
    assert_eq!(parse(&yaml).expect("parses"), RawConfig::default());
}

#[test]
fn unknown_keys_are_errors_that_name_the_key_and_line() {
    let error = parse("poll_interval_secs: 5\npoll_intervall_secs: 5\n").expect_err("typo");
    let message = error.to_string();
    assert!(message.contains("agent.yaml"), "{message}");
    assert!(message.contains("poll_intervall_secs"), "{message}");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn wrong_types_name_the_field() {
    let message = parse("history_secs: an hour\n")
        .expect_err("type")
        .to_string();
    assert!(
        message.contains("history_secs") || message.contains("line 1"),
        "{message}"
    );
}

#[test]
fn values_are_checked_against_each_other() {
    let raw = parse("poll_interval_secs: 60\nhistory_secs: 30\n").expect("parses");
    assert_eq!(
        raw.validate("h"),
        Err(ValidationError::HistoryShorterThanPoll {
            history: 30,
            poll: 60
        })
    );
    let raw = parse("metrics:\n  listen: localhost\n").expect("parses");
    assert_eq!(
        raw.validate("h"),
        Err(ValidationError::MetricsListen("localhost".into()))
    );
    let raw = parse("collector:\n  url: collector:8470\n").expect("parses");
    assert!(matches!(
        raw.validate("h"),
        Err(ValidationError::CollectorUrl(_))
    ));
    let raw = parse("collector:\n  url: http://10.0.0.5:8470\n").expect("parses");
    let message = raw.validate("h").expect_err("clear text").to_string();
    assert!(message.contains("collector.url"), "{message}");
    assert!(
        message.contains("collector.allow_insecure_http"),
        "{message}"
    );
    let raw = parse("collector:\n  url: http://10.0.0.5:8470\n  allow_insecure_http: true\n")
        .expect("parses");
    assert!(raw.validate("h").is_ok());
    let raw = parse("collector:\n  url: http://127.0.0.1:8470\n").expect("parses");
    assert!(raw.validate("h").is_ok());
    let raw = parse("collector:\n  url: https://c.example\n  ca_file: /nonexistent/ca.pem\n")
        .expect("parses");
    let message = raw.validate("h").expect_err("missing CA").to_string();
    assert!(message.contains("/nonexistent/ca.pem"), "{message}");
    let raw = parse("state_dir: var/lib\n").expect("parses");
    assert!(matches!(
        raw.validate("h"),
        Err(ValidationError::RelativeStateDir(_))
    ));
    let raw = parse("host_id: 'bad host'\n").expect("parses");
    assert!(matches!(raw.validate("h"), Err(ValidationError::HostId(_))));
    let raw = parse("log_level: loud\n").expect("parses");
    assert!(matches!(
        raw.validate("h"),
        Err(ValidationError::LogLevel { .. })
    ));
    let raw = parse("log_level: 'info,ballast_agent::capture=debug'\n").expect("parses");
    assert!(raw.validate("h").is_ok());
}

#[test]
fn every_key_of_the_example_is_documented() {
    let yaml = RawConfig::default_yaml();
    let lines: Vec<&str> = yaml.lines().collect();
    for (index, line) in lines.iter().enumerate().skip(2) {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let previous = lines[index - 1].trim_start();
        assert!(previous.starts_with('#'), "undocumented key: {line}");
    }
}

#[test]
fn an_empty_file_means_defaults() {
    assert_eq!(parse("").expect("empty"), RawConfig::default());
}

#[test]
fn guest_agent_modes_parse_and_old_booleans_map_with_a_deprecation() {
    for (text, mode) in [
        ("off", GuestAgentMode::Off),
        ("on_suspicion", GuestAgentMode::OnSuspicion),
        ("periodic", GuestAgentMode::Periodic),
        ("true", GuestAgentMode::OnSuspicion),
        ("false", GuestAgentMode::Off),
    ] {
        let yaml = format!("capture:\n  guest_agent: {text}\n");
        let raw = parse(&yaml).expect(text);
        assert_eq!(raw.capture.guest_agent, mode, "{text}");
        let deprecations = RawConfig::deprecations(&yaml);
        if text == "true" || text == "false" {
            assert_eq!(deprecations.len(), 1, "{text}");
            assert!(
                deprecations[0].contains(&format!("capture.guest_agent: {mode}")),
                "{deprecations:?}"
            );
        } else {
            assert!(deprecations.is_empty(), "{text}: {deprecations:?}");
        }
    }
    assert_eq!(
        CaptureConfig::default().guest_agent,
        GuestAgentMode::OnSuspicion
    );
    assert!(!CaptureConfig::default().guest_agent_exec);
    let message = parse("capture:\n  guest_agent: always\n")
        .expect_err("unknown mode")
        .to_string();
    assert!(
        message.contains("always") && message.contains("on_suspicion"),
        "{message}"
    );
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn the_guard_defaults_to_observe_and_refuses_bad_values_by_key() {
    let defaults = RawConfig::default().validate("h").expect("valid");
    assert_eq!(defaults.guard.mode, GuardMode::Observe);
    assert_eq!(defaults.guard.host_reserve_mib, 1024);
    assert!(!defaults.guard.proxmox_raise_floor);
    let act = parse("guard:\n  mode: act\n  step_mib: 256\n  proxmox_raise_floor: true\n")
        .expect("parses")
        .validate("h")
        .expect("valid");
    assert_eq!(act.guard.settings().mode, GuardMode::Act);
    assert_eq!(act.guard.settings().step_kib, 256 * 1024);
    assert!(act.guard.proxmox_raise_floor);
    for (yaml, key) in [
        ("guard:\n  step_mib: 0\n", "guard.step_mib (0)"),
        (
            "guard:\n  host_reserve_mib: 0\n",
            "guard.host_reserve_mib (0)",
        ),
        (
            "guard:\n  max_actions_per_vm_per_hour: 0\n",
            "guard.max_actions_per_vm_per_hour (0)",
        ),
        (
            "guard:\n  max_actions_per_host_per_minute: 601\n",
            "guard.max_actions_per_host_per_minute (601)",
        ),
        (
            "guard:\n  poll_interval_secs: 3601\n",
            "guard.poll_interval_secs (3601)",
        ),
    ] {
        let error = parse(yaml)
            .expect("parses")
            .validate("h")
            .expect_err(yaml)
            .to_string();
        assert!(error.starts_with(key), "{yaml}: {error}");
    }
    let message = parse("guard:\n  mode: always\n")
        .expect_err("unknown mode")
        .to_string();
    assert!(
        message.contains("always") && message.contains("line 2"),
        "{message}"
    );
    let typo = parse("guard:\n  step_mb: 64\n").expect_err("unknown key");
    assert!(typo.to_string().contains("step_mb"), "{typo}");
}

#[test]
fn periodic_needs_an_interval_of_a_minute_and_load_reports_deprecations() {
    let raw = parse("capture:\n  guest_agent: periodic\n  guest_agent_interval_secs: 0\n")
        .expect("parses");
    assert_eq!(
        raw.validate("h"),
        Err(ValidationError::GuestAgentInterval(0))
    );
    let raw = parse("capture:\n  guest_agent: on_suspicion\n  guest_agent_interval_secs: 0\n")
        .expect("parses");
    assert!(
        raw.validate("h").is_ok(),
        "the interval only matters for periodic"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, "capture:\n  guest_agent: true\n").expect("write");
    let settings = load(Some(&file), "h").expect("loads");
    assert_eq!(settings.capture.guest_agent, GuestAgentMode::OnSuspicion);
    assert_eq!(
        settings.deprecations.len(),
        1,
        "{:?}",
        settings.deprecations
    );
}

#[test]
fn guest_psi_is_auto_every_30_s_and_check_config_refuses_a_bad_mode_or_interval() {
    let defaults = RawConfig::default().validate("h").expect("defaults");
    assert_eq!(defaults.pressure.guest_psi, GuestPsiMode::Auto);
    assert_eq!(defaults.pressure.psi_interval(), Duration::from_secs(30));
    assert!(defaults.pressure.reads_psi(&defaults.capture));
    let off_capture = parse("capture:\n  guest_agent: off\n")
        .expect("parses")
        .validate("h")
        .expect("valid");
    assert!(
        !off_capture.pressure.reads_psi(&off_capture.capture),
        "no guest agent call at all when capture.guest_agent is off"
    );
    let off = parse("pressure:\n  guest_psi: off\n  guest_psi_interval_secs: 5\n")
        .expect("parses")
        .validate("h")
        .expect("valid");
    assert!(!off.pressure.reads_psi(&off.capture));
    for interval in [0, 4, 3601] {
        let raw = parse(&format!(
            "pressure:\n  guest_psi_interval_secs: {interval}\n"
        ))
        .expect("parses");
        assert_eq!(
            raw.validate("h"),
            Err(ValidationError::GuestPsiInterval(interval))
        );
    }
    let message = parse("pressure:\n  guest_psi: always\n")
        .expect_err("unknown mode")
        .to_string();
    assert!(
        message.contains("pressure.guest_psi")
            || message.contains("off, auto")
            || message.contains("`auto`"),
        "{message}"
    );
}

#[test]
fn the_guards_own_poll_runs_only_when_on_and_faster_than_the_agents() {
    let ten = Duration::from_secs(10);
    let defaults = RawConfig::default().validate("h").expect("valid");
    assert_eq!(defaults.guard.poll_interval_secs, 2);
    assert_eq!(defaults.guard.fast_poll(ten), Some(Duration::from_secs(2)));
    assert_eq!(defaults.guard.cadence(ten), Duration::from_secs(2));
    for (yaml, expected) in [
        ("guard:\n  mode: off\n", None),
        ("guard:\n  poll_interval_secs: 0\n", None),
        ("guard:\n  poll_interval_secs: 10\n", None),
        ("guard:\n  poll_interval_secs: 30\n", None),
        ("guard:\n  mode: act\n  poll_interval_secs: 1\n", Some(1)),
    ] {
        let settings = parse(yaml).expect("parses").validate("h").expect("valid");
        assert_eq!(
            settings.guard.fast_poll(ten),
            expected.map(Duration::from_secs),
            "{yaml}"
        );
        let cadence = expected.map_or(ten, Duration::from_secs);
        assert_eq!(settings.guard.cadence(ten), cadence, "{yaml}");
    }
}
