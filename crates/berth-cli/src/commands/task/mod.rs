//! `berth task …`: coding-agent tasks: run one on a prompt, list, show, print or follow its
//! events, send follow-ups, cancel. Following the event stream is in `follow.rs`, showing
//! events in `printer.rs`.

use berth_api::{
    AgentReportedUsage, CreateTask, EventsQuery, SendMessage, Task, TaskQuery, TaskUsage,
};
use berth_domain::TaskState;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{decode, one_line, task_path, CliError, Client, Result};
use crate::ctx::Ctx;
use crate::format::{key_values, short_time, table, terminal_safe, truncate};

pub(crate) mod deliver;
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
    /// Approve an agent's pending permission request (REQ: the only pending one when omitted)
    Approve {
        /// Task id
        task: String,
        /// Request id [default: the task's only pending request]
        req: Option<String>,
        /// Also approve every later request of the same tool in this task without asking
        #[arg(long)]
        always_for_this_task: bool,
        /// Recorded with the decision
        #[arg(long)]
        reason: Option<String>,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Deny an agent's pending permission request; the agent is told the reason
    Deny {
        /// Task id
        task: String,
        /// Request id [default: the task's only pending request]
        req: Option<String>,
        /// What the agent is told
        #[arg(long)]
        reason: Option<String>,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// List a task's permission requests (all, or only the pending ones)
    Approvals {
        /// Task id
        task: String,
        /// Only the pending ones
        #[arg(long)]
        pending: bool,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Everything waiting for a decision across your tenant's workspaces
    Inbox {
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
    },
    /// Show what a task changed: its commits, edits and new files since it started (or one
    /// turn's), as a diff, a summary, or a patch file
    Diff(TaskDiffArgs),
    /// Push the task's branch to a remote of its repository, with the workspace's scoped
    /// credential (the egress proxy swaps the secret's placeholder for the token)
    Push(deliver::TaskPushArgs),
    /// Open a pull request (GitHub, Azure DevOps) or merge request (GitLab) for the task's
    /// pushed branch, with the task's summary as description
    Pr(deliver::TaskPrArgs),
    /// Take a finished task over: its agent's interactive TUI resumes the task's conversation
    /// in a terminal session (messages to the task wait until that session ends)
    Attach {
        /// Task id
        task: String,
        /// Session name [default: task-<task id>]
        #[arg(long)]
        name: Option<String>,
        /// Print the API's JSON
        #[arg(long)]
        json: bool,
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
    /// When the agent must ask before acting [default: the workspace's policy, `never` unless
    /// set]
    #[arg(long, value_parser = ["never", "on-request", "always"])]
    pub approval: Option<String>,
    /// Print the task id and return at once
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Print each event as one line of JSON (with --detach: the task as JSON)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub shown: Shown,
    /// The prompt (the remaining words, joined with spaces; use `--` before one that starts
    /// with a dash)
    #[arg(required = true, trailing_var_arg = true, value_name = "PROMPT")]
    pub prompt: Vec<String>,
}

/// How the agent's events are printed (the flags `run`, `send` and `logs` share).
#[derive(Debug, Args)]
pub struct Shown {
    /// Print the agent's text as it came, terminal control sequences included (default:
    /// escape sequences and control characters are stripped)
    #[arg(long)]
    pub raw: bool,
    /// Also show the agent's diagnostics and unmapped events
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct TaskDiffArgs {
    /// Task id
    pub task: String,
    /// Per-file summary (git's --stat) instead of the diff
    #[arg(long, conflicts_with_all = ["patch", "mbox"])]
    pub stat: bool,
    /// Only this turn's changes (1 = the first prompt's turn)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000), conflicts_with_all = ["patch", "mbox"])]
    pub turn: Option<u32>,
    /// A patch file of everything the task changed, binary files included (for `git apply`)
    #[arg(long, conflicts_with = "mbox")]
    pub patch: bool,
    /// The agent's commits since the task's base commit as an mbox (for `git am`)
    #[arg(long)]
    pub mbox: bool,
    /// Print the API's JSON (diff and summary only)
    #[arg(long, conflicts_with_all = ["patch", "mbox"])]
    pub json: bool,
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
    /// Only events after this sequence number
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub after: u64,
    #[command(flatten)]
    pub shown: Shown,
}

#[derive(Debug, Args)]
pub struct TaskSendArgs {
    /// Task id
    pub task: String,
    /// Stream the task's events until the turn is over, like `berth task run`
    #[arg(long)]
    pub wait: bool,
    /// Stop the running turn and start the next one with this message at once, in the same
    /// conversation (unlike `cancel`, the task goes on); without a running turn, a plain send
    #[arg(long)]
    pub interrupt: bool,
    /// Print each event as one line of JSON (without --wait: the task as JSON)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub shown: Shown,
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
        } => list(client, ctx, TaskQuery { workspace, state }, json, raw).await,
        TaskCmd::Show { task, json, raw } => show(client, ctx, &task, json, raw).await,
        TaskCmd::Logs(args) => logs(args, client, ctx).await,
        TaskCmd::Send(args) => send(args, client, ctx).await,
        TaskCmd::Cancel { task } => cancel(client, ctx, &task).await,
        TaskCmd::Attach { task, name, json } => attach(client, ctx, &task, name, json).await,
        TaskCmd::Approve {
            task,
            req,
            always_for_this_task,
            reason,
            json,
        } => {
            let d = berth_api::Decide {
                decision: "approve".into(),
                always_for_task: always_for_this_task,
                reason,
            };
            decide(client, ctx, &task, req, d, json).await
        }
        TaskCmd::Deny {
            task,
            req,
            reason,
            json,
        } => {
            let d = berth_api::Decide {
                decision: "deny".into(),
                always_for_task: false,
                reason,
            };
            decide(client, ctx, &task, req, d, json).await
        }
        TaskCmd::Approvals {
            task,
            pending,
            json,
        } => approvals(client, ctx, &task, pending, json).await,
        TaskCmd::Inbox { json } => inbox(client, ctx, json).await,
        TaskCmd::Diff(args) => diff(args, client, ctx).await,
        TaskCmd::Push(args) => deliver::push(args, client, ctx).await,
        TaskCmd::Pr(args) => deliver::pr(args, client, ctx).await,
    }
}

/// `task cancel`: asks the server to cancel the task (its turn is stopped) and says so.
async fn cancel(client: &Client, ctx: &mut Ctx<'_>, task: &str) -> Result<i32> {
    client
        .post_empty_value(&format!("{}/cancel", task_path(task)))
        .await?;
    ctx.print(&format!("cancelled {task}\n"))?;
    Ok(0)
}

/// `task inbox`: what waits for a decision (agents' permission requests and workspaces'
/// access requests), as two tables or the server's JSON.
async fn inbox(client: &Client, ctx: &mut Ctx<'_>, json: bool) -> Result<i32> {
    let v = client.get_value("/inbox").await?;
    if json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let berth_api::Inbox {
        approvals: list,
        access_requests: access,
    } = decode(v)?;
    if list.is_empty() && access.is_empty() {
        ctx.print("nothing is waiting for a decision\n")?;
    }
    if !list.is_empty() {
        ctx.print(&approval_table(&list, true))?;
    }
    if !access.is_empty() {
        ctx.print(&terminal_safe(&format!(
            "access requests (berth access approve|deny ID):\n{}",
            crate::commands::access::access_table(&access)
        )))?;
    }
    Ok(0)
}

/// `task list`: the tasks (of a workspace, in a state) as a table.
async fn list(
    client: &Client,
    ctx: &mut Ctx<'_>,
    q: TaskQuery,
    json: bool,
    raw: bool,
) -> Result<i32> {
    let v = client.get_query_value("/tasks", &q).await?;
    if json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let list: Vec<Task> = decode(v)?;
    if list.is_empty() {
        ctx.print("no tasks (start one: berth task run WS --agent claude PROMPT)\n")?;
    } else {
        ctx.print(&shown(&task_table(&list), raw))?;
    }
    Ok(0)
}

/// `task show`: one task in detail.
async fn show(
    client: &Client,
    ctx: &mut Ctx<'_>,
    task: &str,
    json: bool,
    raw: bool,
) -> Result<i32> {
    let v = client.get_value(&task_path(task)).await?;
    if json {
        ctx.print_json(&v)?;
    } else {
        let t: Task = decode(v)?;
        ctx.print(&shown(&task_details(&t), raw))?;
    }
    Ok(0)
}

/// `task approvals`: the task's requests (only the pending ones with `pending`).
async fn approvals(
    client: &Client,
    ctx: &mut Ctx<'_>,
    task: &str,
    pending: bool,
    json: bool,
) -> Result<i32> {
    let path = format!("{}/approvals?pending={pending}", task_path(task));
    let v = client.get_value(&path).await?;
    if json {
        ctx.print_json(&v)?;
    } else {
        let list: Vec<berth_api::Approval> = decode(v)?;
        ctx.print(&approval_table(&list, false))?;
    }
    Ok(0)
}

/// `task approve|deny`: decides REQ, or the task's only pending request.
async fn decide(
    client: &Client,
    ctx: &mut Ctx<'_>,
    task: &str,
    req: Option<String>,
    d: berth_api::Decide,
    json: bool,
) -> Result<i32> {
    let req = match req {
        Some(r) => r,
        None => {
            let path = format!("{}/approvals?pending=true", task_path(task));
            let list: Vec<berth_api::Approval> = decode(client.get_value(&path).await?)?;
            match list.as_slice() {
                [one] => one.id.clone(),
                [] => {
                    return Err(CliError::other(format!(
                        "task {task} has no pending request"
                    )))
                }
                many => {
                    let ids: Vec<&str> = many.iter().map(|a| a.id.as_str()).collect();
                    return Err(CliError::other(format!(
                        "task {task} has {} pending requests; name one: {}",
                        many.len(),
                        ids.join(" ")
                    )));
                }
            }
        }
    };
    let path = format!(
        "{}/approvals/{}",
        task_path(task),
        crate::client::encode_segment(&req)
    );
    let v = client.post_value(&path, &d).await?;
    if json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let a: berth_api::Approval = decode(v)?;
    ctx.print(&terminal_safe(&format!(
        "{} request {} of task {task}: {}\n",
        a.state,
        a.id,
        one_line(&a.summary)
    )))?;
    Ok(0)
}

/// Requests as a table (with the task and workspace for the inbox).
fn approval_table(list: &[berth_api::Approval], inbox: bool) -> String {
    if list.is_empty() {
        return "no requests\n".into();
    }
    let mut head = vec!["REQUEST", "KIND", "SUMMARY", "STATE", "RISKS"];
    if inbox {
        head = vec!["TASK", "WORKSPACE", "REQUEST", "KIND", "SUMMARY", "RISKS"];
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let summary = truncate(&one_line(&a.summary), 60);
            let risks = a.risks.join(", ");
            if inbox {
                vec![
                    a.task.clone(),
                    a.workspace.clone(),
                    a.id.clone(),
                    a.kind.clone(),
                    summary,
                    risks,
                ]
            } else {
                vec![
                    a.id.clone(),
                    a.kind.clone(),
                    summary,
                    a.state.clone(),
                    risks,
                ]
            }
        })
        .collect();
    terminal_safe(&table(&head, &rows)).into_owned()
}

/// `task diff`: the diff (or its summary, one turn's, a patch, an mbox) as the server makes it.
async fn diff(args: TaskDiffArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    if args.patch || args.mbox {
        let format = if args.mbox { "mbox" } else { "diff" };
        let bytes = client
            .get_bytes(&format!("{}/patch?format={format}", task_path(&args.task)))
            .await?;
        ctx.print(&String::from_utf8_lossy(&bytes))?;
        return Ok(0);
    }
    let q = berth_api::DiffQuery {
        turn: args.turn,
        stat: args.stat.then_some(true),
    };
    let v = client
        .get_query_value(&format!("{}/diff", task_path(&args.task)), &q)
        .await?;
    if args.json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let d: berth_api::TaskDiff = decode(v)?;
    if !d.git {
        ctx.print(&format!("{} is not in a git repository: no diff\n", d.dir))?;
    } else if d.diff.is_empty() {
        ctx.print("no changes\n")?;
    } else {
        ctx.print(&d.diff)?;
        if d.truncated {
            ctx.print("\n[diff cut at 4 MiB: take the whole patch with --patch, or use git in the workspace]\n")?;
        }
    }
    Ok(0)
}

/// `task attach`: opens the interactive session and says how to attach to it.
async fn attach(
    client: &Client,
    ctx: &mut Ctx<'_>,
    task: &str,
    name: Option<String>,
    json: bool,
) -> Result<i32> {
    let (cols, rows) = crate::ctx::terminal_size();
    let req = berth_api::AttachTask {
        name,
        cols: Some(cols),
        rows: Some(rows),
    };
    let v = client
        .post_value(&format!("{}/attach", task_path(task)), &req)
        .await?;
    if json {
        ctx.print_json(&v)?;
        return Ok(0);
    }
    let s: berth_api::Session = decode(v)?;
    let t: Task = decode(client.get_value(&task_path(task)).await?)?;
    ctx.print(&format!(
        "task {task} continues interactively in session {} of {}; attach: berth attach {} {}\n",
        s.name, t.workspace, t.workspace, s.name
    ))?;
    Ok(0)
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
        approval: args.approval,
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
    let mut printer =
        Printer::new(&t.id, args.json, args.shown.verbose, ctx.color).raw(args.shown.raw);
    let end = follow(client, ctx, &t.id, 0, Until::TurnOver, &mut printer).await?;
    turn_result(ctx, &t.id, end)
}

/// `task logs`: the stored events, page by page; with `-f`, follows them instead.
async fn logs(args: TaskLogsArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let task = args.task;
    let mut printer =
        Printer::new(&task, args.json, args.shown.verbose, ctx.color).raw(args.shown.raw);
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
            &SendMessage {
                text,
                interrupt: args.interrupt,
            },
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
    let mut printer =
        Printer::new(&t.id, args.json, args.shown.verbose, ctx.color).raw(args.shown.raw);
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

/// The task's workspace, marked when it was removed (a workspace of that name now is another one).
fn workspace_shown(t: &Task) -> String {
    if t.workspace_removed {
        format!("{} (removed)", t.workspace)
    } else {
        t.workspace.clone()
    }
}

pub(crate) fn task_table(list: &[Task]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                workspace_shown(t),
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
        ("workspace", workspace_shown(t)),
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
    let (tokens, cost) = tokens_and_cost(&t.usage);
    kv.push(("tokens", tokens));
    kv.push(("cost", cost));
    if let Some(a) = &t.usage.agent_reported {
        kv.push(("agent reported", agent_reported(a)));
    }
    if let Some(m) = &t.last_message {
        kv.push(("last message", truncate(&one_line(m), 300)));
    }
    if let Some(s) = &t.agent_session_id {
        kv.push(("agent session", s.clone()));
    }
    if let Some(p) = &t.push {
        let short: String = p.commit.chars().take(12).collect();
        kv.push((
            "pushed",
            format!(
                "{short} to {}/{} ({})",
                p.remote,
                p.branch,
                short_time(&p.at)
            ),
        ));
    }
    if let Some(p) = &t.pull_request {
        kv.push(("pull request", format!("#{} {}", p.number, p.url)));
    }
    kv.push(("events", t.last_seq.to_string()));
    key_values(&kv)
}

/// `in N, out N, cached N`: token counts as a task's details show them, billed or reported.
fn token_counts(input: u64, output: u64, cached: u64) -> String {
    format!("in {input}, out {output}, cached {cached}")
}

/// The `tokens` and `cost` rows of a task's billed usage (the gateway's calls counted, and
/// calls priced at the fallback price said so).
fn tokens_and_cost(u: &TaskUsage) -> (String, String) {
    let mut tokens = token_counts(u.input_tokens, u.output_tokens, u.cached_input_tokens);
    // A server that sums the gateway's calls sends `cost`; an older one only `cost_usd`.
    let cost = if u.cost.is_empty() {
        u.cost_usd
            .map(|c| format!("${c:.4}"))
            .unwrap_or_else(|| "-".into())
    } else {
        let s = if u.calls == 1 { "" } else { "s" };
        tokens.push_str(&format!(" ({} LLM call{s})", u.calls));
        format!("${}", u.cost)
    };
    let cost = if u.fallback_calls > 0 {
        format!(
            "{cost} ({} call{} at the fallback price: no price table lists the model)",
            u.fallback_calls,
            if u.fallback_calls == 1 { "" } else { "s" }
        )
    } else {
        cost
    };
    (tokens, cost)
}

/// The `agent reported` row: what the agent CLI said it used, marked as never billed.
fn agent_reported(a: &AgentReportedUsage) -> String {
    let mut s = token_counts(a.input_tokens, a.output_tokens, a.cached_input_tokens);
    if let Some(c) = a.cost_usd {
        s.push_str(&format!(", ${c:.6}"));
    }
    format!("{s} (informational, not billed)")
}
