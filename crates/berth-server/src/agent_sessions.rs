//! Interactive agent sessions: an agent CLI's own TUI in a persistent terminal session of the
//! workspace daemon, configured exactly like a task turn (the driver's
//! [`berth_agents::Driver::interactive`]): the gateway's address inside the workspace, a
//! per-session virtual key (stored hashed, `session_keys`), no real key, its own state
//! directory `~/.berth/sessions/<id>` (or the task's directory when a task is taken over).
//!
//! The key is live while the server has not ended it **and** the daemon lists that very
//! session running (the gateway asks on every call). The server ends it for good when the
//! session is removed, when [`spawn_sweeper`] finds it exited or gone, or its workspace not
//! running, and when the daemon cannot be asked several times in a row. Nothing the daemon or
//! the agent says can make a key live again.
//!
//! Taking over a task (`berth task attach`) resumes the task's own agent conversation in its
//! directory, only while no headless turn of the task runs; while that session is open the
//! task takes no message ([`refuse_while_interactive`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use berth_agents::SessionSpec;
use berth_api as api;
use berth_daemon::{DaemonClient, DaemonError, SessionInfo, SessionState};
use berth_domain::{Agent, ErrorCode, TaskId, WorkspaceId, WorkspaceState};
use berth_gateway::{session_liveness, SessionLiveness};
use berth_store::{NewSessionKey, SessionKey, Task, Workspace};

use crate::auth::{audit, generate_token, Actor};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::{self, HOME};
use crate::state::AppState;
use crate::terminal;

/// How often the server checks that the sessions of live keys still run.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// Sweeps in a row the daemon may fail to answer before its sessions' keys are ended.
const SWEEP_FAILURES: u32 = 3;
/// How long a key may wait for its session to start before it is ended.
const START_GRACE_SECS: i64 = 120;
/// What to start: a new conversation, or a task's taken over.
struct Launch {
    agent: Agent,
    model: Option<String>,
    cwd: String,
    /// The agent's state directory (config files, TMPDIR, its conversations).
    state_dir: String,
    resume: Option<String>,
    task_id: Option<TaskId>,
    name: Option<String>,
    cols: u16,
    rows: u16,
}

/// `POST /workspaces/{ws}/sessions` with `agent`: starts the agent's TUI, on behalf of `actor`
/// (audited as `session.create`).
pub async fn create(
    state: &Arc<AppState>,
    actor: &Actor,
    ws: &str,
    req: api::CreateSession,
) -> ApiResult<api::Session> {
    let result = create_unaudited(state, ws, req).await;
    let base = match lifecycle::resolve(state, ws).await {
        Ok(w) => w.qualified_name(),
        Err(_) => ws.to_owned(),
    };
    let target = match &result {
        Ok(s) => format!("{base}:{}", s.name),
        Err(_) => base,
    };
    audit(&state.store, actor, "session.create", &target, &result).await;
    result
}

async fn create_unaudited(
    state: &Arc<AppState>,
    ws: &str,
    req: api::CreateSession,
) -> ApiResult<api::Session> {
    // The workspace first: a request for one that does not exist is a 404 whatever it says.
    let w = lifecycle::resolve(state, ws).await?;
    // No agent before the template's setup has finished.
    crate::provision::ensure_ready(state, &w).await?;
    terminal::ensure_running(&w)?;
    let raw = req.agent.as_deref().unwrap_or_default();
    let agent = Agent::parse(raw).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown agent {raw:?}: use claude, codex, gemini or opencode"
        ))
    })?;
    if req.cmd.is_some() {
        return Err(ApiError::invalid(
            "cmd and agent are mutually exclusive: an agent session runs the agent's own TUI",
        ));
    }
    if !req.env.is_empty() {
        return Err(ApiError::invalid(
            "env cannot be set for an agent session: it is configured like a task",
        ));
    }
    let (cols, rows) = (req.cols.unwrap_or(80), req.rows.unwrap_or(24));
    terminal::check_size(cols, rows)?;
    let cwd = crate::tasks::workspace_path(req.cwd.as_deref())?;
    let id = new_id();
    let launch = Launch {
        agent,
        model: req.model.filter(|m| !m.trim().is_empty()),
        cwd,
        state_dir: format!("{HOME}/.berth/sessions/{id}"),
        resume: None,
        task_id: None,
        name: req.name,
        cols,
        rows,
    };
    start(state, &w, &id, launch).await
}

