//! `elastic:`: how the agent judges elastic memory devices (issue 20, docs/elastic.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `elastic:` as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticConfig {
    /// Seconds a virtio-mem device's plugged size may differ from its request before
    /// the request is `stuck` (5 to 86400; default 60). Two polls without progress
    /// make it stuck sooner.
    pub converge_timeout_secs: u64,
}

impl Default for ElasticConfig {
    fn default() -> Self {
        Self {
            converge_timeout_secs: crate::elastic::DEFAULT_CONVERGE_TIMEOUT.as_secs(),
        }
    }
}

/// An `elastic:` value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("elastic.converge_timeout_secs ({0}) must be 5 to 86400")]
pub struct ElasticConfigError(pub u64);

impl ElasticConfig {
    /// Checks every key (at start-up, `check-config` and reload).
    pub fn validate(&self) -> Result<(), ElasticConfigError> {
        if !(5..=86_400).contains(&self.converge_timeout_secs) {
            return Err(ElasticConfigError(self.converge_timeout_secs));
        }
        Ok(())
    }

    pub fn converge_timeout(&self) -> Duration {
        Duration::from_secs(self.converge_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_converge_timeout_is_checked() {
        assert_eq!(ElasticConfig::default().converge_timeout_secs, 60);
        assert!(ElasticConfig::default().validate().is_ok());
        for bad in [0, 4, 86_401] {
            let config = ElasticConfig {
                converge_timeout_secs: bad,
            };
            let error = config.validate().expect_err("out of range");
            assert!(error.to_string().contains("elastic.converge_timeout_secs"));
        }
    }
}
