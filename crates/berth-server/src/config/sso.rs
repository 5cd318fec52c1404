//! Single sign-on settings: the OpenID Provider, berth's public URL, the claim mapping and how
//! long browser sessions last. Off unless an issuer is given; then everything it needs must be.

use std::path::PathBuf;
use std::time::Duration;

use berth_domain::Secret;
use openidconnect::url::Url;

use crate::sso::mapping::MapRule;

/// The `berth server` flags of single sign-on (flattened into [`super::ServerArgs`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SsoArgs {
    /// OpenID Provider (issuer URL) people sign in with; turns single sign-on on. Its discovery
    /// document is `ISSUER/.well-known/openid-configuration`.
    #[arg(long, env = "BERTH_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// berth's client id at the provider.
    #[arg(long, env = "BERTH_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// File holding the client secret (or put the secret itself in BERTH_OIDC_CLIENT_SECRET;
    /// never on a command line). Without either, berth is a public client (PKCE only).
    #[arg(long, env = "BERTH_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The URL browsers reach berth at, e.g. `https://berth.example.com`; the provider redirects
    /// to PUBLIC_URL/auth/oidc/callback. https makes the session cookie `Secure`.
    #[arg(long, env = "BERTH_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The ID token (or userinfo) claim whose values are mapped [default: groups].
    #[arg(long, env = "BERTH_OIDC_CLAIM")]
    pub oidc_claim: Option<String>,
    /// `VALUE=TENANT:ROLE`, repeatable (comma-separated in the variable): a user whose claim
    /// holds VALUE gets ROLE (admin, owner, member, viewer) in TENANT (`*` with admin). The
    /// highest matching role wins; no match refuses the login.
    #[arg(long, env = "BERTH_OIDC_MAP", value_delimiter = ',')]
    pub oidc_map: Vec<String>,
    /// Scopes asked for, space- or comma-separated [default: openid profile email groups].
    #[arg(long, env = "BERTH_OIDC_SCOPES")]
    pub oidc_scopes: Option<String>,
    /// A browser session ends after this long without a request, e.g. `30m`, `12h` [default: 12h].
    #[arg(long, env = "BERTH_SESSION_IDLE")]
    pub session_idle: Option<String>,
    /// A browser session ends this long after sign-in, however busy [default: 7d].
    #[arg(long, env = "BERTH_SESSION_LIFETIME")]
    pub session_lifetime: Option<String>,
}

/// The same settings in the config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoFile {
    pub oidc_issuer: Option<String>,
    pub oidc_client_id: Option<String>,
    pub oidc_client_secret_file: Option<PathBuf>,
    pub public_url: Option<String>,
    pub oidc_claim: Option<String>,
    pub oidc_map: Option<Vec<String>>,
    pub oidc_scopes: Option<String>,
    pub session_idle: Option<String>,
    pub session_lifetime: Option<String>,
}

/// Single sign-on, resolved and checked.
#[derive(Debug, Clone)]
pub struct SsoConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// berth's public base URL (no trailing slash in its path).
    pub public_url: Url,
    pub claim: String,
    pub map: Vec<MapRule>,
    pub scopes: Vec<String>,
    pub session_idle: Duration,
    pub session_lifetime: Duration,
}

impl SsoConfig {
    /// Where the provider sends the browser back.
    pub fn redirect_url(&self) -> String {
        format!(
            "{}/auth/oidc/callback",
            self.public_url.as_str().trim_end_matches('/')
        )
    }

    /// The public URL's origin (`scheme://host[:port]`), which `Origin` headers must match.
    pub fn origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }

    /// Whether cookies get `Secure` (and the `__Host-` name): the public URL is https.
    pub fn secure(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

/// Parses a duration: a number and a unit `s`, `m`, `h` or `d` (`90s`, `30m`, `12h`, `7d`).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("duration {s:?}: write a number and s, m, h or d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("duration {s:?}: write a number and s, m, h or d"),
    };
    if n == 0 {
        anyhow::bail!("duration {s:?} must be more than zero");
    }
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// The scopes asked for unless `oidc_scopes` says otherwise.
pub const DEFAULT_SCOPES: &str = "openid profile email groups";

/// The client secret: from its file when one is named, else from the environment.
fn client_secret(
    file: Option<PathBuf>,
    env_secret: Option<Secret>,
) -> anyhow::Result<Option<Secret>> {
    let Some(path) = file else {
        return Ok(env_secret);
    };
    let raw = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("oidc_client_secret_file {}: {e}", path.display()))?;
    Ok(Some(Secret::new(raw.trim())))
}