/// `POST /tasks/{task}/attach`: takes a task over in an interactive session, on behalf of
/// `actor` (audited as `task.attach`; `req` is `Err` for a malformed request).
pub async fn attach_task(
    state: &Arc<AppState>,
    actor: &Actor,
    task_id: &str,
    req: ApiResult<api::AttachTask>,
) -> ApiResult<api::Session> {
    let result = match (crate::tasks::parse_id(task_id), req) {
        (Ok(id), Ok(r)) => attach_unaudited(state, &id, r).await,
        (_, Err(e)) | (Err(e), _) => Err(e),
    };
    audit(&state.store, actor, "task.attach", task_id, &result).await;
    result
}

async fn attach_unaudited(
    state: &Arc<AppState>,
    task_id: &TaskId,
    req: api::AttachTask,
) -> ApiResult<api::Session> {
    let lock = task_lock(task_id);
    let _held = lock.lock().await;
    let task = crate::tasks::get(state, task_id).await?;
    let (cols, rows) = (req.cols.unwrap_or(80), req.rows.unwrap_or(24));
    terminal::check_size(cols, rows)?;
    takeover_allowed(&task)?;
    refuse_while_interactive(state, &task).await?;
    let Some(w) = state.store.find_workspace_by_id(&task.workspace_id).await? else {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("the workspace of task {task_id} was removed"),
        ));
    };
    terminal::ensure_running(&w)?;
    let cwd = crate::tasks::task_dir(&task);
    let launch = Launch {
        agent: task.agent,
        model: task.model.clone(),
        cwd,
        state_dir: format!("{HOME}/.berth/tasks/{}", task.id),
        resume: task.agent_session_id.clone(),
        task_id: Some(task.id.clone()),
        name: Some(req.name.unwrap_or_else(|| format!("task-{}", task.id))),
        cols,
        rows,
    };
    start(state, &w, &new_id(), launch).await
}

/// Whether a task's state lets it be taken over: its turn is over, it is not final, and its
/// agent reported a conversation to resume.
fn takeover_allowed(task: &Task) -> ApiResult<()> {
    if !task.state.is_turn_over() {
        return Err(ApiError::new(
            ErrorCode::TaskTurnRunning,
            format!(
                "task {} is {}: a headless turn is running; attach once it is over (two writers on one conversation corrupt it)",
                task.id, task.state
            ),
        ));
    }
    if task.state.is_final() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("task {} is {}; it cannot be continued", task.id, task.state),
        ));
    }
    if task.agent == Agent::Codex {
        // Seen with codex 0.169: after an interactive `codex resume` of a thread (quit or
        // killed), `codex exec resume` of it fails with "thread … already has an active writer",
        // so the task's next turn would fail and end the task.
        return Err(ApiError::new(
            ErrorCode::TakeoverUnsupported,
            format!(
                "task {} runs codex, whose thread cannot go back to headless turns after an interactive session (codex refuses: \"already has an active writer\"); continue it with `berth task send {}`",
                task.id, task.id
            ),
        ));
    }
    if task.agent_session_id.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "task {} cannot be continued: its agent never reported a session id to resume",
                task.id
            ),
        ));
    }
    Ok(())
}

