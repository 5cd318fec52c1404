//! Agent tasks, server side: creating them in a workspace's daemon, following their events into
//! the store (and to subscribers), follow-ups and cancellation.
//!
//! The daemon owns the agent process and numbers its events; the server only ever appends the
//! contiguous continuation of what it has stored (`after = last_seq`), so after a crash or restart
//! it catches up with no gap and no duplicate.

use crate::auth::{audit, Actor};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_agents::TurnSpec;
use berth_daemon::DaemonError;
use berth_domain::{
    Agent, ErrorCode, EventKind, TaskEvent, TaskId, TaskState, WorkspaceId, WorkspaceState,
};
use berth_store::{NewTask, Task};
use tokio::sync::watch;

use crate::auth::generate_token;
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::{self, HOME};
use crate::state::AppState;

/// Follow-loops and subscribers per task.
#[derive(Default)]
pub struct TaskHub {
    /// Tasks with a running follow-loop, and a generation bumped whenever a new turn starts, so
    /// a loop about to stop at the end of a turn notices the next one.
    following: Mutex<HashMap<TaskId, u64>>,
    /// The newest stored seq per task, for subscribers to wait on.
    watchers: crate::watch_map::WatchMap<TaskId, u64>,
}

impl TaskHub {
    pub fn subscribe(&self, id: &TaskId) -> watch::Receiver<u64> {
        self.watchers.subscribe(id)
    }

    fn notify(&self, id: &TaskId, seq: u64) {
        self.watchers.publish(id, seq);
    }

    fn generation(&self, id: &TaskId) -> u64 {
        let f = berth_domain::sync::lock(&self.following);
        f.get(id).copied().unwrap_or_default()
    }

    /// Ends the follow-loop unless a new turn was announced since `gen`.
    fn may_stop(&self, id: &TaskId, gen: u64) -> bool {
        let mut f = berth_domain::sync::lock(&self.following);
        if f.get(id).copied() == Some(gen) {
            f.remove(id);
            true
        } else {
            false
        }
    }
}

/// Starts following a task's events (or tells the running follower a new turn began).
pub fn follow(state: &Arc<AppState>, id: &TaskId) {
    {
        let mut f = berth_domain::sync::lock(&state.tasks.following);
        if let Some(gen) = f.get_mut(id) {
            *gen += 1;
            return;
        }
        f.insert(id.clone(), 0);
    }
    let state = state.clone();
    let id = id.clone();
    tokio::spawn(async move {
        follow_loop(&state, &id).await;
    });
}