/// The `oidc_map` rules; at least one.
fn parse_map(raw: Vec<String>) -> anyhow::Result<Vec<MapRule>> {
    let map = raw
        .iter()
        .map(|r| MapRule::parse(r.trim()).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if map.is_empty() {
        anyhow::bail!("single sign-on needs at least one oidc_map rule (VALUE=TENANT:ROLE)");
    }
    Ok(map)
}

/// Resolves the flags and file into `Some(config)` when an issuer is set, `None` otherwise.
/// `env_secret` is `BERTH_OIDC_CLIENT_SECRET`.
pub fn resolve(
    args: SsoArgs,
    file: SsoFile,
    env_secret: Option<Secret>,
) -> anyhow::Result<Option<SsoConfig>> {
    let Some(issuer) = args
        .oidc_issuer
        .or(file.oidc_issuer)
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    let need = |v: Option<String>, key: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow::anyhow!("single sign-on (oidc_issuer) needs {key} as well"))
    };
    let issuer_url = Url::parse(&issuer).map_err(|e| anyhow::anyhow!("oidc_issuer: {e}"))?;
    if !matches!(issuer_url.scheme(), "https" | "http") {
        anyhow::bail!("oidc_issuer must be an http(s) URL");
    }
    let client_id = need(
        args.oidc_client_id.or(file.oidc_client_id),
        "oidc_client_id",
    )?;
    let public = need(args.public_url.or(file.public_url), "public_url")?;
    let public_url = Url::parse(&public).map_err(|e| anyhow::anyhow!("public_url: {e}"))?;
    if !matches!(public_url.scheme(), "https" | "http") || public_url.host_str().is_none() {
        anyhow::bail!("public_url must be an http(s) URL with a host");
    }
    let client_secret = client_secret(
        args.oidc_client_secret_file
            .or(file.oidc_client_secret_file),
        env_secret,
    )?;
    let map = parse_map(if args.oidc_map.is_empty() {
        file.oidc_map.unwrap_or_default()
    } else {
        args.oidc_map
    })?;
    let duration = |flag: Option<String>, file: Option<String>, default: &str, key: &str| {
        parse_duration(flag.or(file).as_deref().unwrap_or(default))
            .map_err(|e| anyhow::anyhow!("{key}: {e}"))
    };
    let session_idle = duration(args.session_idle, file.session_idle, "12h", "session_idle")?;
    let session_lifetime = duration(
        args.session_lifetime,
        file.session_lifetime,
        "7d",
        "session_lifetime",
    )?;
    Ok(Some(SsoConfig {
        issuer,
        client_id,
        client_secret,
        public_url,
        claim: args
            .oidc_claim
            .or(file.oidc_claim)
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "groups".to_owned()),
        map,
        scopes: args
            .oidc_scopes
            .or(file.oidc_scopes)
            .unwrap_or_else(|| DEFAULT_SCOPES.to_owned())
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        session_idle,
        session_lifetime,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SsoArgs {
        SsoArgs {
            oidc_issuer: Some("https://idp.example.com".into()),
            oidc_client_id: Some("berth".into()),
            public_url: Some("https://berth.example.com/".into()),
            oidc_map: vec!["acme-members=acme:member".into()],
            ..Default::default()
        }
    }

    #[test]
    fn off_without_issuer_and_complete_with_one() {
        assert!(resolve(SsoArgs::default(), SsoFile::default(), None)
            .unwrap()
            .is_none());
        let c = resolve(args(), SsoFile::default(), Some(Secret::new("s3cret")))
            .unwrap()
            .unwrap();
        assert_eq!(
            c.redirect_url(),
            "https://berth.example.com/auth/oidc/callback"
        );
        assert_eq!(c.origin(), "https://berth.example.com");
        assert!(c.secure());
        assert_eq!(c.claim, "groups");
        assert_eq!(c.session_idle, Duration::from_secs(12 * 3600));
        assert_eq!(c.session_lifetime, Duration::from_secs(7 * 86_400));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn incomplete_or_bad_settings_are_refused() {
        for broken in [
            SsoArgs {
                oidc_client_id: None,
                ..args()
            },
            SsoArgs {
                public_url: None,
                ..args()
            },
            SsoArgs {
                oidc_map: vec![],
                ..args()
            },
            SsoArgs {
                oidc_map: vec!["x=acme:root".into()],
                ..args()
            },
            SsoArgs {
                public_url: Some("berth.example.com".into()),
                ..args()
            },
            SsoArgs {
                session_idle: Some("12 parsecs".into()),
                ..args()
            },
        ] {
            assert!(resolve(broken, SsoFile::default(), None).is_err());
        }
    }

    #[test]
    fn secret_file_wins_and_map_comes_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let file = SsoFile {
            oidc_map: Some(vec!["g=acme:owner".into()]),
            ..Default::default()
        };
        let c = resolve(
            SsoArgs {
                oidc_map: vec![],
                oidc_client_secret_file: Some(path),
                ..args()
            },
            file,
            Some(Secret::new("from-env")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.client_secret.as_ref().map(Secret::expose),
            Some("from-file")
        );
        assert_eq!(c.map[0].value, "g");
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("0h").is_err());
    }
}
