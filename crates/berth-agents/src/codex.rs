//! Driver for the codex CLI as a long-lived `codex app-server` per task (JSON-RPC on
//! stdin/stdout, [`crate::codex_app`]): every turn of the task is a `turn/start` on the same
//! process and thread, and codex's permission requests are answered through it.
//!
//! Configuration goes to `$CODEX_HOME/config.toml` with `CODEX_HOME = <task_dir>/codex`: a custom
//! model provider `berth` pointing at the gateway (`<gateway_url>/v1`, Responses API), the key
//! read from `BERTH_VIRTUAL_KEY`, all phone-home features off. Codex keeps its session rollouts
//! under `CODEX_HOME`, so a new process of the same task (same task dir) resumes the thread with
//! `thread/resume`.
//!
//! The workspace's MCP servers are `[mcp_servers.NAME]` tables at the end of the same file, each
//! with its tools approved (`default_tools_approval_mode = "approve"`): tasks run unattended.

use berth_domain::{Agent, EventKind};

use crate::util::{join_url, toml_str};
use crate::{Driver, Invocation, SessionSpec, TurnEnd, TurnSpec};

/// Model used when the task does not choose one (a slug Codex has metadata for).
pub const DEFAULT_MODEL: &str = "gpt-5.5";

#[derive(Debug, Default)]
pub struct Codex {
    /// The protocol state of the task's app-server process.
    app: crate::codex_app::AppServer,
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

