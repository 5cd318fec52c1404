//! The WebSocket commands: `berth exec` and `berth attach`.

use std::time::Duration;

use berth_api::{CreateSession, ExecStart, Session, WsControl, EXEC_STDERR, EXEC_STDOUT};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{root_cause, session_path, ws_path, CliError, Client, Result};
use crate::commands::terminal_size;
use crate::detach::DetachFilter;
use crate::{env_map, write_all, AttachArgs, Ctx, ExecArgs};

/// After local stdin ends (when it is not a terminal), output is still shown until the session
/// has been quiet this long …
const DRAIN_IDLE: Duration = Duration::from_millis(500);
/// … or this long has passed.
const DRAIN_MAX: Duration = Duration::from_secs(5);

fn control_text(c: &WsControl) -> Result<Message> {
    serde_json::to_string(c)
        .map(Message::Text)
        .map_err(|e| CliError::other(format!("cannot encode a control message: {e}")))
}

fn ws_error(e: &tokio_tungstenite::tungstenite::Error) -> CliError {
    CliError::other(format!("connection to the server lost: {}", root_cause(e)))
}

/// Next chunk of stdin; `None` at end of file; never resolves when stdin is not forwarded.
async fn next_chunk(rx: &mut Option<Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

fn server_error(code: String, message: String) -> CliError {
    CliError::Api {
        status: 0,
        code,
        message,
    }
}

pub(crate) async fn exec(args: ExecArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let start = ExecStart {
        cmd: args.cmd,
        env: env_map(&args.env),
        cwd: args.cwd,
    };
    let start = serde_json::to_string(&start)
        .map_err(|e| CliError::other(format!("cannot encode the command: {e}")))?;
    let ws = client
        .ws_connect(&format!("{}/exec/ws", ws_path(&args.ws)))
        .await?;
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::Text(start))
        .await
        .map_err(|e| ws_error(&e))?;

    // A terminal's stdin is not forwarded (the command gets an empty stdin); a pipe's is.
    let mut stdin = if ctx.stdin.is_tty() {
        sink.send(control_text(&WsControl::Eof)?)
            .await
            .map_err(|e| ws_error(&e))?;
        None
    } else {
        Some(ctx.stdin.reader()?)
    };

    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if let Some((&tag, payload)) = data.split_first() {
                        match tag {
                            EXEC_STDERR => write_all(ctx.err, payload)?,
                            EXEC_STDOUT => write_all(ctx.out, payload)?,
                            _ => write_all(ctx.out, payload)?,
                        }
                    }
                }
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<WsControl>(&text) {
                    Ok(WsControl::Exit { code }) => {
                        let _ = sink.send(Message::Close(None)).await;
                        return Ok(code);
                    }
                    Ok(WsControl::Error { code, message }) => return Err(server_error(code, message)),
                    _ => {}
                },
                // Without the exit message the status is unknown: an error, never a guessed code.
                Some(Ok(Message::Close(_))) | None => {
                    return Err(CliError::other(
                        "the server closed the connection before sending the command's exit status",
                    ))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(CliError::other(format!(
                        "lost the connection to the server before the command's exit status arrived: {}",
                        root_cause(&e)
                    )))
                }
            },
            chunk = next_chunk(&mut stdin) => {
                let msg = match chunk {
                    Some(bytes) => Message::Binary(bytes),
                    None => {
                        stdin = None;
                        control_text(&WsControl::Eof)?
                    }
                };
                if sink.send(msg).await.is_err() {
                    // The server stopped listening; its exit message may still come.
                    stdin = None;
                }
            }
        }
    }
}

/// Restores the terminal when dropped, on every exit path.
struct RawMode;

