//! Single sign-on end to end: a real OpenID Provider (node `oidc-provider`, started per test
//! from `tests/fixtures/oidc/provider.mjs`, its own keys, users with a `groups` claim), a real
//! `berth server` configured for it, and real headless Chromium signing in through berth's
//! sign-in page and the provider's login form (`tests/fixtures/oidc/login.mjs`). Then the session
//! cookie is exercised over plain HTTP: roles from the claim mapping, CSRF and Origin checks,
//! tampering, sign-out, disabling, idle expiry.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use berth_test_support::{free_port, ServerOptions, TestServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::bin;

const MAP: &str = "acme-members=acme:member,acme-owners=acme:owner,berth-admins=*:admin";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc")
}

/// A provider and a berth server that trusts it. The provider dies with this value.
struct SsoSetup {
    server: TestServer,
    _idp: tokio::process::Child,
}

async fn start(extra_env: &[(&str, &str)]) -> SsoSetup {
    let root = fixtures().join("../../../../..");
    assert!(
        fixtures().join("node_modules/oidc-provider").is_dir(),
        "oidc-provider is not installed: scripts/test installs it (npm ci in {})",
        fixtures().display()
    );
    assert!(
        root.join("ui/node_modules/playwright-core").is_dir(),
        "the UI is not built: run `npm --prefix ui ci && npm --prefix ui run build`"
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let secret = format!("client-secret-{:032x}", rand_u128());
    let mut idp = tokio::process::Command::new("node")
        .arg(fixtures().join("provider.mjs"))
        .args(["--redirect", &format!("{url}/auth/oidc/callback")])
        .args(["--client-id", "berth", "--client-secret", &secret])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(idp.stdout.take().unwrap()).lines();
    let issuer = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(i) = line.strip_prefix("ISSUER ") {
                return i.to_owned();
            }
        }
        panic!("the provider exited before it listened");
    })
    .await
    .expect("the provider did not start in 30 s");
    // Keep reading what the provider prints (a closed pipe would kill it with EPIPE).
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[oidc-provider] {line}");
        }
    });
    let mut env: Vec<(String, String)> = [
        ("BERTH_OIDC_ISSUER", issuer.as_str()),
        ("BERTH_OIDC_CLIENT_ID", "berth"),
        ("BERTH_OIDC_CLIENT_SECRET", secret.as_str()),
        ("BERTH_PUBLIC_URL", url.as_str()),
        ("BERTH_OIDC_MAP", MAP),
    ]
    .iter()
    .chain(extra_env)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env.push(("BERTH_LOG".into(), "info,berth_server=debug".into()));
    let server = TestServer::start_with(
        bin(),
        ServerOptions {
            listen: Some(listen),
            env,
            ..Default::default()
        },
    )
    .await;
    SsoSetup { server, _idp: idp }
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .elapsed()
            .map(|d| d.as_nanos())
            .unwrap_or(7),
    );
    u128::from(h.finish()) << 64 | u128::from(std::process::id())
}

/// What a browser login ended with.
struct Login {
    /// The session cookie's value, when one was set.
    session: Option<String>,
    /// The top bar's user text, or the refusal page's `code: message`.
    text: String,
}

/// Signs `user` in through berth's sign-in page in headless Chromium.
async fn browser_login(s: &TestServer, user: &str, expect: &str) -> Login {
    browser_run(s, user, expect, &[]).await
}