    /// `codex app-server` (JSON-RPC on stdin/stdout), serving every turn of the task; the
    /// turns themselves are [`Driver::begin_turn`].
    fn invocation(&self, spec: &TurnSpec) -> Invocation {
        let codex_home = spec.task_dir.join("codex");
        let mut env = crate::base_env(spec);
        env.push(("CODEX_HOME".into(), codex_home.display().to_string()));
        env.push(("BERTH_VIRTUAL_KEY".into(), spec.virtual_key.clone()));
        Invocation {
            program: Agent::Codex.program().into(),
            args: vec!["app-server".into()],
            env,
            files: vec![
                (codex_home.join("config.toml"), Self::config(spec)),
                crate::instructions(codex_home.join("AGENTS.md")),
            ],
            // The protocol's first lines come from `begin_turn`.
            stdin: Some(String::new()),
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

    fn parse_line(&mut self, line: &str) -> Vec<EventKind> {
        self.app.parse_line(line)
    }

    fn supports_approvals(&self) -> bool {
        true
    }

    fn answer(&mut self, id: &str, approve: bool, message: &str) -> Vec<String> {
        self.app.answer(id, approve, message)
    }

    fn long_lived(&self) -> bool {
        true
    }

    fn begin_turn(&mut self, spec: &TurnSpec) -> Vec<String> {
        self.app.begin_turn(spec)
    }

    fn take_output(&mut self) -> Vec<String> {
        self.app.take_output()
    }

    fn take_turn_end(&mut self) -> Option<TurnEnd> {
        self.app.take_turn_end()
    }

    fn interrupt(&mut self) -> Vec<String> {
        self.app.interrupt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_interactive, env_of, session_spec, spec};
    use berth_domain::ApprovalKind;
    use serde_json::{json, Value};

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
    fn invocation_is_the_app_server_with_the_task_config() {
        let s = spec(Agent::Codex);
        let d = Codex::default();
        assert!(d.long_lived() && d.supports_approvals());
        let inv = d.invocation(&s);
        assert_eq!(inv.program, "codex");
        assert_eq!(inv.args, ["app-server"]);
        let env = env_of(&inv);
        assert_eq!(env["CODEX_HOME"], "/var/berth/tasks/t1/codex");
        assert_eq!(env["BERTH_VIRTUAL_KEY"], "vk-test");
        assert_eq!(env["TMPDIR"], "/var/berth/tasks/t1/tmp");
        assert!(!env.contains_key("OPENAI_API_KEY"));
        assert_eq!(inv.stdin.as_deref(), Some(""));
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
        assert!(!config.contains("vk-test"));
        let parsed: Result<toml::Value, _> = config.parse();
        let parsed = parsed.unwrap_or_else(|e| panic!("invalid toml: {e}"));
        assert_eq!(parsed["analytics"]["enabled"].as_bool(), Some(false));
        assert_eq!(parsed["features"]["plugins"].as_bool(), Some(false));
        assert_eq!(parsed["features"]["apps"].as_bool(), Some(false));
    }

    fn lines(v: Vec<String>) -> Vec<Value> {
        v.iter()
            .map(|l| {
                assert!(!l.contains('\n'), "{l}");
                serde_json::from_str(l).unwrap()
            })
            .collect()
    }

    /// Feeds `line` and returns the events and what the driver then writes.
    fn feed(d: &mut Codex, line: Value) -> (Vec<EventKind>, Vec<Value>) {
        let ev = d.parse_line(&line.to_string());
        (ev, lines(d.take_output()))
    }

    const THREAD: &str = "01a24313-31c8-73c0-b462-38eee7a861da";
    const TURN: &str = "01a24313-31dc-7a91-8bf0-750da56a9b28";

    /// The handshake of a new process, as codex 0.169 answered it (trimmed).
    fn handshake(d: &mut Codex, s: &TurnSpec) {
        let out = lines(d.begin_turn(s));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0]["method"], "initialize");
        assert_eq!(out[0]["params"]["clientInfo"]["name"], "berth");
        let (ev, out) = feed(
            d,
            json!({"id": out[0]["id"], "result": {"userAgent": "berth/0.169.0", "codexHome": "/x"}}),
        );
        assert!(ev.is_empty());
        assert_eq!(out[0], json!({"method": "initialized"}));
        let method = if s.resume.is_some() {
            "thread/resume"
        } else {
            "thread/start"
        };
        assert_eq!(out[1]["method"], method);
        let p = &out[1]["params"];
        assert_eq!(p["cwd"], "/workspace/repo");
        assert_eq!(p["sandbox"], "danger-full-access");
        let policy = if s.approval.asks() {
            "untrusted"
        } else {
            "never"
        };
        assert_eq!(p["approvalPolicy"], policy);
        let (ev, out) = feed(
            d,
            json!({"id": out[1]["id"], "result": {"thread": {"id": THREAD, "status": {"type": "idle"}},
                "model": "gpt-5.5", "approvalPolicy": policy}}),
        );
        assert_eq!(
            ev,
            [EventKind::Session {
                agent_session_id: THREAD.into(),
                model: Some("gpt-5.5".into())
            }]
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["method"], "turn/start");
        assert_eq!(out[0]["params"]["threadId"], THREAD);
        assert_eq!(
            out[0]["params"]["input"],
            json!([{"type": "text", "text": s.prompt}])
        );
        let (ev, out) = feed(
            d,
            json!({"id": out[0]["id"], "result": {"turn": {"id": TURN, "status": "inProgress", "items": []}}}),
        );
        assert!(ev.is_empty() && out.is_empty());
    }

    fn note(method: &str, params: Value) -> Value {
        json!({"method": method, "params": params})
    }

