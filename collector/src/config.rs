//! The collector's configuration: YAML read into [`RawConfig`], then checked as a
//! whole into [`Settings`] at start-up, so a bad value stops the collector before it
//! listens.
//!
//! Same rules as the agent's: unknown keys are errors naming the key and its line,
//! every quantity has its unit in its name, mutually exclusive choices use a `type`
//! tag (`storage: {type: sqlite}` | `{type: postgres, url: ...}`), and
//! `ballast-collector --print-default-config` prints the defaults
//! (`config/collector.example.yaml` is generated from it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_daemon::config_file::{self, ConfigFileError};
use serde::{Deserialize, Serialize};

use crate::auth::IngestLimits;
use crate::correlation::CorrelationSettings;
use crate::listener::ConnectionLimits;
use crate::paths;
use crate::retention::RetentionSettings;
use crate::storage::StorageSettings;

/// The configuration file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `address:port` to listen on (default loopback, port 8470).
    pub listen: String,
    /// Where the embedded SQLite database is kept.
    pub state_dir: PathBuf,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub storage: StorageConfig,
    pub ingest: IngestConfig,
    pub read: ReadConfig,
    pub retention: RetentionConfig,
    pub correlation: CorrelationConfig,
    pub dashboard: crate::dashboard::DashboardConfig,
    pub notify: crate::notify::NotifyConfig,
    /// Named groups of hosts VMs migrate between (cluster name -> host names): within
    /// one, a uuid's rows on its hosts are one VM's history (`crate::clusters`).
    pub clusters: std::collections::BTreeMap<String, Vec<String>>,
}

/// Bounds on connections, whoever opens them (checked before any authentication).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Connections open at once; more wait in the kernel's listen backlog.
    pub max_connections: u32,
    /// A request's headers (and a TLS handshake) must arrive within this time.
    pub header_read_timeout_secs: u64,
    /// A request body must arrive whole within this time (ingest also has
    /// `ingest.body_timeout_secs`; the shorter applies).
    pub body_read_timeout_secs: u64,
    /// A keep-alive connection without a request is closed after this (keep it
    /// above the clients' pool idle time, 90 s for the agent).
    pub idle_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let limits = ConnectionLimits::default();
        Self {
            max_connections: u32::try_from(limits.max_connections).unwrap_or(1024),
            header_read_timeout_secs: limits.header_read_timeout.as_secs(),
            body_read_timeout_secs: limits.body_read_timeout.as_secs(),
            idle_timeout_secs: limits.idle_timeout.as_secs(),
        }
    }
}

/// HTTPS with rustls: both files set = TLS on; both empty = plain HTTP (behind a proxy).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Which database holds the fleet's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StorageConfig {
    /// Embedded SQLite; `path` empty = `<state_dir>/collector.sqlite`.
    Sqlite {
        #[serde(default)]
        path: PathBuf,
    },
    /// A PostgreSQL server shared by several stateless collectors.
    Postgres {
        /// libpq key=value or URL form, e.g. `host=/run/postgresql dbname=ballast user=ballast`;
        /// `sslmode` and `sslrootcert` as libpq (`storage::pg_tls`).
        url: String,
        /// Connections per collector.
        #[serde(default = "default_pool_size")]
        pool_size: u32,
    },
}

