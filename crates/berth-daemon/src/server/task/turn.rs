//! One turn of a task: setting it up (worktree, directories, driver files), spawning the
//! agent in its own process group, feeding its output to the driver, stopping it for a cancel
//! or an interrupt (SIGINT, then SIGKILL of its process tree after a grace), and ending the
//! task's turn from how the agent exited; an interrupt's message then starts the next turn.
//!
//! A long-lived driver's turns (codex app-server) run on the task's own protocol process instead
//! ([`super::appserver`]), which reuses the spawning and output handling here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_agents::{Driver, Invocation, TurnSpec};
use berth_domain::{Agent, EventKind, TaskState};
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Sleep;

use super::approvals::Answer;
use super::events::truncate_string;
use super::output::{read_lines, Out, MAX_LOG_LINE, MAX_STDOUT_LINE};
use super::worktree::{create_worktree, make_private_dir, write_private_file};
use super::{DriverFactory, Task};
use crate::proto::Worktree;
use crate::sys::{self, lock, sleep_opt};

/// How long an agent gets to stop after SIGINT before its process group is killed.
pub(super) const CANCEL_GRACE: Duration = Duration::from_secs(3);
/// After the agent exited, how long to wait for its pipes to close (they may
/// be held open by background processes it started).
pub(super) const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Variables of the workspace itself that win over a driver's: the way out through berth's
/// egress proxy and the CA bundle that trusts it
/// ([`berth_domain::workspace::egress_env_names`] and `BERTH_WORKSPACE`). Like the rest of the
/// workspace's environment they come from the container's, set by the server.
fn workspace_passthrough_names() -> impl Iterator<Item = &'static str> {
    berth_domain::workspace::egress_env_names().chain(["BERTH_WORKSPACE"])
}

/// How a turn's setup ended early.
pub(super) enum SetupEnd {
    Failed(String),
    /// A cancel or an interrupt came first.
    Stopped,
}

/// The next turn of a redirect (an interrupt's message), and whom to tell once it runs.
pub(super) type NextTurn = (TurnSpec, oneshot::Sender<Result<(), String>>);

/// What the supervision of a running agent saw.
pub(super) struct TurnOutcome {
    pub(super) exit_code: i32,
    pub(super) we_killed: bool,
    /// The agent was told to stop (a cancel or an interrupt).
    pub(super) stopped: bool,
    pub(super) saw_turn_completed: bool,
    pub(super) last_error: Option<String>,
    pub(super) last_stderr: Option<String>,
}

impl TurnOutcome {
    /// A turn's outcome before anything happened: no exit code yet (-1), nothing seen.
    pub(super) fn new() -> Self {
        TurnOutcome {
            exit_code: -1,
            we_killed: false,
            stopped: false,
            saw_turn_completed: false,
            last_error: None,
            last_stderr: None,
        }
    }
}

/// Where the supervision of a running agent stands.
#[derive(Default)]
struct Watch {
    exited: bool,
    /// The output pipes are not both closed yet.
    open: bool,
    cancelling: bool,
    /// Running out: stop waiting for the pipes to close.
    grace: Option<Pin<Box<Sleep>>>,
    /// Running out: SIGKILL the agent's process group.
    kill_at: Option<Pin<Box<Sleep>>>,
    /// The agent's process tree when it was told to stop (killed with it, even if the agent
    /// exits first and its children lose their parent).
    tree: Vec<i32>,
}

/// Runs one turn to its end: sets up and spawns the agent (`ready` fires once it runs or the
/// setup ended), supervises it, and moves the task to its state after the turn. When an
/// interrupt stopped the turn, its message's turn follows in the same runner. A long-lived
/// driver's turns run on its protocol process ([`super::appserver::one_turn`]).
pub(super) async fn run_turn(
    task: Arc<Task>,
    mut spec: TurnSpec,
    mut worktree: Option<Worktree>,
    drivers: DriverFactory,
    mut ready: oneshot::Sender<Result<(), String>>,
) {
    let long_lived = drivers.make(task.agent).long_lived();
    loop {
        let worktree = worktree.take();
        let next = if long_lived {
            super::appserver::one_turn(&task, spec, worktree, &drivers, ready).await
        } else {
            one_turn(&task, spec, worktree, &drivers, ready).await
        };
        let Some((next_spec, next_ready)) = next else {
            return;
        };
        tracing::info!(task = %task.id, "next turn of an interrupt");
        spec = next_spec;
        ready = next_ready;
    }
}

