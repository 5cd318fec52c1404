//! Wire types and framing of the daemon protocol (see the crate docs).

use std::io;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::PathBuf;

use berth_agents::TurnSpec;
use berth_domain::{Agent, TaskEvent, TaskState, Timestamp};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest allowed frame (kind byte + payload), in bytes.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Most a reader sets aside for a frame before its bytes arrive.
const PREALLOC: usize = 64 * 1024;

/// Data frames are split into chunks of at most this many bytes.
pub const DATA_CHUNK: usize = 64 * 1024;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// One JSON [`Request`] or [`Response`].
    Control = 0,
    /// Exec stdout, or session output.
    Stdout = 1,
    /// Exec stderr.
    Stderr = 2,
    /// Exec stdin, or session input.
    Stdin = 3,
}

impl FrameKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Control),
            1 => Some(Self::Stdout),
            2 => Some(Self::Stderr),
            3 => Some(Self::Stdin),
            _ => None,
        }
    }
}

/// One frame on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Bytes,
}

impl Frame {
    /// A control frame holding `msg` as JSON.
    pub fn control<T: Serialize>(msg: &T) -> io::Result<Frame> {
        let payload = serde_json::to_vec(msg).map_err(io::Error::other)?;
        Ok(Frame {
            kind: FrameKind::Control,
            payload: Bytes::from(payload),
        })
    }

    /// A data frame.
    pub fn data(kind: FrameKind, payload: Bytes) -> Frame {
        Frame { kind, payload }
    }

    /// Parses the JSON payload of a control frame.
    pub fn parse<T: DeserializeOwned>(&self) -> io::Result<T> {
        if self.kind != FrameKind::Control {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected a control frame, got {:?}", self.kind),
            ));
        }
        serde_json::from_slice(&self.payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Reads one frame; `Ok(None)` on a clean end of stream at a frame boundary.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame length {len} (max {MAX_FRAME})"),
        ));
    }
    let kind = r.read_u8().await?;
    let kind = FrameKind::from_u8(kind).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {kind}"),
        )
    })?;
    // Grown as bytes arrive: a peer announcing a large frame and sending nothing costs nothing.
    let mut payload = Vec::with_capacity((len - 1).min(PREALLOC));
    (&mut *r)
        .take((len - 1) as u64)
        .read_to_end(&mut payload)
        .await?;
    if payload.len() != len - 1 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(Frame {
        kind,
        payload: Bytes::from(payload),
    }))
}

/// Takes one complete frame off the front of `buf`, if it holds one
/// (`Ok(None)`: more bytes needed). Lets a reader buffer its input so that
/// reading stays cancel-safe.
pub fn decode_frame(buf: &mut bytes::BytesMut) -> io::Result<Option<Frame>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame length {len} (max {MAX_FRAME})"),
        ));
    }
    if buf.len() < 4 + len {
        buf.reserve((4 + len - buf.len()).min(PREALLOC));
        return Ok(None);
    }
    let kind = buf[4];
    let kind = FrameKind::from_u8(kind).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {kind}"),
        )
    })?;
    let mut frame = buf.split_to(4 + len);
    let payload = frame.split_off(5).freeze();
    Ok(Some(Frame { kind, payload }))
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> io::Result<()> {
    let len = frame.payload.len() + 1;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {len} bytes exceeds the maximum of {MAX_FRAME}"),
        ));
    }
    let mut buf = Vec::with_capacity(5 + frame.payload.len());
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    buf.push(frame.kind as u8);
    buf.extend_from_slice(&frame.payload);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Writes `data` as data frames of at most [`DATA_CHUNK`] bytes each.
pub async fn write_data<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: FrameKind,
    data: &Bytes,
) -> io::Result<()> {
    let mut off = 0;
    while off < data.len() {
        let end = (off + DATA_CHUNK).min(data.len());
        write_frame(w, &Frame::data(kind, data.slice(off..end))).await?;
        off = end;
    }
    Ok(())
}

/// Writes a control message.
pub async fn write_control<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> io::Result<()> {
    write_frame(w, &Frame::control(msg)?).await
}

