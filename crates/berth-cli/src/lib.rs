//! berth's command-line client: a thin client of the REST API `/api/v1`.
//!
//! The `berth` binary flattens [`Command`] into its own subcommands and calls [`run`]. Every
//! command takes `--url` (env `BERTH_URL`) and `--token` (env `BERTH_TOKEN`); what is not given
//! comes from the file `berth login` writes (`$XDG_CONFIG_HOME/berth/config.json`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

mod backup;
mod client;
mod commands;
pub mod detach;
mod doctor;
mod format;
mod stream;
mod task;

pub use client::{config_path, encode_segment, CliError, LoginConfig, DEFAULT_URL};
pub use detach::DetachFilter;

use client::{Conn, Result};

/// Where to reach the server. `global`, so it may follow any subcommand:
/// `berth workspace list --url X` and `berth workspace --url X list` both work.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnArgs {
    /// Server URL [default: the one saved by `berth login`, else http://127.0.0.1:8787]
    #[arg(long, env = "BERTH_URL", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// API token [default: the one saved by `berth login`]
    #[arg(
        long,
        env = "BERTH_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// The client subcommands of `berth`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a token with the server and save the URL and token for later commands
    Login(LoginArgs),
    /// Check that berth works here; prints the fix for each failed check
    Doctor(DoctorArgs),
    /// Create, list, show, start, stop and remove workspaces
    Workspace {
        #[command(subcommand)]
        cmd: Box<WorkspaceCmd>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Run a command in a workspace, streaming its output; exits with the command's exit code
    Exec(ExecArgs),
    /// Persistent terminal sessions in a workspace
    Session {
        #[command(subcommand)]
        cmd: SessionCmd,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Attach this terminal to a session in a workspace (detach with Ctrl-b d)
    Attach(AttachArgs),
    /// Coding-agent tasks: run an agent on a prompt in a workspace, follow its events, send
    /// follow-ups
    Task {
        #[command(subcommand)]
        cmd: TaskCmd,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show the audit log, newest first
    Audit(AuditArgs),
    /// LLM usage through berth's gateway: calls, tokens, cost
    Usage(UsageArgs),
    /// A workspace's egress firewall: rules (changed live) and the log of every attempt
    Egress {
        #[command(subcommand)]
        cmd: EgressCmd,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// The tenant-scoped secrets vault
    Secret {
        #[command(subcommand)]
        cmd: SecretCmd,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Token/cost budgets of tenants and workspaces
    Budget {
        #[command(subcommand)]
        cmd: BudgetCmd,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// The workspace base image: status and build
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show the client's and the server's versions
    Version {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show which token you are using and its role
    Whoami {
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Server URL, e.g. http://127.0.0.1:8787
    pub url: String,
    /// API token
    #[arg(
        long,
        env = "BERTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Subcommand)]
// Parsed once per run; the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum WorkspaceCmd {
    /// Create and start a workspace
    Create {
        /// Workspace name, or TENANT/NAME
        name: String,
        /// Tenant (client) the workspace belongs to [default: default]
        #[arg(long)]
        tenant: Option<String>,
        /// Memory cap, e.g. 512m or 2g
        #[arg(long)]
        memory: Option<String>,
        /// CPU cap, e.g. 1 or 0.5
        #[arg(long)]
        cpus: Option<String>,
        /// Maximum number of processes
        #[arg(long)]
        pids: Option<i64>,
        /// Image to run [default: berth's base image]
        #[arg(long)]
        image: Option<String>,
        /// Network mode: none (default; only berth's egress proxy) or bridge
        #[arg(long, value_parser = ["none", "bridge"])]
        network: Option<String>,
        /// Allow egress, e.g. --allow registry.npmjs.org --allow '*.github.com:443' (repeatable;
        /// full rule syntax: --allow 'deny example.com POST /x')
        #[arg(long = "allow", value_name = "RULE")]
        allow: Vec<String>,
        /// Attach an egress template: one of the tenant's (`berth egress template list`) or a
        /// built-in (npm, pypi, crates, github, debian); repeatable, evaluated in this order
        /// after the workspace's own rules
        #[arg(long = "egress-template", value_name = "NAME")]
        egress_template: Vec<String>,
        /// Use a tenant secret through a placeholder swapped in by the egress proxy only for
        /// these hosts, inside TLS, in the Authorization header or the headers named after a
        /// second colon: --secret GITHUB_TOKEN:github.com,api.github.com,
        /// --secret API_KEY:api.example.com:x-api-key (repeatable)
        #[arg(long = "secret", value_name = "NAME:HOSTS[:HEADERS]")]
        secret: Vec<String>,
        /// Put a tenant secret's real value into the workspace environment (exposed)
        #[arg(long = "secret-env", value_name = "NAME")]
        secret_env: Vec<String>,
        /// Put a tenant secret's real value into /run/berth/secrets/NAME (exposed); the
        /// workspace gets NAME_FILE
        #[arg(long = "secret-file", value_name = "NAME")]
        secret_file: Vec<String>,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// List workspaces
    #[command(visible_alias = "ls")]
    List {
        /// Only this tenant's workspaces
        #[arg(long)]
        tenant: Option<String>,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Show a workspace: limits, live usage, daemon status, last failure
    Show {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped workspace
    Start {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop a workspace (its home volume and sessions' state on disk stay)
    Stop {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a workspace
    #[command(visible_alias = "remove")]
    Rm {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Also remove its home volume (/home/agent)
        #[arg(long)]
        volume: bool,
    },
    /// Write a workspace's home volume and spec to a compressed archive (.tar.zst)
    Backup {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Archive file [default: TENANT-NAME-TIMESTAMP.tar.zst]
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Freeze a running workspace for the copy (one point in time); default: copy live
        #[arg(long)]
        pause: bool,
    },
    /// Create a workspace from an archive written by `berth workspace backup`
    Restore {
        /// Archive file
        file: PathBuf,
        /// Workspace name, or TENANT/NAME [default: the name in the archive]
        #[arg(long)]
        name: Option<String>,
        /// Tenant [default: the tenant in the archive]
        #[arg(long)]
        tenant: Option<String>,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Workspace: TENANT/NAME, NAME or id
    pub ws: String,
    /// Environment variable for the command (repeatable)
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory of the command
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// The command and its arguments (after `--`)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// Start a new session (a login shell unless a command follows `--`)
    New {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Session name [default: main, then shell-2, …]
        #[arg(long)]
        name: Option<String>,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
        /// Command to run instead of a login shell
        #[arg(last = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// List a workspace's sessions
    #[command(visible_alias = "ls")]
    List {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one session
    Show {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Session name or id
        session: String,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Write a session's scrollback to stdout, byte for byte
    Capture {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Session name or id
        session: String,
    },
    /// Kill (if running) and forget a session
    #[command(visible_alias = "remove")]
    Rm {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Session name or id
        session: String,
    },
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Workspace: TENANT/NAME, NAME or id
    pub ws: String,
    /// Session name or id [default: "main", else the only running session, else a new one]
    pub session: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// The agents `berth task run --agent` accepts.
const AGENTS: [&str; 4] = ["claude", "codex", "gemini", "opencode"];
/// The task states `berth task list --state` accepts.
const TASK_STATES: [&str; 8] = [
    "queued",
    "starting",
    "running",
    "waiting",
    "completed",
    "interrupted",
    "failed",
    "cancelled",
];

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Start a coding agent on a prompt in a workspace and stream its events until the turn is
    /// over (Ctrl-C detaches; the task keeps running)
    Run {
        /// Workspace: TENANT/NAME, NAME or id (it must be running)
        ws: String,
        /// The coding agent
        #[arg(long, value_parser = AGENTS)]
        agent: String,
        /// Model [default: the agent's]
        #[arg(long)]
        model: Option<String>,
        /// Working directory in the workspace [default: /home/agent]
        #[arg(long, value_name = "DIR")]
        dir: Option<String>,
        /// Work in a new git worktree of the repository in DIR, on a new branch of this name
        #[arg(long, value_name = "BRANCH")]
        worktree: Option<String>,
        /// Print the task id and return at once
        #[arg(long, short = 'd')]
        detach: bool,
        /// Print each event as one line of JSON (with --detach: the task as JSON)
        #[arg(long)]
        json: bool,
        /// Print the agent's text as it came, terminal control sequences included (default:
        /// escape sequences and control characters are stripped)
        #[arg(long)]
        raw: bool,
        /// Also show the agent's diagnostics and unmapped events
        #[arg(long, short = 'v')]
        verbose: bool,
        /// The prompt (the remaining words, joined with spaces; use `--` before one that starts
        /// with a dash)
        #[arg(required = true, trailing_var_arg = true, value_name = "PROMPT")]
        prompt: Vec<String>,
    },
    /// List tasks, newest first
    #[command(visible_alias = "ls")]
    List {
        /// Only this workspace's tasks
        #[arg(long, value_name = "WS")]
        workspace: Option<String>,
        /// Only tasks in this state
        #[arg(long, value_parser = TASK_STATES)]
        state: Option<String>,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
        /// Print the agent's text as it came, terminal control sequences included (default:
        /// escape sequences and control characters are stripped)
        #[arg(long)]
        raw: bool,
    },
    /// Show a task: agent, state, usage, last message
    Show {
        /// Task id
        task: String,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
        /// Print the agent's text as it came, terminal control sequences included (default:
        /// escape sequences and control characters are stripped)
        #[arg(long)]
        raw: bool,
    },
    /// Print a task's events; with -f keep following them
    Logs {
        /// Task id
        task: String,
        /// Keep following new events until the task fails or is cancelled (or Ctrl-C)
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print each event as one line of JSON
        #[arg(long)]
        json: bool,
        /// Print the agent's text as it came, terminal control sequences included (default:
        /// escape sequences and control characters are stripped)
        #[arg(long)]
        raw: bool,
        /// Only events after this sequence number
        #[arg(long, value_name = "N", default_value_t = 0)]
        after: u64,
        /// Also show the agent's diagnostics and unmapped events
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Send a follow-up message to a task (the next turn of its conversation)
    Send {
        /// Task id
        task: String,
        /// Stream the task's events until the turn is over, like `berth task run`
        #[arg(long)]
        wait: bool,
        /// Print each event as one line of JSON (without --wait: the task as JSON)
        #[arg(long)]
        json: bool,
        /// Print the agent's text as it came, terminal control sequences included (default:
        /// escape sequences and control characters are stripped)
        #[arg(long)]
        raw: bool,
        /// Also show the agent's diagnostics and unmapped events
        #[arg(long, short = 'v')]
        verbose: bool,
        /// The message (the remaining words, joined with spaces)
        #[arg(required = true, trailing_var_arg = true, value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Cancel a task (stops its agent; final)
    Cancel {
        /// Task id
        task: String,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Maximum number of entries
    #[arg(long)]
    pub limit: Option<i64>,
    /// Only entries about this target, e.g. acme/web
    #[arg(long)]
    pub target: Option<String>,
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Only this tenant
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this workspace
    #[arg(long)]
    pub workspace: Option<String>,
    /// Since an RFC 3339 time, a date (2026-11-01) or a duration back from now (24h, 7d)
    #[arg(long)]
    pub since: Option<String>,
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Whose budget: exactly one of --tenant or --workspace.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct BudgetTargetArgs {
    /// A tenant's budget (all its workspaces together)
    #[arg(long)]
    pub tenant: Option<String>,
    /// One workspace's budget
    #[arg(long)]
    pub workspace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EgressCmd {
    /// List the rules in force, in order: the workspace's own (numbered), then its templates'
    /// (first match wins; anything unmatched is denied)
    Rules {
        ws: String,
        #[arg(long)]
        json: bool,
    },
    /// Allow HOST[:PORT] [METHOD] [/PATH-PREFIX], e.g. `berth egress allow W registry.npmjs.org`
    Allow {
        ws: String,
        #[arg(required = true, num_args = 1..)]
        rule: Vec<String>,
    },
    /// Deny HOST[:PORT] [METHOD] [/PATH-PREFIX] (added on top, so it wins over older allows)
    Deny {
        ws: String,
        #[arg(required = true, num_args = 1..)]
        rule: Vec<String>,
    },
    /// Remove the rule at this position (as listed by `rules`, from 0)
    Rm { ws: String, index: usize },
    /// Show the egress log; -f follows it
    Log {
        ws: String,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Attach an egress template to a workspace (after the ones it has; applies at once)
    Attach {
        ws: String,
        /// A template of the workspace's tenant, or a built-in
        template: String,
    },
    /// Detach an egress template from a workspace (applies at once)
    Detach { ws: String, template: String },
    /// Egress templates: named rule lists that workspaces share (the tenant's own, and the
    /// read-only built-ins npm, pypi, crates, github, debian)
    Template {
        #[command(subcommand)]
        cmd: EgressTemplateCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum EgressTemplateCmd {
    /// List the built-in templates and the tenants' own
    #[command(visible_alias = "ls")]
    List {
        /// Only this tenant's templates (and the built-ins)
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a template's rules and the workspaces that use it
    Show {
        name: String,
        /// The tenant whose template this is [default: the built-in, else the only tenant
        /// that has one of this name]
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Create or replace a tenant's template; every running workspace that uses it gets the
    /// new rules at once
    Set {
        #[arg(long)]
        tenant: String,
        name: String,
        /// Rules in order, each one argument: 'allow registry.npmjs.org:443' (a bare HOST
        /// means `allow HOST`)
        #[arg(required = true, num_args = 1.., value_name = "RULE")]
        rules: Vec<String>,
        /// What the template is for [default: keep the current one]
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a tenant's template
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(long)]
        tenant: String,
        name: String,
        /// Detach it from every workspace that uses it (otherwise refused while attached)
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Set a secret; the value is read from stdin, never from the command line
    Set {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// List secrets (names, where used, whether exposed); values are never shown
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret
    Rm {
        #[arg(long)]
        tenant: String,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BudgetCmd {
    /// Set (replace) a budget
    Set {
        #[command(flatten)]
        target: BudgetTargetArgs,
        /// Maximum input + output tokens per period
        #[arg(long)]
        tokens: Option<u64>,
        /// Maximum cost in USD per period (from the server's price table)
        #[arg(long)]
        cost: Option<f64>,
        /// day, month or total
        #[arg(long, default_value = "day", value_parser = ["day", "month", "total"])]
        period: String,
        #[arg(long)]
        json: bool,
    },
    /// List budgets with what is spent in the current period
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a budget
    Rm {
        #[command(flatten)]
        target: BudgetTargetArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Show the base image's tag and whether it is built
    Status {
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Build the base image, printing progress as it streams
    Build {
        /// Rebuild even when the image exists
        #[arg(long)]
        force: bool,
    },
}

fn parse_env(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected K=V, got {s:?}")),
    }
}

pub(crate) fn env_map(env: &[(String, String)]) -> BTreeMap<String, String> {
    env.iter().cloned().collect()
}

/// Where a command's local stdin comes from.
pub(crate) enum StdinSource {
    /// The process's stdin.
    Real,
    /// Fixed bytes, then end of file (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Fixed(Vec<u8>),
}

impl StdinSource {
    pub fn is_tty(&self) -> bool {
        use std::io::IsTerminal;
        match self {
            Self::Real => std::io::stdin().is_terminal(),
            Self::Fixed(_) => false,
        }
    }

    /// Chunks of stdin on a channel; the channel closes at end of file. The real stdin is read
    /// on a plain thread so a pending read never holds up the end of the process.
    pub fn reader(&mut self) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        match self {
            Self::Fixed(bytes) => {
                let bytes = std::mem::take(bytes);
                if !bytes.is_empty() {
                    // Capacity 16 and one message: never full.
                    let _ = tx.try_send(bytes);
                }
            }
            Self::Real => {
                std::thread::Builder::new()
                    .name("berth-stdin".into())
                    .spawn(move || {
                        use std::io::Read;
                        let mut stdin = std::io::stdin();
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            match stdin.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                                        break;
                                    }
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                                Err(_) => break,
                            }
                        }
                    })
                    .map_err(|e| CliError::other(format!("cannot read stdin: {e}")))?;
            }
        }
        Ok(rx)
    }
}

/// Where "the user pressed Ctrl-C" comes from.
pub(crate) enum Interrupt {
    /// SIGINT.
    CtrlC,
    /// A notification (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Manual(std::sync::Arc<tokio::sync::Notify>),
}

impl Interrupt {
    /// Starts listening; Ctrl-C no longer ends the process while the listener lives.
    pub fn listen(&self) -> Result<InterruptListener> {
        match self {
            Self::CtrlC => {
                use tokio::signal::unix::{signal, SignalKind};
                signal(SignalKind::interrupt())
                    .map(InterruptListener::Signal)
                    .map_err(|e| {
                        CliError::other(format!("cannot handle Ctrl-C: {}", client::root_cause(&e)))
                    })
            }
            Self::Manual(n) => Ok(InterruptListener::Manual(n.clone())),
        }
    }
}

pub(crate) enum InterruptListener {
    Signal(tokio::signal::unix::Signal),
    Manual(std::sync::Arc<tokio::sync::Notify>),
}

impl InterruptListener {
    /// Resolves when the user interrupts.
    pub async fn recv(&mut self) {
        match self {
            Self::Signal(s) => {
                if s.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            Self::Manual(n) => n.notified().await,
        }
    }
}

/// What a command writes to and reads from; the real process's streams in [`run`].
pub(crate) struct Ctx<'a> {
    pub out: &'a mut (dyn Write + Send),
    pub err: &'a mut (dyn Write + Send),
    pub stdin: StdinSource,
    pub config_path: Option<PathBuf>,
    /// Ctrl-C, for the commands that handle it (task streams).
    pub interrupt: Interrupt,
    /// Whether stdout is a terminal that takes colors (dims an agent's reasoning).
    pub color: bool,
}

impl Ctx<'_> {
    /// Writes text to stdout.
    pub fn print(&mut self, s: &str) -> Result<()> {
        write_all(self.out, s.as_bytes())
    }

    /// Writes a line to stderr (status messages; failures to write are ignored).
    pub fn note(&mut self, s: &str) {
        let _ = writeln!(self.err, "{s}");
        let _ = self.err.flush();
    }

    /// Pretty JSON on stdout.
    pub fn print_json(&mut self, v: &serde_json::Value) -> Result<()> {
        let s = serde_json::to_string_pretty(v)
            .map_err(|e| CliError::other(format!("cannot encode JSON: {e}")))?;
        self.print(&format!("{s}\n"))
    }

    /// Resolves `--url`/`--token` against the login file.
    pub fn conn(&self, args: &ConnArgs) -> Result<Conn> {
        let file = match (&args.url, &args.token, &self.config_path) {
            (Some(_), Some(_), _) | (_, _, None) => None,
            (_, _, Some(path)) => client::load_config(path)?,
        };
        client::resolve_conn(args.url.as_deref(), args.token.as_deref(), file.as_ref())
    }
}

pub(crate) fn write_all(w: &mut (dyn Write + Send), bytes: &[u8]) -> Result<()> {
    w.write_all(bytes)
        .and_then(|()| w.flush())
        .map_err(|e| CliError::other(format!("cannot write output: {}", client::root_cause(&e))))
}

/// Runs one client command. Returns the process exit code: 0 on success, the remote command's
/// code for `exec`, 130 when `task run`/`task send --wait` is detached with Ctrl-C, 1 on errors, which are printed as one line `error: …` on stderr.
pub async fn run(cmd: Command) -> i32 {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut ctx = Ctx {
        out: &mut out,
        err: &mut err,
        stdin: StdinSource::Real,
        config_path: config_path(),
        interrupt: Interrupt::CtrlC,
        color: {
            use std::io::IsTerminal;
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        },
    };
    run_with(cmd, &mut ctx).await
}

pub(crate) async fn run_with(cmd: Command, ctx: &mut Ctx<'_>) -> i32 {
    match commands::execute(cmd, ctx).await {
        Ok(code) => code,
        Err(e) => {
            let _ = ctx.out.flush();
            ctx.note(&e.line());
            1
        }
    }
}

#[cfg(test)]
mod tests;