async fn follow_loop(state: &Arc<AppState>, id: &TaskId) {
    loop {
        let gen = state.tasks.generation(id);
        let task = match state.store.task(id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(task = %id, error = %e, "task vanished from the store");
                state.tasks.may_stop(id, gen);
                return;
            }
        };
        // A stored turn-over is no reason to stop here: a loop is started right when a new turn
        // begins, before its first event is stored. The pump below stops at the turn's end.
        if task.state.is_final() {
            state.tasks.may_stop(id, gen);
            return;
        }
        let ws = state
            .store
            .find_workspace_by_id(&task.workspace_id)
            .await
            .ok()
            .flatten();
        let running = ws
            .as_ref()
            .is_some_and(|w| w.state == WorkspaceState::Running);
        if !running {
            let why = match &ws {
                Some(w) => format!(
                    "the workspace {} is {} and its agent process is gone",
                    w.qualified_name(),
                    w.state
                ),
                None => "the workspace was removed".to_owned(),
            };
            // Only when the daemon (and with it the task) is certainly gone: no event can follow.
            // A stopped or failed workspace can run again, and the conversation with it.
            let (gone, end) = match &ws {
                None => (true, TaskState::Failed),
                Some(w) => (
                    matches!(w.state, WorkspaceState::Stopped | WorkspaceState::Failed),
                    TaskState::Interrupted,
                ),
            };
            if gone {
                let why = if end == TaskState::Interrupted {
                    format!("{why}; {}", continue_hint(id))
                } else {
                    why
                };
                end_task(state, &task, end, &why).await;
                state.tasks.may_stop(id, gen);
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        match pump(state, &task).await {
            Pump::TurnOver => {
                if state.tasks.may_stop(id, gen) {
                    return;
                }
            }
            Pump::Unknown => {
                let why = format!(
                    "the workspace restarted during the turn and its agent process is gone; {}",
                    continue_hint(id)
                );
                end_task(state, &task, TaskState::Interrupted, &why).await;
                state.tasks.may_stop(id, gen);
                return;
            }
            Pump::Retry => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

enum Pump {
    TurnOver,
    Unknown,
    Retry,
}

/// Streams events after the stored ones into the store until the turn is over.
async fn pump(state: &Arc<AppState>, task: &Task) -> Pump {
    let client = state.daemon(&task.workspace_id);
    let mut stream = match client.task_events(&task.id, task.last_seq).await {
        Ok(s) => s,
        Err(DaemonError::NotFound(_)) => return Pump::Unknown,
        Err(e) => {
            tracing::debug!(task = %task.id, error = %e, "task events unavailable; retrying");
            return Pump::Retry;
        }
    };
    loop {
        match stream.next().await {
            Ok(Some(ev)) => {
                let turn_over =
                    matches!(&ev.kind, EventKind::Status { state, .. } if state.is_turn_over());
                match state
                    .store
                    .append_task_events(&task.id, std::slice::from_ref(&ev))
                    .await
                {
                    Ok(stored) => {
                        if let Some(last) = stored.last() {
                            state.tasks.notify(&task.id, last.seq);
                        }
                    }
                    Err(e) => {
                        tracing::error!(task = %task.id, error = %e, "cannot store task event");
                        return Pump::Retry;
                    }
                }
                if turn_over {
                    // The store ended the key with the turn; drop cached lookups of it now.
                    state.gateway.forget_task(&task.id);
                    return Pump::TurnOver;
                }
            }
            Ok(None) => return Pump::Retry,
            Err(e) => {
                tracing::debug!(task = %task.id, error = %e, "task event stream broke; resuming");
                return Pump::Retry;
            }
        }
    }
}

fn continue_hint(id: &TaskId) -> String {
    format!("`berth task send {id} MESSAGE` continues the conversation")
}

/// Appends a status the server decided (the daemon is gone, so no event can follow), unless
/// the stored state cannot become it (e.g. the turn had completed after all).
async fn end_task(state: &AppState, task: &Task, to: TaskState, reason: &str) {
    let fresh = state
        .store
        .task(&task.id)
        .await
        .unwrap_or_else(|_| task.clone());
    if !fresh.state.can_become(to) {
        return;
    }
    let ev = TaskEvent {
        seq: fresh.last_seq + 1,
        at: berth_domain::Timestamp::now(),
        kind: EventKind::Status {
            state: to,
            reason: Some(reason.to_owned()),
        },
    };
    match state.store.append_task_events(&task.id, &[ev]).await {
        Ok(stored) => {
            if let Some(last) = stored.last() {
                state.tasks.notify(&task.id, last.seq);
            }
        }
        Err(e) => tracing::error!(task = %task.id, error = %e, "cannot end task"),
    }
    revoke_key(state, &task.id).await;
}

/// Ends a task's virtual key on the server side, whatever its daemon says or does.
async fn revoke_key(state: &AppState, id: &TaskId) {
    if let Err(e) = state.store.set_task_key_live(id, false).await {
        tracing::error!(task = %id, error = %e, "cannot revoke a task's key");
    }
    state.gateway.forget_task(id);
}

/// Home-relative paths (`~`, `~/x`) to absolute ones; anything else must be absolute.
pub(crate) fn workspace_path(dir: Option<&str>) -> ApiResult<String> {
    let d = dir.unwrap_or("~").trim();
    let p = if d == "~" {
        HOME.to_owned()
    } else if let Some(rest) = d.strip_prefix("~/") {
        format!("{HOME}/{rest}")
    } else {
        d.to_owned()
    };
    if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
        return Err(ApiError::invalid(format!(
            "dir {d:?} must be an absolute path inside the workspace (or start with ~/)"
        )));
    }
    let trimmed = p.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

fn check_branch(b: &str) -> ApiResult<()> {
    let ok = !b.is_empty()
        && b.len() <= 100
        && !b.starts_with('-')
        && !b.starts_with('/')
        && !b.ends_with('/')
        && !b.ends_with(".lock")
        && !b.contains("..")
        && !b.contains("//")
        && b.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "worktree branch {b:?} is not a valid git branch name"
        )))
    }
}

