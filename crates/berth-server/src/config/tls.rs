//! HTTPS settings of `berth server`: certificate files, a self-signed certificate, or one
//! obtained by ACME; the plain-HTTP redirect listener. [`TlsArgs`] are the flags (each with its
//! environment variable, each also a key of the config file); [`TlsArgs::resolve`] checks that
//! they make one coherent choice. Without any of them the server speaks plain HTTP, as before.

use std::path::PathBuf;
use std::time::Duration;

/// Let's Encrypt's production directory, the default of `--acme-directory`.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Seconds between checks of `--tls-cert`/`--tls-key` for changes, by default.
const DEFAULT_RELOAD_SECONDS: u64 = 5;

/// The HTTPS flags of `berth server`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this PEM certificate chain (leaf first; with --tls-key). Both files are
    /// re-read when they change; a bad new pair is logged and the previous one kept.
    #[arg(long, env = "BERTH_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "BERTH_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// `self-signed`: serve HTTPS with a certificate berth makes for this host's names (host
    /// name, localhost, 127.0.0.1, ::1 and every --tls-name), kept in DATA_DIR/tls and reused;
    /// its SHA-256 fingerprint is logged and shown by `berth doctor`, for pinning.
    #[arg(long, env = "BERTH_TLS", value_name = "MODE")]
    pub tls: Option<String>,
    /// A name (DNS or IP) clients use to reach this server: added to a self-signed certificate,
    /// checked by `berth doctor` against the served certificate. Repeatable or comma-separated.
    #[arg(
        long = "tls-name",
        env = "BERTH_TLS_NAMES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub tls_names: Vec<String>,
    /// Obtain and renew a certificate for DOMAIN (and every --tls-name) by ACME (TLS-ALPN-01 on
    /// the HTTPS listener, so the CA must reach --listen on port 443 for each name). Account, certificate and key are kept
    /// in DATA_DIR/tls/acme.
    #[arg(long, env = "BERTH_ACME", value_name = "DOMAIN")]
    pub acme: Option<String>,
    /// Contact address of the ACME account (required with --acme).
    #[arg(long, env = "BERTH_ACME_EMAIL", value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// ACME directory URL [default: Let's Encrypt production].
    #[arg(long, env = "BERTH_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,
    /// PEM root certificate to trust for the connection to the ACME directory (a private or test
    /// CA such as pebble) [default: the system's roots].
    #[arg(long, env = "BERTH_ACME_CA_ROOT", value_name = "FILE")]
    pub acme_ca_root: Option<PathBuf>,
    /// Also listen for plain HTTP on ADDR and answer every request with a 308 redirect to the
    /// HTTPS URL (needs HTTPS), e.g. 0.0.0.0:80.
    #[arg(long, env = "BERTH_HTTP_REDIRECT", value_name = "ADDR")]
    pub http_redirect: Option<String>,
    /// Seconds between checks of --tls-cert/--tls-key for changes [default: 5].
    #[arg(long, env = "BERTH_TLS_RELOAD_SECONDS", value_name = "SECONDS")]
    pub tls_reload_seconds: Option<u64>,
}

/// Where the served certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Operator-provided PEM files, watched for changes.
    Files { cert: PathBuf, key: PathBuf },
    /// Made by berth for the host's names, kept in the data dir.
    SelfSigned,
    /// Obtained and renewed by ACME.
    Acme(AcmeSettings),
}

/// `--acme` and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub domain: String,
    pub email: String,
    pub directory: String,
    pub ca_root: Option<PathBuf>,
}

/// The resolved HTTPS configuration (`None` in [`super::Config`]: plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub source: TlsSource,
    /// Names clients use (the ACME domain first, then `--tls-name`s).
    pub names: Vec<String>,
    pub http_redirect: Option<String>,
    pub reload_interval: Duration,
}

impl TlsSettings {
    /// The name to put into redirects and to check the certificate for: the ACME domain, else
    /// the first `--tls-name`.
    pub fn public_host(&self) -> Option<&str> {
        self.names.first().map(String::as_str)
    }

    /// Whether browsers trust the certificate by themselves (HSTS is sent only then).
    pub fn is_real_certificate(&self) -> bool {
        !matches!(self.source, TlsSource::SelfSigned)
    }
}

