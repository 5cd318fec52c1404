//! The wire form of an MCP server a workspace declares (`mcp_servers` of a workspace create
//! request and of the workspace view), and its conversion to and from
//! [`berth_domain::McpServer`].
//!
//! The JSON shape is the domain type's (`{"name", "type": "stdio"|"http", …}`), flat here so the
//! OpenAPI schema can list every field and unknown keys are refused.

use std::collections::BTreeMap;

use berth_domain::mcp::{McpError, McpServer as Domain, McpTransport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How an agent reaches an MCP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum McpServerType {
    /// A process the agent starts inside the workspace, speaking MCP over stdio.
    Stdio,
    /// A streamable-HTTP MCP endpoint, reached through the workspace's egress policy.
    Http,
}

/// An MCP server every agent of the workspace (tasks and interactive sessions) can use; written
/// into each agent CLI's own configuration. `env` and `headers` values are written into the
/// workspace as given: use a secret's placeholder there, never a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// The name agents know the server by: 1-64 of `a-z`, `0-9`, `-`, `_`, starting with a
    /// letter or digit; unique within the workspace.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: McpServerType,
    /// `stdio` only (required): the program, looked up in the workspace's PATH.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_string"
    )]
    #[schema(nullable = false)]
    pub command: Option<String>,
    /// `stdio` only: its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `stdio` only: extra environment variables of the server process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// `http` only (required): the `http://` or `https://` endpoint.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_string"
    )]
    #[schema(nullable = false)]
    pub url: Option<String>,
    /// `http` only: request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// An optional string that, when present, is a string (`null` is refused, as the schema says).
fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

impl McpServer {
    /// The domain value, or which field is wrong (a field of the other transport, a missing
    /// `command`/`url`, or anything [`Domain::validate`] refuses).
    pub fn to_domain(&self) -> Result<Domain, McpError> {
        let err = |field: &'static str, reason: &str| McpError {
            server: self.name.clone(),
            field,
            reason: reason.to_owned(),
        };
        let transport = match self.kind {
            McpServerType::Stdio => {
                if self.url.is_some() {
                    return Err(err("url", "only for type http"));
                }
                if !self.headers.is_empty() {
                    return Err(err("headers", "only for type http"));
                }
                McpTransport::Stdio {
                    command: self
                        .command
                        .clone()
                        .ok_or_else(|| err("command", "required for type stdio"))?,
                    args: self.args.clone(),
                    env: self.env.clone(),
                }
            }
            McpServerType::Http => {
                if self.command.is_some() {
                    return Err(err("command", "only for type stdio"));
                }
                if !self.args.is_empty() {
                    return Err(err("args", "only for type stdio"));
                }
                if !self.env.is_empty() {
                    return Err(err("env", "only for type stdio"));
                }
                McpTransport::Http {
                    url: self
                        .url
                        .clone()
                        .ok_or_else(|| err("url", "required for type http"))?,
                    headers: self.headers.clone(),
                }
            }
        };
        let d = Domain {
            name: self.name.clone(),
            transport,
        };
        d.validate()?;
        Ok(d)
    }

    /// The wire form of a stored server.
    pub fn from_domain(d: &Domain) -> Self {
        let mut out = Self {
            name: d.name.clone(),
            kind: McpServerType::Stdio,
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            url: None,
            headers: BTreeMap::new(),
        };
        match &d.transport {
            McpTransport::Stdio { command, args, env } => {
                out.command = Some(command.clone());
                out.args = args.clone();
                out.env = env.clone();
            }
            McpTransport::Http { url, headers } => {
                out.kind = McpServerType::Http;
                out.url = Some(url.clone());
                out.headers = headers.clone();
            }
        }
        out
    }
}

/// Converts and validates a whole list (each server, the count, unique names).
pub fn mcp_servers_to_domain(list: &[McpServer]) -> Result<Vec<Domain>, McpError> {
    let out = list
        .iter()
        .map(McpServer::to_domain)
        .collect::<Result<Vec<_>, _>>()?;
    berth_domain::mcp::validate_all(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn same_json_as_the_domain_type() {
        for v in [
            json!({"name": "notes", "type": "stdio", "command": "node", "args": ["a"], "env": {"K": "v"}}),
            json!({"name": "docs", "type": "http", "url": "https://x.example/mcp", "headers": {"X-K": "p"}}),
        ] {
            let wire: McpServer = serde_json::from_value(v.clone()).unwrap();
            let d = wire.to_domain().unwrap();
            assert_eq!(serde_json::to_value(&d).unwrap(), v);
            assert_eq!(McpServer::from_domain(&d), wire);
            assert_eq!(serde_json::to_value(&wire).unwrap(), v);
        }
    }

    #[test]
    fn wrong_fields_are_named() {
        let bad = |v: serde_json::Value| {
            let w: McpServer = serde_json::from_value(v).unwrap();
            w.to_domain().unwrap_err().field
        };
        assert_eq!(bad(json!({"name": "a", "type": "stdio"})), "command");
        assert_eq!(bad(json!({"name": "a", "type": "http"})), "url");
        assert_eq!(
            bad(json!({"name": "a", "type": "stdio", "command": "x", "url": "http://x"})),
            "url"
        );
        assert_eq!(
            bad(json!({"name": "a", "type": "http", "url": "http://x", "args": ["y"]})),
            "args"
        );
        assert_eq!(
            bad(json!({"name": "A", "type": "stdio", "command": "x"})),
            "name"
        );
        assert!(serde_json::from_value::<McpServer>(
            json!({"name": "a", "type": "stdio", "command": "x", "cwd": "/"})
        )
        .is_err());
        assert!(serde_json::from_value::<McpServer>(
            json!({"name": "a", "type": "http", "url": "http://x", "command": null})
        )
        .is_err());
        let two: Vec<McpServer> = serde_json::from_value(json!([
            {"name": "a", "type": "stdio", "command": "x"},
            {"name": "a", "type": "stdio", "command": "y"}
        ]))
        .unwrap();
        assert_eq!(
            mcp_servers_to_domain(&two).unwrap_err().reason,
            "declared twice"
        );
    }
}