/// Creates a task on behalf of `actor`; `req` is `Err` when the request was malformed (recorded in
/// the audit log too, like every outcome).
pub async fn create(
    state: &Arc<AppState>,
    actor: &Actor,
    req: ApiResult<berth_api::CreateTask>,
) -> ApiResult<Task> {
    let target = req
        .as_ref()
        .map(|r| r.workspace.clone())
        .unwrap_or_else(|_| "(invalid request)".into());
    let result = match req {
        Ok(r) => create_unaudited(state, r).await,
        Err(e) => Err(e),
    };
    let target = match &result {
        Ok(t) => format!("{}:{}", t.workspace, t.id),
        Err(_) => target,
    };
    audit(&state.store, actor, "task.create", &target, &result).await;
    result
}

async fn create_unaudited(state: &Arc<AppState>, req: berth_api::CreateTask) -> ApiResult<Task> {
    let agent = parse_agent(&req.agent)?;
    if req.prompt.trim().is_empty() {
        return Err(ApiError::invalid("the prompt is empty"));
    }
    let dir = workspace_path(req.dir.as_deref())?;
    if let Some(b) = &req.worktree {
        check_branch(b)?;
    }
    let model = req.model.filter(|m| !m.trim().is_empty());
    let asked = crate::approvals::parse_policy(req.approval.as_deref())?;
    let w = lifecycle::resolve(state, &req.workspace).await?;
    let approval = match asked {
        Some(p) => p,
        None => state.store.workspace_approval(&w.id).await?,
    };
    crate::approvals::check_supported(agent, approval)?;
    require_provider(state, agent)?;
    // No agent before the template's setup has finished.
    crate::provision::ensure_ready(state, &w).await?;
    let one = berth_domain::QuotaUse {
        tasks: 1,
        ..Default::default()
    };
    let _admitted = crate::tenants::check(state, &w.tenant, one, None).await?;
    // A task starts only in a running workspace.
    crate::terminal::ensure_running(&w)?;
    let id = TaskId::generate();
    let key = generate_token();
    let row = state
        .store
        .insert_task(&NewTask {
            id: id.clone(),
            workspace_id: w.id.clone(),
            workspace: w.qualified_name(),
            agent,
            model: model.clone(),
            dir: dir.clone(),
            worktree: req.worktree.clone(),
            prompt: req.prompt.clone(),
            virtual_key_hash: berth_gateway::hash_key(key.expose()),
            approval,
        })
        .await?;
    crate::lifecycle::serve_channel(state, &w.id).await;
    // What the directory holds before the agent starts: the base of the task's diff.
    crate::task_diff::snapshot(state, &row, 1).await;
    let mut turn = turn_spec(&id, agent, req.prompt, model, &dir, key.expose(), None);
    turn.mcp_servers = w.mcp_servers.clone();
    turn.approval = approval;
    let start = berth_daemon::TaskStart {
        id: id.to_string(),
        turn,
        worktree: req.worktree.map(|branch| berth_daemon::Worktree {
            repo: dir.into(),
            branch,
        }),
        after_seq: 0,
        approval_timeout_secs: state.config.approval_timeout.as_secs(),
        agent_idle_secs: state.config.agent_idle.as_secs(),
    };
    let info = match state.daemon(&w.id).task_start(start).await {
        Ok(info) => info,
        Err(e) => {
            let err = ApiError::from(e);
            state
                .store
                .set_task_state(&id, TaskState::Failed, Some(&err.message))
                .await?;
            return Err(err);
        }
    };
    follow(state, &id);
    caught_up(state, &id, info.last_seq).await
}

