//! Agent tasks owned by the daemon: turns (one agent process each), the
//! per-task event buffer, and subscribers.
//!
//! The buffer is authoritative: every event gets its `seq` (per task,
//! contiguous from 1) and `at` when it is appended, and subscribers read from
//! the buffer at their own pace (woken by a `watch` of the newest seq), so a
//! slow subscriber never blocks a task and never misses an event.

use std::collections::VecDeque;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_agents::{Driver, Invocation, TurnSpec};
use berth_domain::{Agent, EventKind, TaskEvent, TaskState};
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Sleep;

use super::ApiError;
use crate::proto::{TaskInfo, TaskStart, Worktree};
use crate::sys::{self, lock, now_rfc3339};

/// How long an agent gets to stop after SIGINT before its process group is killed.
const CANCEL_GRACE: Duration = Duration::from_secs(3);
/// After the agent exited, how long to wait for its pipes to close (they may
/// be held open by background processes it started).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// stderr lines are cut at this many bytes.
const MAX_LOG_LINE: usize = 4 * 1024;
/// stdout lines longer than this are dropped (with a Log event saying so).
const MAX_STDOUT_LINE: usize = 16 * 1024 * 1024;
/// Events whose JSON is larger are shrunk (long strings cut) so that they
/// always fit in one protocol frame.
const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Strings of oversized events are cut to this many bytes.
const MAX_EVENT_STRING: usize = 64 * 1024;
/// How long `git worktree add` may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Events handed to a subscriber per lock of the buffer.
pub(crate) const BATCH: usize = 256;

type DriverFn = dyn Fn(Agent) -> Box<dyn Driver> + Send + Sync;

/// Makes a fresh [`Driver`] for each turn. The default is
/// [`berth_agents::driver`]; tests substitute fake agents.
#[derive(Clone)]
pub struct DriverFactory(Arc<DriverFn>);

impl DriverFactory {
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(Agent) -> Box<dyn Driver> + Send + Sync + 'static,
    {
        DriverFactory(Arc::new(f))
    }

    pub fn make(&self, agent: Agent) -> Box<dyn Driver> {
        (self.0)(agent)
    }
}

impl Default for DriverFactory {
    fn default() -> Self {
        DriverFactory::new(berth_agents::driver)
    }
}

impl std::fmt::Debug for DriverFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DriverFactory(..)")
    }
}

/// All tasks of the daemon.
pub(crate) struct TaskManager {
    /// In creation order.
    tasks: Mutex<Vec<Arc<Task>>>,
    drivers: DriverFactory,
    event_cap: usize,
    max_finished: usize,
}

pub(crate) struct Task {
    id: String,
    agent: Agent,
    inner: Mutex<Inner>,
    /// The newest seq (and a wake-up for subscribers, also on forget).
    seq_tx: watch::Sender<u64>,
    /// Wakes the running turn when a cancel is requested.
    cancel: Notify,
    event_cap: usize,
}

struct Inner {
    state: TaskState,
    reason: Option<String>,
    last_seq: u64,
    agent_session_id: Option<String>,
    pid: Option<u32>,
    events: VecDeque<TaskEvent>,
    /// The buffer overflowed (and a Log event said so).
    overflowed: bool,
    /// The spec of the turns (cwd already pointing at the worktree, if any).
    spec: TurnSpec,
    /// A turn is being set up or is running.
    busy: bool,
    cancel_requested: bool,
    /// Set when the stop is a failure decided outside the agent (e.g. an exhausted budget):
    /// the task ends `failed` with this reason instead of `cancelled`.
    fail_reason: Option<String>,
    /// Removed from the daemon: subscribers end once they have read everything.
    forgotten: bool,
    /// When the task reached a final state (for pruning), in a daemon-wide order.
    finished: Option<u64>,
    /// The last running total of an agent that reports usage cumulatively (Codex), so each
    /// `usage` event carries only what is new: totals then add up across events and turns.
    usage_total: [u64; 3],
}

