//! Agent drivers.
//!
//! A [`Driver`] knows one coding-agent CLI: how to start a turn in its structured headless mode
//! ([`Driver::invocation`]) and how to translate each line it prints into berth's normalized
//! [`EventKind`]s ([`Driver::parse_line`]). It does no I/O: the workspace daemon spawns the
//! process, feeds lines to the driver and owns the events.
//!
//! Claude runs one process per turn. The first turn starts a new agent conversation;
//! follow-ups resume it by the agent's own session id (reported as [`EventKind::Session`]).
//! A [`Driver::long_lived`] driver (codex's app-server; gemini and opencode over ACP) speaks a
//! protocol with one process per task instead:
//! the daemon keeps the process between turns, writes what [`Driver::begin_turn`] and
//! [`Driver::take_output`] give it to the process's stdin, and learns the end of each turn from
//! [`Driver::take_turn_end`]; a new process (after the idle one was reaped, or in a new daemon)
//! resumes the conversation by its id.
//!
//! [`Driver::interactive`] starts the same CLI's own interactive TUI in a terminal session,
//! configured exactly like a turn (the gateway, a virtual key, its own state directory,
//! autonomous mode) with every first-run, trust and key-approval dialog answered in advance.

use std::path::PathBuf;

pub use berth_domain::{Agent, ApprovalPolicy, EventKind, McpServer};

mod acp;
mod approval_util;
mod claude;
mod claude_approval;
mod codex;
mod codex_app;
mod gemini;
mod mcp;
mod opencode;
#[cfg(test)]
mod testutil;
mod util;

/// Everything a driver needs to build an invocation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TurnSpec {
    pub agent: Agent,
    /// The user message of this turn (the prompt, or a follow-up).
    pub prompt: String,
    pub model: Option<String>,
    /// Working directory of the agent (the repo, or the task's worktree).
    pub cwd: PathBuf,
    /// HOME of the agent (the workspace user's persistent home).
    pub home: PathBuf,
    /// A private directory for this task (config files, TMPDIR); created by the daemon.
    pub task_dir: PathBuf,
    /// Base URL of berth's LLM gateway for this agent's provider, reachable from the workspace,
    /// e.g. `http://127.0.0.1:7788/anthropic`. For OpenAI-style agents it does **not** end in
    /// `/v1`; drivers append what their CLI expects.
    pub gateway_url: String,
    /// The per-task virtual key the gateway accepts. Never a real provider key.
    pub virtual_key: String,
    /// The agent's own conversation id to resume; `None` for the first turn.
    pub resume: Option<String>,
    /// When the agent must ask before acting. Anything but `never` runs the CLI's permission
    /// protocol ([`Driver::supports_approvals`]); `never` is the unattended mode.
    #[serde(default)]
    pub approval: ApprovalPolicy,
    /// The workspace's MCP servers, written into the CLI's own per-task configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<McpServer>,
}

/// How to run one turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Program name (looked up in PATH) or path.
    pub program: String,
    pub args: Vec<String>,
    /// The complete environment of the process (the daemon clears its own first).
    pub env: Vec<(String, String)>,
    /// Files to write (mode 0600, parent dirs created) before spawning, e.g. config files.
    pub files: Vec<(PathBuf, String)>,
    /// Bytes to write to stdin, after which stdin is closed (a [`Driver::long_lived`] process's
    /// stays open for the protocol). `None`: stdin is /dev/null.
    pub stdin: Option<String>,
    pub cwd: PathBuf,
}

/// Everything a driver needs to start the CLI's interactive TUI (a terminal session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    pub agent: Agent,
    pub model: Option<String>,
    /// Working directory of the agent.
    pub cwd: PathBuf,
    /// HOME of the agent (the workspace user's persistent home).
    pub home: PathBuf,
    /// The private state directory (config files, TMPDIR): the session's own, or the task's
    /// directory when a task is taken over (so its conversation is found).
    pub state_dir: PathBuf,
    /// As [`TurnSpec::gateway_url`].
    pub gateway_url: String,
    /// The per-session virtual key the gateway accepts. Never a real provider key.
    pub virtual_key: String,
    /// The agent's own conversation id to resume; `None` starts a new conversation.
    pub resume: Option<String>,
    /// As [`TurnSpec::mcp_servers`].
    pub mcp_servers: Vec<McpServer>,
}

