//! The client the server uses to talk to a workspace daemon.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;

use berth_domain::{TaskEvent, TaskId};
use tokio::io::AsyncReadExt as _;

use crate::proto::{
    decode_frame, read_frame, write_control, write_data, DaemonInfo, ErrorBody, ErrorCode,
    ExecOutput, ExecRequest, Frame, FrameKind, Request, Response, SessionCreate, SessionInfo,
    TaskInfo, TaskStart,
};
use crate::{DaemonError, PROTOCOL_VERSION};

/// How long the server waits on a workspace daemon. Whatever runs in a workspace may have
/// replaced its daemon, so every wait is bounded: a daemon that accepts and then stays silent
/// costs the caller one deadline, never a hang. (Streams that follow a process or a task may
/// be silent for as long as the process is; they end when the caller drops them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The handshake.
    pub hello: Duration,
    /// An ordinary request (listing, getting, capturing, spawning) and any data that follows
    /// its answer: everything the daemon does for these is local and quick.
    pub response: Duration,
    /// Requests that wait on processes: a kill waits up to 2 s for a hang-up, a cancel 3 s for
    /// SIGINT plus the drain, a follow-up resumes an agent.
    pub slow_response: Duration,
    /// A task start, which may create a git worktree (the daemon gives git 300 s).
    pub task_start: Duration,
    /// A whole [`DaemonClient::exec_collect`], from the request to the exit code.
    pub collect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            hello: Duration::from_secs(10),
            response: Duration::from_secs(15),
            slow_response: Duration::from_secs(60),
            task_start: Duration::from_secs(330),
            collect: Duration::from_secs(300),
        }
    }
}

impl Timeouts {
    /// The deadline for the daemon's answer to `req` (including data that follows it).
    fn for_request(&self, req: &Request) -> Duration {
        match req {
            Request::TaskStart(_) => self.task_start,
            Request::TaskSend { .. }
            | Request::TaskCancel { .. }
            | Request::SessionKill { .. }
            | Request::SessionCreate(_) => self.slow_response,
            _ => self.response,
        }
    }
}

/// Largest capture or attach replay accepted from a daemon (its scrollback is 1 MiB by
/// default). A longer announced length is refused before anything is read or allocated.
pub const MAX_DATA: u64 = 16 << 20;

/// Runs `fut` with a deadline; a daemon that stays silent past it is reported as not answering.
async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, DaemonError>>,
) -> Result<T, DaemonError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| DaemonError::Unreachable(format!("{what} did not arrive within {limit:?}")))?
}

/// A handle on a daemon's socket. Cheap to clone; every operation opens its
/// own connection, so operations are independent and may run concurrently.
#[derive(Debug, Clone)]
pub struct DaemonClient {
    socket: PathBuf,
    protocol: u32,
    timeouts: Timeouts,
}

/// One connection. The halves come from `tokio::io::split`, so dropping the
/// write half alone does not half-close the socket (the daemon would take
/// that for the client going away).
struct Conn {
    rd: ReadHalf<UnixStream>,
    wr: WriteHalf<UnixStream>,
    protocol: u32,
}

impl Conn {
    async fn send(&mut self, req: &Request) -> Result<(), DaemonError> {
        write_control(&mut self.wr, req).await?;
        Ok(())
    }

    async fn frame(&mut self) -> Result<Frame, DaemonError> {
        read_frame(&mut self.rd).await?.ok_or_else(|| {
            DaemonError::Protocol("the daemon closed the connection unexpectedly".into())
        })
    }

    /// The next frame must be a control response; errors are mapped.
    async fn response(&mut self) -> Result<Response, DaemonError> {
        let frame = self.frame().await?;
        parse_response(&frame, self.protocol)
    }

    /// Reads data frames carrying exactly `len` bytes (at most [`MAX_DATA`]: the length comes
    /// from the daemon and is checked before anything is allocated).
    async fn data(&mut self, len: u64) -> Result<Bytes, DaemonError> {
        if len > MAX_DATA {
            return Err(DaemonError::Protocol(format!(
                "the daemon announced {len} bytes of data (at most {MAX_DATA} are accepted)"
            )));
        }
        let len = usize::try_from(len)
            .map_err(|_| DaemonError::Protocol(format!("data length {len} too large")))?;
        let mut buf = BytesMut::with_capacity(len);
        while buf.len() < len {
            let frame = self.frame().await?;
            if frame.kind != FrameKind::Stdout {
                return Err(DaemonError::Protocol(format!(
                    "expected {len} bytes of data, got a {:?} frame",
                    frame.kind
                )));
            }
            if frame.payload.len() > len - buf.len() {
                return Err(DaemonError::Protocol(format!(
                    "expected {len} bytes of data, got more"
                )));
            }
            buf.extend_from_slice(&frame.payload);
        }
        if buf.len() != len {
            return Err(DaemonError::Protocol(format!(
                "expected {len} bytes of data, got {}",
                buf.len()
            )));
        }
        Ok(buf.freeze())
    }
}

