//! The authorization matrix: every registered API route × {admin, owner/member/viewer of acme,
//! owner of globex, expired, revoked, no token}, against a real server with two real
//! workspaces (acme/w1 and globex/w2) and real sub-objects (session, task, LLM call, template,
//! secret, budget).
//!
//! The route list comes from the server's own route table (`berth_server::route_table()`), and
//! [`EXPECTED`] must name every route in it (and only those): a new route without an entry
//! fails `the_matrix_covers_every_route` before anything runs. Each route is called with a
//! request on acme's objects that, once authorized, is answered with neither 401, 403 nor 404
//! (mutating routes are sent a request the handler refuses harmlessly, e.g. a 400 body, or are
//! re-prepared before each call), so:
//! - a caller whose role is below the route's gets 403 `forbidden`;
//! - the owner of globex gets 404 for anything of acme (as if it did not exist), and lists
//!   without acme's objects in them;
//! - expired, revoked and missing tokens get 401 with `token_expired`, `token_revoked` and
//!   `unauthorized`.
//!
//! Verified to fail (2026-12-04): with `/workspaces/{ws}/stop` registered as READ instead of
//! OPERATE, and the tenant check of `{task}` taken out of `routes::access::param_tenant`, the
//! matrix reported exactly these 7 mismatches:
//! `POST /workspaces/{ws}/stop ViewerAcme: expected Forbidden, got Allowed (200)` and
//! `GET /tasks/{task} OwnerGlobex: expected NotFound, got Allowed (200)` with the same for the
//! other five `/tasks/{task}/…` routes.
//! `observed_mismatches_are_reported` checks the comparison itself on a weakened table.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_test_support::{enc, ServerOptions, TestServer};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::bin;

/// The lowest role a route admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Min {
    Viewer,
    Member,
    Owner,
    Admin,
}

/// Whether the route's request names acme's objects (globex's owner gets 404) or is a list or
/// server-wide call (globex's owner gets its own view, or 403 by role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Acme,
    Global,
    /// An object of acme that belongs to acme's viewer (a notification subscription): only
    /// that viewer and admins see it; every other caller, of acme or not, gets 404.
    Own,
}

