//! `berth mcp`: an MCP (Model Context Protocol) server on stdio, so an agent (Claude Code,
//! Codex, Gemini CLI, OpenCode on a laptop) can run berth: list, create, start, stop and remove
//! workspaces, run tasks and wait for them, read events and diffs, send follow-ups, decide
//! approvals, read usage and egress logs.
//!
//! This module is the stdio transport (newline-delimited JSON-RPC 2.0 messages on stdin/stdout,
//! as MCP's stdio transport says); the tools and the message handling are the `berth-mcp`
//! crate's, which the server's streamable HTTP endpoint (`/api/v1/mcp`) serves too. stdout
//! carries the protocol only; notes go to stderr. Requests are served concurrently, so a long
//! `wait` does not hold up a `ping`.
//!
//! Every tool call is an ordinary API request with the token `berth mcp` was given (the same
//! `--url`/`--token`/login file as every command), made by this CLI's [`Client`] as the
//! [`berth_mcp::Api`]: it can do exactly what that token's role allows.

use std::sync::Arc;

use async_trait::async_trait;
use berth_mcp::{handle, tool_result, Handled, Method, ToolError};
use clap::Args;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::client::{CliError, Client, Result};
use crate::ctx::Ctx;
use crate::ConnArgs;

/// Longest message line accepted (a longer one is answered with a parse error and dropped).
const MAX_LINE: usize = 4 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

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
                        write(ctx, &berth_mcp::protocol::parse_error("message too long"))?;
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
        Err(e) => return write(ctx, &berth_mcp::protocol::parse_error(&e.to_string())),
    };
    match handle(&msg) {
        Handled::Reply(reply) => write(ctx, &reply),
        Handled::Nothing => Ok(()),
        Handled::Call { id, name, args } => {
            let client = client.clone();
            pending.spawn(async move {
                let api: &Client = &client;
                let result = berth_mcp::tools::call(api, &name, &args).await;
                Some(berth_mcp::protocol::answer(id, tool_result(result)))
            });
            Ok(())
        }
    }
}

/// The CLI's client is the tools' API: each request goes to the server with this command's
/// token; a refusal keeps the server's code, message and status.
#[async_trait]
impl berth_mcp::Api for Client {
    async fn send(&self, req: berth_mcp::Request) -> std::result::Result<Value, ToolError> {
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        };
        self.request_value(method, &req.path, req.body.as_ref())
            .await
            .map_err(tool_error)
    }
}

/// A CLI error as the tool error the model reads.
pub(crate) fn tool_error(e: CliError) -> ToolError {
    match e {
        CliError::Api {
            status,
            code,
            message,
        } => ToolError::api(status, &code, message),
        e @ CliError::Unreachable { .. } => ToolError::new("unreachable", e.to_string()),
        CliError::Other(m) => ToolError::new("client_error", m),
    }
}

/// One message on stdout: a single line of JSON.
fn write(ctx: &mut Ctx<'_>, v: &Value) -> Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    ctx.print(&line)
}