static FINISH_ORDER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl TaskManager {
    pub(crate) fn new(drivers: DriverFactory, event_cap: usize, max_finished: usize) -> Self {
        TaskManager {
            tasks: Mutex::new(Vec::new()),
            drivers,
            event_cap: event_cap.max(2),
            max_finished,
        }
    }

    pub(crate) fn find(&self, id: &str) -> Result<Arc<Task>, ApiError> {
        lock(&self.tasks)
            .iter()
            .find(|t| t.id == id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no task {id:?}")))
    }

    pub(crate) fn list(&self) -> Vec<TaskInfo> {
        lock(&self.tasks).iter().map(|t| t.info()).collect()
    }

    /// Starts a task's first turn; returns once the agent is spawned (state
    /// `running`) or the task has failed to start (state `failed`).
    pub(crate) async fn start(&self, req: TaskStart) -> Result<TaskInfo, ApiError> {
        validate_start(&req)?;
        let spec = req.turn;
        let task = {
            let mut tasks = lock(&self.tasks);
            if tasks.iter().any(|t| t.id == req.id) {
                return Err(ApiError::conflict(format!(
                    "a task with id {:?} already exists",
                    req.id
                )));
            }
            let (seq_tx, _) = watch::channel(req.after_seq);
            let task = Arc::new(Task {
                id: req.id.clone(),
                agent: spec.agent,
                inner: Mutex::new(Inner {
                    state: TaskState::Queued,
                    reason: None,
                    last_seq: req.after_seq,
                    agent_session_id: spec.resume.clone(),
                    pid: None,
                    events: VecDeque::new(),
                    overflowed: false,
                    spec: spec.clone(),
                    busy: true,
                    cancel_requested: false,
                    fail_reason: None,
                    forgotten: false,
                    finished: None,
                    usage_total: [0; 3],
                }),
                seq_tx,
                cancel: Notify::new(),
                event_cap: self.event_cap,
            });
            {
                let mut inner = lock(&task.inner);
                task.transition(&mut inner, TaskState::Starting, None);
                task.push(
                    &mut inner,
                    EventKind::UserMessage {
                        text: spec.prompt.clone(),
                    },
                );
            }
            tasks.push(task.clone());
            task
        };
        self.prune();
        tracing::info!(task = %task.id, agent = %task.agent, "task started");
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(run_turn(
            task.clone(),
            spec,
            req.worktree,
            self.drivers.clone(),
            ready_tx,
        ));
        let _ = ready_rx.await;
        Ok(task.info())
    }

    /// Starts the next turn of a task that accepts a message.
    pub(crate) async fn send(&self, id: &str, text: &str) -> Result<TaskInfo, ApiError> {
        let task = self.find(id)?;
        let spec = {
            let mut inner = lock(&task.inner);
            if inner.busy {
                return Err(ApiError::conflict(format!(
                    "task {id:?} is {}: its current turn is still running",
                    inner.state
                )));
            }
            if !inner.state.accepts_message() {
                return Err(ApiError::conflict(format!(
                    "task {id:?} is {} and does not accept a message",
                    inner.state
                )));
            }
            let Some(session) = inner.agent_session_id.clone() else {
                return Err(ApiError::conflict(
                    "the agent reported no session id to resume",
                ));
            };
            let mut spec = inner.spec.clone();
            spec.prompt = text.to_string();
            spec.resume = Some(session);
            inner.busy = true;
            inner.cancel_requested = false;
            inner.reason = None;
            task.transition(&mut inner, TaskState::Running, None);
            task.push(
                &mut inner,
                EventKind::UserMessage {
                    text: text.to_string(),
                },
            );
            spec
        };
        tracing::info!(task = %task.id, "task follow-up");
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(run_turn(
            task.clone(),
            spec,
            None,
            self.drivers.clone(),
            ready_tx,
        ));
        let _ = ready_rx.await;
        Ok(task.info())
    }

    /// Cancels a task: stops its running turn (SIGINT to the agent's process
    /// group, SIGKILL after [`CANCEL_GRACE`]) and returns once it is `cancelled`.
    pub(crate) async fn cancel(
        &self,
        id: &str,
        fail: Option<String>,
    ) -> Result<TaskInfo, ApiError> {
        let task = self.find(id)?;
        if let Some(reason) = fail {
            let mut inner = lock(&task.inner);
            if !inner.state.is_final() {
                inner.fail_reason = Some(reason);
            }
        }
        let mut seq_rx = task.seq_tx.subscribe();
        {
            let mut inner = lock(&task.inner);
            match inner.state {
                TaskState::Cancelled => return Ok(task.info_locked(&inner)),
                TaskState::Failed => {
                    return Err(ApiError::conflict(format!(
                        "task {id:?} has failed; there is nothing to cancel"
                    )))
                }
                _ => {}
            }
            if !inner.busy {
                task.stop_as_requested(&mut inner);
                tracing::info!(task = %task.id, "idle task cancelled");
                return Ok(task.info_locked(&inner));
            }
            inner.cancel_requested = true;
        }
        tracing::info!(task = %task.id, "cancelling task");
        task.cancel.notify_one();
        loop {
            {
                let inner = lock(&task.inner);
                if inner.state.is_final() || inner.forgotten {
                    return Ok(task.info_locked(&inner));
                }
            }
            if seq_rx.changed().await.is_err() {
                return Ok(task.info());
            }
        }
    }

    /// Forgets the oldest final tasks beyond the limit.
    fn prune(&self) {
        let mut tasks = lock(&self.tasks);
        let mut finished: Vec<(u64, String)> = tasks
            .iter()
            .filter_map(|t| lock(&t.inner).finished.map(|f| (f, t.id.clone())))
            .collect();
        if finished.len() <= self.max_finished {
            return;
        }
        finished.sort();
        let drop_n = finished.len() - self.max_finished;
        let doomed: Vec<String> = finished
            .into_iter()
            .take(drop_n)
            .map(|(_, id)| id)
            .collect();
        tasks.retain(|t| {
            if doomed.contains(&t.id) {
                t.forget();
                false
            } else {
                true
            }
        });
        tracing::debug!(count = drop_n, "forgot old finished tasks");
    }

    /// Kills every running agent and ends every subscription.
    pub(crate) fn shutdown(&self) {
        let tasks: Vec<Arc<Task>> = lock(&self.tasks).drain(..).collect();
        for t in tasks {
            if let Some(pid) = lock(&t.inner).pid {
                sys::signal_group(pid, Signal::SIGKILL);
            }
            t.forget();
        }
    }
}

fn validate_start(req: &TaskStart) -> Result<(), ApiError> {
    let id = req.id.as_bytes();
    let ok = !id.is_empty()
        && id.len() <= 128
        && id[0].is_ascii_alphanumeric()
        && id[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    if !ok {
        return Err(ApiError::invalid(format!(
            "invalid task id {:?}: use 1 to 128 of [a-zA-Z0-9_.-], starting with a letter or digit",
            req.id
        )));
    }
    let t = &req.turn;
    for (what, p) in [
        ("cwd", &t.cwd),
        ("home", &t.home),
        ("task_dir", &t.task_dir),
    ] {
        if !p.is_absolute() {
            return Err(ApiError::invalid(format!(
                "{what} must be an absolute path, got {:?}",
                p.display()
            )));
        }
    }
    if let Some(wt) = &req.worktree {
        if !wt.repo.is_absolute() {
            return Err(ApiError::invalid(format!(
                "the worktree repo must be an absolute path, got {:?}",
                wt.repo.display()
            )));
        }
        let b = &wt.branch;
        if b.is_empty()
            || b.starts_with('-')
            || b.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(ApiError::invalid(format!("invalid branch name {b:?}")));
        }
    }
    Ok(())
}

impl Task {
    pub(crate) fn info(&self) -> TaskInfo {
        let inner = lock(&self.inner);
        self.info_locked(&inner)
    }

    fn info_locked(&self, inner: &Inner) -> TaskInfo {
        TaskInfo {
            id: self.id.clone(),
            agent: self.agent,
            state: inner.state,
            last_seq: inner.last_seq,
            agent_session_id: inner.agent_session_id.clone(),
            pid: inner.pid,
            reason: inner.reason.clone(),
        }
    }

    /// A receiver of the newest seq, for waking subscribers.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq_tx.subscribe()
    }

    /// Up to `max` buffered events with `seq > after`, and whether the task
    /// has been forgotten (no more events will come).
    pub(crate) fn events_after(&self, after: u64, max: usize) -> (Vec<TaskEvent>, bool) {
        let inner = lock(&self.inner);
        let Some(first) = inner.events.front().map(|e| e.seq) else {
            return (Vec::new(), inner.forgotten);
        };
        let skip =
            usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        let batch = inner.events.iter().skip(skip).take(max).cloned().collect();
        (batch, inner.forgotten)
    }

    fn forget(&self) {
        lock(&self.inner).forgotten = true;
        self.seq_tx.send_modify(|_| {});
    }

    /// Appends an event (shrunk to fit a frame) and wakes subscribers.
    fn push(&self, inner: &mut Inner, kind: EventKind) {
        if inner.events.len() >= self.event_cap && !inner.overflowed {
            inner.overflowed = true;
            let line = format!(
                "berth: more than {} events; the daemon now keeps only the newest {}",
                self.event_cap, self.event_cap
            );
            tracing::warn!(task = %self.id, cap = self.event_cap, "task event buffer full");
            self.append(inner, EventKind::Log { line });
        }
        self.append(inner, fit_event(kind));
    }

    fn append(&self, inner: &mut Inner, kind: EventKind) {
        match &kind {
            EventKind::Status { state, reason } => {
                inner.state = *state;
                if reason.is_some() {
                    inner.reason.clone_from(reason);
                }
                if state.is_final() && inner.finished.is_none() {
                    inner.finished =
                        Some(FINISH_ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                }
            }
            EventKind::Session {
                agent_session_id, ..
            } => inner.agent_session_id = Some(agent_session_id.clone()),
            _ => {}
        }
        while inner.events.len() >= self.event_cap {
            inner.events.pop_front();
        }
        inner.last_seq += 1;
        inner.events.push_back(TaskEvent {
            seq: inner.last_seq,
            at: now_rfc3339(),
            kind,
        });
        let seq = inner.last_seq;
        self.seq_tx.send_replace(seq);
    }

    /// Emits Status{next} if the state machine allows it.
    fn transition(&self, inner: &mut Inner, next: TaskState, reason: Option<String>) -> bool {
        if !inner.state.can_become(next) {
            tracing::debug!(task = %self.id, from = %inner.state, to = %next, "ignored state change");
            return false;
        }
        tracing::debug!(task = %self.id, from = %inner.state, to = %next, "task state");
        self.push(
            inner,
            EventKind::Status {
                state: next,
                reason,
            },
        );
        true
    }

    fn emit(&self, kind: EventKind) {
        let mut inner = lock(&self.inner);
        self.push(&mut inner, kind);
    }

    fn cancel_requested(&self) -> bool {
        lock(&self.inner).cancel_requested
    }

    /// Ends a stopped task: `cancelled`, or `failed` when the stop carried a failure reason.
    fn stop_as_requested(&self, inner: &mut Inner) {
        match inner.fail_reason.take() {
            Some(reason) => {
                self.transition(inner, TaskState::Failed, Some(reason));
            }
            None => {
                self.transition(inner, TaskState::Cancelled, None);
            }
        }
    }
}

/// How a turn's setup ended early.
enum SetupEnd {
    Failed(String),
    Cancelled,
}

/// What the turn's output readers produce.
enum Out {
    Stdout(String),
    Stderr(String),
    /// A line longer than the reader's limit: its beginning.
    Overlong {
        stderr: bool,
        prefix: String,
    },
}

struct TurnOutcome {
    exit_code: i32,
    we_killed: bool,
    saw_turn_completed: bool,
    last_error: Option<String>,
    last_stderr: Option<String>,
}

async fn run_turn(
    task: Arc<Task>,
    spec: TurnSpec,
    worktree: Option<Worktree>,
    drivers: DriverFactory,
    ready: oneshot::Sender<()>,
) {
    let agent = task.agent;
    let (driver, child) = match prepare(&task, spec, worktree.as_ref(), &drivers).await {
        Ok(x) => x,
        Err(end) => {
            let mut inner = lock(&task.inner);
            inner.busy = false;
            inner.pid = None;
            let cancelled = inner.cancel_requested || matches!(end, SetupEnd::Cancelled);
            inner.cancel_requested = false;
            if cancelled {
                task.stop_as_requested(&mut inner);
                tracing::info!(task = %task.id, "task cancelled before its agent started");
            } else if let SetupEnd::Failed(reason) = end {
                tracing::info!(task = %task.id, reason = %reason, "task failed to start");
                task.transition(&mut inner, TaskState::Failed, Some(reason));
            }
            drop(inner);
            let _ = ready.send(());
            return;
        }
    };
    let outcome = supervise(&task, driver, child, ready).await;

    let mut inner = lock(&task.inner);
    inner.busy = false;
    inner.pid = None;
    if std::mem::take(&mut inner.cancel_requested) {
        task.stop_as_requested(&mut inner);
        tracing::info!(task = %task.id, "task cancelled");
        return;
    }
    let code = outcome.exit_code;
    if code == 0 {
        if !outcome.saw_turn_completed {
            task.push(&mut inner, EventKind::TurnCompleted { result: None });
        }
        task.transition(&mut inner, TaskState::Completed, None);
        tracing::info!(task = %task.id, "turn completed");
        return;
    }
    let detail = outcome
        .last_error
        .or(outcome.last_stderr)
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    let reason = if code == 128 + Signal::SIGKILL as i32 && !outcome.we_killed {
        format!("{agent} was killed (SIGKILL) by something other than berth, most likely because the workspace ran out of memory{detail}")
    } else if code > 128 {
        format!("{agent} was killed by signal {}{detail}", code - 128)
    } else if code < 0 {
        format!("lost track of the {agent} process{detail}")
    } else {
        format!("{agent} exited with code {code}{detail}")
    };
    tracing::info!(task = %task.id, reason = %reason, "turn failed");
    task.transition(&mut inner, TaskState::Failed, Some(reason));
}

/// Worktree, directories, files, spawn. Emits Status{running} once spawned.
async fn prepare(
    task: &Arc<Task>,
    mut spec: TurnSpec,
    worktree: Option<&Worktree>,
    drivers: &DriverFactory,
) -> Result<(Box<dyn Driver>, tokio::process::Child), SetupEnd> {
    if let Some(wt) = worktree {
        let path = spec.home.join(".berth").join("worktrees").join(&task.id);
        create_worktree(wt, &path).await.map_err(SetupEnd::Failed)?;
        tracing::info!(task = %task.id, path = %path.display(), branch = %wt.branch, "worktree created");
        spec.cwd = path;
        lock(&task.inner).spec.cwd = spec.cwd.clone();
    }
    if task.cancel_requested() {
        return Err(SetupEnd::Cancelled);
    }
    make_private_dir(&spec.task_dir).map_err(SetupEnd::Failed)?;
    make_private_dir(&spec.task_dir.join("tmp")).map_err(SetupEnd::Failed)?;
    let driver = drivers.make(task.agent);
    let inv = driver.invocation(&spec);
    for (path, content) in &inv.files {
        write_private_file(path, content).map_err(SetupEnd::Failed)?;
    }
    let mut inner = lock(&task.inner);
    if inner.cancel_requested {
        return Err(SetupEnd::Cancelled);
    }
    // Spawn under the lock so that a cancel sees the pid.
    let child = spawn(&inv).map_err(SetupEnd::Failed)?;
    inner.pid = child.id();
    task.transition(&mut inner, TaskState::Running, None);
    tracing::info!(task = %task.id, pid = ?inner.pid, program = %inv.program, "agent started");
    drop(inner);
    Ok((driver, child))
}

/// Variables of the workspace itself that agents (and the tools they run) must see: the way out
/// through berth's egress proxy and the CA bundle that trusts it. They come from the container's
/// environment, set by the server, so the drivers need not know them.
const WORKSPACE_PASSTHROUGH: [&str; 14] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "BERTH_WORKSPACE",
];

