//! Driver for the gemini CLI (Gemini CLI) in `-p … -o stream-json` mode.
//!
//! Settings go to `$GEMINI_CLI_HOME/.gemini/settings.json` (API-key auth, telemetry, usage
//! statistics and auto-update off), with `GEMINI_CLI_HOME = <task_dir>/gemini`: one state
//! directory per task, so parallel tasks in one workspace never share the CLI's files, and every
//! turn of a task (same task dir) finds its chats to resume. The CLI streams the assistant's text as `message` events with
//! `delta: true`; the driver forwards them as [`EventKind::MessageDelta`] and also emits the
//! accumulated text as one [`EventKind::Message`] when the text segment ends (a tool call, the
//! result, …), so every driver reports complete messages.
//!
//! The workspace's MCP servers go to the same settings file's `mcpServers`, each `trust: true`
//! (its tools run without a confirmation, as everything does in yolo mode).

use berth_domain::{Agent, EventKind};
use serde_json::{json, Value};

use crate::util::{count_of, str_of, string};
use crate::{Driver, Invocation, SessionSpec, TurnSpec};

/// Model used when the task does not choose one. Naming a model skips the CLI's routing
/// classifier (an extra LLM call per turn with the default `auto`).
pub const DEFAULT_MODEL: &str = "gemini-2.5-pro";

#[derive(Debug, Default)]
pub struct Gemini {
    /// Text of the current streamed assistant message.
    pending: String,
    /// The last complete assistant message, reported as the turn's result.
    last_message: Option<String>,
}

impl Gemini {
    fn settings(spec: &TurnSpec) -> String {
        let mut settings = json!({
            "security": { "auth": { "selectedType": "gemini-api-key" } },
            "telemetry": { "enabled": false },
            "privacy": { "usageStatisticsEnabled": false },
            "general": { "disableAutoUpdate": true, "disableUpdateNag": true },
        });
        if !spec.mcp_servers.is_empty() {
            settings["mcpServers"] = crate::mcp::gemini(&spec.mcp_servers);
        }
        format!("{settings:#}\n")
    }

    /// Ends the current streamed message, if any.
    fn flush(&mut self, out: &mut Vec<EventKind>) {
        if !self.pending.is_empty() {
            let text = std::mem::take(&mut self.pending);
            self.last_message = Some(text.clone());
            out.push(EventKind::Message { text });
        }
    }
}