/// [`browser_login`], then the UI steps `extra` asks for (`--disable NAME`, `--signout yes`).
async fn browser_run(s: &TestServer, user: &str, expect: &str, extra: &[&str]) -> Login {
    let out = tokio::process::Command::new("node")
        .arg(fixtures().join("login.mjs"))
        .args(["--url", &s.url, "--user", user, "--expect", expect])
        .args(extra)
        .output()
        .await
        .expect("node");
    assert!(
        out.status.success(),
        "login of {user} failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("login.mjs prints JSON");
    let cookies = v["cookies"].as_array().unwrap();
    assert!(
        !cookies.iter().any(|c| c["name"] == "__Host-berth_session"),
        "a plain-http server must not use the __Host- prefix (browsers need Secure for it)"
    );
    let session = cookies.iter().find(|c| c["name"] == "berth_session");
    if let Some(c) = session {
        assert_eq!(c["httpOnly"], true, "{c}");
        assert_eq!(c["sameSite"], "Lax", "{c}");
        assert_eq!(c["path"], "/", "{c}");
    }
    Login {
        session: session.map(|c| c["value"].as_str().unwrap().to_owned()),
        text: v["text"].as_str().unwrap_or_default().to_owned(),
    }
}

/// A request with the session cookie (no bearer token); `csrf`/`origin` as given.
async fn with_cookie(
    s: &TestServer,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    origin: Option<&str>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new()
        .request(m, format!("{}{path}", s.url))
        .header("cookie", format!("berth_session={cookie}"));
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn session_of(s: &TestServer, cookie: &str) -> Value {
    let (st, v) = with_cookie(s, "GET", "/api/v1/auth/session", cookie, None, None).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// A signed-in browser session as the tests use it.
struct Signed {
    cookie: String,
    csrf: String,
    user_id: String,
}

async fn signed(s: &TestServer, login: Login) -> (Signed, Value) {
    let cookie = login.session.expect("a session cookie");
    let me = session_of(s, &cookie).await;
    assert_eq!(me["kind"], "session", "{me}");
    let signed = Signed {
        csrf: me["csrf_token"].as_str().unwrap().to_owned(),
        user_id: me["user_id"].as_str().unwrap().to_owned(),
        cookie,
    };
    (signed, me)
}

#[tokio::test]
async fn sso_login_in_chromium_maps_roles_and_guards_the_session() {
    let setup = start(&[]).await;
    let s = &setup.server;
    // The sign-in page learns, without a token, that single sign-on is there.
    let cfg: Value = reqwest::get(format!("{}/api/v1/auth/config", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["sso"], true, "{cfg}");
    assert_eq!(cfg["login_url"], "/auth/oidc/login");
    let (alice, olga) = logins_map_roles(s).await;
    csrf_and_tampering(s, &alice.cookie, &alice.csrf).await;
    disable_and_enable(s, &alice, &olga).await;
    // Sign-out deletes the session server-side: the old cookie is worth nothing after it.
    let (st, v) = with_cookie(
        s,
        "POST",
        "/api/v1/auth/logout",
        &olga.cookie,
        Some(&olga.csrf),
        None,
    )
    .await;
    assert_eq!(st, 204, "{v}");
    let (st, v) = with_cookie(s, "GET", "/api/v1/auth/session", &olga.cookie, None, None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    // Bearer tokens keep working, and the audit log has the logins and the disabling.
    let who = s.get("/api/v1/whoami").await;
    assert_eq!(who["role"], "admin");
    let audit = s.get("/api/v1/audit?limit=100").await;
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    for want in [
        ("user.login", "ok"),
        ("user.login", "login_refused"),
        ("user.disable", "ok"),
    ] {
        assert!(actions.contains(&want), "{want:?} not in {actions:?}");
    }
    assert!(
        !s.log().contains(&alice.cookie),
        "the session cookie reached the log"
    );
}

/// alice (acme-members) is a member of acme, olga (acme-members + acme-owners) the owner: the
/// highest role; nora (outsiders) is mapped to nothing and refused.
async fn logins_map_roles(s: &TestServer) -> (Signed, Signed) {
    let login = browser_login(s, "alice", "signed-in").await;
    assert!(login.text.contains("Alice Example"), "{}", login.text);
    assert!(login.text.contains("member"), "{}", login.text);
    let (alice, me) = signed(s, login).await;
    assert_eq!(
        (me["role"].as_str(), me["tenant"].as_str()),
        (Some("member"), Some("acme"))
    );
    // A member may not list users.
    let (st, v) = with_cookie(s, "GET", "/api/v1/users", &alice.cookie, None, None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    // The session user's role and tenant are enforced like a token's: a member of acme may not
    // manage tokens (403), and sees no other tenant (a globex object is 404).
    let (st, v) = with_cookie(s, "GET", "/api/v1/tokens", &alice.cookie, None, None).await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = with_cookie(
        s,
        "GET",
        "/api/v1/tenants/globex/quota",
        &alice.cookie,
        None,
        None,
    )
    .await;
    assert_eq!(st, 404, "{v}");
    let (olga, me) = signed(s, browser_login(s, "olga", "signed-in").await).await;
    assert_eq!(
        (me["role"].as_str(), me["tenant"].as_str()),
        (Some("owner"), Some("acme"))
    );
    assert_ne!(olga.csrf, alice.csrf, "a CSRF token per session");
    let nora = browser_login(s, "nora", "refused").await;
    assert!(nora.session.is_none());
    assert!(nora.text.starts_with("login_refused:"), "{}", nora.text);
    assert!(nora.text.contains("not given access"), "{}", nora.text);
    (alice, olga)
}

/// The owner disables alice (CSRF token sent): her session ends at once and she cannot sign in
/// again; the admin token enables her, and she can.
async fn disable_and_enable(s: &TestServer, alice: &Signed, olga: &Signed) {
    let disable = format!("/api/v1/users/{}/disable", alice.user_id);
    let (st, v) = with_cookie(
        s,
        "POST",
        &disable,
        &olga.cookie,
        Some(&olga.csrf),
        Some(&s.url),
    )
    .await;
    assert_eq!((st, v["disabled"].as_bool()), (200, Some(true)), "{v}");
    let (st, _) = with_cookie(s, "GET", "/api/v1/auth/session", &alice.cookie, None, None).await;
    assert_eq!(st, 401, "a disabled user's session is gone");
    let again = browser_login(s, "alice", "refused").await;
    assert!(again.session.is_none());
    assert!(again.text.contains("disabled"), "{}", again.text);
    // The owner sees their tenant's users (nora never became one).
    let (st, list) = with_cookie(s, "GET", "/api/v1/users", &olga.cookie, None, None).await;
    assert_eq!(st, 200, "{list}");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["Alice Example", "Olga Owner"]);
    let (st, v) = s
        .call(
            "POST",
            &format!("/api/v1/users/{}/enable", alice.user_id),
            None,
        )
        .await;
    assert_eq!((st, v["disabled"].as_bool()), (200, Some(false)), "{v}");
    // The owner disables her again, on the UI's Users page this time (a real browser sending
    // the session's CSRF token); the admin token enables her once more.
    browser_run(s, "olga", "signed-in", &["--disable", "Alice Example"]).await;
    let users = s.get("/api/v1/users").await;
    let a = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == alice.user_id.as_str())
        .unwrap();
    assert_eq!(a["disabled"], true, "{a}");
    let (st, _) = s
        .call(
            "POST",
            &format!("/api/v1/users/{}/enable", alice.user_id),
            None,
        )
        .await;
    assert_eq!(st, 200);
    // Signed in again, then signed out with the UI's button: that session is gone server-side.
    let again = browser_run(s, "alice", "signed-in", &["--signout", "yes"]).await;
    let cookie = again.session.expect("a session cookie");
    let (st, _) = with_cookie(s, "GET", "/api/v1/auth/session", &cookie, None, None).await;
    assert_eq!(st, 401, "the UI's sign-out revokes the session");
}

/// State-changing requests with the cookie need the session's CSRF token (and berth's origin);
/// a WebSocket handshake with the cookie needs berth's Origin; a tampered cookie is no session.
async fn csrf_and_tampering(s: &TestServer, cookie: &str, csrf: &str) {
    let path = "/api/v1/auth/logout";
    for (token, origin, why) in [
        (None, None, "no CSRF token"),
        (Some("0123456789abcdef"), None, "a wrong CSRF token"),
        (Some(csrf), Some("http://evil.example"), "another origin"),
    ] {
        let (st, v) = with_cookie(s, "POST", path, cookie, token, origin).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (403, Some("csrf_failed")),
            "{why}: {v}"
        );
    }
    // Still signed in after the refused sign-outs.
    session_of(s, cookie).await;
    let ws = reqwest::Client::new()
        .get(format!("{}/api/v1/workspaces/acme%2Fnope/exec/ws", s.url))
        .header("cookie", format!("berth_session={cookie}"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ws.status().as_u16(),
        403,
        "a cross-origin WebSocket with the cookie"
    );
    // A tampered cookie (one digit changed) is no session: 401.
    let mut tampered: Vec<char> = cookie.chars().collect();
    tampered[0] = if tampered[0] == 'a' { 'b' } else { 'a' };
    let tampered: String = tampered.into_iter().collect();
    let (st, v) = with_cookie(s, "GET", "/api/v1/auth/session", &tampered, None, None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    // With the right token and origin a state-changing request goes through: another session
    // of the same user is not touched, so use a harmless one (enabling a user who does not
    // exist: 404 not_found from the route's check, past the CSRF check).
    let (st, v) = with_cookie(
        s,
        "POST",
        "/api/v1/users/usr_x/enable",
        cookie,
        Some(csrf),
        Some(&s.url),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
}

#[tokio::test]
async fn sso_session_ends_when_idle() {
    let setup = start(&[("BERTH_SESSION_IDLE", "4s")]).await;
    let s = &setup.server;
    let alice = browser_login(s, "alice", "signed-in").await;
    let cookie = alice.session.expect("session cookie");
    session_of(s, &cookie).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (st, v) = with_cookie(s, "GET", "/api/v1/auth/session", &cookie, None, None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
}
