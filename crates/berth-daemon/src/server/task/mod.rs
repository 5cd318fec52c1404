//! Agent tasks owned by the daemon: the task list, each task's state and lifecycle, and the
//! requests on tasks (start, send, cancel, list).
//!
//! A task runs one agent process per turn ([`turn`]), or one long-lived protocol process kept
//! between turns ([`appserver`], codex); every event goes into the task's
//! buffer ([`events`]), which is authoritative: subscribers read from it at their own pace.
//! The files a turn needs are made by [`worktree`].

mod approvals;
mod appserver;
mod events;
mod output;
mod turn;
mod worktree;

pub(crate) use events::send_events;

use std::sync::{Arc, Mutex};

use berth_agents::{Driver, TurnSpec};
use berth_domain::{Agent, EventKind, TaskEvent, TaskState};
use nix::sys::signal::Signal;
use tokio::sync::{oneshot, watch, Notify};

use super::ApiError;
use crate::proto::{TaskDecide, TaskInfo, TaskStart, Worktree};
use crate::sys::{self, lock};
use events::{fit_event, EventBuffer};
use turn::run_turn;

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

/// One task: an agent conversation of one or more turns, and its events.
pub(crate) struct Task {
    id: String,
    agent: Agent,
    inner: Mutex<Inner>,
    /// The newest seq (and a wake-up for subscribers, also on forget).
    seq_tx: watch::Sender<u64>,
    /// Wakes the running turn when it is to stop (a cancel or an interrupt): see
    /// [`Task::stop_turn`].
    stop: Notify,
}

/// A message that stops the running turn and starts the next one with it (an interrupt).
struct Redirect {
    text: String,
    /// Who interrupted (for the event log).
    by: String,
    /// Told once the next turn runs (`Ok`), or why the redirect did not happen.
    reply: oneshot::Sender<Result<(), String>>,
}