fn default_pool_size() -> u32 {
    8
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest request body as sent (compressed), bytes.
    pub max_body_bytes: u64,
    /// Largest body after gzip decompression, bytes (gzip-bomb guard).
    pub max_decompressed_bytes: u64,
    /// A body must arrive within this time (slow-sender guard).
    pub body_timeout_secs: u64,
    /// Token bucket per host: sustained requests per second ...
    pub rate_per_sec: f64,
    /// ... and burst size.
    pub burst: u32,
    /// Requests of one host handled at the same time; more get 429.
    pub max_in_flight_per_host: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadConfig {
    /// File holding the bearer token the query API (`GET /api/v1/*`) requires.
    /// Empty = no token, allowed only when `listen` is a loopback address.
    pub token_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Balloon rollups and small events (hello, health, near misses) are kept this long.
    pub rollup_days: u32,
    /// Minute rollups are kept this long, then compacted into hourly rollups (kept
    /// for `rollup_days`).
    pub minute_rollup_hours: u32,
    /// OOM events are kept this long.
    pub oom_days: u32,
    /// Seconds between two retention passes.
    pub interval_secs: u64,
    /// Rows deleted per statement (each batch is its own short transaction).
    pub batch_rows: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    /// How far before an OOM the balloon history is examined.
    pub window_secs: u64,
    /// Host memory use (percent) above which a host is expected to inflate balloons.
    pub host_target_pct: f64,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: paths::LISTEN.to_string(),
            state_dir: PathBuf::from(paths::STATE_DIR),
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
            storage: StorageConfig::Sqlite {
                path: PathBuf::new(),
            },
            ingest: IngestConfig::default(),
            read: ReadConfig::default(),
            retention: RetentionConfig::default(),
            correlation: CorrelationConfig::default(),
            dashboard: crate::dashboard::DashboardConfig::default(),
            notify: crate::notify::NotifyConfig::default(),
            clusters: std::collections::BTreeMap::new(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        let defaults = IngestLimits::default();
        Self {
            max_body_bytes: u64::try_from(defaults.max_body_bytes).unwrap_or(u64::MAX),
            max_decompressed_bytes: u64::try_from(defaults.max_decompressed_bytes)
                .unwrap_or(u64::MAX),
            body_timeout_secs: defaults.body_timeout.as_secs(),
            rate_per_sec: defaults.rate_per_sec,
            burst: defaults.burst,
            max_in_flight_per_host: defaults.max_in_flight_per_host,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            rollup_days: 30,
            minute_rollup_hours: 48,
            oom_days: 365,
            interval_secs: 3600,
            batch_rows: 5000,
        }
    }
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        let defaults = CorrelationSettings::default();
        Self {
            window_secs: defaults.window_secs,
            host_target_pct: defaults.host_target_pct,
        }
    }
}

/// The checked configuration the collector runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: SocketAddr,
    /// `server:`: connection cap and read timeouts.
    pub connections: ConnectionLimits,
    pub tls: Option<TlsFiles>,
    pub storage: StorageSettings,
    pub ingest: IngestLimits,
    /// The query API's bearer token; `None` only on a loopback listener.
    pub read_token: Option<String>,
    pub retention: RetentionSettings,
    pub correlation: CorrelationSettings,
    pub dashboard: crate::dashboard::DashboardSettings,
    pub notify: crate::notify::NotifySettings,
    pub clusters: crate::clusters::Clusters,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Reading the file failed, or its YAML does not fit the schema.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or its YAML does not fit the schema (names the file,
    /// and for YAML the line and column).
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ValidationError,
    },
}