/// One turn of an agent run as one process: the task's state after it, and the next turn if an
/// interrupt redirected it.
async fn one_turn(
    task: &Arc<Task>,
    spec: TurnSpec,
    worktree: Option<Worktree>,
    drivers: &DriverFactory,
    ready: oneshot::Sender<Result<(), String>>,
) -> Option<NextTurn> {
    match prepare(task, spec, worktree.as_ref(), drivers).await {
        Ok((driver, child, stdin)) => {
            let outcome = supervise(task, driver, child, stdin, ready).await;
            end_turn(task, outcome)
        }
        Err(end) => end_setup(task, end, ready),
    }
}

/// The task after a setup that ended early: stopped as requested (or redirected: the next
/// turn), or failed; `ready` is told the setup is over.
pub(super) fn end_setup(
    task: &Task,
    end: SetupEnd,
    ready: oneshot::Sender<Result<(), String>>,
) -> Option<NextTurn> {
    let next = settle_setup(task, end);
    // Told after the task's state moved, so its answer shows that state.
    let _ = ready.send(Ok(()));
    next
}

fn settle_setup(task: &Task, end: SetupEnd) -> Option<NextTurn> {
    let mut inner = lock(&task.inner);
    inner.approvals.end_turn();
    inner.busy = false;
    inner.pid = None;
    let redirect = inner.redirect.take();
    if std::mem::take(&mut inner.cancel_requested) {
        refuse_redirect(redirect, "the task was cancelled");
        task.stop_as_requested(&mut inner);
        tracing::info!(task = %task.id, "task cancelled before its agent started");
        return None;
    }
    match (end, redirect) {
        (SetupEnd::Stopped, Some(r)) => Some(task.redirect_turn(&mut inner, r, true)),
        (SetupEnd::Stopped, None) => {
            task.stop_as_requested(&mut inner);
            None
        }
        (SetupEnd::Failed(reason), r) => {
            refuse_redirect(r, &format!("the turn failed to start: {reason}"));
            tracing::info!(task = %task.id, reason = %reason, "task failed to start");
            task.transition(&mut inner, TaskState::Failed, Some(reason));
            None
        }
    }
}

/// Tells the sender of an interrupt that its message will not be the next turn.
pub(super) fn refuse_redirect(r: Option<super::Redirect>, why: &str) {
    if let Some(r) = r {
        let _ = r.reply.send(Err(format!(
            "{why} before the interrupt took effect; the message was not sent"
        )));
    }
}

/// The task after its agent exited: stopped as requested, redirected (the next turn, returned),
/// completed, or failed.
fn end_turn(task: &Task, outcome: TurnOutcome) -> Option<NextTurn> {
    let mut inner = lock(&task.inner);
    inner.approvals.end_turn();
    inner.busy = false;
    inner.pid = None;
    let redirect = inner.redirect.take();
    if std::mem::take(&mut inner.cancel_requested) {
        refuse_redirect(redirect, "the task was cancelled");
        task.stop_as_requested(&mut inner);
        tracing::info!(task = %task.id, "task cancelled");
        return None;
    }
    if let Some(r) = redirect {
        // Stopped by the interrupt, or over by itself just before it (then the message is
        // simply the next turn). A turn that failed by itself fails the task as any other.
        if outcome.stopped || outcome.exit_code == 0 {
            if !outcome.stopped && !outcome.saw_turn_completed {
                task.push(&mut inner, EventKind::TurnCompleted { result: None });
            }
            tracing::info!(task = %task.id, stopped = outcome.stopped, "turn interrupted");
            return Some(task.redirect_turn(&mut inner, r, outcome.stopped));
        }
        refuse_redirect(Some(r), "the turn failed");
    }
    if outcome.exit_code == 0 {
        if !outcome.saw_turn_completed {
            task.push(&mut inner, EventKind::TurnCompleted { result: None });
        }
        task.transition(&mut inner, TaskState::Completed, None);
        tracing::info!(task = %task.id, "turn completed");
        return None;
    }
    let reason = failure_reason(task.agent, outcome);
    tracing::info!(task = %task.id, reason = %reason, "turn failed");
    task.transition(&mut inner, TaskState::Failed, Some(reason));
    None
}

