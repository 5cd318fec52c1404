//! `berth session …`: a workspace's persistent terminal sessions: start, list, show, capture
//! the scrollback, remove. (`berth attach` joins one: `attach.rs`.)

use berth_api::{CreateSession, Session};
use clap::Subcommand;

use crate::client::{decode, session_path, ws_path, Client, Result};
use crate::ctx::{terminal_size, write_all, Ctx};
use crate::format::{bytes_human, key_values, short_time, table};

/// `session new`'s agent options (boxed: they would make every command larger).
#[derive(Debug, clap::Args)]
pub struct AgentOpts {
    /// Run this coding agent's interactive TUI, configured like a task (the LLM gateway with a
    /// per-session key, autonomous mode)
    #[arg(long, value_parser = ["claude", "codex", "gemini", "opencode"], conflicts_with = "cmd")]
    agent: Option<String>,
    /// The agent's working directory [default: /home/agent]
    #[arg(long, value_name = "DIR", requires = "agent")]
    dir: Option<String>,
    /// The agent's model [default: the agent's]
    #[arg(long, requires = "agent")]
    model: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// Start a new session (a login shell unless a command follows `--`)
    New {
        /// Workspace: TENANT/NAME, NAME or id
        ws: String,
        /// Session name [default: main, then shell-2, …; with --agent the agent's name]
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        agent: Box<AgentOpts>,
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

pub(crate) async fn run(cmd: SessionCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        SessionCmd::New {
            ws,
            name,
            agent,
            json,
            cmd,
        } => {
            let AgentOpts { agent, dir, model } = *agent;
            let (cols, rows) = terminal_size();
            let req = CreateSession {
                name,
                cmd: if cmd.is_empty() { None } else { Some(cmd) },
                agent,
                model,
                cwd: dir,
                cols: Some(cols),
                rows: Some(rows),
                ..CreateSession::default()
            };
            new(client, ctx, &ws, req, json).await?
        }
        SessionCmd::List { ws, json } => {
            let v = client
                .get_value(&format!("{}/sessions", ws_path(&ws)))
                .await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<Session> = decode(v)?;
                if list.is_empty() {
                    ctx.print(&format!(
                        "no sessions in {ws} (start one: berth session new {ws})\n"
                    ))?;
                } else {
                    ctx.print(&session_table(&list))?;
                }
            }
        }
        SessionCmd::Show { ws, session, json } => {
            let v = client.get_value(&session_path(&ws, &session)).await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let s: Session = decode(v)?;
                ctx.print(&session_details(&s))?;
            }
        }
        SessionCmd::Capture { ws, session } => {
            let bytes = client
                .get_bytes(&format!("{}/scrollback", session_path(&ws, &session)))
                .await?;
            write_all(ctx.out, &bytes)?;
        }
        SessionCmd::Rm { ws, session } => {
            client
                .delete(&session_path(&ws, &session), &[] as &[(&str, &str)])
                .await?;
            ctx.print(&format!("removed session {session} from {ws}\n"))?;
        }
    }
    Ok(0)
}

/// Starts a session (the size of this terminal).
async fn new(
    client: &Client,
    ctx: &mut Ctx<'_>,
    ws: &str,
    req: CreateSession,
    json: bool,
) -> Result<()> {
    let v = client
        .post_value(&format!("{}/sessions", ws_path(ws)), &req)
        .await?;
    if json {
        return ctx.print_json(&v);
    }
    let s: Session = decode(v)?;
    ctx.print(&format!(
        "created session {} ({}) in {ws}; attach: berth attach {ws} {}\n",
        s.name, s.id, s.name
    ))
}

fn session_state(s: &Session) -> String {
    match s.exit_code {
        Some(code) if s.state != "running" => format!("{} ({code})", s.state),
        _ => s.state.clone(),
    }
}

fn session_table(list: &[Session]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.id.clone(),
                session_state(s),
                s.attached.to_string(),
                s.command.join(" "),
                short_time(&s.created_at),
            ]
        })
        .collect();
    table(
        &["NAME", "ID", "STATE", "ATTACHED", "COMMAND", "CREATED"],
        &rows,
    )
}

fn session_details(s: &Session) -> String {
    key_values(&[
        ("name", s.name.clone()),
        ("id", s.id.clone()),
        ("state", session_state(s)),
        ("command", s.command.join(" ")),
        ("attached", s.attached.to_string()),
        ("size", format!("{}x{}", s.cols, s.rows)),
        ("scrollback", bytes_human(s.scrollback_bytes)),
        ("created", short_time(&s.created_at)),
    ])
}
