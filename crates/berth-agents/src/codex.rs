//! Driver for the codex CLI in `codex exec --json` mode.
//!
//! Configuration goes to `$CODEX_HOME/config.toml` with `CODEX_HOME = <task_dir>/codex`: a custom
//! model provider `berth` pointing at the gateway (`<gateway_url>/v1`, Responses API), the key
//! read from `BERTH_VIRTUAL_KEY`, all phone-home features off. Codex keeps its session rollouts
//! under `CODEX_HOME`, so follow-ups of the same task (same task dir) can
//! `codex exec resume <thread_id>`.
//!
//! The workspace's MCP servers are `[mcp_servers.NAME]` tables at the end of the same file, each
//! with its tools approved (`default_tools_approval_mode = "approve"`): tasks run unattended.

use std::collections::HashSet;

use berth_domain::{Agent, EventKind};
use serde_json::{json, Value};

use crate::util::{count_of, exit_code, join_url, str_of, string, toml_str};
use crate::{Driver, Invocation, SessionSpec, TurnSpec};

/// Model used when the task does not choose one (a slug Codex has metadata for).
pub const DEFAULT_MODEL: &str = "gpt-5.5";

#[derive(Debug, Default)]
pub struct Codex {
    /// Ids of tool items already reported as [`EventKind::ToolCall`].
    started: HashSet<String>,
    /// The last agent message of the turn, reported as the turn's result.
    last_message: Option<String>,
}

impl Codex {
    fn config(spec: &TurnSpec) -> String {
        let model = spec.model.as_deref().unwrap_or(DEFAULT_MODEL);
        let base_url = join_url(&spec.gateway_url, "v1");
        format!(
            r#"# Written by berth for this task.
model = {model}
model_provider = "berth"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false
apps = false

[model_providers.berth]
name = "berth"
base_url = {base_url}
env_key = "BERTH_VIRTUAL_KEY"
wire_api = "responses"
{mcp}"#,
            model = toml_str(model),
            base_url = toml_str(&base_url),
            mcp = crate::mcp::codex(&spec.mcp_servers),
        )
    }
}

/// What the TUI asks on a first run, answered: the working directory is trusted, the
/// full-access and model-upgrade notices count as seen.
fn tui_config(spec: &SessionSpec) -> String {
    let model = spec.model.as_deref().unwrap_or(DEFAULT_MODEL);
    format!(
        r#"
[notice]
hide_full_access_warning = true
hide_world_writable_warning = true
hide_rate_limit_model_nudge = true

[notice.model_migrations]
{model} = "gpt-6-sol"

[projects.{cwd}]
trust_level = "trusted"
"#,
        model = toml_str(model),
        cwd = toml_str(&spec.cwd.display().to_string()),
    )
}

impl Driver for Codex {
    fn agent(&self) -> Agent {
        Agent::Codex
    }

    fn invocation(&self, spec: &TurnSpec) -> Invocation {
        let codex_home = spec.task_dir.join("codex");
        let mut args: Vec<String> = vec!["exec".into()];
        if spec.resume.is_some() {
            args.push("resume".into());
        }
        args.extend(
            [
                "--json",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
            ]
            .map(String::from),
        );
        // `exec resume` has no `-C`: the process cwd is the working directory either way.
        if spec.resume.is_none() {
            args.extend(["-C".into(), spec.cwd.display().to_string()]);
        }
        if let Some(model) = &spec.model {
            args.extend(["-m".into(), model.clone()]);
        }
        args.push("--".into());
        if let Some(id) = &spec.resume {
            args.push(id.clone());
        }
        args.push(spec.prompt.clone());

        let mut env = crate::base_env(spec);
        env.push(("CODEX_HOME".into(), codex_home.display().to_string()));
        env.push(("BERTH_VIRTUAL_KEY".into(), spec.virtual_key.clone()));

        Invocation {
            program: Agent::Codex.program().into(),
            args,
            env,
            files: vec![
                (codex_home.join("config.toml"), Self::config(spec)),
                crate::instructions(codex_home.join("AGENTS.md")),
            ],
            // Codex also reads stdin when it is open: it must be /dev/null.
            stdin: None,
            cwd: spec.cwd.clone(),
        }
    }