/// Refuses (409 `task_interactive`) while an interactive session has the task. A session the
/// daemon says has ended does not count (its key is ended on the way).
pub async fn refuse_while_interactive(state: &AppState, task: &Task) -> ApiResult<()> {
    let Some(k) = state.store.live_session_key_of_task(&task.id).await? else {
        return Ok(());
    };
    if let Some(session) = &k.session_id {
        let answer = state.daemon(&task.workspace_id).session_get(session).await;
        if session_liveness(&k, &answer) == SessionLiveness::Ended {
            end_key(state, &k.id).await;
            return Ok(());
        }
    }
    let name = k.session_name.as_deref().unwrap_or("(starting)");
    Err(ApiError::new(
        ErrorCode::TaskInteractive,
        format!(
            "task {} is taken over by the interactive session {name} in {}; exit the agent there or remove the session (`berth session rm {} {name}`) first",
            task.id, k.workspace, k.workspace
        ),
    ))
}

/// The lock that keeps a take-over and a follow-up of one task from starting together.
pub fn task_lock(task_id: &TaskId) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<TaskId, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = berth_domain::sync::lock(LOCKS.get_or_init(Default::default));
    // Locks nobody holds or waits for are dropped as the map grows.
    if locks.len() > 1000 {
        locks.retain(|_, l| Arc::strong_count(l) > 1);
    }
    locks.entry(task_id.clone()).or_default().clone()
}

/// Creates the key, writes the agent's config files, starts the session and binds the key
/// to it. Any failure ends the key.
async fn start(
    state: &Arc<AppState>,
    w: &Workspace,
    id: &str,
    launch: Launch,
) -> ApiResult<api::Session> {
    crate::tasks::require_provider(state, launch.agent)?;
    let key = generate_token();
    state
        .store
        .insert_session_key(&NewSessionKey {
            id: id.to_owned(),
            key_hash: berth_gateway::hash_key(key.expose()),
            workspace_id: w.id.clone(),
            workspace: w.qualified_name(),
            agent: launch.agent,
            task_id: launch.task_id.clone(),
        })
        .await?;
    lifecycle::serve_channel(state, &w.id).await;
    let client = state.daemon(&w.id);
    let spec = SessionSpec {
        agent: launch.agent,
        model: launch.model.clone(),
        cwd: launch.cwd.clone().into(),
        home: HOME.into(),
        state_dir: launch.state_dir.clone().into(),
        gateway_url: crate::tasks::gateway_url(launch.agent),
        virtual_key: key.expose().to_owned(),
        resume: launch.resume.clone(),
        mcp_servers: w.mcp_servers.clone(),
    };
    let started = spawn(&client, &spec, &launch).await;
    let info = match started {
        Ok(info) => info,
        Err(e) => {
            end_key(state, id).await;
            return Err(e);
        }
    };
    state
        .store
        .bind_session_key(id, &info.id, &info.name, &info.created_at)
        .await?;
    tracing::info!(session = id, workspace = %w.qualified_name(), name = %info.name, agent = %launch.agent, "agent session started");
    let mut out = terminal::session_view(info);
    out.agent = Some(launch.agent.as_str().to_owned());
    out.agent_session = Some(id.to_owned());
    out.task = launch.task_id.map(|t| t.to_string());
    Ok(out)
}

/// Writes the driver's files and starts the terminal session.
async fn spawn(
    client: &DaemonClient,
    spec: &SessionSpec,
    launch: &Launch,
) -> ApiResult<SessionInfo> {
    let inv = berth_agents::driver(spec.agent).interactive(spec);
    let tmp = spec.state_dir.join("tmp");
    run_private(
        client,
        r#"umask 077 && mkdir -p -- "$1""#,
        &tmp.display().to_string(),
        None,
    )
    .await?;
    for (path, content) in &inv.files {
        run_private(
            client,
            r#"umask 077 && mkdir -p -- "$(dirname -- "$1")" && printf '%s' "$BERTH_FILE" > "$1""#,
            &path.display().to_string(),
            Some(content),
        )
        .await?;
    }
    let name = match &launch.name {
        Some(n) => n.clone(),
        None => free_name(client, spec.agent.as_str()).await?,
    };
    let mut argv = vec![inv.program];
    argv.extend(inv.args);
    Ok(client
        .session_create(berth_daemon::SessionCreate {
            name: Some(name),
            argv: Some(argv),
            cols: launch.cols,
            rows: launch.rows,
            env: inv.env,
            cwd: Some(inv.cwd.display().to_string()),
        })
        .await?)
}

