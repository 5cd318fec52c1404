//! `berth task …`: coding-agent tasks: run one on a prompt, list, show, print or follow its
//! events, send follow-ups, cancel. Following the event stream is in `follow.rs`, showing
//! events in `printer.rs`.

use berth_api::{CreateTask, EventsQuery, SendMessage, Task, TaskQuery};
use berth_domain::TaskState;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{decode, one_line, task_path, CliError, Client, Result};
use crate::ctx::Ctx;
use crate::format::{key_values, short_time, table, terminal_safe, truncate};

pub(crate) mod follow;
pub(crate) mod printer;

use follow::{follow, End, Until};
use printer::Printer;

/// Events asked for per page by `task logs` (the server may send fewer).
const PAGE: i64 = 1000;
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
    Run(TaskRunArgs),
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
    Logs(TaskLogsArgs),
    /// Send a follow-up message to a task (the next turn of its conversation)
    Send(TaskSendArgs),
    /// Cancel a task (stops its agent; final)
    Cancel {
        /// Task id
        task: String,
    },
}

#[derive(Debug, Args)]
pub struct TaskRunArgs {
    /// Workspace: TENANT/NAME, NAME or id (it must be running)
    pub ws: String,
    /// The coding agent
    #[arg(long, value_parser = AGENTS)]
    pub agent: String,
    /// Model [default: the agent's]
    #[arg(long)]
    pub model: Option<String>,
    /// Working directory in the workspace [default: /home/agent]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<String>,
    /// Work in a new git worktree of the repository in DIR, on a new branch of this name
    #[arg(long, value_name = "BRANCH")]
    pub worktree: Option<String>,
    /// Print the task id and return at once
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Print each event as one line of JSON (with --detach: the task as JSON)
    #[arg(long)]
    pub json: bool,
    /// Print the agent's text as it came, terminal control sequences included (default:
    /// escape sequences and control characters are stripped)
    #[arg(long)]
    pub raw: bool,
    /// Also show the agent's diagnostics and unmapped events
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// The prompt (the remaining words, joined with spaces; use `--` before one that starts
    /// with a dash)
    #[arg(required = true, trailing_var_arg = true, value_name = "PROMPT")]
    pub prompt: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TaskLogsArgs {
    /// Task id
    pub task: String,
    /// Keep following new events until the task fails or is cancelled (or Ctrl-C)
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print each event as one line of JSON
    #[arg(long)]
    pub json: bool,
    /// Print the agent's text as it came, terminal control sequences included (default:
    /// escape sequences and control characters are stripped)
    #[arg(long)]
    pub raw: bool,
    /// Only events after this sequence number
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub after: u64,
    /// Also show the agent's diagnostics and unmapped events
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct TaskSendArgs {
    /// Task id
    pub task: String,
    /// Stream the task's events until the turn is over, like `berth task run`
    #[arg(long)]
    pub wait: bool,
    /// Print each event as one line of JSON (without --wait: the task as JSON)
    #[arg(long)]
    pub json: bool,
    /// Print the agent's text as it came, terminal control sequences included (default:
    /// escape sequences and control characters are stripped)
    #[arg(long)]
    pub raw: bool,
    /// Also show the agent's diagnostics and unmapped events
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// The message (the remaining words, joined with spaces)
    #[arg(required = true, trailing_var_arg = true, value_name = "TEXT")]
    pub text: Vec<String>,
}

pub(crate) async fn run(cmd: TaskCmd, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    match cmd {
        TaskCmd::Run(args) => run_task(args, client, ctx).await,
        TaskCmd::List {
            workspace,
            state,
            json,
            raw,
        } => {
            let v = client
                .get_query_value("/tasks", &TaskQuery { workspace, state })
                .await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let list: Vec<Task> = decode(v)?;
                if list.is_empty() {
                    ctx.print("no tasks (start one: berth task run WS --agent claude PROMPT)\n")?;
                } else {
                    ctx.print(&shown(&task_table(&list), raw))?;
                }
            }
            Ok(0)
        }
        TaskCmd::Show { task, json, raw } => {
            let v = client.get_value(&task_path(&task)).await?;
            if json {
                ctx.print_json(&v)?;
            } else {
                let t: Task = decode(v)?;
                ctx.print(&shown(&task_details(&t), raw))?;
            }
            Ok(0)
        }
        TaskCmd::Logs(args) => logs(args, client, ctx).await,
        TaskCmd::Send(args) => send(args, client, ctx).await,
        TaskCmd::Cancel { task } => {
            client
                .post_empty_value(&format!("{}/cancel", task_path(&task)))
                .await?;
            ctx.print(&format!("cancelled {task}\n"))?;
            Ok(0)
        }
    }
}

/// `task run`: creates the task, then (unless `--detach`) follows its first turn.
async fn run_task(args: TaskRunArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let req = CreateTask {
        prompt: join_words(&args.prompt, "prompt")?,
        workspace: args.ws,
        agent: args.agent,
        model: args.model,
        dir: args.dir,
        worktree: args.worktree,
    };
    let v = client.post_value("/tasks", &req).await?;
    let t: Task = decode(v.clone())?;
    if args.detach {
        if args.json {
            ctx.print_json(&v)?;
        } else {
            ctx.print(&format!("{}\n", t.id))?;
        }
        return Ok(0);
    }
    if !args.json {
        ctx.note(&format!(
            "task {}: {} in {} (Ctrl-C detaches)",
            t.id, t.agent, t.workspace
        ));
    }
    let mut printer = Printer::new(&t.id, args.json, args.verbose, ctx.color).raw(args.raw);
    let end = follow(client, ctx, &t.id, 0, Until::TurnOver, &mut printer).await?;
    turn_result(ctx, &t.id, end)
}

/// `task logs`: the stored events, page by page; with `-f`, follows them instead.
async fn logs(args: TaskLogsArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let task = args.task;
    let mut printer = Printer::new(&task, args.json, args.verbose, ctx.color).raw(args.raw);
    if args.follow {
        // Ends when the task fails or is cancelled, or on Ctrl-C: both are success.
        follow(client, ctx, &task, args.after, Until::Final, &mut printer).await?;
        return Ok(0);
    }
    let path = format!("{}/events", task_path(&task));
    let mut after = args.after;
    loop {
        let q = EventsQuery {
            after: Some(after),
            limit: Some(PAGE),
        };
        let v = client.get_query_value(&path, &q).await?;
        let Value::Array(items) = v else {
            return Err(CliError::other(
                "unexpected response from the server: the events are not a list",
            ));
        };
        let mut progressed = false;
        for item in items {
            let Some(seq) = item.get("seq").and_then(Value::as_u64) else {
                continue;
            };
            if seq <= after {
                continue;
            }
            after = seq;
            progressed = true;
            printer.event(ctx, &item.to_string(), &item)?;
        }
        // An empty page is the end (a short one may just be the server's page cap).
        if !progressed {
            break;
        }
    }
    printer.finish(ctx)?;
    Ok(0)
}

/// `task send`: sends a follow-up; with `--wait`, follows the turn it starts.
async fn send(args: TaskSendArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let task = args.task;
    let text = join_words(&args.text, "message")?;
    // Where this turn's events will start: after everything stored before it.
    let before = if args.wait {
        Some(client.get::<Task>(&task_path(&task)).await?.last_seq)
    } else {
        None
    };
    let v = client
        .post_value(
            &format!("{}/messages", task_path(&task)),
            &SendMessage { text },
        )
        .await?;
    let t: Task = decode(v.clone())?;
    if args.json && !args.wait {
        ctx.print_json(&v)?;
    } else if !args.json {
        ctx.print(&format!("sent to {task}\n"))?;
    }
    let Some(after) = before else {
        return Ok(0);
    };
    let mut printer = Printer::new(&t.id, args.json, args.verbose, ctx.color).raw(args.raw);
    let end = follow(client, ctx, &t.id, after, Until::TurnOver, &mut printer).await?;
    turn_result(ctx, &t.id, end)
}
/// Text for the terminal: agent-written parts made [`terminal_safe`] unless `--raw`.
fn shown(text: &str, raw: bool) -> String {
    if raw {
        text.to_owned()
    } else {
        terminal_safe(text).into_owned()
    }
}

/// Trailing words joined with spaces; an empty result is an error.
fn join_words(words: &[String], what: &str) -> Result<String> {
    let s = words.join(" ");
    if s.trim().is_empty() {
        return Err(CliError::other(format!("the {what} is empty")));
    }
    Ok(s)
}

/// Exit code of `run`/`send --wait` from how the stream ended.
fn turn_result(ctx: &mut Ctx<'_>, id: &str, end: End) -> Result<i32> {
    match end {
        End::State(TaskState::Completed, _) => Ok(0),
        End::State(TaskState::Interrupted, reason) => Err(CliError::other(format!(
            "task {id} was interrupted: {}",
            reason
                .as_deref()
                .unwrap_or("its agent process went away with its workspace")
        ))),
        End::State(TaskState::Cancelled, reason) => Err(CliError::other(match reason {
            Some(r) => format!("task {id} was cancelled: {r}"),
            None => format!("task {id} was cancelled"),
        })),
        End::State(_, reason) => Err(CliError::other(format!(
            "task {id} failed: {}",
            reason.as_deref().unwrap_or("no reason given")
        ))),
        End::Detached => {
            ctx.note(&format!(
                "detached; the task keeps running — berth task logs {id} -f"
            ));
            Ok(130)
        }
    }
}

/// A token count in a few characters: `950`, `12.3k`, `4.1M`.
pub(crate) fn count_short(n: u64) -> String {
    let f = |v: f64, suffix: &str| {
        let s = format!("{v:.1}");
        let s = s.strip_suffix(".0").unwrap_or(&s);
        format!("{s}{suffix}")
    };
    match n {
        0..1000 => n.to_string(),
        1000..999_950 => f(n as f64 / 1e3, "k"),
        _ => f(n as f64 / 1e6, "M"),
    }
}

pub(crate) fn task_table(list: &[Task]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.workspace.clone(),
                t.agent.clone(),
                t.state.clone(),
                format!(
                    "{}/{}",
                    count_short(t.usage.input_tokens),
                    count_short(t.usage.output_tokens)
                ),
                short_time(&t.created_at),
                truncate(&one_line(t.last_message.as_deref().unwrap_or("")), 48),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "WORKSPACE",
            "AGENT",
            "STATE",
            "TOKENS",
            "CREATED",
            "LAST MESSAGE",
        ],
        &rows,
    )
}

