//! Single sign-on at the HTTP layer, without a provider: the public config, the browser routes'
//! refusals, and sessions planted in the store (cookie, CSRF, Origin, expiry, sign-out, users).

use axum::body::Body;
use axum::http::Request;
use berth_store::UserLogin;
use serde_json::Value;
use tower::ServiceExt;

use crate::config::sso::SsoArgs;
use crate::config::ServerArgs;
use crate::sso::session::hash;
use crate::sso::unix_now;
use crate::state::AppState;
use crate::test_support::{route_state, route_state_with, TOKEN};

const PUBLIC: &str = "http://127.0.0.1:8787";

async fn sso_state(dir: &std::path::Path) -> std::sync::Arc<AppState> {
    let args = ServerArgs {
        sso: Box::new(SsoArgs {
            // Nothing listens there: discovery fails, which some tests want.
            oidc_issuer: Some("http://127.0.0.1:9/idp".into()),
            oidc_client_id: Some("berth".into()),
            public_url: Some(PUBLIC.into()),
            oidc_map: vec!["acme-members=acme:member".into()],
            session_idle: Some("1h".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    route_state_with(dir, args).await.0
}

/// One request: status, headers, body text.
async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (u16, axum::http::HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Plants a user and a session with cookie value `cookie`; returns (user id, csrf token).
async fn plant(state: &AppState, cookie: &str, expires_in: i64) -> (String, String) {
    let login = UserLogin {
        issuer: "http://127.0.0.1:9/idp",
        subject: "alice",
        name: "Alice",
        email: None,
        tenant: Some("acme"),
        role: "member",
    };
    let user = state.store.record_login("usr_a", &login).await.unwrap();
    let now = unix_now();
    state
        .store
        .insert_session(
            "ses_a",
            &hash(cookie),
            &user.id,
            "csrf-a",
            now,
            now + expires_in,
        )
        .await
        .unwrap();
    (user.id, "csrf-a".into())
}

#[tokio::test]
async fn without_sso_config_says_so_and_cookies_mean_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = route_state(dir.path()).await;
    let app = super::router(state);
    let (st, _, body) = send(&app, "GET", "/api/v1/auth/config", &[]).await;
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["sso"].as_bool(), v["token"].as_bool()),
        (Some(false), Some(true))
    );
    assert!(v.get("login_url").is_none(), "{v}");
    let (st, _, body) = send(&app, "GET", "/auth/oidc/login", &[]).await;
    assert_eq!(st, 404);
    assert!(body.contains("not configured"), "{body}");
    let (st, _, body) = send(
        &app,
        "GET",
        "/api/v1/whoami",
        &[("cookie", "berth_session=x")],
    )
    .await;
    assert_eq!((st, code(&body).as_str()), (401, "unauthorized"));
}

#[tokio::test]
async fn browser_routes_refuse_what_they_cannot_trust() {
    let dir = tempfile::tempdir().unwrap();
    let app = super::router(sso_state(dir.path()).await);
    let (st, _, body) = send(&app, "GET", "/api/v1/auth/config", &[]).await;
    assert_eq!(st, 200);
    assert!(
        body.contains("\"sso\":true") && body.contains("/auth/oidc/login"),
        "{body}"
    );
    // The provider cannot be reached: a page saying so, 502.
    let (st, h, body) = send(&app, "GET", "/auth/oidc/login", &[]).await;
    assert_eq!(st, 502, "{body}");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(body.contains("cannot be reached"), "{body}");
    let cb = "/auth/oidc/callback?code=c&state=s1";
    for (uri, cookie, status, text) in [
        (cb, "", 400, "not started in this browser"),
        (cb, "berth_oidc=other", 400, "not started in this browser"),
        (cb, "berth_oidc=s1", 400, "unknown or expired"),
        (
            "/auth/oidc/callback?code=c&state=s1&iss=http://evil.example",
            "berth_oidc=s1",
            400,
            "another identity provider",
        ),
        (
            "/auth/oidc/callback?error=access_denied&error_description=no",
            "",
            403,
            "access_denied",
        ),
        (
            "/auth/oidc/callback?state=s1",
            "berth_oidc=s1",
            400,
            "needs `code`",
        ),
    ] {
        let (st, _, body) = send(&app, "GET", uri, &[("cookie", cookie)]).await;
        assert_eq!(st, status, "{uri} {cookie}: {body}");
        assert!(body.contains(text), "{uri}: {body}");
        assert!(!body.contains("<script"), "{body}");
    }
    // The provider's error text is escaped into the page.
    let (_, _, body) = send(&app, "GET", "/auth/oidc/callback?error=%3Cscript%3E", &[]).await;
    assert!(
        body.contains("&lt;script&gt;") && !body.contains("<script>"),
        "{body}"
    );
}

#[tokio::test]
async fn a_session_cookie_authenticates_with_csrf_and_origin_checks() {
    let dir = tempfile::tempdir().unwrap();
    let state = sso_state(dir.path()).await;
    let app = super::router(state.clone());
    let (_, csrf) = plant(&state, "cookie-a", 3600).await;
    let cookie = "berth_session=cookie-a";
    let (st, _, body) = send(&app, "GET", "/api/v1/auth/session", &[("cookie", cookie)]).await;
    assert_eq!(st, 200, "{body}");
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["kind"], "session");
    assert_eq!(me["csrf_token"], csrf.as_str());
    assert_eq!(
        (me["role"].as_str(), me["tenant"].as_str()),
        (Some("member"), Some("acme"))
    );
    // Refusals: CSRF missing/wrong, foreign Origin, cross-origin WebSocket, tampered cookie.
    let logout = "/api/v1/auth/logout";
    for (headers, status, want) in [
        (vec![("cookie", cookie)], 403, "csrf_failed"),
        (
            vec![("cookie", cookie), ("x-csrf-token", "nope")],
            403,
            "csrf_failed",
        ),
        (
            vec![
                ("cookie", cookie),
                ("x-csrf-token", csrf.as_str()),
                ("origin", "http://evil.example"),
            ],
            403,
            "csrf_failed",
        ),
        (
            vec![
                ("cookie", "berth_session=cookie-b"),
                ("x-csrf-token", csrf.as_str()),
            ],
            401,
            "unauthorized",
        ),
    ] {
        let (st, _, body) = send(&app, "POST", logout, &headers).await;
        assert_eq!((st, code(&body).as_str()), (status, want), "{headers:?}");
    }
    let ws = [
        ("cookie", cookie),
        ("upgrade", "websocket"),
        ("connection", "upgrade"),
    ];
    let (st, _, body) = send(&app, "GET", "/api/v1/whoami", &ws).await;
    assert_eq!(
        (st, code(&body).as_str()),
        (403, "csrf_failed"),
        "no Origin"
    );
    let ws_ok = [ws[0], ws[1], ws[2], ("origin", PUBLIC)];
    let (st, _, _) = send(&app, "GET", "/api/v1/whoami", &ws_ok).await;
    assert_eq!(st, 200, "berth's own Origin");
    // The audit actor of a session is the user.
    let (st, _, body) = send(&app, "GET", "/api/v1/whoami", &[("cookie", cookie)]).await;
    assert_eq!(st, 200);
    assert!(body.contains("\"token_id\":\"usr_a\""), "{body}");
    // Sign-out: 204, the cookie cleared, the session gone.
    let ok = [
        ("cookie", cookie),
        ("x-csrf-token", csrf.as_str()),
        ("origin", PUBLIC),
    ];
    let (st, h, _) = send(&app, "POST", logout, &ok).await;
    assert_eq!(st, 204);
    let set = h["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("berth_session=;") && set.contains("Max-Age=0"),
        "{set}"
    );
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && !set.contains("Secure"),
        "{set}"
    );
    let (st, _, _) = send(&app, "GET", "/api/v1/auth/session", &[("cookie", cookie)]).await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn expired_sessions_and_disabled_users_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = sso_state(dir.path()).await;
    let app = super::router(state.clone());
    let (user, _) = plant(&state, "cookie-a", -1).await;
    let (st, _, body) = send(
        &app,
        "GET",
        "/api/v1/auth/session",
        &[("cookie", "berth_session=cookie-a")],
    )
    .await;
    assert_eq!(
        (st, code(&body).as_str()),
        (401, "unauthorized"),
        "past its lifetime"
    );
    // Idle: last seen two hours ago with a one-hour idle timeout.
    let now = unix_now();
    state
        .store
        .insert_session(
            "ses_b",
            &hash("cookie-b"),
            &user,
            "c",
            now - 7200,
            now + 3600,
        )
        .await
        .unwrap();
    let (st, _, _) = send(
        &app,
        "GET",
        "/api/v1/auth/session",
        &[("cookie", "berth_session=cookie-b")],
    )
    .await;
    assert_eq!(st, 401, "idle");
    state
        .store
        .insert_session("ses_c", &hash("cookie-c"), &user, "c", now, now + 3600)
        .await
        .unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let (st, _, body) = send(
        &app,
        "POST",
        &format!("/api/v1/users/{user}/disable"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, _, _) = send(
        &app,
        "GET",
        "/api/v1/auth/session",
        &[("cookie", "berth_session=cookie-c")],
    )
    .await;
    assert_eq!(st, 401, "disabled");
    let (st, _, body) = send(&app, "GET", "/api/v1/users", &[("authorization", &bearer)]).await;
    assert_eq!(st, 200);
    assert!(body.contains("\"disabled\":true"), "{body}");
    let (st, _, body) = send(
        &app,
        "POST",
        "/api/v1/users/usr_nope/enable",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!((st, code(&body).as_str()), (404, "not_found"));
}

#[tokio::test]
async fn logins_map_claims_and_losing_access_ends_sessions() {
    use crate::sso::oidc::Identity;
    use crate::sso::users::complete_login;
    let dir = tempfile::tempdir().unwrap();
    let state = sso_state(dir.path()).await;
    let identity = |groups: Value| Identity {
        issuer: "http://127.0.0.1:9/idp".into(),
        subject: "alice".into(),
        name: "Alice".into(),
        email: None,
        claim: Some(groups),
    };
    let user = complete_login(&state, &identity(serde_json::json!(["acme-members"])))
        .await
        .unwrap();
    assert_eq!(
        (user.tenant.as_deref(), user.role.as_str()),
        (Some("acme"), "member")
    );
    let now = unix_now();
    let store = &state.store;
    store
        .insert_session("ses_l", &hash("cookie-l"), &user.id, "c", now, now + 3600)
        .await
        .unwrap();
    // Her groups no longer map to anything: refused, and her live session ends with it.
    let err = complete_login(&state, &identity(serde_json::json!(["ex-staff"])))
        .await
        .unwrap_err();
    assert_eq!(err.code, berth_domain::ErrorCode::LoginRefused);
    assert!(store
        .find_session(&hash("cookie-l"))
        .await
        .unwrap()
        .is_none());
    let err = complete_login(&state, &identity(Value::Null))
        .await
        .unwrap_err();
    assert_eq!(
        err.code,
        berth_domain::ErrorCode::LoginRefused,
        "no claim at all"
    );
}
