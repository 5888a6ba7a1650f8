//! PostgreSQL over TLS (rustls with ring, no OpenSSL): libpq's `sslmode` and
//! `sslrootcert` read from `storage.url` and turned into a tokio-postgres
//! configuration plus a TLS connector.
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default, as libpq) | when the server offers TLS, else plain | no |
//! | `require` | always | no, unless `sslrootcert` is given (then as `verify-ca`, as libpq) |
//! | `verify-ca` | always | signed by the `sslrootcert` CA |
//! | `verify-full` | always | signed by the `sslrootcert` CA and issued for the `host` |
//!
//! `verify-ca` and `verify-full` need `sslrootcert` (a PEM file); there is no default
//! `~/.postgresql/root.crt`. TLS needs a TCP `host`: PostgreSQL never encrypts a unix
//! socket, so `require` and stronger fail there, `prefer` connects in plain text.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values this collector honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Why `storage.url` cannot be used; each names the parameter or file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgTlsError {
    #[error(
        "storage.url: sslmode {0:?} is not one of disable, prefer, require, verify-ca, verify-full"
    )]
    Mode(String),
    #[error("storage.url: sslmode={0} needs sslrootcert=<PEM file of the CA that signed the server's certificate>")]
    NoRootCert(&'static str),
    #[error("storage.url: sslrootcert ({path}): cannot read it: {message}")]
    ReadRootCert { path: PathBuf, message: String },
    #[error(
        "storage.url: sslrootcert ({path}): holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    )]
    EmptyRootCert { path: PathBuf },
    #[error("storage.url: sslrootcert ({path}): not a valid CA certificate: {message}")]
    InvalidRootCert { path: PathBuf, message: String },
    #[error("storage.url: {0}")]
    Url(String),
    #[error("storage.url: TLS set-up failed: {0}")]
    Tls(String),
}

/// A checked `storage.url`: what to connect to, and how TLS is done.
#[derive(Clone)]
pub struct PgConnect {
    pub config: tokio_postgres::Config,
    pub mode: SslMode,
    pub tls: MakeRustlsConnect,
}

impl std::fmt::Debug for PgConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnect")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PgConnect {
    /// Reads `url` (libpq key=value or URL form), its `sslmode` and `sslrootcert`
    /// (the CA file is read and checked here).
    pub fn from_url(url: &str) -> Result<Self, PgTlsError> {
        let (rest, params) = split_tls_params(url)?;
        let mode = match params.sslmode.as_deref() {
            None => SslMode::Prefer,
            Some(text) => SslMode::parse(text).ok_or_else(|| PgTlsError::Mode(text.into()))?,
        };
        let roots = match params.sslrootcert.as_deref() {
            Some(path) if mode != SslMode::Disable => Some(load_roots(Path::new(path))?),
            _ => None,
        };
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|error| PgTlsError::Url(error.to_string()))?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(PgTlsError::NoRootCert(mode.name()))
            }
            (SslMode::VerifyFull, Some(roots)) => web_pki(roots, &provider)?,
            (SslMode::VerifyCa | SslMode::Require, Some(roots)) => Arc::new(AnyName {
                inner: web_pki(roots, &provider)?,
            }),
            (_, _) => Arc::new(Unverified {
                provider: provider.clone(),
            }),
        };
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| PgTlsError::Tls(error.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            config,
            mode,
            tls: MakeRustlsConnect::new(client),
        })
    }
}

fn web_pki(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, PgTlsError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| PgTlsError::Tls(error.to_string()))
}

