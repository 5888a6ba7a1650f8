//! Connection bounds of the real server (`crate::listener`) over loopback TCP:
//! slow-loris clients do not hold up real requests and are closed after the header
//! timeout; connections beyond the cap wait in the listen backlog (no descriptor
//! taken by the server) and are served when a slot frees; a body that stalls gets
//! 408 after the body timeout.
#![allow(clippy::tests_outside_test_module)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use ballast_testenv::wait_until_async;

use ballast_collector::app::app;
use ballast_collector::auth::token_sha256;
use ballast_collector::listener::ConnectionLimits;
use ballast_collector::reload::LiveRouter;
use ballast_collector::server::serve_live;
use ballast_collector::state::{ApiConfig, AppState};
use ballast_collector::storage::queries;
use ballast_collector::storage::sqlite::SqliteStore;

const TOKEN: &str = "blt_bounds_test_token_pve1";

/// Serves over a fresh SQLite store with `limits`; the token of `pve1` is [`TOKEN`].
async fn start(
    dir: &std::path::Path,
    limits: ConnectionLimits,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let store = Arc::new(
        SqliteStore::open(&dir.join("c.sqlite"))
            .await
            .expect("open"),
    );
    queries::put_token(store.as_ref(), "pve1", &token_sha256(TOKEN), 1, false)
        .await
        .expect("token");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = LiveRouter::new(app(AppState::new(store, ApiConfig::default())));
    tokio::spawn(serve_live(listener, router, None, limits, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// `GET /healthz` on a new connection: the status line, and how long it took.
async fn healthz(addr: std::net::SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.lines().next().unwrap_or_default().to_string();
    (status, started.elapsed())
}

/// Reads until the server closes `stream` (or fails it); `None` if it is still
/// open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + within;
    let mut buffer = [0u8; 1024];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn slow_loris_clients_do_not_block_real_requests_and_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = ConnectionLimits {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
    };
    let (addr, _stop) = start(dir.path(), limits).await;
    let mut silent = Vec::new();
    let mut partial = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .expect("write");
        partial.push(stream);
    }
    let opened = Instant::now();
    // One dribbles a header byte every 200 ms, forever.
    let mut dribbler = TcpStream::connect(addr).await.expect("connect");
    dribbler
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .expect("write");
    let dribbling = tokio::spawn(async move {
        let started = Instant::now();
        loop {
            // The scenario: a header byte every 200 ms.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if dribbler.write_all(b"a").await.is_err() {
                return Some(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(10) {
                return None;
            }
        }
    });

    let (status, took) = healthz(addr).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        took < Duration::from_millis(500),
        "a real request took {took:?}"
    );

    for stream in silent.iter_mut().chain(partial.iter_mut()) {
        let left = Duration::from_secs(3).saturating_sub(opened.elapsed());
        let answer = closed_within(stream, left).await;
        let answer = answer.expect("a slow client is closed within 3 s (header timeout 1 s)");
        let text = String::from_utf8_lossy(&answer);
        assert!(!text.contains("200 OK"), "{text}");
    }
    let dribbled = dribbling.await.expect("task");
    let dribbled = dribbled.expect("the dribbling client is closed");
    assert!(
        dribbled < Duration::from_secs(4),
        "closed after {dribbled:?}"
    );
    // And the server still answers.
    assert_eq!(healthz(addr).await.0, "HTTP/1.1 200 OK");
}

/// Descriptors of this process that are TCP sockets on local `port`: the listener and
/// every connection the server accepted. Not every open descriptor: the other tests of
/// this binary open and close theirs at the same time. A connection still waiting in the
/// kernel's backlog has no descriptor (and its socket no inode) until it is accepted.
fn server_sockets(port: u16) -> usize {
    let local_port = format!(":{port:04X}");
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if fields.len() > 9 && fields[1].ends_with(&local_port) && fields[9] != "0" {
                inodes.insert(format!("socket:[{}]", fields[9]));
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| inodes.contains(target.to_string_lossy().as_ref()))
        .count()
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_in_the_backlog_and_are_served_when_a_slot_frees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = ConnectionLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(20),
        body_read_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
    };
    let (addr, _stop) = start(dir.path(), limits).await;
    let mut holders = Vec::new();
    for _ in 0..4 {
        holders.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // The server accepts the four: the listener and four accepted sockets.
    let before = wait_until_async(
        "the server to accept four",
        Duration::from_secs(10),
        async || {
            let sockets = server_sockets(addr.port());
            (sockets == 5).then_some(sockets)
        },
    )
    .await;
    let mut waiting = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("the backlog takes it");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        waiting.push(stream);
    }
    // The scenario: give a server that (wrongly) accepts over the cap the time to do so.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = server_sockets(addr.port()) - before;
    assert!(
        grown <= 2,
        "50 clients over the cap grew the server's sockets by {grown}: the server accepted them"
    );
    // None is answered while the four hold their slots.
    let first = &mut waiting[0];
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), first.read(&mut byte))
            .await
            .is_err(),
        "a connection over the cap was served"
    );
    // One slot frees: the waiting clients are served, one after another.
    drop(holders.pop());
    for stream in &mut waiting {
        let answer = closed_within(stream, Duration::from_secs(5))
            .await
            .expect("served and closed");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    }
}

