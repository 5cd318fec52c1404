//! Processes inside a workspace: one-shot exec (buffered or over a WebSocket), persistent
//! terminal sessions, and attaching to them over a WebSocket. Everything goes through the
//! workspace daemon; the server keeps no terminal state of its own, so sessions outlive it.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use berth_api as api;
use berth_daemon::{AttachEvent, DaemonClient, ExecEvent};
use berth_domain::ErrorCode;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

use super::{parse_body, Query};
use crate::auth::Actor;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::terminal;

pub use crate::terminal::{TERMINAL_MAX, TERMINAL_MIN};

/// A WebSocket route called without a valid handshake: refused in JSON (400), after the
/// workspace was looked up, so a missing workspace is a 404 whatever the headers.
fn not_a_websocket(rej: WebSocketUpgradeRejection) -> ApiError {
    ApiError::invalid(format!(
        "this route is a WebSocket: send a GET with `Connection: upgrade` and `Upgrade: websocket` ({})",
        rej.body_text()
    ))
}

/// Runs a command in a workspace and answers its output and exit code.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/exec", tag = "terminal", request_body = api::ExecRequest,
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = api::ExecResult), (status = 400, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody), (status = 503, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn exec(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::ExecResult>> {
    let req = parse_body::<api::ExecRequest>(&body);
    terminal::exec(&state, &actor, &ws, req)
        .await
        .map(axum::Json)
}

/// Exec over a WebSocket (streaming, with stdin). See [`api::ExecStart`] for the protocol.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/exec/ws", tag = "terminal",
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 101, description = "WebSocket; first client message is an ExecStart"),
        (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn exec_ws(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let (w, client) = terminal::running(&state, &ws).await?;
    let upgrade = upgrade.map_err(not_a_websocket)?;
    Ok(upgrade
        .protocols([crate::auth::WS_BEARER_PROTOCOL])
        .on_upgrade(move |socket| async move {
            let result = relay_exec(socket, client).await;
            terminal::exec_streamed(&state, &actor, &w, &result).await;
        }))
}

async fn relay_exec(mut socket: WebSocket, client: DaemonClient) -> ApiResult<()> {
    let stream = match start_exec(&mut socket, &client).await {
        Ok(s) => s,
        Err(StartFailed::Closed(err)) => return Err(err),
        Err(StartFailed::Refused(err)) => {
            send_error(&mut socket, &err).await;
            return Err(err);
        }
    };
    let (input, output) = stream.split();
    let (tx, rx) = socket.split();
    let pump_in = pump_stdin(rx, input);
    tokio::pin!(pump_in);
    let res = tokio::select! {
        res = pump_output(output, tx) => res,
        _input = &mut pump_in => {
            // The client went away: dropping everything detaches and the daemon kills the process.
            return Ok(());
        }
    };
    // Lingering close: keep reading until the client closes too. Dropping the connection while
    // something the client sent (its stdin EOF, its Close) is still unread makes the kernel
    // answer with a TCP reset, and a client that has not yet read the exit message then loses
    // it (seen as "printed the output but exited non-zero" on a busy machine).
    let _ = tokio::time::timeout(LINGER, &mut pump_in).await;
    res
}

/// Why an exec over a WebSocket did not start.
enum StartFailed {
    /// The client went away before asking: nobody to tell.
    Closed(ApiError),
    /// The request was refused: the client is told.
    Refused(ApiError),
}

/// Reads the client's [`api::ExecStart`] and starts the command in the workspace.
async fn start_exec(
    socket: &mut WebSocket,
    client: &DaemonClient,
) -> Result<berth_daemon::ExecStream, StartFailed> {
    let start: api::ExecStart = loop {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                Ok(s) => break s,
                Err(e) => {
                    return Err(StartFailed::Refused(ApiError::invalid(format!(
                        "the first message must be an ExecStart: {e}"
                    ))))
                }
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => {
                return Err(StartFailed::Closed(ApiError::invalid(
                    "client closed before sending ExecStart",
                )))
            }
        }
    };
    terminal::check_cmd(&start.cmd).map_err(StartFailed::Refused)?;
    let req = berth_daemon::ExecRequest {
        argv: start.cmd,
        env: start.env.into_iter().collect(),
        cwd: start.cwd,
        stdin: true,
    };
    client
        .exec(req)
        .await
        .map_err(|e| StartFailed::Refused(ApiError::from(e)))
}

/// Client → process stdin. Ends only when the client closes or goes away: a process that
/// exited (and so no longer takes stdin) must not end the relay before its exit status is
/// forwarded, so input it cannot take any more is read and dropped. Answers the input half,
/// to be kept alive until the output ends: dropping both halves detaches, and the daemon then
/// kills the process.
async fn pump_stdin(
    mut rx: SplitStream<WebSocket>,
    mut input: berth_daemon::ExecInput,
) -> berth_daemon::ExecInput {
    let mut stdin_open = true;
    while let Some(Ok(msg)) = rx.next().await {
        match msg {
            Message::Binary(b) if stdin_open => {
                stdin_open = input.write_stdin(&b).await.is_ok();
            }
            Message::Text(t) => {
                if let Ok(api::WsControl::Eof) = serde_json::from_str(t.as_str()) {
                    stdin_open = false;
                    let _ = input.close_stdin().await;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    input
}

/// Process output → client, tagged stdout/stderr, then its exit status. A stream that breaks
/// before the exit status is an error, told to the client rather than an invented status.
async fn pump_output(
    mut output: berth_daemon::ExecOutputStream,
    mut tx: SplitSink<WebSocket, Message>,
) -> ApiResult<()> {
    loop {
        let (tag, d) = match output.next().await {
            Ok(Some(ExecEvent::Stdout(d))) => (api::EXEC_STDOUT, d),
            Ok(Some(ExecEvent::Stderr(d))) => (api::EXEC_STDERR, d),
            Ok(Some(ExecEvent::Exit(code))) => {
                let _ = tx.send(control(&api::WsControl::Exit { code })).await;
                let _ = tx.close().await;
                return Ok(());
            }
            res @ (Ok(None) | Err(_)) => {
                let why = match res {
                    Err(e) => e.to_string(),
                    Ok(_) => "the stream ended".to_owned(),
                };
                let err = ApiError::new(
                    ErrorCode::DaemonUnavailable,
                    format!("lost the exit status of the command: the workspace daemon's exec stream broke ({why})"),
                );
                let _ = tx
                    .send(control(&api::WsControl::Error {
                        code: err.code.as_str().into(),
                        message: err.message.clone(),
                    }))
                    .await;
                return Err(err);
            }
        };
        let mut m = Vec::with_capacity(d.len() + 1);
        m.push(tag);
        m.extend_from_slice(&d);
        if tx.send(Message::Binary(m.into())).await.is_err() {
            return Ok(());
        }
    }
}

/// How long a finished WebSocket waits for the client to close its side.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads (and discards) what the client still sends until it closes, at most [`LINGER`].
async fn linger(socket: &mut WebSocket) {
    let drain = async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

fn control(c: &api::WsControl) -> Message {
    Message::Text(serde_json::to_string(c).unwrap_or_default().into())
}

async fn send_error(socket: &mut WebSocket, err: &ApiError) {
    let _ = socket
        .send(control(&api::WsControl::Error {
            code: err.code.as_str().into(),
            message: err.message.clone(),
        }))
        .await;
    let _ = socket.close().await;
    linger(socket).await;
}

/// A workspace's terminal sessions.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/sessions", tag = "terminal",
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 200, body = [api::Session]), (status = 409, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_sessions(
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
) -> ApiResult<axum::Json<Vec<api::Session>>> {
    let (_, client) = terminal::running(&state, &ws).await?;
    let sessions = client.session_list().await?;
    Ok(axum::Json(
        sessions.into_iter().map(terminal::session_view).collect(),
    ))
}

/// Creates a terminal session: a command, a login shell or an agent's TUI.
///
/// Creates a session: a command (default a login shell), or with `agent` that agent's own TUI
/// configured like a task (see [`api::CreateSession::agent`]).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/sessions", tag = "terminal", request_body = api::CreateSession,
    params(("ws" = String, Path, description = "workspace reference")),
    responses((status = 201, body = api::Session), (status = 400, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody),
        (status = 424, description = "`provider_unconfigured`: an agent session for a provider with no upstream key on this server", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_session(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(ws): Path<String>,
    body: super::JsonBody,
) -> ApiResult<impl IntoResponse> {
    // An agent's TUI is the agent sessions service's (audited there).
    if let Ok(req @ api::CreateSession { agent: Some(_), .. }) = parse_body(&body) {
        let s = crate::agent_sessions::create(&state, &actor, &ws, req).await?;
        return Ok((StatusCode::CREATED, axum::Json(s)));
    }
    let req = super::parse_optional_body::<api::CreateSession>(&body);
    let s = terminal::create_session(&state, &actor, &ws, req).await?;
    Ok((StatusCode::CREATED, axum::Json(terminal::session_view(s))))
}

/// One terminal session.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/sessions/{session}", tag = "terminal",
    params(("ws" = String, Path, description = "workspace reference"),
        ("session" = String, Path, description = "session id or name")),
    responses((status = 200, body = api::Session), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_session(
    State(state): State<Arc<AppState>>,
    Path((ws, session)): Path<(String, String)>,
) -> ApiResult<axum::Json<api::Session>> {
    let (_, client) = terminal::running(&state, &ws).await?;
    Ok(axum::Json(terminal::session_view(
        client.session_get(&session).await?,
    )))
}

/// Ends a terminal session.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/sessions/{session}", tag = "terminal",
    params(("ws" = String, Path, description = "workspace reference"),
        ("session" = String, Path, description = "session id or name")),
    responses((status = 204), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_session(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((ws, session)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    terminal::remove_session(&state, &actor, &ws, &session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A terminal session's recent output.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/sessions/{session}/scrollback", tag = "terminal",
    params(("ws" = String, Path, description = "workspace reference"),
        ("session" = String, Path, description = "session id or name")),
    responses((status = 200, content_type = "application/octet-stream", description = "the raw scrollback bytes"),
        (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn scrollback(
    State(state): State<Arc<AppState>>,
    Path((ws, session)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (_, client) = terminal::running(&state, &ws).await?;
    let bytes = client.session_capture(&session).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct AttachQuery {
    pub cols: Option<u16>,
    pub rows: Option<u16>,
}

/// Attaches to a terminal session (WebSocket).
///
/// Attach to a session: binary messages carry terminal bytes both ways; the client sends
/// `{"type":"resize",…}` text messages; the server ends with `{"type":"exit","code":N}` when the
/// session's process exits. Closing the socket detaches; the session keeps running. A viewer's
/// attach is read-only: its input and resizes are dropped.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/sessions/{session}/attach", operation_id = "attach_session", tag = "terminal",
    params(("ws" = String, Path, description = "workspace reference"),
        ("session" = String, Path, description = "session id or name"), AttachQuery),
    responses((status = 101, description = "WebSocket"), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn attach(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((ws, session)): Path<(String, String)>,
    Query(q): Query<AttachQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let size = (q.cols.unwrap_or(80), q.rows.unwrap_or(24));
    // The size is checked before the upgrade is: a bad one is a clean 400.
    terminal::check_size(size.0, size.1)?;
    // The workspace first: a missing one is a 404 whatever the headers.
    terminal::running(&state, &ws).await?;
    let upgrade = upgrade.map_err(not_a_websocket)?;
    let stream = terminal::attach(&state, &actor, &ws, &session, size).await?;
    // A viewer watches: what it sends (keys, resizes) is dropped.
    let read_only = terminal::read_only(&actor);
    Ok(upgrade
        .protocols([crate::auth::WS_BEARER_PROTOCOL])
        .on_upgrade(move |socket| relay_attach(socket, stream, read_only)))
}

async fn relay_attach(socket: WebSocket, stream: berth_daemon::AttachStream, read_only: bool) {
    let (mut input, mut output) = stream.split();
    let (mut tx, mut rx) = socket.split();
    let pump_in = async move {
        while let Some(Ok(msg)) = rx.next().await {
            match msg {
                Message::Close(_) => break,
                _ if read_only => {}
                Message::Binary(b) if input.send_input(&b).await.is_err() => {
                    break;
                }
                Message::Text(t) => {
                    if let Ok(api::WsControl::Resize { cols, rows }) =
                        serde_json::from_str(t.as_str())
                    {
                        if terminal::check_size(cols, rows).is_ok()
                            && input.resize(cols, rows).await.is_err()
                        {
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        let _ = input.detach().await;
    };
    let pump_out = async move {
        loop {
            match output.next().await {
                Ok(Some(AttachEvent::Output(d))) => {
                    if tx.send(Message::Binary(d.to_vec().into())).await.is_err() {
                        return;
                    }
                }
                Ok(Some(AttachEvent::Exit(code))) => {
                    let _ = tx.send(control(&api::WsControl::Exit { code })).await;
                    let _ = tx.close().await;
                    return;
                }
                Ok(None) | Err(_) => {
                    let _ = tx
                        .send(control(&api::WsControl::Error {
                            code: ErrorCode::DaemonUnavailable.as_str().into(),
                            message: "lost the workspace daemon".into(),
                        }))
                        .await;
                    let _ = tx.close().await;
                    return;
                }
            }
        }
    };
    tokio::pin!(pump_in, pump_out);
    tokio::select! {
        _ = &mut pump_in => {}
        _ = &mut pump_out => {
            // Output ended (session exit, or the socket failed while we wrote). Input the client
            // sent before that may still be queued: deliver it before detaching.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut pump_in).await;
        }
    }
}