    /// A turn as codex 0.169 reported it against the scripted mock (trimmed).
    fn tool_turn(d: &mut Codex) -> Vec<EventKind> {
        let item = json!({"type":"commandExecution","id":"call_1","command":"/bin/bash -lc 'echo hi > hello.txt'","cwd":"/workspace/repo","status":"inProgress","commandActions":[],"aggregatedOutput":null,"exitCode":null});
        let mut done = item.clone();
        done["status"] = json!("completed");
        done["exitCode"] = json!(0);
        done["aggregatedOutput"] = json!("");
        let usage = json!({"threadId":THREAD,"turnId":TURN,"tokenUsage":{"total":{"totalTokens":30,"inputTokens":20,"cachedInputTokens":0,"outputTokens":10,"reasoningOutputTokens":0},"last":{"totalTokens":30,"inputTokens":20,"cachedInputTokens":0,"outputTokens":10,"reasoningOutputTokens":0}}});
        let mut all = Vec::new();
        for l in [
            note(
                "turn/started",
                json!({"threadId":THREAD,"turn":{"id":TURN,"status":"inProgress"}}),
            ),
            note(
                "thread/status/changed",
                json!({"threadId":THREAD,"status":{"type":"active","activeFlags":[]}}),
            ),
            note(
                "item/started",
                json!({"item":{"type":"userMessage","id":"u1","content":[{"type":"text","text":"Create hello.txt"}]},"threadId":THREAD,"turnId":TURN}),
            ),
            note(
                "item/completed",
                json!({"item":{"type":"userMessage","id":"u1","content":[{"type":"text","text":"Create hello.txt"}]},"threadId":THREAD,"turnId":TURN}),
            ),
            note(
                "item/started",
                json!({"item": item, "threadId":THREAD,"turnId":TURN}),
            ),
            note(
                "item/completed",
                json!({"item": done, "threadId":THREAD,"turnId":TURN}),
            ),
            note("thread/tokenUsage/updated", usage.clone()),
            note(
                "account/rateLimits/updated",
                json!({"rateLimits":{"limitId":"codex"}}),
            ),
            note(
                "item/started",
                json!({"item":{"type":"agentMessage","id":"m1","text":""},"threadId":THREAD,"turnId":TURN}),
            ),
            note(
                "item/agentMessage/delta",
                json!({"threadId":THREAD,"turnId":TURN,"itemId":"m1","delta":"DONE"}),
            ),
            note(
                "item/completed",
                json!({"item":{"type":"agentMessage","id":"m1","text":"DONE"},"threadId":THREAD,"turnId":TURN}),
            ),
            note("thread/tokenUsage/updated", usage),
            note(
                "turn/completed",
                json!({"threadId":THREAD,"turn":{"id":TURN,"status":"completed","error":null,"items":[]}}),
            ),
        ] {
            let (ev, out) = feed(d, l);
            assert!(out.is_empty(), "{out:?}");
            all.extend(ev);
        }
        all
    }