impl SessionSpec {
    /// The same settings as a turn spec (no prompt), so a driver shares its turn configuration.
    pub(crate) fn as_turn(&self) -> TurnSpec {
        TurnSpec {
            agent: self.agent,
            prompt: String::new(),
            model: self.model.clone(),
            cwd: self.cwd.clone(),
            home: self.home.clone(),
            task_dir: self.state_dir.clone(),
            gateway_url: self.gateway_url.clone(),
            virtual_key: self.virtual_key.clone(),
            resume: self.resume.clone(),
            approval: ApprovalPolicy::Never,
            mcp_servers: self.mcp_servers.clone(),
        }
    }
}

/// One agent CLI.
pub trait Driver: Send {
    fn agent(&self) -> Agent;

    /// The command for this turn.
    fn invocation(&self, spec: &TurnSpec) -> Invocation;

    /// The command of the CLI's interactive TUI: the turn's environment and config files (plus
    /// what the TUI's first-run dialogs need), without the headless flags. `stdin` is always
    /// `None` (the terminal is the input).
    fn interactive(&self, spec: &SessionSpec) -> Invocation;

    /// Translates one line of the CLI's stdout. Lines it does not understand come back as
    /// [`EventKind::Raw`] (parsed JSON) — never dropped. Non-JSON lines become `Log`.
    fn parse_line(&mut self, line: &str) -> Vec<EventKind>;

    /// Whether the [`EventKind::Usage`] this agent reports is a running total for the whole
    /// agent session (all turns so far) rather than for the current turn; a consumer summing
    /// usage per task must then take the difference to the previous turn's report. (Codex's
    /// `exec resume` reported such totals; its app-server driver reports each turn's own.)
    fn usage_is_cumulative(&self) -> bool {
        false
    }

    /// Whether this driver speaks its CLI's permission protocol: with a policy other than
    /// `never`, its [`Driver::invocation`] asks the CLI to route permission requests to stdout
    /// (parsed into [`EventKind::ApprovalRequest`]), the daemon keeps the agent's stdin open after
    /// [`Invocation::stdin`] for the answers ([`Driver::answer`]) and closes it once the turn is
    /// completed.
    fn supports_approvals(&self) -> bool {
        false
    }

    /// The lines (each without its newline) to write to the agent's stdin to answer the
    /// permission request `id`: allow it, or deny it telling the agent `message`. Empty when the
    /// driver knows no such request.
    fn answer(&mut self, id: &str, approve: bool, message: &str) -> Vec<String> {
        let _ = (id, approve, message);
        Vec::new()
    }

    /// Whether the CLI runs as a long-lived protocol process serving every turn of a task
    /// ([`Driver::invocation`] starts it, stdin stays open) instead of one process per turn.
    fn long_lived(&self) -> bool {
        false
    }

    /// The lines (each without its newline) to write to start the turn of `spec` (its prompt) on
    /// this driver's process, new or warm. Only for [`Driver::long_lived`] drivers.
    fn begin_turn(&mut self, spec: &TurnSpec) -> Vec<String> {
        let _ = spec;
        Vec::new()
    }