fn parse_response(frame: &Frame, client_protocol: u32) -> Result<Response, DaemonError> {
    let resp: Response = frame
        .parse()
        .map_err(|e| DaemonError::Protocol(format!("bad response from the daemon: {e}")))?;
    match resp {
        Response::Error(body) => Err(map_error(body, client_protocol)),
        other => Ok(other),
    }
}

fn map_error(body: ErrorBody, client: u32) -> DaemonError {
    let m = body.message;
    match body.code {
        ErrorCode::Incompatible => DaemonError::Incompatible {
            daemon: body.daemon_protocol.unwrap_or(0),
            client,
        },
        ErrorCode::NotFound => DaemonError::NotFound(m),
        ErrorCode::Conflict => DaemonError::Conflict(m),
        ErrorCode::Invalid => DaemonError::Invalid(m),
        ErrorCode::SpawnFailed => DaemonError::SpawnFailed(m),
        ErrorCode::Internal => DaemonError::Io(std::io::Error::other(m)),
        ErrorCode::Protocol | ErrorCode::Lagged | ErrorCode::Unknown => DaemonError::Protocol(m),
    }
}

/// A daemon that predates a request answers it with a protocol error naming
/// an "unknown variant"; say plainly what that means.
fn older_daemon(request: &str) -> impl FnOnce(DaemonError) -> DaemonError + '_ {
    move |e| {
        match e {
        DaemonError::Protocol(m) if m.contains("unknown variant") => DaemonError::Protocol(format!(
            "unknown request {request:?}: the workspace daemon is older than the server and does not support it; restart the workspace to upgrade the daemon ({m})"
        )),
        other => other,
    }
    }
}

fn unexpected(what: &str, got: &Response) -> DaemonError {
    DaemonError::Protocol(format!("expected {what} from the daemon, got {got:?}"))
}