fn workspace_passthrough() -> Vec<(String, String)> {
    WORKSPACE_PASSTHROUGH
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect()
}

fn spawn(inv: &Invocation) -> Result<tokio::process::Child, String> {
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
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .envs(workspace_passthrough())
        .current_dir(&inv.cwd)
        .stdin(if inv.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => not_installed(),
        _ => format!("cannot run the agent CLI `{}`: {e}", inv.program),
    })?;
    if let (Some(mut stdin), Some(data)) = (child.stdin.take(), inv.stdin.clone()) {
        tokio::spawn(async move {
            if let Err(e) = stdin.write_all(data.as_bytes()).await {
                tracing::debug!(error = %e, "agent closed its stdin early");
            }
            // Dropping stdin closes it: the agent sees EOF.
        });
    }
    Ok(child)
}

/// Feeds the agent's output to the driver until the process exits and its
/// pipes are drained; handles cancellation.
async fn supervise(
    task: &Arc<Task>,
    mut driver: Box<dyn Driver>,
    mut child: tokio::process::Child,
    ready: oneshot::Sender<()>,
) -> TurnOutcome {
    let pgid = child.id().unwrap_or(0);
    let (tx, mut rx) = mpsc::channel::<Out>(256);
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
    drop(tx);
    let _ = ready.send(());

    let mut out = TurnOutcome {
        exit_code: -1,
        we_killed: false,
        saw_turn_completed: false,
        last_error: None,
        last_stderr: None,
    };
    let mut exited = false;
    let mut open = true;
    let mut cancelling = false;
    let mut grace: Option<Pin<Box<Sleep>>> = None;
    let mut kill_at: Option<Pin<Box<Sleep>>> = None;
    loop {
        if exited && !open {
            break;
        }
        tokio::select! {
            msg = rx.recv(), if open => match msg {
                Some(Out::Stdout(line)) => {
                    let kinds = driver.parse_line(&line);
                    emit_driver_events(task, kinds, driver.usage_is_cumulative(), &mut out);
                }
                Some(Out::Stderr(line)) => {
                    if !line.trim().is_empty() {
                        out.last_stderr = Some(line.trim().to_string());
                    }
                    task.emit(EventKind::Log { line });
                }
                Some(Out::Overlong { stderr: true, prefix }) => {
                    let line = format!("{prefix}… [line cut at {MAX_LOG_LINE} bytes]");
                    out.last_stderr = Some(line.clone());
                    task.emit(EventKind::Log { line });
                }
                Some(Out::Overlong { stderr: false, prefix }) => {
                    let mut start = prefix;
                    truncate_string(&mut start, 200);
                    task.emit(EventKind::Log {
                        line: format!(
                            "berth: dropped an agent output line longer than {MAX_STDOUT_LINE} bytes; it began with: {start}"
                        ),
                    });
                }
                None => open = false,
            },
            status = child.wait(), if !exited => {
                exited = true;
                out.exit_code = match status {
                    Ok(st) => sys::exit_code(st),
                    Err(e) => {
                        tracing::warn!(task = %task.id, error = %e, "waiting for the agent");
                        -1
                    }
                };
                if cancelling {
                    // Whatever is left of the tree goes too.
                    sys::signal_group(pgid, Signal::SIGKILL);
                    grace = Some(Box::pin(tokio::time::sleep(Duration::from_millis(200))));
                } else {
                    grace = Some(Box::pin(tokio::time::sleep(DRAIN_GRACE)));
                }
            },
            () = task.cancel.notified(), if !cancelling && !exited => {
                if task.cancel_requested() {
                    cancelling = true;
                    tracing::debug!(task = %task.id, pgid, "SIGINT to the agent's process group");
                    sys::signal_group(pgid, Signal::SIGINT);
                    kill_at = Some(Box::pin(tokio::time::sleep(CANCEL_GRACE)));
                }
            },
            () = sleep_opt(&mut kill_at) => {
                kill_at = None;
                if !exited {
                    tracing::debug!(task = %task.id, pgid, "SIGKILL to the agent's process group");
                    out.we_killed = true;
                    sys::signal_group(pgid, Signal::SIGKILL);
                    let _ = child.start_kill();
                }
            },
            () = sleep_opt(&mut grace) => {
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

fn emit_driver_events(
    task: &Task,
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
        task.push(&mut inner, kind);
    }
}

async fn read_lines<R: AsyncRead + Unpin>(
    mut r: R,
    stderr: bool,
    max: usize,
    tx: mpsc::Sender<Out>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut discarding = false;
    let line = |b: &[u8]| {
        let b = b.strip_suffix(b"\r").unwrap_or(b);
        String::from_utf8_lossy(b).into_owned()
    };
    let wrap = |s: String| {
        if stderr {
            Out::Stderr(s)
        } else {
            Out::Stdout(s)
        }
    };
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(stderr, error = %e, "agent pipe read failed");
                break;
            }
        };
        let mut data = &chunk[..n];
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            if discarding {
                discarding = false;
            } else {
                buf.extend_from_slice(&data[..pos]);
                let out = if buf.len() > max {
                    let mut prefix = line(&buf);
                    truncate_string(&mut prefix, max);
                    Out::Overlong { stderr, prefix }
                } else {
                    wrap(line(&buf))
                };
                if tx.send(out).await.is_err() {
                    return;
                }
            }
            buf.clear();
            data = &data[pos + 1..];
        }
        if !discarding {
            buf.extend_from_slice(&data[..data.len().min(max + 1)]);
            if buf.len() > max {
                let mut prefix = line(&buf);
                truncate_string(&mut prefix, max);
                buf.clear();
                discarding = true;
                if tx.send(Out::Overlong { stderr, prefix }).await.is_err() {
                    return;
                }
            }
        }
    }
    if !buf.is_empty() && !discarding {
        let _ = tx.send(wrap(line(&buf))).await;
    }
}