/// Why a turn whose agent exited with a code other than 0 failed.
pub(super) fn failure_reason(agent: Agent, outcome: TurnOutcome) -> String {
    let code = outcome.exit_code;
    let detail = outcome
        .last_error
        .or(outcome.last_stderr)
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    if code == 128 + Signal::SIGKILL as i32 && !outcome.we_killed {
        format!("{agent} was killed (SIGKILL) by something other than berth, most likely because the workspace ran out of memory{detail}")
    } else if code > 128 {
        format!("{agent} was killed by signal {}{detail}", code - 128)
    } else if code < 0 {
        format!("lost track of the {agent} process{detail}")
    } else {
        format!("{agent} exited with code {code}{detail}")
    }
}

/// Creates the task's worktree (under `~/.berth/worktrees/TASK`) and makes it the turn's
/// working directory, for this turn and the task's later ones.
pub(super) async fn enter_worktree(
    task: &Task,
    wt: &Worktree,
    spec: &mut TurnSpec,
) -> Result<(), SetupEnd> {
    let path = spec.home.join(".berth").join("worktrees").join(&task.id);
    create_worktree(wt, &path).await.map_err(SetupEnd::Failed)?;
    tracing::info!(task = %task.id, path = %path.display(), branch = %wt.branch, "worktree created");
    spec.cwd = path;
    lock(&task.inner).spec.cwd = spec.cwd.clone();
    Ok(())
}

/// Worktree, directories, files, spawn. Emits Status{running} once spawned. With an approval
/// policy the driver supports, the agent's stdin stays open for the answers (returned).
async fn prepare(
    task: &Arc<Task>,
    mut spec: TurnSpec,
    worktree: Option<&Worktree>,
    drivers: &DriverFactory,
) -> Result<(Box<dyn Driver>, tokio::process::Child, Option<AgentInput>), SetupEnd> {
    if let Some(wt) = worktree {
        enter_worktree(task, wt, &mut spec).await?;
    }
    if task.stop_requested() {
        return Err(SetupEnd::Stopped);
    }
    make_private_dir(&spec.task_dir).map_err(SetupEnd::Failed)?;
    make_private_dir(&spec.task_dir.join("tmp")).map_err(SetupEnd::Failed)?;
    let driver = drivers.make(task.agent);
    let inv = with_task_id(driver.invocation(&spec), &task.id);
    for (path, content) in &inv.files {
        write_private_file(path, content).map_err(SetupEnd::Failed)?;
    }
    let mut inner = lock(&task.inner);
    if inner.cancel_requested || inner.redirect.is_some() {
        return Err(SetupEnd::Stopped);
    }
    let protocol = spec.approval.asks() && driver.supports_approvals();
    // Spawn under the lock so that a cancel sees the pid.
    let (child, stdin) = spawn(&inv, protocol).map_err(SetupEnd::Failed)?;
    inner.pid = child.id();
    task.transition(&mut inner, TaskState::Running, None);
    tracing::info!(task = %task.id, pid = ?inner.pid, program = %inv.program, approvals = protocol, "agent started");
    drop(inner);
    Ok((driver, child, stdin))
}

