//! `exec`: one-shot processes with pipes (no PTY), their output streamed to the client as
//! stdout and stderr frames, stdin from the client, and their exit code.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{ChildStderr, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;

use super::connection::reply;
use super::daemon::Daemon;
use super::ApiError;
use crate::proto::{
    read_frame, write_control, write_frame, ExecRequest, Frame, FrameKind, Request, Response,
};
use crate::sys::{self, sleep_opt};

/// After the process exited, how long to wait for its pipes to close (they
/// may be held open by background processes it started).
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// What is still written to the client from the pipes once the grace is over.
const FINAL_DRAIN: usize = 1024 * 1024;

/// Removes the process group from the daemon's list when the exec ends.
struct Tracked {
    daemon: Arc<Daemon>,
    pgid: u32,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.daemon.untrack_exec(self.pgid);
    }
}

/// Serves an `exec` request: runs the process in a process group of its own, relays stdin,
/// stdout and stderr, and answers its exit code; kills the group if the client goes away.
pub(super) async fn handle(
    d: Arc<Daemon>,
    req: ExecRequest,
    rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
) -> anyhow::Result<()> {
    let mut child = match spawn(&d, &req) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(argv = ?req.argv, error = %e.message, "exec failed to start");
            reply(&mut wr, Err(e)).await?;
            return Ok(());
        }
    };
    let Some(pid) = child.id() else {
        reply(&mut wr, Err(ApiError::internal("exec child has no pid"))).await?;
        return Ok(());
    };
    d.track_exec(pid);
    let _tracked = Tracked {
        daemon: d.clone(),
        pgid: pid,
    };
    tracing::debug!(pid, argv = ?req.argv, "exec started");

    let mut pipes = Pipes {
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
    };
    let stdin_tx = start_stdin(&mut child);
    // The client's side: stdin frames, stdin_eof, and its going away.
    let (gone_tx, mut gone_rx) = oneshot::channel::<()>();
    let client_reader = tokio::spawn(read_client(rd, stdin_tx, gone_tx));

    if write_control(&mut wr, &Response::ExecStarted { pid })
        .await
        .is_err()
    {
        kill_and_reap(&mut child, pid).await;
        client_reader.abort();
        return Ok(());
    }
    let end = relay_output(&mut child, pid, &mut pipes, &mut gone_rx, &mut wr).await;
    client_reader.abort();
    finish(end, &mut child, pid, &mut wr).await
}

/// Stdin: frames from the client go to the process through a queue; `None` when the process
/// has no stdin pipe.
fn start_stdin(child: &mut tokio::process::Child) -> Option<mpsc::Sender<Bytes>> {
    child.stdin.take().map(|mut stdin| {
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if let Err(e) = stdin.write_all(&data).await {
                    tracing::debug!(error = %e, "exec stdin closed by the process");
                    return;
                }
            }
            // Dropping stdin closes the pipe: the process sees EOF.
        });
        tx
    })
}

/// How relaying an exec's output ended.
struct End {
    /// The exit status, or why it could not be read (never an invented code); `None` while
    /// the process runs.
    exit_code: Option<Result<i32, String>>,
    client_gone: bool,
}

/// The process's output pipes, each `None` once it has closed.
struct Pipes {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl Pipes {
    fn open(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }

    /// Writes what the pipes hold right now to the client, without waiting for more, up to
    /// [`FINAL_DRAIN`] bytes (a background process may write without end); false if the
    /// client is gone.
    async fn drain_ready(&mut self, wr: &mut OwnedWriteHalf) -> bool {
        let mut budget = FINAL_DRAIN;
        while budget > 0 {
            let (read, kind) = if let Some(r) = read_ready(&mut self.stdout) {
                (r, FrameKind::Stdout)
            } else if let Some(r) = read_ready(&mut self.stderr) {
                (r, FrameKind::Stderr)
            } else {
                break;
            };
            budget = budget.saturating_sub(read.as_ref().map_or(0, Bytes::len));
            if !send_chunk(wr, kind, read).await {
                return false;
            }
        }
        true
    }
}

/// Writes a chunk read from a pipe (none: the pipe closed) to the client; false if the client
/// is gone.
async fn send_chunk(wr: &mut OwnedWriteHalf, kind: FrameKind, data: Option<Bytes>) -> bool {
    match data {
        Some(data) => write_frame(wr, &Frame::data(kind, data)).await.is_ok(),
        None => true,
    }
}

/// [`read_chunk`] if the pipe is open and it needs no waiting.
fn read_ready<R: AsyncRead + Unpin>(pipe: &mut Option<R>) -> Option<Option<Bytes>> {
    pipe.as_ref()?;
    read_chunk(pipe).now_or_never()
}

/// The next chunk of an output pipe; `None` (and the pipe dropped) at its end or on a read
/// error. Cancel-safe: a chunk is either returned or still in the pipe.
async fn read_chunk<R: AsyncRead + Unpin>(pipe: &mut Option<R>) -> Option<Bytes> {
    let r = pipe.as_mut()?;
    let mut buf = BytesMut::with_capacity(32 * 1024);
    match r.read_buf(&mut buf).await {
        Ok(n) if n > 0 => Some(buf.freeze()),
        Ok(_) => {
            *pipe = None;
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "exec pipe read failed");
            *pipe = None;
            None
        }
    }
}

