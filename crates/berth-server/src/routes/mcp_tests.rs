//! `/api/v1/mcp` through the real router: the transport (session header, 202, SSE, 405, 401)
//! and the tools acting as the caller's token, role checks and audit included.

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use berth_domain::WorkspaceId;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::test_support::{call_router, TOKEN};

crate::routes::test_harness::route_harness!();

struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {}", self.text))
    }

    /// The tool result of a `tools/call` answer: (isError, the JSON of its text).
    fn tool(&self) -> (bool, Value) {
        let v = self.json();
        let r = &v["result"];
        let text = r["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"));
        (
            r["isError"].as_bool().unwrap(),
            serde_json::from_str(text).unwrap(),
        )
    }
}

impl H {
    async fn send(
        &self,
        method: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri("/api/v1/mcp");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// `initialize` as `token`: the session id.
    async fn initialize(&self, token: &str) -> String {
        let a = self
            .send(
                "POST",
                Some(token),
                &[("accept", "application/json, text/event-stream")],
                Some(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                               "clientInfo": {"name": "t", "version": "1"}}})),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.json()["result"]["protocolVersion"], "2025-06-18");
        a.headers["mcp-session-id"].to_str().unwrap().to_owned()
    }

    /// A `tools/call` in `session` as `token`, answered as JSON.
    async fn call(&self, token: &str, session: &str, name: &str, args: Value) -> Answer {
        self.send(
            "POST",
            Some(token),
            &[
                ("mcp-session-id", session),
                ("mcp-protocol-version", "2025-06-18"),
                ("accept", "application/json"),
            ],
            Some(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                        "params": {"name": name, "arguments": args}})),
        )
        .await
    }

    /// A token of `role` (in `acme` unless admin), made through the API.
    async fn token(&self, name: &str, role: &str) -> String {
        let mut body = json!({"name": name, "role": role});
        if role != "admin" {
            body["tenant"] = json!("acme");
        }
        let (st, v) = call_router(
            &self.app,
            Some(TOKEN),
            "POST",
            "/tokens",
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    /// A stopped workspace `acme/NAME` in the store (no container).
    async fn workspace(&self, name: &str) -> WorkspaceId {
        let id = self.workspace_row("acme", name).await;
        self.state
            .store
            .set_state(&id, berth_domain::WorkspaceState::Stopped, None)
            .await
            .unwrap();
        id
    }
}

#[tokio::test]
async fn the_transport_sessions_notifications_sse_and_methods() {
    let h = harness().await;
    // No token: 401 like every route; a GET (no server stream offered): 405 with Allow.
    let a = h.send("POST", None, &[], Some(json!({}))).await;
    assert_eq!(a.status, 401, "{}", a.text);
    let a = h
        .send("GET", Some(TOKEN), &[("accept", "text/event-stream")], None)
        .await;
    assert_eq!(a.status, 405, "{}", a.text);
    assert_eq!(a.json()["error"]["code"], "method_not_allowed");
    let allow = a.headers["allow"].to_str().unwrap();
    assert!(
        allow.contains("POST") && allow.contains("DELETE"),
        "{allow}"
    );
    // Not JSON: 415 for another media type, 400 for a body that is no JSON-RPC.
    let session = h.initialize(TOKEN).await;
    let a = h
        .send("POST", Some(TOKEN), &[("mcp-session-id", &session)], None)
        .await;
    assert!(
        a.status == 400 || a.status == 415,
        "{} {}",
        a.status,
        a.text
    );
    let a = h
        .send(
            "POST",
            Some(TOKEN),
            &[("mcp-session-id", &session)],
            Some(json!("hi")),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    // Without the session header after initialize: 400; with a made-up one: 404.
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let a = h.send("POST", Some(TOKEN), &[], Some(ping.clone())).await;
    assert_eq!(a.status, 400, "{}", a.text);
    let a = h
        .send(
            "POST",
            Some(TOKEN),
            &[("mcp-session-id", "mcp_0")],
            Some(ping.clone()),
        )
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a = h
        .send(
            "POST",
            Some(TOKEN),
            &[
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "1999-01-01"),
            ],
            Some(ping.clone()),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    // A notification: 202, no body.
    let a = h
        .send(
            "POST",
            Some(TOKEN),
            &[("mcp-session-id", &session)],
            Some(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
        )
        .await;
    assert_eq!((a.status, a.text.as_str()), (202, ""));
    // A tool call with `Accept: text/event-stream`: an SSE stream of one `message` event.
    let a = h
        .send(
            "POST",
            Some(TOKEN),
            &[
                ("mcp-session-id", &session),
                ("accept", "application/json, text/event-stream"),
            ],
            Some(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                        "params": {"name": "list_workspaces", "arguments": {}}})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data: Vec<&str> = a
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.len(), 1, "{}", a.text);
    assert!(a.text.contains("event: message"), "{}", a.text);
    let v: Value = serde_json::from_str(data[0]).unwrap();
    assert_eq!(
        (v["id"].clone(), v["result"]["isError"].clone()),
        (json!(5), json!(false))
    );
    // A ping asks no tool: plain JSON even when SSE is accepted.
    let a = h
        .send(
            "POST",
            Some(TOKEN),
            &[
                ("mcp-session-id", &session),
                ("accept", "application/json, text/event-stream"),
            ],
            Some(ping),
        )
        .await;
    assert_eq!(a.json()["result"], json!({}), "{}", a.text);
    // DELETE ends it; then it is unknown.
    let a = h
        .send("DELETE", Some(TOKEN), &[("mcp-session-id", &session)], None)
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let a = h
        .send("DELETE", Some(TOKEN), &[("mcp-session-id", &session)], None)
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
}

#[tokio::test]
async fn tools_do_what_the_callers_token_allows_and_are_audited_as_it() {
    let h = harness().await;
    h.workspace("web").await;
    h.workspace("old").await;
    let viewer = h.token("acme-viewer", "viewer").await;
    let member = h.token("acme-member", "member").await;
    let owner = h.token("acme-owner", "owner").await;

    // A viewer reads, and cannot create: the server's 403 as a tool error, nothing created.
    let vs = h.initialize(&viewer).await;
    let (err, listed) = h
        .call(&viewer, &vs, "list_workspaces", json!({}))
        .await
        .tool();
    assert!(!err, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let (err, e) = h
        .call(
            &viewer,
            &vs,
            "create_workspace",
            json!({"name": "sneaky", "tenant": "acme"}),
        )
        .await
        .tool();
    assert!(err, "{e}");
    assert_eq!(
        (e["error"]["code"].clone(), e["error"]["status"].clone()),
        (json!("forbidden"), json!(403))
    );
    let (st, _) = call_router(
        &h.app,
        Some(TOKEN),
        "GET",
        "/workspaces/acme%2Fsneaky",
        None,
    )
    .await;
    assert_eq!(st, 404);

    // Another token cannot use the viewer's session.
    let a = h.call(&member, &vs, "list_workspaces", json!({})).await;
    assert_eq!(a.status, 404, "{}", a.text);

    // A member may not remove (owners may); the owner's removal happens, audited as the owner.
    let ms = h.initialize(&member).await;
    let (err, e) = h
        .call(
            &member,
            &ms,
            "remove_workspace",
            json!({"workspace": "acme/old", "confirm": true}),
        )
        .await
        .tool();
    assert!(err, "{e}");
    assert_eq!(e["error"]["code"], "forbidden", "{e}");
    let os = h.initialize(&owner).await;
    let (err, r) = h
        .call(
            &owner,
            &os,
            "remove_workspace",
            json!({"workspace": "acme/old", "confirm": true}),
        )
        .await
        .tool();
    assert!(!err, "{r}");
    let (st, _) = call_router(&h.app, Some(TOKEN), "GET", "/workspaces/acme%2Fold", None).await;
    assert_eq!(st, 404);
    let (_, audit) = call_router(&h.app, Some(TOKEN), "GET", "/audit?target=acme/old", None).await;
    let row = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "workspace.remove")
        .unwrap_or_else(|| panic!("{audit}"))
        .clone();
    assert_eq!(
        (
            row["actor_name"].clone(),
            row["actor_role"].clone(),
            row["result"].clone()
        ),
        (json!("acme-owner"), json!("owner"), json!("ok")),
        "{row}"
    );

    // A revoked token's session stops working at once: every request authenticates again.
    let (_, tokens) = call_router(&h.app, Some(TOKEN), "GET", "/tokens", None).await;
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acme-owner")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _) = call_router(
        &h.app,
        Some(TOKEN),
        "DELETE",
        &format!("/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let a = h.call(&owner, &os, "list_workspaces", json!({})).await;
    assert_eq!(a.status, 401, "{}", a.text);
}
