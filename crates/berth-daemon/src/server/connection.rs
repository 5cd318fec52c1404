//! One client connection: the handshake, the one request it carries, and the answer to that
//! request (a single message, or a stream handed to [`exec`],
//! [`attach`] or the task event stream).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::daemon::{Daemon, KILL_GRACE};
use super::{attach, exec, task, ApiError};
use crate::proto::{
    read_frame, write_control, write_data, ErrorBody, ErrorCode, Frame, FrameKind, Request,
    Response,
};
use crate::PROTOCOL_VERSION;

/// How long a new connection may take to say hello, and then to send its request.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends the answer to a request: the response, or the error.
pub(super) async fn reply(
    wr: &mut OwnedWriteHalf,
    r: Result<Response, ApiError>,
) -> std::io::Result<()> {
    let msg = r.unwrap_or_else(ApiError::into_response);
    write_control(wr, &msg).await
}

/// Serves a connection: handshake, then its one request.
pub(super) async fn handle_connection(d: Arc<Daemon>, stream: UnixStream) -> anyhow::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    if !handshake(&d, &mut rd, &mut wr).await? {
        return Ok(());
    }
    let Some(request) = read_request(&mut rd, &mut wr).await? else {
        return Ok(());
    };
    dispatch(d, request, rd, wr).await
}

/// The next frame, which must come within [`HELLO_TIMEOUT`] (`what` names it in the
/// error); `None` at end of stream. A bad frame is answered with a protocol error.
async fn next_frame(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    what: &str,
) -> anyhow::Result<Option<Frame>> {
    match tokio::time::timeout(HELLO_TIMEOUT, read_frame(rd)).await {
        Ok(Ok(f)) => Ok(f),
        Ok(Err(e)) => {
            let _ = reply(wr, Err(ApiError::protocol(format!("bad frame: {e}")))).await;
            Err(e.into())
        }
        Err(_) => anyhow::bail!("no {what} within {HELLO_TIMEOUT:?}"),
    }
}

/// Reads the client's hello and answers it; false when the connection ends here (the
/// client left, did not say hello, or speaks another protocol version).
async fn handshake(
    d: &Daemon,
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
) -> anyhow::Result<bool> {
    let Some(first) = next_frame(rd, wr, "hello").await? else {
        return Ok(false);
    };
    let protocol = match first.parse::<Request>() {
        Ok(Request::Hello { protocol, client }) => {
            tracing::trace!(protocol, client = %client, "hello");
            protocol
        }
        _ => {
            reply(
                wr,
                Err(ApiError::protocol("the first message must be a hello")),
            )
            .await?;
            return Ok(false);
        }
    };
    if protocol != PROTOCOL_VERSION {
        tracing::warn!(
            client = protocol,
            daemon = PROTOCOL_VERSION,
            "client speaks another protocol version"
        );
        let body = ErrorBody {
            code: ErrorCode::Incompatible,
            message: crate::incompatible_message(PROTOCOL_VERSION, protocol),
            daemon_protocol: Some(PROTOCOL_VERSION),
        };
        write_control(wr, &Response::Error(body)).await?;
        return Ok(false);
    }
    write_control(wr, &Response::HelloOk(d.info())).await?;
    Ok(true)
}

/// The request after the handshake; `None` when there is none (a handshake-only
/// connection) or it does not parse (then it has been answered).
async fn read_request(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
) -> anyhow::Result<Option<Request>> {
    let Some(frame) = next_frame(rd, wr, "request").await? else {
        return Ok(None); // handshake only
    };
    match frame.parse::<Request>() {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            reply(wr, Err(bad_request(&frame, &e))).await?;
            Ok(None)
        }
    }
}

