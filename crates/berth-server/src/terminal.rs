//! Processes in a workspace as a service: buffered exec, terminal sessions, and the audit of
//! every exec, session create/remove and attach (the WebSocket relays in `routes::terminal`
//! report their outcome here). Everything goes through the workspace daemon.

use berth_api as api;
use berth_daemon::{DaemonClient, ExecEvent, SessionInfo, SessionState};
use berth_domain::{ErrorCode, WorkspaceState};
use berth_store::Workspace;

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle;
use crate::state::AppState;

/// Output kept per stream by the buffered exec.
const EXEC_MAX_BYTES: usize = 4 << 20;

/// The terminal sizes a session takes, in columns and rows (also written into the OpenAPI
/// document).
pub const TERMINAL_MIN: u16 = 1;
pub const TERMINAL_MAX: u16 = 1000;

/// Resolves a workspace that must be running, and its daemon client.
pub async fn running(state: &AppState, ws: &str) -> ApiResult<(Workspace, DaemonClient)> {
    let w = lifecycle::resolve(state, ws).await?;
    ensure_running(&w)?;
    let client = state.daemon(&w.id);
    Ok((w, client))
}

/// Refuses a workspace that is not running, saying how to start it.
pub fn ensure_running(w: &Workspace) -> ApiResult<()> {
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
    Ok(())
}

/// A daemon session as the API shows it (the agent fields are the agent sessions service's).
pub fn session_view(s: SessionInfo) -> api::Session {
    api::Session {
        id: s.id,
        name: s.name,
        command: s.argv,
        state: match s.state {
            SessionState::Running => "running",
            SessionState::Exited => "exited",
            SessionState::Ended => "ended",
        }
        .to_owned(),
        exit_code: s.exit_code,
        created_at: s.created_at,
        attached: s.attached,
        cols: s.cols,
        rows: s.rows,
        scrollback_bytes: s.scrollback_bytes,
        agent: None,
        agent_session: None,
        task: None,
    }
}

/// The audit target: `tenant/name[:session]` when the workspace resolves, else what was typed.
async fn audit_target(state: &AppState, ws: &str, session: Option<&str>) -> String {
    let base = match lifecycle::resolve(state, ws).await {
        Ok(w) => w.qualified_name(),
        Err(_) => ws.to_owned(),
    };
    match session {
        Some(s) => format!("{base}:{s}"),
        None => base,
    }
}

pub fn check_cmd(cmd: &[String]) -> ApiResult<()> {
    if cmd.is_empty() || cmd[0].is_empty() {
        return Err(ApiError::invalid("cmd must name a program"));
    }
    Ok(())
}

pub fn check_size(cols: u16, rows: u16) -> ApiResult<()> {
    let range = TERMINAL_MIN..=TERMINAL_MAX;
    if !range.contains(&cols) || !range.contains(&rows) {
        return Err(ApiError::invalid(format!(
            "terminal size {cols}x{rows} is out of range ({TERMINAL_MIN}..={TERMINAL_MAX})"
        )));
    }
    Ok(())
}

/// Runs a command to completion and returns its output (each stream capped); audited as
/// `workspace.exec`, malformed requests (`req` is `Err`) included.
pub async fn exec(
    state: &AppState,
    actor: &Actor,
    ws: &str,
    req: ApiResult<api::ExecRequest>,
) -> ApiResult<api::ExecResult> {
    let result = match req {
        Ok(req) => exec_unaudited(state, ws, req).await,
        Err(e) => Err(e),
    };
    let target = audit_target(state, ws, None).await;
    audit(&state.store, actor, "workspace.exec", &target, &result).await;
    result
}

/// Records a streamed exec (the WebSocket relay) once it ended.
pub async fn exec_streamed<T>(
    state: &AppState,
    actor: &Actor,
    w: &Workspace,
    result: &ApiResult<T>,
) {
    audit(
        &state.store,
        actor,
        "workspace.exec",
        &w.qualified_name(),
        result,
    )
    .await;
}

