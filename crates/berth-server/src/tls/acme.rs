//! `--acme DOMAIN`: obtains a certificate from an ACME CA (Let's Encrypt by default) and renews
//! it when a third of its lifetime is left, answering the TLS-ALPN-01 challenge on the HTTPS
//! listener itself (through [`CertResolver::set_challenge`]). Account, certificate and key live
//! in `DATA_DIR/tls/acme` (0600, written atomically). A failed attempt is logged and retried
//! with backoff (10 s doubling to an hour) while the previous certificate stays in service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};
use serde::{Deserialize, Serialize};

use super::certs::{self, Loaded};
use super::resolver::CertResolver;
use super::store;
use crate::config::AcmeSettings;

const FIRST_RETRY: Duration = Duration::from_secs(10);
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// How long one order may take to be validated and issued.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// The stored account: its credentials and the directory they belong to.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Obtains and renews the certificate of the domain (and the other `--tls-name`s).
pub struct AcmeManager {
    settings: AcmeSettings,
    /// Every DNS name the certificate is for, the domain first.
    names: Vec<String>,
    dir: PathBuf,
    resolver: Arc<CertResolver>,
}

impl AcmeManager {
    /// Prepares `DATA_DIR/tls/acme` and serves the stored certificate when there is one for
    /// the domain.
    pub fn new(
        settings: AcmeSettings,
        names: Vec<String>,
        data_dir: &Path,
        resolver: Arc<CertResolver>,
    ) -> anyhow::Result<Self> {
        let dir = store::ensure_dir(&data_dir.join("tls").join("acme"))?;
        let m = Self {
            settings,
            names,
            dir,
            resolver,
        };
        match m.stored() {
            Ok(Some(l)) if m.names.iter().all(|n| l.info.covers(n)) => {
                tracing::info!(domain = %m.settings.domain, not_after = %l.info.not_after, "serving the stored ACME certificate");
                m.resolver.set(l.key, l.info);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "ignoring the stored ACME certificate")
            }
        }
        Ok(m)
    }

    fn stored(&self) -> anyhow::Result<Option<Loaded>> {
        let cert = store::read_private(&self.dir.join("cert.pem"))?;
        let key = store::read_private(&self.dir.join("key.pem"))?;
        match (cert, key) {
            (Some(c), Some(k)) => Ok(Some(certs::parse_pem(&c, &k)?)),
            _ => Ok(None),
        }
    }

    /// Runs forever: renews when due, retries failures with backoff.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut retry = FIRST_RETRY;
            loop {
                if let Some(info) = self.resolver.current_info() {
                    // Never sooner than FIRST_RETRY after the last order, even if the CA issues
                    // certificates that are due at once (no hammering its rate limits).
                    let wait = (info.renew_at() - time::OffsetDateTime::now_utc())
                        .max(time::Duration::try_from(FIRST_RETRY).unwrap_or_default());
                    tokio::time::sleep(wait.try_into().unwrap_or(MAX_RETRY)).await;
                }
                match self.obtain().await {
                    Ok(info) => {
                        tracing::info!(domain = %self.settings.domain, serial = %info.serial, not_after = %info.not_after, "obtained a certificate by ACME");
                        retry = FIRST_RETRY;
                    }
                    Err(e) => {
                        tracing::error!(domain = %self.settings.domain, error = %format!("{e:#}"), retry_in_secs = retry.as_secs(), "ACME certificate order failed; still serving the previous certificate, if any");
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(MAX_RETRY);
                    }
                }
            }
        })
    }

    /// One order: account, challenge, CSR, certificate; stored, then served.
    async fn obtain(&self) -> anyhow::Result<certs::CertInfo> {
        let account = self.account().await?;
        let ids: Vec<Identifier> = self.names.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let validated = self.answer_challenges(&mut order).await;
        let status = match validated {
            Ok(()) => {
                order
                    .poll_ready(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
                    .await
            }
            Err(e) => Err(e),
        };
        for name in &self.names {
            self.resolver.clear_challenge(name);
        }
        let status = status?;
        if status != OrderStatus::Ready {
            anyhow::bail!(
                "the CA did not validate {}: order {status:?}",
                self.names.join(", ")
            );
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(self.names.clone())?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&key)?;
        order.finalize_csr(csr.der()).await?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(ORDER_TIMEOUT))
            .await?;
        let key_pem = key.serialize_pem();
        let loaded = certs::parse_pem(chain.as_bytes(), key_pem.as_bytes())?;
        store::write_private(&self.dir, "key.pem", key_pem.as_bytes())?;
        store::write_private(&self.dir, "cert.pem", chain.as_bytes())?;
        let info = loaded.info.clone();
        self.resolver.set(loaded.key, loaded.info);
        Ok(info)
    }

    /// Puts up the TLS-ALPN-01 certificate of each pending authorization and tells the CA.
    async fn answer_challenges(
        &self,
        order: &mut instant_acme::Order,
    ) -> Result<(), instant_acme::Error> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(instant_acme::Error::Other(
                        format!("authorization is {other:?}").into(),
                    ))
                }
            }
            let mut challenge = authz.challenge(ChallengeType::TlsAlpn01).ok_or_else(|| {
                instant_acme::Error::Str("the CA offers no tls-alpn-01 challenge")
            })?;
            let name = challenge.identifier().to_string();
            let digest = challenge.key_authorization().digest();
            let cert = challenge_cert(&name, digest.as_ref())
                .map_err(|e| instant_acme::Error::Other(e.into()))?;
            self.resolver.set_challenge(&name, cert);
            challenge.set_ready().await?;
        }
        Ok(())
    }

    /// The stored account for this directory, or a new one (stored).
    async fn account(&self) -> anyhow::Result<Account> {
        let path = self.dir.join("account.json");
        if let Some(bytes) = store::read_private(&path)? {
            let stored: StoredAccount = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if stored.directory == self.settings.directory {
                return Ok(self.builder()?.from_credentials(stored.credentials).await?);
            }
        }
        let contact = format!("mailto:{}", self.settings.email);
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &[&contact],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory.clone(),
                None,
            )
            .await?;
        let stored = StoredAccount {
            directory: self.settings.directory.clone(),
            credentials,
        };
        store::write_private(&self.dir, "account.json", &serde_json::to_vec(&stored)?)?;
        tracing::info!(directory = %self.settings.directory, "created an ACME account");
        Ok(account)
    }

    fn builder(&self) -> anyhow::Result<instant_acme::AccountBuilder> {
        Ok(match &self.settings.ca_root {
            Some(root) => Account::builder_with_root(root)
                .map_err(|e| anyhow::anyhow!("--acme-ca-root {}: {e}", root.display()))?,
            None => Account::builder()?,
        })
    }
}

/// The self-signed certificate of a TLS-ALPN-01 answer: `domain` as its only name and the key
/// authorization's digest in the critical acmeIdentifier extension (RFC 8737).
fn challenge_cert(domain: &str, digest: &[u8]) -> anyhow::Result<Arc<rustls::sign::CertifiedKey>> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![domain.to_owned()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    // Not through `certs::parse_pem`: webpki (its key check) refuses the critical extension
    // this certificate exists for.
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let signing = certs::provider()
        .key_provider
        .load_private_key(der.into())
        .map_err(|e| anyhow::anyhow!("challenge key: {e}"))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_certificate_carries_the_digest() {
        let digest = [7u8; 32];
        let key = challenge_cert("a.example", &digest).unwrap();
        let der = key.cert[0].as_ref();
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(ext.critical);
        assert!(ext.value.ends_with(&digest));
    }
}