/// The agent a request names (`claude`, `codex`, `gemini` or `opencode`).
fn parse_agent(agent: &str) -> ApiResult<Agent> {
    Agent::parse(agent.trim()).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown agent {agent:?}: use claude, codex, gemini or opencode"
        ))
    })
}

/// Refuses to start `agent` when its provider has no upstream key configured: its calls would
/// all fail at the gateway (a task would run into them instead of failing now).
pub(crate) fn require_provider(state: &AppState, agent: Agent) -> ApiResult<()> {
    let p = agent.provider();
    if state.gateway.configured(p) {
        return Ok(());
    }
    let (key, base) = crate::gateway::provider_env(p);
    Err(ApiError::new(
        ErrorCode::ProviderUnconfigured,
        format!(
            "{agent} needs the {} provider, which has no upstream configured on this server: set {key} (and {base} for an upstream other than {}) and restart berth server",
            p.as_str(),
            berth_gateway::Upstreams::default_base_url(p)
        ),
    ))
}

/// One turn of a task as the daemon runs it (without MCP servers: the caller adds its
/// workspace's).
fn turn_spec(
    id: &TaskId,
    agent: Agent,
    prompt: String,
    model: Option<String>,
    cwd: &str,
    key: &str,
    resume: Option<String>,
) -> TurnSpec {
    TurnSpec {
        agent,
        prompt,
        model,
        cwd: cwd.into(),
        home: HOME.into(),
        task_dir: format!("{HOME}/.berth/tasks/{id}").into(),
        gateway_url: gateway_url(agent),
        virtual_key: key.to_owned(),
        resume,
        approval: berth_domain::ApprovalPolicy::Never,
        mcp_servers: Vec::new(),
    }
}

/// The gateway's address for `agent`'s provider, inside a workspace.
pub(crate) fn gateway_url(agent: Agent) -> String {
    format!(
        "http://127.0.0.1:{}/{}",
        berth_daemon::GATEWAY_PORT,
        agent.provider().as_str()
    )
}

/// Waits (briefly) until the store holds the daemon's events up to `seq`, so an answer reflects
/// what just happened (a started turn, a new state) instead of the previous one.
async fn caught_up(state: &AppState, id: &TaskId, seq: u64) -> ApiResult<Task> {
    let mut rx = state.tasks.subscribe(id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let t = state.store.task(id).await?;
        if t.last_seq >= seq || t.state.is_final() {
            return Ok(t);
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            return Ok(t);
        }
    }
}

/// Sends a follow-up message on behalf of `actor` to the task the request names (`raw`, the
/// path's text, so a request naming no task is audited too; `msg` is `Err` for a malformed
/// request). With `interrupt`, a turn in flight is stopped and the message starts the next turn
/// at once (audited as `task.interrupt`); without a turn in flight it is a plain send.
pub async fn send(
    state: &Arc<AppState>,
    actor: &Actor,
    raw: &str,
    msg: ApiResult<berth_api::SendMessage>,
) -> ApiResult<Task> {
    let interrupt = msg.as_ref().is_ok_and(|m| m.interrupt);
    let result = match (parse_id(raw), msg) {
        (Ok(id), Ok(m)) if m.interrupt => {
            interrupt_unaudited(state, &id, &m.text, &actor.label()).await
        }
        (Ok(id), Ok(m)) => send_unaudited(state, &id, &m.text).await,
        (_, Err(e)) | (Err(e), _) => Err(e),
    };
    let target = task_target(state, raw).await;
    let action = if interrupt {
        "task.interrupt"
    } else {
        "task.send"
    };
    audit(&state.store, actor, action, &target, &result).await;
    result
}

