//! How the agent's link to the collector is secured: which URLs may carry the bearer
//! token in clear text (loopback only, unless `collector.allow_insecure_http`), and the
//! private CA of `collector.ca_file`, read and checked once at start-up.
//!
//! A CA file replaces the built-in web PKI roots: with it set, the agent trusts only
//! that CA for the collector, so a certificate from any public CA for the same name is
//! refused.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The PEM certificates of `collector.ca_file`, checked to build a TLS client.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub path: PathBuf,
    pem: Vec<u8>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why `collector.ca_file` cannot be used; each names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaFileError {
    #[error("collector.ca_file ({path}): cannot read it: {message}")]
    Read { path: PathBuf, message: String },
    #[error("collector.ca_file ({path}): holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    Empty { path: PathBuf },
    #[error("collector.ca_file ({path}): not a valid certificate: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl CaBundle {
    /// Reads `path` and checks that its certificates make a TLS trust store.
    pub fn load(path: &Path) -> Result<Self, CaFileError> {
        let pem = std::fs::read(path).map_err(|error| CaFileError::Read {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        let bundle = Self {
            path: path.to_path_buf(),
            pem,
        };
        let certificates = bundle.certificates()?;
        if certificates.is_empty() {
            return Err(CaFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        // Adding a certificate to rustls' root store parses it: build a client once.
        bundle
            .apply(reqwest::Client::builder())?
            .build()
            .map_err(|error| CaFileError::Invalid {
                path: path.to_path_buf(),
                message: ballast_daemon::error_chain(&error),
            })?;
        Ok(bundle)
    }

    fn certificates(&self) -> Result<Vec<reqwest::Certificate>, CaFileError> {
        reqwest::Certificate::from_pem_bundle(&self.pem).map_err(|error| CaFileError::Invalid {
            path: self.path.clone(),
            message: ballast_daemon::error_chain(&error),
        })
    }

    /// `builder` trusting only this CA (the built-in web PKI roots are dropped).
    pub fn apply(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, CaFileError> {
        let builder = builder.tls_built_in_root_certs(false);
        Ok(self
            .certificates()?
            .into_iter()
            .fold(builder, reqwest::ClientBuilder::add_root_certificate))
    }
}

/// `true` when `url` is `http://` to a host other than loopback (127.0.0.0/8, ::1,
/// `localhost`): the bearer token would cross the network in clear text. An
/// unparsable URL counts as not loopback.
pub fn is_clear_text_to_remote(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return url.starts_with("http://");
    };
    if parsed.scheme() != "http" {
        return false;
    }
    let Some(host) = parsed.host_str() else {
        return true;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => !bare.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_be_plain_http() {
        for url in [
            "http://127.0.0.1:8470",
            "http://127.3.4.5:8470/",
            "http://[::1]:8470",
            "http://localhost:8470",
            "http://LOCALHOST",
            "https://collector.example:8470",
            "https://10.0.0.5",
        ] {
            assert!(!is_clear_text_to_remote(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:8470",
            "http://collector.example:8470",
            "http://localhost.evil.example",
            "http://[::2]:8470",
            "http://128.0.0.1",
        ] {
            assert!(is_clear_text_to_remote(url), "{url}");
        }
    }

    #[test]
    fn a_ca_file_that_is_missing_empty_or_garbage_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let error = CaBundle::load(&missing).expect_err("missing");
        assert!(matches!(error, CaFileError::Read { .. }), "{error}");
        assert!(error.to_string().contains("missing.pem"), "{error}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = CaBundle::load(&empty).expect_err("empty");
        assert!(matches!(error, CaFileError::Empty { .. }), "{error}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let error = CaBundle::load(&garbage).expect_err("garbage");
        assert!(matches!(error, CaFileError::Invalid { .. }), "{error}");
        assert!(error.to_string().contains("garbage.pem"), "{error}");
    }
}