/// The environment of every gemini process (turn or TUI): the gateway, the key, the folder
/// trusted, its own state directory.
fn gemini_env(spec: &TurnSpec) -> Vec<(String, String)> {
    let mut env = crate::base_env(spec);
    env.extend(
        [
            ("GOOGLE_GEMINI_BASE_URL", spec.gateway_url.as_str()),
            ("GEMINI_API_KEY", spec.virtual_key.as_str()),
            ("GEMINI_CLI_NO_RELAUNCH", "true"),
            ("GEMINI_CLI_TRUST_WORKSPACE", "true"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let gemini_home = spec.task_dir.join("gemini");
    env.push(("GEMINI_CLI_HOME".into(), gemini_home.display().to_string()));
    env
}

fn settings_file(spec: &TurnSpec) -> (std::path::PathBuf, String) {
    (
        spec.task_dir
            .join("gemini")
            .join(".gemini")
            .join("settings.json"),
        Gemini::settings(spec),
    )
}

/// The global context file Gemini CLI reads from its home: berth's instructions.
fn gemini_md(spec: &TurnSpec) -> (std::path::PathBuf, String) {
    crate::instructions(
        spec.task_dir
            .join("gemini")
            .join(".gemini")
            .join("GEMINI.md"),
    )
}

impl Driver for Gemini {
    fn agent(&self) -> Agent {
        Agent::Gemini
    }

    fn invocation(&self, spec: &TurnSpec) -> Invocation {
        let model = spec.model.as_deref().unwrap_or(DEFAULT_MODEL);
        let mut args: Vec<String> = vec![
            // `--prompt=` form so a prompt starting with `-` stays the option's value.
            format!("--prompt={}", spec.prompt),
            "-o".into(),
            "stream-json".into(),
            "--approval-mode".into(),
            "yolo".into(),
            "--skip-trust".into(),
            "-m".into(),
            model.into(),
        ];
        if let Some(id) = &spec.resume {
            args.extend(["--resume".into(), id.clone()]);
        }

        Invocation {
            program: Agent::Gemini.program().into(),
            args,
            env: gemini_env(spec),
            files: vec![settings_file(spec), gemini_md(spec)],
            stdin: None,
            cwd: spec.cwd.clone(),
        }
    }

    fn interactive(&self, spec: &SessionSpec) -> Invocation {
        let model = spec.model.as_deref().unwrap_or(DEFAULT_MODEL);
        let mut args: Vec<String> = ["--approval-mode", "yolo", "--skip-trust", "-m", model]
            .map(String::from)
            .to_vec();
        if let Some(id) = &spec.resume {
            args.extend(["--resume".into(), id.clone()]);
        }
        let turn = spec.as_turn();
        Invocation {
            program: Agent::Gemini.program().into(),
            args,
            env: crate::interactive_env(gemini_env(&turn)),
            files: vec![settings_file(&turn), gemini_md(&turn)],
            stdin: None,
            cwd: spec.cwd.clone(),
        }
    }

    fn parse_line(&mut self, line: &str) -> Vec<EventKind> {
        let v = match crate::json_or_log(line) {
            Ok(v) => v,
            Err(events) => return events,
        };
        let mut out = Vec::new();
        match str_of(&v, "type") {
            Some("init") => {
                self.flush(&mut out);
                match str_of(&v, "session_id").filter(|s| !s.is_empty()) {
                    Some(id) => out.push(EventKind::Session {
                        agent_session_id: id.to_owned(),
                        model: str_of(&v, "model").map(str::to_owned),
                    }),
                    None => out.push(EventKind::Raw { data: v }),
                }
            }
            Some("message") => match str_of(&v, "role") {
                // The daemon records the user's message itself.
                Some("user") => {}
                Some("assistant") => {
                    let text = string(&v, "content");
                    if v.get("delta").and_then(Value::as_bool).unwrap_or(false) {
                        if !text.is_empty() {
                            self.pending.push_str(&text);
                            out.push(EventKind::MessageDelta { text });
                        }
                    } else {
                        // A complete message replaces whatever was streamed before it.
                        self.pending.clear();
                        self.last_message = Some(text.clone());
                        out.push(EventKind::Message { text });
                    }
                }
                _ => out.push(EventKind::Raw { data: v }),
            },
            Some("tool_use") => {
                self.flush(&mut out);
                out.push(EventKind::ToolCall {
                    call_id: string(&v, "tool_id"),
                    name: string(&v, "tool_name"),
                    input: v.get("parameters").cloned().unwrap_or(Value::Null),
                });
            }
            Some("tool_result") => {
                self.flush(&mut out);
                let ok = str_of(&v, "status") == Some("success");
                let output = match (str_of(&v, "output"), v.get("error")) {
                    (Some(o), _) if ok || !o.is_empty() => o.to_owned(),
                    (_, Some(e)) if !e.is_null() => str_of(e, "message")
                        .map(str::to_owned)
                        .or_else(|| e.as_str().map(str::to_owned))
                        .unwrap_or_else(|| e.to_string()),
                    _ => String::new(),
                };
                out.push(EventKind::ToolResult {
                    call_id: string(&v, "tool_id"),
                    output,
                    exit_code: None,
                    is_error: !ok,
                });
            }
            Some("error") => {
                self.flush(&mut out);
                let message = str_of(&v, "message")
                    .filter(|m| !m.is_empty())
                    .unwrap_or("gemini error")
                    .to_owned();
                if str_of(&v, "severity") == Some("warning") {
                    out.push(EventKind::Log {
                        line: format!("gemini warning: {message}"),
                    });
                } else {
                    out.push(EventKind::Error { message });
                }
            }
            Some("result") => {
                self.flush(&mut out);
                if let Some(stats) = v.get("stats").filter(|s| s.is_object()) {
                    out.push(EventKind::Usage {
                        input_tokens: count_of(stats, "input_tokens"),
                        output_tokens: count_of(stats, "output_tokens"),
                        cached_input_tokens: count_of(stats, "cached"),
                        cost_usd: None,
                    });
                }
                let status = str_of(&v, "status").unwrap_or("success");
                if status != "success" {
                    let e = &v["error"];
                    let message = str_of(e, "message")
                        .or_else(|| e.as_str())
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("gemini turn ended with status {status}"));
                    out.push(EventKind::Error { message });
                }
                out.push(EventKind::TurnCompleted {
                    result: self.last_message.take(),
                });
            }
            _ => out.push(EventKind::Raw { data: v }),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_interactive, env_of, parse_all, session_spec, spec};

    #[test]
    fn mcp_servers_go_to_the_task_config() {
        let inv = Gemini::default().invocation(&spec(Agent::Gemini));
        let v: serde_json::Value = serde_json::from_str(&inv.files[0].1).unwrap();
        assert!(v.get("mcpServers").is_none(), "{v}");

        let mut sp = spec(Agent::Gemini);
        sp.mcp_servers = crate::testutil::mcp_servers();
        let inv = Gemini::default().invocation(&sp);
        let (path, content) = &inv.files[0];
        assert!(path.starts_with("/var/berth/tasks/t1") && path.ends_with("settings.json"));
        let v: serde_json::Value = serde_json::from_str(content).unwrap();
        assert_eq!(v["mcpServers"], crate::mcp::gemini(&sp.mcp_servers));
        assert!(v["mcpServers"]["notes"].is_object() && v["mcpServers"]["docs"].is_object());

        let mut ss = session_spec(Agent::Gemini);
        ss.mcp_servers = crate::testutil::mcp_servers();
        let inv = Gemini::default().interactive(&ss);
        let (path, content) = &inv.files[0];
        assert!(path.starts_with("/home/agent/.berth/sessions/s1"));
        let v: serde_json::Value = serde_json::from_str(content).unwrap();
        assert!(v["mcpServers"]["notes"].is_object(), "{v}");
    }

    #[test]
    fn interactive_tui_is_configured_like_a_turn_with_dialogs_answered() {
        let mut s = session_spec(Agent::Gemini);
        let inv = Gemini::default().interactive(&s);
        assert_eq!(inv.program, "gemini");
        assert_eq!(
            inv.args,
            [
                "--approval-mode",
                "yolo",
                "--skip-trust",
                "-m",
                DEFAULT_MODEL
            ]
        );
        let env = check_interactive(&inv);
        assert_eq!(
            env["GOOGLE_GEMINI_BASE_URL"],
            "http://127.0.0.1:7788/gemini"
        );
        assert_eq!(env["GEMINI_API_KEY"], s.virtual_key);
        assert_eq!(env["GEMINI_CLI_TRUST_WORKSPACE"], "true");
        assert_eq!(
            env["GEMINI_CLI_HOME"],
            "/home/agent/.berth/sessions/s1/gemini"
        );
        let (path, settings) = &inv.files[0];
        assert_eq!(
            path.display().to_string(),
            "/home/agent/.berth/sessions/s1/gemini/.gemini/settings.json"
        );
        let v: serde_json::Value = serde_json::from_str(settings).unwrap();
        assert_eq!(v["security"]["auth"]["selectedType"], "gemini-api-key");
        assert_eq!(v["privacy"]["usageStatisticsEnabled"], false);

        s.resume = Some("4a59".into());
        let inv = Gemini::default().interactive(&s);
        assert_eq!(inv.args[inv.args.len() - 2..], ["--resume", "4a59"]);
    }

    #[test]
    fn invocation_first_turn() {
        let s = spec(Agent::Gemini);
        let inv = Gemini::default().invocation(&s);
        assert_eq!(inv.program, "gemini");
        assert_eq!(
            inv.args,
            [
                "--prompt=Create hello.txt",
                "-o",
                "stream-json",
                "--approval-mode",
                "yolo",
                "--skip-trust",
                "-m",
                "gemini-2.5-pro"
            ]
        );
        let env = env_of(&inv);
        assert_eq!(
            env["GOOGLE_GEMINI_BASE_URL"],
            "http://127.0.0.1:7788/gemini"
        );
        assert_eq!(env["GEMINI_API_KEY"], "vk-test");
        assert_eq!(env["GEMINI_CLI_NO_RELAUNCH"], "true");
        assert_eq!(env["GEMINI_CLI_TRUST_WORKSPACE"], "true");
        assert_eq!(inv.stdin, None);
        assert_eq!(inv.files.len(), 2);
        assert_eq!(
            inv.files[1].0.to_str(),
            Some("/var/berth/tasks/t1/gemini/.gemini/GEMINI.md")
        );
        let (path, content) = &inv.files[0];
        assert_eq!(
            path.to_str(),
            Some("/var/berth/tasks/t1/gemini/.gemini/settings.json")
        );
        assert_eq!(env["GEMINI_CLI_HOME"], "/var/berth/tasks/t1/gemini");
        let settings: Value =
            serde_json::from_str(content).unwrap_or_else(|e| panic!("invalid json: {e}"));
        assert_eq!(
            settings["security"]["auth"]["selectedType"],
            "gemini-api-key"
        );
        assert_eq!(settings["telemetry"]["enabled"], false);
        assert_eq!(settings["privacy"]["usageStatisticsEnabled"], false);
        assert_eq!(settings["general"]["disableAutoUpdate"], true);
    }

    #[test]
    fn invocation_follow_up() {
        let mut s = spec(Agent::Gemini);
        s.resume = Some("4a59".into());
        s.model = Some("gemini-3.8-flash".into());
        s.prompt = "-x".into();
        let inv = Gemini::default().invocation(&s);
        assert_eq!(inv.args[0], "--prompt=-x");
        assert_eq!(
            inv.args[5..],
            ["--skip-trust", "-m", "gemini-3.8-flash", "--resume", "4a59"]
        );
    }

    /// The stdout sample of agent-clis-offline.md (the trimmed `{…}` filled in).
    const SAMPLE: &str = r#"{"type":"init","timestamp":"…","session_id":"4a59…","model":"auto"}
{"type":"message","timestamp":"…","role":"user","content":"Create a file out.txt containing hi, then say DONE."}
{"type":"tool_use","timestamp":"…","tool_name":"run_shell_command","tool_id":"run_shell_command__run_shell_command_1795411183954_0","parameters":{"command":"echo hi > out.txt","description":"Run the scripted command"}}
{"type":"tool_result","timestamp":"…","tool_id":"run_shell_command__…","status":"success","output":""}
{"type":"message","timestamp":"…","role":"assistant","content":"DONE","delta":true}
{"type":"result","timestamp":"…","status":"success","stats":{"total_tokens":45,"input_tokens":30,"output_tokens":15,"cached":0,"input":30,"duration_ms":272,"tool_calls":1,"models":{"gemini-3.5-flash-lite":{},"gemini-3.8-flash":{}}}}"#;

    #[test]
    fn parses_sample() {
        let events = parse_all(&mut Gemini::default(), SAMPLE);
        assert_eq!(
            events,
            vec![
                EventKind::Session {
                    agent_session_id: "4a59…".into(),
                    model: Some("auto".into())
                },
                EventKind::ToolCall {
                    call_id: "run_shell_command__run_shell_command_1795411183954_0".into(),
                    name: "run_shell_command".into(),
                    input: json!({"command":"echo hi > out.txt","description":"Run the scripted command"}),
                },
                EventKind::ToolResult {
                    call_id: "run_shell_command__…".into(),
                    output: String::new(),
                    exit_code: None,
                    is_error: false
                },
                EventKind::MessageDelta {
                    text: "DONE".into()
                },
                EventKind::Message {
                    text: "DONE".into()
                },
                EventKind::Usage {
                    input_tokens: 30,
                    output_tokens: 15,
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
    fn deltas_are_joined_per_segment_and_errors() {
        let text = r#"{"type":"message","role":"assistant","content":"Let me ","delta":true}
{"type":"message","role":"assistant","content":"look.","delta":true}
{"type":"tool_use","tool_name":"read_file","tool_id":"t1","parameters":{"path":"x"}}
{"type":"tool_result","tool_id":"t1","status":"error","error":{"type":"not_found","message":"no such file"}}
{"type":"error","severity":"warning","message":"Loop detected"}
{"type":"message","role":"assistant","content":"Sorry","delta":true}
{"type":"error","severity":"error","message":"quota"}
{"type":"result","status":"error","error":{"type":"FatalError","message":"quota exceeded"},"stats":{"input_tokens":1,"output_tokens":2,"cached":0}}"#;
        let events = parse_all(&mut Gemini::default(), text);
        assert_eq!(
            events,
            vec![
                EventKind::MessageDelta {
                    text: "Let me ".into()
                },
                EventKind::MessageDelta {
                    text: "look.".into()
                },
                EventKind::Message {
                    text: "Let me look.".into()
                },
                EventKind::ToolCall {
                    call_id: "t1".into(),
                    name: "read_file".into(),
                    input: json!({"path":"x"})
                },
                EventKind::ToolResult {
                    call_id: "t1".into(),
                    output: "no such file".into(),
                    exit_code: None,
                    is_error: true
                },
                EventKind::Log {
                    line: "gemini warning: Loop detected".into()
                },
                EventKind::MessageDelta {
                    text: "Sorry".into()
                },
                EventKind::Message {
                    text: "Sorry".into()
                },
                EventKind::Error {
                    message: "quota".into()
                },
                EventKind::Usage {
                    input_tokens: 1,
                    output_tokens: 2,
                    cached_input_tokens: 0,
                    cost_usd: None
                },
                EventKind::Error {
                    message: "quota exceeded".into()
                },
                EventKind::TurnCompleted {
                    result: Some("Sorry".into())
                },
            ]
        );
    }

    #[test]
    fn unknown_and_garbage() {
        let mut d = Gemini::default();
        let raw = json!({"type":"compression","timestamp":"x"});
        assert_eq!(
            d.parse_line(&raw.to_string()),
            vec![EventKind::Raw { data: raw }]
        );
        assert_eq!(
            d.parse_line("YOLO mode is enabled."),
            vec![EventKind::Log {
                line: "YOLO mode is enabled.".into()
            }]
        );
        crate::testutil::fuzz(&mut d, SAMPLE);
    }
}
