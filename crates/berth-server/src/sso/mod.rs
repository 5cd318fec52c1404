//! Single sign-on for people: OpenID Connect login (authorization code + PKCE + nonce + state)
//! for the web UI, the users it creates, and the browser sessions that follow.
//!
//! - [`oidc`]: the provider (discovery, the authorization request, the code exchange, ID token
//!   verification) and the logins in flight.
//! - [`session`]: the session cookie, its server-side record, CSRF and `Origin` checks;
//!   [`session_actor`] is what the API's auth middleware asks when there is no bearer token.
//! - [`users`]: listing, disabling and enabling users.
//! - [`mapping`]: claim values → tenant and role.
//!
//! Routes live in `routes/sso.rs`; this module never imports them.

pub mod mapping;
pub mod oidc;
pub mod session;
pub mod users;

use std::sync::Mutex;

pub use session::{session_actor, SessionPrincipal};

use crate::config::SsoConfig;

/// The single sign-on service: its configuration, the provider's cached metadata and the
/// logins in flight. `AppState::sso` holds one when an issuer is configured.
pub struct Sso {
    pub config: SsoConfig,
    provider: oidc::Provider,
    pending: Mutex<oidc::Pending>,
}

impl Sso {
    pub fn new(config: SsoConfig) -> anyhow::Result<Self> {
        let provider = oidc::Provider::new(&config)?;
        Ok(Self {
            config,
            provider,
            pending: Mutex::new(oidc::Pending::default()),
        })
    }

    /// The session cookie's name: `__Host-berth_session` when the public URL is https. Browsers
    /// accept a `__Host-` cookie only with `Secure`, which plain-http (loopback) origins cannot
    /// set, so there it is `berth_session`.
    pub fn session_cookie(&self) -> &'static str {
        if self.config.secure() {
            "__Host-berth_session"
        } else {
            "berth_session"
        }
    }

    /// The cookie binding a login in flight to the browser that started it.
    pub fn login_cookie(&self) -> &'static str {
        if self.config.secure() {
            "__Host-berth_oidc"
        } else {
            "berth_oidc"
        }
    }

    /// `Set-Cookie` for `name=value` with berth's attributes; `max_age` in seconds, 0 deletes.
    pub fn cookie(&self, name: &str, value: &str, max_age: u64) -> String {
        let secure = if self.config.secure() { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `n` random bytes as lower-case hex.
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sso::{resolve, SsoArgs, SsoFile};

    fn sso(public_url: &str) -> Sso {
        let args = SsoArgs {
            oidc_issuer: Some("https://idp.example.com".into()),
            oidc_client_id: Some("berth".into()),
            public_url: Some(public_url.into()),
            oidc_map: vec!["g=acme:member".into()],
            ..Default::default()
        };
        Sso::new(resolve(args, SsoFile::default(), None).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn https_gets_host_prefixed_secure_cookies_and_http_plain_ones() {
        let s = sso("https://berth.example.com");
        assert_eq!(s.session_cookie(), "__Host-berth_session");
        let c = s.cookie(s.session_cookie(), "v", 60);
        assert_eq!(
            c,
            "__Host-berth_session=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        let s = sso("http://127.0.0.1:8787");
        assert_eq!(s.session_cookie(), "berth_session");
        assert_eq!(s.login_cookie(), "berth_oidc");
        assert!(!s.cookie("berth_session", "v", 60).contains("Secure"));
    }

    #[test]
    fn random_values_are_long_and_distinct() {
        let (a, b) = (random_hex(32), random_hex(32));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
