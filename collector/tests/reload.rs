//! The real `ballast-collector serve` under a stand-in for systemd: a unix datagram
//! socket as `$NOTIFY_SOCKET` receives READY=1 once it listens, RELOADING=1 and
//! READY=1 around a SIGHUP reload. Observed from the outside: which read token the
//! query API accepts, the log, the process staying up.
#![allow(clippy::tests_outside_test_module)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

    fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the log never said {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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