/// Runs `script` (as the workspace user, files private) with `$1 = arg` and the optional
/// `$BERTH_FILE`; a non-zero exit is an error naming the path.
async fn run_private(
    client: &DaemonClient,
    script: &str,
    arg: &str,
    content: Option<&str>,
) -> ApiResult<()> {
    let req = berth_daemon::ExecRequest {
        argv: ["/bin/sh", "-c", script, "sh", arg]
            .map(String::from)
            .to_vec(),
        env: content
            .map(|c| vec![("BERTH_FILE".to_owned(), c.to_owned())])
            .unwrap_or_default(),
        cwd: Some(HOME.to_owned()),
        stdin: false,
    };
    let out = client.exec_collect(req, 4096).await?;
    if out.exit_code != 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "cannot prepare the agent's files ({arg}): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// The agent's name if no session has it, else `<agent>-2`, `<agent>-3`, ….
async fn free_name(client: &DaemonClient, agent: &str) -> ApiResult<String> {
    let taken: Vec<String> = client
        .session_list()
        .await?
        .into_iter()
        .filter(|s| s.state == SessionState::Running)
        .map(|s| s.name)
        .collect();
    let free = std::iter::once(agent.to_owned())
        .chain((2u32..).map(|i| format!("{agent}-{i}")))
        .find(|n| !taken.contains(n))
        .unwrap_or_else(|| agent.to_owned());
    Ok(free)
}

/// The session route's `DELETE`: the key of an agent session dies before the session does,
/// whatever the daemon then says or does.
pub async fn session_removed(state: &AppState, ws: &WorkspaceId, session: &str) {
    match state.store.end_session_keys_of_session(ws, session).await {
        Ok(ended) if !ended.is_empty() => {
            tracing::info!(?ended, "agent session removed; its key is dead")
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot end the key of a removed session"),
    }
}

async fn end_key(state: &AppState, id: &str) {
    if let Err(e) = state.store.end_session_key(id).await {
        tracing::error!(session = id, error = %e, "cannot end an agent session's key");
    }
}

/// Ends, every [`SWEEP_EVERY`], the keys whose session is gone (see the module doc).
pub fn spawn_sweeper(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures: HashMap<WorkspaceId, u32> = HashMap::new();
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            sweep(&state, &mut failures).await;
        }
    })
}

/// One pass of the sweeper.
async fn sweep(state: &AppState, failures: &mut HashMap<WorkspaceId, u32>) {
    let keys = match state.store.live_session_keys().await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list agent session keys");
            return;
        }
    };
    let mut by_ws: HashMap<WorkspaceId, Vec<SessionKey>> = HashMap::new();
    for k in keys {
        by_ws.entry(k.workspace_id.clone()).or_default().push(k);
    }
    failures.retain(|ws, _| by_ws.contains_key(ws));
    for (ws, keys) in by_ws {
        let running = matches!(
            state.store.find_workspace_by_id(&ws).await,
            Ok(Some(w)) if w.state == WorkspaceState::Running
        );
        if !running {
            // Its sessions died with it (or will): no key of it lives on, not even a starting one.
            end_all(state, &keys, "its workspace is not running").await;
            failures.remove(&ws);
            continue;
        }
        let client = state.daemon(&ws);
        let listed = tokio::time::timeout(Duration::from_secs(10), client.session_list())
            .await
            .unwrap_or_else(|_| Err(DaemonError::Protocol("timed out".into())));
        let list = match listed {
            Ok(list) => {
                failures.remove(&ws);
                list
            }
            Err(e) => {
                let n = failures.entry(ws.clone()).or_default();
                *n += 1;
                tracing::debug!(workspace = %ws, error = %e, failures = *n, "cannot list sessions");
                if *n >= SWEEP_FAILURES {
                    end_all(state, &keys, "its workspace's daemon does not answer").await;
                }
                continue;
            }
        };
        for k in keys.iter().filter(|k| !still_running(k, &list)) {
            tracing::info!(session = %k.id, workspace = %k.workspace, "agent session over; its key is dead");
            end_key(state, &k.id).await;
        }
    }
}

