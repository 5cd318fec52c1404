//! The berth CA: a local certificate authority whose leaf certificates let the proxy
//! terminate TLS for hosts whose traffic it must inspect. Workspaces trust it through the
//! PEM returned by [`CertificateAuthority::cert_pem`].

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// File names inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

/// Leaf certificates are reissued after this long (they are valid for longer).
const LEAF_REISSUE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
const LEAF_VALID_DAYS: i64 = 30;
const CA_VALID_DAYS: i64 = 3650;
const LEAF_CACHE_MAX: usize = 1024;

/// A certificate authority held in memory, with a cache of per-host TLS server configs.
pub struct CertificateAuthority {
    cert_pem: String,
    /// The CA's name and key, which sign the leaves.
    issuer: Issuer<'static, KeyPair>,
    cache: Mutex<HashMap<String, (Instant, Arc<rustls::ServerConfig>)>>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The CA's parameters are a function of its key, so a stored key is enough to issue
/// leaves that chain to the stored certificate (same subject, same key identifier).
fn ca_params(key: &KeyPair) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let digest = Sha256::digest(key.subject_public_key_info());
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("berth egress CA {}", hex::encode(&digest[..4])),
    );
    dn.push(DnType::OrganizationName, "berth");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CA_VALID_DAYS);
    Ok(params)
}

impl CertificateAuthority {
    /// A new CA kept only in memory (tests).
    pub fn generate() -> io::Result<Self> {
        let key = KeyPair::generate().map_err(other)?;
        let params = ca_params(&key).map_err(other)?;
        let cert = params.self_signed(&key).map_err(other)?;
        Ok(Self::from_parts(cert.pem(), params, key))
    }

    fn from_parts(cert_pem: String, params: CertificateParams, key: KeyPair) -> Self {
        Self {
            cert_pem,
            issuer: Issuer::new(params, key),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Loads `ca.crt` and `ca.key` from `dir`, or creates them (the key with mode 0600,
    /// the directory created if needed) when the key is missing. A missing certificate
    /// next to an existing key is recreated from the key.
    pub fn load_or_create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => KeyPair::from_pem(&pem)
                .map_err(|e| other(format!("{}: {e}", key_path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(other)?;
                write_private(&key_path, key.serialize_pem().as_bytes())?;
                // A certificate left from an older key must not survive.
                let _ = std::fs::remove_file(&cert_path);
                key
            }
            Err(e) => return Err(e),
        };
        let params = ca_params(&key).map_err(other)?;
        let cert_pem = match std::fs::read_to_string(&cert_path) {
            Ok(pem) => {
                let der = CertificateDer::from_pem_slice(pem.as_bytes())
                    .map_err(|e| other(format!("{}: {e}", cert_path.display())))?;
                if !contains(der.as_ref(), &key.subject_public_key_info()) {
                    return Err(other(format!(
                        "{} does not belong to {}",
                        cert_path.display(),
                        key_path.display()
                    )));
                }
                pem
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let pem = params.self_signed(&key).map_err(other)?.pem();
                write_private(&cert_path, pem.as_bytes())?;
                pem
            }
            Err(e) => return Err(e),
        };
        Ok(Self::from_parts(cert_pem, params, key))
    }

    /// The CA certificate (PEM), to install into workspaces' trust stores.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// A TLS server config presenting a leaf certificate for `host` (a normalized name or
    /// IP literal), issued on first use and cached.
    pub fn server_config(&self, host: &str) -> io::Result<Arc<rustls::ServerConfig>> {
        {
            let cache = berth_domain::sync::lock(&self.cache);
            if let Some((at, cfg)) = cache.get(host) {
                if at.elapsed() < LEAF_REISSUE_AFTER {
                    return Ok(cfg.clone());
                }
            }
        }
        let cfg = Arc::new(self.issue(host)?);
        let mut cache = berth_domain::sync::lock(&self.cache);
        if cache.len() >= LEAF_CACHE_MAX {
            cache.clear();
        }
        cache.insert(host.to_string(), (Instant::now(), cfg.clone()));
        Ok(cfg)
    }

    fn issue(&self, host: &str) -> io::Result<rustls::ServerConfig> {
        let key = KeyPair::generate().map_err(other)?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(other)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(LEAF_VALID_DAYS);
        let leaf = params.signed_by(&key, &self.issuer).map_err(other)?;
        let chain = vec![leaf.der().clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(crate::upstream::provider())
            .with_safe_default_protocol_versions()
            .map_err(other)?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(other)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_or_create_persists_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let a = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let b = CertificateAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [CA_CERT_FILE, CA_KEY_FILE] {
                let mode = std::fs::metadata(dir.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        // Leaves issued after a reload chain to the stored certificate.
        let cfg = b.server_config("example.test").unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(Arc::ptr_eq(&cfg, &b.server_config("example.test").unwrap()));
    }

    /// A leaf issued by a CA reloaded from disk verifies against the stored certificate.
    #[tokio::test]
    async fn reloaded_ca_issues_leaves_that_chain_to_stored_cert() {
        let dir = tempfile::tempdir().unwrap();
        let stored_pem = CertificateAuthority::load_or_create(dir.path())
            .unwrap()
            .cert_pem();
        let reloaded = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let server_cfg = reloaded.server_config("example.test").unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(stored_pem.as_bytes()).unwrap())
            .unwrap();
        let client_cfg = rustls::ClientConfig::builder_with_provider(crate::upstream::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            tokio_rustls::TlsAcceptor::from(server_cfg)
                .accept(b)
                .await
                .map(|_| ())
        });
        let name = rustls::pki_types::ServerName::try_from("example.test").unwrap();
        let client = tokio_rustls::TlsConnector::from(Arc::new(client_cfg))
            .connect(name, a)
            .await;
        let server = server.await.unwrap();
        assert!(client.is_ok() && server.is_ok(), "{client:?} {server:?}");
    }

    #[test]
    fn mismatched_cert_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other_ca = CertificateAuthority::generate().unwrap();
        CertificateAuthority::load_or_create(dir.path()).unwrap();
        std::fs::write(dir.path().join(CA_CERT_FILE), other_ca.cert_pem()).unwrap();
        assert!(CertificateAuthority::load_or_create(dir.path()).is_err());
    }
}
