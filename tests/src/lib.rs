//! Shared helpers for ballast's end-to-end tests: finding the built binaries, running
//! a collector and an agent as child processes, and HTTP GETs on loopback.

pub mod debian_root;
pub mod fault;
pub mod stack;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// `target/<profile>`: where this test binary's build put the workspace's binaries.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}

/// A binary of the workspace (`ballast-agent`, `ballast-collector`), built if missing.
pub fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--bin", name])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}

/// The repository's top directory (this crate sits in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// The example at `source` (relative to the repository, e.g.
/// `collector/examples/load_gen.rs`) of `package`, next to the binaries
/// (`cargo test` builds examples); built here when missing or older than its source.
pub fn example(package: &str, source: &str) -> PathBuf {
    let source = repo_root().join(source);
    let name = source
        .file_stem()
        .and_then(|stem| stem.to_str())
        .expect("an example source file")
        .to_string();
    let path = profile_dir().join("examples").join(&name);
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if modified(&path).is_none() || modified(&path) < modified(&source) {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", package, "--example", &name])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building example {name} failed");
    }
    path
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// Writes `<dir>/collector.yaml`: listening on `127.0.0.1:<port>`, state in
/// `state_dir`, then `extra_yaml` (storage, ingest limits...). Returns its path.
pub fn write_collector_config(
    dir: &Path,
    port: u16,
    state_dir: &Path,
    extra_yaml: &str,
) -> PathBuf {
    std::fs::create_dir_all(dir).expect("collector dir");
    let config = dir.join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nstate_dir: {}\n{extra_yaml}",
            state_dir.display()
        ),
    )
    .expect("collector config");
    config
}

/// `ballast-collector token create <host>` as an operator runs it: the new token.
pub fn create_token(config: &Path, host: &str) -> String {
    let output = Command::new(binary("ballast-collector"))
        .args(["token", "create", host, "--config"])
        .arg(config)
        .output()
        .expect("token create runs");
    assert!(
        output.status.success(),
        "token create {host}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A child process killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub name: &'static str,
}

impl Daemon {
    /// Starts `binary args`, stderr into `log`.
    pub fn start(name: &'static str, args: &[&str], log: &Path) -> Daemon {
        let log_file = std::fs::File::create(log).expect("log file");
        let child = Command::new(binary(name))
            .args(args)
            .env("BALLAST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| panic!("{name} starts: {error}"));
        Daemon { child, name }
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP GET on loopback (`reqwest::blocking`, no proxy, 10 s limit); returns
/// (status, body). For tests on plain threads, not inside an async runtime.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> std::io::Result<(u16, String)> {
    static CLIENT: OnceLock<reqwest::Result<reqwest::blocking::Client>> = OnceLock::new();
    let client = CLIENT
        .get_or_init(|| {
            reqwest::blocking::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .build()
        })
        .as_ref()
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    let mut request = client.get(format!("http://{addr}{path}"));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let body = response.text().map_err(std::io::Error::other)?;
    Ok((status, body))
}

/// The one wait of every ballast test (`ballast_testenv`), here for the suites' imports.
pub use ballast_testenv::{wait_until, wait_until_showing};
