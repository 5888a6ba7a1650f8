//! The real `ballast-collector serve` under a stand-in for systemd: a unix datagram
//! socket as `$NOTIFY_SOCKET` receives READY=1 once it listens, RELOADING=1 and
//! READY=1 around a SIGHUP reload. Observed from the outside: which read token the
//! query API accepts, the log, the process staying up. With `$WATCHDOG_USEC` set,
//! WATCHDOG=1 arrives while the store answers and stops while the test-only stall
//! hook holds the SQLite writer.
#![allow(clippy::tests_outside_test_module)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ballast_testenv::wait_until_showing;

const OLD_TOKEN: &str = "read-token-old-0123456789";
const NEW_TOKEN: &str = "read-token-new-9876543210";

struct Collector {
    child: Child,
    log: PathBuf,
    notify: UnixDatagram,
    port: u16,
}

impl Collector {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn next_notification(&self) -> String {
        self.notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("set a timeout");
        let mut buffer = [0u8; 4096];
        let size = self
            .notify
            .recv(&mut buffer)
            .unwrap_or_else(|error| panic!("no notification ({error}):\n{}", self.log()));
        String::from_utf8_lossy(&buffer[..size]).into_owned()
    }

    /// Every notification that arrives within `window`.
    fn notifications_for(&self, window: Duration) -> Vec<String> {
        let until = Instant::now() + window;
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            self.notify
                .set_read_timeout(Some(left))
                .expect("set a timeout");
            match self.notify.recv(&mut buffer) {
                Ok(size) => received.push(String::from_utf8_lossy(&buffer[..size]).into_owned()),
                Err(_) => break,
            }
        }
        received
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    /// A SIGHUP, and the RELOADING=1 / READY=1 pair that says it is done.
    fn reload(&self) {
        self.signal("HUP");
        let reloading = self.next_notification();
        assert!(reloading.contains("RELOADING=1"), "{reloading:?}");
        let ready = self.next_notification();
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

    /// Waits until the log contains `text` (or fails after 30 s, showing the log).
    fn wait_log(&self, text: &str) {
        wait_until_showing(
            &format!("the log to say {text:?}"),
            Duration::from_secs(30),
            || self.log().contains(text),
            || self.log(),
        );
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    let socket = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket).expect("bind the notify socket");
    let log = dir.path().join("collector.log");
    let output = std::fs::File::create(&log).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_ballast-collector"))
        .args(["serve", "--config"])
        .arg(&file)
        .env("NOTIFY_SOCKET", &socket)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("clone"))
        .stderr(output)
        .spawn()
        .expect("start ballast-collector");
    let mut collector = Collector {
        child,
        log,
        notify,
        port,
    };

    // READY=1 comes once it listens: the very next request is answered.
    let ready = collector.next_notification();
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

    collector.signal("TERM");
    let status = collector.child.wait().expect("wait");
    assert!(status.success(), "{status}:\n{}", collector.log());
}

/// How many of `notifications` are watchdog pings.
fn pings(notifications: &[String]) -> usize {
    notifications
        .iter()
        .filter(|message| message.lines().any(|line| line == "WATCHDOG=1"))
        .count()
}

#[test]
fn the_watchdog_is_pinged_while_the_store_answers_and_not_while_its_writer_stalls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let token_file = dir.path().join("read.token");
    std::fs::write(&token_file, format!("{OLD_TOKEN}\n")).expect("write the token");
    let file = dir.path().join("collector.yaml");
    std::fs::write(&file, config(dir.path(), port, &token_file, "")).expect("write");
    let socket = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket).expect("bind the notify socket");
    let stall = dir.path().join("stall");
    let log = dir.path().join("collector.log");
    let output = std::fs::File::create(&log).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_ballast-collector"))
        .args(["serve", "--config"])
        .arg(&file)
        .env("NOTIFY_SOCKET", &socket)
        // WatchdogSec=2s: a ping every second.
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .env(ballast_collector::storage::sqlite::STALL_ENV, &stall)
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("clone"))
        .stderr(output)
        .spawn()
        .expect("start ballast-collector");
    let mut collector = Collector {
        child,
        log,
        notify,
        port,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !collector
        .notifications_for(Duration::from_millis(500))
        .iter()
        .any(|message| message.contains("READY=1"))
    {
        assert!(
            Instant::now() < deadline,
            "no READY=1:\n{}",
            collector.log()
        );
    }

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

    collector.signal("TERM");
    let status = collector.child.wait().expect("wait");
    assert!(status.success(), "{status}:\n{}", collector.log());
}
