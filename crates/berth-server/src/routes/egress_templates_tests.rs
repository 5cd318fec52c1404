//! Egress templates through the real router: auth, validation and error codes, built-in
//! reservation, attaching, and live policy changes in the (in-process) egress proxy.

use berth_domain::WorkspaceId;
use berth_egress::{Attempt, Policy};
use serde_json::{json, Value};

use crate::test_support::{call_router, TOKEN};

crate::routes::test_harness::route_harness!();

impl H {
    async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        call_router(&self.app, token, method, path, body).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_json(Some(TOKEN), method, path, &body.unwrap_or_default())
            .await
    }

    /// A workspace row (no container: attaching needs none).
    async fn workspace(&self, tenant: &str, name: &str) -> WorkspaceId {
        self.workspace_row(tenant, name).await
    }

    /// Plays a running workspace: its policy is in force in the proxy.
    async fn run(&self, id: &WorkspaceId) {
        let e = &self.state.egress;
        e.set_policy(id, &[]).unwrap();
        crate::egress::refresh(&self.state, std::slice::from_ref(id)).await;
    }

    fn policy(&self, id: &WorkspaceId) -> Option<Policy> {
        self.state.egress.policy(id)
    }

    async fn audit_results(&self, action: &str) -> Vec<(String, String)> {
        self.state
            .store
            .list_audit(1000, None, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.record.action == action)
            .map(|e| (e.record.target, e.record.result))
            .collect()
    }
}

