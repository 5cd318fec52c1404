//! Certificates as the server holds them: PEM parsed into rustls's [`CertifiedKey`], and the
//! facts of a leaf certificate (names, validity, serial, SHA-256 fingerprint) read with
//! x509-parser for renewal, doctor and logs. Private keys never appear in an error or a log.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The crypto provider of every TLS config the server builds (ring, like the rest of berth).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the server reports about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lowercase hex.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Subject alternative names: DNS names and IP addresses, as text.
    pub names: Vec<String>,
    /// SHA-256 of the DER certificate, lowercase hex (what `berth login --fingerprint` pins).
    pub fingerprint: String,
    /// Issuer and subject are the same name (self-signed).
    pub self_issued: bool,
}

impl CertInfo {
    /// Whether the certificate covers `host` (exact DNS name or IP; `*.suffix` covers one label).
    pub fn covers(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|n| {
            n == &host
                || n.strip_prefix("*.").is_some_and(|suffix| {
                    host.split_once('.')
                        .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix)
                })
        })
    }

    /// The moment after which the certificate should be renewed: when a third of its lifetime
    /// is left.
    pub fn renew_at(&self) -> OffsetDateTime {
        self.not_after - (self.not_after - self.not_before) / 3
    }
}

/// SHA-256 of a DER certificate as lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Reads a DER leaf certificate.
pub fn info(der: &[u8]) -> anyhow::Result<CertInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("certificate does not parse: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    if let Some(ip) = ip_from_bytes(b) {
                        names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        serial: hex::encode(cert.tbs_certificate.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        names,
        fingerprint: fingerprint(der),
        self_issued: cert.subject() == cert.issuer(),
    })
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// A certificate chain and its key, parsed and checked to belong together.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// Parses a PEM chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn parse_pem(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Loaded> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("certificate PEM does not parse: {e}"))?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow::anyhow!("no certificate in the PEM"))?;
    let info = info(leaf)?;
    // The key's own error text could quote it; say only what is wrong.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| anyhow::anyhow!("no PEM private key found (PKCS#8, RSA or EC)"))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| anyhow::anyhow!("the private key is not usable (unsupported type)"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            anyhow::anyhow!("the private key does not belong to the certificate")
        }
        other => anyhow::anyhow!("the certificate is not usable: {other}"),
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn parses_a_pair_and_reads_names_and_fingerprint() {
        let (cert, key) = self_signed(&["berth.example", "127.0.0.1", "::1"]);
        let l = parse_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(l.info.names, ["berth.example", "127.0.0.1", "::1"]);
        assert!(l.info.covers("Berth.Example") && l.info.covers("::1"));
        assert!(!l.info.covers("other.example"));
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(l.info.fingerprint, fingerprint(&der));
        assert_eq!(l.info.fingerprint.len(), 64);
        assert!(l.info.self_issued);
        assert!(l.info.renew_at() > l.info.not_before && l.info.renew_at() < l.info.not_after);
    }

    #[test]
    fn a_foreign_key_or_garbage_is_refused_without_quoting_the_key() {
        let (cert, _) = self_signed(&["a.example"]);
        let (_, other_key) = self_signed(&["b.example"]);
        let err = parse_pem(cert.as_bytes(), other_key.as_bytes())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not belong"), "{err}");
        assert!(!err.contains("PRIVATE"), "{err}");
        assert!(parse_pem(b"garbage", other_key.as_bytes()).is_err());
        assert!(parse_pem(cert.as_bytes(), b"garbage").is_err());
    }

    #[test]
    fn wildcards_cover_one_label() {
        let (cert, key) = self_signed(&["*.example.com"]);
        let l = parse_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert!(l.info.covers("berth.example.com"));
        assert!(!l.info.covers("a.b.example.com"));
        assert!(!l.info.covers("example.com"));
    }
}
