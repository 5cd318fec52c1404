//! Turns of a long-lived agent protocol process ([`berth_agents::Driver::long_lived`]: codex
//! app-server): one process per task, kept between turns.
//!
//! The first turn spawns the process (same cleared environment, per-task virtual key, gateway
//! URL and private config files as a one-process-per-turn agent; stdin stays open for the
//! protocol) and writes the driver's handshake and first turn. When the turn ends the process
//! stays **warm** in the task: the next turn is one more request on it, answered without a
//! process start. A warm process is stopped after the task's idle time (`agent_idle_secs`,
//! default [`DEFAULT_IDLE`]), when its settings no longer match the next turn's (another key or
//! model), when the task ends, and at shutdown; the next turn then starts a new process, which
//! resumes the conversation by its id exactly as a process in a new daemon does.
//!
//! Permission requests go through the task's approvals ([`super::approvals`]) as for any agent;
//! the answers are written in the driver's protocol. A cancel or an interrupt first asks the
//! driver to interrupt the turn (`turn/interrupt`) and kills the process group after
//! [`CANCEL_GRACE`] if the turn has not ended by then; a cancelled task's process is stopped
//! either way, an interrupted one stays warm and takes the interrupt's message as its next turn. Output lines are
//! capped as for any agent ([`super::output`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_agents::{Driver, Invocation, TurnEnd, TurnSpec};
use berth_domain::{EventKind, TaskState};
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Sleep;

use super::approvals::Answer;
use super::output::Out;
use super::turn::{
    end_setup, enter_worktree, failure_reason, on_output, refuse_redirect, spawn, start_readers,
    with_task_id, AgentInput, NextTurn, SetupEnd, TurnOutcome, CANCEL_GRACE, DRAIN_GRACE,
};
use super::worktree::{make_private_dir, write_private_file};
use super::{DriverFactory, Inner, Task};
use crate::proto::Worktree;
use crate::sys::{self, lock, sleep_opt};

/// How long a warm process is kept without a turn when the server did not say.
pub(super) const DEFAULT_IDLE: Duration = Duration::from_secs(5 * 60);
/// How long a process gets to exit once its stdin is closed before its group is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A task's long-lived process between turns.
pub(super) struct Slot {
    /// How long a warm process is kept without a turn.
    pub(super) idle: Duration,
    warm: Option<Process>,
    /// Bumped whenever the warm process is taken or replaced, so a stale reaper does nothing.
    generation: u64,
}

impl Slot {
    pub(super) fn new() -> Self {
        Slot {
            idle: DEFAULT_IDLE,
            warm: None,
            generation: 0,
        }
    }

    fn take(&mut self) -> Option<Process> {
        self.generation += 1;
        self.warm.take()
    }

    /// Stops the warm process, if any (in the background: its stdin is closed, then its group
    /// is killed if it does not exit).
    pub(super) fn discard(&mut self) {
        if let Some(p) = self.take() {
            tokio::spawn(p.stop());
        }
    }

    /// Kills the warm process's group at once (daemon shutdown).
    pub(super) fn kill_now(&mut self) {
        if let Some(mut p) = self.take() {
            p.kill();
        }
    }
}

/// One running protocol process and the driver that speaks to it.
struct Process {
    child: Child,
    pgid: u32,
    input: AgentInput,
    rx: mpsc::Receiver<Out>,
    readers: Vec<JoinHandle<()>>,
    driver: Box<dyn Driver>,
    /// The settings it was started with (the turn spec without prompt and resume).
    settings: TurnSpec,
    exit_code: Option<i32>,
}

impl Process {
    fn write(&self, lines: Vec<String>) {
        for line in lines {
            self.input.send(format!("{line}\n").into_bytes());
        }
    }

    fn kill(&mut self) {
        sys::signal_group(self.pgid, Signal::SIGKILL);
        let _ = self.child.start_kill();
    }

    /// Closes its stdin (the protocol's end: it exits), kills the group if it is still there
    /// after [`STOP_GRACE`], and reaps it.
    async fn stop(self) {
        let Process {
            mut child,
            pgid,
            input,
            readers,
            exit_code,
            ..
        } = self;
        drop(input);
        if exit_code.is_none()
            && tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
        {
            tracing::debug!(pgid, "agent process did not exit; killing its group");
            sys::signal_group(pgid, Signal::SIGKILL);
            let _ = child.start_kill();
            let _ = child.wait().await;
        } else {
            // Whatever it left behind (e.g. MCP servers) goes too.
            sys::signal_group(pgid, Signal::SIGKILL);
        }
        for r in readers {
            r.abort();
        }
        tracing::debug!(pgid, "agent process stopped");
    }
}