impl DaemonClient {
    /// A client for the daemon listening at `socket`. Connects lazily.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        DaemonClient {
            socket: socket.into(),
            protocol: PROTOCOL_VERSION,
            timeouts: Timeouts::default(),
        }
    }

    /// Other deadlines than [`Timeouts::default`].
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Claims another protocol version in the handshake (for tests of
    /// version negotiation).
    #[doc(hidden)]
    pub fn with_protocol_version(mut self, protocol: u32) -> Self {
        self.protocol = protocol;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn connect(&self) -> Result<(Conn, DaemonInfo), DaemonError> {
        // Never through a link: the socket's directory is writable by the workspace.
        let stream = async {
            let fd = crate::chanfs::open_socket(&self.socket)?;
            UnixStream::connect(crate::chanfs::fd_path(&fd)).await
        };
        let stream = stream.await.map_err(|e| {
            use std::io::ErrorKind::*;
            match e.kind() {
                NotFound | ConnectionRefused | ConnectionReset | NotADirectory => {
                    DaemonError::Unreachable(format!("{}: {e}", self.socket.display()))
                }
                _ => DaemonError::Io(std::io::Error::new(
                    e.kind(),
                    format!("connecting to {}: {e}", self.socket.display()),
                )),
            }
        })?;
        let (rd, wr) = tokio::io::split(stream);
        let mut conn = Conn {
            rd,
            wr,
            protocol: self.protocol,
        };
        let hello = async {
            conn.send(&Request::Hello {
                protocol: self.protocol,
                client: env!("CARGO_PKG_VERSION").to_string(),
            })
            .await?;
            conn.response().await
        };
        let limit = self.timeouts.hello;
        let resp = tokio::time::timeout(limit, hello).await.map_err(|_| {
            DaemonError::Unreachable(format!(
                "{}: the daemon did not answer the handshake within {limit:?}",
                self.socket.display()
            ))
        })??;
        match resp {
            Response::HelloOk(info) if info.protocol == self.protocol => Ok((conn, info)),
            Response::HelloOk(info) => Err(DaemonError::Incompatible {
                daemon: info.protocol,
                client: self.protocol,
            }),
            other => Err(unexpected("hello_ok", &other)),
        }
    }

    /// Connects, sends `req` and reads one control response, within the request's deadline
    /// (see [`Timeouts`]).
    async fn call(&self, req: Request) -> Result<(Conn, Response), DaemonError> {
        let (mut conn, _) = self.connect().await?;
        let limit = self.timeouts.for_request(&req);
        let resp = within(limit, "the answer", async {
            conn.send(&req).await?;
            conn.response().await
        })
        .await?;
        Ok((conn, resp))
    }

    /// Handshake only: checks that the daemon runs and speaks our protocol.
    pub async fn hello(&self) -> Result<DaemonInfo, DaemonError> {
        let (_, info) = self.connect().await?;
        Ok(info)
    }

    /// Starts a process with pipes. Spawn failures (command not found...)
    /// are returned here as [`DaemonError::SpawnFailed`].
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecStream, DaemonError> {
        let (conn, resp) = self.call(Request::Exec(req)).await?;
        match resp {
            Response::ExecStarted { pid } => Ok(ExecStream {
                pid,
                input: ExecInput {
                    wr: conn.wr,
                    stdin_open: true,
                },
                output: ExecOutputStream {
                    rd: conn.rd,
                    protocol: conn.protocol,
                    done: false,
                },
            }),
            other => Err(unexpected("exec_started", &other)),
        }
    }

    /// Runs a process to completion and collects its output; stdout and
    /// stderr are each cut at `max_bytes` (the rest is read and discarded).
    /// If `req.stdin` is set, stdin is closed right away. The whole run has a
    /// deadline ([`Timeouts::collect`]).
    pub async fn exec_collect(
        &self,
        req: ExecRequest,
        max_bytes: usize,
    ) -> Result<ExecOutput, DaemonError> {
        let limit = self.timeouts.collect;
        within(limit, "the exit code", self.collect(req, max_bytes)).await
    }

    async fn collect(&self, req: ExecRequest, max_bytes: usize) -> Result<ExecOutput, DaemonError> {
        let stdin = req.stdin;
        let mut stream = self.exec(req).await?;
        if stdin {
            stream.close_stdin().await?;
        }
        let mut out = ExecOutput::default();
        fn keep(buf: &mut Vec<u8>, truncated: &mut bool, data: &[u8], max: usize) {
            let room = max.saturating_sub(buf.len());
            if data.len() > room {
                *truncated = true;
            }
            buf.extend_from_slice(&data[..data.len().min(room)]);
        }
        loop {
            match stream.next().await? {
                Some(ExecEvent::Stdout(d)) => {
                    keep(&mut out.stdout, &mut out.stdout_truncated, &d, max_bytes)
                }
                Some(ExecEvent::Stderr(d)) => {
                    keep(&mut out.stderr, &mut out.stderr_truncated, &d, max_bytes)
                }
                Some(ExecEvent::Exit(code)) => {
                    out.exit_code = code;
                    return Ok(out);
                }
                None => {
                    return Err(DaemonError::Protocol(
                        "the exec stream ended without an exit code".into(),
                    ))
                }
            }
        }
    }

    /// Creates a PTY session.
    pub async fn session_create(&self, req: SessionCreate) -> Result<SessionInfo, DaemonError> {
        match self.call(Request::SessionCreate(req)).await?.1 {
            Response::Session(info) => Ok(info),
            other => Err(unexpected("session", &other)),
        }
    }

    /// All sessions (running and exited), in creation order.
    pub async fn session_list(&self) -> Result<Vec<SessionInfo>, DaemonError> {
        match self.call(Request::SessionList).await?.1 {
            Response::Sessions { sessions } => Ok(sessions),
            other => Err(unexpected("sessions", &other)),
        }
    }

    pub async fn session_get(&self, id_or_name: &str) -> Result<SessionInfo, DaemonError> {
        let req = Request::SessionGet {
            session: id_or_name.into(),
        };
        match self.call(req).await?.1 {
            Response::Session(info) => Ok(info),
            other => Err(unexpected("session", &other)),
        }
    }

    /// The session's current scrollback.
    pub async fn session_capture(&self, id_or_name: &str) -> Result<Vec<u8>, DaemonError> {
        let req = Request::SessionCapture {
            session: id_or_name.into(),
        };
        match self.call(req).await? {
            (mut conn, Response::Capture { len }) => {
                let limit = self.timeouts.response;
                let data = within(limit, "the capture", conn.data(len)).await?;
                Ok(data.to_vec())
            }
            (_, other) => Err(unexpected("capture", &other)),
        }
    }

    /// Hangs up the session (SIGHUP to its processes, SIGKILL if they are
    /// still there after 2 s) and returns once it has exited. The session
    /// stays listed as exited. Killing an exited session is a no-op.
    pub async fn session_kill(&self, id_or_name: &str) -> Result<(), DaemonError> {
        let req = Request::SessionKill {
            session: id_or_name.into(),
        };
        match self.call(req).await?.1 {
            Response::Ok => Ok(()),
            other => Err(unexpected("ok", &other)),
        }
    }

    /// Forgets an exited session ([`DaemonError::Conflict`] if it is running).
    pub async fn session_remove(&self, id_or_name: &str) -> Result<(), DaemonError> {
        let req = Request::SessionRemove {
            session: id_or_name.into(),
        };
        match self.call(req).await?.1 {
            Response::Ok => Ok(()),
            other => Err(unexpected("ok", &other)),
        }
    }

    /// Attaches to a session and resizes it to `cols` x `rows`. The first
    /// event is the scrollback replay (if not empty), then live output, and
    /// finally [`AttachEvent::Exit`] if the process exits (at once for an
    /// exited session).
    pub async fn session_attach(
        &self,
        id_or_name: &str,
        cols: u16,
        rows: u16,
    ) -> Result<AttachStream, DaemonError> {
        let req = Request::SessionAttach {
            session: id_or_name.into(),
            cols,
            rows,
        };
        match self.call(req).await? {
            (
                mut conn,
                Response::Attached {
                    session,
                    replay_len,
                },
            ) => {
                let limit = self.timeouts.response;
                let replay = within(limit, "the replay", conn.data(replay_len)).await?;
                let mut pending = VecDeque::new();
                if !replay.is_empty() {
                    pending.push_back(AttachEvent::Output(replay));
                }
                Ok(AttachStream {
                    session,
                    input: AttachInput { wr: conn.wr },
                    output: AttachOutput {
                        rd: conn.rd,
                        protocol: conn.protocol,
                        pending,
                        done: false,
                    },
                })
            }
            (_, other) => Err(unexpected("attached", &other)),
        }
    }
}

impl DaemonClient {
    /// Starts an agent task (its first turn) owned by the daemon. Returns once
    /// the agent is spawned (`running`, with its pid) or the task failed to
    /// start (`failed` with a reason: CLI not installed, worktree
    /// creation failed, ...). [`DaemonError::Conflict`] if the id exists.
    pub async fn task_start(&self, req: TaskStart) -> Result<TaskInfo, DaemonError> {
        let resp = self
            .call(Request::TaskStart(req))
            .await
            .map_err(older_daemon("task_start"))?;
        match resp.1 {
            Response::Task(info) => Ok(info),
            other => Err(unexpected("task", &other)),
        }
    }

    /// Sends a follow-up message: the next turn, resuming the agent's
    /// conversation. [`DaemonError::Conflict`] if the task does not accept a
    /// message now (the message names its state), or if the agent reported
    /// no session id; [`DaemonError::NotFound`].
    pub async fn task_send(&self, id: &TaskId, text: &str) -> Result<TaskInfo, DaemonError> {
        self.send_message(id, text, None).await
    }

    /// Interrupts and redirects: a running turn is stopped (a `turn_interrupted` event naming
    /// `by`) and the next turn starts with `text` in the same conversation, the task staying
    /// `running`. Answers once that turn's agent is spawned; [`DaemonError::Conflict`] when the
    /// turn ended `failed` or `cancelled` before the interrupt reached it, or another interrupt
    /// is under way. Without a running turn, the same as [`DaemonClient::task_send`].
    pub async fn task_interrupt(
        &self,
        id: &TaskId,
        text: &str,
        by: &str,
    ) -> Result<TaskInfo, DaemonError> {
        self.send_message(id, text, Some(by.to_owned())).await
    }

    async fn send_message(
        &self,
        id: &TaskId,
        text: &str,
        interrupt: Option<String>,
    ) -> Result<TaskInfo, DaemonError> {
        let req = Request::TaskSend {
            task: id.to_string(),
            text: text.into(),
            interrupt,
        };
        match self.call(req).await.map_err(older_daemon("task_send"))?.1 {
            Response::Task(info) => Ok(info),
            other => Err(unexpected("task", &other)),
        }
    }

    /// Cancels a task and returns once it is `cancelled` (a running agent gets
    /// SIGINT, and its process group SIGKILL 3 s later). Idempotent on a
    /// cancelled task; [`DaemonError::Conflict`] on a failed one.
    pub async fn task_cancel(&self, id: &TaskId) -> Result<TaskInfo, DaemonError> {
        self.task_stop(id, None).await
    }

    /// Stops the task like a cancel, but it ends `failed` with `reason` (a decision made outside
    /// the agent, such as an exhausted budget).
    pub async fn task_fail(&self, id: &TaskId, reason: &str) -> Result<TaskInfo, DaemonError> {
        self.task_stop(id, Some(reason.into())).await
    }

    async fn task_stop(&self, id: &TaskId, fail: Option<String>) -> Result<TaskInfo, DaemonError> {
        let req = Request::TaskCancel {
            task: id.to_string(),
            fail,
        };
        match self.call(req).await.map_err(older_daemon("task_cancel"))?.1 {
            Response::Task(info) => Ok(info),
            other => Err(unexpected("task", &other)),
        }
    }

    /// Decides a pending permission request of a task's agent.
    pub async fn task_decide(&self, decide: crate::TaskDecide) -> Result<TaskInfo, DaemonError> {
        match self
            .call(Request::TaskDecide(decide))
            .await
            .map_err(older_daemon("task_decide"))?
            .1
        {
            Response::Task(info) => Ok(info),
            other => Err(unexpected("task", &other)),
        }
    }

    pub async fn task_get(&self, id: &TaskId) -> Result<TaskInfo, DaemonError> {
        let req = Request::TaskGet {
            task: id.to_string(),
        };
        match self.call(req).await.map_err(older_daemon("task_get"))?.1 {
            Response::Task(info) => Ok(info),
            other => Err(unexpected("task", &other)),
        }
    }

    /// All tasks the daemon knows, in creation order.
    pub async fn task_list(&self) -> Result<Vec<TaskInfo>, DaemonError> {
        match self
            .call(Request::TaskList)
            .await
            .map_err(older_daemon("task_list"))?
            .1
        {
            Response::Tasks { tasks } => Ok(tasks),
            other => Err(unexpected("tasks", &other)),
        }
    }

    /// Subscribes to a task's events with `seq > after`: every buffered one
    /// in order, then live ones, with no gap or duplicate in between. The
    /// stream stays open (a completed task may get a follow-up) until it is
    /// dropped or the task is forgotten by the daemon.
    pub async fn task_events(
        &self,
        id: &TaskId,
        after: u64,
    ) -> Result<TaskEventStream, DaemonError> {
        let req = Request::TaskEvents {
            task: id.to_string(),
            after,
        };
        match self.call(req).await.map_err(older_daemon("task_events"))? {
            (conn, Response::TaskSubscribed { task }) => Ok(TaskEventStream {
                info: task,
                rd: conn.rd,
                _wr: conn.wr,
                protocol: conn.protocol,
                buf: BytesMut::new(),
                done: false,
            }),
            (_, other) => Err(unexpected("task_subscribed", &other)),
        }
    }
}

/// A subscription to a task's events (see [`DaemonClient::task_events`]).
/// Dropping it unsubscribes.
pub struct TaskEventStream {
    info: TaskInfo,
    rd: ReadHalf<UnixStream>,
    /// Kept so that the socket is not half-closed (the daemon would take it
    /// for the client going away).
    _wr: WriteHalf<UnixStream>,
    protocol: u32,
    buf: BytesMut,
    done: bool,
}

impl TaskEventStream {
    /// The task as it was when subscribing.
    pub fn info(&self) -> &TaskInfo {
        &self.info
    }

    /// The next event; `Ok(None)` once the daemon ended the stream (the task
    /// was forgotten, or the daemon stopped). Cancel-safe: it may be raced in
    /// `tokio::select!` without losing events.
    pub async fn next(&mut self) -> Result<Option<TaskEvent>, DaemonError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let frame = match decode_frame(&mut self.buf) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    let n = match self.rd.read_buf(&mut self.buf).await {
                        Ok(n) => n,
                        Err(e) => {
                            self.done = true;
                            return Err(e.into());
                        }
                    };
                    if n == 0 {
                        self.done = true;
                        if !self.buf.is_empty() {
                            return Err(DaemonError::Protocol(
                                "the daemon closed the task event stream mid-frame".into(),
                            ));
                        }
                    }
                    continue;
                }
                Err(e) => {
                    self.done = true;
                    return Err(e.into());
                }
            };
            if frame.kind != FrameKind::Control {
                return Err(DaemonError::Protocol(format!(
                    "unexpected {:?} frame in a task event stream",
                    frame.kind
                )));
            }
            return match parse_response(&frame, self.protocol) {
                Ok(Response::TaskEvent { event }) => Ok(Some(event)),
                Ok(other) => Err(unexpected("task_event", &other)),
                Err(e) => {
                    self.done = true;
                    Err(e)
                }
            };
        }
    }
}