/// A value that parsed but makes no sense; each names its field.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValidationError {
    #[error("listen ({0:?}) is not an address:port")]
    Listen(String),
    #[error("server.max_connections ({0}) must be 1 to 1000000")]
    MaxConnections(u32),
    #[error("server.{field} ({value}) must be 1 to 3600")]
    ServerTimeout { field: &'static str, value: u64 },
    #[error("tls.cert_file and tls.key_file must be set together")]
    TlsHalf,
    #[error("storage.url is empty")]
    EmptyPostgresUrl,
    #[error(transparent)]
    PostgresTls(#[from] crate::storage::pg_tls::PgTlsError),
    #[error("storage.pool_size ({0}) must be 1 to 256")]
    PoolSize(u32),
    #[error("state_dir ({0:?}) must be an absolute path")]
    RelativeStateDir(PathBuf),
    #[error("ingest.{field} ({value}) must be 1 KiB to 1 GiB")]
    BodyLimit { field: &'static str, value: u64 },
    #[error("ingest.body_timeout_secs ({0}) must be 1 to 600")]
    BodyTimeout(u64),
    #[error("ingest.rate_per_sec ({0}) must be above 0")]
    Rate(f64),
    #[error("ingest.{field} ({value}) must be at least 1")]
    AtLeastOne { field: &'static str, value: u32 },
    #[error("read.token_file is empty but listen ({0}) is not a loopback address: the query API needs a token")]
    ReadTokenRequired(SocketAddr),
    #[error("read.token_file ({path:?}): {message}")]
    ReadTokenFile { path: PathBuf, message: String },
    #[error("retention.{field} ({value}) must be at least 1")]
    Retention { field: &'static str, value: u64 },
    #[error("correlation.window_secs ({0}) must be 60 to 86400")]
    Window(u64),
    #[error("correlation.host_target_pct ({0}) must be 1 to 100")]
    HostTarget(f64),
    #[error(transparent)]
    Dashboard(#[from] crate::dashboard::DashboardConfigError),
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyConfigError),
    #[error(transparent)]
    Clusters(#[from] crate::clusters::ClusterError),
}

impl RawConfig {
    /// Parses YAML text; `path` only names the source in errors.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Ok(config_file::parse_yaml(text, path)?)
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Ok(config_file::read_yaml(path)?.0)
    }

    /// The defaults as commented YAML (the source of config/collector.example.yaml).
    pub fn default_yaml() -> String {
        let body = serde_yaml_ng::to_string(&Self::default())
            .unwrap_or_else(|error| format!("# failed to render defaults: {error}\n"));
        format!(
            "# ballast-collector configuration: every key with its default.\n\
             # Generated by `ballast-collector --print-default-config`; keep only what you change.\n\
             # storage alternatives: {{type: sqlite, path: ''}} | {{type: postgres, url: 'host=... dbname=...', pool_size: 8}}\n\
             # PostgreSQL over TCP: add sslmode=verify-full sslrootcert=/etc/ballast/pg-ca.pem to the url (TLS, server checked against that CA and host name;\n\
             #   verify-ca: CA only; require: encrypted but any certificate, an attacker on the path can read it; prefer (default): TLS if offered; disable)\n\
             # notify.webhooks entry: {{name: ops, url: 'https://hooks.slack.com/services/...', format: slack, verdicts: [balloon, balloon_contributed], kinds: [], secret_file: '', secret_header: Authorization, timeout_secs: 10, rate_limit_messages: 10, rate_limit_window_secs: 60, max_attempts: 20, backoff_initial_ms: 1000, backoff_max_secs: 300}}\n\
             # clusters example: {{pve-prod: [pve1, pve2, pve3]}}: hosts VMs migrate between; a uuid's history is joined across them (docs/collector.md, \"VM identity\")\n{body}"
        )
    }

    /// Checks the whole configuration; reads the read-token file.
    pub fn validate(self) -> Result<Settings, ValidationError> {
        let listen: SocketAddr = self
            .listen
            .trim()
            .parse()
            .map_err(|_| ValidationError::Listen(self.listen.clone()))?;
        let tls = match (
            self.tls.cert_file.as_os_str().is_empty(),
            self.tls.key_file.as_os_str().is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some(TlsFiles {
                cert_file: self.tls.cert_file,
                key_file: self.tls.key_file,
            }),
            _ => return Err(ValidationError::TlsHalf),
        };
        let connections = validate_server(&self.server)?;
        if !self.state_dir.is_absolute() {
            return Err(ValidationError::RelativeStateDir(self.state_dir));
        }
        let storage = match self.storage {
            StorageConfig::Sqlite { path } => StorageSettings::Sqlite {
                path: if path.as_os_str().is_empty() {
                    self.state_dir.join(paths::SQLITE_FILE_NAME)
                } else {
                    path
                },
            },
            StorageConfig::Postgres { url, pool_size } => {
                if url.trim().is_empty() {
                    return Err(ValidationError::EmptyPostgresUrl);
                }
                // sslmode, sslrootcert (the CA file is read here) and the rest of the URL.
                crate::storage::pg_tls::PgConnect::from_url(&url)?;
                if !(1..=256).contains(&pool_size) {
                    return Err(ValidationError::PoolSize(pool_size));
                }
                StorageSettings::Postgres {
                    url,
                    pool_size: usize::try_from(pool_size).unwrap_or(8),
                }
            }
        };
        let ingest = validate_ingest(&self.ingest)?;
        let read_token = if self.read.token_file.as_os_str().is_empty() {
            if !listen.ip().is_loopback() {
                return Err(ValidationError::ReadTokenRequired(listen));
            }
            None
        } else {
            let path = self.read.token_file;
            let text =
                std::fs::read_to_string(&path).map_err(|error| ValidationError::ReadTokenFile {
                    path: path.clone(),
                    message: error.to_string(),
                })?;
            let token = text.trim().to_string();
            if token.len() < 16 {
                return Err(ValidationError::ReadTokenFile {
                    path,
                    message: "the token must be at least 16 characters".into(),
                });
            }
            Some(token)
        };
        let retention = &self.retention;
        for (field, value) in [
            ("rollup_days", u64::from(retention.rollup_days)),
            (
                "minute_rollup_hours",
                u64::from(retention.minute_rollup_hours),
            ),
            ("oom_days", u64::from(retention.oom_days)),
            ("interval_secs", retention.interval_secs),
            ("batch_rows", u64::from(retention.batch_rows)),
        ] {
            if value == 0 {
                return Err(ValidationError::Retention { field, value });
            }
        }
        let window = self.correlation.window_secs;
        if !(60..=86_400).contains(&window) {
            return Err(ValidationError::Window(window));
        }
        let target = self.correlation.host_target_pct;
        if !(1.0..=100.0).contains(&target) {
            return Err(ValidationError::HostTarget(target));
        }
        let dashboard = self
            .dashboard
            .validate(listen, tls.is_some(), read_token.as_deref())?;
        let notify = self.notify.validate()?;
        let clusters = crate::clusters::Clusters::from_config(&self.clusters)?;
        const DAY_SECS: u64 = 86_400;
        Ok(Settings {
            listen,
            connections,
            tls,
            storage,
            ingest,
            read_token,
            retention: RetentionSettings {
                rollups: Duration::from_secs(u64::from(retention.rollup_days) * DAY_SECS),
                minute_rollups: Duration::from_secs(
                    u64::from(retention.minute_rollup_hours) * 3600,
                ),
                ooms: Duration::from_secs(u64::from(retention.oom_days) * DAY_SECS),
                interval: Duration::from_secs(retention.interval_secs),
                batch_rows: retention.batch_rows,
            },
            correlation: CorrelationSettings {
                window_secs: window,
                host_target_pct: target,
                ..CorrelationSettings::default()
            },
            dashboard,
            notify,
            clusters,
        })
    }
}

fn validate_server(raw: &ServerConfig) -> Result<ConnectionLimits, ValidationError> {
    if !(1..=1_000_000).contains(&raw.max_connections) {
        return Err(ValidationError::MaxConnections(raw.max_connections));
    }
    for (field, value) in [
        ("header_read_timeout_secs", raw.header_read_timeout_secs),
        ("body_read_timeout_secs", raw.body_read_timeout_secs),
        ("idle_timeout_secs", raw.idle_timeout_secs),
    ] {
        if !(1..=3600).contains(&value) {
            return Err(ValidationError::ServerTimeout { field, value });
        }
    }
    Ok(ConnectionLimits {
        max_connections: usize::try_from(raw.max_connections).unwrap_or(1024),
        header_read_timeout: Duration::from_secs(raw.header_read_timeout_secs),
        body_read_timeout: Duration::from_secs(raw.body_read_timeout_secs),
        idle_timeout: Duration::from_secs(raw.idle_timeout_secs),
    })
}

fn validate_ingest(raw: &IngestConfig) -> Result<IngestLimits, ValidationError> {
    const KIB: u64 = 1024;
    const GIB: u64 = 1024 * 1024 * 1024;
    for (field, value) in [
        ("max_body_bytes", raw.max_body_bytes),
        ("max_decompressed_bytes", raw.max_decompressed_bytes),
    ] {
        if !(KIB..=GIB).contains(&value) {
            return Err(ValidationError::BodyLimit { field, value });
        }
    }
    if !(1..=600).contains(&raw.body_timeout_secs) {
        return Err(ValidationError::BodyTimeout(raw.body_timeout_secs));
    }
    if raw.rate_per_sec.is_nan() || raw.rate_per_sec <= 0.0 {
        return Err(ValidationError::Rate(raw.rate_per_sec));
    }
    for (field, value) in [
        ("burst", raw.burst),
        ("max_in_flight_per_host", raw.max_in_flight_per_host),
    ] {
        if value == 0 {
            return Err(ValidationError::AtLeastOne { field, value });
        }
    }
    Ok(IngestLimits {
        max_body_bytes: usize::try_from(raw.max_body_bytes).unwrap_or(usize::MAX),
        max_decompressed_bytes: usize::try_from(raw.max_decompressed_bytes).unwrap_or(usize::MAX),
        body_timeout: Duration::from_secs(raw.body_timeout_secs),
        rate_per_sec: raw.rate_per_sec,
        burst: raw.burst,
        max_in_flight_per_host: raw.max_in_flight_per_host,
    })
}

/// Reads `path` (defaults when `None`) and validates it: the start-up check.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let (raw, source) = match path {
        Some(path) => (RawConfig::from_file(path)?, path.to_path_buf()),
        None => (RawConfig::default(), PathBuf::from("(defaults)")),
    };
    raw.validate().map_err(|source_error| ConfigError::Invalid {
        path: source,
        source: source_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RawConfig, ConfigError> {
        RawConfig::from_yaml(text, Path::new("collector.yaml"))
    }

    #[test]
    fn defaults_validate_to_loopback_8470_and_sqlite_in_the_state_dir() {
        let settings = RawConfig::default().validate().expect("defaults are valid");
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8470");
        assert_eq!(
            settings.storage,
            StorageSettings::Sqlite {
                path: PathBuf::from("/var/lib/ballast-collector/collector.sqlite")
            }
        );
        assert_eq!(settings.read_token, None);
        assert_eq!(settings.retention.rollups, Duration::from_secs(30 * 86_400));
        assert_eq!(settings.retention.ooms, Duration::from_secs(365 * 86_400));
        assert_eq!(settings.ingest.max_body_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn the_default_yaml_reads_back_as_the_defaults() {
        let yaml = RawConfig::default_yaml();
        assert_eq!(parse(&yaml).expect("parses"), RawConfig::default());
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_file_key_and_line() {
        let message = parse("listen: 127.0.0.1:1\nretention:\n  rollup_dayz: 3\n")
            .expect_err("typo")
            .to_string();
        assert!(message.contains("collector.yaml"), "{message}");
        assert!(message.contains("rollup_dayz"), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn storage_is_chosen_by_type_tag() {
        let raw = parse("storage:\n  type: postgres\n  url: host=/run/postgresql\n").expect("pg");
        let settings = raw.validate().expect("valid");
        assert_eq!(
            settings.storage,
            StorageSettings::Postgres {
                url: "host=/run/postgresql".into(),
                pool_size: 8
            }
        );
        let message = parse("storage:\n  type: sqlite\n  url: x\n")
            .expect_err("url is not a sqlite key")
            .to_string();
        assert!(message.contains("url"), "{message}");
        assert!(parse("storage:\n  type: mysql\n").is_err());
        // TLS parameters of the URL are checked at start-up, naming the file.
        let raw = parse(
            "storage:\n  type: postgres\n  url: host=db sslmode=verify-full sslrootcert=/nonexistent/pg-ca.pem\n",
        )
        .expect("pg");
        let message = raw.validate().expect_err("missing CA file").to_string();
        assert!(message.contains("/nonexistent/pg-ca.pem"), "{message}");
        assert!(message.contains("sslrootcert"), "{message}");
    }

    #[test]
    fn values_are_checked_and_named() {
        let raw = parse("listen: 0.0.0.0:8470\n").expect("parses");
        assert!(matches!(
            raw.validate(),
            Err(ValidationError::ReadTokenRequired(_))
        ));
        let raw = parse("tls:\n  cert_file: /etc/c.pem\n").expect("parses");
        assert_eq!(raw.validate(), Err(ValidationError::TlsHalf));
        let raw = parse("ingest:\n  max_body_bytes: 10\n").expect("parses");
        assert!(raw
            .validate()
            .expect_err("too small")
            .to_string()
            .contains("ingest.max_body_bytes"));
        let raw = parse("server:\n  header_read_timeout_secs: 0\n").expect("parses");
        assert!(raw
            .validate()
            .expect_err("zero")
            .to_string()
            .contains("server.header_read_timeout_secs"));
        let raw = parse("retention:\n  oom_days: 0\n").expect("parses");
        assert!(raw
            .validate()
            .expect_err("zero")
            .to_string()
            .contains("retention.oom_days"));
    }

    #[test]
    fn a_non_loopback_listener_reads_its_token_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("read.token");
        std::fs::write(&file, "0123456789abcdef0123\n").expect("write");
        let raw = parse(&format!(
            "listen: 0.0.0.0:8470\nread:\n  token_file: {}\n",
            file.display()
        ))
        .expect("parses");
        let settings = raw.validate().expect("valid");
        assert_eq!(settings.read_token.as_deref(), Some("0123456789abcdef0123"));
    }
}