/// The settings a warm process must share with a turn to serve it.
fn settings(spec: &TurnSpec) -> TurnSpec {
    TurnSpec {
        prompt: String::new(),
        resume: None,
        ..spec.clone()
    }
}

/// Runs one turn of `task` on its long-lived process (started first when there is no warm
/// one); `ready` fires once the turn's request is written or the setup ended. Returns the next
/// turn when an interrupt redirected the task (it runs on the same, warm, process).
pub(super) async fn one_turn(
    task: &Arc<Task>,
    spec: TurnSpec,
    worktree: Option<Worktree>,
    drivers: &DriverFactory,
    ready: oneshot::Sender<Result<(), String>>,
) -> Option<NextTurn> {
    match prepare(task, spec, worktree.as_ref(), drivers).await {
        Ok((mut p, turn_spec)) => {
            let (end, outcome) = supervise(task, &mut p, &turn_spec, ready).await;
            finish(task, p, end, outcome)
        }
        Err(end) => end_setup(task, end, ready),
    }
}

/// Worktree, directories, and the process: the warm one when it is alive and started with the
/// same settings, else a new one (files written, spawned). Emits Status{running}.
async fn prepare(
    task: &Arc<Task>,
    mut spec: TurnSpec,
    worktree: Option<&Worktree>,
    drivers: &DriverFactory,
) -> Result<(Process, TurnSpec), SetupEnd> {
    if let Some(wt) = worktree {
        enter_worktree(task, wt, &mut spec).await?;
    }
    if task.stop_requested() {
        return Err(SetupEnd::Stopped);
    }
    make_private_dir(&spec.task_dir).map_err(SetupEnd::Failed)?;
    make_private_dir(&spec.task_dir.join("tmp")).map_err(SetupEnd::Failed)?;

    let warm = warm_fit(task, &spec);
    let fresh = match warm {
        Some(_) => None,
        None => Some(new_invocation(task, &spec, drivers).await?),
    };
    let mut inner = lock(&task.inner);
    if inner.cancel_requested || inner.redirect.is_some() {
        // A cancel ends the process; an interrupt's next turn may still use it.
        if let Some(p) = warm {
            if inner.cancel_requested {
                tokio::spawn(p.stop());
            } else {
                inner.appserver.warm = Some(p);
            }
        }
        return Err(SetupEnd::Stopped);
    }
    let p = match (warm, fresh) {
        (Some(p), _) => {
            tracing::info!(task = %task.id, pid = p.pgid, "turn on the warm agent process");
            p
        }
        // Spawned under the lock so that a cancel sees the pid.
        (None, Some((driver, inv))) => start(task, driver, &inv, &spec)?,
        (None, None) => return Err(SetupEnd::Failed("no agent process".into())),
    };
    inner.pid = Some(p.pgid);
    task.transition(&mut inner, TaskState::Running, None);
    drop(inner);
    Ok((p, spec))
}

/// The task's warm process when it is alive and started with this turn's settings; one that
/// does not fit is stopped (in the background).
fn warm_fit(task: &Task, spec: &TurnSpec) -> Option<Process> {
    let mut warm = lock(&task.inner).appserver.take();
    let alive = warm
        .as_mut()
        .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)));
    match warm {
        Some(p) if alive && p.settings == settings(spec) => Some(p),
        Some(p) => {
            tracing::info!(task = %task.id, "the warm agent process does not fit this turn; starting a new one");
            tokio::spawn(p.stop());
            None
        }
        None => None,
    }
}

/// A driver and the invocation of a new process for this turn, its private files written;
/// waits first when the agent cannot load the session it resumes yet (gemini).
async fn new_invocation(
    task: &Task,
    spec: &TurnSpec,
    drivers: &DriverFactory,
) -> Result<(Box<dyn Driver>, Invocation), SetupEnd> {
    let driver = drivers.make(task.agent);
    let seen = lock(&task.inner).session_seen;
    if let (Some(_), Some(seen)) = (&spec.resume, seen) {
        if let Some(at) = driver.resume_not_before(seen) {
            if let Ok(wait) = at.duration_since(std::time::SystemTime::now()) {
                tracing::info!(task = %task.id, ?wait, "waiting before the agent can load its session");
                tokio::time::sleep(wait).await;
            }
        }
    }
    let inv = with_task_id(driver.invocation(spec), &task.id);
    for (path, content) in &inv.files {
        write_private_file(path, content).map_err(SetupEnd::Failed)?;
    }
    Ok((driver, inv))
}

