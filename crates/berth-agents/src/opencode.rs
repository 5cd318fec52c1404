//! Driver for the opencode CLI through ACP: `opencode acp --pure`, one process per task
//! serving every turn (the protocol is [`crate::acp`]).
//!
//! Configuration is the file named by `OPENCODE_CONFIG` (`<task_dir>/opencode.json`): one
//! provider `berth` (`@ai-sdk/openai-compatible`, bundled in the binary) pointing at
//! `<gateway_url>/v1`, its key read from `BERTH_VIRTUAL_KEY`, autoupdate and sharing off. Its data
//! (the SQLite database with the sessions), state and cache go to
//! `<task_dir>/opencode/{data,state,cache}` (the XDG variables), one set per task: concurrent
//! first starts in one workspace raced on the shared database's migration. A new process of the
//! task (same task dir) `session/load`s the session; a take-over opens it with `--session`.
//!
//! The approval policy is the config's `permission` map: `never` allows everything; `on-request`
//! asks for edits, shell commands, web fetches and paths outside the working directory (reading
//! and searching do not ask); `always` asks for every tool (`"*": "ask"`). The workspace's MCP
//! servers go to the same file's `mcp` map.

use berth_domain::{Agent, ApprovalPolicy, EventKind};
use serde_json::{json, Value};

use crate::util::join_url;
use crate::{Driver, Invocation, SessionSpec, TurnEnd, TurnSpec};

/// Model id sent to the gateway when the task does not choose one.
pub const DEFAULT_MODEL: &str = "default-model";

#[derive(Debug)]
pub struct Opencode {
    acp: crate::acp::Acp,
}

impl Default for Opencode {
    fn default() -> Self {
        Opencode {
            acp: crate::acp::Acp::new("opencode"),
        }
    }
}

/// The config's `permission` map for a policy.
fn permission(policy: ApprovalPolicy) -> Value {
    match policy {
        ApprovalPolicy::Never => json!({
            "edit": "allow",
            "bash": "allow",
            "webfetch": "allow",
            "external_directory": "allow",
        }),
        ApprovalPolicy::OnRequest => json!({
            "edit": "ask",
            "bash": "ask",
            "webfetch": "ask",
            "external_directory": "ask",
        }),
        ApprovalPolicy::Always => json!({"*": "ask"}),
    }
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
            "permission": permission(spec.approval),
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

    /// `opencode acp` serving every turn of the task; the turns themselves are
    /// [`Driver::begin_turn`]. The model is the config's.
    fn invocation(&self, spec: &TurnSpec) -> Invocation {
        Invocation {
            program: Agent::Opencode.program().into(),
            args: vec!["acp".into(), "--pure".into()],
            env: opencode_env(spec),
            files: vec![
                (config_path(spec), Self::config(spec)),
                crate::instructions(instructions_path(spec)),
            ],
            // The protocol's first lines come from `begin_turn`.
            stdin: Some(String::new()),
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

    // ACP carries no reason with a rejection: opencode ends the turn and reports the tool call as rejected.
    crate::acp::protocol_methods!(acp);
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
        assert_eq!(inv.args, ["acp", "--pure"]);
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
        assert_eq!(inv.stdin.as_deref(), Some(""));
        assert!(Opencode::default().long_lived());
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
        assert_eq!(
            c["instructions"],
            json!(["/var/berth/tasks/t1/opencode-instructions.md"])
        );
    }

    #[test]
    fn approval_policies_are_the_permission_map() {
        let mut s = spec(Agent::Opencode);
        s.model = Some("gpt-5.5".into());
        for (policy, want) in [
            (ApprovalPolicy::Never, json!("allow")),
            (ApprovalPolicy::OnRequest, json!("ask")),
        ] {
            s.approval = policy;
            let inv = Opencode::default().invocation(&s);
            let c: Value = serde_json::from_str(&inv.files[0].1).unwrap();
            for tool in ["edit", "bash", "webfetch", "external_directory"] {
                assert_eq!(c["permission"][tool], want, "{policy:?}");
            }
            assert_eq!(c["model"], "berth/gpt-5.5");
        }
        s.approval = ApprovalPolicy::Always;
        let inv = Opencode::default().invocation(&s);
        let c: Value = serde_json::from_str(&inv.files[0].1).unwrap();
        assert_eq!(c["permission"], json!({"*": "ask"}));
    }

    #[test]
    fn turns_run_on_the_acp_protocol() {
        let mut d = Opencode::default();
        let lines = d.begin_turn(&spec(Agent::Opencode));
        assert!(lines[0].contains("\"initialize\""), "{lines:?}");
        assert!(d.supports_approvals());
        crate::testutil::fuzz(&mut d, crate::acp::tests::OPENCODE_SAMPLE);
        assert_eq!(
            parse_all(&mut Opencode::default(), "INFO starting"),
            vec![EventKind::Log {
                line: "INFO starting".into()
            }]
        );
    }
}