    fn interactive(&self, spec: &SessionSpec) -> Invocation {
        let turn = spec.as_turn();
        let codex_home = spec.state_dir.join("codex");
        let mut args: Vec<String> = Vec::new();
        if spec.resume.is_some() {
            args.push("resume".into());
        }
        args.push("--dangerously-bypass-approvals-and-sandbox".into());
        if spec.resume.is_none() {
            args.extend(["-C".into(), spec.cwd.display().to_string()]);
        }
        if let Some(model) = &spec.model {
            args.extend(["-m".into(), model.clone()]);
        }
        if let Some(id) = &spec.resume {
            args.extend(["--".into(), id.clone()]);
        }
        let mut env = crate::base_env(&turn);
        env.push(("CODEX_HOME".into(), codex_home.display().to_string()));
        env.push(("BERTH_VIRTUAL_KEY".into(), spec.virtual_key.clone()));
        let config = Self::config(&turn) + &tui_config(spec);
        Invocation {
            program: Agent::Codex.program().into(),
            args,
            env: crate::interactive_env(env),
            files: vec![
                (codex_home.join("config.toml"), config),
                crate::instructions(codex_home.join("AGENTS.md")),
            ],
            stdin: None,
            cwd: spec.cwd.clone(),
        }
    }

    /// `turn.completed.usage` is the thread's total (verified: a resumed turn reports the sum of
    /// all turns).
    fn usage_is_cumulative(&self) -> bool {
        true
    }

    fn parse_line(&mut self, line: &str) -> Vec<EventKind> {
        let v = match crate::json_or_log(line) {
            Ok(v) => v,
            Err(events) => return events,
        };
        let events = match str_of(&v, "type") {
            Some("thread.started") => str_of(&v, "thread_id").filter(|s| !s.is_empty()).map(|id| {
                vec![EventKind::Session {
                    agent_session_id: id.to_owned(),
                    model: None,
                }]
            }),
            Some("turn.started") => Some(Vec::new()),
            Some("item.started") => v.get("item").and_then(|i| self.item_started(i)),
            Some("item.updated") => v.get("item").and_then(|i| self.item_updated(i)),
            Some("item.completed") => v.get("item").and_then(|i| self.item_completed(i)),
            Some("turn.completed") => {
                let u = &v["usage"];
                Some(vec![
                    EventKind::Usage {
                        input_tokens: count_of(u, "input_tokens"),
                        output_tokens: count_of(u, "output_tokens"),
                        cached_input_tokens: count_of(u, "cached_input_tokens"),
                        cost_usd: None,
                    },
                    EventKind::TurnCompleted {
                        result: self.last_message.take(),
                    },
                ])
            }
            Some("turn.failed") => Some(vec![EventKind::Error {
                message: error_message(&v["error"], "codex turn failed"),
            }]),
            Some("error") => Some(vec![EventKind::Error {
                message: error_message(&v, "codex error"),
            }]),
            _ => None,
        };
        events.unwrap_or_else(|| vec![EventKind::Raw { data: v }])
    }
}

fn error_message(v: &Value, fallback: &str) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => str_of(v, "message")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| fallback.to_owned()),
    }
}

impl Codex {
    fn tool_call(&mut self, item: &Value) -> Option<EventKind> {
        let id = string(item, "id");
        let (name, input) = match str_of(item, "type")? {
            "command_execution" => ("shell".to_owned(), json!({"command": item["command"]})),
            "mcp_tool_call" => (
                format!("{}.{}", string(item, "server"), string(item, "tool")),
                item.get("arguments").cloned().unwrap_or(Value::Null),
            ),
            _ => return None,
        };
        self.started
            .insert(id.clone())
            .then_some(EventKind::ToolCall {
                call_id: id,
                name,
                input,
            })
    }

    fn item_started(&mut self, item: &Value) -> Option<Vec<EventKind>> {
        match str_of(item, "type")? {
            "command_execution" | "mcp_tool_call" => {
                Some(self.tool_call(item).into_iter().collect())
            }
            // Reported when completed.
            "agent_message" | "reasoning" | "file_change" => Some(Vec::new()),
            _ => None,
        }
    }