/// `inv` with `BERTH_TASK_ID` in its environment: `berth request` run by the agent names its
/// task by it (the server keeps it only if it is a task of that workspace).
pub(super) fn with_task_id(mut inv: Invocation, task: &str) -> Invocation {
    inv.env.retain(|(k, _)| k != "BERTH_TASK_ID");
    inv.env.push(("BERTH_TASK_ID".into(), task.to_owned()));
    inv
}

/// The workspace's environment, as the container has it (the daemon's own): the image's, the
/// template's `[env]`, its secrets (placeholders, or opted-in values), `BERTH_WORKSPACE`, the
/// egress proxy. Terminals and exec get the same; an agent gets it beneath its driver's.
fn workspace_env() -> impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
}

fn workspace_passthrough() -> Vec<(String, String)> {
    workspace_passthrough_names()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
        .collect()
}

/// Starts the agent of `inv` in a process group of its own, in the workspace's environment
/// with the driver's over it (its HOME, TMPDIR, PATH, gateway address and virtual key win) and
/// [`workspace_passthrough_names`] over both, feeding it `inv.stdin` if any. With
/// `keep_stdin`, `inv.stdin` is written (in the background) and the stdin pipe comes back open
/// for the protocol's later lines instead of being closed.
pub(super) fn spawn(
    inv: &Invocation,
    keep_stdin: bool,
) -> Result<(tokio::process::Child, Option<AgentInput>), String> {
    let not_installed = || {
        format!(
            "the agent CLI `{}` is not installed in this workspace image",
            inv.program
        )
    };
    sys::validate_env(&inv.env).map_err(|e| format!("bad agent environment: {e}"))?;
    if !inv.cwd.is_dir() {
        return Err(format!(
            "the working directory {} does not exist",
            inv.cwd.display()
        ));
    }
    let path = inv
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let program = match sys::resolve_program(&inv.program, path, &inv.cwd) {
        Ok(p) => p,
        Err(e) if e.starts_with("command not found") || e.starts_with("no such file") => {
            return Err(not_installed())
        }
        Err(e) => return Err(format!("cannot run the agent CLI: {e}")),
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&inv.args)
        .env_clear()
        .envs(workspace_env())
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .envs(workspace_passthrough())
        .current_dir(&inv.cwd);
    sys::pipes_in_own_group(&mut cmd, inv.stdin.is_some() || keep_stdin);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => not_installed(),
        _ => format!("cannot run the agent CLI `{}`: {e}", inv.program),
    })?;
    if keep_stdin {
        let Some(stdin) = child.stdin.take() else {
            return Ok((child, None));
        };
        let input = AgentInput::start(stdin);
        input.send(inv.stdin.clone().unwrap_or_default().into_bytes());
        return Ok((child, Some(input)));
    }
    if let (Some(mut stdin), Some(data)) = (child.stdin.take(), inv.stdin.clone()) {
        tokio::spawn(async move {
            if let Err(e) = stdin.write_all(data.as_bytes()).await {
                tracing::debug!(error = %e, "agent closed its stdin early");
            }
            // Dropping stdin closes it: the agent sees EOF.
        });
    }
    Ok((child, None))
}

/// The open stdin of an agent speaking a permission protocol: lines are written in order by a
/// writer of its own, so a agent that stops reading never blocks the turn. Dropping it closes
/// the agent's stdin once what was sent is written.
pub(super) struct AgentInput(mpsc::UnboundedSender<Vec<u8>>);

impl AgentInput {
    fn start(mut stdin: ChildStdin) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if let Err(e) = stdin.write_all(&data).await {
                    tracing::debug!(error = %e, "agent closed its stdin");
                    return;
                }
                let _ = stdin.flush().await;
            }
        });
        AgentInput(tx)
    }

    pub(super) fn send(&self, data: Vec<u8>) {
        if !data.is_empty() {
            let _ = self.0.send(data);
        }
    }
}

