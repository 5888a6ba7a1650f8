//! The real `ballast-collector serve` under a stand-in for systemd: a unix datagram
//! socket as `$NOTIFY_SOCKET` receives READY=1 once it listens, RELOADING=1 and
//! READY=1 around a SIGHUP reload. Observed from the outside: which read token the
//! query API accepts, the log, the process staying up. With `$WATCHDOG_USEC` set,
//! WATCHDOG=1 arrives while the store answers and stops while the test-only stall
//! hook holds the SQLite writer.
#![allow(clippy::tests_outside_test_module)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ballast_testenv::notified::{pings, NotifiedDaemon};

const OLD_TOKEN: &str = "read-token-old-0123456789";
const NEW_TOKEN: &str = "read-token-new-9876543210";

/// The collector under the stand-in for systemd, and its port.
struct Collector {
    daemon: NotifiedDaemon,
    port: u16,
}

impl std::ops::Deref for Collector {
    type Target = NotifiedDaemon;
    fn deref(&self) -> &NotifiedDaemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for Collector {
    fn deref_mut(&mut self) -> &mut NotifiedDaemon {
        &mut self.daemon
    }
}

impl Collector {
    /// `ballast-collector serve --config file` in `dir`, with `env`.
    fn start(dir: &Path, file: &Path, port: u16, env: &[(&str, &OsStr)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ballast-collector"));
        command.args(["serve", "--config"]).arg(file);
        Self {
            daemon: NotifiedDaemon::start(command, dir, "collector.log", env),
            port,
        }
    }

    /// A SIGHUP, and the RELOADING=1 / READY=1 pair that says it is done.
    fn reload(&self) {
        self.signal("HUP");
        let reloading = self.next_notification(Duration::from_secs(60));
        assert!(reloading.contains("RELOADING=1"), "{reloading:?}");
        let ready = self.next_notification(Duration::from_secs(60));
        assert!(ready.contains("READY=1"), "{ready:?}");
    }

    /// The HTTP status of `GET /api/v1/ooms` with `token`.
    fn query_status(&self, token: &str) -> u16 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|error| panic!("connect: {error}\n{}", self.log()));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "GET /api/v1/ooms HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

fn config(dir: &Path, port: u16, token_file: &Path, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:{port}\n\
         state_dir: {state}\n\
         read:\n  token_file: {token}\n\
         {extra}",
        state = dir.display(),
        token = token_file.display(),
    )
}

#[test]
fn sighup_swaps_the_read_token_and_keeps_the_running_config_on_a_bad_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let token_file = dir.path().join("read.token");
    std::fs::write(&token_file, format!("{OLD_TOKEN}\n")).expect("write the token");
    let file = dir.path().join("collector.yaml");
    std::fs::write(&file, config(dir.path(), port, &token_file, "")).expect("write");
    let mut collector = Collector::start(dir.path(), &file, port, &[]);

    // READY=1 comes once it listens: the very next request is answered.
    let ready = collector.next_notification(Duration::from_secs(60));
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    assert_eq!(collector.query_status(OLD_TOKEN), 200);
    assert_eq!(collector.query_status(NEW_TOKEN), 401);

    // 1. A rotated token file: the new token in, the old one out, no restart.
    std::fs::write(&token_file, format!("{NEW_TOKEN}\n")).expect("rotate");
    collector.reload();
    assert_eq!(collector.query_status(NEW_TOKEN), 200);
    assert_eq!(collector.query_status(OLD_TOKEN), 401);

    // 2. Bad files change nothing; the error names the field.
    std::fs::write(
        &file,
        config(dir.path(), port, &token_file, "ingest:\n  burts: 5\n"),
    )
    .expect("write");
    collector.reload();
    collector.wait_log("unknown field `burts`");
    std::fs::write(
        &file,
        config(dir.path(), port, &dir.path().join("missing.token"), ""),
    )
    .expect("write");
    collector.reload();
    collector.wait_log("read.token_file");
    assert!(
        collector.log().contains("running one stays"),
        "{}",
        collector.log()
    );
    assert_eq!(
        collector.query_status(NEW_TOKEN),
        200,
        "the running token stays"
    );

    // 3. A restart-only field: named, and the running listener stays.
    std::fs::write(
        &file,
        config(dir.path(), port, &token_file, "")
            .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:1"),
    )
    .expect("write");
    collector.reload();
    collector.wait_log("Field listen changed: restart required");
    assert_eq!(collector.query_status(NEW_TOKEN), 200);

    collector.terminate();
}

#[test]
fn the_watchdog_is_pinged_while_the_store_answers_and_not_while_its_writer_stalls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let token_file = dir.path().join("read.token");
    std::fs::write(&token_file, format!("{OLD_TOKEN}\n")).expect("write the token");
    let file = dir.path().join("collector.yaml");
    std::fs::write(&file, config(dir.path(), port, &token_file, "")).expect("write");
    let stall = dir.path().join("stall");
    // WatchdogSec=2s: a ping every second.
    let mut collector = Collector::start(
        dir.path(),
        &file,
        port,
        &[
            ("WATCHDOG_USEC", OsStr::new("2000000")),
            (
                ballast_collector::storage::sqlite::STALL_ENV,
                stall.as_os_str(),
            ),
        ],
    );
    collector.wait_notification("READY=1", Duration::from_secs(60));

    let healthy = collector.notifications_for(Duration::from_secs(4));
    assert!(
        pings(&healthy) >= 3,
        "healthy: {healthy:?}\n{}",
        collector.log()
    );

    // The store's writer stops answering; the HTTP server runs on.
    std::fs::write(&stall, "").expect("create the stall file");
    let _ = collector.notifications_for(Duration::from_millis(2500));
    let stalled = collector.notifications_for(Duration::from_secs(4));
    assert_eq!(pings(&stalled), 0, "stalled store: {stalled:?}");
    assert_eq!(collector.query_status(OLD_TOKEN), 200, "still serving");
    collector.wait_log("did not answer the watchdog ping");

    std::fs::remove_file(&stall).expect("end the stall");
    let resumed = collector.notifications_for(Duration::from_secs(4));
    assert!(
        pings(&resumed) >= 2,
        "resumed: {resumed:?}\n{}",
        collector.log()
    );

    collector.terminate();
}
