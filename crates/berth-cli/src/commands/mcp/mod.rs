//! `berth mcp`: an MCP (Model Context Protocol) server on stdio, so an agent (Claude Code,
//! Codex, Gemini CLI, OpenCode on a laptop) can run berth: list, create, start, stop and remove
//! workspaces, run tasks and wait for them, read events and diffs, send follow-ups, decide
//! approvals, read usage and egress logs.
//!
//! A small hand-written JSON-RPC 2.0 server (newline-delimited messages on stdin/stdout, as
//! MCP's stdio transport says): `initialize`, `ping`, `tools/list`, `tools/call`, and the
//! notifications (ignored). stdout carries the protocol only; notes go to stderr. Requests are
//! served concurrently, so a long `wait` does not hold up a `ping`.
//!
//! Every tool call is an ordinary API request with the token `berth mcp` was given (the same
//! `--url`/`--token`/login file as every command): it can do exactly what that token's role
//! allows. The tools are in `tools.rs`, their schemas and the argument check in `schema.rs`.

use std::sync::Arc;

use clap::Args;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::client::{Client, Result};
use crate::ctx::Ctx;
use crate::ConnArgs;

pub(crate) mod schema;
pub(crate) mod tools;

/// The protocol revisions this server speaks, newest first.
pub(crate) const PROTOCOL_VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];
/// Longest message line accepted (a longer one is answered with a parse error and dropped).
const MAX_LINE: usize = 4 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// What the server tells the client at `initialize`.
const INSTRUCTIONS: &str = "berth runs coding agents in isolated workspaces. Create a \
workspace (create_workspace), run an agent on a prompt in it (run_task, wait=true to get its \
answer), read what it did (task_events, task_diff), follow up (send_message), and decide what \
waits for a human (list_inbox, decide_approval). Every call runs with this server's berth \
token and can do exactly what the token's role allows. remove_workspace needs confirm=true: \
ask the user first.";

/// Serves MCP on the process's stdin/stdout until stdin ends.
pub(crate) async fn run(client: Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    ctx.note(&format!(
        "berth mcp: serving MCP on stdio for {}",
        client.base()
    ));
    let client = Arc::new(client);
    let mut input = ctx.stdin.reader()?;
    let mut buf: Vec<u8> = Vec::new();
    let mut pending: JoinSet<Option<Value>> = JoinSet::new();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            chunk = input.recv(), if open => match chunk {
                Some(bytes) => {
                    buf.extend_from_slice(&bytes);
                    for line in take_lines(&mut buf) {
                        dispatch_line(&line, &client, &mut pending, ctx)?;
                    }
                    if buf.len() > MAX_LINE {
                        buf.clear();
                        write(ctx, &parse_error("message too long"))?;
                    }
                }
                None => {
                    open = false;
                    let rest = std::mem::take(&mut buf);
                    dispatch_line(&rest, &client, &mut pending, ctx)?;
                }
            },
            Some(done) = pending.join_next() => {
                if let Ok(Some(reply)) = done {
                    write(ctx, &reply)?;
                }
            }
        }
    }
    Ok(0)
}

/// The complete lines at the start of `buf` (without their `\n`), removed from it.
pub(crate) fn take_lines(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    while let Some(i) = buf.iter().position(|b| *b == b'\n') {
        let mut line: Vec<u8> = buf.drain(..=i).collect();
        line.pop();
        lines.push(line);
    }
    lines
}

/// Answers a line at once (parse errors, quick methods) or starts its tool call.
fn dispatch_line(
    line: &[u8],
    client: &Arc<Client>,
    pending: &mut JoinSet<Option<Value>>,
    ctx: &mut Ctx<'_>,
) -> Result<()> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let msg: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return write(ctx, &parse_error(&e.to_string())),
    };
    match handle(&msg) {
        Handled::Reply(reply) => write(ctx, &reply),
        Handled::Nothing => Ok(()),
        Handled::Call { id, name, args } => {
            let client = client.clone();
            pending.spawn(async move {
                Some(answer(
                    id,
                    tool_result(tools::call(&client, &name, &args).await),
                ))
            });
            Ok(())
        }
    }
}

/// What a message needs.
#[derive(Debug, PartialEq)]
pub(crate) enum Handled {
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
pub(crate) fn handle(msg: &Value) -> Handled {
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

fn initialize(params: &Value) -> Value {
    let asked = params["protocolVersion"].as_str().unwrap_or_default();
    let version = PROTOCOL_VERSIONS
        .into_iter()
        .find(|v| *v == asked)
        .unwrap_or(PROTOCOL_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "berth", "title": "berth", "version": env!("CARGO_PKG_VERSION")},
        "instructions": INSTRUCTIONS,
    })
}

pub(crate) fn tools_list() -> Value {
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
pub(crate) fn tool_result(r: Result<Value, tools::ToolError>) -> Value {
    let (v, is_error) = match r {
        Ok(v) => (v, false),
        Err(e) => (e.to_json(), true),
    };
    let text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

fn answer(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn parse_error(detail: &str) -> Value {
    error(Value::Null, -32700, &format!("parse error: {detail}"))
}

/// One message on stdout: a single line of JSON.
fn write(ctx: &mut Ctx<'_>, v: &Value) -> Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    ctx.print(&line)
}
