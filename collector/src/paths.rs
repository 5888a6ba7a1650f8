//! Every default path, address and port of the collector, in one place.

/// The collector's configuration file.
pub const CONFIG_FILE: &str = "/etc/ballast/collector.yaml";
/// Where the embedded SQLite database lives by default.
pub const STATE_DIR: &str = "/var/lib/ballast-collector";
/// The SQLite file name inside the state dir.
pub const SQLITE_FILE_NAME: &str = "collector.sqlite";
/// The default listen address: loopback only, port 8470 (ballast's registered-by-us port;
/// agents default to `https://<collector>:8470`).
pub const LISTEN: &str = "127.0.0.1:8470";