/// What a running exec produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    /// The exit code; killed by signal N => 128+N. The last event.
    Exit(i32),
}

/// A running exec. Dropping it (both halves, if split) disconnects, and the
/// daemon then kills the process group if the process is still running.
pub struct ExecStream {
    pid: u32,
    input: ExecInput,
    output: ExecOutputStream,
}

impl ExecStream {
    /// The process id inside the workspace (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Writes to the process's stdin (ignored by the daemon if the request had `stdin: false`).
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<(), DaemonError> {
        self.input.write_stdin(data).await
    }

    /// Closes the process's stdin (it sees EOF).
    pub async fn close_stdin(&mut self) -> Result<(), DaemonError> {
        self.input.close_stdin().await
    }

    /// The next event; `Ok(None)` after [`ExecEvent::Exit`].
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, DaemonError> {
        self.output.next().await
    }

    /// Splits into halves usable from two tasks.
    pub fn split(self) -> (ExecInput, ExecOutputStream) {
        (self.input, self.output)
    }
}

/// The stdin half of an [`ExecStream`].
pub struct ExecInput {
    wr: WriteHalf<UnixStream>,
    stdin_open: bool,
}

impl ExecInput {
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<(), DaemonError> {
        if !self.stdin_open {
            return Err(DaemonError::Invalid("stdin is already closed".into()));
        }
        write_data(
            &mut self.wr,
            FrameKind::Stdin,
            &Bytes::copy_from_slice(data),
        )
        .await?;
        Ok(())
    }

