//! Wire types of single sign-on: the sign-in page's configuration, the caller's session and the
//! users known from the identity provider.

use berth_domain::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /api/v1/auth/config` (public): how people can sign in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthConfig {
    /// Single sign-on through an OpenID Provider is configured.
    pub sso: bool,
    /// Where the browser goes to sign in with single sign-on (`/auth/oidc/login`), when `sso`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
    /// Bearer tokens are accepted (always: scripts and servers without a provider use them).
    pub token: bool,
}

/// `GET /api/v1/auth/session`: who the caller is and, for a browser session, the CSRF token
/// every state-changing request must carry in `X-CSRF-Token`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// `session` (a browser signed in with single sign-on) or `token` (a bearer token).
    pub kind: String,
    /// The user's or the token's name.
    pub name: String,
    pub role: String,
    /// The tenant of a tenant-scoped user; absent for server-wide ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The user id (`usr_…`) of a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session's CSRF token (sessions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// A person known from single sign-on (`GET /api/v1/users`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Absent for server-wide users (admins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `admin`, `owner`, `member` or `viewer`, from the claims of the last login.
    pub role: String,
    pub disabled: bool,
    /// The provider's issuer URL and the person's subject there.
    pub issuer: String,
    pub subject: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_login_at: Option<Timestamp>,
}