/// Feeds the agent's output to the driver until the process exits and its
/// pipes are drained; handles cancellation and, with an open stdin, the answers to the agent's
/// permission requests (stdin is closed once the turn is completed).
async fn supervise(
    task: &Arc<Task>,
    mut driver: Box<dyn Driver>,
    mut child: tokio::process::Child,
    mut input: Option<AgentInput>,
    ready: oneshot::Sender<Result<(), String>>,
) -> TurnOutcome {
    let pgid = child.id().unwrap_or(0);
    let (mut rx, readers) = start_readers(&mut child);
    let (answer_tx, mut answers) = mpsc::unbounded_channel::<Answer>();
    if input.is_some() {
        lock(&task.inner).approvals.answers = Some(answer_tx);
    }
    let _ = ready.send(Ok(()));

    let mut out = TurnOutcome::new();
    let mut w = Watch {
        open: true,
        ..Watch::default()
    };
    loop {
        if w.exited && !w.open {
            break;
        }
        tokio::select! {
            msg = rx.recv(), if w.open => match msg {
                Some(msg) => {
                    on_output(task, driver.as_mut(), msg, &mut out);
                    // The turn is over: closing stdin lets the agent exit.
                    if out.saw_turn_completed && input.is_some() {
                        tracing::debug!(task = %task.id, "turn completed; closing the agent's stdin");
                        input = None;
                    }
                }
                None => w.open = false,
            },
            Some(a) = answers.recv(), if input.is_some() => {
                let lines = driver.answer(&a.id, a.approve, &a.message);
                if let Some(input) = &input {
                    for line in lines {
                        input.send(format!("{line}\n").into_bytes());
                    }
                }
            },
            status = child.wait(), if !w.exited => on_exit(task, status, pgid, &mut w, &mut out),
            () = task.stop.notified(), if !w.cancelling && !w.exited => {
                if task.stop_requested() {
                    begin_cancel(task, pgid, &mut w, &mut out);
                }
            },
            () = sleep_opt(&mut w.kill_at) => {
                w.kill_at = None;
                if !w.exited {
                    kill_after_grace(task, pgid, &w, &mut child, &mut out);
                }
            },
            () = sleep_opt(&mut w.grace) => {
                tracing::debug!(task = %task.id, "agent output still open after exit; not waiting further");
                break;
            },
        }
    }
    for r in readers {
        r.abort();
    }
    out
}

/// A cancel: SIGINT to the agent's process group (its tree noted for the kill), and the kill
/// scheduled after [`CANCEL_GRACE`].
fn begin_cancel(task: &Task, pgid: u32, w: &mut Watch, out: &mut TurnOutcome) {
    w.cancelling = true;
    out.stopped = true;
    w.tree = i32::try_from(pgid)
        .map(|p| sys::process_tree(&[p]))
        .unwrap_or_default();
    tracing::debug!(task = %task.id, pgid, "SIGINT to the agent's process group");
    sys::signal_group(pgid, Signal::SIGINT);
    w.kill_at = Some(Box::pin(tokio::time::sleep(CANCEL_GRACE)));
}

/// The agent outlived the cancel's grace: SIGKILL to its process tree.
fn kill_after_grace(
    task: &Task,
    pgid: u32,
    w: &Watch,
    child: &mut tokio::process::Child,
    out: &mut TurnOutcome,
) {
    tracing::debug!(task = %task.id, pgid, "SIGKILL to the agent's process tree");
    out.we_killed = true;
    sys::kill_tree(pgid, &w.tree);
    let _ = child.start_kill();
}

/// Starts reading the agent's stdout and stderr lines into one channel.
pub(super) fn start_readers(
    child: &mut tokio::process::Child,
) -> (mpsc::Receiver<Out>, Vec<JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<Out>(256);
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(
            stdout,
            false,
            MAX_STDOUT_LINE,
            tx.clone(),
        )));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(
            stderr,
            true,
            MAX_LOG_LINE,
            tx.clone(),
        )));
    }
    (rx, readers)
}