/// Messages from the client to the daemon.
// One request per connection, decoded once: a boxed `TaskStart` would save nothing worth its
// noise at every construction site.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// First frame of every connection. Frozen across protocol versions.
    Hello {
        protocol: u32,
        /// The client's software version, for logs.
        #[serde(default)]
        client: String,
    },
    Exec(ExecRequest),
    SessionCreate(SessionCreate),
    SessionList,
    SessionGet {
        session: String,
    },
    SessionCapture {
        session: String,
    },
    SessionKill {
        session: String,
    },
    SessionRemove {
        session: String,
    },
    SessionAttach {
        session: String,
        cols: u16,
        rows: u16,
    },
    /// During an exec: no more stdin (the process sees EOF).
    StdinEof,
    /// During an attach: set the terminal size (the last resize wins).
    Resize {
        cols: u16,
        rows: u16,
    },
    /// During an attach: detach; the session keeps running.
    Detach,
    /// Start an agent task (its first turn).
    TaskStart(TaskStart),
    /// Send a follow-up message (the next turn).
    TaskSend {
        task: String,
        text: String,
        /// Stop the running turn first (as who, for the event log) and start the next one with
        /// `text` in the same conversation; without a running turn, a plain send.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interrupt: Option<String>,
    },
    TaskCancel {
        task: String,
        /// End the task `failed` with this reason instead of `cancelled`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fail: Option<String>,
    },
    TaskGet {
        task: String,
    },
    /// Decide a pending permission request of a task's agent (see [`TaskDecide`]).
    TaskDecide(TaskDecide),
    TaskList,
    /// Subscribe to a task's events with `seq > after`: buffered ones first, then live ones.
    TaskEvents {
        task: String,
        #[serde(default)]
        after: u64,
    },
}

/// Messages from the daemon to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    HelloOk(DaemonInfo),
    Error(ErrorBody),
    ExecStarted {
        pid: u32,
    },
    /// Exit code of an exec or session process (killed by signal N => 128+N).
    Exit {
        code: i32,
    },
    Session(SessionInfo),
    Sessions {
        sessions: Vec<SessionInfo>,
    },
    Ok,
    /// Followed by stdout frames carrying exactly `len` bytes.
    Capture {
        len: u64,
    },
    /// Followed by stdout frames carrying exactly `replay_len` bytes, then live output.
    Attached {
        session: SessionInfo,
        replay_len: u64,
    },
    Task(TaskInfo),
    Tasks {
        tasks: Vec<TaskInfo>,
    },
    /// Answer to `task_events`; followed by `task_event` messages.
    TaskSubscribed {
        task: TaskInfo,
    },
    /// One event of a subscribed task.
    TaskEvent {
        event: TaskEvent,
    },
}

/// The body of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// Set with [`ErrorCode::Incompatible`]: the protocol the daemon speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_protocol: Option<u32>,
}

/// Error codes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Incompatible,
    NotFound,
    Conflict,
    Invalid,
    SpawnFailed,
    Protocol,
    /// An attached client did not keep up with the output and was dropped.
    Lagged,
    Internal,
    /// A code this client does not know (sent by a newer daemon).
    #[serde(other)]
    Unknown,
}

/// Answer to the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// The protocol version the daemon speaks.
    pub protocol: u32,
    /// The daemon's software version.
    pub version: String,
    pub pid: u32,
    pub started_at: Timestamp,
    pub uid: u32,
    /// Number of sessions listed (running and exited).
    pub sessions: usize,
}

/// Run a one-shot process with pipes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// Applied on top of the daemon's environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory (relative paths are relative to the daemon's default cwd).
    #[serde(default)]
    pub cwd: Option<String>,
    /// If false, stdin is /dev/null.
    #[serde(default)]
    pub stdin: bool,
}

impl ExecRequest {
    /// A request for `argv` with no stdin, default env and cwd.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

/// Create a PTY session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCreate {
    /// Unique name, `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}`; default "main", then "shell-2", ...
    #[serde(default)]
    pub name: Option<String>,
    /// None = the daemon's default shell.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    pub cols: u16,
    pub rows: u16,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub cwd: Option<String>,
}

