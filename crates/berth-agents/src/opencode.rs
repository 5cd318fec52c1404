//! Driver for the opencode CLI in `opencode run --format json` mode.
//!
//! Configuration is the file named by `OPENCODE_CONFIG` (`<task_dir>/opencode.json`): one
//! provider `berth` (`@ai-sdk/openai-compatible`, bundled in the binary) pointing at
//! `<gateway_url>/v1`, its key read from `BERTH_VIRTUAL_KEY`, everything allowed, autoupdate and
//! sharing off. Its data (the SQLite database with the sessions), state and cache go to
//! `<task_dir>/opencode/{data,state,cache}` (the XDG variables), one set per task: concurrent
//! first starts in one workspace raced on the shared database's migration. Every turn of a task
//! uses the same task dir, so follow-ups passing `--session <sessionID>` find their session.
//!
//! The workspace's MCP servers go to the same file's `mcp` map (MCP tools are covered by the
//! `permission` map, which allows everything).

use berth_domain::{Agent, EventKind};
use serde_json::{json, Value};

use crate::util::{count_of, exit_code, f64_of, join_url, str_of, string};
use crate::{Driver, Invocation, SessionSpec, TurnSpec};

/// Model id sent to the gateway when the task does not choose one.
pub const DEFAULT_MODEL: &str = "default-model";

#[derive(Debug, Default)]
pub struct Opencode {
    session_reported: bool,
    turn_completed: bool,
    last_message: Option<String>,
}

impl Opencode {
    fn config(spec: &TurnSpec) -> String {
        let model = spec.model.as_deref().unwrap_or(DEFAULT_MODEL);
        let mut config = json!({
            "$schema": "https://opencode.ai/config.json",
            "model": format!("berth/{model}"),
            "small_model": format!("berth/{model}"),
            "autoupdate": false,
            "share": "disabled",
            "provider": {
                "berth": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "berth",
                    "options": {
                        "baseURL": join_url(&spec.gateway_url, "v1"),
                        "apiKey": "{env:BERTH_VIRTUAL_KEY}",
                    },
                    "models": { model: { "name": model, "tool_call": true } },
                }
            },
            "permission": {
                "edit": "allow",
                "bash": "allow",
                "webfetch": "allow",
                "external_directory": "allow",
            },
        });
        // berth's instructions (written next to the config by every invocation).
        config["instructions"] = json!([instructions_path(spec).display().to_string()]);
        if !spec.mcp_servers.is_empty() {
            config["mcp"] = crate::mcp::opencode(&spec.mcp_servers);
        }
        format!("{config:#}\n")
    }
}

