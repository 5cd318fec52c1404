//! A real MCP server for tests: `fixtures/mcp-notes-server.js`, a small Node.js program speaking
//! MCP over stdio (newline-delimited JSON-RPC 2.0) with one tool, `record_note {text}`, that
//! appends each call as a JSON line to a file the test reads back. It runs inside the workspace
//! container (where the agents run; the workspace image has Node.js).

use serde_json::{json, Value};

use crate::{enc, TestServer};

/// The server's source.
pub const SOURCE: &str = include_str!("../fixtures/mcp-notes-server.js");

/// The environment variable whose value the server records with each call (`env` in a line).
pub const TAG_VAR: &str = "MCP_NOTES_TAG";

/// Copies the server into workspace `ws` at `path` (through the exec API).
pub async fn install(s: &TestServer, ws: &str, path: &str) {
    let (st, v) = s
        .call(
            "POST",
            &format!("/api/v1/workspaces/{}/exec", enc(ws)),
            Some(json!({"cmd": ["sh", "-c", "cat > \"$0\"", path], "stdin": SOURCE})),
        )
        .await;
    assert_eq!(
        (st, v["exit_code"].as_i64()),
        (200, Some(0)),
        "installing the MCP server: {v}"
    );
}

/// The `mcp_servers` entry that runs the installed server as `name`, recording to `notes`,
/// with [`TAG_VAR`] set to `tag`.
pub fn declaration(name: &str, path: &str, notes: &str, tag: &str) -> Value {
    json!({
        "name": name,
        "type": "stdio",
        "command": "node",
        "args": [path, notes, name],
        "env": { TAG_VAR: tag },
    })
}

/// The calls recorded in `notes` so far (one JSON object each; none when the file is missing).
pub async fn calls(s: &TestServer, ws: &str, notes: &str) -> Vec<Value> {
    let out = s
        .exec(ws, &["sh", "-c", "cat \"$0\" 2>/dev/null || true", notes])
        .await;
    out["stdout"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("note line {l:?}: {e}")))
        .collect()
}
