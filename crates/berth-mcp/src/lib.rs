//! berth's MCP (Model Context Protocol) tools, one definition for both transports: `berth mcp`
//! (stdio, in berth-cli) and the server's streamable HTTP endpoint `/api/v1/mcp` (berth-server).
//!
//! - [`tools`]: every tool's name, description and input schema ([`tools::list`]), and its call
//!   ([`tools::call`]): ordinary REST API requests made through [`Api`] with the caller's token,
//!   so the server's role checks, tenant scoping and audit log apply unchanged.
//! - [`schema`]: the schema builders and the check of a call's arguments against them.
//! - [`protocol`]: the JSON-RPC 2.0 messages (`initialize`, `ping`, `tools/list`, `tools/call`,
//!   notifications) up to the point where a tool runs, and the shape of a tool's result.
//!
//! [`Api`] is the one seam between the tools and a transport: the CLI implements it with its
//! HTTP client; the server with an in-process request through its own router that carries the
//! caller's `Authorization` header (the same authentication, access table, handlers and audit as
//! a request from outside). No I/O here beyond what [`Api`] does and the timer of a `wait`.

pub mod protocol;
pub mod schema;
pub mod tools;

#[cfg(test)]
mod tests;

use async_trait::async_trait;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

pub use protocol::{handle, tool_result, tools_list, Handled, INSTRUCTIONS, PROTOCOL_VERSIONS};
pub use tools::ToolError;

/// The HTTP methods the tools use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }
}

/// One REST API request a tool makes.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    /// The path below `/api/v1`, its segments percent-encoded, with its query string
    /// (`/workspaces?tenant=acme`).
    pub path: String,
    /// The JSON body; `None` sends none.
    pub body: Option<Value>,
}

/// berth's REST API as the tools see it: requests made with the caller's token.
#[async_trait]
pub trait Api: Send + Sync {
    /// Sends one request: the response's JSON (`Null` for an empty body, e.g. a 204), or the
    /// API's refusal as a [`ToolError`] with its stable code, message and status.
    async fn send(&self, req: Request) -> Result<Value, ToolError>;
}

/// Characters left as-is in a path segment or query value: RFC 3986 unreserved. Everything
/// else, including `/`, is percent-encoded, so a `tenant/name` reference stays one segment.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a reference as ONE path segment (or one query value).
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// API path of a workspace: `/workspaces/{ws}` with `ws` as one encoded segment.
pub fn ws_path(ws: &str) -> String {
    format!("/workspaces/{}", encode_segment(ws))
}

/// API path of a task: `/tasks/{task}`.
pub fn task_path(task: &str) -> String {
    format!("/tasks/{}", encode_segment(task))
}

/// `path?k=v&…` with every key and value encoded; `path` itself when `query` is empty.
pub fn with_query(path: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", encode_segment(k), encode_segment(v)))
        .collect();
    format!("{path}?{}", q.join("&"))
}