    fn item_updated(&mut self, item: &Value) -> Option<Vec<EventKind>> {
        match str_of(item, "type")? {
            "command_execution" | "mcp_tool_call" => {
                Some(self.tool_call(item).into_iter().collect())
            }
            "agent_message" | "reasoning" | "file_change" => Some(Vec::new()),
            _ => None,
        }
    }

    fn item_completed(&mut self, item: &Value) -> Option<Vec<EventKind>> {
        let status = str_of(item, "status").unwrap_or("completed");
        match str_of(item, "type")? {
            "agent_message" => {
                let text = string(item, "text");
                self.last_message = Some(text.clone());
                Some(vec![EventKind::Message { text }])
            }
            "reasoning" => Some(vec![EventKind::Reasoning {
                text: string(item, "text"),
            }]),
            "command_execution" => {
                let mut out: Vec<EventKind> = self.tool_call(item).into_iter().collect();
                let code = item.get("exit_code").and_then(exit_code);
                out.push(EventKind::ToolResult {
                    call_id: string(item, "id"),
                    output: string(item, "aggregated_output"),
                    exit_code: code,
                    is_error: matches!(status, "failed" | "declined")
                        || code.is_some_and(|c| c != 0),
                });
                Some(out)
            }
            "mcp_tool_call" => {
                let mut out: Vec<EventKind> = self.tool_call(item).into_iter().collect();
                let error = item.get("error").filter(|e| !e.is_null());
                let output = match (error, item.get("result").filter(|r| !r.is_null())) {
                    (Some(e), _) => error_message(e, "mcp tool call failed"),
                    (None, Some(r)) => match r.get("content") {
                        Some(c) => crate::util::text_content(c),
                        None => r.to_string(),
                    },
                    (None, None) => String::new(),
                };
                out.push(EventKind::ToolResult {
                    call_id: string(item, "id"),
                    output,
                    exit_code: None,
                    is_error: error.is_some() || status == "failed",
                });
                Some(out)
            }
            "file_change" if status != "failed" => {
                let changes = item.get("changes")?.as_array()?;
                Some(
                    changes
                        .iter()
                        .map(|c| EventKind::FileChange {
                            path: string(c, "path"),
                            change: string(c, "kind"),
                        })
                        .collect(),
                )
            }
            "error" => {
                let message = string(item, "message");
                // Codex reports non-fatal problems as error items; the model-metadata fallback
                // warning (unknown model slug) is harmless.
                if message.starts_with("Model metadata for") {
                    Some(vec![EventKind::Log {
                        line: format!("codex: {message}"),
                    }])
                } else {
                    Some(vec![EventKind::Error { message }])
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_interactive, env_of, parse_all, session_spec, spec};

    #[test]
    fn mcp_servers_are_tables_of_the_task_config() {
        let mut sp = spec(Agent::Codex);
        sp.mcp_servers = crate::testutil::mcp_servers();
        let inv = Codex::default().invocation(&sp);
        assert_eq!(inv.files.len(), 2);
        let (path, content) = &inv.files[0];
        assert!(path.starts_with("/var/berth/tasks/t1/codex"));
        let t: toml::Table = toml::from_str(content).unwrap();
        // The root keys stay root keys (the tables come last).
        assert_eq!(t["model_provider"].as_str(), Some("berth"));
        assert_eq!(t["mcp_servers"]["notes"]["command"].as_str(), Some("node"));
        assert_eq!(
            t["mcp_servers"]["docs"]["url"].as_str(),
            Some("https://mcp.example/mcp")
        );

        let mut ss = session_spec(Agent::Codex);
        ss.mcp_servers = crate::testutil::mcp_servers();
        let inv = Codex::default().interactive(&ss);
        let t: toml::Table = toml::from_str(&inv.files[0].1).unwrap();
        assert_eq!(
            t["mcp_servers"]["notes"]["args"][0].as_str(),
            Some("/srv/notes.js")
        );
        assert_eq!(
            t["notice"]["hide_full_access_warning"].as_bool(),
            Some(true)
        );
        assert_eq!(t["model_provider"].as_str(), Some("berth"));
    }

    #[test]
    fn interactive_tui_is_configured_like_a_turn_with_dialogs_answered() {
        let mut s = session_spec(Agent::Codex);
        let inv = Codex::default().interactive(&s);
        assert_eq!(inv.program, "codex");
        assert_eq!(
            inv.args,
            [
                "--dangerously-bypass-approvals-and-sandbox",
                "-C",
                "/workspace/repo"
            ]
        );
        let env = check_interactive(&inv);
        assert_eq!(env["CODEX_HOME"], "/home/agent/.berth/sessions/s1/codex");
        assert_eq!(env["BERTH_VIRTUAL_KEY"], s.virtual_key);
        let (path, config) = &inv.files[0];
        assert_eq!(
            path.display().to_string(),
            "/home/agent/.berth/sessions/s1/codex/config.toml"
        );
        assert!(config.contains("base_url = \"http://127.0.0.1:7788/openai/v1\""));
        assert!(config.contains("approval_policy = \"never\""));
        assert!(config.contains("sandbox_mode = \"danger-full-access\""));
        assert!(config.contains("[projects.\"/workspace/repo\"]\ntrust_level = \"trusted\""));
        assert!(config.contains("hide_full_access_warning = true"));
        assert!(config.contains("\"gpt-5.5\" = \"gpt-6-sol\""));
        assert!(!config.contains(&s.virtual_key));

        s.resume = Some("0199-thread".into());
        let inv = Codex::default().interactive(&s);
        assert_eq!(
            inv.args,
            [
                "resume",
                "--dangerously-bypass-approvals-and-sandbox",
                "--",
                "0199-thread"
            ]
        );
    }

    #[test]
    fn invocation_first_turn() {
        let s = spec(Agent::Codex);
        let inv = Codex::default().invocation(&s);
        assert_eq!(inv.program, "codex");
        assert_eq!(
            inv.args,
            [
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                "-C",
                "/workspace/repo",
                "--",
                "Create hello.txt"
            ]
        );
        let env = env_of(&inv);
        assert_eq!(env["CODEX_HOME"], "/var/berth/tasks/t1/codex");
        assert_eq!(env["BERTH_VIRTUAL_KEY"], "vk-test");
        assert_eq!(inv.stdin, None);
        assert_eq!(inv.files.len(), 2);
        assert_eq!(
            inv.files[1].0.to_str(),
            Some("/var/berth/tasks/t1/codex/AGENTS.md")
        );
        assert!(inv.files[1].1.contains("berth request egress"));
        let (path, config) = &inv.files[0];
        assert_eq!(path.to_str(), Some("/var/berth/tasks/t1/codex/config.toml"));
        for line in [
            "model = \"gpt-5.5\"",
            "model_provider = \"berth\"",
            "approval_policy = \"never\"",
            "sandbox_mode = \"danger-full-access\"",
            "check_for_update_on_startup = false",
            "[model_providers.berth]",
            "base_url = \"http://127.0.0.1:7788/openai/v1\"",
            "env_key = \"BERTH_VIRTUAL_KEY\"",
            "wire_api = \"responses\"",
        ] {
            assert!(
                config.lines().any(|l| l == line),
                "missing {line}:\n{config}"
            );
        }
        let parsed: Result<toml::Value, _> = config.parse();
        let parsed = parsed.unwrap_or_else(|e| panic!("invalid toml: {e}"));
        assert_eq!(parsed["analytics"]["enabled"].as_bool(), Some(false));
        assert_eq!(parsed["features"]["plugins"].as_bool(), Some(false));
        assert_eq!(parsed["features"]["apps"].as_bool(), Some(false));
    }

    #[test]
    fn invocation_follow_up() {
        let mut s = spec(Agent::Codex);
        s.resume = Some("01a206d8".into());
        s.model = Some("o\"dd".into());
        s.prompt = "-".into();
        let inv = Codex::default().invocation(&s);
        assert_eq!(
            inv.args,
            [
                "exec",
                "resume",
                "--json",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                "-m",
                "o\"dd",
                "--",
                "01a206d8",
                "-"
            ]
        );
        let config: toml::Value = inv.files[0]
            .1
            .parse()
            .unwrap_or_else(|e| panic!("invalid toml: {e}"));
        assert_eq!(config["model"].as_str(), Some("o\"dd"));
    }

    /// The complete stdout sample of agent-clis-offline.md.
    const SAMPLE: &str = r#"{"type":"thread.started","thread_id":"01a206d8-…"}
{"type":"turn.started"}
{"type":"item.started","item":{"id":"item_0","type":"command_execution","command":"/bin/bash -lc 'echo hi > out.txt'","aggregated_output":"","exit_code":null,"status":"in_progress"}}
{"type":"item.completed","item":{"id":"item_0","type":"command_execution","command":"/bin/bash -lc 'echo hi > out.txt'","aggregated_output":"","exit_code":0,"status":"completed"}}
{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"DONE"}}
{"type":"turn.completed","usage":{"input_tokens":20,"cached_input_tokens":0,"cache_write_input_tokens":0,"output_tokens":10,"reasoning_output_tokens":0}}"#;

    #[test]
    fn parses_sample() {
        let events = parse_all(&mut Codex::default(), SAMPLE);
        assert_eq!(
            events,
            vec![
                EventKind::Session {
                    agent_session_id: "01a206d8-…".into(),
                    model: None
                },
                EventKind::ToolCall {
                    call_id: "item_0".into(),
                    name: "shell".into(),
                    input: json!({"command": "/bin/bash -lc 'echo hi > out.txt'"}),
                },
                EventKind::ToolResult {
                    call_id: "item_0".into(),
                    output: String::new(),
                    exit_code: Some(0),
                    is_error: false
                },
                EventKind::Message {
                    text: "DONE".into()
                },
                EventKind::Usage {
                    input_tokens: 20,
                    output_tokens: 10,
                    cached_input_tokens: 0,
                    cost_usd: None
                },
                EventKind::TurnCompleted {
                    result: Some("DONE".into())
                },
            ]
        );
    }

    #[test]
    fn parses_other_items_and_errors() {
        let text = r#"{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata for `mock-model` not found. Defaulting to fallback metadata; this can degrade performance and cause issues."}}
{"type":"item.completed","item":{"id":"item_1","type":"reasoning","text":"thinking"}}
{"type":"item.completed","item":{"id":"item_2","type":"command_execution","command":"false","aggregated_output":"boom\n","exit_code":1,"status":"failed"}}
{"type":"item.completed","item":{"id":"item_3","type":"file_change","changes":[{"path":"/w/a.rs","kind":"add"},{"path":"/w/b.rs","kind":"update"}],"status":"completed"}}
{"type":"item.started","item":{"id":"item_4","type":"todo_list","items":[]}}
{"type":"error","message":"Reconnecting... 1/5"}
{"type":"turn.failed","error":{"message":"stream disconnected"}}"#;
        let events = parse_all(&mut Codex::default(), text);
        assert_eq!(
            events,
            vec![
                EventKind::Log { line: "codex: Model metadata for `mock-model` not found. Defaulting to fallback metadata; this can degrade performance and cause issues.".into() },
                EventKind::Reasoning { text: "thinking".into() },
                EventKind::ToolCall { call_id: "item_2".into(), name: "shell".into(), input: json!({"command": "false"}) },
                EventKind::ToolResult { call_id: "item_2".into(), output: "boom\n".into(), exit_code: Some(1), is_error: true },
                EventKind::FileChange { path: "/w/a.rs".into(), change: "add".into() },
                EventKind::FileChange { path: "/w/b.rs".into(), change: "update".into() },
                EventKind::Raw { data: json!({"type":"item.started","item":{"id":"item_4","type":"todo_list","items":[]}}) },
                EventKind::Error { message: "Reconnecting... 1/5".into() },
                EventKind::Error { message: "stream disconnected".into() },
            ]
        );
    }

    #[test]
    fn unknown_and_garbage() {
        let mut d = Codex::default();
        let raw = json!({"type":"item.plan.delta","item_id":"x","delta":"y"});
        assert_eq!(
            d.parse_line(&raw.to_string()),
            vec![EventKind::Raw { data: raw }]
        );
        assert_eq!(
            d.parse_line("Reading additional input from stdin..."),
            vec![EventKind::Log {
                line: "Reading additional input from stdin...".into()
            }]
        );
        crate::testutil::fuzz(&mut d, SAMPLE);
    }
}
