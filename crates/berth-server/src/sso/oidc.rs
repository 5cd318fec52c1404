//! The OpenID Provider side of a login: discovery (cached), the authorization request with
//! PKCE (S256), nonce and state, and the callback's code exchange with the ID token's signature
//! and claims verified (issuer, audience, expiry, nonce) before anything of it is believed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth_domain::Secret;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AccessToken, AdditionalClaims, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};

use crate::config::SsoConfig;

/// How long discovered provider metadata (with its signing keys) is reused.
const METADATA_TTL: Duration = Duration::from_secs(600);
/// How long a login may take between the redirect to the provider and the callback.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Logins in flight at most (the oldest are dropped beyond).
const MAX_PENDING: usize = 1024;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Every claim of an ID token or userinfo answer beyond the standard ones, as JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExtraClaims(serde_json::Map<String, serde_json::Value>);
impl AdditionalClaims for ExtraClaims {}

type ExtraIdToken = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// Why a login failed. Shown to the person (without secrets), and logged.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider cannot be reached or its discovery document is invalid: {0}")]
    Discovery(String),
    #[error("this sign-in link is unknown or expired; start again")]
    UnknownState,
    #[error("the identity provider refused: {0}")]
    Provider(String),
    #[error("the identity provider's answer does not verify: {0}")]
    Verification(String),
    #[error("berth's OpenID Connect settings are invalid: {0}")]
    Config(String),
}

/// One login between the redirect and the callback.
struct PendingLogin {
    nonce: Nonce,
    verifier: Secret,
    created: Instant,
}

/// The logins in flight, by their `state`.
#[derive(Default)]
pub struct Pending(HashMap<String, PendingLogin>);

/// What a verified login says about the person.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub name: String,
    pub email: Option<String>,
    /// The configured claim's raw value (from the ID token, else from userinfo).
    pub claim: Option<serde_json::Value>,
}

/// The provider: berth's HTTP client for it and its cached metadata.
pub struct Provider {
    http: reqwest::Client,
    issuer: IssuerUrl,
    cache: tokio::sync::Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

impl Provider {
    pub fn new(config: &SsoConfig) -> anyhow::Result<Self> {
        // No redirects: a provider endpoint answering with one is an error, not a detour (SSRF).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()?;
        let issuer = IssuerUrl::new(config.issuer.clone())
            .map_err(|e| anyhow::anyhow!("oidc_issuer: {e}"))?;
        Ok(Self {
            http,
            issuer,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    async fn metadata(&self) -> Result<CoreProviderMetadata, OidcError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, meta)) = cache.as_ref() {
            if at.elapsed() < METADATA_TTL {
                return Ok(meta.clone());
            }
        }
        let meta = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| OidcError::Discovery(error_chain(&e)))?;
        *cache = Some((Instant::now(), meta.clone()));
        Ok(meta)
    }

    /// Drops the cached metadata: the next login discovers again (e.g. after the provider
    /// rotated its signing keys and a token did not verify).
    async fn forget(&self) {
        *self.cache.lock().await = None;
    }

    async fn client(&self, config: &SsoConfig) -> Result<Client, OidcError> {
        let meta = self.metadata().await?;
        let redirect = RedirectUrl::new(config.redirect_url())
            .map_err(|e| OidcError::Config(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            meta,
            ClientId::new(config.client_id.clone()),
            config
                .client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().to_owned())),
        )
        .set_redirect_uri(redirect))
    }
}

