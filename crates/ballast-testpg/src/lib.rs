//! Test support: a throwaway PostgreSQL cluster, started for one test run and
//! removed afterwards. Never linked into a product binary.
//!
//! 1. [`TestPg::start`] finds the server binaries (`/usr/lib/postgresql/<newest>/bin`,
//!    then `PATH`), runs `initdb` in a fresh temp dir (as the `postgres` user when
//!    the test runs as root: initdb refuses root), and starts `postgres` with
//!    `pg_ctl -w` listening ONLY on a unix socket inside that dir (no TCP port,
//!    so parallel runs never collide and nothing is exposed).
//! 2. [`TestPg::create_database`] gives each test case its own empty database and
//!    returns a libpq-style connection string (`host=<socket dir> ... dbname=...`).
//! 3. Dropping the [`TestPg`] stops the server (`pg_ctl stop -m immediate`) and
//!    deletes the dir, also while a test panics. A run that was SIGKILLed leaves its
//!    dir behind with an `owner.pid`; the next [`TestPg::start`] sweeps such
//!    clusters whose owner process is gone.
//!
//! [`TestPg::start_with_tls`] also generates a private CA and a server certificate
//! for `localhost` and `127.0.0.1` ([`pki::TestPki`]), starts the server with `ssl=on`
//! and listens on a free loopback TCP port besides the socket
//! ([`TestPg::tcp_connection_string`]); the CA is [`TestPg::tls_ca_pem`].
//!
//! The cluster runs with `fsync=off`: tests check behaviour, not the disk.
//! What it is not: a fixture for a running system server; it never touches one.

pub mod pki;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TestPgError {
    #[error("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install Debian's `postgresql` package (scripts/install-deps.sh)")]
    NotInstalled,
    #[error("Failed to create the cluster directory")]
    TempDir(#[source] std::io::Error),
    #[error("Failed to run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("The `postgres` system user does not exist (needed to run initdb as root)")]
    NoPostgresUser,
    #[error("Failed to generate the test CA and server certificate")]
    Pki(#[source] rcgen::Error),
    #[error("Failed to write the server certificate or key")]
    TlsFiles(#[source] std::io::Error),
}

/// A running throwaway cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct TestPg {
    dir: Option<tempfile::TempDir>,
    bin_dir: PathBuf,
    run_as_postgres: bool,
    port: u16,
    n_databases: std::sync::atomic::AtomicU32,
    /// With [`TestPg::start_with_tls`]: the certificates and the TCP port.
    tls: Option<(pki::TestPki, u16)>,
}

/// Whether this process may skip PostgreSQL tests when the server is missing
/// (never in CI: `.ci/run` installs it).
pub fn may_skip() -> bool {
    !ballast_testenv::in_ci()
}

impl TestPg {
    /// A fresh cluster for the running test, or `None` after a recorded skip
    /// ([`ballast_testenv::skip`]) when the server is not installed here and this is
    /// not CI. A server that is installed but fails to start is a failure, in CI and
    /// elsewhere: this panics with the error.
    pub fn start_or_skip() -> Option<Self> {
        Self::or_skip(Self::start())
    }

    /// [`TestPg::start_with_tls`], or `None` after a recorded skip, as
    /// [`TestPg::start_or_skip`].
    pub fn start_with_tls_or_skip() -> Option<Self> {
        Self::or_skip(Self::start_with_tls())
    }

    fn or_skip(started: Result<Self, TestPgError>) -> Option<Self> {
        match started {
            Ok(cluster) => Some(cluster),
            Err(TestPgError::NotInstalled) if may_skip() => {
                ballast_testenv::skip(
                    &ballast_testenv::current_test(),
                    &TestPgError::NotInstalled.to_string(),
                );
                None
            }
            Err(error) => panic!("PostgreSQL failed to start: {error}"),
        }
    }

    /// Starts a fresh cluster (about a second).
    pub fn start() -> Result<Self, TestPgError> {
        Self::start_inner(None)
    }

    /// Starts a fresh cluster with `ssl=on`, also listening on a free TCP port of
    /// 127.0.0.1, its server certificate (for `localhost` and `127.0.0.1`) signed by
    /// a CA generated for this cluster.
    pub fn start_with_tls() -> Result<Self, TestPgError> {
        let pki = pki::TestPki::generate("ballast-testpg CA", &["localhost", "127.0.0.1"])
            .map_err(TestPgError::Pki)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .map_err(TestPgError::TempDir)?;
        Self::start_inner(Some((pki, port)))
    }

    fn start_inner(tls: Option<(pki::TestPki, u16)>) -> Result<Self, TestPgError> {
        let bin_dir = find_bin_dir().ok_or(TestPgError::NotInstalled)?;
        let run_as_postgres = is_root();
        sweep_stale_clusters(&bin_dir, run_as_postgres);
        let dir = tempfile::Builder::new()
            .prefix("ballast-testpg-")
            .tempdir()
            .map_err(TestPgError::TempDir)?;
        std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string())
            .map_err(TestPgError::TempDir)?;
        if run_as_postgres {
            let (uid, gid) = postgres_ids().ok_or(TestPgError::NoPostgresUser)?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(TestPgError::TempDir)?;
        }
        // The unix socket is named after the port; any number works, nothing listens on
        // TCP (except with TLS: then the TCP port chosen for it).
        let port = match &tls {
            Some((_, tcp_port)) => *tcp_port,
            None => 5432 + u16::try_from(std::process::id() % 20_000).unwrap_or(0),
        };
        let mut cluster = Self {
            dir: Some(dir),
            bin_dir,
            run_as_postgres,
            port,
            n_databases: std::sync::atomic::AtomicU32::new(0),
            tls,
        };
        let data = cluster.dir().join("data");
        cluster.run(
            "initdb",
            &[
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("-A"),
                OsStr::new("trust"),
                OsStr::new("-E"),
                OsStr::new("UTF8"),
                OsStr::new("--no-sync"),
            ],
        )?;
        if let Err(error) = cluster.write_tls_files() {
            cluster.port = 0;
            return Err(error);
        }
        if let Err(error) = cluster.pg_ctl_start() {
            let server_log =
                std::fs::read_to_string(cluster.dir().join("server.log")).unwrap_or_default();
            // Nothing to stop; still delete the dir (drop does).
            cluster.port = 0;
            return Err(TestPgError::Failed {
                program: "pg_ctl start".into(),
                status: error.to_string(),
                stderr: server_log,
            });
        }
        Ok(cluster)
    }

    /// The directory holding the data dir and the unix socket.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(tempfile::TempDir::path)
            .expect("the dir lives until drop")
    }