async fn create_worktree(wt: &Worktree, path: &Path) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C")
        .arg(&wt.repo)
        .args(["worktree", "add", "-b", &wt.branch, "--"])
        .arg(path)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output =
        match tokio::time::timeout(GIT_TIMEOUT, cmd.output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Err(
                "creating the git worktree failed: git is not installed in this workspace image"
                    .into(),
            ),
            Ok(Err(e)) => return Err(format!("creating the git worktree failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "creating the git worktree failed: git did not finish within {GIT_TIMEOUT:?}"
                ))
            }
        };
    if output.status.success() {
        return Ok(());
    }
    let mut msg = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if msg.is_empty() {
        msg = format!("git exited with code {}", sys::exit_code(output.status));
    }
    truncate_string(&mut msg, MAX_LOG_LINE);
    Err(format!("creating the git worktree failed: {msg}"))
}

fn make_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("creating {}: {e}", dir.display()))
}

fn write_private_file(path: &PathBuf, content: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(fail)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    f.write_all(content.as_bytes()).map_err(fail)
}

/// Cuts `s` to at most `max` bytes (at a char boundary).
fn truncate_string(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

/// Shrinks an event whose JSON would not fit comfortably in a frame.
fn fit_event(kind: EventKind) -> EventKind {
    let size = |k: &EventKind| serde_json::to_vec(k).map_or(usize::MAX, |v| v.len());
    let n = size(&kind);
    if n <= MAX_EVENT_BYTES {
        return kind;
    }
    let too_large = || EventKind::Log {
        line: format!("berth: dropped an agent event of {n} bytes (too large)"),
    };
    let Ok(mut v) = serde_json::to_value(&kind) else {
        return too_large();
    };
    cut_strings(&mut v);
    match serde_json::from_value::<EventKind>(v) {
        Ok(k) if size(&k) <= MAX_EVENT_BYTES => k,
        _ => too_large(),
    }
}

fn cut_strings(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) if s.len() > MAX_EVENT_STRING => {
            let total = s.len();
            truncate_string(s, MAX_EVENT_STRING);
            s.push_str(&format!("… [cut by berth: {total} bytes in all]"));
        }
        Value::Array(a) => a.iter_mut().for_each(cut_strings),
        Value::Object(o) => o.values_mut().for_each(cut_strings),
        _ => {}
    }
}

