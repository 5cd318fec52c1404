//! Single sign-on routes: the browser's `/auth/oidc/login` and `/auth/oidc/callback` (HTML and
//! redirects, outside `/api/v1`), and the JSON routes `/api/v1/auth/config` (public),
//! `/api/v1/auth/session`, `/api/v1/auth/logout`, `/api/v1/auth/device` ("remember this device")
//! and `/api/v1/users…`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use berth_api as api;
use berth_domain::{ErrorCode, Name};

use super::Query;
use crate::auth::Actor;
use crate::error::ApiResult;
use crate::sso::session::cookie_value;
use crate::sso::users::{self, scope_of};
use crate::sso::{oidc, SessionPrincipal, Sso};
use crate::state::AppState;

/// The callback's query: a code and state, or the provider's error.
#[derive(Debug, serde::Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// RFC 9207: the issuer of the answer, when the provider says.
    iss: Option<String>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A small HTML page for the browser when a login cannot go on; the code is in `data-code`.
fn page(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    tracing::info!(code = code.as_str(), message, "single sign-on refused");
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>berth: sign-in failed</title></head><body style=\"font-family:sans-serif;\
         max-width:36rem;margin:3rem auto;padding:0 1rem\"><h1>Sign-in failed</h1>\
         <p id=\"message\" data-code=\"{}\">{}</p><p><a href=\"/\">Back to berth</a></p>\
         </body></html>",
        code.as_str(),
        escape(message)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn oidc_page(e: &oidc::OidcError) -> Response {
    let status = match e {
        oidc::OidcError::Discovery(_) => StatusCode::BAD_GATEWAY,
        oidc::OidcError::UnknownState => StatusCode::BAD_REQUEST,
        _ => StatusCode::FORBIDDEN,
    };
    page(status, ErrorCode::LoginRefused, &e.to_string())
}

fn not_configured() -> Response {
    page(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "single sign-on is not configured on this berth server; sign in with a token",
    )
}

/// `GET /auth/oidc/login`: redirects the browser to the provider, with PKCE, nonce and state.
pub async fn login(State(state): State<Arc<AppState>>) -> Response {
    let Some(sso) = state.web.sso.as_deref() else {
        return not_configured();
    };
    match sso.begin_login().await {
        Ok((url, login_state)) => {
            let max_age = oidc::LOGIN_TTL.as_secs();
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, url),
                    (
                        header::SET_COOKIE,
                        sso.cookie(sso.login_cookie(), &login_state, max_age),
                    ),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "single sign-on: cannot start a login");
            oidc_page(&e)
        }
    }
}

/// `GET /auth/oidc/callback`: verifies the provider's answer, maps the claims, creates or
/// refreshes the user, opens a session and sends the browser to the UI.
pub async fn callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(sso) = state.web.sso.as_deref() else {
        return not_configured();
    };
    if let Some(err) = &q.error {
        let desc = q.error_description.as_deref().unwrap_or("");
        return page(
            StatusCode::FORBIDDEN,
            ErrorCode::LoginRefused,
            &format!("the identity provider refused the sign-in: {err} {desc}"),
        );
    }
    let (Some(code), Some(login_state)) = (q.code.as_deref(), q.state.as_deref()) else {
        return page(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            "the callback needs `code` and `state`",
        );
    };
    // RFC 9207: an answer from another issuer (mix-up) is refused before anything else.
    let issuer = sso.config.issuer.trim_end_matches('/');
    if q.iss
        .as_deref()
        .is_some_and(|i| i.trim_end_matches('/') != issuer)
    {
        return page(
            StatusCode::BAD_REQUEST,
            ErrorCode::LoginRefused,
            "the answer comes from another identity provider than berth's",
        );
    }
    // The state must be the one this browser was given with its redirect (login CSRF).
    if cookie_value(&headers, sso.login_cookie()) != Some(login_state) {
        return page(
            StatusCode::BAD_REQUEST,
            ErrorCode::LoginRefused,
            "this sign-in was not started in this browser (or took too long); start again",
        );
    }
    match finish(&state, sso, login_state, code).await {
        Ok(session_cookie) => {
            let mut res = (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "/"), (header::CACHE_CONTROL, "no-store")],
            )
                .into_response();
            for c in [session_cookie, sso.cookie(sso.login_cookie(), "", 0)] {
                if let Ok(v) = c.parse() {
                    res.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            res
        }
        Err(r) => r,
    }
}

async fn finish(
    state: &AppState,
    sso: &Sso,
    login_state: &str,
    code: &str,
) -> Result<String, Response> {
    let identity = sso.finish_login(login_state, code).await.map_err(|e| {
        tracing::warn!(error = %e, "single sign-on: login failed");
        oidc_page(&e)
    })?;
    let user = users::complete_login(state, &identity)
        .await
        .map_err(|e| page(StatusCode::FORBIDDEN, e.code, &e.message))?;
    sso.open_session(state, &user)
        .await
        .map_err(|e| page(StatusCode::INTERNAL_SERVER_ERROR, e.code, &e.message))
}

/// Public: how people sign in here (the sign-in page asks before anyone is signed in).
#[utoipa::path(get, path = "/api/v1/auth/config", tag = "auth", operation_id = "auth_config",
    responses((status = 200, body = api::AuthConfig)), security(()))]
