//! `berth egress …` rules, templates and attachments, and `workspace create --egress-template`,
//! against a fake server.

use std::sync::{Arc, Mutex};

use axum::extract::{Path as AxPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{authorized, err, run_full, Outcome, TOKEN};

// ---------------------------------------------------------------------------------------------
// A fake server

#[derive(Clone, Default)]
struct Seen {
    /// (method path?query, body) of each mutating call.
    calls: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Seen {
    fn record(&self, what: String, body: Value) {
        self.calls.lock().unwrap().push((what, body));
    }
    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

fn template(name: &str, tenant: Option<&str>, rules: &[&str], used_by: &[&str]) -> Value {
    let mut t = json!({
        "name": name, "builtin": tenant.is_none(), "rules": rules, "used_by": used_by,
        "description": format!("{name} hosts"),
    });
    if let Some(tenant) = tenant {
        t["tenant"] = json!(tenant);
        t["updated_at"] = json!("2024-05-01T12:00:00Z");
    }
    t
}

fn all_templates() -> Value {
    json!([
        template(
            "npm",
            None,
            &["allow registry.npmjs.org:443"],
            &["acme/web"]
        ),
        template(
            "ci",
            Some("acme"),
            &["allow ci.test:443", "deny *"],
            &["acme/web"]
        ),
        template("ci", Some("globex"), &[], &[]),
    ])
}

fn effective() -> Value {
    json!({
        "templates": ["ci", "npm"],
        "rules": [
            {"source": "workspace", "index": 0, "rule": "deny ci.test", "label": "deny ci.test"},
            {"source": "workspace", "index": 1, "rule": "allow a.test", "label": "allow a.test"},
            {"source": "template", "template": "ci", "index": 0, "rule": "allow ci.test:443",
             "label": "template ci: allow ci.test:443"},
            {"source": "template", "template": "npm", "index": 0,
             "rule": "allow registry.npmjs.org:443", "label": "template npm: allow registry.npmjs.org:443"},
        ]
    })
}

fn app(seen: Seen) -> Router {
    template_routes().merge(workspace_routes()).with_state(seen)
}

/// `/egress/templates…`: the tenants' and built-in templates.
fn template_routes() -> Router<Seen> {
    Router::new()
        .route(
            "/api/v1/egress/templates",
            get(|h: HeaderMap| async move {
                if !authorized(&h) {
                    return err(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token");
                }
                Json(all_templates()).into_response()
            }),
        )
        .route(
            "/api/v1/egress/templates/{tenant}/{name}",
            get(|AxPath((t, n)): AxPath<(String, String)>| async move {
                match (t.as_str(), n.as_str()) {
                    ("acme", "ci") => Json(all_templates()[1].clone()).into_response(),
                    _ => err(StatusCode::NOT_FOUND, "not_found", "no such template"),
                }
            })
            .put(
                |State(seen): State<Seen>,
                 AxPath((t, n)): AxPath<(String, String)>,
                 Json(b): Json<Value>| async move {
                    seen.record(format!("PUT {t}/{n}"), b.clone());
                    let rules: Vec<&str> = b["rules"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_str().unwrap())
                        .collect();
                    Json(template(&n, Some(&t), &rules, &["acme/web"]))
                },
            )
            .delete(
                |State(seen): State<Seen>,
                 AxPath((t, n)): AxPath<(String, String)>,
                 RawQuery(q): RawQuery| async move {
                    let q = q.unwrap_or_default();
                    seen.record(format!("DELETE {t}/{n}?{q}"), Value::Null);
                    if q.contains("force=true") {
                        StatusCode::NO_CONTENT.into_response()
                    } else {
                        err(
                            StatusCode::CONFLICT,
                            "in_use",
                            &format!(
                                "egress template {t}/{n} is attached to acme/web: detach it first"
                            ),
                        )
                    }
                },
            ),
        )
}

/// `/workspaces…`: a workspace's rules and templates, and creating one.
fn workspace_routes() -> Router<Seen> {
    Router::new()
        .route(
            "/api/v1/workspaces/{ws}/egress/effective",
            get(|AxPath(ws): AxPath<String>| async move {
                if ws == "acme/web" {
                    Json(effective()).into_response()
                } else {
                    err(StatusCode::NOT_FOUND, "not_found", &format!("workspace {ws} not found"))
                }
            }),
        )
        .route(
            "/api/v1/workspaces/{ws}/egress/rules",
            post(
                |State(seen): State<Seen>, AxPath(ws): AxPath<String>, Json(b): Json<Value>| async move {
                    seen.record(format!("POST {ws} rules"), b);
                    Json(json!({"rules": ["deny ci.test", "allow a.test"]}))
                },
            ),
        )
        .route(
            "/api/v1/workspaces/{ws}/egress/templates",
            post(
                |State(seen): State<Seen>, AxPath(ws): AxPath<String>, Json(b): Json<Value>| async move {
                    seen.record(format!("POST {ws} templates"), b.clone());
                    if b["template"] == "nope" {
                        return err(
                            StatusCode::NOT_FOUND,
                            "not_found",
                            "tenant acme has no egress template nope",
                        );
                    }
                    Json(json!([])).into_response()
                },
            ),
        )
        .route(
            "/api/v1/workspaces/{ws}/egress/templates/{name}",
            delete(
                |State(seen): State<Seen>, AxPath((ws, n)): AxPath<(String, String)>| async move {
                    seen.record(format!("DELETE {ws} templates/{n}"), Value::Null);
                    Json(json!([]))
                },
            ),
        )
        .route(
            "/api/v1/workspaces",
            post(|State(seen): State<Seen>, Json(b): Json<Value>| async move {
                seen.record("POST workspaces".into(), b);
                (
                    StatusCode::CREATED,
                    Json(super::workspace_json("ws_1", "acme", "web", "running")),
                )
            }),
        )
}

async fn serve(seen: Seen) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app(seen)).await;
    });
    format!("http://{addr}")
}

