//! Driver for the claude CLI (Claude Code) in `-p --output-format stream-json` mode.
//!
//! One process per turn; follow-ups pass `--resume <session_id>` (the id from `system/init`).
//! With `--include-partial-messages` the CLI also forwards the raw Anthropic SSE events as
//! `stream_event` lines; text deltas become [`EventKind::MessageDelta`], and every complete
//! assistant message still arrives as its own `assistant` line ([`EventKind::Message`]).
//!
//! Its state (`.claude.json`, settings, the session transcripts) goes to
//! `CLAUDE_CONFIG_DIR = <task_dir>/claude`, one per task: parallel tasks in one workspace never
//! write the same config file, and every turn of a task (same task dir) finds its session.
//!
//! With an approval policy other than `never` the turn speaks Claude's permission protocol
//! instead of skipping permissions ([`crate::claude_approval`]).

use berth_domain::{Agent, EventKind};
use serde_json::Value;

use crate::util::{count_of, f64_of, str_of, string, text_content};
use crate::{Driver, Invocation, SessionSpec, TurnSpec};

/// The environment of every claude process (turn or TUI).
fn claude_env(spec: &TurnSpec) -> Vec<(String, String)> {
    let mut env = crate::base_env(spec);
    env.extend(
        [
            ("ANTHROPIC_BASE_URL", spec.gateway_url.as_str()),
            ("ANTHROPIC_API_KEY", spec.virtual_key.as_str()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
            // Lifts the root check of --dangerously-skip-permissions (harmless as uid 1000).
            ("IS_SANDBOX", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    env.push((
        "CLAUDE_CONFIG_DIR".into(),
        spec.task_dir.join("claude").display().to_string(),
    ));
    if !spec.mcp_servers.is_empty() {
        // The declared servers' tools are offered to the model up front instead of behind the
        // ToolSearch tool: their number is small (at most 32 servers), and a gateway upstream
        // need not support tool references.
        env.push(("ENABLE_TOOL_SEARCH".into(), "false".into()));
    }
    env
}

/// The user memory file Claude Code reads from its config dir: berth's instructions.
fn claude_md(spec: &TurnSpec) -> (std::path::PathBuf, String) {
    crate::instructions(spec.task_dir.join("claude").join("CLAUDE.md"))
}

/// The `--mcp-config` file and its flags, when the workspace declares MCP servers.
fn mcp_config(spec: &TurnSpec) -> Option<((std::path::PathBuf, String), [String; 3])> {
    if spec.mcp_servers.is_empty() {
        return None;
    }
    let path = spec.task_dir.join("claude").join("mcp.json");
    let args = [
        "--mcp-config".to_owned(),
        path.display().to_string(),
        "--strict-mcp-config".to_owned(),
    ];
    Some(((path, crate::mcp::claude(&spec.mcp_servers)), args))
}

/// `.claude.json` for the TUI: onboarding done (it would otherwise check connectivity to
/// api.anthropic.com), the folder trusted, the bypass-permissions warning accepted, and the
/// key approved. Claude remembers an approved key by its last 20 characters only, so the file
/// never holds the key itself.
fn tui_state(spec: &SessionSpec) -> String {
    let key = &spec.virtual_key;
    let tail = key
        .char_indices()
        .rev()
        .nth(19)
        .map_or(key.as_str(), |(i, _)| &key[i..]);
    let cwd = spec.cwd.display().to_string();
    let state = serde_json::json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "bypassPermissionsModeAccepted": true,
        "customApiKeyResponses": { "approved": [tail], "rejected": [] },
        "projects": { cwd: { "hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true } },
    });
    format!("{state:#}\n")
}

#[derive(Debug, Default)]
pub struct Claude {
    /// Permission requests Claude waits on (approval policies other than `never`).
    pending: crate::claude_approval::Pending,
}

impl Driver for Claude {
    fn agent(&self) -> Agent {
        Agent::Claude
    }

    fn invocation(&self, spec: &TurnSpec) -> Invocation {
        if spec.approval.asks() {
            return self.invocation_asking(spec);
        }
        let mut args: Vec<String> = [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--dangerously-skip-permissions",
        ]
        .map(String::from)
        .to_vec();
        if let Some(model) = &spec.model {
            args.extend(["--model".into(), model.clone()]);
        }
        if let Some(id) = &spec.resume {
            args.extend(["--resume".into(), id.clone()]);
        }
        let mut files = vec![claude_md(spec)];
        if let Some((file, flags)) = mcp_config(spec) {
            files.push(file);
            args.extend(flags);
        }
        // `--` so a prompt starting with `-` is never taken for an option.
        args.extend(["--".into(), spec.prompt.clone()]);

        Invocation {
            program: Agent::Claude.program().into(),
            args,
            env: claude_env(spec),
            files,
            stdin: None,
            cwd: spec.cwd.clone(),
        }
    }

    fn interactive(&self, spec: &SessionSpec) -> Invocation {
        let mut args = vec!["--dangerously-skip-permissions".to_owned()];
        if let Some(model) = &spec.model {
            args.extend(["--model".into(), model.clone()]);
        }
        if let Some(id) = &spec.resume {
            args.extend(["--resume".into(), id.clone()]);
        }
        let turn = spec.as_turn();
        let config = spec.state_dir.join("claude");
        let settings = "{\n  \"skipDangerousModePermissionPrompt\": true\n}\n".to_owned();
        let mut files = vec![
            (config.join(".claude.json"), tui_state(spec)),
            (config.join("settings.json"), settings),
            claude_md(&turn),
        ];
        if let Some((file, flags)) = mcp_config(&turn) {
            files.push(file);
            args.extend(flags);
        }
        Invocation {
            program: Agent::Claude.program().into(),
            args,
            env: crate::interactive_env(claude_env(&turn)),
            files,
            stdin: None,
            cwd: spec.cwd.clone(),
        }
    }

    fn parse_line(&mut self, line: &str) -> Vec<EventKind> {
        let v = match crate::json_or_log(line) {
            Ok(v) => v,
            Err(events) => return events,
        };
        let events = match str_of(&v, "type") {
            Some("system") => system(&v),
            Some("assistant") => assistant(&v),
            Some("user") => user(&v),
            Some("stream_event") => stream_event(&v),
            Some("result") => result(&v),
            Some("control_request") => self.pending.control_request(&v),
            _ => None,
        };
        events.unwrap_or_else(|| vec![EventKind::Raw { data: v }])
    }

    fn supports_approvals(&self) -> bool {
        true
    }

    fn answer(&mut self, id: &str, approve: bool, message: &str) -> Vec<String> {
        self.pending.answer(id, approve, message)
    }
}

impl Claude {
    /// A turn under an approval policy: the permission protocol on stdin/stdout (see
    /// [`crate::claude_approval`]); the prompt goes in as the first stdin line.
    fn invocation_asking(&self, spec: &TurnSpec) -> Invocation {
        let mut args = crate::claude_approval::args(spec.approval);
        if let Some(model) = &spec.model {
            args.extend(["--model".into(), model.clone()]);
        }
        if let Some(id) = &spec.resume {
            args.extend(["--resume".into(), id.clone()]);
        }
        Invocation {
            program: Agent::Claude.program().into(),
            args,
            env: claude_env(spec),
            files: vec![claude_md(spec)],
            stdin: Some(crate::claude_approval::prompt_line(&spec.prompt)),
            cwd: spec.cwd.clone(),
        }
    }
}

fn system(v: &Value) -> Option<Vec<EventKind>> {
    if str_of(v, "subtype") != Some("init") {
        return None;
    }
    let id = str_of(v, "session_id").filter(|s| !s.is_empty())?;
    Some(vec![EventKind::Session {
        agent_session_id: id.to_owned(),
        model: str_of(v, "model").map(str::to_owned),
    }])
}

fn assistant(v: &Value) -> Option<Vec<EventKind>> {
    let msg = v.get("message")?;
    let mut out = Vec::new();
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let kind = err
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| err.to_string());
        let text = text_content(&msg["content"]);
        let message = if text.is_empty() {
            kind
        } else {
            format!("{kind}: {text}")
        };
        out.push(EventKind::Error { message });
        return Some(out);
    }
    let blocks = msg.get("content")?.as_array()?;
    for block in blocks {
        match str_of(block, "type") {
            Some("text") => {
                let text = string(block, "text");
                if !text.is_empty() {
                    out.push(EventKind::Message { text });
                }
            }
            Some("thinking") => {
                let text = string(block, "thinking");
                if !text.is_empty() {
                    out.push(EventKind::Reasoning { text });
                }
            }
            // Encrypted thinking carries nothing readable.
            Some("redacted_thinking") => {}
            Some("tool_use" | "server_tool_use") => out.push(EventKind::ToolCall {
                call_id: string(block, "id"),
                name: string(block, "name"),
                input: block.get("input").cloned().unwrap_or(Value::Null),
            }),
            _ => out.push(EventKind::Raw {
                data: block.clone(),
            }),
        }
    }
    Some(out)
}

fn user(v: &Value) -> Option<Vec<EventKind>> {
    let blocks = v.get("message")?.get("content")?.as_array()?;
    let results: Vec<EventKind> = blocks
        .iter()
        .filter(|b| str_of(b, "type") == Some("tool_result"))
        .map(|b| EventKind::ToolResult {
            call_id: string(b, "tool_use_id"),
            output: text_content(&b["content"]),
            exit_code: None,
            is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        })
        .collect();
    // User text (replays, synthetic messages) is not a tool result: keep it as Raw.
    (!results.is_empty()).then_some(results)
}

fn stream_event(v: &Value) -> Option<Vec<EventKind>> {
    let ev = v.get("event")?;
    match str_of(ev, "type")? {
        "content_block_delta" => {
            let delta = ev.get("delta")?;
            match str_of(delta, "type")? {
                "text_delta" => {
                    let text = string(delta, "text");
                    Some(if text.is_empty() {
                        Vec::new()
                    } else {
                        vec![EventKind::MessageDelta { text }]
                    })
                }
                // The complete blocks arrive in the following `assistant` line.
                "thinking_delta" | "signature_delta" | "input_json_delta" | "citations_delta" => {
                    Some(Vec::new())
                }
                _ => None,
            }
        }
        // Framing: the content is repeated by the `assistant` / `result` lines.
        "message_start"
        | "content_block_start"
        | "content_block_stop"
        | "message_delta"
        | "message_stop"
        | "ping" => Some(Vec::new()),
        _ => None,
    }
}

fn result(v: &Value) -> Option<Vec<EventKind>> {
    let mut out = Vec::new();
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        let cached = count_of(u, "cache_read_input_tokens");
        out.push(EventKind::Usage {
            // Normalized: all input tokens, of which `cached_input_tokens` came from cache.
            input_tokens: count_of(u, "input_tokens")
                .saturating_add(count_of(u, "cache_creation_input_tokens"))
                .saturating_add(cached),
            output_tokens: count_of(u, "output_tokens"),
            cached_input_tokens: cached,
            cost_usd: f64_of(v, "total_cost_usd").or_else(|| f64_of(v, "cost_usd")),
        });
    }
    let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
    let subtype = str_of(v, "subtype").unwrap_or("success");
    let result = str_of(v, "result").map(str::to_owned);
    if is_error || subtype != "success" {
        let errors = match v.get("errors") {
            Some(Value::Array(errs)) => errs
                .iter()
                .map(|e| {
                    e.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| e.to_string())
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::new(),
        };
        let message = [errors, result.clone().unwrap_or_default()]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| format!("claude turn ended with {subtype}"));
        out.push(EventKind::Error { message });
    }
    out.push(EventKind::TurnCompleted { result });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_interactive, env_of, parse_all, session_spec, spec};
    use serde_json::json;

    #[test]
    fn mcp_servers_go_to_a_strict_per_task_config() {
        let mut sp = spec(Agent::Claude);
        assert!(!Claude::default()
            .invocation(&sp)
            .args
            .iter()
            .any(|a| a.contains("mcp")));
        sp.mcp_servers = crate::testutil::mcp_servers();
        let inv = Claude::default().invocation(&sp);
        let path = "/var/berth/tasks/t1/claude/mcp.json";
        let at = inv.args.iter().position(|a| a == "--mcp-config").unwrap();
        assert_eq!(inv.args[at + 1], path);
        assert_eq!(inv.args[at + 2], "--strict-mcp-config");
        // The prompt stays last, after `--`.
        assert!(at < inv.args.iter().position(|a| a == "--").unwrap());
        let (_, content) = inv
            .files
            .iter()
            .find(|(p, _)| p.ends_with("mcp.json"))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(content).unwrap();
        assert_eq!(v["mcpServers"]["notes"]["command"], "node");
        assert_eq!(v["mcpServers"]["docs"]["type"], "http");
        assert_eq!(env_of(&inv)["ENABLE_TOOL_SEARCH"], "false");

        let mut ss = session_spec(Agent::Claude);
        ss.mcp_servers = crate::testutil::mcp_servers();
        let inv = Claude::default().interactive(&ss);
        let path = "/home/agent/.berth/sessions/s1/claude/mcp.json";
        let at = inv.args.iter().position(|a| a == "--mcp-config").unwrap();
        assert_eq!(inv.args[at + 1], path);
        assert!(inv
            .files
            .iter()
            .any(|(p, c)| p.to_str() == Some(path) && c.contains("notes")));
    }

    #[test]
    fn interactive_tui_is_configured_like_a_turn_with_dialogs_answered() {
        let mut s = session_spec(Agent::Claude);
        let inv = Claude::default().interactive(&s);
        assert_eq!(inv.program, "claude");
        assert_eq!(inv.args, ["--dangerously-skip-permissions"]);
        let env = check_interactive(&inv);
        assert_eq!(env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:7788/anthropic");
        assert_eq!(env["ANTHROPIC_API_KEY"], s.virtual_key);
        assert_eq!(
            env["CLAUDE_CONFIG_DIR"],
            "/home/agent/.berth/sessions/s1/claude"
        );
        assert_eq!(env["IS_SANDBOX"], "1");
        assert_eq!(env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"], "1");
        let (path, state) = &inv.files[0];
        assert_eq!(
            path.display().to_string(),
            "/home/agent/.berth/sessions/s1/claude/.claude.json"
        );
        let v: serde_json::Value = serde_json::from_str(state).unwrap();
        assert_eq!(v["hasCompletedOnboarding"], true);
        assert_eq!(v["bypassPermissionsModeAccepted"], true);
        assert_eq!(
            v["projects"]["/workspace/repo"]["hasTrustDialogAccepted"],
            true
        );
        // Claude approves a key by its last 20 characters; the whole key is never written.
        assert_eq!(
            v["customApiKeyResponses"]["approved"][0],
            "0123456789abcdefghij"
        );
        assert!(!state.contains(&s.virtual_key));
        assert!(inv.files[1].1.contains("skipDangerousModePermissionPrompt"));

        s.resume = Some("sess-1".into());
        s.model = Some("claude-x".into());
        let inv = Claude::default().interactive(&s);
        assert_eq!(
            inv.args,
            [
                "--dangerously-skip-permissions",
                "--model",
                "claude-x",
                "--resume",
                "sess-1"
            ]
        );
    }

    #[test]
    fn invocation_first_turn() {
        let s = spec(Agent::Claude);
        let inv = Claude::default().invocation(&s);
        assert_eq!(inv.program, "claude");
        assert_eq!(
            inv.args,
            [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--include-partial-messages",
                "--dangerously-skip-permissions",
                "--",
                "Create hello.txt"
            ]
        );
        let env = env_of(&inv);
        assert_eq!(env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:7788/anthropic");
        assert_eq!(env["ANTHROPIC_API_KEY"], "vk-test");
        assert_eq!(env["CLAUDE_CONFIG_DIR"], "/var/berth/tasks/t1/claude");
        assert_eq!(env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"], "1");
        assert_eq!(env["DISABLE_AUTOUPDATER"], "1");
        assert_eq!(env["IS_SANDBOX"], "1");
        assert_eq!(env["HOME"], "/home/agent");
        assert_eq!(env["TMPDIR"], "/var/berth/tasks/t1/tmp");
        // Only berth's instructions, as Claude Code's user memory.
        assert_eq!(inv.files.len(), 1);
        assert_eq!(
            inv.files[0].0.to_str(),
            Some("/var/berth/tasks/t1/claude/CLAUDE.md")
        );
        assert!(inv.files[0].1.contains("berth request egress"));
        assert_eq!(inv.stdin, None);
        assert_eq!(inv.cwd, s.cwd);
        // The key only appears as the one env value.
        assert!(!inv.args.iter().any(|a| a.contains("vk-test")));
        assert!(!env.contains_key("ANTHROPIC_AUTH_TOKEN"));
    }

    #[test]
    fn invocation_follow_up_with_model() {
        let mut s = spec(Agent::Claude);
        s.model = Some("claude-sonnet-5".into());
        s.resume = Some("8dbf-1".into());
        s.prompt = "--not a flag".into();
        let inv = Claude::default().invocation(&s);
        let tail: Vec<&str> = inv.args.iter().skip(6).map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "--model",
                "claude-sonnet-5",
                "--resume",
                "8dbf-1",
                "--",
                "--not a flag"
            ]
        );
    }

    /// The stdout sample of agent-clis-offline.md (the trimmed `…` parts filled in).
    const SAMPLE: &str = r#"{"type":"system","subtype":"init","cwd":"/w/claude/repo","session_id":"8dbf0c1e","model":"claude-opus-5-5","permissionMode":"bypassPermissions","apiKeySource":"ANTHROPIC_API_KEY","claude_code_version":"2.1.330"}
{"type":"assistant","message":{"id":"msg_1","model":"claude-opus-5-5","content":[{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"echo hi > out.txt","description":"Write out.txt"}}],"stop_reason":null},"session_id":"8dbf0c1e"}
{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_1","type":"tool_result","content":"(Bash completed with no output)","is_error":false}]},"session_id":"8dbf0c1e"}
{"type":"assistant","message":{"id":"msg_2","model":"claude-opus-5-5","content":[{"type":"text","text":"DONE"}],"stop_reason":null},"session_id":"8dbf0c1e"}
{"subtype":"success","is_error":false,"type":"result","result":"DONE","stop_reason":"end_turn","num_turns":2,"total_cost_usd":0.0123,"usage":{"input_tokens":20,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":10}}"#;

    #[test]
    fn parses_sample() {
        let events = parse_all(&mut Claude::default(), SAMPLE);
        assert_eq!(
            events,
            vec![
                EventKind::Session {
                    agent_session_id: "8dbf0c1e".into(),
                    model: Some("claude-opus-5-5".into())
                },
                EventKind::ToolCall {
                    call_id: "toolu_1".into(),
                    name: "Bash".into(),
                    input: json!({"command":"echo hi > out.txt","description":"Write out.txt"}),
                },
                EventKind::ToolResult {
                    call_id: "toolu_1".into(),
                    output: "(Bash completed with no output)".into(),
                    exit_code: None,
                    is_error: false
                },
                EventKind::Message {
                    text: "DONE".into()
                },
                EventKind::Usage {
                    input_tokens: 125,
                    output_tokens: 10,
                    cached_input_tokens: 100,
                    cost_usd: Some(0.0123)
                },
                EventKind::TurnCompleted {
                    result: Some("DONE".into())
                },
            ]
        );
    }

    #[test]
    fn parses_deltas_thinking_and_block_results() {
        let mut d = Claude::default();
        let lines = [
            r#"{"type":"stream_event","event":{"type":"message_start","message":{}}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"DO"}}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"NE"}}}"#,
            r#"{"type":"stream_event","event":{"type":"message_stop"}}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"thinking","thinking":"hm","signature":"x"},{"type":"text","text":"DONE"}]}}"#,
            r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t2","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"is_error":true}]}}"#,
        ];
        let events = parse_all(&mut d, &lines.join("\n"));
        assert_eq!(
            events,
            vec![
                EventKind::MessageDelta { text: "DO".into() },
                EventKind::MessageDelta { text: "NE".into() },
                EventKind::Reasoning { text: "hm".into() },
                EventKind::Message {
                    text: "DONE".into()
                },
                EventKind::ToolResult {
                    call_id: "t2".into(),
                    output: "a\nb".into(),
                    exit_code: None,
                    is_error: true
                },
            ]
        );
    }

    #[test]
    fn errors() {
        let mut d = Claude::default();
        let events = parse_all(
            &mut d,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Invalid API key"}]},"error":"authentication_failed"}
{"type":"result","subtype":"error_during_execution","is_error":true,"total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0},"errors":["No conversation found with session ID: x"]}"#,
        );
        assert_eq!(
            events,
            vec![
                EventKind::Error {
                    message: "authentication_failed: Invalid API key".into()
                },
                EventKind::Usage {
                    input_tokens: 0,
                    output_tokens: 0,
                    cached_input_tokens: 0,
                    cost_usd: Some(0.0)
                },
                EventKind::Error {
                    message: "No conversation found with session ID: x".into()
                },
                EventKind::TurnCompleted { result: None },
            ]
        );
    }

    #[test]
    fn unknown_and_garbage() {
        let mut d = Claude::default();
        let raw = json!({"type":"system","subtype":"api_retry","attempt":1});
        assert_eq!(
            d.parse_line(&raw.to_string()),
            vec![EventKind::Raw { data: raw.clone() }]
        );
        let user_text = json!({"type":"user","message":{"content":"hello"}});
        assert_eq!(
            d.parse_line(&user_text.to_string()),
            vec![EventKind::Raw { data: user_text }]
        );
        assert_eq!(
            d.parse_line("No conversation found"),
            vec![EventKind::Log {
                line: "No conversation found".into()
            }]
        );
        crate::testutil::fuzz(&mut d, SAMPLE);
    }
}