/// The label of the rule that decides a CONNECT to host:port, and whether it allows.
fn decide(p: &Policy, host: &str, port: u16) -> (bool, Option<String>) {
    let d = p.decide(&Attempt {
        host: host.into(),
        port,
        method: None,
        path: None,
    });
    (d.allow, p.rule_label(d.rule))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn every_template_route_needs_a_token() {
    let h = harness().await;
    let body = json!({"tenant": "acme", "name": "ci"}).to_string();
    for (method, path) in [
        ("GET", "/egress/templates"),
        ("POST", "/egress/templates"),
        ("GET", "/egress/templates/acme/ci"),
        ("PUT", "/egress/templates/acme/ci"),
        ("DELETE", "/egress/templates/acme/ci"),
        ("GET", "/workspaces/acme%2Fweb/egress/templates"),
        ("POST", "/workspaces/acme%2Fweb/egress/templates"),
        ("DELETE", "/workspaces/acme%2Fweb/egress/templates/ci"),
        ("GET", "/workspaces/acme%2Fweb/egress/effective"),
    ] {
        for token in [None, Some("berth_not_a_known_token_at_all")] {
            let (st, v) = h.call_as(token, method, path, Some(&body)).await;
            assert_eq!((st, code(&v)), (401, "unauthorized"), "{method} {path}");
        }
    }
    assert!(h
        .state
        .store
        .list_egress_templates(None)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn builtins_are_listed_usable_and_reserved() {
    let h = harness().await;
    let (st, v) = h.call("GET", "/egress/templates", None).await;
    assert_eq!(st, 200, "{v}");
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["crates", "debian", "github", "npm", "pypi"]);
    let npm = &v[3];
    assert_eq!(npm["builtin"], true);
    assert!(npm.get("tenant").is_none(), "{npm}");
    assert_eq!(npm["rules"], json!(["allow registry.npmjs.org:443"]));

    // Any tenant sees it under its own path.
    let (st, v) = h.call("GET", "/egress/templates/acme/pypi", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["rules"],
        json!(["allow pypi.org:443", "allow files.pythonhosted.org:443"])
    );

    // Its name is reserved: no create, replace or removal.
    let (st, v) = h
        .call(
            "POST",
            "/egress/templates",
            Some(json!({"tenant": "acme", "name": "npm", "rules": ["allow evil.test"]})),
        )
        .await;
    assert_eq!((st, code(&v)), (409, "conflict"), "{v}");
    assert!(
        message(&v).contains("npm is a built-in egress template"),
        "{v}"
    );
    let (st, v) = h
        .call(
            "PUT",
            "/egress/templates/acme/npm",
            Some(json!({"rules": ["allow evil.test"]})),
        )
        .await;
    assert_eq!((st, code(&v)), (409, "conflict"), "{v}");
    let (st, v) = h.call("DELETE", "/egress/templates/acme/npm", None).await;
    assert_eq!((st, code(&v)), (409, "conflict"), "{v}");
    assert!(h
        .state
        .store
        .list_egress_templates(None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        h.audit_results("egress_template.create").await,
        [("acme/npm".to_owned(), "conflict".to_owned())]
    );
}

#[tokio::test]
async fn templates_are_validated_created_replaced_and_removed() {
    let h = harness().await;
    // Rules come back canonical.
    let (st, v) = h
        .call(
            "POST",
            "/egress/templates",
            Some(json!({"tenant": "acme", "name": "ci", "description": "CI",
                        "rules": ["ALLOW Ci.Test:443", "deny *"]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["builtin"], false);
    assert_eq!(v["rules"], json!(["allow ci.test:443", "deny *"]));
    assert_eq!(v["used_by"], json!([]));

    let (st, v) = h
        .call(
            "POST",
            "/egress/templates",
            Some(json!({"tenant": "acme", "name": "ci"})),
        )
        .await;
    assert_eq!((st, code(&v)), (409, "conflict"), "{v}");
    assert!(message(&v).contains("already exists"), "{v}");

    for (body, needle) in [
        (
            json!({"tenant": "acme", "name": "x", "rules": ["permit all"]}),
            "egress rule \"permit all\"",
        ),
        (
            json!({"tenant": "acme", "name": "Bad_Name"}),
            "egress template name",
        ),
        (json!({"tenant": "ACME", "name": "x"}), "tenant"),
        (
            json!({"tenant": "acme", "name": "x", "rulez": []}),
            "unknown field",
        ),
    ] {
        let (st, v) = h.call("POST", "/egress/templates", Some(body)).await;
        assert_eq!((st, code(&v)), (400, "invalid_argument"), "{v}");
        assert!(message(&v).contains(needle), "{v}");
    }
    let (st, v) = h
        .call_as(Some(TOKEN), "POST", "/egress/templates", Some("{not json"))
        .await;
    assert_eq!((st, code(&v)), (400, "invalid_argument"), "{v}");
    assert!(h.audit_results("egress_template.create").await.contains(&(
        "(invalid request)".to_owned(),
        "invalid_argument".to_owned()
    )));

    // PUT creates (201) or replaces (200); the description stays unless given.
    let (st, v) = h
        .call(
            "PUT",
            "/egress/templates/acme/docs",
            Some(json!({"rules": ["allow docs.test"]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = h
        .call(
            "PUT",
            "/egress/templates/acme/ci",
            Some(json!({"rules": ["allow ci2.test"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rules"], json!(["allow ci2.test"]));
    assert_eq!(v["description"], "CI");
    let (st, v) = h
        .call(
            "PUT",
            "/egress/templates/acme/ci",
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!((st, code(&v)), (400, "invalid_argument"), "{v}");

    let (st, v) = h
        .call(
            "PUT",
            "/egress/templates/globex/ci",
            Some(json!({"rules": []})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (_, v) = h.call("GET", "/egress/templates?tenant=acme", None).await;
    let own: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["builtin"] == false)
        .map(|t| (t["tenant"].as_str().unwrap(), t["name"].as_str().unwrap()))
        .collect();
    assert_eq!(own, [("acme", "ci"), ("acme", "docs")]);
    let (_, v) = h.call("GET", "/egress/templates", None).await;
    assert_eq!(v.as_array().unwrap().len(), 5 + 3);
    let (st, v) = h.call("GET", "/egress/templates?tenant=Bad!", None).await;
    assert_eq!((st, code(&v)), (400, "invalid_argument"), "{v}");

    let (st, v) = h.call("GET", "/egress/templates/acme/nope", None).await;
    assert_eq!((st, code(&v)), (404, "not_found"), "{v}");
    assert!(
        message(&v).contains("tenant acme has no egress template nope"),
        "{v}"
    );
    let (st, _) = h.call("DELETE", "/egress/templates/acme/docs", None).await;
    assert_eq!(st, 204);
    let (st, v) = h.call("DELETE", "/egress/templates/acme/docs", None).await;
    assert_eq!((st, code(&v)), (404, "not_found"), "{v}");
    // The other tenant's template of the same name is untouched.
    let (st, _) = h.call("GET", "/egress/templates/globex/ci", None).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn attaching_and_editing_templates_changes_running_policies_at_once() {
    let h = harness().await;
    let web = h.workspace("acme", "web").await;
    let idle = h.workspace("acme", "idle").await;
    let other = h.workspace("globex", "web").await;
    h.run(&web).await;
    h.run(&other).await;
    for (tenant, name, rule) in [
        ("acme", "ci", "allow ci.test:443"),
        ("globex", "theirs", "allow theirs.test:443"),
    ] {
        let (st, v) = h
            .call(
                "PUT",
                &format!("/egress/templates/{tenant}/{name}"),
                Some(json!({ "rules": [rule] })),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    assert_eq!(
        decide(&h.policy(&web).unwrap(), "ci.test", 443),
        (false, None)
    );

    // Attach: the tenant's own template, then a built-in; order is evaluation order.
    let path = "/workspaces/acme%2Fweb/egress/templates";
    let (st, v) = h.call("POST", path, Some(json!({"template": "ci"}))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v[0]["name"], "ci");
    assert_eq!(v[0]["used_by"], json!(["acme/web"]));
    assert_eq!(
        decide(&h.policy(&web).unwrap(), "ci.test", 443),
        (true, Some("template ci: allow ci.test:443".into()))
    );
    let (st, v) = h.call("POST", path, Some(json!({"template": "npm"}))).await;
    assert_eq!(st, 200, "{v}");
    // Again: nothing changes.
    let (st, v) = h.call("POST", path, Some(json!({"template": "ci"}))).await;
    assert_eq!(st, 200, "{v}");
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci", "npm"]);
    assert!(
        decide(&h.policy(&web).unwrap(), "registry.npmjs.org", 443).0,
        "built-in applies"
    );

    // Only the workspace's own tenant's templates (or built-ins), and only existing ones.
    for (body, st_code) in [
        (json!({"template": "theirs"}), (404, "not_found")),
        (json!({"template": "nope"}), (404, "not_found")),
        (json!({"template": "Nope!"}), (400, "invalid_argument")),
        (json!({"name": "ci"}), (400, "invalid_argument")),
    ] {
        let (st, v) = h.call("POST", path, Some(body)).await;
        assert_eq!((st, code(&v)), st_code, "{v}");
    }
    let (st, v) = h
        .call(
            "POST",
            "/workspaces/acme%2Fmissing/egress/templates",
            Some(json!({"template": "ci"})),
        )
        .await;
    assert_eq!((st, code(&v)), (404, "not_found"), "{v}");

    // The workspace's own rules come first: its deny overrides the template's allow.
    let (st, v) = h
        .call(
            "POST",
            "/workspaces/acme%2Fweb/egress/rules",
            Some(json!({"rule": "deny ci.test"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        decide(&h.policy(&web).unwrap(), "ci.test", 443),
        (false, Some("deny ci.test".into()))
    );
    let (st, v) = h
        .call("GET", "/workspaces/acme%2Fweb/egress/effective", None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["templates"], json!(["ci", "npm"]));
    let rows: Vec<(String, Value, u64, String)> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap().to_owned(),
                r["template"].clone(),
                r["index"].as_u64().unwrap(),
                r["label"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("workspace".into(), Value::Null, 0, "deny ci.test".into()),
            (
                "template".into(),
                json!("ci"),
                0,
                "template ci: allow ci.test:443".into()
            ),
            (
                "template".into(),
                json!("npm"),
                0,
                "template npm: allow registry.npmjs.org:443".into()
            ),
        ]
    );
    // …while `rules` keeps showing the workspace's own rules only.
    let (_, v) = h
        .call("GET", "/workspaces/acme%2Fweb/egress/rules", None)
        .await;
    assert_eq!(v, json!({"rules": ["deny ci.test"]}));
    h.call("DELETE", "/workspaces/acme%2Fweb/egress/rules/0", None)
        .await;

    // Editing the template reaches the running workspace at once.
    h.call(
        "POST",
        "/workspaces/acme%2Fidle/egress/templates",
        Some(json!({"template": "ci"})),
    )
    .await;
    let (st, v) = h
        .call(
            "PUT",
            "/egress/templates/acme/ci",
            Some(json!({"rules": ["allow ci2.test:443"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["used_by"], json!(["acme/idle", "acme/web"]));
    let p = h.policy(&web).unwrap();
    assert_eq!(decide(&p, "ci.test", 443), (false, None));
    assert_eq!(
        decide(&p, "ci2.test", 443),
        (true, Some("template ci: allow ci2.test:443".into()))
    );
    // A workspace that is not running loads its policy when it starts.
    assert!(h.policy(&idle).is_none());
    // Another tenant's workspace is not affected by acme's template.
    assert!(!decide(&h.policy(&other).unwrap(), "ci2.test", 443).0);

    // Removing an attached template: refused, naming the workspaces, unless forced.
    let (st, v) = h.call("DELETE", "/egress/templates/acme/ci", None).await;
    assert_eq!((st, code(&v)), (409, "in_use"), "{v}");
    assert!(message(&v).contains("acme/idle, acme/web"), "{v}");
    assert!(decide(&h.policy(&web).unwrap(), "ci2.test", 443).0);
    let (st, v) = h
        .call("DELETE", "/egress/templates/acme/ci?force=true", None)
        .await;
    assert_eq!(st, 204, "{v}");
    assert!(!decide(&h.policy(&web).unwrap(), "ci2.test", 443).0);
    let (_, v) = h.call("GET", path, None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["name"], "npm");
    let detached = h.audit_results("egress.detach_template").await;
    assert!(
        detached.contains(&("acme/web template ci".into(), "ok".into())),
        "{detached:?}"
    );
    assert!(
        detached.contains(&("acme/idle template ci".into(), "ok".into())),
        "{detached:?}"
    );

    // Detach.
    let (st, v) = h
        .call(
            "DELETE",
            "/workspaces/acme%2Fweb/egress/templates/npm",
            None,
        )
        .await;
    assert_eq!((st, v), (200, json!([])));
    assert!(!decide(&h.policy(&web).unwrap(), "registry.npmjs.org", 443).0);
    let (st, v) = h
        .call(
            "DELETE",
            "/workspaces/acme%2Fweb/egress/templates/npm",
            None,
        )
        .await;
    assert_eq!((st, code(&v)), (404, "not_found"), "{v}");
    let attached = h.audit_results("egress.attach_template").await;
    assert!(
        attached.contains(&("acme/web template npm".into(), "ok".into())),
        "{attached:?}"
    );
    assert!(
        attached.contains(&("acme/web template theirs".into(), "not_found".into())),
        "{attached:?}"
    );
}

#[tokio::test]
async fn create_refuses_unknown_templates_before_provisioning() {
    let h = harness().await;
    let (st, v) = h
        .call(
            "POST",
            "/workspaces",
            Some(json!({"name": "web", "tenant": "acme", "egress_templates": ["npm", "nope"]})),
        )
        .await;
    assert_eq!((st, code(&v)), (404, "not_found"), "{v}");
    assert!(
        message(&v).contains("tenant acme has no egress template nope"),
        "{v}"
    );
    for op in ["ensure_volume", "create_container", "start_container"] {
        assert!(h.fake.calls_of(op).is_empty(), "{op} was called");
    }
    assert!(h
        .state
        .store
        .list_workspaces(None)
        .await
        .unwrap()
        .is_empty());
    for templates in [json!(["npm", "npm"]), json!(["Bad Name"])] {
        let (st, v) = h
            .call(
                "POST",
                "/workspaces",
                Some(json!({"name": "web", "tenant": "acme", "egress_templates": templates})),
            )
            .await;
        assert_eq!((st, code(&v)), (400, "invalid_argument"), "{v}");
    }
}

#[test]
fn openapi_documents_the_template_routes() {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap();
    for (path, methods) in [
        ("/api/v1/egress/templates", &["get", "post"][..]),
        (
            "/api/v1/egress/templates/{tenant}/{name}",
            &["get", "put", "delete"][..],
        ),
        (
            "/api/v1/workspaces/{ws}/egress/templates",
            &["get", "post"][..],
        ),
        (
            "/api/v1/workspaces/{ws}/egress/templates/{name}",
            &["delete"][..],
        ),
        ("/api/v1/workspaces/{ws}/egress/effective", &["get"][..]),
    ] {
        for m in methods {
            assert!(doc["paths"][path].get(m).is_some(), "{m} {path}");
        }
    }
    for schema in [
        "EgressTemplate",
        "CreateEgressTemplate",
        "SetEgressTemplate",
        "AttachEgressTemplate",
        "EffectiveEgress",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema}"
        );
    }
}