/// Interrupts the task's turn in flight (`starting`, `running` or `waiting`) and starts the
/// next turn with `text` in the same conversation; the task stays `running`, its key live.
/// A task with no turn in flight gets `text` as a plain follow-up.
async fn interrupt_unaudited(
    state: &Arc<AppState>,
    id: &TaskId,
    text: &str,
    by: &str,
) -> ApiResult<Task> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid("the message is empty"));
    }
    let in_flight = {
        let lock = crate::agent_sessions::task_lock(id);
        let _held = lock.lock().await;
        let task = get(state, id).await?;
        let in_flight = matches!(
            task.state,
            TaskState::Starting | TaskState::Running | TaskState::Waiting
        );
        if in_flight {
            running_workspace(state, &task, "interrupt it").await?;
            // The turn may end on its own just before the daemon sees the interrupt: its message
            // is then a plain follow-up, which needs the key the turn's end revoked.
            state.store.set_task_key_live(id, true).await?;
            let info = match state
                .daemon(&task.workspace_id)
                .task_interrupt(id, text, by)
                .await
            {
                Ok(info) => info,
                Err(e) => {
                    // Nothing started; a turn still in flight keeps its key.
                    let now = get(state, id).await?;
                    if now.state.is_turn_over() {
                        revoke_key(state, id).await;
                    }
                    return Err(e.into());
                }
            };
            // Where the new turn starts from (its agent has just started; best effort).
            let turn = crate::task_diff::next_turn(state, &task).await;
            crate::task_diff::snapshot(state, &task, turn).await;
            follow(state, id);
            Some(info)
        } else {
            None
        }
    };
    match in_flight {
        Some(info) => caught_up(state, id, info.last_seq).await,
        None => send_unaudited(state, id, text).await,
    }
}

/// The audit target of the task a request names: `tenant/name:id` (so the row belongs to the
/// workspace's tenant), or the id as given when it names no task.
pub(crate) async fn task_target(state: &AppState, raw: &str) -> String {
    let Some(id) = TaskId::parse(raw) else {
        return raw.to_owned();
    };
    match state.store.find_task(&id).await {
        Ok(Some(t)) => format!("{}:{}", t.workspace, t.id),
        _ => raw.to_owned(),
    }
}

async fn send_unaudited(state: &Arc<AppState>, id: &TaskId, text: &str) -> ApiResult<Task> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid("the message is empty"));
    }
    // A take-over and a follow-up never start together; none while a take-over is open.
    let lock = crate::agent_sessions::task_lock(id);
    let _held = lock.lock().await;
    let task = get(state, id).await?;
    crate::agent_sessions::refuse_while_interactive(state, &task).await?;
    if task.state == TaskState::Waiting {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "task {id} is waiting for approval: decide its pending request first (`berth task approve {id}` or `berth task deny {id}`)"
            ),
        ));
    }
    if !task.state.accepts_message() {
        let why = if task.state.is_final() {
            format!(
                "task {id} is {}; nothing more can be sent to it",
                task.state
            )
        } else {
            format!("task {id} is {}: wait until its turn is over", task.state)
        };
        return Err(ApiError::new(ErrorCode::InvalidState, why));
    }
    running_workspace(state, &task, "send a message").await?;
    if task.state.is_turn_over() {
        // Where this turn starts from: the end of the previous turn's diff.
        let turn = crate::task_diff::next_turn(state, &task).await;
        crate::task_diff::snapshot(state, &task, turn).await;
    }
    // The server starts the next turn: the task's key works again until that turn is over.
    state.store.set_task_key_live(id, true).await?;
    let sent = if task.state == TaskState::Interrupted {
        continue_in_new_daemon(state, &task, text).await
    } else {
        match state.daemon(&task.workspace_id).task_send(id, text).await {
            // The workspace restarted since the last turn ended: the new daemon has never
            // heard of the task, so the conversation goes on in a new agent process.
            Err(DaemonError::NotFound(_)) => continue_in_new_daemon(state, &task, text).await,
            other => other.map_err(ApiError::from),
        }
    };
    let info = match sent {
        Ok(info) => info,
        Err(e) => {
            // No new turn started; a `waiting` turn keeps its key.
            if task.state.is_turn_over() {
                revoke_key(state, id).await;
            }
            return Err(e);
        }
    };
    follow(state, id);
    caught_up(state, id, info.last_seq).await
}