/// Writes the process's output to the client until the process has exited and its pipes are
/// closed (or [`DRAIN_GRACE`] after its exit, then what they hold at that moment), or the
/// client goes away. The pipes are read here, not by tasks of their own: when the daemon got
/// no CPU for longer than the grace (a workspace at its CPU cap), the grace's timer and the
/// pipes' last output become ready at once, and output a pump task had not read yet was lost.
async fn relay_output(
    child: &mut tokio::process::Child,
    pid: u32,
    pipes: &mut Pipes,
    gone_rx: &mut oneshot::Receiver<()>,
    wr: &mut OwnedWriteHalf,
) -> End {
    let mut end = End {
        exit_code: None,
        client_gone: false,
    };
    let mut grace: Option<Pin<Box<Sleep>>> = None;
    loop {
        if end.exit_code.is_some() && !pipes.open() {
            break;
        }
        let Pipes { stdout, stderr } = pipes;
        tokio::select! {
            data = read_chunk(stdout), if stdout.is_some() => {
                if !send_chunk(wr, FrameKind::Stdout, data).await {
                    end.client_gone = true;
                    break;
                }
            }
            data = read_chunk(stderr), if stderr.is_some() => {
                if !send_chunk(wr, FrameKind::Stderr, data).await {
                    end.client_gone = true;
                    break;
                }
            }
            status = child.wait(), if end.exit_code.is_none() => {
                end.exit_code = Some(match status {
                    Ok(st) => status_code(st),
                    Err(e) => {
                        tracing::warn!(pid, error = %e, "waiting for exec process");
                        Err(format!("cannot read the exit status of process {pid}: {e}"))
                    }
                });
                grace = Some(Box::pin(tokio::time::sleep(DRAIN_GRACE)));
            },
            _ = &mut *gone_rx, if !end.client_gone => {
                end.client_gone = true;
                break;
            },
            () = sleep_opt(&mut grace) => {
                tracing::debug!(pid, "exec output still open after exit; not waiting further");
                end.client_gone = !pipes.drain_ready(wr).await;
                break;
            },
        }
    }
    end
}

/// Answers the exit code (or why there is none) to a client still there; kills the process
/// group of a process still running.
async fn finish(
    end: End,
    child: &mut tokio::process::Child,
    pid: u32,
    wr: &mut OwnedWriteHalf,
) -> anyhow::Result<()> {
    match end.exit_code {
        Some(Ok(code)) if !end.client_gone => {
            tracing::debug!(pid, code, "exec exited");
            write_control(wr, &Response::Exit { code }).await?;
        }
        Some(Err(why)) if !end.client_gone => {
            reply(wr, Err(ApiError::internal(why))).await?;
        }
        Some(_) => {}
        None => {
            tracing::info!(pid, "exec client went away; killing its process group");
            kill_and_reap(child, pid).await;
        }
    }
    Ok(())
}

/// The exit code of a finished process (killed by signal N: 128+N).
fn status_code(st: std::process::ExitStatus) -> Result<i32, String> {
    use std::os::unix::process::ExitStatusExt;
    st.code()
        .or_else(|| st.signal().map(|sig| 128 + sig))
        .ok_or_else(|| format!("the process ended with no exit code or signal ({st:?})"))
}

fn spawn(d: &Daemon, req: &ExecRequest) -> Result<tokio::process::Child, ApiError> {
    sys::validate_argv(&req.argv).map_err(ApiError::invalid)?;
    sys::validate_env(&req.env).map_err(ApiError::invalid)?;
    let cwd =
        sys::resolve_cwd(req.cwd.as_deref(), &d.opts.default_cwd).map_err(ApiError::invalid)?;
    let home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| d.opts.default_cwd.clone());
    let shell = d
        .opts
        .default_shell
        .first()
        .cloned()
        .unwrap_or_else(|| "/bin/sh".into());
    let env = sys::child_env(&home, &shell, false, &req.env);
    let program = &req.argv[0];
    let resolved = sys::resolve_program(program, env.get("PATH").map(String::as_str), &cwd)
        .map_err(ApiError::spawn_failed)?;

    let mut cmd = tokio::process::Command::new(&resolved);
    {
        use std::os::unix::process::CommandExt as _;
        cmd.as_std_mut().arg0(program);
    }
    cmd.args(&req.argv[1..])
        .env_clear()
        .envs(&env)
        .current_dir(&cwd);
    sys::pipes_in_own_group(&mut cmd, req.stdin);
    cmd.spawn()
        .map_err(|e| ApiError::spawn_failed(sys::spawn_error_message(program, &e)))
}

async fn read_client(
    mut rd: OwnedReadHalf,
    mut stdin: Option<mpsc::Sender<Bytes>>,
    gone: oneshot::Sender<()>,
) {
    loop {
        match read_frame(&mut rd).await {
            Ok(Some(frame)) => match frame.kind {
                FrameKind::Stdin => {
                    if let Some(tx) = &stdin {
                        if tx.send(frame.payload).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                FrameKind::Control => match frame.parse::<Request>() {
                    Ok(Request::StdinEof) => stdin = None,
                    other => tracing::debug!(?other, "ignored message during exec"),
                },
                kind => tracing::debug!(?kind, "ignored frame during exec"),
            },
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "exec connection read failed");
                break;
            }
        }
    }
    let _ = gone.send(());
}

async fn kill_and_reap(child: &mut tokio::process::Child, pgid: u32) {
    // The child is not reaped yet, so its pid still names its process group.
    sys::signal_group(pgid, Signal::SIGKILL);
    let _ = child.start_kill();
    let _ = child.wait().await;
}
