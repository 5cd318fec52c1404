//! Driver for the gemini CLI (Gemini CLI) through ACP: `gemini --acp`, one process per task
//! serving every turn (the protocol is [`crate::acp`]).
//!
//! Settings go to `$GEMINI_CLI_HOME/.gemini/settings.json` (API-key auth, telemetry, usage
//! statistics and auto-update off), with `GEMINI_CLI_HOME = <task_dir>/gemini`: one state
//! directory per task, so parallel tasks in one workspace never share the CLI's files, and a new
//! process of the task (after the idle one was reaped, or in a new daemon) finds the chat to
//! `session/load`. The same chat is what `gemini --resume <id>` opens in a take-over.
//!
//! The approval policy is the CLI's own approval mode, set when the process starts: `never` runs
//! in `yolo` mode (nothing asks); `on-request` in `default` mode (shell commands, file writes and
//! untrusted MCP tools ask, reading does not); `always` adds a user-tier policy file
//! (`berth-always.toml`: every tool `ask_user`) that outranks the built-in allow rules. The
//! workspace's MCP servers go to the settings' `mcpServers`, `trust: true` only under `never`.

use berth_domain::{Agent, EventKind};
use serde_json::json;

use crate::{Driver, Invocation, SessionSpec, TurnEnd, TurnSpec};

/// Model used when the task does not choose one. Naming a model skips the CLI's routing
/// classifier (an extra LLM call per turn with the default `auto`).
pub const DEFAULT_MODEL: &str = "gemini-2.5-pro";

/// The policy file of `always`: every tool asks (a user-tier rule outranks every built-in one).
/// The `argsPattern` matters: without one, gemini's shell heuristics turn `ask_user` into
/// `allow` for commands it knows as read-only (`ls`, `cat`, …), which `always` must not.
const ALWAYS_POLICY: &str = "# berth: the task's approval policy is `always`: every tool asks.\n\
[[rule]]\ntoolName = \"*\"\ndecision = \"ask_user\"\npriority = 999\nargsPattern = \".*\"\n";

#[derive(Debug)]
pub struct Gemini {
    acp: crate::acp::Acp,
}

impl Default for Gemini {
    fn default() -> Self {
        Gemini {
            acp: crate::acp::Acp::new("gemini"),
        }
    }
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
            let mut servers = crate::mcp::gemini(&spec.mcp_servers);
            if spec.approval.asks() {
                // Their tools ask like any other.
                if let Some(map) = servers.as_object_mut() {
                    for s in map.values_mut() {
                        s["trust"] = json!(false);
                    }
                }
            }
            settings["mcpServers"] = servers;
        }
        format!("{settings:#}\n")
    }
}

fn policy_path(spec: &TurnSpec) -> std::path::PathBuf {
    spec.task_dir.join("gemini").join("berth-always.toml")
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

    /// `gemini --acp` serving every turn of the task; the turns themselves are
    /// [`Driver::begin_turn`].
    fn invocation(&self, spec: &TurnSpec) -> Invocation {
        let model = spec.model.as_deref().unwrap_or(DEFAULT_MODEL);
        let mode = if spec.approval.asks() {
            "default"
        } else {
            "yolo"
        };
        let mut args: Vec<String> = [
            "--acp",
            "--approval-mode",
            mode,
            "--skip-trust",
            "-m",
            model,
        ]
        .map(String::from)
        .to_vec();
        let mut files = vec![settings_file(spec), gemini_md(spec)];
        if spec.approval == berth_domain::ApprovalPolicy::Always {
            let path = policy_path(spec);
            args.extend(["--policy".into(), path.display().to_string()]);
            files.push((path, ALWAYS_POLICY.to_owned()));
        }
        Invocation {
            program: Agent::Gemini.program().into(),
            args,
            env: gemini_env(spec),
            files,
            // The protocol's first lines come from `begin_turn`.
            stdin: Some(String::new()),
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

    // ACP carries no reason with a rejection: the model is told the CLI's own "canceled by the user".
    crate::acp::protocol_methods!(acp);

    /// Gemini CLI 0.61's `session/load` first starts a new recording file named
    /// `session-<UTC minute>-<id prefix>.jsonl`; in the minute the session started that is the
    /// session's own file, which it resets (the load then finds no conversation, and the
    /// conversation is lost). So a new process resumes a session only from the next minute on
    /// (a few seconds' margin: the session started before it was reported).
    fn resume_not_before(
        &self,
        session_seen: std::time::SystemTime,
    ) -> Option<std::time::SystemTime> {
        let secs = session_seen
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs - secs % 60 + 61))
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
                "--acp",
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
        // A long-lived protocol process: stdin stays open.
        assert_eq!(inv.stdin.as_deref(), Some(""));
        assert!(Gemini::default().long_lived());
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
        let settings: serde_json::Value =
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
    fn approval_policies_set_the_mode_and_the_policy_file() {
        use berth_domain::ApprovalPolicy;
        let mut s = spec(Agent::Gemini);
        s.mcp_servers = crate::testutil::mcp_servers();
        s.model = Some("gemini-3.8-flash".into());
        s.approval = ApprovalPolicy::OnRequest;
        let inv = Gemini::default().invocation(&s);
        assert_eq!(inv.args[1..3], ["--approval-mode", "default"]);
        assert_eq!(inv.args[4..], ["-m", "gemini-3.8-flash"]);
        let v: serde_json::Value = serde_json::from_str(&inv.files[0].1).unwrap();
        assert_eq!(v["mcpServers"]["notes"]["trust"], false, "{v}");

        s.approval = ApprovalPolicy::Always;
        let inv = Gemini::default().invocation(&s);
        assert_eq!(
            inv.args[inv.args.len() - 2..],
            ["--policy", "/var/berth/tasks/t1/gemini/berth-always.toml"]
        );
        let (path, policy) = &inv.files[2];
        assert!(path.ends_with("berth-always.toml"));
        assert!(
            policy.contains("toolName = \"*\"")
                && policy.contains("decision = \"ask_user\"")
                && policy.contains("argsPattern = \".*\""),
            "{policy}"
        );

        s.approval = ApprovalPolicy::Never;
        let inv = Gemini::default().invocation(&s);
        assert!(!inv.args.iter().any(|a| a == "--policy"));
        let v: serde_json::Value = serde_json::from_str(&inv.files[0].1).unwrap();
        assert_eq!(v["mcpServers"]["notes"]["trust"], true, "{v}");
    }

    #[test]
    fn a_session_is_loaded_from_the_next_minute_on() {
        use std::time::{Duration, UNIX_EPOCH};
        let d = Gemini::default();
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(d.resume_not_before(at(6000)), Some(at(6061)));
        assert_eq!(d.resume_not_before(at(6059)), Some(at(6061)));
        assert_eq!(
            crate::driver(Agent::Opencode).resume_not_before(at(6000)),
            None
        );
    }

    #[test]
    fn turns_run_on_the_acp_protocol() {
        let mut d = Gemini::default();
        let s = spec(Agent::Gemini);
        let lines = d.begin_turn(&s);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("\"initialize\""), "{lines:?}");
        assert!(d.supports_approvals());
        crate::testutil::fuzz(&mut d, crate::acp::tests::GEMINI_SAMPLE);
        let events = parse_all(&mut Gemini::default(), "not json");
        assert_eq!(
            events,
            vec![EventKind::Log {
                line: "not json".into()
            }]
        );
    }
}