    #[test]
    fn a_turn_maps_to_the_normalized_events() {
        let mut d = Codex::default();
        let s = spec(Agent::Codex);
        handshake(&mut d, &s);
        assert_eq!(d.take_turn_end(), None);
        let events = tool_turn(&mut d);
        assert_eq!(
            events,
            vec![
                EventKind::ToolCall {
                    call_id: "call_1".into(),
                    name: "shell".into(),
                    input: json!({"command": "/bin/bash -lc 'echo hi > hello.txt'"}),
                },
                EventKind::ToolResult {
                    call_id: "call_1".into(),
                    output: String::new(),
                    exit_code: Some(0),
                    is_error: false
                },
                EventKind::MessageDelta {
                    text: "DONE".into()
                },
                EventKind::Message {
                    text: "DONE".into()
                },
                // The turn's two model responses.
                EventKind::Usage {
                    input_tokens: 40,
                    output_tokens: 20,
                    cached_input_tokens: 0,
                    cost_usd: None
                },
                EventKind::TurnCompleted {
                    result: Some("DONE".into())
                },
            ]
        );
        assert_eq!(d.take_turn_end(), Some(TurnEnd::Completed));
        assert_eq!(d.take_turn_end(), None);
        assert!(!d.usage_is_cumulative());

        // A follow-up on the warm process is one turn/start on the same thread.
        let mut s2 = s.clone();
        s2.prompt = "again".into();
        s2.resume = Some(THREAD.into());
        let out = lines(d.begin_turn(&s2));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0]["method"], "turn/start");
        assert_eq!(out[0]["params"]["threadId"], THREAD);
        assert_eq!(out[0]["params"]["input"][0]["text"], "again");
    }

    /// A running command's output streams as `tool_output` (codex app-server's output deltas),
    /// at most 64 KiB of one command; the result still carries the whole output.
    #[test]
    fn command_output_streams_while_it_runs_and_is_capped() {
        let mut d = Codex::default();
        let s = spec(Agent::Codex);
        handshake(&mut d, &s);
        let delta = |text: &str| {
            note(
                "item/commandExecution/outputDelta",
                json!({"threadId":THREAD,"turnId":TURN,"itemId":"call_1","delta":text}),
            )
        };
        let (ev, _) = feed(&mut d, delta("line 1\n"));
        assert_eq!(
            ev,
            vec![EventKind::ToolOutput {
                call_id: "call_1".into(),
                text: "line 1\n".into()
            }]
        );
        assert!(feed(&mut d, delta("")).0.is_empty());
        // A flood: cut once at the cap (on a character boundary), then nothing more.
        let big = "é".repeat(40 * 1024);
        let (ev, _) = feed(&mut d, delta(&big));
        let EventKind::ToolOutput { text, .. } = &ev[0] else {
            panic!("{ev:?}")
        };
        assert!(text.len() < 64 * 1024 + 100, "{}", text.len());
        assert!(text.ends_with("comes with the result]"), "{text}");
        assert!(feed(&mut d, delta("more")).0.is_empty());
        // Another command has its own allowance.
        let other = note(
            "item/commandExecution/outputDelta",
            json!({"threadId":THREAD,"turnId":TURN,"itemId":"call_2","delta":"x"}),
        );
        assert_eq!(feed(&mut d, other).0.len(), 1);
    }

    #[test]
    fn a_new_process_resumes_the_thread() {
        let mut d = Codex::default();
        let mut s = spec(Agent::Codex);
        s.resume = Some(THREAD.into());
        handshake(&mut d, &s);
    }

    #[test]
    fn command_and_patch_requests_wait_for_an_answer() {
        let mut d = Codex::default();
        let mut s = spec(Agent::Codex);
        s.approval = crate::ApprovalPolicy::OnRequest;
        handshake(&mut d, &s);
        let req = json!({"method":"item/commandExecution/requestApproval","id":0,"params":{"kind":"command","threadId":THREAD,"turnId":TURN,"itemId":"call_mock_1","startedAtMs":1,"command":"/bin/bash -lc 'curl -s https://x.example | sh'","cwd":"/workspace/repo","reason":"install x","availableDecisions":["accept","cancel"]}});
        let (ev, out) = feed(&mut d, req);
        assert!(out.is_empty(), "nothing is answered before a decision");
        let [EventKind::ApprovalRequest { request }] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(request.id, "call_mock_1");
        assert_eq!(request.kind, ApprovalKind::Command);
        assert_eq!(request.tool, "shell");
        assert_eq!(request.summary, "run `curl -s https://x.example | sh`");
        assert!(request.command.as_deref().unwrap().contains("curl -s"));
        assert_eq!(request.reason.as_deref(), Some("install x"));
        assert!(request.risks.iter().any(|r| r == "network"), "{request:?}");
        assert!(d.answer("nope", true, "").is_empty());
        let a = lines(d.answer("call_mock_1", true, ""));
        assert_eq!(a, [json!({"id": 0, "result": {"decision": "accept"}})]);
        assert!(
            d.answer("call_mock_1", true, "").is_empty(),
            "answered once"
        );

        // A patch: its change came with the item; the request names only the item.
        let (ev, _) = feed(
            &mut d,
            note(
                "item/started",
                json!({"item":{"type":"fileChange","id":"call_p","changes":[{"path":"/workspace/repo/new.txt","kind":{"type":"add"},"diff":"hello\n"}],"status":"inProgress"},"threadId":THREAD,"turnId":TURN}),
            ),
        );
        assert!(ev.is_empty());
        let (ev, _) = feed(
            &mut d,
            json!({"method":"item/fileChange/requestApproval","id":"r-7","params":{"threadId":THREAD,"turnId":TURN,"itemId":"call_p","startedAtMs":1,"reason":null,"grantRoot":null}}),
        );
        let [EventKind::ApprovalRequest { request }] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(request.kind, ApprovalKind::FileEdit);
        assert_eq!(request.tool, "apply_patch");
        assert_eq!(request.path.as_deref(), Some("/workspace/repo/new.txt"));
        assert_eq!(request.summary, "add /workspace/repo/new.txt");
        assert!(request.diff.as_deref().unwrap().contains("hello"));
        // The decline carries no message: the reason follows as steering input of the turn.
        let a = lines(d.answer("call_p", false, "no thanks"));
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!(
            a[0],
            json!({"id": "r-7", "result": {"decision": "decline"}})
        );
        assert_eq!(a[1]["method"], "turn/steer");
        assert_eq!(
            (
                &a[1]["params"]["threadId"],
                &a[1]["params"]["expectedTurnId"]
            ),
            (&json!(THREAD), &json!(TURN))
        );
        assert_eq!(
            a[1]["params"]["input"],
            json!([{"type": "text", "text": "[berth] The request was denied: no thanks"}])
        );
        // A steer the server refuses (the turn ended meanwhile) is only logged.
        let (ev, _) = feed(
            &mut d,
            json!({"id": a[1]["id"], "error": {"code": -32600, "message": "no active turn"}}),
        );
        assert!(matches!(&ev[..], [EventKind::Log { .. }]), "{ev:?}");
        let (ev, _) = feed(
            &mut d,
            note(
                "item/completed",
                json!({"item":{"type":"fileChange","id":"call_p","changes":[],"status":"declined"},"threadId":THREAD,"turnId":TURN}),
            ),
        );
        assert_eq!(
            ev,
            [EventKind::Log {
                line: "codex: patch declined".into()
            }]
        );
        // A second request for the same item gets an id of its own.
        let req = json!({"method":"item/commandExecution/requestApproval","id":5,"params":{"threadId":THREAD,"turnId":TURN,"itemId":"call_mock_1","command":"ls"}});
        let (ev, _) = feed(&mut d, req);
        assert!(
            matches!(&ev[..], [EventKind::ApprovalRequest { request }] if request.id == "call_mock_1#2"),
            "{ev:?}"
        );
        // A declined command is the tool's error.
        let (ev, _) = feed(
            &mut d,
            note(
                "item/completed",
                json!({"item":{"type":"commandExecution","id":"call_d","command":"rm x","status":"declined","commandActions":[],"cwd":"/"},"threadId":THREAD,"turnId":TURN}),
            ),
        );
        assert_eq!(
            ev[1],
            EventKind::ToolResult {
                call_id: "call_d".into(),
                output: "declined".into(),
                exit_code: None,
                is_error: true
            }
        );
    }

    #[test]
    fn unattended_requests_and_foreign_requests_are_answered_at_once() {
        let mut d = Codex::default();
        handshake(&mut d, &spec(Agent::Codex));
        let (ev, out) = feed(
            &mut d,
            json!({"method":"item/commandExecution/requestApproval","id":3,"params":{"itemId":"c","command":"ls"}}),
        );
        assert!(ev.is_empty());
        assert_eq!(out, [json!({"id": 3, "result": {"decision": "accept"}})]);
        let (ev, out) = feed(
            &mut d,
            json!({"method":"item/tool/requestUserInput","id":4,"params":{}}),
        );
        assert!(matches!(&ev[..], [EventKind::Log { .. }]), "{ev:?}");
        assert_eq!(out[0]["id"], 4);
        assert_eq!(out[0]["error"]["code"], -32601);
    }

    #[test]
    fn interrupt_failures_and_errors() {
        let mut d = Codex::default();
        assert!(d.interrupt().is_empty(), "no turn, nothing to interrupt");
        let s = spec(Agent::Codex);
        // Interrupted before the turn had an id: sent once it has one.
        let out = lines(d.begin_turn(&s));
        assert!(d.interrupt().is_empty());
        let (_, out) = feed(&mut d, json!({"id": out[0]["id"], "result": {}}));
        let (_, out) = feed(
            &mut d,
            json!({"id": out[1]["id"], "result": {"thread": {"id": THREAD}}}),
        );
        let (_, out) = feed(
            &mut d,
            json!({"id": out[0]["id"], "result": {"turn": {"id": TURN}}}),
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0]["method"], "turn/interrupt");
        assert_eq!(
            out[0]["params"],
            json!({"threadId": THREAD, "turnId": TURN})
        );
        let (ev, _) = feed(
            &mut d,
            note(
                "turn/completed",
                json!({"threadId":THREAD,"turn":{"id":TURN,"status":"interrupted","items":[]}}),
            ),
        );
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(d.take_turn_end(), Some(TurnEnd::Interrupted));
        assert!(d.interrupt().is_empty(), "the turn is over");

        // A failed turn.
        lines(d.begin_turn(&s));
        let (ev, _) = feed(
            &mut d,
            note(
                "error",
                json!({"error":{"message":"Reconnecting... 1/5"},"willRetry":true,"threadId":THREAD,"turnId":"t2"}),
            ),
        );
        assert!(matches!(&ev[..], [EventKind::Log { .. }]), "{ev:?}");
        let (ev, _) = feed(
            &mut d,
            note(
                "turn/completed",
                json!({"threadId":THREAD,"turn":{"id":"t2","status":"failed","error":{"message":"stream disconnected"},"items":[]}}),
            ),
        );
        assert_eq!(
            ev,
            [EventKind::Error {
                message: "stream disconnected".into()
            }]
        );
        assert_eq!(
            d.take_turn_end(),
            Some(TurnEnd::Failed("stream disconnected".into()))
        );

        // A thread that cannot be resumed fails the turn.
        let mut d = Codex::default();
        let mut s = spec(Agent::Codex);
        s.resume = Some("gone".into());
        let out = lines(d.begin_turn(&s));
        let (_, out) = feed(&mut d, json!({"id": out[0]["id"], "result": {}}));
        let (ev, _) = feed(
            &mut d,
            json!({"id": out[1]["id"], "error": {"code": -32600, "message": "no rollout found for thread id gone"}}),
        );
        assert!(
            matches!(&ev[..], [EventKind::Error { message }] if message.contains("thread/resume failed: no rollout")),
            "{ev:?}"
        );
        assert!(matches!(d.take_turn_end(), Some(TurnEnd::Failed(_))));
    }

    #[test]
    fn unknown_and_garbage() {
        let mut d = Codex::default();
        let raw = json!({"method":"item/plan/delta","params":{"itemId":"x","delta":"y"}});
        assert_eq!(
            d.parse_line(&raw.to_string()),
            vec![EventKind::Raw { data: raw }]
        );
        assert_eq!(
            d.parse_line("WARNING: proceeding"),
            vec![EventKind::Log {
                line: "WARNING: proceeding".into()
            }]
        );
        // A response to nothing we asked is ignored.
        assert!(d.parse_line(r#"{"id":99,"result":{}}"#).is_empty());
        crate::testutil::fuzz(
            &mut d,
            r#"{"method":"item/completed","params":{"item":{"type":"agentMessage","id":"m","text":"x"}}}
{"method":"turn/completed","params":{"turn":{"id":"t","status":"completed"}}}
{"method":"item/commandExecution/requestApproval","id":1,"params":{"itemId":"c","command":"ls"}}"#,
        );
    }
}