async fn run(url: &str, args: &[&str]) -> Outcome {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--url", url, "--token", TOKEN]);
    run_full(&all, b"", None, Arc::default()).await
}

fn ok(o: &Outcome) {
    assert_eq!(o.code, 0, "stderr: {}\nstdout: {}", o.err, o.out);
}

// ---------------------------------------------------------------------------------------------
// Commands

#[tokio::test]
async fn rules_show_own_rules_numbered_then_template_rules_by_source() {
    let url = serve(Seen::default()).await;
    let o = run(&url, &["egress", "rules", "acme/web"]).await;
    ok(&o);
    assert_eq!(
        o.out,
        "#  RULE                          SOURCE\n\
         0  deny ci.test                  workspace\n\
         1  allow a.test                  workspace\n\
         -  allow ci.test:443             template ci\n\
         -  allow registry.npmjs.org:443  template npm\n\
         (first match wins; anything else is denied)\n"
    );
    let o = run(&url, &["egress", "rules", "acme/web", "--json"]).await;
    ok(&o);
    let v: Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(v, effective());

    let o = run(&url, &["egress", "rules", "acme/nope"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.err, "error: workspace acme/nope not found (not_found)\n");
}

#[tokio::test]
async fn attach_detach_and_allow_print_the_rules_in_force() {
    let seen = Seen::default();
    let url = serve(seen.clone()).await;
    let o = run(&url, &["egress", "attach", "acme/web", "npm"]).await;
    ok(&o);
    assert!(o.out.contains("template npm"), "{}", o.out);
    let o = run(&url, &["egress", "detach", "acme/web", "ci"]).await;
    ok(&o);
    let o = run(&url, &["egress", "allow", "acme/web", "a.test"]).await;
    ok(&o);
    assert!(o.out.starts_with("#  RULE"), "{}", o.out);
    assert_eq!(
        seen.calls(),
        [
            (
                "POST acme/web templates".to_owned(),
                json!({"template": "npm"})
            ),
            ("DELETE acme/web templates/ci".to_owned(), Value::Null),
            (
                "POST acme/web rules".to_owned(),
                json!({"rule": "allow a.test"})
            ),
        ]
    );
    let o = run(&url, &["egress", "attach", "acme/web", "nope"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(
        o.err,
        "error: tenant acme has no egress template nope (not_found)\n"
    );
}

#[tokio::test]
async fn template_list_and_show() {
    let url = serve(Seen::default()).await;
    let o = run(&url, &["egress", "template", "list"]).await;
    ok(&o);
    assert_eq!(
        o.out,
        "NAME  TENANT      RULES  USED BY   DESCRIPTION\n\
         npm   (built-in)  1      acme/web  npm hosts\n\
         ci    acme        2      acme/web  ci hosts\n\
         ci    globex      0      -         ci hosts\n"
    );

    // A bare name: the built-in; one in several tenants needs --tenant.
    let o = run(&url, &["egress", "template", "show", "npm"]).await;
    ok(&o);
    assert!(o.out.contains("tenant:      (built-in)\n"), "{}", o.out);
    assert!(
        o.out
            .ends_with("rules:\n  0  allow registry.npmjs.org:443\n"),
        "{}",
        o.out
    );
    let o = run(&url, &["egress", "template", "show", "ci"]).await;
    assert_eq!(o.code, 1);
    assert_eq!(
        o.err,
        "error: egress template ci exists in several tenants (acme, globex): use --tenant\n"
    );
    let o = run(&url, &["egress", "template", "show", "zzz"]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.err.starts_with("error: no egress template zzz"),
        "{}",
        o.err
    );
    let o = run(
        &url,
        &["egress", "template", "show", "ci", "--tenant", "acme"],
    )
    .await;
    ok(&o);
    assert!(o.out.contains("used by:     acme/web\n"), "{}", o.out);
    assert!(o.out.contains("  1  deny *\n"), "{}", o.out);
}

#[tokio::test]
async fn template_set_and_rm() {
    let seen = Seen::default();
    let url = serve(seen.clone()).await;
    // set: bare hosts mean `allow HOST`; the description is sent only when given.
    let o = run(
        &url,
        &[
            "egress",
            "template",
            "set",
            "--tenant",
            "acme",
            "ci",
            "allow ci.test:443",
            "b.test",
        ],
    )
    .await;
    ok(&o);
    assert_eq!(
        o.out,
        "egress template acme/ci set: 2 rules, applied to acme/web\n"
    );

    // rm: refused while attached (one line, exit 1), then forced.
    let o = run(
        &url,
        &["egress", "template", "rm", "--tenant", "acme", "ci"],
    )
    .await;
    assert_eq!(o.code, 1);
    assert_eq!(
        o.err,
        "error: egress template acme/ci is attached to acme/web: detach it first (in_use)\n"
    );
    let o = run(
        &url,
        &[
            "egress", "template", "rm", "--tenant", "acme", "ci", "--force",
        ],
    )
    .await;
    ok(&o);
    assert_eq!(o.out, "egress template acme/ci removed\n");
    assert_eq!(
        seen.calls(),
        [
            (
                "PUT acme/ci".to_owned(),
                json!({"rules": ["allow ci.test:443", "allow b.test"]})
            ),
            ("DELETE acme/ci?force=false".to_owned(), Value::Null),
            ("DELETE acme/ci?force=true".to_owned(), Value::Null),
        ]
    );
}

#[tokio::test]
async fn workspace_create_sends_the_templates_in_order() {
    let seen = Seen::default();
    let url = serve(seen.clone()).await;
    let o = run(
        &url,
        &[
            "workspace",
            "create",
            "acme/web",
            "--allow",
            "a.test",
            "--egress-template",
            "ci",
            "--egress-template",
            "npm",
        ],
    )
    .await;
    ok(&o);
    let calls = seen.calls();
    assert_eq!(calls[0].0, "POST workspaces");
    assert_eq!(calls[0].1["egress_templates"], json!(["ci", "npm"]));
    assert_eq!(calls[0].1["egress"], json!(["allow a.test"]));
    // Without the flag the field is not sent at all.
    let o = run(&url, &["workspace", "create", "acme/web"]).await;
    ok(&o);
    assert!(seen.calls()[1].1.get("egress_templates").is_none());
}
