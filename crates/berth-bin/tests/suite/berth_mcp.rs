//! `berth mcp` end to end: a real server, the real `berth mcp` as a child process spoken to in
//! MCP JSON-RPC over its stdio, as an agent would. Checks that its tools act through the API
//! with the token it was given: a workspace it creates really exists and is audited under the
//! token's name, a destructive call without `confirm` does nothing, and a viewer token's
//! create is the server's 403 as a tool error (not a crash, not a create).

use std::process::Stdio;
use std::time::Duration;

use berth_test_support::{enc, ensure_image, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::bin;

/// `berth mcp` running with one token, and the next request id.
struct Mcp {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next: u64,
}

impl Mcp {
    fn spawn(s: &TestServer, token: &str) -> Self {
        let mut child = Command::new(bin())
            .arg("mcp")
            .env("BERTH_URL", &s.url)
            .env("BERTH_TOKEN", token)
            .env("HOME", s.data_dir.path())
            .env("XDG_CONFIG_HOME", s.data_dir.path().join("config"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            stdout,
            next: 1,
        }
    }

    async fn send(&mut self, msg: &Value) {
        let mut line = msg.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Sends a request and returns its response (every stdout line must be JSON-RPC).
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(180), self.stdout.next_line())
                .await
                .expect("berth mcp answers within 180 s")
                .unwrap()
                .expect("berth mcp closed its stdout");
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout carries only JSON-RPC, got {line:?}: {e}"));
            assert_eq!(v["jsonrpc"], "2.0", "{v}");
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    async fn initialize(&mut self) -> Value {
        let r = self
            .request(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "berth-test", "version": "1"}}),
            )
            .await;
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        r
    }

    /// Calls a tool: (isError, the JSON in its text content).
    async fn call(&mut self, name: &str, args: Value) -> (bool, Value) {
        let r = self
            .request("tools/call", json!({"name": name, "arguments": args}))
            .await;
        let result = &r["result"];
        let text = result["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no text content: {r}"));
        let v = serde_json::from_str(text).unwrap_or(Value::String(text.to_owned()));
        (result["isError"].as_bool().unwrap(), v)
    }

    /// Closes stdin; the server must exit 0 by itself.
    async fn close(mut self) {
        drop(self.stdin);
        let st = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("berth mcp exits when its stdin closes")
            .unwrap();
        assert!(st.success(), "{st}");
    }
}

/// Creates a token (must succeed) and returns its secret.
async fn token(s: &TestServer, body: Value) -> String {
    let (st, v) = s.call("POST", "/api/v1/tokens", Some(body)).await;
    assert_eq!(st, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_agent_runs_berth_through_mcp_with_its_token() {
    ensure_image().await;
    let s = TestServer::start(bin()).await;
    let admin = token(&s, json!({"name": "admin-agent", "role": "admin"})).await;
    let mut mcp = Mcp::spawn(&s, &admin);

    let init = mcp.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "berth", "{init}");
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    let list = mcp.request("tools/list", json!({})).await;
    let tools = list["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for want in [
        "list_workspaces",
        "create_workspace",
        "start_workspace",
        "stop_workspace",
        "remove_workspace",
        "run_task",
        "task_status",
        "task_events",
        "send_message",
        "task_diff",
        "list_inbox",
        "decide_approval",
        "usage",
        "egress_log",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let create = tools
        .iter()
        .find(|t| t["name"] == "create_workspace")
        .unwrap();
    let required = create["inputSchema"]["required"].as_array().unwrap();
    assert!(required.contains(&json!("name")), "{create}");

    // Create: a real workspace, audited under the MCP server's token.
    let (is_err, w) = mcp
        .call(
            "create_workspace",
            json!({"name": "client-a", "tenant": "acme", "memory": "256m"}),
        )
        .await;
    assert!(!is_err, "{w}");
    assert_eq!(w["state"], "running", "{w}");
    let (is_err, listed) = mcp.call("list_workspaces", json!({"tenant": "acme"})).await;
    assert!(!is_err, "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "client-a"),
        "{listed}"
    );
    let rest = s
        .get(&format!("/api/v1/workspaces/{}", enc("acme/client-a")))
        .await;
    assert_eq!(rest["state"], "running", "{rest}");
    let audit = s.get("/api/v1/audit?target=acme/client-a").await;
    let created = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "workspace.create")
        .unwrap_or_else(|| panic!("no workspace.create in {audit}"));
    assert_eq!(created["actor_name"], "admin-agent", "{created}");
    assert_eq!(created["result"], "ok", "{created}");

    // Remove without confirm: a tool error, and the workspace is still there.
    let (is_err, e) = mcp
        .call("remove_workspace", json!({"workspace": "acme/client-a"}))
        .await;
    assert!(is_err, "{e}");
    assert!(e.to_string().contains("confirm"), "{e}");
    let (is_err, e) = mcp
        .call(
            "remove_workspace",
            json!({"workspace": "acme/client-a", "confirm": false}),
        )
        .await;
    assert!(is_err, "{e}");
    assert_eq!(e["error"]["code"], "confirm_required", "{e}");
    let rest = s
        .get(&format!("/api/v1/workspaces/{}", enc("acme/client-a")))
        .await;
    assert_eq!(rest["state"], "running", "{rest}");

    // A viewer token's create: the server's 403 as a tool error; nothing is created, and the
    // server keeps serving.
    let viewer = token(
        &s,
        json!({"name": "acme-viewer", "role": "viewer", "tenant": "acme"}),
    )
    .await;
    let mut weak = Mcp::spawn(&s, &viewer);
    weak.initialize().await;
    let (is_err, e) = weak
        .call(
            "create_workspace",
            json!({"name": "sneaky", "tenant": "acme"}),
        )
        .await;
    assert!(is_err, "{e}");
    assert_eq!(e["error"]["code"], "forbidden", "{e}");
    assert_eq!(e["error"]["status"], 403, "{e}");
    let (st, _) = s
        .call(
            "GET",
            &format!("/api/v1/workspaces/{}", enc("acme/sneaky")),
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (is_err, listed) = weak.call("list_workspaces", json!({})).await;
    assert!(!is_err, "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    weak.close().await;

    // With confirm, the removal happens.
    let (is_err, r) = mcp
        .call(
            "remove_workspace",
            json!({"workspace": "acme/client-a", "confirm": true}),
        )
        .await;
    assert!(!is_err, "{r}");
    let (st, _) = s
        .call(
            "GET",
            &format!("/api/v1/workspaces/{}", enc("acme/client-a")),
            None,
        )
        .await;
    assert_eq!(st, 404);
    mcp.close().await;
}
