//! The workspace's MCP servers in each agent CLI's own configuration format.
//!
//! Every driver writes these into the per-task (or per-session) configuration it already owns,
//! never into the user's shared home configuration, so all four CLIs see the same servers and
//! parallel tasks never share a file. The formats were checked against the installed CLIs'
//! own `mcp add` commands (Claude Code 2.1.330, Codex 0.169, Gemini CLI 0.61, OpenCode 1.18):
//!
//! | CLI | where | stdio | streamable HTTP |
//! |---|---|---|---|
//! | Claude Code | `--mcp-config FILE --strict-mcp-config` | `{type:"stdio",command,args,env}` | `{type:"http",url,headers}` |
//! | Codex | `$CODEX_HOME/config.toml` | `[mcp_servers.N] command,args,env` | `[mcp_servers.N] url,http_headers` |
//! | Gemini CLI | `settings.json` `mcpServers` | `{command,args,env,trust}` | `{type:"http",url,headers,trust}` |
//! | OpenCode | `opencode.json` `mcp` | `{type:"local",command:[..],environment}` | `{type:"remote",url,headers}` |
//!
//! Tool calls run without a prompt in the autonomous mode tasks use: Claude Code's
//! `--dangerously-skip-permissions`, Codex's approval policy `never` (plus each server's tools
//! approved), Gemini's `trust: true` (and yolo mode), OpenCode's `permission` map (MCP tools are
//! allowed unless denied).
//!
//! Values are written as given: `env`/`headers` may hold secret placeholders, never secrets.

use berth_domain::mcp::{McpServer, McpTransport};
use serde_json::{json, Map, Value};

use crate::util::toml_str;

/// Claude Code's `--mcp-config` file: `{"mcpServers": {name: …}}`.
pub(crate) fn claude(servers: &[McpServer]) -> String {
    let mut map = Map::new();
    for s in servers {
        let v = match &s.transport {
            McpTransport::Stdio { command, args, env } => json!({
                "type": "stdio", "command": command, "args": args, "env": env,
            }),
            McpTransport::Http { url, headers } => json!({
                "type": "http", "url": url, "headers": headers,
            }),
        };
        map.insert(s.name.clone(), v);
    }
    format!("{:#}\n", json!({ "mcpServers": map }))
}

/// Codex's `[mcp_servers.NAME]` tables, appended to its `config.toml` (after every root key).
pub(crate) fn codex(servers: &[McpServer]) -> String {
    let mut out = String::new();
    for s in servers {
        out.push_str(&format!("\n[mcp_servers.{}]\n", toml_str(&s.name)));
        match &s.transport {
            McpTransport::Stdio { command, args, env } => {
                out.push_str(&format!("command = {}\n", toml_str(command)));
                let args: Vec<String> = args.iter().map(|a| toml_str(a)).collect();
                out.push_str(&format!("args = [{}]\n", args.join(", ")));
                out.push_str(&format!("env = {}\n", toml_inline(env)));
            }
            McpTransport::Http { url, headers } => {
                out.push_str(&format!("url = {}\n", toml_str(url)));
                out.push_str(&format!("http_headers = {}\n", toml_inline(headers)));
            }
        }
        // Tasks run unattended: the server's tools need no approval.
        out.push_str("default_tools_approval_mode = \"approve\"\n");
    }
    out
}

fn toml_inline(map: &std::collections::BTreeMap<String, String>) -> String {
    let items: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
        .collect();
    format!("{{ {} }}", items.join(", "))
}

/// Gemini CLI's `mcpServers` settings object; every server trusted (no confirmation prompt).
pub(crate) fn gemini(servers: &[McpServer]) -> Value {
    let mut map = Map::new();
    for s in servers {
        let v = match &s.transport {
            McpTransport::Stdio { command, args, env } => json!({
                "command": command, "args": args, "env": env, "trust": true,
            }),
            McpTransport::Http { url, headers } => json!({
                "type": "http", "url": url, "headers": headers, "trust": true,
            }),
        };
        map.insert(s.name.clone(), v);
    }
    Value::Object(map)
}

/// OpenCode's `mcp` config object.
pub(crate) fn opencode(servers: &[McpServer]) -> Value {
    let mut map = Map::new();
    for s in servers {
        let v = match &s.transport {
            McpTransport::Stdio { command, args, env } => {
                let mut cmd = vec![command.clone()];
                cmd.extend(args.iter().cloned());
                json!({ "type": "local", "command": cmd, "environment": env, "enabled": true })
            }
            McpTransport::Http { url, headers } => {
                json!({ "type": "remote", "url": url, "headers": headers, "enabled": true })
            }
        };
        map.insert(s.name.clone(), v);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::mcp_servers as servers;

    #[test]
    fn claude_shape() {
        let v: Value = serde_json::from_str(&claude(&servers())).unwrap();
        assert_eq!(
            v,
            json!({"mcpServers": {
                "notes": {"type": "stdio", "command": "node",
                          "args": ["/srv/notes.js", "a \"quoted\" arg"],
                          "env": {"TAG": "{{secret:TOKEN}}"}},
                "docs": {"type": "http", "url": "https://mcp.example/mcp",
                         "headers": {"X-Key": "ph-1"}}
            }})
        );
    }

    #[test]
    fn codex_tables_parse_as_toml() {
        let t: toml::Table = toml::from_str(&codex(&servers())).unwrap();
        let notes = &t["mcp_servers"]["notes"];
        assert_eq!(notes["command"].as_str(), Some("node"));
        assert_eq!(
            notes["args"].as_array().unwrap()[1].as_str(),
            Some("a \"quoted\" arg")
        );
        assert_eq!(notes["env"]["TAG"].as_str(), Some("{{secret:TOKEN}}"));
        assert_eq!(
            notes["default_tools_approval_mode"].as_str(),
            Some("approve")
        );
        let docs = &t["mcp_servers"]["docs"];
        assert_eq!(docs["url"].as_str(), Some("https://mcp.example/mcp"));
        assert_eq!(docs["http_headers"]["X-Key"].as_str(), Some("ph-1"));
        assert!(docs.get("command").is_none());
        assert_eq!(codex(&[]), "");
    }

    #[test]
    fn gemini_and_opencode_shapes() {
        assert_eq!(
            gemini(&servers()),
            json!({
                "notes": {"command": "node", "args": ["/srv/notes.js", "a \"quoted\" arg"],
                          "env": {"TAG": "{{secret:TOKEN}}"}, "trust": true},
                "docs": {"type": "http", "url": "https://mcp.example/mcp",
                         "headers": {"X-Key": "ph-1"}, "trust": true}
            })
        );
        assert_eq!(
            opencode(&servers()),
            json!({
                "notes": {"type": "local", "command": ["node", "/srv/notes.js", "a \"quoted\" arg"],
                          "environment": {"TAG": "{{secret:TOKEN}}"}, "enabled": true},
                "docs": {"type": "remote", "url": "https://mcp.example/mcp",
                         "headers": {"X-Key": "ph-1"}, "enabled": true}
            })
        );
    }
}