async fn exec_unaudited(
    state: &AppState,
    ws: &str,
    req: api::ExecRequest,
) -> ApiResult<api::ExecResult> {
    check_cmd(&req.cmd)?;
    let (_, client) = running(state, ws).await?;
    let dreq = berth_daemon::ExecRequest {
        argv: req.cmd,
        env: req.env.into_iter().collect(),
        cwd: req.cwd,
        stdin: req.stdin.is_some(),
    };
    let mut stream = client.exec(dreq).await?;
    if let Some(input) = req.stdin {
        stream.write_stdin(input.as_bytes()).await?;
        stream.close_stdin().await?;
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut truncated = false;
    let mut keep = |buf: &mut Vec<u8>, data: &[u8]| {
        let room = EXEC_MAX_BYTES.saturating_sub(buf.len());
        if data.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&data[..data.len().min(room)]);
    };
    let exit_code = loop {
        match stream.next().await? {
            Some(ExecEvent::Stdout(d)) => keep(&mut out, &d),
            Some(ExecEvent::Stderr(d)) => keep(&mut err, &d),
            Some(ExecEvent::Exit(code)) => break code,
            None => {
                return Err(ApiError::new(
                    ErrorCode::DaemonUnavailable,
                    "the workspace daemon closed the exec before the process exited",
                ))
            }
        }
    };
    Ok(api::ExecResult {
        exit_code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        truncated,
    })
}

/// Creates a terminal session (`None`: the defaults); audited as `session.create`.
pub async fn create_session(
    state: &AppState,
    actor: &Actor,
    ws: &str,
    req: ApiResult<api::CreateSession>,
) -> ApiResult<SessionInfo> {
    let result = async {
        let req = req?;
        if let Some(cmd) = &req.cmd {
            check_cmd(cmd)?;
        }
        let (cols, rows) = (req.cols.unwrap_or(80), req.rows.unwrap_or(24));
        check_size(cols, rows)?;
        let (_, client) = running(state, ws).await?;
        let s = client
            .session_create(berth_daemon::SessionCreate {
                name: req.name,
                argv: req.cmd,
                cols,
                rows,
                env: req.env.into_iter().collect(),
                cwd: req.cwd,
            })
            .await?;
        Ok::<_, ApiError>(s)
    }
    .await;
    let name = result.as_ref().ok().map(|s| s.name.clone());
    let target = audit_target(state, ws, name.as_deref()).await;
    audit(&state.store, actor, "session.create", &target, &result).await;
    result
}

/// Kills (if running) and removes a session; audited as `session.remove`.
pub async fn remove_session(
    state: &AppState,
    actor: &Actor,
    ws: &str,
    session: &str,
) -> ApiResult<()> {
    let result = async {
        let (w, client) = running(state, ws).await?;
        let s = client.session_get(session).await?;
        // An agent session's key dies before its process does.
        crate::agent_sessions::session_removed(state, &w.id, &s.id).await;
        if s.state == SessionState::Running {
            // Returns once the process is gone.
            client.session_kill(&s.id).await?;
        }
        client.session_remove(&s.id).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    let target = audit_target(state, ws, Some(session)).await;
    audit(&state.store, actor, "session.remove", &target, &result).await;
    result
}

/// Attaches to a session (before the WebSocket upgrade, so a missing session is a clean 404);
/// audited as `session.attach`.
pub async fn attach(
    state: &AppState,
    actor: &Actor,
    ws: &str,
    session: &str,
    (cols, rows): (u16, u16),
) -> ApiResult<berth_daemon::AttachStream> {
    check_size(cols, rows)?;
    let (w, client) = running(state, ws).await?;
    let stream = client.session_attach(session, cols, rows).await?;
    let target = format!("{}:{}", w.qualified_name(), stream.info().name);
    audit(
        &state.store,
        actor,
        "session.attach",
        &target,
        &Ok::<(), ApiError>(()),
    )
    .await;
    Ok(stream)
}

/// Whether the caller only watches sessions (a viewer): its input is dropped.
pub fn read_only(actor: &Actor) -> bool {
    !actor.role.allows(berth_domain::Permission::Operate)
}