/// One line of the agent's output: stdout through the driver, stderr as Log events.
pub(super) fn on_output(
    task: &Arc<Task>,
    driver: &mut dyn Driver,
    msg: Out,
    out: &mut TurnOutcome,
) {
    match msg {
        Out::Stdout(line) => {
            let kinds = driver.parse_line(&line);
            emit_driver_events(task, kinds, driver.usage_is_cumulative(), out);
        }
        Out::Stderr(line) => {
            if !line.trim().is_empty() {
                out.last_stderr = Some(line.trim().to_string());
            }
            task.emit(EventKind::Log { line });
        }
        Out::Overlong {
            stderr: true,
            prefix,
        } => {
            let line = format!("{prefix}… [line cut at {MAX_LOG_LINE} bytes]");
            out.last_stderr = Some(line.clone());
            task.emit(EventKind::Log { line });
        }
        Out::Overlong {
            stderr: false,
            prefix,
        } => {
            let mut start = prefix;
            truncate_string(&mut start, 200);
            task.emit(EventKind::Log {
                line: format!(
                    "berth: dropped an agent output line longer than {MAX_STDOUT_LINE} bytes; it began with: {start}"
                ),
            });
        }
    }
}

/// The agent exited: note its code, and give its pipes a last while to drain (a short one,
/// after killing what is left of its process group, when it was being cancelled).
fn on_exit(
    task: &Task,
    status: std::io::Result<std::process::ExitStatus>,
    pgid: u32,
    w: &mut Watch,
    out: &mut TurnOutcome,
) {
    w.exited = true;
    out.exit_code = match status {
        Ok(st) => sys::exit_code(st),
        Err(e) => {
            tracing::warn!(task = %task.id, error = %e, "waiting for the agent");
            -1
        }
    };
    if w.cancelling {
        // Whatever is left of the tree goes too (a tool in a session of its own included).
        sys::kill_tree(pgid, &w.tree);
        w.grace = Some(Box::pin(tokio::time::sleep(Duration::from_millis(200))));
    } else {
        w.grace = Some(Box::pin(tokio::time::sleep(DRAIN_GRACE)));
    }
}

/// Appends the events the driver made of a line; keeps the daemon's own lifecycle (only
/// `waiting` and `running` are taken from the driver) and turns cumulative usage into deltas.
fn emit_driver_events(
    task: &Arc<Task>,
    kinds: Vec<EventKind>,
    cumulative_usage: bool,
    out: &mut TurnOutcome,
) {
    if kinds.is_empty() {
        return;
    }
    let mut inner = lock(&task.inner);
    for mut kind in kinds {
        if let (
            true,
            EventKind::Usage {
                input_tokens,
                output_tokens,
                cached_input_tokens,
                ..
            },
        ) = (cumulative_usage, &mut kind)
        {
            let now = [*input_tokens, *output_tokens, *cached_input_tokens];
            let prev = inner.usage_total;
            *input_tokens = now[0].saturating_sub(prev[0]);
            *output_tokens = now[1].saturating_sub(prev[1]);
            *cached_input_tokens = now[2].saturating_sub(prev[2]);
            inner.usage_total = now;
        }
        match &kind {
            EventKind::Status { state, reason } => {
                // Drivers may report mid-turn waits; the daemon owns the rest of the lifecycle.
                if matches!(state, TaskState::Waiting | TaskState::Running) {
                    task.transition(&mut inner, *state, reason.clone());
                } else {
                    tracing::debug!(task = %task.id, state = %state, "ignored a status from the driver");
                }
                continue;
            }
            EventKind::TurnCompleted { .. } => out.saw_turn_completed = true,
            EventKind::Error { message } => out.last_error = Some(message.clone()),
            _ => {}
        }
        if let EventKind::ApprovalRequest { request } = kind {
            task.request_approval(&mut inner, request.capped());
            continue;
        }
        task.push(&mut inner, kind);
    }
}