    /// The lines the last [`Driver::parse_line`] calls want written to the process (answers to
    /// its requests, the next step of a handshake), in order; taken.
    fn take_output(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// How the current turn ended, once it has (taken: `Some` once per turn).
    fn take_turn_end(&mut self) -> Option<TurnEnd> {
        None
    }

    /// For a [`Driver::long_lived`] driver: the earliest time a new process may resume a
    /// session first reported at `session_seen` (`None`: at once). Gemini CLI 0.61 cannot
    /// `session/load` a session in the UTC minute it started (see gemini.rs).
    fn resume_not_before(
        &self,
        session_seen: std::time::SystemTime,
    ) -> Option<std::time::SystemTime> {
        let _ = session_seen;
        None
    }

    /// The lines that interrupt the current turn (the turn then ends as
    /// [`TurnEnd::Interrupted`]); empty when there is nothing to interrupt yet.
    fn interrupt(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// How a turn of a [`Driver::long_lived`] driver ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEnd {
    /// The turn is over as the agent meant it to be.
    Completed,
    /// The turn was interrupted ([`Driver::interrupt`]).
    Interrupted,
    /// The turn failed (the agent's or the protocol's reason); the process may still serve turns.
    Failed(String),
}

/// The `berth` binary inside every workspace (mounted read-only by the server).
pub const BERTH_IN_WORKSPACE: &str = "/opt/berth/berth";

/// What berth tells every agent, in its CLI's own instructions file (Claude Code
/// `$CLAUDE_CONFIG_DIR/CLAUDE.md`, Codex `$CODEX_HOME/AGENTS.md`, Gemini CLI
/// `$GEMINI_CLI_HOME/.gemini/GEMINI.md`, OpenCode's `instructions`): how to ask for access
/// instead of working around the egress proxy.
pub const ACCESS_INSTRUCTIONS: &str = "# berth workspace\n\n\
This workspace reaches the network only through berth's egress proxy, which lets through only \
what the workspace's owners allowed. When a request is refused by berth egress (HTTP 403 \
`berth egress: ... is not allowed for this workspace`), or you need a credential for a host, \
ask for it with a short reason instead of working around it:\n\n\
    /opt/berth/berth request egress HOST[:PORT] --reason \"why you need it\"\n\
    /opt/berth/berth request secret NAME --host HOST --reason \"why you need it\"\n\n\
The request waits for a person to approve it; once approved, retry. Do not try other ways out.\n";

/// The instructions file at `path` (see [`ACCESS_INSTRUCTIONS`]).
pub(crate) fn instructions(path: PathBuf) -> (PathBuf, String) {
    (path, ACCESS_INSTRUCTIONS.to_owned())
}

/// Whether `agent`'s driver supports approvals (a policy other than `never`).
pub fn supports_approvals(agent: Agent) -> bool {
    driver(agent).supports_approvals()
}

/// A fresh driver (parsers keep per-turn state, so use one per turn).
pub fn driver(agent: Agent) -> Box<dyn Driver> {
    match agent {
        Agent::Claude => Box::new(claude::Claude::default()),
        Agent::Codex => Box::new(codex::Codex::default()),
        Agent::Gemini => Box::new(gemini::Gemini::default()),
        Agent::Opencode => Box::new(opencode::Opencode::default()),
    }
}

/// Base environment every agent gets: the workspace user's basics. The daemon puts the
/// driver's environment over the workspace's own (the template's `[env]`, secret placeholders).
pub fn base_env(spec: &TurnSpec) -> Vec<(String, String)> {
    let tmp = spec.task_dir.join("tmp");
    vec![
        ("HOME".into(), spec.home.display().to_string()),
        ("USER".into(), "agent".into()),
        ("LOGNAME".into(), "agent".into()),
        ("SHELL".into(), "/bin/bash".into()),
        ("LANG".into(), "C.UTF-8".into()),
        (
            "PATH".into(),
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin".into(),
        ),
        ("TMPDIR".into(), tmp.display().to_string()),
        (
            "NODE_EXTRA_CA_CERTS".into(),
            "/etc/ssl/certs/ca-certificates.crt".into(),
        ),
        ("NO_COLOR".into(), "1".into()),
        ("TERM".into(), "dumb".into()),
    ]
}

/// The environment of an interactive TUI: the turn's, with a colour terminal instead of the
/// headless `TERM=dumb`/`NO_COLOR`.
pub(crate) fn interactive_env(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != "TERM" && k != "NO_COLOR" && k != "COLORTERM");
    env.push(("TERM".into(), "xterm-256color".into()));
    env.push(("COLORTERM".into(), "truecolor".into()));
    env
}

/// Parses a JSON line, or returns the `Log` event for a non-JSON line.
pub(crate) fn json_or_log(line: &str) -> Result<serde_json::Value, Vec<EventKind>> {
    let t = line.trim();
    if t.is_empty() {
        return Err(Vec::new());
    }
    serde_json::from_str(t).map_err(|_| vec![EventKind::Log { line: t.to_owned() }])
}
