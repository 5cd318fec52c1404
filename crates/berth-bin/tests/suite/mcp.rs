//! MCP reaches every agent: one workspace declares a real stdio MCP server (the Node.js notes
//! server of `berth_test_support::mcp_notes`, running inside the workspace), and each of the four
//! real agent CLIs, driven by the scripted mock LLM's MCP marker, calls its tool in a task; the
//! server's own record inside the workspace proves each call arrived with its arguments. An
//! interactive Claude Code session started with `berth session new --agent claude` reaches it
//! too. A workspace without the declaration is the control: the same prompt finds no MCP tool
//! and nothing is recorded (so the checks can fail).

use std::time::Duration;

use berth_test_support::agents::{server_with_llm, wait_turn_over};
use berth_test_support::mcp_notes;
use berth_test_support::mock_llm::{MockLlm, Script, MCP_MARKER, MCP_MISSING, MCP_TOOL_SUFFIX};
use berth_test_support::{ensure_image, eventually, TestServer};
use serde_json::{json, Value};

use super::agent_sessions::{ready_marker, Term};
use crate::bin;

const TURN: Duration = Duration::from_secs(240);
const SERVER_JS: &str = "/home/agent/mcp-notes-server.js";
const NOTES: &str = "/home/agent/mcp-notes.jsonl";
/// Stands where a secret's placeholder would: written into the agents' configs as given.
const TAG: &str = "tag-placeholder-42";

async fn run_task(s: &TestServer, ws: &str, agent: &str, prompt: &str) -> (Value, Vec<Value>) {
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": ws, "agent": agent, "prompt": prompt})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let done = wait_turn_over(s, &id, TURN).await;
    let events = s.get(&format!("/api/v1/tasks/{id}/events")).await;
    (done, events.as_array().unwrap().clone())
}