async fn sleep_opt(s: &mut Option<Pin<Box<Sleep>>>) {
    match s {
        Some(s) => s.as_mut().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_events_are_shrunk() {
        let e = fit_event(EventKind::Message {
            text: "x".repeat(2 * MAX_EVENT_BYTES),
        });
        let n = serde_json::to_vec(&e).unwrap().len();
        assert!(n <= MAX_EVENT_BYTES, "{n}");
        assert!(matches!(e, EventKind::Message { text } if text.contains("cut by berth")));
        let e = fit_event(EventKind::Raw {
            data: serde_json::json!(vec!["y".repeat(1000); 1000]),
        });
        assert!(matches!(e, EventKind::Log { .. }));
        let small = EventKind::Message { text: "hi".into() };
        assert_eq!(fit_event(small.clone()), small);
    }

    #[test]
    fn truncates_at_char_boundary() {
        let mut s = "héllo".to_string();
        truncate_string(&mut s, 2);
        assert_eq!(s, "h");
    }

    #[tokio::test]
    async fn line_reader_splits_and_limits() {
        let data: &[u8] = b"a\r\nbb\n0123456789abcdef\nlast";
        let (tx, mut rx) = mpsc::channel(16);
        read_lines(data, true, 8, tx).await;
        let mut got = Vec::new();
        while let Some(o) = rx.recv().await {
            got.push(match o {
                Out::Stdout(s) => format!("out:{s}"),
                Out::Stderr(s) => format!("err:{s}"),
                Out::Overlong { prefix, .. } => format!("long:{prefix}"),
            });
        }
        assert_eq!(got, ["err:a", "err:bb", "long:01234567", "err:last"]);
    }
}