/// Continues a task whose agent process went away with its workspace's daemon: the agent
/// resumes its own session in a new process, with a new virtual key (the old one lived only in
/// the old daemon), and the daemon numbers events on from what the store holds.
async fn continue_in_new_daemon(
    state: &Arc<AppState>,
    task: &Task,
    text: &str,
) -> ApiResult<berth_daemon::TaskInfo> {
    let Some(session) = task.agent_session_id.clone() else {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "task {} cannot be continued: its agent never reported a session id to resume; start a new task",
                task.id
            ),
        ));
    };
    let key = generate_token();
    state
        .store
        .set_task_key_hash(&task.id, &berth_gateway::hash_key(key.expose()))
        .await?;
    crate::lifecycle::serve_channel(state, &task.workspace_id).await;
    let cwd = task_dir(task);
    let mut turn = turn_spec(
        &task.id,
        task.agent,
        text.to_owned(),
        task.model.clone(),
        &cwd,
        key.expose(),
        Some(session),
    );
    turn.approval = task.approval;
    // The workspace's servers as they are now (the same for every turn of a workspace).
    turn.mcp_servers = state.store.workspace(&task.workspace_id).await?.mcp_servers;
    let start = berth_daemon::TaskStart {
        id: task.id.to_string(),
        turn,
        worktree: None,
        after_seq: task.last_seq,
        approval_timeout_secs: state.config.approval_timeout.as_secs(),
        agent_idle_secs: state.config.agent_idle.as_secs(),
    };
    tracing::info!(task = %task.id, after_seq = task.last_seq, "continuing the task in a new agent process");
    Ok(state.daemon(&task.workspace_id).task_start(start).await?)
}

/// Cancels a task on behalf of `actor` (final: a cancelled task takes no more messages).
/// (`raw` is the request's text for the task, as for [`send`].)
pub async fn cancel(state: &Arc<AppState>, actor: &Actor, raw: &str) -> ApiResult<Task> {
    let result = match parse_id(raw) {
        Ok(id) => cancel_unaudited(state, &id).await,
        Err(e) => Err(e),
    };
    let target = task_target(state, raw).await;
    audit(&state.store, actor, "task.cancel", &target, &result).await;
    result
}

async fn cancel_unaudited(state: &Arc<AppState>, id: &TaskId) -> ApiResult<Task> {
    let task = get(state, id).await?;
    match task.state {
        TaskState::Cancelled => return Ok(task),
        TaskState::Failed => {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!("task {id} has already failed"),
            ))
        }
        _ => {}
    }
    revoke_key(state, id).await;
    let idle_reason = if task.state == TaskState::Interrupted {
        Some("cancelled while interrupted (no agent process was running)")
    } else if running_workspace(state, &task, "").await.is_err() {
        Some("cancelled while its workspace was not running")
    } else {
        None
    };
    if let Some(reason) = idle_reason {
        end_task(state, &task, TaskState::Cancelled, reason).await;
        return Ok(state.store.task(id).await?);
    }
    // The daemon answers once the agent is stopped; answer with that settled state.
    let info = match state.daemon(&task.workspace_id).task_cancel(id).await {
        Err(DaemonError::NotFound(_)) => {
            // The workspace restarted since: no agent process of this task exists any more.
            let reason = "cancelled; its workspace had restarted, so no agent process was running";
            end_task(state, &task, TaskState::Cancelled, reason).await;
            return Ok(state.store.task(id).await?);
        }
        other => other?,
    };
    follow(state, id);
    caught_up(state, id, info.last_seq).await
}