/// Spawns the protocol process of `inv` (stdin kept open for the protocol) and starts reading
/// its output.
fn start(
    task: &Task,
    driver: Box<dyn Driver>,
    inv: &Invocation,
    spec: &TurnSpec,
) -> Result<Process, SetupEnd> {
    let (mut child, input) = spawn(inv, true).map_err(SetupEnd::Failed)?;
    let Some(input) = input else {
        let _ = child.start_kill();
        return Err(SetupEnd::Failed("the agent's stdin is not a pipe".into()));
    };
    let pgid = child.id().unwrap_or(0);
    let (rx, readers) = start_readers(&mut child);
    tracing::info!(task = %task.id, pid = pgid, program = %inv.program, "agent protocol process started");
    Ok(Process {
        child,
        pgid,
        input,
        rx,
        readers,
        driver,
        settings: settings(spec),
        exit_code: None,
    })
}

/// Writes the turn and feeds the process's output to the driver until the driver says the turn
/// is over (`Some`) or the process is gone (`None`); answers permission requests and cancels.
async fn supervise(
    task: &Arc<Task>,
    p: &mut Process,
    spec: &TurnSpec,
    ready: oneshot::Sender<Result<(), String>>,
) -> (Option<TurnEnd>, TurnOutcome) {
    let (answer_tx, mut answers) = mpsc::unbounded_channel::<Answer>();
    lock(&task.inner).approvals.answers = Some(answer_tx);
    let mut out = TurnOutcome::new();
    // What it said while idle comes first.
    while let Ok(msg) = p.rx.try_recv() {
        feed(task, p, msg, &mut out);
    }
    out.saw_turn_completed = false;
    let lines = p.driver.begin_turn(spec);
    p.write(lines);
    let _ = ready.send(Ok(()));
    // What runs below the process before the turn (its MCP servers): an interrupted turn's
    // tools are what is new.
    let before = sys::process_tree(&[i32::try_from(p.pgid).unwrap_or(0)]);

    let mut open = true;
    let mut interrupting = false;
    let mut kill_at: Option<Pin<Box<Sleep>>> = None;
    let mut grace: Option<Pin<Box<Sleep>>> = None;
    loop {
        if p.exit_code.is_some() && !open {
            break;
        }
        tokio::select! {
            msg = p.rx.recv(), if open => match msg {
                Some(msg) => {
                    feed(task, p, msg, &mut out);
                    if let Some(end) = p.driver.take_turn_end() {
                        if interrupting {
                            stop_turn_tools(task, p, &before, spec);
                        }
                        return (Some(end), out);
                    }
                }
                None => open = false,
            },
            Some(a) = answers.recv() => {
                let lines = p.driver.answer(&a.id, a.approve, &a.message);
                p.write(lines);
            },
            status = p.child.wait(), if p.exit_code.is_none() => {
                let code = exit_code(task, status);
                p.exit_code = Some(code);
                out.exit_code = code;
                let wait = if interrupting { Duration::from_millis(200) } else { DRAIN_GRACE };
                grace = Some(Box::pin(tokio::time::sleep(wait)));
            },
            () = task.stop.notified(), if !interrupting && p.exit_code.is_none() => {
                if task.stop_requested() {
                    interrupting = true;
                    out.stopped = true;
                    tracing::debug!(task = %task.id, "interrupting the agent's turn");
                    let lines = p.driver.interrupt();
                    p.write(lines);
                    kill_at = Some(Box::pin(tokio::time::sleep(CANCEL_GRACE)));
                }
            },
            () = sleep_opt(&mut kill_at) => {
                kill_at = None;
                if p.exit_code.is_none() {
                    tracing::debug!(task = %task.id, pgid = p.pgid, "SIGKILL to the agent's process group");
                    out.we_killed = true;
                    p.kill();
                }
            },
            () = sleep_opt(&mut grace) => break,
        }
    }
    (None, out)
}

/// Hands one output line of the process to the driver and writes what the driver answers.
fn feed(task: &Arc<Task>, p: &mut Process, msg: Out, out: &mut TurnOutcome) {
    on_output(task, p.driver.as_mut(), msg, out);
    let lines = p.driver.take_output();
    p.write(lines);
}

/// The process's exit code (-1 when waiting for it failed).
fn exit_code(task: &Task, status: std::io::Result<std::process::ExitStatus>) -> i32 {
    match status {
        Ok(st) => sys::exit_code(st),
        Err(e) => {
            tracing::warn!(task = %task.id, error = %e, "waiting for the agent");
            -1
        }
    }
}