    /// A connection string for database `dbname` (user `postgres`, unix socket).
    pub fn connection_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.dir().display(),
            self.port
        )
    }

    /// With TLS: a connection string over TCP to `localhost` for database `dbname`,
    /// without any `sslmode` (the caller adds it).
    pub fn tcp_connection_string(&self, dbname: &str) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(_, port)| format!("host=localhost port={port} user=postgres dbname={dbname}"))
    }

    /// With TLS: the PEM certificate of the CA that signed the server's certificate.
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|(pki, _)| pki.ca_pem.as_str())
    }

    /// Writes `server.crt` and `server.key` (0600, owned by the server's user) into
    /// the data dir, when the cluster runs with TLS.
    fn write_tls_files(&self) -> Result<(), TestPgError> {
        use std::os::unix::fs::PermissionsExt;
        let Some((pki, _)) = &self.tls else {
            return Ok(());
        };
        let data = self.dir().join("data");
        for (name, text) in [
            ("server.crt", &pki.server_cert_pem),
            ("server.key", &pki.server_key_pem),
        ] {
            let path = data.join(name);
            std::fs::write(&path, text).map_err(TestPgError::TlsFiles)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(TestPgError::TlsFiles)?;
            if self.run_as_postgres {
                let (uid, gid) = postgres_ids().ok_or(TestPgError::NoPostgresUser)?;
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(TestPgError::TlsFiles)?;
            }
        }
        Ok(())
    }

    /// Creates a new empty database and returns its connection string.
    pub fn create_database(&self) -> Result<String, TestPgError> {
        let n = self
            .n_databases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("test_{n}");
        let host = self.dir().as_os_str().to_owned();
        let port = self.port.to_string();
        self.run(
            "createdb",
            &[
                OsStr::new("-h"),
                &host,
                OsStr::new("-p"),
                OsStr::new(&port),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new(&name),
            ],
        )?;
        Ok(self.connection_string(&name))
    }

    /// Stops the server (`pg_ctl stop -m fast`) and keeps the cluster: for tests of
    /// clients that must survive a database restart. [`TestPg::start_server`] brings
    /// it back on the same socket.
    pub fn stop_server(&self) -> Result<(), TestPgError> {
        self.pg_ctl_stop("fast")
    }

    /// Starts the server again after [`TestPg::stop_server`].
    pub fn start_server(&self) -> Result<(), TestPgError> {
        self.pg_ctl_start()
    }

    /// `pg_ctl start` with [`TestPg::server_options`], logging to `server.log`,
    /// waiting up to 60 s until the server accepts connections.
    fn pg_ctl_start(&self) -> Result<(), TestPgError> {
        let data = self.dir().join("data");
        let log = self.dir().join("server.log");
        let options = self.server_options();
        self.run(
            "pg_ctl",
            &[
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-o"),
                OsStr::new(&options),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("60"),
                OsStr::new("start"),
            ],
        )
        .map(drop)
    }

    /// `pg_ctl stop` in shutdown `mode` (`fast`, or `immediate`: no checkpoint),
    /// waiting until the server is gone.
    fn pg_ctl_stop(&self, mode: &str) -> Result<(), TestPgError> {
        let data = self.dir().join("data");
        self.run(
            "pg_ctl",
            &[
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-m"),
                OsStr::new(mode),
                OsStr::new("-w"),
                OsStr::new("stop"),
            ],
        )
        .map(drop)
    }

    fn server_options(&self) -> String {
        // server.crt and server.key are ssl_cert_file's and ssl_key_file's defaults
        // (relative to the data dir).
        let network = if self.tls.is_some() {
            "-c listen_addresses=127.0.0.1 -c ssl=on"
        } else {
            "-c listen_addresses=''"
        };
        format!(
            "-k {} -p {} {network} -c fsync=off -c full_page_writes=off -c max_connections=200",
            self.dir().display(),
            self.port
        )
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin_dir.join(program);
        let path = if path.exists() {
            path
        } else {
            PathBuf::from(program)
        };
        command_as(&path, self.run_as_postgres)
    }

    fn run(&self, program: &str, args: &[&OsStr]) -> Result<Output, TestPgError> {
        let output = self
            .command(program)
            .args(args)
            .env("LC_ALL", "C")
            .current_dir(self.dir())
            .output()
            .map_err(|source| TestPgError::Spawn {
                program: program.into(),
                source,
            })?;
        if !output.status.success() {
            return Err(TestPgError::Failed {
                program: program.into(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(output)
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self.pg_ctl_stop("immediate");
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// `program`, run through `runuser -u postgres` when `as_postgres`.
fn command_as(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    // The effective uid without libc: /proc/self/status "Uid: real effective ...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&"postgres") && fields.len() > 3 {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
    })
}

/// Stops and deletes clusters left by test processes that died (SIGKILL, abort).
fn sweep_stale_clusters(bin_dir: &Path, run_as_postgres: bool) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("ballast-testpg-") {
            continue;
        }
        let dir = entry.path();
        let owner = std::fs::read_to_string(dir.join("owner.pid")).unwrap_or_default();
        let alive = !owner.trim().is_empty() && Path::new("/proc").join(owner.trim()).exists();
        if alive {
            continue;
        }
        let pg_ctl = bin_dir.join("pg_ctl");
        let data = dir.join("data");
        if data.join("postmaster.pid").exists() {
            let _ = command_as(&pg_ctl, run_as_postgres)
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_takes_databases_and_is_removed_on_drop() {
        let Some(cluster) = TestPg::start_or_skip() else {
            return;
        };
        let dir = cluster.dir().to_path_buf();
        let first = cluster.create_database().expect("createdb");
        let second = cluster.create_database().expect("createdb");
        assert_ne!(first, second);
        assert!(first.contains("dbname=test_0"), "{first}");
        assert!(dir.join("data").join("postmaster.pid").exists());
        drop(cluster);
        assert!(!dir.exists(), "the cluster dir is removed");
    }
}