pub async fn get(state: &AppState, id: &TaskId) -> ApiResult<Task> {
    state
        .store
        .find_task(id)
        .await?
        .ok_or_else(|| not_found(id.as_str()))
}

/// A task id from a request (the path's `{task}`): text that is not a task id names no task, so
/// it gets the same 404 as an id that is not stored.
pub fn parse_id(raw: &str) -> ApiResult<TaskId> {
    TaskId::parse(raw).ok_or_else(|| not_found(raw))
}

/// The task named in a request, from the id's text (the access check and the read routes).
pub async fn find(state: &AppState, raw: &str) -> ApiResult<Task> {
    get(state, &parse_id(raw)?).await
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("task {id} not found"))
}

/// `Ok` when the task's workspace runs; else 409 `invalid_state` saying why (stopped, or
/// removed) and, where starting it helps, that starting it lets the caller `then` (e.g. "see
/// the diff").
pub(crate) async fn running_workspace(state: &AppState, task: &Task, then: &str) -> ApiResult<()> {
    match state.store.find_workspace_by_id(&task.workspace_id).await? {
        Some(w) if w.state == WorkspaceState::Running => Ok(()),
        Some(w) => Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "workspace {} is {}: start it to {then}",
                w.qualified_name(),
                w.state
            ),
        )),
        None => Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("the workspace of task {} was removed", task.id),
        )),
    }
}

/// The directory a task works in: its worktree (which lives on in the home volume), or its `dir`.
pub(crate) fn task_dir(task: &Task) -> String {
    match &task.worktree {
        Some(_) => format!("{HOME}/.berth/worktrees/{}", task.id),
        None => task.dir.clone(),
    }
}

/// On server start: follow every task whose turn was in flight.
pub async fn resume_all(state: &Arc<AppState>) {
    match state.store.active_tasks().await {
        Ok(tasks) => {
            for t in tasks {
                follow(state, &t.id);
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list active tasks"),
    }
}

/// The tasks a request lists, newest first. `workspace` names a workspace as it is now (by name
/// or id): tasks stay with the workspace they ran in, so after `workspace rm` + `create` of the
/// same name, the new workspace lists none of the old one's tasks, and the full list shows those
/// as `workspace_removed`. A tenant's caller lists the tasks of its tenant's (existing)
/// workspaces. Each task's usage is summed from the gateway's calls (one query for all).
pub async fn list(
    state: &AppState,
    actor: &Actor,
    q: &berth_api::TaskQuery,
) -> ApiResult<Vec<berth_api::Task>> {
    let ws = match &q.workspace {
        Some(w) => Some(lifecycle::resolve(state, w).await?.id),
        None => None,
    };
    let st = match &q.state {
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown state {s:?}: use queued, starting, running, waiting, completed, failed or cancelled"
            ))
        })?),
        None => None,
    };
    let mut all = state.store.list_tasks(ws.as_ref(), st).await?;
    let scope = match actor.scope() {
        Some(own) => Some(crate::error::tenant_name(own)?),
        None => None,
    };
    let existing: HashSet<WorkspaceId> = state
        .store
        .list_workspaces(scope.as_ref())
        .await?
        .into_iter()
        .map(|w| w.id)
        .collect();
    if scope.is_some() {
        all.retain(|t| existing.contains(&t.workspace_id));
    }
    let task_ids: Vec<&TaskId> = all.iter().map(|t| &t.id).collect();
    let totals = state.store.task_call_totals(&task_ids).await?;
    let deliveries = state.store.task_deliveries(&task_ids).await?;
    Ok(all
        .iter()
        .map(|t| {
            let calls = totals.get(&t.id).copied().unwrap_or_default();
            let mut v = to_api(t, !existing.contains(&t.workspace_id), calls);
            if let Some(d) = deliveries.get(&t.id) {
                with_delivery(&mut v, d);
            }
            v
        })
        .collect())
}

