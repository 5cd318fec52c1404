//! MCP servers a workspace's agents can use.
//!
//! A workspace (usually from its template) declares MCP servers once; every agent driver writes
//! them into its own CLI's configuration format, so Claude Code, Codex, Gemini CLI and OpenCode
//! all see the same servers. Values are plain strings: a secret is referenced by its placeholder
//! (swapped in at egress), never by its value.

use std::collections::BTreeMap;

/// Longest server name accepted.
pub const MAX_NAME: usize = 64;
/// Most servers one workspace may declare.
pub const MAX_SERVERS: usize = 32;
/// Most arguments, environment variables or headers of one server.
pub const MAX_ENTRIES: usize = 64;
/// Longest command, argument, URL, key or value.
pub const MAX_VALUE: usize = 4096;

/// One MCP server.
///
/// Unknown keys are ignored by serde (`flatten` rules out `deny_unknown_fields`); a template
/// parser that wants to warn about them checks its raw table itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct McpServer {
    /// The name agents know the server by (`[a-z0-9_-]`, 1–64, starting with a letter or digit).
    pub name: String,
    #[serde(flatten)]
    pub transport: McpTransport,
}

/// How an agent reaches an MCP server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum McpTransport {
    /// A process the agent starts inside the workspace, speaking MCP over stdio.
    Stdio {
        command: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        args: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
    /// A streamable-HTTP MCP endpoint (reached through the workspace's egress policy).
    Http {
        url: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
}

/// What is wrong with a declared MCP server: the field and the reason, for precise errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mcp server {server:?}: {field}: {reason}")]
pub struct McpError {
    pub server: String,
    pub field: &'static str,
    pub reason: String,
}

impl McpServer {
    /// Checks one server's shape (names, sizes, URL scheme).
    pub fn validate(&self) -> Result<(), McpError> {
        let err = |field: &'static str, reason: String| McpError {
            server: self.name.clone(),
            field,
            reason,
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && self.name.as_bytes()[0].is_ascii_alphanumeric();
        if !name_ok {
            return Err(err(
                "name",
                format!(
                    "must be 1-{MAX_NAME} of a-z, 0-9, '-', '_', starting with a letter or digit"
                ),
            ));
        }
        match &self.transport {
            McpTransport::Stdio { command, args, env } => {
                if command.trim().is_empty() {
                    return Err(err("command", "must not be empty".into()));
                }
                check_value(command).map_err(|r| err("command", r))?;
                if args.len() > MAX_ENTRIES {
                    return Err(err("args", format!("at most {MAX_ENTRIES}")));
                }
                for a in args {
                    check_value(a).map_err(|r| err("args", r))?;
                }
                check_map(env, true).map_err(|r| err("env", r))?;
            }
            McpTransport::Http { url, headers } => {
                check_value(url).map_err(|r| err("url", r))?;
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                if rest.is_none_or(str::is_empty) {
                    return Err(err("url", "must be an http:// or https:// URL".into()));
                }
                check_map(headers, false).map_err(|r| err("headers", r))?;
            }
        }
        Ok(())
    }
}

/// Checks a whole list: each server, the count, and unique names.
pub fn validate_all(servers: &[McpServer]) -> Result<(), McpError> {
    if servers.len() > MAX_SERVERS {
        return Err(McpError {
            server: String::new(),
            field: "mcp",
            reason: format!("at most {MAX_SERVERS} servers"),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in servers {
        s.validate()?;
        if !seen.insert(s.name.as_str()) {
            return Err(McpError {
                server: s.name.clone(),
                field: "name",
                reason: "declared twice".into(),
            });
        }
    }
    Ok(())
}

fn check_value(v: &str) -> Result<(), String> {
    if v.len() > MAX_VALUE {
        return Err(format!("longer than {MAX_VALUE} bytes"));
    }
    if v.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    Ok(())
}

fn check_map(map: &BTreeMap<String, String>, env_names: bool) -> Result<(), String> {
    if map.len() > MAX_ENTRIES {
        return Err(format!("at most {MAX_ENTRIES} entries"));
    }
    for (k, v) in map {
        let key_ok = !k.is_empty()
            && if env_names {
                k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !k.as_bytes()[0].is_ascii_digit()
            } else {
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
        if !key_ok {
            return Err(format!(
                "{k:?} is not a valid {}",
                if env_names {
                    "variable name"
                } else {
                    "header name"
                }
            ));
        }
        check_value(v)?;
        if v.contains(['\r', '\n']) {
            return Err(format!("the value of {k} contains a line break"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio(name: &str) -> McpServer {
        McpServer {
            name: name.into(),
            transport: McpTransport::Stdio {
                command: "mcp-echo".into(),
                args: vec!["--x".into()],
                env: BTreeMap::new(),
            },
        }
    }

    #[test]
    fn wire_shape_is_tagged_by_type() {
        let s = stdio("echo");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "echo", "type": "stdio", "command": "mcp-echo", "args": ["--x"]})
        );
        let back: McpServer = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        let h: McpServer = serde_json::from_value(
            serde_json::json!({"name": "docs", "type": "http", "url": "https://mcp.example/"}),
        )
        .unwrap();
        assert!(matches!(h.transport, McpTransport::Http { .. }));
        assert!(serde_json::from_value::<McpServer>(
            serde_json::json!({"name": "x", "type": "sse", "url": "u"})
        )
        .is_err());
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate_all(&[stdio("echo"), stdio("docs-2")]).is_ok());
        assert_eq!(stdio("Echo").validate().unwrap_err().field, "name");
        assert_eq!(stdio("-x").validate().unwrap_err().field, "name");
        assert_eq!(
            validate_all(&[stdio("a"), stdio("a")]).unwrap_err().reason,
            "declared twice"
        );
        let mut s = stdio("e");
        s.transport = McpTransport::Stdio {
            command: " ".into(),
            args: vec![],
            env: BTreeMap::new(),
        };
        assert_eq!(s.validate().unwrap_err().field, "command");
        s.transport = McpTransport::Stdio {
            command: "x".into(),
            args: vec![],
            env: BTreeMap::from([("1BAD".to_string(), "v".to_string())]),
        };
        assert_eq!(s.validate().unwrap_err().field, "env");
        s.transport = McpTransport::Http {
            url: "ftp://x".into(),
            headers: BTreeMap::new(),
        };
        assert_eq!(s.validate().unwrap_err().field, "url");
        s.transport = McpTransport::Http {
            url: "https://x".into(),
            headers: BTreeMap::from([("X-A".to_string(), "a\r\nb".to_string())]),
        };
        assert_eq!(s.validate().unwrap_err().field, "headers");
    }
}
