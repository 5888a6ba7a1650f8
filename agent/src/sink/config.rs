//! [`SinkConfig`]: how the sender talks to the collector, with its defaults and as
//! read from the agent's settings.

use std::path::PathBuf;
use std::time::Duration;

use crate::collector_tls::CaBundle;
use crate::config::Settings;
use crate::spool::BatchLimits;

/// How the sender talks to the collector.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// The collector's base URL, e.g. `https://collector.example:8470`.
    pub url: String,
    pub token_file: PathBuf,
    /// `collector.ca_file`: the only CA trusted for the collector (else web PKI roots).
    pub ca: Option<CaBundle>,
    pub host_id: String,
    pub agent_version: String,
    pub batch: BatchLimits,
    /// Whole request, including the answer.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_max: Duration,
    /// Look at the spool at least this often even without a push (other processes may
    /// have left events there).
    pub idle_poll: Duration,
    /// `<state_dir>/delivery.json` for `ballast-agent status` (`None`: not written).
    pub state_file: Option<PathBuf>,
}

impl SinkConfig {
    /// Defaults for a collector URL.
    pub fn new(url: &str, token_file: PathBuf, host_id: &str) -> Self {
        Self {
            url: url.to_string(),
            token_file,
            ca: None,
            host_id: host_id.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            batch: BatchLimits::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(600),
            idle_poll: Duration::from_secs(5),
            state_file: None,
        }
    }

    /// `None` when no collector is configured (events stay in the spool).
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        let url = settings.collector.url.trim();
        (!url.is_empty()).then(|| {
            let mut config = Self {
                state_file: Some(settings.state_dir.join(crate::paths::DELIVERY_FILE_NAME)),
                ..Self::new(
                    url,
                    settings.collector.token_file.clone(),
                    &settings.host_id,
                )
            };
            config.ca.clone_from(&settings.collector_ca);
            config
        })
    }
}
