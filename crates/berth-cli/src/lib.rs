//! berth's command-line client: a thin client of the REST API `/api/v1`.
//!
//! The `berth` binary flattens [`Command`] into its own subcommands and calls [`run`]. Every
//! command takes `--url` (env `BERTH_URL`) and `--token` (env `BERTH_TOKEN`); what is not given
//! comes from the file `berth login` writes (`$XDG_CONFIG_HOME/berth/config.json`).
//!
//! This file holds only the top-level [`Command`], those connection options ([`ConnArgs`]) and
//! the dispatch. Each command group lives in `commands/`, its clap arguments next to its
//! handler. The helpers they share never import a command: `client` (HTTP, WebSocket, errors,
//! the login file), `ctx` (a command's streams, stdin and Ctrl-C), `format` (human output),
//! `stream` (streamed responses piece by piece) and `detach` (the detach key of `attach`).

use clap::{Args, Subcommand};

mod client;
mod commands;
mod ctx;
pub mod detach;
mod format;
mod stream;
mod tls;

pub use client::{config_path, encode_segment, CliError, LoginConfig, DEFAULT_URL};
pub use commands::access::AccessCmd;
pub use commands::attach::AttachArgs;
pub use commands::audit::AuditArgs;
pub use commands::budget::{BudgetCmd, BudgetTargetArgs};
pub use commands::doctor::DoctorArgs;
pub use commands::egress::template::EgressTemplateCmd;
pub use commands::egress::EgressCmd;
pub use commands::exec::ExecArgs;
pub use commands::image::ImageCmd;
pub use commands::login::LoginArgs;
pub use commands::mcp::McpArgs;
pub use commands::notify::NotifyCmd;
pub use commands::secret::SecretCmd;
pub use commands::session::SessionCmd;
pub use commands::task::{TaskCmd, TaskLogsArgs, TaskRunArgs, TaskSendArgs};
pub use commands::template::TemplateCmd;
pub use commands::tenant::TenantCmd;
pub use commands::token::TokenCmd;
pub use commands::usage::UsageArgs;
pub use commands::user::UserCmd;
pub use commands::workspace::{WorkspaceCmd, WorkspaceCreateArgs};
pub use detach::DetachFilter;

use client::{Client, Conn, Result};
use ctx::{Ctx, Interrupt, StdinSource};

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

impl ConnArgs {
    /// Resolves `--url`/`--token` against the login file.
    pub(crate) fn resolve(&self, ctx: &Ctx<'_>) -> Result<Conn> {
        let file = match (&self.url, &self.token, &ctx.config_path) {
            (Some(_), Some(_), _) | (_, _, None) => None,
            (_, _, Some(path)) => client::load_config(path)?,
        };
        client::resolve_conn(self.url.as_deref(), self.token.as_deref(), file.as_ref())
    }

    /// A client of the server these options name.
    pub(crate) fn client(&self, ctx: &Ctx<'_>) -> Result<Client> {
        Client::new(&self.resolve(ctx)?)
    }
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
    /// Workspace templates: a tenant's declarative workspaces (repositories, secrets, setup
    /// steps, MCP servers), versioned; `berth workspace create --template` uses them
    Template {
        #[command(subcommand)]
        cmd: TemplateCmd,
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
    /// People who sign in with single sign-on: list, disable, enable
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Access requests: what workspaces were denied or asked for; approve once/always, deny
    Access {
        #[command(subcommand)]
        cmd: AccessCmd,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Notifications: webhook, Slack and ntfy subscriptions, test sends, delivery log
    Notify {
        #[command(subcommand)]
        cmd: NotifyCmd,
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
    /// Show which token you are using: name, role, tenant, expiry
    Whoami {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// API tokens: create (printed once), list, revoke
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Tenants and their quotas
    Tenant {
        #[command(subcommand)]
        cmd: TenantCmd,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Serve berth as MCP tools on stdio for an agent (Claude Code, Codex, Gemini CLI,
    /// OpenCode): workspaces, tasks, approvals, usage, egress logs; it can do exactly what its
    /// token can (docs/mcp.md)
    Mcp(McpArgs),
}

/// Runs one client command. Returns the process exit code: 0 on success, the remote command's
/// code for `exec`, 130 when `task run`/`task send --wait` is detached with Ctrl-C, 1 on errors,
/// which are printed as one line `error: …` on stderr.
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
    match execute(cmd, ctx).await {
        Ok(code) => code,
        Err(e) => {
            let _ = ctx.out.flush();
            ctx.note(&e.line());
            1
        }
    }
}

/// Hands a parsed command to its group's handler, with a client of the server it names.
async fn execute(cmd: Command, ctx: &mut Ctx<'_>) -> Result<i32> {
    use commands::*;
    match cmd {
        Command::Login(args) => login::run(args, ctx).await,
        Command::Doctor(args) => doctor::run(args, ctx).await,
        Command::Workspace { cmd, conn } => workspace::run(*cmd, &conn.client(ctx)?, ctx).await,
        Command::Exec(args) => {
            let client = args.conn.client(ctx)?;
            exec::run(args, &client, ctx).await
        }
        Command::Session { cmd, conn } => session::run(cmd, &conn.client(ctx)?, ctx).await,
        Command::Attach(args) => {
            let client = args.conn.client(ctx)?;
            attach::run(args, &client, ctx).await
        }
        Command::Task { cmd, conn } => task::run(cmd, &conn.client(ctx)?, ctx).await,
        Command::Audit(args) => {
            let client = args.conn.client(ctx)?;
            audit::run(args, &client, ctx).await
        }
        Command::Usage(args) => {
            let client = args.conn.client(ctx)?;
            usage::run(args, &client, ctx).await
        }
        Command::Egress { cmd, conn } => egress::run(cmd, &conn.client(ctx)?, ctx).await,
        Command::Secret { cmd, conn } => secret::run(cmd, &conn.client(ctx)?, ctx).await,
        Command::Template { cmd, conn } => template::run(cmd, &conn.client(ctx)?, ctx).await,
        Command::User { cmd, conn } => user::run(cmd, &conn.client(ctx)?, ctx).await,
        Command::Budget { cmd, conn } => budget::run(cmd, &conn.client(ctx)?, ctx).await,
        Command::Notify { cmd, conn } => notify::run(cmd, &conn.client(ctx)?, ctx).await,
        Command::Access { cmd, conn } => access::run(cmd, &conn.client(ctx)?, ctx).await,
        Command::Image { cmd, conn } => image::run(cmd, &conn.client(ctx)?, ctx).await,
        // The client's version is printed before the server is asked.
        Command::Version { conn } => version::run(&conn, ctx).await,
        Command::Whoami { conn } => whoami::run(&conn.client(ctx)?, ctx).await,
        Command::Token { cmd, conn } => token::run(cmd, &conn.client(ctx)?, ctx).await,
        Command::Tenant { cmd, conn } => tenant::run(cmd, &conn.client(ctx)?, ctx).await,
        Command::Mcp(args) => {
            let client = args.conn.client(ctx)?;
            mcp::run(client, ctx).await
        }
    }
}

#[cfg(test)]
mod tests;