/// A task as the API shows it: whether its workspace was removed, and its usage summed from
/// the gateway's recorded calls.
pub async fn view(state: &AppState, t: &Task) -> ApiResult<berth_api::Task> {
    let removed = state
        .store
        .find_workspace_by_id(&t.workspace_id)
        .await?
        .is_none();
    let totals = state.store.task_call_totals(&[&t.id]).await?;
    let calls = totals.get(&t.id).copied().unwrap_or_default();
    let mut v = to_api(t, removed, calls);
    if let Some(d) = state.store.task_deliveries(&[&t.id]).await?.get(&t.id) {
        with_delivery(&mut v, d);
    }
    Ok(v)
}

/// Adds the task's push and pull request to its API view.
fn with_delivery(v: &mut berth_api::Task, d: &berth_store::TaskDelivery) {
    v.push = d.push.as_ref().map(|p| berth_api::TaskPush {
        remote: p.remote.clone(),
        branch: p.branch.clone(),
        commit: p.commit.clone(),
        at: p.at.clone(),
    });
    v.pull_request = d.pull_request.as_ref().map(|p| berth_api::TaskPullRequest {
        provider: p.provider.clone(),
        url: p.url.clone(),
        number: p.number,
        at: p.at.clone(),
    });
}

fn to_api(t: &Task, workspace_removed: bool, calls: berth_store::CallTotals) -> berth_api::Task {
    berth_api::Task {
        id: t.id.to_string(),
        workspace: t.workspace.clone(),
        workspace_id: t.workspace_id.to_string(),
        agent: t.agent.as_str().to_owned(),
        state: t.state.as_str().to_owned(),
        model: t.model.clone(),
        dir: t.dir.clone(),
        worktree: t.worktree.clone(),
        prompt: t.prompt.clone(),
        created_at: t.created_at.clone(),
        updated_at: t.updated_at.clone(),
        last_seq: t.last_seq,
        usage: berth_api::TaskUsage {
            calls: calls.calls,
            input_tokens: calls.input_tokens,
            output_tokens: calls.output_tokens,
            cached_input_tokens: calls.cache_read_tokens,
            cache_write_tokens: calls.cache_write_tokens,
            cost_usd: Some(calls.cost_nusd as f64 / 1e9),
            cost: berth_api::usd_decimal(calls.cost_nusd),
            fallback_calls: calls.fallback_calls,
            agent_reported: (t.input_tokens > 0 || t.output_tokens > 0 || t.cost_usd.is_some())
                .then_some(berth_api::AgentReportedUsage {
                    input_tokens: t.input_tokens,
                    output_tokens: t.output_tokens,
                    cached_input_tokens: t.cached_tokens,
                    cost_usd: t.cost_usd,
                }),
        },
        last_message: t.last_message.clone(),
        reason: t.reason.clone(),
        agent_session_id: t.agent_session_id.clone(),
        approval: t.approval.as_str().to_owned(),
        workspace_removed,
        push: None,
        pull_request: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_branches() {
        assert_eq!(workspace_path(None).unwrap(), "/home/agent");
        assert_eq!(workspace_path(Some("~/repo")).unwrap(), "/home/agent/repo");
        assert_eq!(workspace_path(Some("/srv/x/")).unwrap(), "/srv/x");
        assert!(workspace_path(Some("repo")).is_err());
        assert!(workspace_path(Some("/a/../b")).is_err());
        assert!(check_branch("feature/x-1").is_ok());
        for bad in ["", "-x", "a..b", "a b", "x.lock", "/a", "a/"] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
    }
}