impl super::Sso {
    /// Starts a login: the provider's authorization URL to send the browser to, and the `state`
    /// the callback must bring back (also set in the browser's login cookie).
    pub async fn begin_login(&self) -> Result<(String, String), OidcError> {
        let client = self.provider.client(&self.config).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            if scope != "openid" {
                req = req.add_scope(Scope::new(scope.clone()));
            }
        }
        let (url, state, nonce) = req.url();
        let mut pending = berth_domain::sync::lock(&self.pending);
        pending.0.retain(|_, p| p.created.elapsed() < LOGIN_TTL);
        if pending.0.len() >= MAX_PENDING {
            if let Some(oldest) = pending
                .0
                .iter()
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| k.clone())
            {
                pending.0.remove(&oldest);
            }
        }
        pending.0.insert(
            state.secret().clone(),
            PendingLogin {
                nonce,
                verifier: Secret::new(verifier.secret().clone()),
                created: Instant::now(),
            },
        );
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Finishes a login: takes the pending login of `state` (once), exchanges `code` with its PKCE
    /// verifier and verifies the ID token against the nonce.
    pub async fn finish_login(&self, state: &str, code: &str) -> Result<Identity, OidcError> {
        let pending = berth_domain::sync::lock(&self.pending)
            .0
            .remove(state)
            .filter(|p| p.created.elapsed() < LOGIN_TTL)
            .ok_or(OidcError::UnknownState)?;
        let client = self.provider.client(&self.config).await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Provider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.expose().to_owned()))
            .request_async(&self.provider.http)
            .await
            .map_err(|e| OidcError::Provider(error_chain(&e)))?;
        let raw = token
            .id_token()
            .ok_or_else(|| OidcError::Verification("no ID token in the answer".into()))?
            .to_string();
        let id_token: ExtraIdToken = raw
            .parse()
            .map_err(|e: serde_json::Error| OidcError::Verification(e.to_string()))?;
        let claims = match id_token.claims(&client.id_token_verifier(), &pending.nonce) {
            Ok(c) => c,
            Err(e) => {
                self.provider.forget().await;
                return Err(OidcError::Verification(e.to_string()));
            }
        };
        let mut identity = Identity {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            name: display_name(claims.name(), claims.preferred_username(), claims.email())
                .unwrap_or_default(),
            email: claims.email().map(|e| e.to_string()),
            claim: claims
                .additional_claims()
                .0
                .get(&self.config.claim)
                .cloned(),
        };
        // Providers that put scope claims only in userinfo (OpenID Connect Core 5.4, when an
        // access token is issued): ask it for what the ID token lacks.
        if identity.claim.is_none() || identity.name.is_empty() {
            self.add_userinfo(
                &client,
                token.access_token(),
                claims.subject(),
                &mut identity,
            )
            .await?;
        }
        if identity.name.is_empty() {
            identity.name = identity.subject.clone();
        }
        Ok(identity)
    }

    /// Fills the claim, name and email from the userinfo endpoint (for the same subject only;
    /// the library checks it), where the ID token had none.
    async fn add_userinfo(
        &self,
        client: &Client,
        access: &AccessToken,
        subject: &openidconnect::SubjectIdentifier,
        identity: &mut Identity,
    ) -> Result<(), OidcError> {
        let Ok(req) = client.user_info(access.clone(), Some(subject.clone())) else {
            return Ok(());
        };
        let info: openidconnect::UserInfoClaims<ExtraClaims, CoreGenderClaim> = req
            .request_async(&self.provider.http)
            .await
            .map_err(|e| OidcError::Provider(format!("userinfo: {}", error_chain(&e))))?;
        if identity.claim.is_none() {
            identity.claim = info.additional_claims().0.get(&self.config.claim).cloned();
        }
        if identity.name.is_empty() {
            identity.name = display_name(info.name(), info.preferred_username(), info.email())
                .unwrap_or_default();
        }
        if identity.email.is_none() {
            identity.email = info.email().map(|e| e.to_string());
        }
        Ok(())
    }
}

/// The best display name: `name`, else `preferred_username`, else `email`.
fn display_name(
    name: Option<&openidconnect::LocalizedClaim<openidconnect::EndUserName>>,
    username: Option<&openidconnect::EndUserUsername>,
    email: Option<&openidconnect::EndUserEmail>,
) -> Option<String> {
    name.and_then(|n| n.get(None))
        .map(|n| n.to_string())
        .or_else(|| username.map(|u| u.to_string()))
        .or_else(|| email.map(|e| e.to_string()))
}

/// An error with its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
