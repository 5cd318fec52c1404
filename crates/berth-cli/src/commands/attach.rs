//! `berth attach WS [SESSION]`: this terminal joins a session over a WebSocket, in raw mode,
//! until Ctrl-b d detaches or the session exits. With a pipe instead of a terminal, the
//! input is sent and the output shown until it goes quiet.

use std::time::Duration;

use berth_api::{CreateSession, Session, WsControl};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{decode, root_cause, session_path, ws_path, CliError, Client, Result, Ws};
use crate::ctx::{terminal_size, write_all, Ctx};
use crate::detach::DetachFilter;
use crate::stream::{control_text, next_chunk, ws_error};
use crate::ConnArgs;

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Workspace: TENANT/NAME, NAME or id
    pub ws: String,
    /// Session name or id [default: "main", else the only running session, else a new one]
    pub session: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// After local stdin ends (when it is not a terminal), output is still shown until the session
/// has been quiet this long …
const DRAIN_IDLE: Duration = Duration::from_millis(500);
/// … or this long has passed.
const DRAIN_MAX: Duration = Duration::from_secs(5);

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

pub(crate) async fn run(args: AttachArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
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
                    decode(client.post_value(&sessions_path, &req).await?)?
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

async fn attach_loop(ws: Ws, ctx: &mut Ctx<'_>, tty: bool) -> Result<Ended> {
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
            msg = stream.next() => {
                if let Some(ended) = on_message(msg, ctx, &mut drain)? {
                    break ended;
                }
            }
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

/// Shows one message from the server (output keeps a draining pipe session open a little
/// longer); `Some` when the session has exited.
fn on_message(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ctx: &mut Ctx<'_>,
    drain: &mut Option<(Instant, Instant)>,
) -> Result<Option<Ended>> {
    match msg {
        Some(Ok(Message::Binary(data))) => {
            write_all(ctx.out, &data)?;
            if let Some((idle, _)) = drain.as_mut() {
                *idle = Instant::now() + DRAIN_IDLE;
            }
            Ok(None)
        }
        Some(Ok(Message::Text(text))) => match serde_json::from_str::<WsControl>(&text) {
            Ok(WsControl::Exit { code }) => Ok(Some(Ended::Exited(code))),
            Ok(WsControl::Error { code, message }) => Err(CliError::in_stream(code, message)),
            _ => Ok(None),
        },
        Some(Ok(Message::Close(_))) | None => Err(CliError::other(
            "the server closed the connection to the session",
        )),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(ws_error(&e)),
    }
}
