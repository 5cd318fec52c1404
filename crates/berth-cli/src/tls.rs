//! How the CLI trusts an HTTPS server: the public web roots (webpki-roots), plus a CA the user
//! names (`--ca FILE`), or instead a pinned SHA-256 fingerprint of the server's certificate
//! (`--fingerprint HEX`, for a self-signed server: the pin alone decides, as with an SSH host
//! key). Both are saved with the login and used for every later call to that URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::client::{CliError, Result};

/// What to trust beyond the public roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// SHA-256 of the server's certificate, 64 lowercase hex digits.
    pub fingerprint: Option<String>,
    /// A PEM file of extra root certificates.
    pub ca: Option<PathBuf>,
}

/// `AB:CD:…` or `abcd…` → 64 lowercase hex digits.
pub fn normalize_fingerprint(s: &str) -> Result<String> {
    let hex: String = s
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CliError::other(format!(
            "invalid fingerprint {s:?}: expected the certificate's SHA-256 as 64 hex digits (colons allowed)"
        )));
    }
    Ok(hex)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client config for `trust`.
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::other(format!("cannot set up TLS: {e}")))?;
    if let Some(pin) = &trust.fingerprint {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert { pin: pin.clone() }))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &trust.ca {
        for cert in read_ca(ca)? {
            roots.add(cert).map_err(|e| {
                CliError::other(format!("--ca {}: unusable certificate: {e}", ca.display()))
            })?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::other(format!("--ca {}: {}", path.display(), e.kind())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| CliError::other(format!("--ca {}: not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(CliError::other(format!(
            "--ca {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// A pinned certificate did not match.
#[derive(Debug)]
struct PinMismatch {
    pinned: String,
    got: String,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's certificate has SHA-256 fingerprint {}, not the pinned {} (a new certificate on the server, or someone in between; if it is expected, run berth login again with the new --fingerprint)",
            self.got, self.pinned
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts exactly the certificate whose SHA-256 is `pin` (names and chain are not checked:
/// the pin is the trust), and checks the handshake's signatures with it as usual.
#[derive(Debug)]
struct PinnedCert {
    pin: String,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got = hex::encode(Sha256::digest(end_entity.as_ref()));
        if got == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(PinMismatch {
                pinned: self.pin.clone(),
                got,
            })),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let algs = provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let algs = provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS failure inside an error chain, phrased for a person, with the next step for an
/// untrusted (e.g. self-signed) certificate.
pub fn describe_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let tls = find_rustls_error(e)?;
    Some(match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(o)) => o.to_string(),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA (self-signed? pin it with --fingerprint SHA256 from the server's log or `berth doctor` there, or trust its CA with --ca FILE)".into()
        }
        other => other.to_string(),
    })
}

fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // An io::Error hides the error it wraps from `source()` (and may wrap another one).
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalize_and_bad_ones_are_refused() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(normalize_fingerprint(&colons).unwrap(), hex);
        assert_eq!(
            normalize_fingerprint(&format!("sha256:{hex}")).unwrap(),
            hex
        );
        for bad in ["", "abc", &"zz".repeat(32), &"ab".repeat(33)] {
            let e = normalize_fingerprint(bad).unwrap_err().to_string();
            assert!(e.contains("64 hex digits"), "{e}");
        }
    }

    #[test]
    fn the_pin_decides_and_a_mismatch_says_both_fingerprints() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().clone();
        let right = hex::encode(Sha256::digest(der.as_ref()));
        let name = ServerName::try_from("other.example").unwrap();
        let now = UnixTime::now();
        let ok = PinnedCert { pin: right.clone() };
        assert!(ok.verify_server_cert(&der, &[], &name, &[], now).is_ok());
        let wrong = PinnedCert {
            pin: "00".repeat(32),
        };
        let err = wrong
            .verify_server_cert(&der, &[], &name, &[], now)
            .unwrap_err();
        // As reqwest reports it: an io::Error in an io::Error.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err);
        let io = std::io::Error::other(io);
        let msg = describe_failure(&io).unwrap();
        assert!(
            msg.contains(&right) && msg.contains(&"00".repeat(32)),
            "{msg}"
        );
    }

    #[test]
    fn ca_file_errors_are_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a cert").unwrap();
        let t = Trust {
            fingerprint: None,
            ca: Some(p),
        };
        let e = client_config(&t).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let t = Trust {
            fingerprint: None,
            ca: Some(dir.path().join("absent")),
        };
        assert!(client_config(&t).is_err());
    }
}