    /// Idempotent.
    pub async fn close_stdin(&mut self) -> Result<(), DaemonError> {
        if self.stdin_open {
            self.stdin_open = false;
            write_control(&mut self.wr, &Request::StdinEof).await?;
        }
        Ok(())
    }
}

/// The output half of an [`ExecStream`].
pub struct ExecOutputStream {
    rd: ReadHalf<UnixStream>,
    protocol: u32,
    done: bool,
}

impl ExecOutputStream {
    /// The next event; `Ok(None)` after [`ExecEvent::Exit`].
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, DaemonError> {
        if self.done {
            return Ok(None);
        }
        let Some(frame) = read_frame(&mut self.rd).await? else {
            self.done = true;
            return Err(DaemonError::Protocol(
                "the daemon closed the exec stream before the process exited".into(),
            ));
        };
        match frame.kind {
            FrameKind::Stdout => Ok(Some(ExecEvent::Stdout(frame.payload))),
            FrameKind::Stderr => Ok(Some(ExecEvent::Stderr(frame.payload))),
            FrameKind::Control => match parse_response(&frame, self.protocol) {
                Ok(Response::Exit { code }) => {
                    self.done = true;
                    Ok(Some(ExecEvent::Exit(code)))
                }
                Ok(other) => Err(unexpected("exec output", &other)),
                Err(e) => {
                    self.done = true;
                    Err(e)
                }
            },
            FrameKind::Stdin => Err(DaemonError::Protocol("unexpected stdin frame".into())),
        }
    }
}