impl Default for SessionCreate {
    fn default() -> Self {
        SessionCreate {
            name: None,
            argv: None,
            cols: 80,
            rows: 24,
            env: Vec::new(),
            cwd: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Running,
    Exited,
    /// Its processes died with an earlier daemon (the workspace restarted): no exit code is
    /// known. Listed until removed.
    Ended,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Daemon-generated, 8 hex digits.
    pub id: String,
    pub name: String,
    pub argv: Vec<String>,
    pub pid: u32,
    pub state: SessionState,
    pub exit_code: Option<i32>,
    pub created_at: Timestamp,
    /// Number of clients currently attached.
    pub attached: u32,
    pub cols: u16,
    pub rows: u16,
    /// Current size of the scrollback.
    pub scrollback_bytes: u64,
}

/// Result of [`crate::DaemonClient::exec_collect`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// True if stdout was longer than the limit and was cut.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

impl ExecOutput {
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Start an agent task owned by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStart {
    /// Chosen by the caller: 1 to 128 of `[a-zA-Z0-9_.-]`, starting with a letter or digit.
    pub id: String,
    /// The first turn (`resume` is `None`, or the agent's session id when a task is continued
    /// in a new daemon). Later turns reuse it with another prompt.
    pub turn: TurnSpec,
    /// Run the task in a new git worktree (the turn's `cwd` becomes the worktree).
    #[serde(default)]
    pub worktree: Option<Worktree>,
    /// The caller already holds this task's events up to this seq: a task continued in a new
    /// daemon (its workspace restarted) numbers its events from `after_seq + 1`, so the log
    /// goes on without a gap. 0 for a new task.
    #[serde(default)]
    pub after_seq: u64,
    /// How long a permission request waits for a decision before the daemon denies it
    /// (seconds; 0 = the daemon's default of 30 minutes).
    #[serde(default)]
    pub approval_timeout_secs: u64,
    /// How long a long-lived agent process (codex app-server) is kept idle between turns before
    /// it is stopped (seconds; 0 = the daemon's default of 5 minutes). The next turn after that
    /// starts a new process that resumes the conversation.
    #[serde(default)]
    pub agent_idle_secs: u64,
}

/// A decision on a task's pending permission request; answered with `task` once the agent
/// has been told (`not_found` when no such request is pending).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDecide {
    pub task: String,
    /// The request's id, as in its `approval_request` event.
    pub request: String,
    pub approve: bool,
    /// Told to the agent with a denial (and recorded with either decision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who decided (recorded in the `approval_resolved` event).
    pub by: String,
    /// Approve every later request of the same tool in this task without asking.
    #[serde(default)]
    pub always: bool,
}

/// A git worktree to create for a task:
/// `git -C repo worktree add -b branch <home>/.berth/worktrees/<task id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worktree {
    pub repo: PathBuf,
    pub branch: String,
}

/// A task as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub id: String,
    pub agent: Agent,
    pub state: TaskState,
    /// The `seq` of the newest event (0: none yet).
    pub last_seq: u64,
    /// The agent's own conversation id, once reported (used to resume).
    pub agent_session_id: Option<String>,
    /// Process (and process group) id of the running turn's agent.
    pub pid: Option<u32>,
    /// Why the task failed.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frame_roundtrip() {
        let mut buf = Vec::new();
        write_control(
            &mut buf,
            &Request::Hello {
                protocol: 7,
                client: "x".into(),
            },
        )
        .await
        .unwrap();
        write_frame(
            &mut buf,
            &Frame::data(FrameKind::Stdin, Bytes::from_static(b"abc")),
        )
        .await
        .unwrap();
        let mut r = &buf[..];
        let f = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(
            f.parse::<Request>().unwrap(),
            Request::Hello {
                protocol: 7,
                client: "x".into()
            }
        );
        let f = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(f.kind, FrameKind::Stdin);
        assert_eq!(&f.payload[..], b"abc");
        assert!(read_frame(&mut r).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn rejects_bad_frames() {
        let big = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let mut r = &big[..];
        assert!(read_frame(&mut r).await.is_err());
        let zero = [0u8, 0, 0, 0];
        let mut r = &zero[..];
        assert!(read_frame(&mut r).await.is_err());
        let bad_kind = [0u8, 0, 0, 1, 9];
        let mut r = &bad_kind[..];
        assert!(read_frame(&mut r).await.is_err());
        let truncated = [0u8, 0, 0, 5, 1, b'a'];
        let mut r = &truncated[..];
        assert!(read_frame(&mut r).await.is_err());
        let partial_len = [0u8, 0];
        let mut r = &partial_len[..];
        assert!(read_frame(&mut r).await.is_err());
        let mut sink = Vec::new();
        let huge = Frame::data(FrameKind::Stdout, Bytes::from(vec![0u8; MAX_FRAME]));
        assert!(write_frame(&mut sink, &huge).await.is_err());
    }

    #[test]
    fn json_shapes() {
        let v = serde_json::to_value(Request::SessionAttach {
            session: "main".into(),
            cols: 80,
            rows: 24,
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"session_attach","session":"main","cols":80,"rows":24})
        );
        let v = serde_json::to_value(Request::Exec(ExecRequest::new(["ls"]))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"exec","argv":["ls"],"env":[],"cwd":null,"stdin":false})
        );
        let e: Response =
            serde_json::from_str(r#"{"type":"error","code":"brand_new","message":"m","extra":1}"#)
                .unwrap();
        assert_eq!(
            e,
            Response::Error(ErrorBody {
                code: ErrorCode::Unknown,
                message: "m".into(),
                daemon_protocol: None
            })
        );
        let st = serde_json::to_value(SessionState::Exited).unwrap();
        assert_eq!(st, serde_json::json!("exited"));
        // A hello from a future client with extra fields still parses.
        let h: Request =
            serde_json::from_str(r#"{"type":"hello","protocol":9,"features":["x"]}"#).unwrap();
        assert_eq!(
            h,
            Request::Hello {
                protocol: 9,
                client: String::new()
            }
        );
    }
}