/// Kills what an interrupted turn left running below the warm process: codex stops its turn on
/// `turn/interrupt` but may leave the command it ran (seen: a `sleep` outliving the turn). Every
/// process that appeared during the turn goes, with its tree, except an MCP server the process
/// started meanwhile (a direct child running a declared stdio server's command): the warm
/// process keeps those.
fn stop_turn_tools(task: &Task, p: &Process, before: &[i32], spec: &TurnSpec) {
    let Ok(root) = i32::try_from(p.pgid) else {
        return;
    };
    let mcp: Vec<&str> = spec
        .mcp_servers
        .iter()
        .filter_map(|m| match &m.transport {
            berth_domain::McpTransport::Stdio { command, .. } => Some(command.as_str()),
            _ => None,
        })
        .collect();
    let children: Vec<(i32, i32)> = sys::process_parents()
        .into_iter()
        .filter(|(pid, ppid)| *ppid == root && !before.contains(pid))
        .collect();
    let doomed: Vec<i32> = children
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| {
            let program = sys::program_of(*pid).unwrap_or_default();
            let base = program.rsplit('/').next().unwrap_or_default().to_owned();
            !mcp.iter()
                .any(|c| *c == program || c.rsplit('/').next() == Some(base.as_str()))
        })
        .collect();
    if !doomed.is_empty() {
        tracing::info!(task = %task.id, count = doomed.len(), "killing what the interrupted turn left running");
        sys::kill_processes(&doomed);
    }
}

/// The task after the turn: the process kept warm (a turn that ended, the task going on) or
/// stopped; the task completed, failed, stopped as requested, or redirected (the next turn,
/// returned).
fn finish(
    task: &Arc<Task>,
    p: Process,
    end: Option<TurnEnd>,
    outcome: TurnOutcome,
) -> Option<NextTurn> {
    let mut inner = lock(&task.inner);
    inner.approvals.end_turn();
    inner.busy = false;
    inner.pid = None;
    let redirect = inner.redirect.take();
    let cancelled = std::mem::take(&mut inner.cancel_requested);
    let keep = !cancelled
        && p.exit_code.is_none()
        && matches!(end, Some(TurnEnd::Completed | TurnEnd::Interrupted));
    if keep {
        keep_warm(task, &mut inner, p);
    } else {
        tokio::spawn(p.stop());
    }
    if cancelled {
        refuse_redirect(redirect, "the task was cancelled");
        task.stop_as_requested(&mut inner);
        tracing::info!(task = %task.id, "task cancelled");
        return None;
    }
    if let Some(r) = redirect {
        // Interrupted, or over by itself just before the interrupt (then the message is simply
        // the next turn). A turn that failed fails the task as any other.
        if matches!(end, Some(TurnEnd::Completed | TurnEnd::Interrupted)) {
            if !outcome.stopped && !outcome.saw_turn_completed {
                task.push(&mut inner, EventKind::TurnCompleted { result: None });
            }
            tracing::info!(task = %task.id, stopped = outcome.stopped, "turn interrupted");
            return Some(task.redirect_turn(&mut inner, r, outcome.stopped));
        }
        refuse_redirect(Some(r), "the turn failed");
    }
    match end {
        Some(TurnEnd::Completed | TurnEnd::Interrupted) => {
            if !outcome.saw_turn_completed {
                task.push(&mut inner, EventKind::TurnCompleted { result: None });
            }
            task.transition(&mut inner, TaskState::Completed, None);
            tracing::info!(task = %task.id, "turn completed");
        }
        Some(TurnEnd::Failed(reason)) => {
            let reason = format!("{} turn failed: {reason}", task.agent);
            tracing::info!(task = %task.id, reason = %reason, "turn failed");
            task.transition(&mut inner, TaskState::Failed, Some(reason));
        }
        None => {
            let reason = if outcome.exit_code == 0 {
                format!("{} exited before its turn ended", task.agent)
            } else {
                failure_reason(task.agent, outcome)
            };
            tracing::info!(task = %task.id, reason = %reason, "turn failed");
            task.transition(&mut inner, TaskState::Failed, Some(reason));
        }
    }
    None
}

/// Keeps `p` as the task's warm process and stops it after the idle time unless a turn took it.
fn keep_warm(task: &Arc<Task>, inner: &mut Inner, p: Process) {
    let slot = &mut inner.appserver;
    slot.discard();
    slot.generation += 1;
    let generation = slot.generation;
    let idle = slot.idle;
    tracing::debug!(task = %task.id, pid = p.pgid, idle_secs = idle.as_secs(), "agent process kept warm");
    slot.warm = Some(p);
    let task = Arc::clone(task);
    tokio::spawn(async move {
        tokio::time::sleep(idle).await;
        let p = {
            let mut inner = lock(&task.inner);
            if inner.appserver.generation != generation {
                return;
            }
            inner.appserver.take()
        };
        if let Some(p) = p {
            tracing::info!(task = %task.id, pid = p.pgid, "stopping the idle agent process");
            p.stop().await;
        }
    });
}
