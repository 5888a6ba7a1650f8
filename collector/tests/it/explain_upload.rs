//! The real `ballast-collector serve`: `/explain` uploads go through the streamed parser
//! and stop at `dashboard.explain_max_bytes` with a 413 that says why, whichever part of
//! the form is too large.
#![allow(clippy::tests_outside_test_module)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ballast_testenv::wait_until_showing;

const MAX_BYTES: usize = 64 * 1024;

struct Collector {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Collector {
    fn start(dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let token = dir.join("read.token");
        std::fs::write(&token, "read-token-0123456789abcdef\n").expect("token");
        let config = dir.join("collector.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nstate_dir: {}\nread:\n  token_file: {}\ndashboard:\n  explain_max_bytes: {MAX_BYTES}\n",
                dir.display(),
                token.display()
            ),
        )
        .expect("config");
        let log = dir.join("collector.log");
        let output = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_ballast-collector"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone"))
            .stderr(output)
            .spawn()
            .expect("start ballast-collector");
        let collector = Self { child, port, log };
        let request =
            format!("GET /explain HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        wait_until_showing(
            "the collector to answer GET /explain",
            Duration::from_secs(60),
            || collector.try_request(request.as_bytes()).is_some(),
            || std::fs::read_to_string(&collector.log).unwrap_or_default(),
        );
        collector
    }

    fn try_request(&self, request: &[u8]) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        // The server may answer (and close) before the whole body is sent: a 413 does.
        let _ = stream.write_all(request);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, response))
    }

    /// POSTs a multipart form with `(name, bytes)` parts to `/explain`.
    fn explain(&self, parts: &[(&str, &[u8])]) -> (u16, String) {
        let mut body = Vec::new();
        for (name, bytes) in parts {
            body.extend_from_slice(
                format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"kern.log\"\r\nContent-Type: text/plain\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--XyZ--\r\n");
        let mut request = format!(
            "POST /explain HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {}\r\n\r\n",
            self.port,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        self.try_request(&request).expect("an answer")
    }
}

fn fixture() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/ballast-oom/tests/fixtures/oom/debian9-kvm-1g-tor.log"),
    )
    .expect("fixture")
}

#[test]
fn explain_uploads_are_parsed_and_capped_with_413() {
    let dir = tempfile::tempdir().expect("temp dir");
    let collector = Collector::start(dir.path());

    // A report in both fields, each under the cap: two reports found.
    let log = fixture();
    let (status, page) = collector.explain(&[("report", &log), ("log", &log)]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("2 OOM reports found"), "{page}");

    // One byte past the cap in the log field: 413 with the limit in the message.
    let big = vec![b'x'; MAX_BYTES + 1];
    let (status, page) = collector.explain(&[("log", &big)]);
    assert_eq!(status, 413, "{page}");
    assert!(
        page.contains(&format!("larger than {MAX_BYTES} bytes")),
        "{page}"
    );

    // Two fields that fit alone but not together.
    let half = vec![b'y'; MAX_BYTES / 2 + 1];
    let (status, _) = collector.explain(&[("report", &half), ("log", &half)]);
    assert_eq!(status, 413);

    // A field the form does not have, far past the request body limit: also 413.
    let huge = vec![b'z'; 4 * MAX_BYTES];
    let (status, page) = collector.explain(&[("other", &huge)]);
    assert_eq!(status, 413, "{page}");
}