pub async fn config(State(state): State<Arc<AppState>>) -> axum::Json<api::AuthConfig> {
    axum::Json(api::AuthConfig {
        sso: state.web.sso.is_some(),
        login_url: state
            .web
            .sso
            .as_ref()
            .map(|_| "/auth/oidc/login".to_owned()),
        token: true,
    })
}

/// The caller: a browser session (with its CSRF token) or a bearer token.
#[utoipa::path(get, path = "/api/v1/auth/session", tag = "auth", operation_id = "auth_session",
    responses((status = 200, body = api::SessionInfo), (status = 401, body = api::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn session(
    Extension(actor): Extension<Actor>,
    principal: Option<Extension<SessionPrincipal>>,
) -> axum::Json<api::SessionInfo> {
    axum::Json(match principal {
        Some(Extension(p)) => api::SessionInfo {
            kind: "session".into(),
            name: p.user_name,
            role: p.role,
            tenant: p.tenant,
            user_id: Some(p.user_id),
            csrf_token: Some(p.csrf.expose().to_owned()),
        },
        None => api::SessionInfo {
            kind: "token".into(),
            name: actor.name,
            role: actor.role.as_str().to_owned(),
            tenant: actor.tenant.map(String::from),
            user_id: None,
            csrf_token: None,
        },
    })
}

/// Signs a browser out.
///
/// Signs a browser out: a browser session is deleted server-side and its cookie cleared; a
/// remembered device's token (from `POST /auth/device`) is revoked. With any other bearer token
/// there is nothing to sign out (revoke the token instead): 204 as well.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", operation_id = "auth_logout",
    responses((status = 204, description = "signed out"), (status = 401, body = api::ErrorBody),
        (status = 403, body = api::ErrorBody, description = "`csrf_failed`: no or a wrong X-CSRF-Token")),
    security(("bearer" = []), ("session" = [])))]
pub async fn logout(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    principal: Option<Extension<SessionPrincipal>>,
) -> ApiResult<Response> {
    let (Some(sso), Some(Extension(p))) = (state.web.sso.as_deref(), principal) else {
        crate::tokens::sign_out_device(&state, &actor).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let cookie = sso.close_session(&state, &p).await?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// "Remember this device": a token of the browser's own, derived from the caller's token.
#[utoipa::path(post, path = "/api/v1/auth/device", tag = "auth", operation_id = "auth_remember_device",
    responses((status = 201, body = api::CreatedToken, description = "the device's token, shown this once: same role and tenant as the caller's, expires in 30 days or with the caller's token if sooner"),
        (status = 400, body = api::ErrorBody, description = "`invalid`: the caller is a browser session, not a token"),
        (status = 401, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody, description = "`conflict`: the caller is itself a device token, or already has 20 live devices")),
    security(("bearer" = [])))]
pub async fn remember_device(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<(StatusCode, axum::Json<api::CreatedToken>)> {
    let (token, rec) = crate::tokens::remember_device(&state, &actor).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(api::CreatedToken {
            token: token.expose().to_owned(),
            info: crate::tokens::to_api(rec),
        }),
    ))
}

fn user_view(u: berth_store::User) -> api::User {
    api::User {
        disabled: u.disabled_at.is_some(),
        id: u.id,
        name: u.name,
        email: u.email,
        tenant: u.tenant,
        role: u.role,
        issuer: u.issuer,
        subject: u.subject,
        created_at: u.created_at,
        last_login_at: u.last_login_at,
    }
}

fn caller_scope(actor: &Actor) -> ApiResult<users::UserScope> {
    scope_of(actor.role.as_str(), actor.tenant.as_ref().map(Name::as_str))
}

/// Users known from single sign-on: all for an admin, their tenant's for an owner.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", operation_id = "list_users",
    responses((status = 200, body = [api::User]), (status = 403, body = api::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<axum::Json<Vec<api::User>>> {
    let scope = caller_scope(&actor)?;
    let list = users::list(&state, &scope).await?;
    Ok(axum::Json(list.into_iter().map(user_view).collect()))
}

async fn set_disabled(
    state: &AppState,
    actor: &Actor,
    principal: Option<&SessionPrincipal>,
    id: &str,
    disabled: bool,
) -> ApiResult<axum::Json<api::User>> {
    let caller = users::Caller {
        tenant: actor.tenant.as_ref().map(Name::as_str),
        user_id: principal.map(|p| p.user_id.as_str()),
    };
    let u = users::set_disabled(state, actor, &caller, id, disabled).await?;
    Ok(axum::Json(user_view(u)))
}

/// Disables a user: their sessions end at once and they cannot sign in until enabled.
#[utoipa::path(post, path = "/api/v1/users/{user}/disable", tag = "users", operation_id = "disable_user",
    params(("user" = String, Path, description = "user id (`usr_…`)")),
    responses((status = 200, body = api::User), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn disable(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    principal: Option<Extension<SessionPrincipal>>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<api::User>> {
    set_disabled(&state, &actor, principal.as_ref().map(|p| &p.0), &id, true).await
}

/// Enables a disabled user again (they sign in anew).
#[utoipa::path(post, path = "/api/v1/users/{user}/enable", tag = "users", operation_id = "enable_user",
    params(("user" = String, Path, description = "user id (`usr_…`)")),
    responses((status = 200, body = api::User), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn enable(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    principal: Option<Extension<SessionPrincipal>>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<api::User>> {
    set_disabled(&state, &actor, principal.as_ref().map(|p| &p.0), &id, false).await
}