pub(crate) fn task_details(t: &Task) -> String {
    let mut kv: Vec<(&str, String)> = vec![
        ("id", t.id.clone()),
        ("workspace", t.workspace.clone()),
        ("agent", t.agent.clone()),
        (
            "model",
            t.model
                .clone()
                .unwrap_or_else(|| "(the agent's default)".into()),
        ),
        ("state", t.state.clone()),
    ];
    if let Some(r) = &t.reason {
        kv.push(("reason", one_line(r)));
    }
    kv.push(("dir", t.dir.clone()));
    if let Some(w) = &t.worktree {
        kv.push(("worktree", w.clone()));
    }
    kv.push(("prompt", truncate(&one_line(&t.prompt), 200)));
    kv.push(("created", short_time(&t.created_at)));
    kv.push(("updated", short_time(&t.updated_at)));
    kv.push((
        "tokens",
        format!(
            "in {}, out {}, cached {}",
            t.usage.input_tokens, t.usage.output_tokens, t.usage.cached_input_tokens
        ),
    ));
    if let Some(c) = t.usage.cost_usd {
        kv.push(("cost", format!("${c:.4}")));
    }
    if let Some(m) = &t.last_message {
        kv.push(("last message", truncate(&one_line(m), 300)));
    }
    if let Some(s) = &t.agent_session_id {
        kv.push(("agent session", s.clone()));
    }
    kv.push(("events", t.last_seq.to_string()));
    key_values(&kv)
}
