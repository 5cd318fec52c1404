//! The JSON-RPC 2.0 side of MCP, shared by the stdio and HTTP transports: [`handle`] answers
//! what needs no tool at once (`initialize`, `ping`, `tools/list`, a call whose arguments do not
//! fit, unknown methods) and hands a checked `tools/call` back to the transport, which runs it
//! with [`crate::tools::call`] and wraps the outcome with [`tool_result`].

use serde_json::{json, Value};

use crate::tools::{self, ToolError};

/// The protocol revisions berth speaks, newest first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

/// What the server tells the client at `initialize`.
pub const INSTRUCTIONS: &str = "berth runs coding agents in isolated workspaces. Create a \
workspace (create_workspace), run an agent on a prompt in it (run_task, wait=true to get its \
answer), read what it did (task_events, task_diff), follow up (send_message), and decide what \
waits for a human (list_inbox, decide_approval, decide_access_request). Every call runs with this server's berth \
token and can do exactly what the token's role allows. remove_workspace needs confirm=true: \
ask the user first.";

/// What a message needs.
#[derive(Debug, PartialEq)]
pub enum Handled {
    /// This answer, now.
    Reply(Value),
    /// No answer (a notification, or a response from the client).
    Nothing,
    /// A `tools/call` whose arguments passed the check: run it, then answer `id`.
    Call {
        id: Value,
        name: String,
        args: Value,
    },
}

/// Handles one JSON-RPC message up to the point where a tool would be called.
pub fn handle(msg: &Value) -> Handled {
    if !msg.is_object() {
        return Handled::Reply(error(Value::Null, -32600, "not a JSON-RPC message"));
    }
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        // A response to a request of ours (we send none) or garbage without an id.
        return match msg.get("id") {
            Some(id) if msg.get("result").is_none() && msg.get("error").is_none() => {
                Handled::Reply(error(id.clone(), -32600, "not a JSON-RPC request"))
            }
            _ => Handled::Nothing,
        };
    };
    let Some(id) = msg.get("id").cloned() else {
        return Handled::Nothing; // notifications/initialized, notifications/cancelled, …
    };
    let params = msg.get("params").cloned().unwrap_or(json!({}));
    match method {
        "initialize" => Handled::Reply(answer(id, initialize(&params))),
        "ping" => Handled::Reply(answer(id, json!({}))),
        "tools/list" => Handled::Reply(answer(id, tools_list())),
        "tools/call" => tools_call(id, &params),
        other => Handled::Reply(error(id, -32601, &format!("method not found: {other}"))),
    }
}

/// The revision answered to an `initialize` asking for `asked`: the same when berth speaks it,
/// else the newest (the client then decides whether it can go on).
pub fn negotiate(asked: &str) -> &'static str {
    PROTOCOL_VERSIONS
        .into_iter()
        .find(|v| *v == asked)
        .unwrap_or(PROTOCOL_VERSIONS[0])
}

fn initialize(params: &Value) -> Value {
    let version = negotiate(params["protocolVersion"].as_str().unwrap_or_default());
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "berth", "title": "berth", "version": env!("CARGO_PKG_VERSION")},
        "instructions": INSTRUCTIONS,
    })
}

/// The `tools/list` result: every tool with its description and input schema.
pub fn tools_list() -> Value {
    let tools: Vec<Value> = tools::list()
        .into_iter()
        .map(|t| json!({"name": t.name, "description": t.description, "inputSchema": t.schema}))
        .collect();
    json!({ "tools": tools })
}

fn tools_call(id: Value, params: &Value) -> Handled {
    let Some(name) = params["name"].as_str() else {
        return Handled::Reply(error(id, -32602, "tools/call needs params.name"));
    };
    if !tools::list().iter().any(|t| t.name == name) {
        return Handled::Reply(error(id, -32602, &format!("unknown tool: {name}")));
    }
    let args = match params.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(a) => a.clone(),
    };
    match tools::check_call(name, &args) {
        Ok(()) => Handled::Call {
            id,
            name: name.to_owned(),
            args,
        },
        Err(e) => Handled::Reply(answer(id, tool_result(Err(e)))),
    }
}

/// A `tools/call` result: the API's JSON as text, or the error (code, message, status) with
/// `isError`, which the model sees and can act on.
pub fn tool_result(r: Result<Value, ToolError>) -> Value {
    let (v, is_error) = match r {
        Ok(v) => (v, false),
        Err(e) => (e.to_json(), true),
    };
    let text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

/// A JSON-RPC success response.
pub fn answer(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A JSON-RPC error response.
pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// The answer to a message that is not JSON at all (no id to answer to).
pub fn parse_error(detail: &str) -> Value {
    error(Value::Null, -32700, &format!("parse error: {detail}"))
}