fn load_roots(path: &Path) -> Result<RootCertStore, PgTlsError> {
    let pem = std::fs::read(path).map_err(|error| PgTlsError::ReadRootCert {
        path: path.to_path_buf(),
        message: error.to_string(),
    })?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|error| PgTlsError::InvalidRootCert {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        roots
            .add(certificate)
            .map_err(|error| PgTlsError::InvalidRootCert {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?;
    }
    if roots.is_empty() {
        return Err(PgTlsError::EmptyRootCert {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// `sslmode=verify-ca`: the chain must lead to the CA, the name may differ.
#[derive(Debug)]
struct AnyName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `sslmode=prefer|require` without a CA: encrypted, but any certificate is taken
/// (the handshake signature is still checked), so an active attacker on the path can
/// read the traffic. libpq does the same.
#[derive(Debug)]
struct Unverified {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS parameters taken out of a connection string.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Splits `sslmode` and `sslrootcert` off `url`; the rest is for tokio-postgres
/// (which knows neither `verify-*` nor `sslrootcert`).
fn split_tls_params(url: &str) -> Result<(String, TlsParams), PgTlsError> {
    let mut params = TlsParams::default();
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            params.sslmode = Some(value);
            true
        }
        "sslrootcert" => {
            params.sslrootcert = Some(value);
            true
        }
        _ => false,
    };
    let trimmed = url.trim();
    let rest = if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        match trimmed.split_once('?') {
            None => trimmed.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(key, percent_decode(value)?) {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value) in key_values(trimmed)? {
            if !take(&key, value.clone()) {
                let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
                kept.push(format!("{key}='{quoted}'"));
            }
        }
        kept.join(" ")
    };
    Ok((rest, params))
}

/// libpq's key=value form: `key = value` pairs, values optionally single-quoted,
/// backslash escapes.
fn key_values(text: &str) -> Result<Vec<(String, String)>, PgTlsError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(PgTlsError::Url(format!("{key:?} has no '=value'")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(PgTlsError::Url(format!("{key}: unterminated quote"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn percent_decode(text: &str) -> Result<String, PgTlsError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| PgTlsError::Url(format!("bad percent escape in {text:?}")))?;
            out.push(hex);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PgTlsError::Url(format!("{text:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_both_forms() {
        let (rest, params) = split_tls_params(
            "host=db.example port=5432 sslmode=verify-full sslrootcert='/etc/my ca.pem' dbname=ballast",
        )
        .expect("key=value");
        assert_eq!(rest, "host='db.example' port='5432' dbname='ballast'");
        assert_eq!(params.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/etc/my ca.pem"));

        let (rest, params) = split_tls_params(
            "postgresql://ballast:pw@db.example/ballast?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .expect("url");
        assert_eq!(
            rest,
            "postgresql://ballast:pw@db.example/ballast?application_name=x"
        );
        assert_eq!(params.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/etc/ca.pem"));

        // What is kept reaches tokio-postgres unchanged, quotes and backslashes included.
        let (rest, _) = split_tls_params(r"host=db password='it\'s \\ secret' sslmode=require")
            .expect("quoted");
        let config = tokio_postgres::Config::from_str(&rest).expect("tokio-postgres reads it");
        assert_eq!(config.get_password(), Some(&br"it's \ secret"[..]));

        let (rest, params) =
            split_tls_params("host=/run/postgresql dbname=ballast").expect("plain");
        assert_eq!(rest, "host='/run/postgresql' dbname='ballast'");
        assert_eq!(params, TlsParams::default());
    }

    #[test]
    fn modes_and_ca_files_are_checked_with_the_parameter_named() {
        let error = PgConnect::from_url("host=db sslmode=verify_full").expect_err("mode");
        assert_eq!(error, PgTlsError::Mode("verify_full".into()));
        let error = PgConnect::from_url("host=db sslmode=verify-full").expect_err("no CA");
        assert!(error.to_string().contains("sslrootcert"), "{error}");
        let error =
            PgConnect::from_url("host=db sslmode=verify-ca sslrootcert=/nonexistent/ca.pem")
                .expect_err("missing CA");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "no certificate here\n").expect("write");
        let error = PgConnect::from_url(&format!(
            "host=db sslmode=verify-full sslrootcert={}",
            garbage.display()
        ))
        .expect_err("empty CA");
        assert!(matches!(error, PgTlsError::EmptyRootCert { .. }), "{error}");
        for (url, mode) in [
            ("host=/run/postgresql dbname=x", SslMode::Prefer),
            ("host=db sslmode=disable", SslMode::Disable),
            ("host=db sslmode=require", SslMode::Require),
            ("postgres://db/x?sslmode=require", SslMode::Require),
        ] {
            assert_eq!(PgConnect::from_url(url).expect(url).mode, mode, "{url}");
        }
    }
}
