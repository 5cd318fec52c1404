//! `session_attach`: a client attached to a PTY session, receiving the scrollback and then
//! the live output, and sending input, resizes and its detach.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::connection::reply;
use super::daemon::Daemon;
use super::session::{Session, SessionEvent};
use super::ApiError;
use crate::proto::{
    read_frame, write_control, write_data, ErrorCode, FrameKind, Request, Response,
};

/// Attaches the connection to a session (resized to `cols` x `rows`) until the session exits,
/// the client detaches or goes away, or the client lags.
pub(super) async fn attach(
    d: Arc<Daemon>,
    id_or_name: &str,
    cols: u16,
    rows: u16,
    rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
) -> anyhow::Result<()> {
    if cols == 0 || rows == 0 {
        reply(
            &mut wr,
            Err(ApiError::invalid("cols and rows must be at least 1")),
        )
        .await?;
        return Ok(());
    }
    let s = match d.find(id_or_name) {
        Ok(s) => s,
        Err(e) => {
            reply(&mut wr, Err(e)).await?;
            return Ok(());
        }
    };
    if let Err(e) = s.resize(cols, rows) {
        tracing::warn!(session = %s.id, error = %e.message, "resize on attach failed");
    }
    let mut sub = s.subscribe();
    tracing::debug!(session = %s.id, replay = sub.replay.len(), "client attached");
    write_control(
        &mut wr,
        &Response::Attached {
            session: s.info(),
            replay_len: sub.replay.len() as u64,
        },
    )
    .await?;
    write_data(&mut wr, FrameKind::Stdout, &sub.replay).await?;

    let output = send_output(&mut sub.rx, &mut wr);
    let input = read_input(rd, s.clone());
    tokio::pin!(input);
    tokio::select! {
        r = output => {
            if r.is_err() {
                // The client went away while we wrote. It may have sent input just before
                // leaving: deliver what is already in the socket before giving up.
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut input).await;
            }
            r?
        }
        () = &mut input => tracing::debug!(session = %s.id, "client detached"),
    }
    Ok(())
}

/// Writes the session's live output to the client, then its exit; a client that lagged
/// (its queue was dropped) gets a `lagged` error instead.
async fn send_output(
    rx: &mut mpsc::Receiver<SessionEvent>,
    wr: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    loop {
        match rx.recv().await {
            Some(SessionEvent::Output(data)) => {
                write_data(wr, FrameKind::Stdout, &data).await?;
            }
            Some(SessionEvent::Exit(code)) => {
                write_control(wr, &Response::Exit { code }).await?;
                return Ok(());
            }
            None => {
                let e = ApiError::new(
                    ErrorCode::Lagged,
                    "client did not keep up with the session output; re-attach to catch up",
                );
                write_control(wr, &e.into_response()).await?;
                return Ok(());
            }
        }
    }
}

/// Reads the client's stdin frames (to the session's input), resizes and detach, until the
/// client detaches or goes away.
async fn read_input(mut rd: OwnedReadHalf, session: Arc<Session>) {
    let input_tx = session.input();
    loop {
        let frame = match read_frame(&mut rd).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "attach connection read failed");
                return;
            }
        };
        match frame.kind {
            FrameKind::Stdin => {
                if input_tx.send(frame.payload).await.is_err() {
                    tracing::debug!("session input closed");
                }
            }
            FrameKind::Control => match frame.parse::<Request>() {
                Ok(Request::Resize { cols, rows }) if cols > 0 && rows > 0 => {
                    if let Err(e) = session.resize(cols, rows) {
                        tracing::warn!(error = %e.message, "resize failed");
                    }
                }
                Ok(Request::Detach) => return,
                other => tracing::debug!(?other, "ignored message during attach"),
            },
            kind => tracing::debug!(?kind, "ignored frame during attach"),
        }
    }
}
