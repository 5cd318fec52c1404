//! berth's MCP server end to end, on both transports: the real `berth mcp` as a child process
//! spoken to over its stdio, and the real server's `/api/v1/mcp` (streamable HTTP); then a real
//! Claude Code on the host (driven by the scripted mock LLM) as the client of each.
//!
//! Checks that the tools act through the API with the token given: a workspace created really
//! exists and is audited under the token's name, a destructive call without `confirm` does
//! nothing, a viewer token's create is the server's 403 as a tool error (not a crash, not a
//! create), and a real Claude Code's `create_workspace` + `run_task` make a workspace and a task
//! that ran, both audited as its token.

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
        "decide_access_request",
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

// ---------------------------------------------------------------------------------------------
// Over HTTP (`/api/v1/mcp`), and a real Claude Code on the host as the MCP client.

/// An MCP session over the server's streamable HTTP endpoint, spoken to with plain HTTP.
struct HttpMcp {
    http: reqwest::Client,
    url: String,
    token: String,
    session: Option<String>,
}

impl HttpMcp {
    fn new(s: &TestServer, token: &str) -> Self {
        Self {
            http: s.http(),
            url: format!("{}/api/v1/mcp", s.url),
            token: token.to_owned(),
            session: None,
        }
    }

    /// One POST: status, headers, body text.
    async fn post(&self, accept: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, String) {
        let mut req = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", accept)
            .json(body);
        if let Some(id) = &self.session {
            req = req
                .header("mcp-session-id", id)
                .header("mcp-protocol-version", "2025-06-18");
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    async fn initialize(&mut self) {
        let (st, h, text) = self
            .post(
                "application/json, text/event-stream",
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                   "clientInfo": {"name": "berth-test", "version": "1"}}}),
            )
            .await;
        assert_eq!(st, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["result"]["protocolVersion"], "2025-06-18", "{v}");
        self.session = Some(h["mcp-session-id"].to_str().unwrap().to_owned());
        let (st, _, text) = self
            .post(
                "application/json, text/event-stream",
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert_eq!((st, text.as_str()), (202, ""));
    }

    /// A tool call answered over SSE (as MCP clients ask for it): (isError, the JSON of its text).
    async fn call(&self, name: &str, args: Value) -> (bool, Value) {
        let (st, h, text) = self
            .post(
                "application/json, text/event-stream",
                &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": name, "arguments": args}}),
            )
            .await;
        assert_eq!(st, 200, "{text}");
        let ct = h["content-type"].to_str().unwrap();
        assert!(ct.starts_with("text/event-stream"), "{ct}: {text}");
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or_else(|| panic!("no event in {text:?}"));
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["id"], 1, "{v}");
        let r = &v["result"];
        let text = r["content"][0]["text"].as_str().unwrap();
        (
            r["isError"].as_bool().unwrap(),
            serde_json::from_str(text).unwrap_or(Value::String(text.to_owned())),
        )
    }
}

/// Over HTTP, a viewer token's session reads but cannot create: the tool answers the server's
/// 403 as an error result, and nothing is created or audited as created. The session is the
/// viewer's alone, and the transport answers as the protocol says (405 for GET, 404 after
/// DELETE).
#[tokio::test]
async fn over_http_a_viewer_session_cannot_create_a_workspace() {
    let s = TestServer::start(bin()).await;
    let viewer = token(
        &s,
        json!({"name": "acme-viewer", "role": "viewer", "tenant": "acme"}),
    )
    .await;
    let member = token(
        &s,
        json!({"name": "acme-member", "role": "member", "tenant": "acme"}),
    )
    .await;
    let mut mcp = HttpMcp::new(&s, &viewer);
    mcp.initialize().await;
    let (st, _, text) = mcp
        .post(
            "application/json",
            &json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}),
        )
        .await;
    assert_eq!(st, 200, "{text}");
    let tools: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        tools["result"]["tools"].as_array().unwrap().len(),
        16,
        "{tools}"
    );

    let (is_err, e) = mcp
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
    assert_eq!(st, 404, "nothing was created");
    let (is_err, listed) = mcp.call("list_workspaces", json!({})).await;
    assert!(!is_err, "{listed}");
    assert_eq!(listed, json!([]));
    let audit = s.get("/api/v1/audit").await;
    assert!(
        !audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "workspace.create"),
        "{audit}"
    );

    // The session is the viewer's: the member's token naming it gets 404.
    let mut stolen = HttpMcp::new(&s, &member);
    stolen.session = mcp.session.clone();
    let (st, _, text) = stolen
        .post(
            "application/json",
            &json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
        )
        .await;
    assert_eq!(st, 404, "{text}");

    // No server stream: GET is 405. DELETE ends the session; then it is unknown.
    let resp = s
        .http()
        .get(&mcp.url)
        .bearer_auth(&viewer)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let resp = s
        .http()
        .delete(&mcp.url)
        .bearer_auth(&viewer)
        .header("mcp-session-id", mcp.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (st, _, text) = mcp
        .post(
            "application/json",
            &json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
        )
        .await;
    assert_eq!(st, 404, "{text}");
}