/// What an attached client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachEvent {
    /// First the whole scrollback replay (one event), then live output.
    Output(Bytes),
    /// The session's process exited with this code (signal N => 128+N).
    Exit(i32),
}

/// An attachment to a session. Dropping it (both halves, if split) detaches.
pub struct AttachStream {
    session: SessionInfo,
    input: AttachInput,
    output: AttachOutput,
}

impl AttachStream {
    /// The session as it was when attaching (size already applied).
    pub fn info(&self) -> &SessionInfo {
        &self.session
    }

    pub async fn send_input(&mut self, data: &[u8]) -> Result<(), DaemonError> {
        self.input.send_input(data).await
    }

    pub async fn resize(&mut self, cols: u16, rows: u16) -> Result<(), DaemonError> {
        self.input.resize(cols, rows).await
    }

    pub async fn next(&mut self) -> Result<Option<AttachEvent>, DaemonError> {
        self.output.next().await
    }

    /// Detaches; the session keeps running.
    pub async fn detach(self) -> Result<(), DaemonError> {
        self.input.detach().await
    }

    /// Splits into halves usable from two tasks.
    pub fn split(self) -> (AttachInput, AttachOutput) {
        (self.input, self.output)
    }
}

/// The input half of an [`AttachStream`].
pub struct AttachInput {
    wr: WriteHalf<UnixStream>,
}