impl TlsArgs {
    /// Fills every unset flag from the config file's value.
    pub fn or(self, file: TlsArgs) -> TlsArgs {
        TlsArgs {
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls: self.tls.or(file.tls),
            tls_names: if self.tls_names.is_empty() {
                file.tls_names
            } else {
                self.tls_names
            },
            acme: self.acme.or(file.acme),
            acme_email: self.acme_email.or(file.acme_email),
            acme_directory: self.acme_directory.or(file.acme_directory),
            acme_ca_root: self.acme_ca_root.or(file.acme_ca_root),
            http_redirect: self.http_redirect.or(file.http_redirect),
            tls_reload_seconds: self.tls_reload_seconds.or(file.tls_reload_seconds),
        }
    }

    /// Checks the combination; `Ok(None)` when HTTPS is off.
    pub fn resolve(self) -> anyhow::Result<Option<TlsSettings>> {
        let empty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let mut names = normalize_names(&self.tls_names)?;
        let reload_interval = Duration::from_secs(
            self.tls_reload_seconds
                .unwrap_or(DEFAULT_RELOAD_SECONDS)
                .max(1),
        );
        let source = self.source(&mut names)?;
        let http_redirect = empty(self.http_redirect);
        let Some(source) = source else {
            if http_redirect.is_some() || !names.is_empty() {
                anyhow::bail!(
                    "--http-redirect and --tls-name need HTTPS: add --tls-cert/--tls-key, --tls self-signed or --acme DOMAIN"
                );
            }
            return Ok(None);
        };
        Ok(Some(TlsSettings {
            source,
            names,
            http_redirect,
            reload_interval,
        }))
    }

    fn source(&self, names: &mut Vec<String>) -> anyhow::Result<Option<TlsSource>> {
        let files = self.tls_cert.is_some() || self.tls_key.is_some();
        let self_signed = match self.tls.as_deref().map(str::trim) {
            None | Some("") => false,
            Some("self-signed") => true,
            Some(other) => anyhow::bail!(
                "--tls {other:?}: the one mode is `self-signed` (certificate files: --tls-cert/--tls-key; Let's Encrypt: --acme DOMAIN)"
            ),
        };
        let acme = self
            .acme
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty());
        if [files, self_signed, acme.is_some()]
            .iter()
            .filter(|b| **b)
            .count()
            > 1
        {
            anyhow::bail!("choose one of --tls-cert/--tls-key, --tls self-signed and --acme");
        }
        let acme_extras = self.acme_email.is_some()
            || self.acme_directory.is_some()
            || self.acme_ca_root.is_some();
        if acme.is_none() && acme_extras {
            anyhow::bail!("--acme-email, --acme-directory and --acme-ca-root need --acme DOMAIN");
        }
        if files {
            let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
                anyhow::bail!("--tls-cert and --tls-key go together");
            };
            return Ok(Some(TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }));
        }
        if self_signed {
            return Ok(Some(TlsSource::SelfSigned));
        }
        let Some(domain) = acme else {
            return Ok(None);
        };
        let acme = self.acme_settings(domain)?;
        if let Some(ip) = names.iter().find(|n| n.parse::<std::net::IpAddr>().is_ok()) {
            anyhow::bail!(
                "--tls-name {ip} with --acme: the ACME certificate names DNS names only (every --tls-name goes into it)"
            );
        }
        names.retain(|n| n != &acme.domain);
        names.insert(0, acme.domain.clone());
        Ok(Some(TlsSource::Acme(acme)))
    }

    fn acme_settings(&self, domain: &str) -> anyhow::Result<AcmeSettings> {
        let domain = domain.to_ascii_lowercase();
        if !is_dns_name(&domain) {
            anyhow::bail!("--acme {domain:?}: expected a DNS name such as berth.example.com");
        }
        let email = self
            .acme_email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--acme needs --acme-email ADDRESS (the CA's contact for this account)"
                )
            })?;
        if !email.contains('@') || email.contains(char::is_whitespace) {
            anyhow::bail!("--acme-email {email:?}: expected an email address");
        }
        let directory = self
            .acme_directory
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .unwrap_or(LETS_ENCRYPT_DIRECTORY)
            .to_owned();
        if !directory.starts_with("https://") {
            anyhow::bail!("--acme-directory {directory:?}: expected an https:// URL");
        }
        Ok(AcmeSettings {
            domain,
            email: email.to_owned(),
            directory,
            ca_root: self.acme_ca_root.clone(),
        })
    }
}

