//! A collector and an agent as the end-to-end tests run them: `ballast-collector serve`
//! with a token for one host, and `ballast-agent run` pointed at it, each a [`Daemon`]
//! with its log in its own folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{create_token, free_port, http_get, wait_until, write_collector_config, Daemon};

/// A running collector, its host token and its config.
pub struct Collector {
    pub addr: SocketAddr,
    pub token_file: PathBuf,
    pub config: PathBuf,
    pub daemon: Daemon,
}

/// Writes a collector config in `dir` (`storage_yaml`: the storage section, or other
/// extra settings), creates `host`'s token, starts `serve` and waits for `/healthz`.
pub fn start_collector(dir: &Path, host: &str, storage_yaml: &str) -> Collector {
    let port = free_port();
    let config = write_collector_config(dir, port, dir, storage_yaml);
    let token_file = dir.join("agent.token");
    std::fs::write(&token_file, create_token(&config, host)).expect("token file");
    let config_arg = config.to_str().expect("utf-8 path").to_string();
    let daemon = Daemon::start(
        "ballast-collector",
        &["serve", "--config", &config_arg],
        &dir.join("collector.log"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    wait_until("the collector to answer", Duration::from_secs(30), || {
        matches!(http_get(addr, "/healthz", None), Ok((200, _))).then_some(())
    });
    Collector {
        addr,
        token_file,
        config,
        daemon,
    }
}

/// Starts `ballast-agent run` as `host`, polling every 2 s, delivering to `collector`.
pub fn start_agent(dir: &Path, host: &str, collector: &Collector) -> Daemon {
    std::fs::create_dir_all(dir).expect("agent dir");
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "host_id: {host}\nstate_dir: {}\npoll_interval_secs: 2\ncollector:\n  url: http://{}\n  token_file: {}\n",
            dir.display(),
            collector.addr,
            collector.token_file.display()
        ),
    )
    .expect("agent config");
    let config_arg = config.to_str().expect("utf-8 path").to_string();
    Daemon::start(
        "ballast-agent",
        &["run", "--config", &config_arg],
        &dir.join("agent.log"),
    )
}