async fn end_all(state: &AppState, keys: &[SessionKey], why: &str) {
    for k in keys {
        tracing::info!(session = %k.id, workspace = %k.workspace, "the agent session's key is dead: {why}");
        end_key(state, &k.id).await;
    }
}

/// Whether the daemon's list shows `k`'s session running (a key still waiting for its session
/// to start counts for [`START_GRACE_SECS`]).
fn still_running(k: &SessionKey, list: &[SessionInfo]) -> bool {
    let Some(id) = &k.session_id else {
        return age_secs(&k.created_at).is_some_and(|a| a < START_GRACE_SECS);
    };
    let answer = list
        .iter()
        .find(|s| &s.id == id)
        .cloned()
        .ok_or_else(|| DaemonError::NotFound(id.clone()));
    session_liveness(k, &answer) == SessionLiveness::Running
}

fn age_secs(t: &berth_domain::Timestamp) -> Option<i64> {
    let at = t.instant()?;
    Some((time::OffsetDateTime::now_utc() - at).whole_seconds())
}

/// A new agent session id, `as_` and 16 hex digits.
fn new_id() -> String {
    let token = generate_token();
    let hex: String = token
        .expose()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    format!("as_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_domain::TaskState;

    fn key(session: Option<&str>, created_at: &str) -> SessionKey {
        SessionKey {
            id: "as_1".into(),
            workspace_id: WorkspaceId::generate(),
            workspace: "acme/web".into(),
            agent: Agent::Claude,
            task_id: None,
            session_id: session.map(str::to_owned),
            session_name: session.map(|_| "claude".to_owned()),
            session_created_at: session.map(|_| berth_domain::Timestamp::from_stored("t0")),
            live: true,
            created_at: berth_domain::Timestamp::from_stored(created_at),
        }
    }

    fn info(id: &str, state: SessionState) -> SessionInfo {
        SessionInfo {
            id: id.into(),
            name: "claude".into(),
            argv: vec!["claude".into()],
            pid: 1,
            state,
            exit_code: None,
            created_at: berth_domain::Timestamp::from_stored("t0"),
            attached: 0,
            cols: 80,
            rows: 24,
            scrollback_bytes: 0,
        }
    }

    #[test]
    fn the_sweeper_keeps_only_keys_of_running_sessions() {
        let k = key(Some("ab12"), &berth_domain::Timestamp::now());
        assert!(still_running(&k, &[info("ab12", SessionState::Running)]));
        assert!(!still_running(&k, &[info("ab12", SessionState::Exited)]));
        assert!(!still_running(&k, &[info("cd34", SessionState::Running)]));
        assert!(!still_running(&k, &[]));
        // A key whose session is still starting: kept a while, then ended.
        assert!(still_running(
            &key(None, &berth_domain::Timestamp::now()),
            &[]
        ));
        assert!(!still_running(&key(None, "2020-01-01T00:00:00Z"), &[]));
        assert!(!still_running(&key(None, "not a time"), &[]));
    }

    fn task(state: TaskState, session: Option<&str>) -> Task {
        Task {
            id: TaskId::from_stored("tk_1".into()),
            workspace_id: WorkspaceId::generate(),
            workspace: "acme/web".into(),
            agent: Agent::Claude,
            state,
            reason: None,
            model: None,
            dir: "/home/agent".into(),
            worktree: None,
            prompt: "hi".into(),
            last_seq: 3,
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            cost_usd: None,
            last_message: None,
            agent_session_id: session.map(str::to_owned),
            created_at: berth_domain::Timestamp::now(),
            updated_at: berth_domain::Timestamp::now(),
            approval: Default::default(),
        }
    }

    #[test]
    fn only_a_task_at_rest_with_a_conversation_is_taken_over() {
        let code = |t: Task| takeover_allowed(&t).err().map(|e| e.code);
        let codex = Task {
            agent: Agent::Codex,
            ..task(TaskState::Completed, Some("s"))
        };
        assert_eq!(code(codex), Some(ErrorCode::TakeoverUnsupported));
        assert_eq!(code(task(TaskState::Completed, Some("s"))), None);
        assert_eq!(code(task(TaskState::Interrupted, Some("s"))), None);
        for running in [
            TaskState::Queued,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Waiting,
        ] {
            assert_eq!(
                code(task(running, Some("s"))),
                Some(ErrorCode::TaskTurnRunning),
                "{running}"
            );
        }
        assert_eq!(
            code(task(TaskState::Cancelled, Some("s"))),
            Some(ErrorCode::InvalidState)
        );
        assert_eq!(
            code(task(TaskState::Completed, None)),
            Some(ErrorCode::InvalidState)
        );
    }

    /// The sweeper against a real store: a stopped workspace's keys end at once; a running
    /// workspace whose daemon does not answer keeps them for [`SWEEP_FAILURES`] sweeps.
    #[tokio::test]
    async fn the_sweeper_ends_keys_of_stopped_or_silent_workspaces() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _fake) = crate::test_support::route_state(dir.path()).await;
        let tenant = state
            .store
            .ensure_tenant(&berth_domain::Name::parse("acme").unwrap())
            .await
            .unwrap();
        let mut ids = Vec::new();
        for name in ["stopped", "silent"] {
            let id = WorkspaceId::generate();
            state
                .store
                .insert_workspace(&berth_store::NewWorkspace {
                    id: id.clone(),
                    tenant_id: tenant.id.clone(),
                    name: berth_domain::Name::parse(name).unwrap(),
                    image: "img".into(),
                    limits: Default::default(),
                    network: "none".into(),
                    volume: format!("v-{name}"),
                    mcp_servers: Vec::new(),
                })
                .await
                .unwrap();
            state
                .store
                .insert_session_key(&NewSessionKey {
                    id: format!("as_{name}"),
                    key_hash: format!("h-{name}"),
                    workspace_id: id.clone(),
                    workspace: format!("acme/{name}"),
                    agent: Agent::Claude,
                    task_id: None,
                })
                .await
                .unwrap();
            ids.push(id);
        }
        state
            .store
            .set_state(&ids[0], WorkspaceState::Stopped, None)
            .await
            .unwrap();
        state
            .store
            .set_state(&ids[1], WorkspaceState::Running, None)
            .await
            .unwrap();
        let live = |id: &'static str| {
            let store = state.store.clone();
            async move { store.find_session_key(id).await.unwrap().unwrap().live }
        };
        let mut failures = HashMap::new();
        sweep(&state, &mut failures).await;
        assert!(!live("as_stopped").await, "a stopped workspace's key ends");
        assert!(live("as_silent").await, "one unanswered list is no verdict");
        for _ in 1..SWEEP_FAILURES {
            sweep(&state, &mut failures).await;
        }
        assert!(
            !live("as_silent").await,
            "a daemon silent for several sweeps"
        );
    }

    #[test]
    fn ids_and_sizes() {
        let id = new_id();
        assert!(id.starts_with("as_") && id.len() == 19, "{id}");
        assert_ne!(new_id(), id);
        assert!(terminal::check_size(80, 24).is_ok());
        assert!(terminal::check_size(0, 24).is_err());
        assert!(terminal::check_size(80, 1001).is_err());
    }
}