/// How the real Claude Code reaches berth's MCP server.
enum Transport {
    /// `berth mcp` as a stdio server, with the token in its environment.
    Stdio,
    /// The server's `/api/v1/mcp`, with the token in an `Authorization` header.
    Http,
}

const CLAUDE: &str = "/opt/agent-clis/bin/claude";

/// A real Claude Code on the host, driven by the scripted mock LLM, registers berth's MCP server
/// (`--mcp-config`, only it: `--strict-mcp-config`) and calls `create_workspace` and then
/// `run_task` (waiting for the turn). The workspace and the task exist, the task's agent (a
/// second real Claude Code, inside the workspace, through berth's gateway to the same mock) did
/// its work, and the audit log records both under the token Claude Code was given.
async fn claude_drives_berth(transport: Transport, token_name: &str, role: &str, ws: &str) {
    use berth_test_support::agents::{server_with_llm, wait_turn_over};
    use berth_test_support::mock_llm::{MockLlm, MCP_SCRIPT_MARKER};
    if !std::path::Path::new(CLAUDE).exists() {
        eprintln!("skipping: {CLAUDE} is not installed");
        return;
    }
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = server_with_llm(
        bin(),
        &mock,
        vec![("BERTH_DEFAULT_PIDS".into(), "2048".into())],
    )
    .await;
    let mut body = json!({"name": token_name, "role": role});
    if role != "admin" {
        body["tenant"] = json!("acme");
    }
    let agent_token = token(&s, body).await;

    let dir = tempfile::tempdir().unwrap();
    for d in ["home", "tmp", "claude", "repo"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let server = match transport {
        Transport::Stdio => json!({
            "type": "stdio", "command": bin(), "args": ["mcp"],
            "env": {"BERTH_URL": s.url, "BERTH_TOKEN": agent_token,
                    "XDG_CONFIG_HOME": dir.path().join("home/.config")},
        }),
        Transport::Http => json!({
            "type": "http", "url": format!("{}/api/v1/mcp", s.url),
            "headers": {"Authorization": format!("Bearer {agent_token}")},
        }),
    };
    let config = dir.path().join("mcp.json");
    std::fs::write(
        &config,
        json!({"mcpServers": {"berth": server}}).to_string(),
    )
    .unwrap();

    let full = format!("acme/{ws}");
    let steps = json!([
        {"tool": "create_workspace",
         "args": {"name": ws, "tenant": "acme", "memory": "2g"}},
        {"tool": "run_task",
         "args": {"workspace": full, "agent": "claude", "wait": true, "timeout_seconds": 300,
                  "prompt": "Create hello.txt containing hi, then say DONE."}},
    ]);
    let prompt = format!(
        "Spin up a workspace for the new client and have Claude say hi. {MCP_SCRIPT_MARKER}{steps}"
    );
    let d = |p: &str| dir.path().join(p).display().to_string();
    let run = tokio::process::Command::new(CLAUDE)
        .args([
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
            "--mcp-config",
            &config.display().to_string(),
            "--strict-mcp-config",
            "--",
            &prompt,
        ])
        .env_clear()
        .env("HOME", d("home"))
        .env("TMPDIR", d("tmp"))
        .env("CLAUDE_CONFIG_DIR", d("claude"))
        .env("PATH", "/opt/agent-clis/bin:/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("ANTHROPIC_BASE_URL", mock.url())
        .env("ANTHROPIC_API_KEY", "mock-key-of-the-laptop-agent")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("IS_SANDBOX", "1")
        // The MCP tools are offered up front, not behind ToolSearch (as berth's driver does).
        .env("ENABLE_TOOL_SEARCH", "false")
        .env("MCP_TOOL_TIMEOUT", "600000")
        .current_dir(dir.path().join("repo"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(420), run)
        .await
        .expect("Claude Code finishes within 420 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ctx = || {
        format!(
            "stdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
            s.log()
        )
    };
    assert!(out.status.success(), "{}", ctx());

    // Claude Code connected to berth and offered its tools to the model.
    let init = lines
        .iter()
        .find(|l| l["type"] == "system" && l["subtype"] == "init")
        .unwrap_or_else(|| panic!("no init line\n{}", ctx()));
    let servers = init["mcp_servers"].as_array().cloned().unwrap_or_default();
    assert!(
        servers
            .iter()
            .any(|m| m["name"] == "berth" && m["status"] == "connected"),
        "{init}\n{}",
        ctx()
    );
    // The model called both tools, and neither came back as an error.
    let calls: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["type"] == "assistant")
        .flat_map(|l| {
            l["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|b| b["type"] == "tool_use")
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                b["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = calls.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["mcp__berth__create_workspace", "mcp__berth__run_task"],
        "{}",
        ctx()
    );
    let results: Vec<Value> = lines
        .iter()
        .filter(|l| l["type"] == "user")
        .flat_map(|l| {
            l["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|b| b["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 2, "{}", ctx());
    for r in &results {
        assert_ne!(r["is_error"], true, "{r}\n{}", ctx());
    }
    let task_result = results
        .iter()
        .find(|r| r["tool_use_id"] == calls[1].1.as_str())
        .unwrap()
        .to_string();
    assert!(task_result.contains("completed"), "{task_result}");
    let result = lines.iter().find(|l| l["type"] == "result").unwrap();
    assert_eq!(result["result"], "DONE", "{result}");

    // The workspace and the task exist, and the task's agent did its work.
    let w = s.get(&format!("/api/v1/workspaces/{}", enc(&full))).await;
    assert_eq!(w["state"], "running", "{w}");
    let tasks = s
        .get(&format!("/api/v1/tasks?workspace={}", enc(&full)))
        .await;
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task_id = tasks[0]["id"].as_str().unwrap().to_owned();
    let t = wait_turn_over(&s, &task_id, Duration::from_secs(30)).await;
    assert_eq!(t["state"], "completed", "{t}");
    let hello = s.exec(&full, &["cat", "/home/agent/hello.txt"]).await;
    assert_eq!(hello["stdout"], "hi\n", "{hello}");

    // Both were audited under the token Claude Code was given.
    let audit = s.get("/api/v1/audit?limit=500").await;
    let row = |action: &str, target: &dyn Fn(&str) -> bool| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action && target(e["target"].as_str().unwrap_or_default()))
            .unwrap_or_else(|| panic!("no {action} in {audit}"))
            .clone()
    };
    let created = row("workspace.create", &|t| t == full);
    let started = row("task.create", &|t| t.ends_with(&task_id));
    for r in [&created, &started] {
        assert_eq!(r["actor_name"], token_name, "{r}");
        assert_eq!(r["actor_role"], role, "{r}");
        assert_eq!(r["result"], "ok", "{r}");
    }
}

#[tokio::test]
async fn a_real_claude_code_runs_berth_through_berth_mcp_on_stdio() {
    claude_drives_berth(Transport::Stdio, "admin-agent", "admin", "client-b").await;
}

#[tokio::test]
async fn a_real_claude_code_runs_berth_over_http_with_a_member_token() {
    claude_drives_berth(Transport::Http, "laptop-agent", "member", "client-c").await;
}
