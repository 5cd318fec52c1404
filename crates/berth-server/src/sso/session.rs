//! Browser sessions: a random cookie value whose sha256 the store keeps with the session's idle
//! and absolute expiry, and a per-session CSRF token. A request made with the cookie is
//! accepted only while the session lives and its user is enabled; a state-changing one (any
//! method but GET, HEAD, OPTIONS) must also carry the CSRF token in `X-CSRF-Token` and, when it
//! sends `Origin`, come from berth's public origin. A WebSocket handshake with the cookie must
//! send `Origin`, and it must be berth's (browsers let any page open one to any site).

use axum::http::{header, HeaderMap, Method};
use berth_domain::{ErrorCode, Secret};
use berth_store::User;
use sha2::{Digest, Sha256};

use super::{random_hex, unix_now, Sso};
use crate::error::ApiError;
use crate::state::AppState;

/// The header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session's `last_seen` is written at most this often (seconds).
const TOUCH_EVERY: i64 = 15;

/// The person behind a request made with a session cookie.
#[derive(Debug, Clone)]
pub struct SessionPrincipal {
    /// The session's public id (`ses_…`), never the cookie value.
    pub session_id: String,
    pub user_id: String,
    pub user_name: String,
    /// `admin`, `owner`, `member` or `viewer`.
    pub role: String,
    /// `None` for server-wide users.
    pub tenant: Option<String>,
    /// For `GET /api/v1/auth/session`.
    pub csrf: Secret,
}

fn unauthorized() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "the browser session expired or was signed out: sign in again",
    )
}

fn csrf_failed(why: &str) -> ApiError {
    ApiError::new(ErrorCode::CsrfFailed, why)
}

/// The sha256 (hex) the store keeps of a session cookie's value.
pub fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Compares without an early exit on the first differing byte (over fixed-length hashes).
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Called by the API's auth middleware when a request has no bearer token: `Ok(None)` without
/// single sign-on or without a session cookie; 401 for a session that is unknown (tampered,
/// signed out), expired or whose user is disabled; 403 `csrf_failed` for a state-changing
/// request without the session's CSRF token or from another origin.
pub async fn session_actor(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Option<SessionPrincipal>, ApiError> {
    let Some(sso) = state.web.sso.as_deref() else {
        return Ok(None);
    };
    let Some(value) = cookie_value(headers, sso.session_cookie()) else {
        return Ok(None);
    };
    let now = unix_now();
    let Some(s) = state.store.find_session(&hash(value)).await? else {
        return Err(unauthorized());
    };
    let idle = i64::try_from(sso.config.session_idle.as_secs()).unwrap_or(i64::MAX);
    if s.expires <= now || s.last_seen.saturating_add(idle) <= now || s.user.disabled_at.is_some() {
        state.store.delete_session(&s.id).await?;
        return Err(unauthorized());
    }
    check_request(sso, headers, method, &s.csrf)?;
    if now - s.last_seen >= TOUCH_EVERY {
        state.store.touch_session(&s.id, now).await?;
    }
    Ok(Some(SessionPrincipal {
        session_id: s.id,
        user_id: s.user.id,
        user_name: s.user.name,
        role: s.user.role,
        tenant: s.user.tenant,
        csrf: Secret::new(s.csrf),
    }))
}

/// The CSRF and origin rules for a request carrying the session cookie.
fn check_request(
    sso: &Sso,
    headers: &HeaderMap,
    method: &Method,
    csrf: &str,
) -> Result<(), ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let ours = sso.config.origin();
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if websocket {
        return match origin {
            Some(o) if o == ours => Ok(()),
            _ => Err(csrf_failed(
                "a WebSocket opened with the session cookie must come from berth's own origin",
            )),
        };
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if origin.is_some_and(|o| o != ours) {
        return Err(csrf_failed(
            "this request comes from another origin than berth's (Origin header)",
        ));
    }
    match headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        Some(sent) if constant_time_eq(sent, csrf) => Ok(()),
        Some(_) => Err(csrf_failed("the X-CSRF-Token header is not this session's")),
        None => Err(csrf_failed(
            "a state-changing request with the session cookie needs the session's X-CSRF-Token \
             header (GET /api/v1/auth/session gives it)",
        )),
    }
}

/// Removes the sessions that ended (idle or past their lifetime) from the store; their cookies
/// are refused anyway, this only keeps the table small.
pub async fn prune(state: &AppState) -> Result<u64, berth_store::StoreError> {
    let Some(sso) = state.web.sso.as_deref() else {
        return Ok(0);
    };
    let now = unix_now();
    let idle = i64::try_from(sso.config.session_idle.as_secs()).unwrap_or(i64::MAX);
    state
        .store
        .prune_sessions(now, now.saturating_sub(idle))
        .await
}

impl Sso {
    /// Opens a session for `user` (after a verified login): stores it and returns the
    /// `Set-Cookie` value carrying the cookie.
    pub async fn open_session(&self, state: &AppState, user: &User) -> Result<String, ApiError> {
        let value = Secret::new(random_hex(32));
        let id = format!("ses_{}", random_hex(16));
        let now = unix_now();
        let lifetime = self.config.session_lifetime.as_secs();
        let expires = now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX));
        state
            .store
            .insert_session(
                &id,
                &hash(value.expose()),
                &user.id,
                &random_hex(32),
                now,
                expires,
            )
            .await?;
        Ok(self.cookie(self.session_cookie(), value.expose(), lifetime))
    }

    /// Ends the session of this principal; returns the `Set-Cookie` that deletes the cookie.
    pub async fn close_session(
        &self,
        state: &AppState,
        principal: &SessionPrincipal,
    ) -> Result<String, ApiError> {
        state.store.delete_session(&principal.session_id).await?;
        Ok(self.cookie(self.session_cookie(), "", 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; berth_session_x=2".parse().unwrap());
        h.append(header::COOKIE, "berth_session=abc; z=9".parse().unwrap());
        assert_eq!(cookie_value(&h, "berth_session"), Some("abc"));
        assert_eq!(cookie_value(&h, "a"), Some("1"));
        assert_eq!(cookie_value(&h, "nope"), None);
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert!(!constant_time_eq("", "a"));
    }
}
