//! Agent tasks, server side: creating them in a workspace's daemon, following their events into
//! the store (and to subscribers), follow-ups and cancellation.
//!
//! The daemon owns the agent process and numbers its events; the server only ever appends the
//! contiguous continuation of what it has stored (`after = last_seq`), so after a crash or restart
//! it catches up with no gap and no duplicate.

use crate::auth::{audit, Actor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_agents::TurnSpec;
use berth_daemon::DaemonError;
use berth_domain::{Agent, ErrorCode, EventKind, TaskEvent, TaskId, TaskState, WorkspaceState};
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
    following: Mutex<HashMap<String, u64>>,
    /// The newest stored seq per task, for subscribers to wait on.
    watchers: crate::watch_map::WatchMap<String, u64>,
}

impl TaskHub {
    pub fn subscribe(&self, id: &str) -> watch::Receiver<u64> {
        self.watchers.subscribe(&id.to_owned())
    }

    fn notify(&self, id: &str, seq: u64) {
        self.watchers.publish(&id.to_owned(), seq);
    }

    fn generation(&self, id: &str) -> u64 {
        let f = berth_domain::sync::lock(&self.following);
        f.get(id).copied().unwrap_or_default()
    }

    /// Ends the follow-loop unless a new turn was announced since `gen`.
    fn may_stop(&self, id: &str, gen: u64) -> bool {
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
pub fn follow(state: &Arc<AppState>, id: &str) {
    {
        let mut f = berth_domain::sync::lock(&state.tasks.following);
        if let Some(gen) = f.get_mut(id) {
            *gen += 1;
            return;
        }
        f.insert(id.to_owned(), 0);
    }
    let state = state.clone();
    let id = id.to_owned();
    tokio::spawn(async move {
        follow_loop(&state, &id).await;
    });
}

async fn follow_loop(state: &Arc<AppState>, id: &str) {
    loop {
        let gen = state.tasks.generation(id);
        let task = match state.store.task(id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(task = id, error = %e, "task vanished from the store");
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

fn continue_hint(id: &str) -> String {
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
        at: berth_store::now(),
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
async fn revoke_key(state: &AppState, id: &str) {
    if let Err(e) = state.store.set_task_key_live(id, false).await {
        tracing::error!(task = id, error = %e, "cannot revoke a task's key");
    }
    state.gateway.forget_task(id);
}

/// Home-relative paths (`~`, `~/x`) to absolute ones; anything else must be absolute.
fn workspace_path(dir: Option<&str>) -> ApiResult<String> {
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
    let agent = Agent::parse(req.agent.trim()).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown agent {:?}: use claude, codex, gemini or opencode",
            req.agent
        ))
    })?;
    if req.prompt.trim().is_empty() {
        return Err(ApiError::invalid("the prompt is empty"));
    }
    let dir = workspace_path(req.dir.as_deref())?;
    if let Some(b) = &req.worktree {
        check_branch(b)?;
    }
    let model = req.model.filter(|m| !m.trim().is_empty());
    let w = lifecycle::resolve(state, &req.workspace).await?;
    if w.state != WorkspaceState::Running {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "workspace {} is {}: start it with `berth workspace start {}`",
                w.qualified_name(),
                w.state,
                w.qualified_name()
            ),
        ));
    }
    let id = TaskId::generate().to_string();
    let key = generate_token();
    state
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
        })
        .await?;
    crate::lifecycle::serve_channel(state, &w.id).await;
    let turn = turn_spec(&id, agent, req.prompt, model, &dir, key.expose(), None);
    let start = berth_daemon::TaskStart {
        id: id.clone(),
        turn,
        worktree: req.worktree.map(|branch| berth_daemon::Worktree {
            repo: dir.into(),
            branch,
        }),
        after_seq: 0,
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

/// One turn of a task as the daemon runs it.
fn turn_spec(
    id: &str,
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
        gateway_url: format!(
            "http://127.0.0.1:{}/{}",
            berth_daemon::GATEWAY_PORT,
            agent.provider().as_str()
        ),
        virtual_key: key.to_owned(),
        resume,
    }
}

/// Waits (briefly) until the store holds the daemon's events up to `seq`, so an answer reflects
/// what just happened (a started turn, a new state) instead of the previous one.
async fn caught_up(state: &AppState, id: &str, seq: u64) -> ApiResult<Task> {
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

/// Sends a follow-up message on behalf of `actor` (`text` is `Err` for a malformed request).
pub async fn send(
    state: &Arc<AppState>,
    actor: &Actor,
    id: &str,
    text: ApiResult<String>,
) -> ApiResult<Task> {
    let result = match text {
        Ok(text) => send_unaudited(state, id, &text).await,
        Err(e) => Err(e),
    };
    audit(&state.store, actor, "task.send", id, &result).await;
    result
}

async fn send_unaudited(state: &Arc<AppState>, id: &str, text: &str) -> ApiResult<Task> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid("the message is empty"));
    }
    let task = get(state, id).await?;
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
    running_workspace(state, &task).await?;
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
    // A task with a worktree ran in it; the worktree lives on in the home volume.
    let cwd = match &task.worktree {
        Some(_) => format!("{HOME}/.berth/worktrees/{}", task.id),
        None => task.dir.clone(),
    };
    let turn = turn_spec(
        &task.id,
        task.agent,
        text.to_owned(),
        task.model.clone(),
        &cwd,
        key.expose(),
        Some(session),
    );
    let start = berth_daemon::TaskStart {
        id: task.id.clone(),
        turn,
        worktree: None,
        after_seq: task.last_seq,
    };
    tracing::info!(task = %task.id, after_seq = task.last_seq, "continuing the task in a new agent process");
    Ok(state.daemon(&task.workspace_id).task_start(start).await?)
}

/// Cancels a task on behalf of `actor` (final: a cancelled task takes no more messages).
pub async fn cancel(state: &Arc<AppState>, actor: &Actor, id: &str) -> ApiResult<Task> {
    let result = cancel_unaudited(state, id).await;
    audit(&state.store, actor, "task.cancel", id, &result).await;
    result
}

async fn cancel_unaudited(state: &Arc<AppState>, id: &str) -> ApiResult<Task> {
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
    } else if running_workspace(state, &task).await.is_err() {
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

pub async fn get(state: &AppState, id: &str) -> ApiResult<Task> {
    state
        .store
        .find_task(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))
}

async fn running_workspace(state: &AppState, task: &Task) -> ApiResult<()> {
    match state.store.find_workspace_by_id(&task.workspace_id).await? {
        Some(w) if w.state == WorkspaceState::Running => Ok(()),
        Some(w) => Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("workspace {} is {}", w.qualified_name(), w.state),
        )),
        None => Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("the workspace of task {} was removed", task.id),
        )),
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

pub fn to_api(t: &Task) -> berth_api::Task {
    berth_api::Task {
        id: t.id.clone(),
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
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            cached_input_tokens: t.cached_tokens,
            cost_usd: t.cost_usd,
        },
        last_message: t.last_message.clone(),
        reason: t.reason.clone(),
        agent_session_id: t.agent_session_id.clone(),
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