impl RawMode {
    fn enable() -> Result<Self> {
        crossterm::terminal::enable_raw_mode().map_err(|e| {
            CliError::other(format!(
                "cannot put the terminal in raw mode: {}",
                root_cause(&e)
            ))
        })?;
        Ok(Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Which session `berth attach WS` picks without a name: "main" if it runs, else the only
/// running session; `None` means create a new one.
pub(crate) fn pick_default(sessions: &[Session]) -> Option<&Session> {
    let running: Vec<&Session> = sessions.iter().filter(|s| s.state == "running").collect();
    if let Some(main) = running.iter().find(|s| s.name == "main") {
        return Some(main);
    }
    match running.as_slice() {
        [only] => Some(only),
        _ => None,
    }
}

enum Ended {
    Detached,
    Exited(i32),
}

pub(crate) async fn attach(args: AttachArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let tty = ctx.stdin.is_tty();
    let sessions_path = format!("{}/sessions", ws_path(&args.ws));
    let session: Session = match &args.session {
        Some(s) => client.get(&session_path(&args.ws, s)).await?,
        None => {
            let list: Vec<Session> = client.get(&sessions_path).await?;
            match pick_default(&list) {
                Some(s) => s.clone(),
                None => {
                    let (cols, rows) = terminal_size();
                    let req = CreateSession {
                        cols: Some(cols),
                        rows: Some(rows),
                        ..CreateSession::default()
                    };
                    crate::client::decode(client.post_value(&sessions_path, &req).await?)?
                }
            }
        }
    };
    let (cols, rows) = if tty {
        terminal_size()
    } else {
        (session.cols.max(1), session.rows.max(1))
    };
    let label = format!("{}/{}", args.ws, session.name);
    let ws = client
        .ws_connect(&format!(
            "{}/attach?cols={cols}&rows={rows}",
            session_path(&args.ws, &session.id)
        ))
        .await?;

    let raw = if tty { Some(RawMode::enable()?) } else { None };
    let result = attach_loop(ws, ctx, tty).await;
    drop(raw);
    let prefix = if tty { "\r\n" } else { "" };
    match result? {
        Ended::Detached => ctx.note(&format!("{prefix}[detached from {label}]")),
        Ended::Exited(code) => ctx.note(&format!("{prefix}[session exited with code {code}]")),
    }
    Ok(0)
}

async fn attach_loop(ws: crate::client::Ws, ctx: &mut Ctx<'_>, tty: bool) -> Result<Ended> {
    let (mut sink, mut stream) = ws.split();
    let mut stdin = Some(ctx.stdin.reader()?);
    let mut filter = DetachFilter::new();
    let mut winch = if tty {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };
    // Set once local input is over (pipe mode): show output until quiet, then detach.
    let mut drain: Option<(Instant, Instant)> = None;

    let ended = loop {
        let winch_fut = async {
            match winch.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let drain_fut = async {
            match drain {
                Some((idle, max)) => tokio::time::sleep_until(idle.min(max)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    write_all(ctx.out, &data)?;
                    if let Some((idle, _)) = drain.as_mut() {
                        *idle = Instant::now() + DRAIN_IDLE;
                    }
                }
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<WsControl>(&text) {
                    Ok(WsControl::Exit { code }) => break Ended::Exited(code),
                    Ok(WsControl::Error { code, message }) => return Err(server_error(code, message)),
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => {
                    return Err(CliError::other("the server closed the connection to the session"))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_error(&e)),
            },
            chunk = next_chunk(&mut stdin) => {
                let (bytes, detach) = match chunk {
                    Some(bytes) => filter.feed(&bytes),
                    None => (Vec::new(), true),
                };
                if !bytes.is_empty() {
                    sink.send(Message::Binary(bytes)).await.map_err(|e| ws_error(&e))?;
                }
                if detach {
                    stdin = None;
                    if tty {
                        break Ended::Detached;
                    }
                    let now = Instant::now();
                    drain = Some((now + DRAIN_IDLE, now + DRAIN_MAX));
                }
            }
            _ = winch_fut => {
                if let Ok((cols, rows)) = crossterm::terminal::size() {
                    sink.send(control_text(&WsControl::Resize { cols, rows })?)
                        .await
                        .map_err(|e| ws_error(&e))?;
                }
            }
            () = drain_fut => break Ended::Detached,
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(None))).await;
    Ok(ended)
}