fn texts(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "message")
        .filter_map(|e| e["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn mcp_reaches_every_agent() {
    ensure_image().await;
    let mock = MockLlm::start_with(Script {
        final_text: "NOTED-OK".into(),
        ..Script::default()
    })
    .await;
    let s = server_with_llm(bin(), &mock, Vec::new()).await;
    let decl = mcp_notes::declaration("notes", SERVER_JS, NOTES, TAG);
    // Declared from a file with the CLI.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("servers.json");
    std::fs::write(&file, json!([decl.clone()]).to_string()).unwrap();
    let out = s.cli(&[
        "workspace",
        "create",
        "mcp",
        "--memory",
        "2g",
        "--pids",
        "2048",
        "--mcp-file",
        file.to_str().unwrap(),
        "--json",
    ]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The views show the declaration as given.
    let w: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(w["mcp_servers"], json!([decl]), "{w}");
    assert_eq!(
        s.get("/api/v1/workspaces/mcp").await["mcp_servers"],
        json!([decl])
    );
    let out = s.cli(&["workspace", "show", "mcp"]);
    let shown = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        shown.contains(&format!(
            "mcp servers: notes: stdio node {SERVER_JS} {NOTES} notes (env {})",
            mcp_notes::TAG_VAR
        )),
        "{shown}"
    );
    mcp_notes::install(&s, "mcp", SERVER_JS).await;

    for agent in ["claude", "codex", "gemini", "opencode"] {
        let note = format!("from-{agent}");
        let prompt = format!("Record a note for the test. {MCP_MARKER}{note}");
        let (done, events) = run_task(&s, "mcp", agent, &prompt).await;
        assert_eq!(
            done["state"],
            "completed",
            "{agent}: {done}\n{events:#?}\n{}",
            s.log()
        );
        let calls = mcp_notes::calls(&s, "mcp", NOTES).await;
        assert!(
            calls
                .iter()
                .any(|c| c == &json!({"server": "notes", "text": note, "env": TAG})),
            "{agent}: the MCP server did not record {note:?}: {calls:?}\nmessages: {}\n{events:#?}",
            texts(&events)
        );
        // The agent reported the call as its own tool call, under its CLI's name for it.
        let call = events
            .iter()
            .find(|e| {
                e["type"] == "tool_call"
                    && e["name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with(MCP_TOOL_SUFFIX))
            })
            .unwrap_or_else(|| panic!("{agent}: no MCP tool call event: {events:#?}"));
        assert!(call["input"].to_string().contains(&note), "{call}");
        assert!(texts(&events).contains("NOTED-OK"), "{agent}: {events:#?}");
    }
    // Exactly one call per agent.
    assert_eq!(mcp_notes::calls(&s, "mcp", NOTES).await.len(), 4);

    // An interactive Claude Code session started from the CLI sees the server too.
    let out = s.cli(&["session", "new", "mcp", "--agent", "claude"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut term = Term::open(&s, "mcp", "claude").await;
    let ready = ready_marker("claude").unwrap();
    term.until("the TUI's prompt", TURN, |t| t.contains(ready))
        .await;
    term.settle(Duration::from_secs(2), Duration::from_secs(10))
        .await;
    let marker = format!("{MCP_MARKER}from-session");
    term.submit(&mock, &format!("Record a note. {marker}"), &marker)
        .await;
    let calls = eventually(TURN, "the session's MCP call", || async {
        let calls = mcp_notes::calls(&s, "mcp", NOTES).await;
        calls
            .iter()
            .any(|c| c["text"] == "from-session")
            .then_some(calls)
    })
    .await;
    assert_eq!(calls.len(), 5, "{calls:?}");

    // The control: the same prompt in a workspace without the declaration finds no MCP tool,
    // and nothing is recorded.
    s.create_workspace(json!({"name": "plain", "memory": "2g", "pids": 2048}))
        .await;
    let w = s.get("/api/v1/workspaces/plain").await;
    assert_eq!(w["mcp_servers"], json!([]), "{w}");
    mcp_notes::install(&s, "plain", SERVER_JS).await;
    let (done, events) = run_task(
        &s,
        "plain",
        "claude",
        &format!("Record a note for the test. {MCP_MARKER}control"),
    )
    .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert!(texts(&events).contains(MCP_MISSING), "{events:#?}");
    assert!(mcp_notes::calls(&s, "plain", NOTES).await.is_empty());
}

#[tokio::test]
async fn malformed_mcp_servers_are_refused_by_name_and_field() {
    let s = TestServer::start(bin()).await;
    let bad = |servers: Value| {
        let s = &s;
        async move {
            let (st, v) = s
                .call(
                    "POST",
                    "/api/v1/workspaces",
                    Some(json!({"name": "bad", "mcp_servers": servers})),
                )
                .await;
            assert_eq!(st, 422, "{v}");
            assert_eq!(v["error"]["code"], "invalid_mcp_server", "{v}");
            v["error"]["message"].as_str().unwrap().to_owned()
        }
    };
    let m = bad(json!([{"name": "notes", "type": "stdio"}])).await;
    assert!(m.contains("\"notes\"") && m.contains("command"), "{m}");
    let m = bad(json!([{"name": "Bad Name", "type": "stdio", "command": "x"}])).await;
    assert!(m.contains("name"), "{m}");
    let m = bad(json!([{"name": "web", "type": "http", "url": "ftp://x"}])).await;
    assert!(m.contains("\"web\"") && m.contains("url"), "{m}");
    let m =
        bad(json!([{"name": "e", "type": "stdio", "command": "x", "env": {"A": "1\n2"}}])).await;
    assert!(m.contains("env"), "{m}");
    let m = bad(json!([{"name": "d", "type": "stdio", "command": "x"},
                       {"name": "d", "type": "stdio", "command": "y"}]))
    .await;
    assert!(m.contains("declared twice"), "{m}");
    let many: Vec<Value> = (0..33)
        .map(|i| json!({"name": format!("s{i}"), "type": "stdio", "command": "x"}))
        .collect();
    bad(Value::from(many)).await;
    let m = bad(json!([{"name": "h", "type": "stdio", "command": "x", "url": "http://x"}])).await;
    assert!(m.contains("url"), "{m}");
    // An unknown key or transport is a malformed body (the request's shape).
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/workspaces",
            Some(json!({"name": "bad", "mcp_servers": [{"name": "x", "type": "sse", "url": "http://x"}]})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    // Nothing was created.
    assert_eq!(s.get("/api/v1/workspaces").await, json!([]));

    // The CLI: a file that is not a list of servers is one readable line and exit 1; the
    // server's refusal is shown with its code.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("servers.json");
    std::fs::write(&file, "{\"notes\": 1}").unwrap();
    let out = s.cli(&[
        "workspace",
        "create",
        "bad",
        "--mcp-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--mcp-file") && err.trim().lines().count() == 1,
        "{err}"
    );
    std::fs::write(&file, r#"[{"name": "notes", "type": "stdio"}]"#).unwrap();
    let out = s.cli(&[
        "workspace",
        "create",
        "bad",
        "--mcp-file",
        file.to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid_mcp_server") || err.contains("command"),
        "{err}"
    );
}