/// Lower-cases, trims and de-duplicates `--tls-name` values; each must be a DNS name or an IP.
fn normalize_names(raw: &[String]) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for n in raw.iter().map(|n| n.trim().to_ascii_lowercase()) {
        if n.is_empty() {
            continue;
        }
        if n.parse::<std::net::IpAddr>().is_err() && !is_dns_name(&n) {
            anyhow::bail!("--tls-name {n:?}: expected a DNS name or an IP address");
        }
        if !names.contains(&n) {
            names.push(n);
        }
    }
    Ok(names)
}

/// A host name of letters, digits and hyphens in dot-separated labels (no wildcard).
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> TlsArgs {
        TlsArgs::default()
    }

    #[test]
    fn nothing_set_is_plain_http() {
        assert_eq!(args().resolve().unwrap(), None);
    }

    #[test]
    fn each_mode_resolves_and_they_exclude_each_other() {
        let files = TlsArgs {
            tls_cert: Some("/c.pem".into()),
            tls_key: Some("/k.pem".into()),
            http_redirect: Some("127.0.0.1:8080".into()),
            ..args()
        }
        .resolve()
        .unwrap()
        .unwrap();
        assert!(matches!(files.source, TlsSource::Files { .. }));
        assert!(files.is_real_certificate());
        assert_eq!(files.http_redirect.as_deref(), Some("127.0.0.1:8080"));
        let ss = TlsArgs {
            tls: Some("self-signed".into()),
            tls_names: vec![
                "Phone.Example".into(),
                "10.0.0.2".into(),
                "phone.example".into(),
            ],
            ..args()
        }
        .resolve()
        .unwrap()
        .unwrap();
        assert_eq!(ss.source, TlsSource::SelfSigned);
        assert!(!ss.is_real_certificate());
        assert_eq!(ss.names, ["phone.example", "10.0.0.2"]);
        let acme = TlsArgs {
            acme: Some("Berth.Example.com".into()),
            acme_email: Some("ops@example.com".into()),
            ..args()
        }
        .resolve()
        .unwrap()
        .unwrap();
        let TlsSource::Acme(a) = &acme.source else {
            panic!("{acme:?}")
        };
        assert_eq!(a.directory, LETS_ENCRYPT_DIRECTORY);
        assert_eq!(acme.public_host(), Some("berth.example.com"));
        let both = TlsArgs {
            tls: Some("self-signed".into()),
            acme: Some("a.example".into()),
            ..args()
        };
        assert!(both
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("choose one"));
    }

    #[test]
    fn incoherent_flags_are_refused_with_the_fix() {
        let cases: Vec<(TlsArgs, &str)> = vec![
            (
                TlsArgs {
                    tls_cert: Some("/c".into()),
                    ..args()
                },
                "go together",
            ),
            (
                TlsArgs {
                    tls: Some("letsencrypt".into()),
                    ..args()
                },
                "self-signed",
            ),
            (
                TlsArgs {
                    acme: Some("a.example".into()),
                    ..args()
                },
                "--acme-email",
            ),
            (
                TlsArgs {
                    acme_email: Some("a@b".into()),
                    ..args()
                },
                "need --acme",
            ),
            (
                TlsArgs {
                    http_redirect: Some(":80".into()),
                    ..args()
                },
                "need HTTPS",
            ),
            (
                TlsArgs {
                    acme: Some("*.example.com".into()),
                    acme_email: Some("a@b".into()),
                    ..args()
                },
                "DNS name",
            ),
            (
                TlsArgs {
                    acme: Some("a.example".into()),
                    acme_email: Some("a@b".into()),
                    acme_directory: Some("http://insecure/dir".into()),
                    ..args()
                },
                "https://",
            ),
            (
                TlsArgs {
                    tls: Some("self-signed".into()),
                    tls_names: vec!["a b".into()],
                    ..args()
                },
                "--tls-name",
            ),
            (
                TlsArgs {
                    acme: Some("a.example".into()),
                    acme_email: Some("a@b".into()),
                    tls_names: vec!["10.0.0.2".into()],
                    ..args()
                },
                "DNS names only",
            ),
        ];
        for (a, needle) in cases {
            let err = a.clone().resolve().unwrap_err().to_string();
            assert!(err.contains(needle), "{a:?}: {err}");
        }
    }
}
