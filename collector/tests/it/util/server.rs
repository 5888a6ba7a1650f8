//! A collector to test against over loopback HTTP: the `ballast-collector` binary
//! as a child process (killed on drop), or the server in-process on 127.0.0.1:0
//! over a temporary SQLite store with one ingest token per host.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;

use ballast_collector::auth::token_sha256;
use ballast_collector::server::{serve_listener, ServeError};
use ballast_collector::state::{ApiConfig, AppState};
use ballast_collector::storage::queries;
use ballast_collector::storage::sqlite::SqliteStore;

/// A loopback port nobody listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The collector binary with `args`, logging warnings only.
pub fn collector(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ballast-collector"));
    command.args(args).env("RUST_LOG", "warn");
    command
}

/// `ballast-collector token create <host> --config <config>`: the new token.
pub fn create_token(config: &str, host: &str) -> String {
    let created = collector(&["token", "create", host, "--config", config])
        .output()
        .expect("token create");
    assert!(created.status.success(), "{created:?}");
    String::from_utf8(created.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// A child process that is SIGKILLed and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server running in this process; [`InProcess::stop`] shuts it down.
pub struct InProcess {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub store: Arc<SqliteStore>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl InProcess {
    /// Serves `config` over `dir/c.sqlite` where each of `hosts` may ingest with
    /// the token `blt_<host>`.
    pub async fn start(dir: &Path, hosts: &[&str], config: ApiConfig) -> Self {
        let store = Arc::new(
            SqliteStore::open(&dir.join("c.sqlite"))
                .await
                .expect("open"),
        );
        for host in hosts {
            let token = token_sha256(&format!("blt_{host}"));
            queries::put_token(store.as_ref(), host, &token, 1, false)
                .await
                .expect("token");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = AppState::new(store.clone(), config);
        let server = tokio::spawn(serve_listener(listener, state, None, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            store,
            stop,
            server,
        }
    }

    /// Asks the server to stop and waits for it: what it returned, or why its
    /// task ended otherwise.
    pub async fn stop(self) -> Result<Result<(), ServeError>, tokio::task::JoinError> {
        let _ = self.stop.send(());
        self.server.await
    }
}