/// A task's mutable state, under one lock with its event buffer so that the two agree.
struct Inner {
    state: TaskState,
    reason: Option<String>,
    agent_session_id: Option<String>,
    /// When this daemon first saw the agent report that session id (see
    /// [`berth_agents::Driver::resume_not_before`]).
    session_seen: Option<std::time::SystemTime>,
    pid: Option<u32>,
    events: EventBuffer,
    /// The spec of the turns (cwd already pointing at the worktree, if any).
    spec: TurnSpec,
    /// A turn is being set up or is running.
    busy: bool,
    cancel_requested: bool,
    /// An interrupt waiting for the running turn to stop.
    redirect: Option<Redirect>,
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
    /// Permission requests of the agent (approval policies other than `never`).
    approvals: approvals::Approvals,
    /// The long-lived agent process kept between turns (codex app-server, gemini/opencode ACP).
    appserver: appserver::Slot,
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
            let timeout = match req.approval_timeout_secs {
                0 => approvals::DEFAULT_TIMEOUT,
                s => std::time::Duration::from_secs(s),
            };
            let task = Task::new(
                req.id.clone(),
                &spec,
                req.after_seq,
                self.event_cap,
                timeout,
            );
            if req.agent_idle_secs > 0 {
                lock(&task.inner).appserver.idle =
                    std::time::Duration::from_secs(req.agent_idle_secs);
            }
            tasks.push(task.clone());
            task
        };
        self.prune();
        tracing::info!(task = %task.id, agent = %task.agent, "task started");
        Ok(self.begin_turn(task, spec, req.worktree).await)
    }

    /// Runs a turn of `task` in the background; returns once its agent is spawned or the turn
    /// has ended before that.
    async fn begin_turn(
        &self,
        task: Arc<Task>,
        spec: TurnSpec,
        worktree: Option<Worktree>,
    ) -> TaskInfo {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        tokio::spawn(run_turn(
            task.clone(),
            spec,
            worktree,
            self.drivers.clone(),
            ready_tx,
        ));
        let _ = ready_rx.await;
        task.info()
    }

    /// Starts the next turn of a task that accepts a message. With `interrupt` (who interrupts)
    /// and a turn running, that turn is stopped first and the next one starts with `text` in the
    /// same conversation ([`Task::interrupt`]); the answer comes once its agent runs.
    pub(crate) async fn send(
        &self,
        id: &str,
        text: &str,
        interrupt: Option<String>,
    ) -> Result<TaskInfo, ApiError> {
        let task = self.find(id)?;
        if let Some(by) = interrupt {
            let waiting = {
                let mut inner = lock(&task.inner);
                if inner.busy {
                    Some(task.interrupt(&mut inner, text, by)?)
                } else {
                    None
                }
            };
            if let Some(reply) = waiting {
                tracing::info!(task = %task.id, "task interrupted and redirected");
                return match reply.await {
                    Ok(Ok(())) => Ok(task.info()),
                    Ok(Err(why)) => Err(ApiError::conflict(why)),
                    Err(_) => Err(ApiError::conflict(format!(
                        "task {id:?} was forgotten before its next turn started"
                    ))),
                };
            }
        }
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
        Ok(self.begin_turn(task, spec, None).await)
    }

    /// Cancels a task: stops its running turn (SIGINT to the agent's process
    /// group, SIGKILL after [`turn::CANCEL_GRACE`]) and returns once it is `cancelled`.
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
                inner.appserver.discard();
                task.stop_as_requested(&mut inner);
                tracing::info!(task = %task.id, "idle task cancelled");
                return Ok(task.info_locked(&inner));
            }
            inner.cancel_requested = true;
        }
        tracing::info!(task = %task.id, "cancelling task");
        task.stop_turn();
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

    /// Decides a pending permission request of a task's agent.
    pub(crate) fn decide(&self, req: TaskDecide) -> Result<TaskInfo, ApiError> {
        self.find(&req.task)?.decide(req)
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

    /// An interactive session takes over the conversation kept in `state_dir` (a task's
    /// directory, see `SessionSpec::state_dir`): the warm protocol process of a task at rest
    /// there is stopped, so the task's next turn starts a new process that resumes the
    /// conversation as the session left it (a warm gemini or opencode process holds the
    /// conversation as it was, and would go on from there).
    pub(crate) fn release_state_dir(&self, state_dir: &std::path::Path) {
        let tasks: Vec<Arc<Task>> = lock(&self.tasks).clone();
        for t in tasks {
            let mut inner = lock(&t.inner);
            if !inner.busy && inner.spec.task_dir == state_dir {
                tracing::debug!(task = %t.id, "interactive take-over: stopping the warm agent process");
                inner.appserver.discard();
            }
        }
    }

    /// Kills every running agent and ends every subscription.
    pub(crate) fn shutdown(&self) {
        let tasks: Vec<Arc<Task>> = lock(&self.tasks).drain(..).collect();
        for t in tasks {
            let mut inner = lock(&t.inner);
            if let Some(pid) = inner.pid {
                sys::signal_group(pid, Signal::SIGKILL);
            }
            inner.appserver.kill_now();
            drop(inner);
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
    /// A new task (state `starting`) whose first event is the user's first message.
    fn new(
        id: String,
        spec: &TurnSpec,
        after_seq: u64,
        event_cap: usize,
        approval_timeout: std::time::Duration,
    ) -> Arc<Task> {
        let (seq_tx, _) = watch::channel(after_seq);
        let task = Arc::new(Task {
            id,
            agent: spec.agent,
            inner: Mutex::new(Inner {
                state: TaskState::Queued,
                reason: None,
                agent_session_id: spec.resume.clone(),
                // A session from before this daemon: it started no later than now.
                session_seen: spec.resume.as_ref().map(|_| std::time::SystemTime::now()),
                pid: None,
                events: EventBuffer::new(after_seq, event_cap),
                spec: spec.clone(),
                busy: true,
                cancel_requested: false,
                redirect: None,
                fail_reason: None,
                forgotten: false,
                finished: None,
                usage_total: [0; 3],
                approvals: approvals::Approvals::new(approval_timeout),
                appserver: appserver::Slot::new(),
            }),
            seq_tx,
            stop: Notify::new(),
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
        task
    }

    pub(crate) fn info(&self) -> TaskInfo {
        let inner = lock(&self.inner);
        self.info_locked(&inner)
    }

    fn info_locked(&self, inner: &Inner) -> TaskInfo {
        TaskInfo {
            id: self.id.clone(),
            agent: self.agent,
            state: inner.state,
            last_seq: inner.events.last_seq(),
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
        (inner.events.after(after, max), inner.forgotten)
    }

    fn forget(&self) {
        let mut inner = lock(&self.inner);
        inner.forgotten = true;
        inner.appserver.discard();
        drop(inner);
        self.seq_tx.send_modify(|_| {});
    }

    /// Appends an event (shrunk to fit a frame) and wakes subscribers.
    fn push(&self, inner: &mut Inner, kind: EventKind) {
        if let Some(notice) = inner.events.overflow_notice(&self.id) {
            self.append(inner, notice);
        }
        self.append(inner, fit_event(kind));
    }

    /// Appends an event as it is, after taking into the task what it says of the task (its
    /// state and reason, the agent's session id), and wakes subscribers.
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
            } => {
                if inner.agent_session_id.as_ref() != Some(agent_session_id) {
                    inner.session_seen = Some(std::time::SystemTime::now());
                }
                inner.agent_session_id = Some(agent_session_id.clone());
            }
            _ => {}
        }
        let seq = inner.events.append(kind);
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

    /// Whether the running turn is to stop: a cancel, or an interrupt that redirects the task.
    fn stop_requested(&self) -> bool {
        let inner = lock(&self.inner);
        inner.cancel_requested || inner.redirect.is_some()
    }

    /// Tells the running turn to stop (a cancel or an interrupt was recorded). The one place
    /// that does: the turn's runner decides how to stop its agent (for a process per turn:
    /// SIGINT to its process group, then SIGKILL of its process tree after
    /// [`turn::CANCEL_GRACE`]); an agent with an in-protocol interrupt would send it here.
    fn stop_turn(&self) {
        self.stop.notify_one();
    }

    /// Interrupts the running turn to redirect the task: records `text` as the next turn's
    /// message and stops the turn. The receiver is told once the next turn's agent runs, or why
    /// it will not (the turn ended `failed` or `cancelled` before the interrupt reached it). One
    /// interrupt at a time: a second one while the first waits is refused (409).
    fn interrupt(
        &self,
        inner: &mut Inner,
        text: &str,
        by: String,
    ) -> Result<oneshot::Receiver<Result<(), String>>, ApiError> {
        if inner.cancel_requested {
            return Err(ApiError::conflict(format!(
                "task {:?} is being cancelled",
                self.id
            )));
        }
        if inner.redirect.is_some() {
            return Err(ApiError::conflict(format!(
                "task {:?} is already being interrupted; send again once its next turn runs",
                self.id
            )));
        }
        let (reply, rx) = oneshot::channel();
        inner.redirect = Some(Redirect {
            text: text.to_owned(),
            by,
            reply,
        });
        self.stop_turn();
        Ok(rx)
    }

    /// Starts the turn of a redirect once the interrupted turn is over: `turn_interrupted`
    /// (when its agent was stopped), back to `running` from `waiting`, and the new message; the
    /// spec resumes the agent's conversation. An agent that reported no session id yet cannot be
    /// resumed: the next turn then starts a new conversation with the original prompt followed
    /// by the new message (`new_conversation` in the event).
    fn redirect_turn(
        &self,
        inner: &mut Inner,
        r: Redirect,
        stopped: bool,
    ) -> (TurnSpec, oneshot::Sender<Result<(), String>>) {
        let session = inner.agent_session_id.clone();
        if stopped {
            self.push(
                inner,
                EventKind::TurnInterrupted {
                    by: Some(r.by.clone()),
                    new_conversation: session.is_none(),
                },
            );
        }
        if inner.state == TaskState::Waiting {
            self.transition(inner, TaskState::Running, None);
        }
        let mut spec = inner.spec.clone();
        match session {
            Some(s) => {
                spec.resume = Some(s);
                spec.prompt.clone_from(&r.text);
            }
            None => {
                spec.resume = None;
                spec.prompt = format!("{}\n\n{}", spec.prompt, r.text);
                // A second such interrupt keeps this one's message too.
                inner.spec.prompt.clone_from(&spec.prompt);
            }
        }
        inner.busy = true;
        inner.cancel_requested = false;
        inner.reason = None;
        self.push(inner, EventKind::UserMessage { text: r.text });
        (spec, r.reply)
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