/// The environment of every opencode process (turn or TUI): its config file, the key, its own
/// data/state/cache directories, the phone-home switches off.
fn opencode_env(spec: &TurnSpec) -> Vec<(String, String)> {
    let config_path = config_path(spec);
    let mut env = crate::base_env(spec);
    env.push(("OPENCODE_CONFIG".into(), config_path.display().to_string()));
    env.push(("BERTH_VIRTUAL_KEY".into(), spec.virtual_key.clone()));
    let own = spec.task_dir.join("opencode");
    for (var, dir) in [
        ("XDG_DATA_HOME", "data"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_CACHE_HOME", "cache"),
    ] {
        env.push((var.into(), own.join(dir).display().to_string()));
    }
    for name in [
        "OPENCODE_DISABLE_MODELS_FETCH",
        "OPENCODE_DISABLE_AUTOUPDATE",
        "OPENCODE_DISABLE_LSP_DOWNLOAD",
        "OPENCODE_DISABLE_SHARE",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS",
    ] {
        env.push((name.into(), "1".into()));
    }
    env
}

fn instructions_path(spec: &TurnSpec) -> std::path::PathBuf {
    spec.task_dir.join("opencode-instructions.md")
}

fn config_path(spec: &TurnSpec) -> std::path::PathBuf {
    spec.task_dir.join("opencode.json")
}

impl Driver for Opencode {
    fn agent(&self) -> Agent {
        Agent::Opencode
    }

    fn invocation(&self, spec: &TurnSpec) -> Invocation {
        let config_path = config_path(spec);
        let mut args: Vec<String> = ["run", "--pure", "--format", "json"]
            .map(String::from)
            .to_vec();
        if let Some(model) = &spec.model {
            args.extend(["--model".into(), format!("berth/{model}")]);
        }
        if let Some(id) = &spec.resume {
            args.extend(["--session".into(), id.clone()]);
        }
        args.extend(["--".into(), spec.prompt.clone()]);

        let env = opencode_env(spec);

        Invocation {
            program: Agent::Opencode.program().into(),
            args,
            env,
            files: vec![
                (config_path, Self::config(spec)),
                crate::instructions(instructions_path(spec)),
            ],
            stdin: None,
            cwd: spec.cwd.clone(),
        }
    }

    fn interactive(&self, spec: &SessionSpec) -> Invocation {
        let turn = spec.as_turn();
        let mut args = vec!["--pure".to_owned()];
        if let Some(model) = &spec.model {
            args.extend(["--model".into(), format!("berth/{model}")]);
        }
        if let Some(id) = &spec.resume {
            args.extend(["--session".into(), id.clone()]);
        }
        Invocation {
            program: Agent::Opencode.program().into(),
            args,
            env: crate::interactive_env(opencode_env(&turn)),
            files: vec![
                (config_path(&turn), Self::config(&turn)),
                crate::instructions(instructions_path(&turn)),
            ],
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
        if !self.session_reported {
            let id = str_of(&v, "sessionID")
                .or_else(|| str_of(&v["part"], "sessionID"))
                .filter(|s| !s.is_empty());
            if let Some(id) = id {
                self.session_reported = true;
                out.push(EventKind::Session {
                    agent_session_id: id.to_owned(),
                    model: None,
                });
            }
        }
        let part = &v["part"];
        let mapped = match str_of(&v, "type") {
            Some("step_start") => true,
            Some("text") => {
                let text = string(part, "text");
                if !text.is_empty() {
                    self.last_message = Some(text.clone());
                    out.push(EventKind::Message { text });
                }
                true
            }
            Some("reasoning") => {
                let text = string(part, "text");
                if !text.is_empty() {
                    out.push(EventKind::Reasoning { text });
                }
                true
            }
            Some("tool_use") => self.tool_use(part, &mut out),
            Some("step_finish") => self.step_finish(part, &mut out),
            Some("error") => {
                out.push(EventKind::Error {
                    message: error_message(&v["error"]),
                });
                true
            }
            _ => false,
        };
        if !mapped {
            out.push(EventKind::Raw { data: v });
        }
        out
    }
}

fn error_message(e: &Value) -> String {
    let data_msg = str_of(&e["data"], "message");
    data_msg
        .or_else(|| str_of(e, "message"))
        .or_else(|| e.as_str())
        .filter(|m| !m.is_empty())
        .map(|m| match str_of(e, "name") {
            Some(name) if !name.is_empty() && data_msg.is_some() => format!("{name}: {m}"),
            _ => m.to_owned(),
        })
        .or_else(|| str_of(e, "name").map(str::to_owned))
        .unwrap_or_else(|| "opencode error".to_owned())
}

impl Opencode {
    fn tool_use(&mut self, part: &Value, out: &mut Vec<EventKind>) -> bool {
        let state = &part["state"];
        let Some(status) = str_of(state, "status") else {
            return false;
        };
        let call_id = string(part, "callID");
        out.push(EventKind::ToolCall {
            call_id: call_id.clone(),
            name: string(part, "tool"),
            input: state.get("input").cloned().unwrap_or(Value::Null),
        });
        match status {
            "completed" => {
                let code = state["metadata"].get("exit").and_then(exit_code);
                out.push(EventKind::ToolResult {
                    call_id,
                    output: string(state, "output"),
                    exit_code: code,
                    is_error: code.is_some_and(|c| c != 0),
                });
            }
            "error" => {
                let code = state["metadata"].get("exit").and_then(exit_code);
                out.push(EventKind::ToolResult {
                    call_id,
                    output: str_of(state, "error")
                        .or_else(|| str_of(state, "output"))
                        .unwrap_or_default()
                        .to_owned(),
                    exit_code: code,
                    is_error: true,
                });
            }
            // `run` reports tools once, when done; a pending/running state is just the call.
            _ => {}
        }
        true
    }

    fn step_finish(&mut self, part: &Value, out: &mut Vec<EventKind>) -> bool {
        if let Some(t) = part.get("tokens").filter(|t| t.is_object()) {
            let cache = &t["cache"];
            let cached = count_of(cache, "read");
            out.push(EventKind::Usage {
                // Normalized: all input tokens, of which `cached_input_tokens` came from cache
                // (opencode counts cache reads/writes apart from `input`).
                input_tokens: count_of(t, "input")
                    .saturating_add(cached)
                    .saturating_add(count_of(cache, "write")),
                output_tokens: count_of(t, "output").saturating_add(count_of(t, "reasoning")),
                cached_input_tokens: cached,
                cost_usd: f64_of(part, "cost"),
            });
        }
        match str_of(part, "reason") {
            // The model asked for tools: another step follows.
            Some("tool-calls") | None => {}
            Some(reason) => {
                if matches!(reason, "length" | "content-filter" | "error") {
                    out.push(EventKind::Error {
                        message: format!("opencode step finished with reason {reason}"),
                    });
                }
                if reason != "unknown" && !self.turn_completed {
                    self.turn_completed = true;
                    out.push(EventKind::TurnCompleted {
                        result: self.last_message.take(),
                    });
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_interactive, env_of, parse_all, session_spec, spec};

    #[test]
    fn mcp_servers_go_to_the_task_config() {
        let inv = Opencode::default().invocation(&spec(Agent::Opencode));
        let v: serde_json::Value = serde_json::from_str(&inv.files[0].1).unwrap();
        assert!(v.get("mcp").is_none(), "{v}");

        let mut sp = spec(Agent::Opencode);
        sp.mcp_servers = crate::testutil::mcp_servers();
        let inv = Opencode::default().invocation(&sp);
        let (path, content) = &inv.files[0];
        assert!(path.starts_with("/var/berth/tasks/t1") && path.ends_with("opencode.json"));
        let v: serde_json::Value = serde_json::from_str(content).unwrap();
        assert_eq!(v["mcp"], crate::mcp::opencode(&sp.mcp_servers));
        assert!(v["mcp"]["notes"].is_object() && v["mcp"]["docs"].is_object());

        let mut ss = session_spec(Agent::Opencode);
        ss.mcp_servers = crate::testutil::mcp_servers();
        let inv = Opencode::default().interactive(&ss);
        let (path, content) = &inv.files[0];
        assert!(path.starts_with("/home/agent/.berth/sessions/s1"));
        let v: serde_json::Value = serde_json::from_str(content).unwrap();
        assert!(v["mcp"]["notes"].is_object(), "{v}");
    }

    #[test]
    fn interactive_tui_is_configured_like_a_turn_with_dialogs_answered() {
        let mut s = session_spec(Agent::Opencode);
        let inv = Opencode::default().interactive(&s);
        assert_eq!(inv.program, "opencode");
        assert_eq!(inv.args, ["--pure"]);
        let env = check_interactive(&inv);
        assert_eq!(
            env["OPENCODE_CONFIG"],
            "/home/agent/.berth/sessions/s1/opencode.json"
        );
        assert_eq!(env["BERTH_VIRTUAL_KEY"], s.virtual_key);
        assert_eq!(
            env["XDG_DATA_HOME"],
            "/home/agent/.berth/sessions/s1/opencode/data"
        );
        assert_eq!(env["OPENCODE_DISABLE_AUTOUPDATE"], "1");
        let v: serde_json::Value = serde_json::from_str(&inv.files[0].1).unwrap();
        assert_eq!(
            v["provider"]["berth"]["options"]["baseURL"],
            "http://127.0.0.1:7788/openai/v1"
        );
        assert_eq!(v["permission"]["bash"], "allow");
        assert!(!inv.files[0].1.contains(&s.virtual_key));

        s.resume = Some("ses_1".into());
        let inv = Opencode::default().interactive(&s);
        assert_eq!(inv.args, ["--pure", "--session", "ses_1"]);
    }

    #[test]
    fn invocation_first_turn() {
        let s = spec(Agent::Opencode);
        let inv = Opencode::default().invocation(&s);
        assert_eq!(inv.program, "opencode");
        assert_eq!(
            inv.args,
            [
                "run",
                "--pure",
                "--format",
                "json",
                "--",
                "Create hello.txt"
            ]
        );
        let env = env_of(&inv);
        assert_eq!(env["OPENCODE_CONFIG"], "/var/berth/tasks/t1/opencode.json");
        assert_eq!(env["BERTH_VIRTUAL_KEY"], "vk-test");
        assert_eq!(env["XDG_DATA_HOME"], "/var/berth/tasks/t1/opencode/data");
        for name in [
            "OPENCODE_DISABLE_MODELS_FETCH",
            "OPENCODE_DISABLE_AUTOUPDATE",
            "OPENCODE_DISABLE_LSP_DOWNLOAD",
            "OPENCODE_DISABLE_SHARE",
            "OPENCODE_DISABLE_DEFAULT_PLUGINS",
        ] {
            assert_eq!(env[name], "1");
        }
        assert_eq!(inv.stdin, None);
        let (path, content) = &inv.files[0];
        assert_eq!(path.to_str(), Some("/var/berth/tasks/t1/opencode.json"));
        let c: Value =
            serde_json::from_str(content).unwrap_or_else(|e| panic!("invalid json: {e}"));
        assert_eq!(c["model"], "berth/default-model");
        assert_eq!(c["small_model"], "berth/default-model");
        assert_eq!(c["autoupdate"], false);
        assert_eq!(c["share"], "disabled");
        let p = &c["provider"]["berth"];
        assert_eq!(p["npm"], "@ai-sdk/openai-compatible");
        assert_eq!(p["options"]["baseURL"], "http://127.0.0.1:7788/openai/v1");
        assert_eq!(p["options"]["apiKey"], "{env:BERTH_VIRTUAL_KEY}");
        assert_eq!(p["models"]["default-model"]["tool_call"], true);
        assert_eq!(c["permission"]["bash"], "allow");
    }

    #[test]
    fn invocation_follow_up() {
        let mut s = spec(Agent::Opencode);
        s.resume = Some("ses_1".into());
        s.model = Some("gpt-5.5".into());
        let inv = Opencode::default().invocation(&s);
        assert_eq!(
            inv.args,
            [
                "run",
                "--pure",
                "--format",
                "json",
                "--model",
                "berth/gpt-5.5",
                "--session",
                "ses_1",
                "--",
                "Create hello.txt"
            ]
        );
        let c: Value =
            serde_json::from_str(&inv.files[0].1).unwrap_or_else(|e| panic!("invalid json: {e}"));
        assert_eq!(c["model"], "berth/gpt-5.5");
        assert_eq!(
            c["provider"]["berth"]["models"]["gpt-5.5"]["name"],
            "gpt-5.5"
        );
    }

    /// The stdout sample of agent-clis-offline.md (the trimmed `…` parts filled in).
    const SAMPLE: &str = r#"{"type":"step_start","timestamp":1795411183954,"sessionID":"ses_1","part":{"id":"prt_1","sessionID":"ses_1","messageID":"msg_1","type":"step-start"}}
{"type":"tool_use","timestamp":1795411183955,"sessionID":"ses_1","part":{"type":"tool","tool":"bash","callID":"call_1","state":{"status":"completed","input":{"command":"echo hi > out.txt","description":"Write out.txt"},"output":"(no output)","metadata":{"exit":0,"description":"Write out.txt"},"title":"Write out.txt"}}}
{"type":"step_finish","timestamp":1795411183956,"sessionID":"ses_1","part":{"reason":"tool-calls","cost":0,"type":"step-finish","tokens":{"input":20,"output":10,"reasoning":0,"cache":{"read":0,"write":0}}}}
{"type":"step_start","timestamp":1795411183957,"sessionID":"ses_1","part":{"type":"step-start"}}
{"type":"text","timestamp":1795411183958,"sessionID":"ses_1","part":{"id":"prt_2","type":"text","text":"DONE","time":{"start":1,"end":2}}}
{"type":"step_finish","timestamp":1795411183959,"sessionID":"ses_1","part":{"reason":"stop","cost":0.5,"type":"step-finish","tokens":{"input":18,"output":10,"reasoning":0,"cache":{"read":12,"write":0}}}}"#;

    #[test]
    fn parses_sample() {
        let events = parse_all(&mut Opencode::default(), SAMPLE);
        assert_eq!(
            events,
            vec![
                EventKind::Session {
                    agent_session_id: "ses_1".into(),
                    model: None
                },
                EventKind::ToolCall {
                    call_id: "call_1".into(),
                    name: "bash".into(),
                    input: json!({"command":"echo hi > out.txt","description":"Write out.txt"}),
                },
                EventKind::ToolResult {
                    call_id: "call_1".into(),
                    output: "(no output)".into(),
                    exit_code: Some(0),
                    is_error: false
                },
                EventKind::Usage {
                    input_tokens: 20,
                    output_tokens: 10,
                    cached_input_tokens: 0,
                    cost_usd: Some(0.0)
                },
                EventKind::Message {
                    text: "DONE".into()
                },
                EventKind::Usage {
                    input_tokens: 30,
                    output_tokens: 10,
                    cached_input_tokens: 12,
                    cost_usd: Some(0.5)
                },
                EventKind::TurnCompleted {
                    result: Some("DONE".into())
                },
            ]
        );
    }

    #[test]
    fn tool_errors_and_errors() {
        let text = r#"{"type":"tool_use","sessionID":"ses_2","part":{"tool":"bash","callID":"c1","state":{"status":"completed","input":{"command":"false"},"output":"","metadata":{"exit":1}}}}
{"type":"tool_use","sessionID":"ses_2","part":{"tool":"read","callID":"c2","state":{"status":"error","input":{"filePath":"/x"},"error":"File not found"}}}
{"type":"error","sessionID":"ses_2","error":{"name":"APIError","data":{"message":"401 Unauthorized"}}}"#;
        let events = parse_all(&mut Opencode::default(), text);
        assert_eq!(
            events,
            vec![
                EventKind::Session {
                    agent_session_id: "ses_2".into(),
                    model: None
                },
                EventKind::ToolCall {
                    call_id: "c1".into(),
                    name: "bash".into(),
                    input: json!({"command":"false"})
                },
                EventKind::ToolResult {
                    call_id: "c1".into(),
                    output: String::new(),
                    exit_code: Some(1),
                    is_error: true
                },
                EventKind::ToolCall {
                    call_id: "c2".into(),
                    name: "read".into(),
                    input: json!({"filePath":"/x"})
                },
                EventKind::ToolResult {
                    call_id: "c2".into(),
                    output: "File not found".into(),
                    exit_code: None,
                    is_error: true
                },
                EventKind::Error {
                    message: "APIError: 401 Unauthorized".into()
                },
            ]
        );
    }

    #[test]
    fn unknown_and_garbage() {
        let mut d = Opencode::default();
        let raw = json!({"type":"snapshot","x":1});
        assert_eq!(
            d.parse_line(&raw.to_string()),
            vec![EventKind::Raw { data: raw }]
        );
        assert_eq!(
            d.parse_line("INFO service=x"),
            vec![EventKind::Log {
                line: "INFO service=x".into()
            }]
        );
        crate::testutil::fuzz(&mut d, SAMPLE);
    }
}
