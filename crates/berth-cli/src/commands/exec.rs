//! `berth exec WS -- CMD`: run a command in a workspace over a WebSocket, streaming its stdout
//! and stderr, and exit with its exit code. A piped stdin is forwarded; a terminal's is not.

use std::collections::BTreeMap;

use berth_api::{ExecStart, WsControl, EXEC_STDERR, EXEC_STDOUT};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{root_cause, ws_path, CliError, Client, Result};
use crate::ctx::{write_all, Ctx};
use crate::stream::{control_text, next_chunk, ws_error};
use crate::ConnArgs;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Workspace: TENANT/NAME, NAME or id
    pub ws: String,
    /// Environment variable for the command (repeatable)
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory of the command
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// The command and its arguments (after `--`)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

fn parse_env(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected K=V, got {s:?}")),
    }
}

fn env_map(env: &[(String, String)]) -> BTreeMap<String, String> {
    env.iter().cloned().collect()
}

pub(crate) async fn run(args: ExecArgs, client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
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
            msg = stream.next() => {
                if let Some(code) = on_message(msg, ctx)? {
                    let _ = sink.send(Message::Close(None)).await;
                    return Ok(code);
                }
            }
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

/// Shows one message from the server; `Some(exit code)` when the command has exited.
fn on_message(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ctx: &mut Ctx<'_>,
) -> Result<Option<i32>> {
    match msg {
        Some(Ok(Message::Binary(data))) => {
            if let Some((&tag, payload)) = data.split_first() {
                match tag {
                    EXEC_STDERR => write_all(ctx.err, payload)?,
                    EXEC_STDOUT => write_all(ctx.out, payload)?,
                    _ => write_all(ctx.out, payload)?,
                }
            }
            Ok(None)
        }
        Some(Ok(Message::Text(text))) => match serde_json::from_str::<WsControl>(&text) {
            Ok(WsControl::Exit { code }) => Ok(Some(code)),
            Ok(WsControl::Error { code, message }) => Err(CliError::in_stream(code, message)),
            _ => Ok(None),
        },
        // Without the exit message the status is unknown: an error, never a guessed code.
        Some(Ok(Message::Close(_))) | None => Err(CliError::other(
            "the server closed the connection before sending the command's exit status",
        )),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(CliError::other(format!(
            "lost the connection to the server before the command's exit status arrived: {}",
            root_cause(&e)
        ))),
    }
}
