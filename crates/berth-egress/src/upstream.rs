//! Trust roots for the proxy's own TLS connections to origins (when it intercepts).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The ring crypto provider (never aws-lc-rs), used for every config this crate builds,
/// independently of any process-wide default.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Well-known locations of the host's CA bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Root store for upstream TLS: the webpki (Mozilla) roots, optionally the host's bundle,
/// plus any extra CAs (a corporate CA, or a test CA).
#[derive(Clone)]
pub struct UpstreamTls {
    roots: RootCertStore,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl Default for UpstreamTls {
    fn default() -> Self {
        Self::webpki()
    }
}

impl UpstreamTls {
    /// The Mozilla root set compiled in (webpki-roots).
    pub fn webpki() -> Self {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self { roots }
    }

    /// No roots at all; add some with [`UpstreamTls::add_pem`] (tests).
    pub fn empty() -> Self {
        Self {
            roots: RootCertStore::empty(),
        }
    }

    /// Adds the host's CA bundle from the first well-known location that exists; returns
    /// how many certificates were added (0 if no bundle was found).
    pub fn add_system_bundle(&mut self) -> io::Result<usize> {
        for path in SYSTEM_BUNDLES {
            let path = Path::new(path);
            if path.exists() {
                return self.add_pem_file(path);
            }
        }
        Ok(0)
    }

    /// Adds every certificate of a PEM bundle; returns how many were added. Certificates
    /// that parse but are not usable as trust anchors are skipped.
    pub fn add_pem(&mut self, pem: &[u8]) -> io::Result<usize> {
        let mut certs = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem) {
            certs
                .push(cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?);
        }
        let (added, _ignored) = self.roots.add_parsable_certificates(certs);
        Ok(added)
    }

    /// Adds every certificate of a PEM file.
    pub fn add_pem_file(&mut self, path: &Path) -> io::Result<usize> {
        let pem = std::fs::read(path)?;
        self.add_pem(&pem)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// Number of trust anchors.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// A client config trusting these roots (ring provider, ALPN http/1.1).
    pub fn client_config(&self) -> io::Result<Arc<rustls::ClientConfig>> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::other(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}