/// (method, path, lowest role, target, concrete request: path after /api/v1 with `{…}`
/// placeholders filled by [`Fixture::fill`], and a JSON body or raw text).
type Entry = (&'static str, &'static str, Min, Target, &'static str, Body);

#[derive(Debug, Clone, Copy)]
enum Body {
    None,
    Json(&'static str),
}

use Body::{Json, None as NoBody};
use Min::{Admin, Member, Owner, Viewer};
use Target::{Acme, Global, Own};

/// What each route should admit. Requests on acme's objects use W (acme/w1), T (a task of w1),
/// C (an LLM call of acme), K (a token of acme), S (a session of w1) and U (a single sign-on
/// user of acme), N (a notification subscription of acme's viewer).
#[rustfmt::skip]
const EXPECTED: &[Entry] = &[
    ("GET", "/version", Viewer, Global, "/version", NoBody),
    ("GET", "/whoami", Viewer, Global, "/whoami", NoBody),
    ("GET", "/doctor", Admin, Global, "/doctor", NoBody),
    ("GET", "/audit", Viewer, Global, "/audit", NoBody),
    ("GET", "/image", Viewer, Global, "/image", NoBody),
    ("POST", "/image/build", Admin, Global, "/image/build", Json("{")),
    ("POST", "/image/prune", Admin, Global, "/image/prune", Json("{")),
    ("GET", "/openapi.json", Viewer, Global, "/openapi.json", NoBody),
    ("GET", "/tokens", Owner, Global, "/tokens", NoBody),
    ("POST", "/tokens", Owner, Acme, "/tokens", Json(r#"{"name":"x","role":"viewer","tenant":"acme","expires_in":"soon"}"#)),
    ("DELETE", "/tokens/{id}", Owner, Acme, "/tokens/K", NoBody),
    ("GET", "/tenants", Viewer, Global, "/tenants", NoBody),
    ("GET", "/tenants/{tenant}/quota", Viewer, Acme, "/tenants/acme/quota", NoBody),
    ("PUT", "/tenants/{tenant}/quota", Admin, Acme, "/tenants/acme/quota", Json(r#"{"memory":"lots"}"#)),
    ("GET", "/workspaces", Viewer, Global, "/workspaces", NoBody),
    ("POST", "/workspaces", Member, Acme, "/workspaces", Json(r#"{"name":"nope","tenant":"acme","image":"localhost/berth-no-such-image:1"}"#)),
    ("GET", "/workspaces/{ws}", Viewer, Acme, "/workspaces/W", NoBody),
    ("DELETE", "/workspaces/{ws}", Owner, Acme, "/workspaces/W?volume=maybe", NoBody),
    ("PATCH", "/workspaces/{ws}", Owner, Acme, "/workspaces/W", Json("{")),
    ("POST", "/workspaces/{ws}/start", Member, Acme, "/workspaces/W/start", NoBody),
    ("POST", "/workspaces/{ws}/stop", Member, Acme, "/workspaces/W/stop", NoBody),
    ("GET", "/workspaces/{ws}/backup", Admin, Acme, "/workspaces/W/backup?pause=maybe", NoBody),
    ("POST", "/backups/restore", Admin, Global, "/backups/restore", Json("{}")),
    ("POST", "/workspaces/{ws}/exec", Member, Acme, "/workspaces/W/exec", Json("{}")),
    ("GET", "/workspaces/{ws}/exec/ws", Member, Acme, "/workspaces/W/exec/ws", NoBody),
    ("GET", "/workspaces/{ws}/sessions", Viewer, Acme, "/workspaces/W/sessions", NoBody),
    ("POST", "/workspaces/{ws}/sessions", Member, Acme, "/workspaces/W/sessions", Json(r#"{"cols":0}"#)),
    ("GET", "/workspaces/{ws}/sessions/{session}", Viewer, Acme, "/workspaces/W/sessions/S", NoBody),
    ("DELETE", "/workspaces/{ws}/sessions/{session}", Member, Acme, "/workspaces/W/sessions/victim", NoBody),
    ("GET", "/workspaces/{ws}/sessions/{session}/scrollback", Viewer, Acme, "/workspaces/W/sessions/S/scrollback", NoBody),
    ("GET", "/workspaces/{ws}/sessions/{session}/attach", Viewer, Acme, "/workspaces/W/sessions/S/attach", NoBody),
    ("GET", "/tasks", Viewer, Global, "/tasks", NoBody),
    ("POST", "/tasks", Member, Acme, "/tasks", Json(r#"{"workspace":"acme/w1","agent":"claude","prompt":"hi"}"#)),
    ("GET", "/tasks/{task}", Viewer, Acme, "/tasks/T", NoBody),
    ("POST", "/tasks/{task}/messages", Member, Acme, "/tasks/T/messages", Json("{}")),
    ("POST", "/tasks/{task}/cancel", Member, Acme, "/tasks/T/cancel", NoBody),
    ("POST", "/tasks/{task}/attach", Member, Acme, "/tasks/T/attach", NoBody),
    ("GET", "/tasks/{task}/events", Viewer, Acme, "/tasks/T/events", NoBody),
    ("GET", "/tasks/{task}/diff", Viewer, Acme, "/tasks/T/diff", NoBody),
    ("GET", "/tasks/{task}/patch", Viewer, Acme, "/tasks/T/patch", NoBody),
    ("POST", "/tasks/{task}/push", Member, Acme, "/tasks/T/push", Json("{")),
    ("POST", "/tasks/{task}/pr", Member, Acme, "/tasks/T/pr", Json("{")),
    ("GET", "/tasks/{task}/events/stream", Viewer, Acme, "/tasks/T/events/stream", NoBody),
    ("GET", "/tasks/{task}/approvals", Viewer, Acme, "/tasks/T/approvals", NoBody),
    ("POST", "/tasks/{task}/approvals/{req}", Member, Acme, "/tasks/T/approvals/r1", Json("{")),
    ("GET", "/inbox", Viewer, Global, "/inbox", NoBody),
    ("GET", "/access-requests", Viewer, Global, "/access-requests", NoBody),
    ("POST", "/workspaces/{ws}/access-requests/{req}", Owner, Acme, "/workspaces/W/access-requests/ar_x", Json("{")),
    ("POST", "/workspaces/{ws}/access-requests/{req}/comments", Member, Acme, "/workspaces/W/access-requests/ar_x/comments", Json("{")),
    ("GET", "/workspaces/{ws}/egress/rules", Viewer, Acme, "/workspaces/W/egress/rules", NoBody),
    ("PUT", "/workspaces/{ws}/egress/rules", Owner, Acme, "/workspaces/W/egress/rules", Json("{")),
    ("POST", "/workspaces/{ws}/egress/rules", Owner, Acme, "/workspaces/W/egress/rules", Json("{")),
    ("DELETE", "/workspaces/{ws}/egress/rules/{index}", Owner, Acme, "/workspaces/W/egress/rules/first", NoBody),
    ("GET", "/workspaces/{ws}/egress/effective", Viewer, Acme, "/workspaces/W/egress/effective", NoBody),
    ("GET", "/workspaces/{ws}/egress/templates", Viewer, Acme, "/workspaces/W/egress/templates", NoBody),
    ("POST", "/workspaces/{ws}/egress/templates", Owner, Acme, "/workspaces/W/egress/templates", Json("{")),
    ("DELETE", "/workspaces/{ws}/egress/templates/{name}", Owner, Acme, "/workspaces/W/egress/templates/tpl", NoBody),
    ("GET", "/egress/templates", Viewer, Global, "/egress/templates", NoBody),
    ("POST", "/egress/templates", Owner, Acme, "/egress/templates", Json(r#"{"tenant":"acme","name":"other","rules":["nonsense"]}"#)),
    ("GET", "/egress/templates/{tenant}/{name}", Viewer, Acme, "/egress/templates/acme/tpl", NoBody),
    ("PUT", "/egress/templates/{tenant}/{name}", Owner, Acme, "/egress/templates/acme/tpl", Json("{")),
    ("DELETE", "/egress/templates/{tenant}/{name}", Owner, Acme, "/egress/templates/acme/debian", NoBody),
    ("GET", "/templates", Viewer, Global, "/templates", NoBody),
    ("GET", "/templates/{tenant}/{name}", Viewer, Acme, "/templates/acme/base", NoBody),
    ("PUT", "/templates/{tenant}/{name}", Owner, Acme, "/templates/acme/base", Json("{")),
    ("DELETE", "/templates/{tenant}/{name}", Owner, Acme, "/templates/acme/victim", NoBody),
    ("GET", "/workspaces/{ws}/provision", Viewer, Acme, "/workspaces/W/provision", NoBody),
    ("GET", "/workspaces/{ws}/provision/stream", Viewer, Acme, "/workspaces/W/provision/stream", NoBody),
    ("POST", "/workspaces/{ws}/provision", Member, Acme, "/workspaces/W/provision", Json("{")),
    ("GET", "/workspaces/{ws}/egress/log", Viewer, Acme, "/workspaces/W/egress/log", NoBody),
    ("GET", "/workspaces/{ws}/egress/log/stream", Viewer, Acme, "/workspaces/W/egress/log/stream", NoBody),
    ("GET", "/secrets", Member, Global, "/secrets", NoBody),
    ("PUT", "/secrets/{tenant}/{name}", Owner, Acme, "/secrets/acme/KEY", Json("{")),
    ("DELETE", "/secrets/{tenant}/{name}", Owner, Acme, "/secrets/acme/VICTIM", NoBody),
    ("GET", "/usage", Viewer, Global, "/usage", NoBody),
    ("GET", "/usage/calls", Viewer, Global, "/usage/calls", NoBody),
    ("GET", "/usage/calls/{call}", Viewer, Acme, "/usage/calls/C", NoBody),
    ("GET", "/budgets", Viewer, Global, "/budgets", NoBody),
    ("PUT", "/budgets", Owner, Acme, "/budgets", Json(r#"{"tenant":"acme","period":"week","max_tokens":1}"#)),
    ("DELETE", "/budgets", Owner, Acme, "/budgets?tenant=acme", NoBody),
    ("GET", "/auth/session", Viewer, Global, "/auth/session", NoBody),
    ("POST", "/auth/logout", Viewer, Global, "/auth/logout", NoBody),
    ("POST", "/auth/device", Viewer, Global, "/auth/device", NoBody),
    ("GET", "/users", Owner, Global, "/users", NoBody),
    ("POST", "/users/{user}/disable", Owner, Acme, "/users/U/disable", NoBody),
    ("POST", "/users/{user}/enable", Owner, Acme, "/users/U/enable", NoBody),
    ("GET", "/notifications/subscriptions", Viewer, Global, "/notifications/subscriptions", NoBody),
    ("POST", "/notifications/subscriptions", Viewer, Global, "/notifications/subscriptions", Json("{")),
    ("GET", "/notifications/subscriptions/{sub}", Viewer, Own, "/notifications/subscriptions/N", NoBody),
    ("DELETE", "/notifications/subscriptions/{sub}", Viewer, Own, "/notifications/subscriptions/nsub_victim", NoBody),
    ("POST", "/notifications/subscriptions/{sub}/test", Viewer, Own, "/notifications/subscriptions/N/test", NoBody),
    ("GET", "/notifications/subscriptions/{sub}/deliveries", Viewer, Own, "/notifications/subscriptions/N/deliveries", NoBody),
    ("GET", "/notifications/stream", Viewer, Global, "/notifications/stream", NoBody),
    ("GET", "/notifications/webpush", Viewer, Global, "/notifications/webpush", NoBody),
    // MCP over HTTP: any token speaks it (its tool calls are checked as the routes they call).
    ("POST", "/mcp", Viewer, Global, "/mcp", Json("{")),
    ("DELETE", "/mcp", Viewer, Global, "/mcp", NoBody),
];

/// The callers of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Admin,
    OwnerAcme,
    MemberAcme,
    ViewerAcme,
    OwnerGlobex,
    Expired,
    Revoked,
    NoToken,
}

const CALLERS: [Caller; 8] = [
    Caller::Admin,
    Caller::OwnerAcme,
    Caller::MemberAcme,
    Caller::ViewerAcme,
    Caller::OwnerGlobex,
    Caller::Expired,
    Caller::Revoked,
    Caller::NoToken,
];

/// What a call should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Through the check: any status but 401, 403 and 404.
    Allowed,
    Forbidden,
    NotFound,
    Unauthorized(&'static str),
}

fn expected(min: Min, target: Target, caller: Caller) -> Outcome {
    let role = match caller {
        Caller::Admin => Min::Admin,
        Caller::OwnerAcme | Caller::OwnerGlobex => Min::Owner,
        Caller::MemberAcme => Min::Member,
        Caller::ViewerAcme => Min::Viewer,
        Caller::Expired => return Outcome::Unauthorized("token_expired"),
        Caller::Revoked => return Outcome::Unauthorized("token_revoked"),
        Caller::NoToken => return Outcome::Unauthorized("unauthorized"),
    };
    let not_theirs = match target {
        Target::Own => !matches!(caller, Caller::Admin | Caller::ViewerAcme),
        Target::Acme => caller == Caller::OwnerGlobex,
        Target::Global => false,
    };
    if not_theirs {
        Outcome::NotFound
    } else if role < min {
        Outcome::Forbidden
    } else {
        Outcome::Allowed
    }
}

fn classify(status: u16, code: &str) -> Outcome {
    match status {
        401 => Outcome::Unauthorized(match code {
            "token_expired" => "token_expired",
            "token_revoked" => "token_revoked",
            _ => "unauthorized",
        }),
        403 => Outcome::Forbidden,
        404 => Outcome::NotFound,
        _ => Outcome::Allowed,
    }
}

/// The differences between what each (route, caller) should get and what it got.
fn mismatches(observed: &[(String, Caller, Outcome, u16)], table: &[Entry]) -> Vec<String> {
    let mut out = Vec::new();
    for (route, caller, got, status) in observed {
        let Some(e) = table.iter().find(|e| format!("{} {}", e.0, e.1) == *route) else {
            out.push(format!("{route}: no expected entry"));
            continue;
        };
        let want = expected(e.2, e.3, *caller);
        if want != *got {
            out.push(format!(
                "{route} {caller:?}: expected {want:?}, got {got:?} ({status})"
            ));
        }
    }
    out
}

#[test]
fn the_matrix_covers_every_route() {
    let registered: BTreeSet<String> = berth_server::route_table()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let expected: BTreeSet<String> = EXPECTED
        .iter()
        .map(|e| format!("{} {}", e.0, e.1))
        .collect();
    let missing: Vec<_> = registered.difference(&expected).collect();
    let stale: Vec<_> = expected.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "routes without an expected entry in the matrix: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "matrix entries for routes that do not exist: {stale:?}"
    );
}

#[test]
fn observed_mismatches_are_reported() {
    // What a server with `/doctor` open to viewers would answer: the comparison must flag it.
    let observed = vec![
        (
            "GET /doctor".to_owned(),
            Caller::ViewerAcme,
            Outcome::Allowed,
            200,
        ),
        (
            "GET /workspaces/{ws}".to_owned(),
            Caller::OwnerGlobex,
            Outcome::Allowed,
            200,
        ),
        (
            "GET /version".to_owned(),
            Caller::ViewerAcme,
            Outcome::Allowed,
            200,
        ),
    ];
    let m = mismatches(&observed, EXPECTED);
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m[0].contains("GET /doctor ViewerAcme: expected Forbidden"),
        "{m:?}"
    );
    assert!(m[1].contains("OwnerGlobex: expected NotFound"), "{m:?}");
}

/// The server, its tokens and the acme objects the requests name.
struct Fixture {
    s: TestServer,
    tokens: Vec<(Caller, Option<String>)>,
    task: String,
    call: i64,
    victim_token: String,
    user: String,
    /// acme's viewer's subscription, and that viewer's token id (owner of `nsub_victim`).
    subscription: String,
    viewer_id: String,
}

impl Fixture {
    fn fill(&self, path: &str) -> String {
        path.replace("/W", &format!("/{}", enc("acme/w1")))
            .replace("/T", &format!("/{}", self.task))
            .replace("/C", &format!("/{}", self.call))
            .replace("/K", &format!("/{}", self.victim_token))
            .replace("/U/", &format!("/{}/", self.user))
            .replace("/N", &format!("/{}", self.subscription))
            .replace("/S/", "/main/")
            .replace("/S", "/main")
    }

    fn token(&self, c: Caller) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(k, _)| *k == c)
            .and_then(|(_, t)| t.as_deref())
    }

    async fn admin(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.s
            .call(method, path, (!body.is_null()).then_some(body))
            .await
    }

    async fn new_token(&self, name: &str, role: &str, tenant: &str) -> (String, String) {
        let (st, v) = self
            .admin(
                "POST",
                "/api/v1/tokens",
                json!({"name": name, "role": role, "tenant": tenant}),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        (
            v["token"].as_str().unwrap().to_owned(),
            v["id"].as_str().unwrap().to_owned(),
        )
    }
}

async fn setup() -> Fixture {
    berth_test_support::ensure_image().await;
    // Notification subscriptions of the matrix point at a closed loopback port.
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![("BERTH_NOTIFY_ALLOW_PRIVATE".into(), "1".into())],
            ..Default::default()
        },
    )
    .await;
    // acme/w1 is made from a (stepless) template, so its provisioning routes have an object.
    let (st, v) = s
        .call(
            "PUT",
            "/api/v1/templates/acme/base",
            Some(json!({"source": "description = \"nothing to set up\"\n"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    for (tenant, name) in [("acme", "w1"), ("globex", "w2")] {
        let template = (tenant == "acme").then_some("base");
        s.create_workspace(
            json!({"name": name, "tenant": tenant, "memory": "256m", "template": template}),
        )
        .await;
        let (st, v) = s
            .call(
                "POST",
                &format!(
                    "/api/v1/workspaces/{}/sessions",
                    enc(&format!("{tenant}/{name}"))
                ),
                Some(json!({"name": "main"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    let mut f = Fixture {
        s,
        tokens: Vec::new(),
        task: String::new(),
        call: 0,
        victim_token: String::new(),
        user: String::new(),
        subscription: String::new(),
        viewer_id: String::new(),
    };
    f.tokens.push((Caller::Admin, Some(f.s.token.clone())));
    for (c, role, tenant) in [
        (Caller::OwnerAcme, "owner", "acme"),
        (Caller::MemberAcme, "member", "acme"),
        (Caller::ViewerAcme, "viewer", "acme"),
        (Caller::OwnerGlobex, "owner", "globex"),
    ] {
        let (t, id) = f.new_token(&format!("{c:?}"), role, tenant).await;
        if c == Caller::ViewerAcme {
            f.viewer_id = id;
        }
        f.tokens.push((c, Some(t)));
    }
    let (revoked, id) = f.new_token("revoked", "member", "acme").await;
    let (st, _) = f
        .admin("DELETE", &format!("/api/v1/tokens/{id}"), Value::Null)
        .await;
    assert_eq!(st, 200);
    f.tokens.push((Caller::Revoked, Some(revoked)));
    f.tokens.push((Caller::NoToken, None));
    f.victim_token = f.new_token("victim", "viewer", "acme").await.1;
    f.subscription = viewer_subscription(&f).await;
    store_objects(&mut f).await;
    acme_objects(&f).await;
    f
}

/// Rows the API has no cheap way to make: an expired token, a task and an LLM call of acme.
async fn store_objects(f: &mut Fixture) {
    let store = berth_store::Store::open(&f.s.data_dir.path().join("berth.db"))
        .await
        .unwrap();
    let acme = berth_domain::Name::parse("acme").unwrap();
    let expired = "berth_matrix_expired_token_0123456789";
    store
        .create_token(&berth_store::NewToken {
            name: "expired",
            hash: &hex_sha256(expired),
            role: "member",
            tenant: Some(&acme),
            expires_at: Some(&berth_domain::Timestamp::parse("2020-01-01T00:00:00.000Z").unwrap()),
            parent: None,
        })
        .await
        .unwrap();
    f.tokens.push((Caller::Expired, Some(expired.to_owned())));
    // A person of acme known from single sign-on (the provider itself is tested in `sso`).
    let user = store
        .record_login(
            "usr_matrix",
            &berth_store::UserLogin {
                issuer: "https://idp.invalid",
                subject: "alice",
                name: "alice",
                email: None,
                tenant: Some("acme"),
                role: "member",
            },
        )
        .await
        .unwrap();
    f.user = user.id;
    let w = store
        .find_workspace(&acme, &berth_domain::Name::parse("w1").unwrap())
        .await
        .unwrap()
        .unwrap();
    let task = berth_domain::TaskId::generate();
    f.task = task.to_string();
    store
        .insert_task(&berth_store::NewTask {
            id: task.clone(),
            workspace_id: w.id.clone(),
            workspace: w.qualified_name(),
            agent: berth_domain::Agent::Claude,
            model: None,
            dir: "/home/agent".into(),
            worktree: None,
            prompt: "hello".into(),
            virtual_key_hash: hex_sha256("matrix-key"),
            approval: Default::default(),
        })
        .await
        .unwrap();
    store
        .record_llm_calls(&[(
            berth_store::LlmCall {
                workspace_id: w.id.clone(),
                workspace: w.qualified_name(),
                tenant: w.tenant.clone(),
                task_id: Some(task.clone()),
                session_id: None,
                provider: "anthropic".into(),
                model: Some("m".into()),
                path: "/v1/messages".into(),
                status: 200,
                input_tokens: 1,
                output_tokens: 1,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                cost_usd: None,
                cost_nusd: None,
                priced: None,
                latency_ms: 1,
                ttfb_ms: None,
                error: None,
            },
            None,
        )])
        .await
        .unwrap();
    let (_, calls) = f.admin("GET", "/api/v1/usage/calls", Value::Null).await;
    f.call = calls[0]["id"].as_i64().unwrap();
    store.close().await;
}

fn hex_sha256(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for b in sha2_digest(s.as_bytes()) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn sha2_digest(b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b).to_vec()
}

/// acme's template, secret and budget the requests name; a task quota of 0 makes an authorized
/// task create a harmless 409.
async fn acme_objects(f: &Fixture) {
    for (method, path, body) in [
        (
            "PUT",
            "/api/v1/egress/templates/acme/tpl",
            json!({"rules": ["allow example.com"]}),
        ),
        ("PUT", "/api/v1/secrets/acme/KEY", json!({"value": "v"})),
        ("PUT", "/api/v1/tenants/acme/quota", json!({"max_tasks": 0})),
    ] {
        let (st, v) = f.admin(method, path, body).await;
        assert!(st == 200 || st == 201, "{method} {path}: {st} {v}");
    }
    prepare(f, "").await;
}

/// acme's viewer subscribes (to a closed loopback port: a test send is a harmless 200).
async fn viewer_subscription(f: &Fixture) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/notifications/subscriptions", f.s.url))
        .bearer_auth(f.token(Caller::ViewerAcme).unwrap())
        .json(&json!({"channel": "webhook", "url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let v: Value = resp.json().await.unwrap();
    v["subscription"]["id"].as_str().unwrap().to_owned()
}

/// Puts back acme's viewer's subscription `nsub_victim` (the removal route takes it away).
async fn victim_subscription(f: &Fixture) {
    let store = berth_store::Store::open(&f.s.data_dir.path().join("berth.db"))
        .await
        .unwrap();
    if store
        .notify_subscription("nsub_victim")
        .await
        .unwrap()
        .is_none()
    {
        store
            .insert_notify_subscription(&berth_store::NotifySubscription {
                id: "nsub_victim".into(),
                owner: f.viewer_id.clone(),
                owner_name: "ViewerAcme".into(),
                tenant: "acme".into(),
                workspace_id: None,
                workspace: None,
                kinds: vec![],
                channel: "webhook".into(),
                url_shown: "http://127.0.0.1:9/…".into(),
                url_sealed: (vec![0; 12], vec![0; 16]),
                secret_sealed: (vec![0; 12], vec![0; 16]),
                created_at: berth_domain::Timestamp::parse("2026-12-04T00:00:00.000Z").unwrap(),
            })
            .await
            .unwrap();
    }
    store.close().await;
}

/// Re-makes what an authorized call of a destructive route takes away, before each call.
async fn prepare(f: &Fixture, route: &str) {
    if route == "DELETE /notifications/subscriptions/{sub}" {
        victim_subscription(f).await;
    }
    let ws = enc("acme/w1");
    let steps: Vec<(&str, String, Value)> = match route {
        "DELETE /workspaces/{ws}/sessions/{session}" => vec![(
            "POST",
            format!("/api/v1/workspaces/{ws}/sessions"),
            json!({"name": "victim", "cmd": ["sleep", "600"]}),
        )],
        "DELETE /workspaces/{ws}/egress/templates/{name}" => vec![(
            "POST",
            format!("/api/v1/workspaces/{ws}/egress/templates"),
            json!({"template": "tpl"}),
        )],
        "DELETE /secrets/{tenant}/{name}" => {
            vec![(
                "PUT",
                "/api/v1/secrets/acme/VICTIM".into(),
                json!({"value": "v"}),
            )]
        }
        "DELETE /templates/{tenant}/{name}" => vec![(
            "PUT",
            "/api/v1/templates/acme/victim".into(),
            json!({"source": "description = \"removed by the matrix\"\n"}),
        )],
        "DELETE /budgets" | "" => vec![(
            "PUT",
            "/api/v1/budgets".into(),
            json!({"tenant": "acme", "max_tokens": 1000}),
        )],
        _ => Vec::new(),
    };
    for (method, path, body) in steps {
        // A 409 (already there) is as good as made.
        let (st, v) = f.admin(method, &path, body).await;
        assert!(st < 300 || st == 409, "prepare {method} {path}: {st} {v}");
    }
}

/// One call; WebSocket routes through a real handshake (101 = through the check).
async fn call(f: &Fixture, e: &Entry, token: Option<&str>) -> (u16, String, String) {
    let path = format!("/api/v1{}", f.fill(e.4));
    if e.0 == "GET" && (path.ends_with("/ws") || path.ends_with("/attach")) {
        return ws_call(f, &path, token).await;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut req = http.request(e.0.parse().unwrap(), format!("{}{path}", f.s.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Body::Json(b) = e.5 {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let sse = resp.headers().get("content-type").is_some_and(|v| {
        v.to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    });
    // An SSE stream does not end: its status is the answer.
    let text = if sse {
        String::new()
    } else {
        resp.text().await.unwrap_or_default()
    };
    let code = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code, text)
}

async fn ws_call(f: &Fixture, path: &str, token: Option<&str>) -> (u16, String, String) {
    let url = format!("{}{path}", f.s.url.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, resp)) => {
            let _ = ws.close(None).await;
            (resp.status().as_u16(), String::new(), String::new())
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let code = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (resp.status().as_u16(), code, body)
        }
        Err(e) => panic!("{path}: {e}"),
    }
}

/// Routes that change acme/w1's state for good run last.
fn order(e: &Entry) -> u8 {
    match (e.0, e.1) {
        ("POST", "/workspaces/{ws}/stop") => 2,
        ("DELETE", "/workspaces/{ws}") => 1,
        _ => 0,
    }
}

#[tokio::test]
async fn every_route_admits_exactly_the_roles_and_tenants_it_should() {
    let f = setup().await;
    let mut entries: Vec<&Entry> = EXPECTED.iter().collect();
    entries.sort_by_key(|e| order(e));
    let mut observed = Vec::new();
    let mut leaks = Vec::new();
    for e in entries {
        let route = format!("{} {}", e.0, e.1);
        for caller in CALLERS {
            prepare(&f, &route).await;
            let (status, code, text) = call(&f, e, f.token(caller)).await;
            let got = classify(status, &code);
            eprintln!("{route} {caller:?}: {status} {code}");
            // Lists a globex caller reads must not show acme's objects.
            if caller == Caller::OwnerGlobex
                && e.3 == Target::Global
                && status == 200
                && e.0 == "GET"
            {
                let acme_named = text.contains("\"acme\"") || text.contains("acme/");
                if acme_named && e.1 != "/openapi.json" {
                    leaks.push(format!("{route}: {text}"));
                }
            }
            observed.push((route.clone(), caller, got, status));
        }
    }
    let m = mismatches(&observed, EXPECTED);
    assert!(
        m.is_empty(),
        "{} mismatches:\n{}\nlog:\n{}",
        m.len(),
        m.join("\n"),
        f.s.log()
    );
    assert!(
        leaks.is_empty(),
        "globex's owner saw acme's objects:\n{}",
        leaks.join("\n")
    );
}

/// Runs the CLI against `s` with `token`.
fn cli_as(s: &TestServer, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .env("BERTH_URL", &s.url)
        .env("BERTH_TOKEN", token)
        .env("HOME", s.data_dir.path())
        .env("XDG_CONFIG_HOME", s.data_dir.path().join("config"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_tokens_whoami_tenants_and_quotas() {
    let s = TestServer::start(bin()).await;
    let admin = s.token.clone();
    let (code, out, err) = cli_as(
        &s,
        &admin,
        &[
            "token",
            "create",
            "--name",
            "alice",
            "--tenant",
            "acme",
            "--role",
            "member",
            "--expires",
            "30d",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let alice = out.trim().to_owned();
    assert!(
        alice.starts_with("berth_") && !out.contains(' '),
        "the token alone on stdout: {out}"
    );
    assert!(err.contains("shown only now"), "{err}");
    let (code, out, _) = cli_as(&s, &alice, &["whoami"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("alice") && out.contains("role member") && out.contains("tenant acme"),
        "{out}"
    );
    assert!(out.contains("expires 20"), "{out}");
    // A member may not make tokens: one readable line, exit 1.
    let (code, out, err) = cli_as(
        &s,
        &alice,
        &[
            "token", "create", "--name", "x", "--tenant", "acme", "--role", "viewer",
        ],
    );
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("forbidden") || err.contains("owner"), "{err}");
    // Quotas: set by the admin, shown to the tenant, enforced on create with the numbers.
    let (code, _, err) = cli_as(
        &s,
        &admin,
        &[
            "tenant",
            "quota",
            "acme",
            "--max-workspaces",
            "0",
            "--memory",
            "8g",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli_as(&s, &alice, &["tenant", "quota", "acme"]);
    assert_eq!(code, 0);
    assert!(out.contains("0 of 0") && out.contains("of 8g"), "{out}");
    let (code, out, _) = cli_as(&s, &admin, &["tenant", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("acme"), "{out}");
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/workspaces",
            Some(json!({"name": "web", "tenant": "acme"})),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "quota_exceeded");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("quota is 0: 0 in use, 1 requested"), "{msg}");
    // Revoked: the CLI says so in one line.
    let (_, list, _) = cli_as(&s, &admin, &["token", "list", "--json"]);
    let list: Value = serde_json::from_str(&list).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "alice")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out, _) = cli_as(&s, &admin, &["token", "revoke", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("revoked"), "{out}");
    let (code, _, err) = cli_as(&s, &alice, &["whoami"]);
    assert_eq!(code, 1);
    assert!(err.contains("revoked"), "{err}");
    // The audit log names who did it.
    let (_, out, _) = cli_as(&s, &admin, &["audit", "--limit", "5"]);
    assert!(
        out.contains("(admin)") && out.contains("token.revoke"),
        "{out}"
    );
}
