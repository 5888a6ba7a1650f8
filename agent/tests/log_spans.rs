//! The agent's log names the VM of every per-VM line through a `vm{domain=.. name=..}`
//! span, as an admin reading the journal sees it. A process of its own: the log
//! subscriber is the global one, as in `ballast-agent run` (a thread-local one would
//! miss call sites that other tests' threads cached as uninteresting).

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ballast_agent::config::RawConfig;
use ballast_agent::hypervisor::fake::{FakeDomain, FakeHypervisor};
use ballast_agent::hypervisor::{DomainConfig, DomainId};
use ballast_agent::run::{Handles, JsonLinesOutlet, Monitor};
use ballast_testenv::wait_until_showing;

/// The lab's balloon OOM as the serial console showed it.
const LAB_LOG: &str = include_str!(
    "../../crates/ballast-oom/tests/fixtures/oom/lab-debian12-6.1-balloon-200m-of-512m.serial.log"
);

/// Everything logged, as the journal would show it.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .expect("append to the serial log");
}

#[test]
fn per_vm_log_lines_run_in_a_span_naming_the_vm() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let dir = tempfile::tempdir().expect("tempdir");
    let serial = dir.path().join("web-1.log");
    std::fs::write(&serial, "[    0.500000] Linux version 6.1\n").expect("serial log");
    let id = DomainId {
        uuid: "6f1c2a9e-0d4b-4f8e-9a51-3c7d2e8b1f40".to_string(),
        name: "web-1".to_string(),
    };
    let hypervisor = Arc::new(FakeHypervisor::new());
    hypervisor.set(
        id.clone(),
        FakeDomain {
            running: true,
            config: DomainConfig {
                balloon_present: true,
                serial_log_path: Some(serial.clone()),
                ..DomainConfig::default()
            },
            ..FakeDomain::default()
        },
    );
    let yaml = format!(
        "poll_interval_secs: 1\nstate_dir: {}\ncapture:\n  host_kernel: false\n  guest_agent: off\n",
        dir.path().join("state").display()
    );
    let settings = RawConfig::from_yaml(&yaml, Path::new("test.yaml"))
        .expect("yaml")
        .validate("host")
        .expect("settings");
    let handles = Handles::new(&settings);
    let events = dir.path().join("events.jsonl");
    let monitor = Monitor::new(
        settings,
        hypervisor,
        Box::new(JsonLinesOutlet::new(events.clone())),
        handles,
    );
    let commands = monitor.commands();
    let thread = std::thread::spawn(move || monitor.run());

    let span = format!("vm{{domain={} name=web-1}}: ", id.uuid);
    let logged = |message: &str| {
        logs.text()
            .lines()
            .any(|line| line.contains(&span) && line.contains(message))
    };
    for (message, then) in [
        ("VM appeared.", Some(LAB_LOG)),
        ("Guest OOM captured.", None),
    ] {
        wait_until_showing(
            &format!("a {message:?} line in {span:?}"),
            Duration::from_secs(30),
            || logged(message),
            || logs.text(),
        );
        if let Some(text) = then {
            append(&serial, text);
        }
    }
    commands.stop();
    thread.join().expect("monitor thread");

    let text = logs.text();
    for message in ["VM appeared.", "Guest OOM captured."] {
        assert!(logged(message), "no {message:?} line in {span:?}:\n{text}");
    }
    // The fields live in the span, not repeated on the line.
    let oom_line = text
        .lines()
        .find(|line| line.contains("Guest OOM captured."))
        .expect("the OOM line");
    assert_eq!(oom_line.matches(id.uuid.as_str()).count(), 1, "{oom_line}");
    assert!(
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .contains("/oom/"),
        "the OOM event was emitted"
    );
}