impl AttachInput {
    /// Sends keystrokes / bytes to the terminal.
    pub async fn send_input(&mut self, data: &[u8]) -> Result<(), DaemonError> {
        write_data(
            &mut self.wr,
            FrameKind::Stdin,
            &Bytes::copy_from_slice(data),
        )
        .await?;
        Ok(())
    }

    /// Resizes the terminal (the last resize of any client wins).
    pub async fn resize(&mut self, cols: u16, rows: u16) -> Result<(), DaemonError> {
        if cols == 0 || rows == 0 {
            return Err(DaemonError::Invalid(
                "cols and rows must be at least 1".into(),
            ));
        }
        write_control(&mut self.wr, &Request::Resize { cols, rows }).await?;
        Ok(())
    }

    /// Detaches; the session keeps running. The output half then ends with `Ok(None)`.
    pub async fn detach(mut self) -> Result<(), DaemonError> {
        write_control(&mut self.wr, &Request::Detach).await?;
        Ok(())
    }
}

/// The output half of an [`AttachStream`].
pub struct AttachOutput {
    rd: ReadHalf<UnixStream>,
    protocol: u32,
    pending: VecDeque<AttachEvent>,
    done: bool,
}

impl AttachOutput {
    /// The next event; `Ok(None)` after [`AttachEvent::Exit`] or a detach.
    /// A client that lagged behind the output gets [`DaemonError::Protocol`]
    /// and may re-attach.
    pub async fn next(&mut self) -> Result<Option<AttachEvent>, DaemonError> {
        if let Some(ev) = self.pending.pop_front() {
            return Ok(Some(ev));
        }
        if self.done {
            return Ok(None);
        }
        let frame = match read_frame(&mut self.rd).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                self.done = true;
                return Ok(None);
            }
            Err(e) => {
                self.done = true;
                return Err(e.into());
            }
        };
        match frame.kind {
            FrameKind::Stdout => Ok(Some(AttachEvent::Output(frame.payload))),
            FrameKind::Control => match parse_response(&frame, self.protocol) {
                Ok(Response::Exit { code }) => {
                    self.done = true;
                    Ok(Some(AttachEvent::Exit(code)))
                }
                Ok(other) => Err(unexpected("session output", &other)),
                Err(e) => {
                    self.done = true;
                    Err(e)
                }
            },
            kind => Err(DaemonError::Protocol(format!(
                "unexpected {kind:?} frame while attached"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    //! A fake daemon on a real socket: what a workspace can put behind `daemon.sock`.
    use super::*;
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::net::UnixListener;

    use crate::proto::write_frame;

    fn quick() -> Timeouts {
        let t = Duration::from_millis(300);
        Timeouts {
            hello: t,
            response: t,
            slow_response: t,
            task_start: t,
            collect: t,
        }
    }

    fn hello_ok() -> Response {
        Response::HelloOk(DaemonInfo {
            protocol: PROTOCOL_VERSION,
            version: "fake".into(),
            pid: 1,
            started_at: berth_domain::Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            uid: 1000,
            sessions: 0,
        })
    }

    /// Serves a fake daemon that answers the handshake (if `greet`) and then runs `then` on
    /// each connection, after reading the request.
    fn fake<F, Fut>(greet: bool, then: F) -> (tempfile::TempDir, DaemonClient)
    where
        F: Fn(UnixStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let then = Arc::new(then);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let then = then.clone();
                tokio::spawn(async move {
                    let _hello = read_frame(&mut s).await;
                    if greet {
                        write_control(&mut s, &hello_ok()).await.unwrap();
                        let _request = read_frame(&mut s).await;
                    }
                    then(s).await;
                });
            }
        });
        let client = DaemonClient::new(path).with_timeouts(quick());
        (dir, client)
    }

    async fn hold(s: UnixStream) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(s);
    }

    fn assert_quick(started: Instant) {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_silent_daemon_costs_one_deadline() {
        let (_dir, client) = fake(true, hold);
        let started = Instant::now();
        let e = client.session_list().await.unwrap_err();
        assert!(matches!(e, DaemonError::Unreachable(_)), "{e}");
        assert!(e.to_string().contains("did not arrive"), "{e}");
        assert_quick(started);
        let e = client
            .task_get(&TaskId::from_stored("t1".into()))
            .await
            .unwrap_err();
        assert!(matches!(e, DaemonError::Unreachable(_)), "{e}");
    }

    #[tokio::test]
    async fn a_daemon_silent_in_the_handshake_costs_one_deadline() {
        let (_dir, client) = fake(false, hold);
        let started = Instant::now();
        let e = client.hello().await.unwrap_err();
        assert!(matches!(e, DaemonError::Unreachable(_)), "{e}");
        assert_quick(started);
    }

    #[tokio::test]
    async fn a_huge_announced_capture_is_refused_before_reading() {
        let (_dir, client) = fake(true, |mut s: UnixStream| async move {
            let resp = Response::Capture { len: 4 << 30 };
            write_control(&mut s, &resp).await.unwrap();
            hold(s).await;
        });
        let started = Instant::now();
        let e = client.session_capture("main").await.unwrap_err();
        assert!(
            matches!(&e, DaemonError::Protocol(m) if m.contains("at most")),
            "{e}"
        );
        assert_quick(started);
    }

    #[tokio::test]
    async fn a_capture_that_never_arrives_or_overflows_is_an_error() {
        // Announces 100 bytes, sends 10, then nothing.
        let (_dir, client) = fake(true, |mut s: UnixStream| async move {
            write_control(&mut s, &Response::Capture { len: 100 })
                .await
                .unwrap();
            let part = Frame::data(FrameKind::Stdout, Bytes::from_static(b"0123456789"));
            write_frame(&mut s, &part).await.unwrap();
            hold(s).await;
        });
        let started = Instant::now();
        let e = client.session_capture("main").await.unwrap_err();
        assert!(matches!(e, DaemonError::Unreachable(_)), "{e}");
        assert_quick(started);
        // Announces 4 bytes, sends 10.
        let (_dir, client) = fake(true, |mut s: UnixStream| async move {
            write_control(&mut s, &Response::Capture { len: 4 })
                .await
                .unwrap();
            let more = Frame::data(FrameKind::Stdout, Bytes::from_static(b"0123456789"));
            write_frame(&mut s, &more).await.unwrap();
            hold(s).await;
        });
        let e = client.session_capture("main").await.unwrap_err();
        assert!(matches!(e, DaemonError::Protocol(_)), "{e}");
    }

    #[tokio::test]
    async fn a_process_that_never_exits_costs_one_deadline() {
        // Starts the "process", sends some output, never an exit code.
        let (_dir, client) = fake(true, |mut s: UnixStream| async move {
            write_control(&mut s, &Response::ExecStarted { pid: 7 })
                .await
                .unwrap();
            let out = Frame::data(FrameKind::Stdout, Bytes::from_static(b"partial"));
            write_frame(&mut s, &out).await.unwrap();
            hold(s).await;
        });
        let started = Instant::now();
        let e = client
            .exec_collect(ExecRequest::new(["git", "diff"]), 1024)
            .await
            .unwrap_err();
        assert!(matches!(e, DaemonError::Unreachable(_)), "{e}");
        assert_quick(started);
    }

    #[test]
    fn slow_requests_get_longer_deadlines() {
        let t = Timeouts::default();
        assert_eq!(t.for_request(&Request::SessionList), t.response);
        let kill = Request::SessionKill {
            session: "x".into(),
        };
        assert_eq!(t.for_request(&kill), t.slow_response);
        assert!(t.task_start > Duration::from_secs(300));
    }
}