/// Serves one request: the streaming ones by their own handlers, the others by one answer.
async fn dispatch(
    d: Arc<Daemon>,
    request: Request,
    rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
) -> anyhow::Result<()> {
    let answer = match request {
        Request::Exec(req) => return exec::handle(d, req, rd, wr).await,
        Request::SessionAttach {
            session,
            cols,
            rows,
        } => return attach::attach(d, &session, cols, rows, rd, wr).await,
        Request::SessionCapture { session } => return capture(&d, &session, &mut wr).await,
        Request::TaskEvents { task, after } => return task_events(d, &task, after, rd, wr).await,
        Request::SessionCreate(req) => d.create_session(req).await.map(Response::Session),
        Request::SessionList => Ok(Response::Sessions { sessions: d.list() }),
        Request::SessionGet { session } => d.get(&session).map(Response::Session),
        Request::SessionKill { session } => kill_session(&d, &session).await,
        Request::SessionRemove { session } => d.remove_session(&session).map(|()| Response::Ok),
        Request::TaskStart(req) => d.tasks.start(req).await.map(Response::Task),
        Request::TaskSend {
            task,
            text,
            interrupt,
        } => d
            .tasks
            .send(&task, &text, interrupt)
            .await
            .map(Response::Task),
        Request::TaskCancel { task, fail } => d.tasks.cancel(&task, fail).await.map(Response::Task),
        Request::TaskGet { task } => d.tasks.find(&task).map(|t| Response::Task(t.info())),
        Request::TaskDecide(req) => d.tasks.decide(req).map(Response::Task),
        Request::TaskList => Ok(Response::Tasks {
            tasks: d.tasks.list(),
        }),
        Request::Hello { .. } | Request::StdinEof | Request::Resize { .. } | Request::Detach => {
            Err(ApiError::protocol("unexpected message as a request"))
        }
    };
    reply(&mut wr, answer).await?;
    Ok(())
}

/// `session_capture`: the session's scrollback, announced by its length.
async fn capture(d: &Daemon, id_or_name: &str, wr: &mut OwnedWriteHalf) -> anyhow::Result<()> {
    let s = match d.find(id_or_name) {
        Ok(s) => s,
        Err(e) => {
            reply(wr, Err(e)).await?;
            return Ok(());
        }
    };
    let data = s.capture();
    write_control(
        wr,
        &Response::Capture {
            len: data.len() as u64,
        },
    )
    .await?;
    write_data(wr, FrameKind::Stdout, &data).await?;
    Ok(())
}

/// `session_kill`: answered once the session has exited.
async fn kill_session(d: &Daemon, id_or_name: &str) -> Result<Response, ApiError> {
    let s = d.find(id_or_name)?;
    tracing::info!(session = %s.id, name = %s.name, "killing session");
    s.kill(KILL_GRACE).await;
    Ok(Response::Ok)
}

/// The error for a request that does not parse; names unknown request types
/// clearly (a newer client talking to this daemon).
fn bad_request(frame: &Frame, e: &std::io::Error) -> ApiError {
    let kind = serde_json::from_slice::<serde_json::Value>(&frame.payload)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string));
    match kind {
        Some(t) if e.to_string().contains("unknown variant") => ApiError::protocol(format!(
            "unknown request {t:?}: this workspace daemon (berth {}) does not support it; restart the workspace to upgrade the daemon",
            env!("CARGO_PKG_VERSION")
        )),
        _ => ApiError::protocol(format!("bad request: {e}")),
    }
}

/// Streams a task's events with `seq > after`: the buffered ones, then live
/// ones, until the client goes away or the task is forgotten.
async fn task_events(
    d: Arc<Daemon>,
    id: &str,
    after: u64,
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
) -> anyhow::Result<()> {
    let task = match d.tasks.find(id) {
        Ok(t) => t,
        Err(e) => {
            reply(&mut wr, Err(e)).await?;
            return Ok(());
        }
    };
    drop(d);
    let seq_rx = task.subscribe();
    write_control(&mut wr, &Response::TaskSubscribed { task: task.info() }).await?;
    let output = task::send_events(&task, seq_rx, after, &mut wr);
    let input = async {
        loop {
            match read_frame(&mut rd).await {
                Ok(Some(frame)) => {
                    tracing::debug!(kind = ?frame.kind, "ignored frame during task events")
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "task events connection read failed");
                    return;
                }
            }
        }
    };
    tokio::select! {
        r = output => r?,
        () = input => tracing::debug!(task = %task.info().id, "task events subscriber left"),
    }
    Ok(())
}