#[tokio::test]
async fn an_ingest_body_that_stalls_gets_408_after_the_body_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = ConnectionLimits {
        max_connections: 16,
        header_read_timeout: Duration::from_secs(5),
        body_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
    };
    let (addr, _stop) = start(dir.path(), limits).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    stream
        .write_all(
            format!(
                "POST /api/v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"schema"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let answer = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("answered");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&took),
        "{took:?}"
    );
}

/// A server certificate for 127.0.0.1 from a throwaway CA (rcgen, through
/// `ballast_testpg::pki`): (cert file, key file, CA file).
fn server_certificate(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let pki = ballast_testpg::pki::TestPki::generate("bounds test CA", &["127.0.0.1"])
        .expect("certificates");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &pki.server_cert_pem).expect("write cert");
    std::fs::write(&key, &pki.server_key_pem).expect("write key");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write CA");
    (cert, key, ca)
}

#[tokio::test]
async fn a_tls_client_that_never_says_hello_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_file, key_file, ca_file) = server_certificate(dir.path());
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("c.sqlite"))
            .await
            .expect("open"),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = LiveRouter::new(app(AppState::new(store, ApiConfig::default())));
    let tls = ballast_collector::config::TlsFiles {
        cert_file: cert_file.clone(),
        key_file,
    };
    let limits = ConnectionLimits {
        max_connections: 8,
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
    };
    tokio::spawn(async move {
        serve_live(listener, router, Some(&tls), limits, std::future::pending())
            .await
            .expect("serves");
    });
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca_file).expect("CA")).expect("pem"),
        )
        .build()
        .expect("client");
    let answer = client
        .get(format!("https://{addr}/healthz"))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    assert_eq!(answer.version(), reqwest::Version::HTTP_11);
    assert!(
        closed_within(&mut silent, Duration::from_secs(3))
            .await
            .is_some(),
        "a TLS connection without a handshake is still open after 3 s"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// Sends one keep-alive `GET /healthz` on `stream` and reads its whole answer.
async fn keep_alive_healthz(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    while !seen.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(n > 0, "closed while answering");
        seen.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&seen).to_string()
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_until_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = ConnectionLimits {
        max_connections: 16,
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(3),
    };
    let (addr, _stop) = start(dir.path(), limits).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    assert!(keep_alive_healthz(&mut stream)
        .await
        .starts_with("HTTP/1.1 200 OK"));
    // Idle for longer than the header timeout (the sleep is the scenario): still
    // served (an agent's pooled connection between two batches).
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(keep_alive_healthz(&mut stream)
        .await
        .starts_with("HTTP/1.1 200 OK"));
    let idle_since = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(5))
        .await
        .is_some_and(|rest| rest.is_empty()));
    let idle = idle_since.elapsed();
    assert!(
        (Duration::from_millis(2700)..Duration::from_millis(4500)).contains(&idle),
        "closed after {idle:?} idle (idle timeout 3 s)"
    );

    // After a request, a head that starts but never ends gets the header timeout.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    assert!(keep_alive_healthz(&mut stream)
        .await
        .starts_with("HTTP/1.1 200 OK"));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0")
        .await
        .expect("write");
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(3))
        .await
        .is_some());
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2000), "closed after {took:?}");
}
