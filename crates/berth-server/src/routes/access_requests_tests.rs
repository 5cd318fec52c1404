//! Deciding access requests through the real router: the bodies a decision refuses, what each
//! scope of an approval grants (an expiring grant, a rule of the workspace's own, a rule in a
//! tenant's egress template), and that a request is decided once.

use berth_domain::WorkspaceId;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::test_support::TOKEN;

crate::routes::test_harness::route_harness!();

impl H {
    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.call_json(Some(TOKEN), method, path, &body).await
    }

    /// A new open request of `ws` for egress to `host:443`, asked for through the workspace's
    /// own socket (`berth request egress HOST`).
    async fn asked(&self, ws: &WorkspaceId, host: &str) -> String {
        let (mut ours, theirs) = tokio::io::duplex(4096);
        let serve = crate::access_requests::serve_connection(
            theirs,
            ws.clone(),
            self.state.store.clone(),
            Default::default(),
        );
        let ask = async {
            let line = format!("{}\n", json!({"kind": "egress", "host": host}));
            ours.write_all(line.as_bytes()).await.unwrap();
            let mut answer = String::new();
            ours.read_to_string(&mut answer).await.unwrap();
            answer
        };
        let ((), answer) = tokio::join!(serve, ask);
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["recorded"], "created", "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// Decides request `id` of `acme/web` with `body`.
    async fn decide(&self, id: &str, body: Value) -> (u16, Value) {
        let path = format!("/workspaces/acme%2Fweb/access-requests/{id}");
        self.call("POST", &path, body).await
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn bodies_that_do_not_fit_the_decision_are_refused() {
    let h = harness().await;
    let ws = h.workspace_row("acme", "web").await;
    let id = h.asked(&ws, "docs.test").await;
    let long = "x".repeat(berth_store::access::MAX_TEXT + 1);
    for (body, needle) in [
        (json!({"decision": "later"}), "unknown decision"),
        (
            json!({"decision": "deny", "reason": long}),
            "the reason is longer than",
        ),
        (
            json!({"decision": "deny", "scope": "always"}),
            "go with approve only",
        ),
        (
            json!({"decision": "approve", "scope": "once", "template": "ci"}),
            "template goes with scope template only",
        ),
        (
            json!({"decision": "approve", "ttl_seconds": 0}),
            "ttl_seconds must be 1 to",
        ),
        (
            json!({"decision": "approve", "scope": "always", "ttl_seconds": 5}),
            "ttl_seconds goes with scope once, template with scope template",
        ),
        (
            json!({"decision": "approve", "scope": "template", "ttl_seconds": 5}),
            "ttl_seconds goes with scope once",
        ),
        (
            json!({"decision": "approve", "scope": "template"}),
            "scope template needs a template",
        ),
        (
            json!({"decision": "approve", "scope": "forever"}),
            "unknown scope",
        ),
    ] {
        let (st, v) = h.decide(&id, body.clone()).await;
        assert_eq!((st, code(&v)), (400, "invalid_argument"), "{body}: {v}");
        assert!(message(&v).contains(needle), "{body}: {v}");
    }
    let (st, v) = h
        .decide(
            &id,
            json!({"decision": "approve", "scope": "template", "template": "nope"}),
        )
        .await;
    assert_eq!((st, code(&v)), (404, "not_found"), "{v}");
    // None of it decided anything.
    let (st, v) = h
        .call("GET", "/access-requests?state=open", Value::Null)
        .await;
    assert_eq!((st, v[0]["id"].as_str()), (200, Some(id.as_str())), "{v}");
}

#[tokio::test]
async fn each_scope_grants_its_rule_and_a_request_is_decided_once() {
    let h = harness().await;
    let ws = h.workspace_row("acme", "web").await;

    // once: an expiring grant, nothing stored in the workspace's rules.
    let once = h.asked(&ws, "once.test").await;
    let (st, v) = h
        .decide(&once, json!({"decision": "approve", "ttl_seconds": 60}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["state"].as_str(), v["scope"].as_str()),
        (Some("approved"), Some("once")),
        "{v}"
    );
    assert_eq!(v["granted_rule"], "allow once.test:443", "{v}");
    assert!(v["expires_at"].is_string(), "{v}");
    assert!(
        v["decided_by"].as_str().unwrap().ends_with("(admin)"),
        "{v}"
    );
    let (st, v) = h.decide(&once, json!({"decision": "deny"})).await;
    assert_eq!((st, code(&v)), (409, "invalid_state"), "{v}");
    assert!(
        message(&v).contains("is approved by ") && message(&v).ends_with("nothing to decide"),
        "{v}"
    );

    // always: the rule goes first among the workspace's own.
    let always = h.asked(&ws, "always.test").await;
    let (st, v) = h
        .decide(&always, json!({"decision": "approve", "scope": "always"}))
        .await;
    assert_eq!((st, v["scope"].as_str()), (200, Some("always")), "{v}");
    let (_, rules) = h
        .call("GET", "/workspaces/acme%2Fweb/egress/rules", Value::Null)
        .await;
    assert_eq!(rules["rules"][0], "allow always.test:443", "{rules}");

    // template: the rule is appended to the tenant's template, which the workspace gets.
    let (st, v) = h
        .call(
            "PUT",
            "/egress/templates/acme/ci",
            json!({"description": "CI", "rules": ["allow ci.test:443"]}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let tpl = h.asked(&ws, "pkgs.test").await;
    let (st, v) = h
        .decide(
            &tpl,
            json!({"decision": "approve", "scope": "template", "template": "ci", "reason": "builds"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (
            v["scope"].as_str(),
            v["template"].as_str(),
            v["reason"].as_str()
        ),
        (Some("template"), Some("ci"), Some("builds")),
        "{v}"
    );
    let (_, t) = h
        .call("GET", "/egress/templates/acme/ci", Value::Null)
        .await;
    assert_eq!(
        t["rules"],
        json!(["allow ci.test:443", "allow pkgs.test:443"]),
        "{t}"
    );
    assert_eq!(t["description"], "CI", "{t}");
    assert_eq!(t["used_by"], json!(["acme/web"]), "{t}");

    // deny: recorded with its reason, no rule.
    let no = h.asked(&ws, "no.test").await;
    let (st, v) = h
        .decide(&no, json!({"decision": "deny", "reason": "  "}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (
            v["state"].as_str(),
            v["scope"].as_str(),
            v["reason"].as_str()
        ),
        (Some("denied"), None, None),
        "{v}"
    );
}
