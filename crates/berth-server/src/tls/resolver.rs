//! The certificate the HTTPS listener presents, swappable while the server runs: a rustls
//! [`ResolvesServerCert`] holding the current [`CertifiedKey`] (replaced on reload or renewal)
//! and, during an ACME order, the TLS-ALPN-01 challenge certificate answered only to clients
//! that ask for the `acme-tls/1` protocol.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::{self, CertInfo};

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The served certificate and the pending ACME challenge certificates.
#[derive(Default)]
pub struct CertResolver {
    current: Mutex<Option<(Arc<CertifiedKey>, CertInfo)>>,
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Serves `key` from the next handshake on.
    pub fn set(&self, key: Arc<CertifiedKey>, info: CertInfo) {
        *berth_domain::sync::lock(&self.current) = Some((key, info));
    }

    /// What is served now (`None` until an ACME certificate arrives).
    pub fn current_info(&self) -> Option<CertInfo> {
        berth_domain::sync::lock(&self.current)
            .as_ref()
            .map(|(_, i)| i.clone())
    }

    /// Whether the served certificate was issued by a CA (not self-signed): HSTS only then.
    pub fn ca_issued(&self) -> bool {
        berth_domain::sync::lock(&self.current)
            .as_ref()
            .is_some_and(|(_, i)| !i.self_issued)
    }

    /// Answers `acme-tls/1` handshakes for `domain` with `key` until cleared.
    pub fn set_challenge(&self, domain: &str, key: Arc<CertifiedKey>) {
        berth_domain::sync::lock(&self.challenges).insert(domain.to_ascii_lowercase(), key);
    }

    pub fn clear_challenge(&self, domain: &str) {
        berth_domain::sync::lock(&self.challenges).remove(&domain.to_ascii_lowercase());
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return berth_domain::sync::lock(&self.challenges)
                .get(&name)
                .cloned();
        }
        berth_domain::sync::lock(&self.current)
            .as_ref()
            .map(|(k, _)| k.clone())
    }
}

/// The listener's TLS config: certificates from `resolver`, HTTP/1.1 (and `acme-tls/1` for
/// validation handshakes, which the listener closes right after).
pub fn server_config(resolver: Arc<CertResolver>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(certs::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(cfg))
}
