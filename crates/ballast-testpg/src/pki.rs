//! Test support: a private CA and a server certificate signed by it, generated at test
//! time (rcgen, ring), for TLS tests on loopback: the collector's HTTPS listener and
//! the throwaway cluster's `ssl=on`. Nothing is written to disk here; callers place the
//! PEM texts where their server expects them.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA and one server certificate it signed, all PEM.
#[derive(Clone)]
pub struct TestPki {
    /// The CA certificate: what a client trusts.
    pub ca_pem: String,
    /// The server's certificate (signed by the CA).
    pub server_cert_pem: String,
    /// The server's private key (PKCS#8).
    pub server_key_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

impl TestPki {
    /// A fresh CA named `ca_name`, and a server certificate for `server_names` (DNS
    /// names or IP addresses, e.g. `localhost`, `127.0.0.1`).
    pub fn generate(ca_name: &str, server_names: &[&str]) -> Result<Self, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let names: Vec<String> = server_names.iter().map(|name| name.to_string()).collect();
        let mut server_params = CertificateParams::new(names)?;
        server_params.distinguished_name.push(
            DnType::CommonName,
            server_names.first().copied().unwrap_or("server"),
        );
        let server_cert = server_params.signed_by(&server_key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        })
    }
}
