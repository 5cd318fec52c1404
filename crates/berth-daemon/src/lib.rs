//! The berth workspace daemon (`berth workspace-daemon`) and its client.
//!
//! The daemon runs inside every workspace container (uid 1000, `HOME=/home/agent`)
//! and listens on a Unix socket ([`DEFAULT_SOCKET`], inside a directory that is
//! bind-mounted from the host). It owns:
//!
//! * **PTY sessions**: persistent terminals (like tmux). A session keeps running
//!   with no client attached, keeps a bounded scrollback (1 MiB by default) that
//!   is replayed on attach, and any number of clients may attach at once.
//!   Sessions survive the server disconnecting; nothing in the daemon depends on
//!   a connected client.
//! * **exec processes**: one-shot commands run with pipes (no PTY), stdout and
//!   stderr streamed separately, optional stdin, exit code.
//! * **agent tasks**: an agent CLI run in its structured headless mode, one
//!   process per turn, or one long-lived protocol process per task kept
//!   between turns (codex app-server) (the [`berth_agents::Driver`] builds the
//!   command and the protocol lines and parses its stdout). The daemon numbers every event (`seq`, per task,
//!   contiguous from 1), buffers them in memory (the newest 100 000 per task)
//!   and serves them to any number of subscribers, replay first, then live.
//!   Tasks keep running when the server goes away; the server catches up with
//!   `task_events{after}`.
//! * **the gateway relay**: a loopback TCP port ([`GATEWAY_PORT`]) relayed to
//!   the server's gateway socket ([`DEFAULT_GATEWAY_SOCKET`]), so agents reach
//!   the LLM gateway with no network.
//!
//! The server side uses [`client::DaemonClient`]; the daemon side is
//! [`server::run`].
//!
//! # Wire protocol (version [`PROTOCOL_VERSION`])
//!
//! A connection carries a sequence of frames in both directions:
//!
//! ```text
//! frame   = length:u32 (big endian) kind:u8 payload
//! length  = 1 + payload length, at most 1 MiB (MAX_FRAME); larger frames are rejected
//! kind    = 0 control  (payload: one JSON object, tagged by its "type" field)
//!           1 stdout   (exec stdout, or session output; daemon -> client)
//!           2 stderr   (exec stderr; daemon -> client)
//!           3 stdin    (exec stdin, or session input; client -> daemon)
//! ```
//!
//! Control messages are [`proto::Request`] (client to daemon) and
//! [`proto::Response`] (daemon to client), `snake_case` JSON with a `"type"` tag.
//! Unknown JSON fields are ignored.
//!
//! Every connection starts with a handshake:
//!
//! ```text
//! client: {"type":"hello","protocol":1,"client":"<version>"}
//! daemon: {"type":"hello_ok", ...DaemonInfo}                                    or
//!         {"type":"error","code":"incompatible","message":"..","daemon_protocol":1}
//! ```
//!
//! The framing, the `hello` message and the `incompatible` error are frozen
//! across protocol versions, so that any client can tell which version a daemon
//! speaks. After the handshake the client sends exactly **one** request; the
//! connection then serves that request only:
//!
//! | request | daemon answers |
//! | --- | --- |
//! | `exec` (an [`ExecRequest`]) | `exec_started{pid}`, then stdout/stderr frames, then `exit{code}`; the client sends stdin frames and `stdin_eof` |
//! | `session_create` (a [`SessionCreate`]) | `session` (a [`SessionInfo`]) |
//! | `session_list` | `sessions{sessions}` |
//! | `session_get{session}` | `session` |
//! | `session_capture{session}` | `capture{len}` then stdout frames carrying exactly `len` bytes |
//! | `session_kill{session}` | `ok` once the session has exited |
//! | `session_remove{session}` | `ok` |
//! | `session_attach{session,cols,rows}` | `attached{session,replay_len}`, stdout frames carrying exactly `replay_len` bytes of scrollback, then live stdout frames and finally `exit{code}`; the client sends stdin frames, `resize{cols,rows}` and `detach` |
//!
//! | `task_start` (a [`TaskStart`]) | `task` (a [`TaskInfo`]) once the agent is spawned or the task failed to start |
//! | `task_send{task,text}` | `task` once the next turn's agent is spawned |
//! | `task_cancel{task}` | `task` once the task is cancelled |
//! | `task_get{task}` | `task` |
//! | `task_decide` (a [`TaskDecide`]) | `task` once the agent has been told the decision on its pending permission request |
//! | `task_list` | `tasks{tasks}` |
//! | `task_events{task,after}` | `task_subscribed{task}`, then `task_event{event}` for every event with `seq > after`, buffered then live, until the client leaves or the task is forgotten (end of stream) |
//!
//! A request type the daemon does not know is answered by a `protocol` error
//! whose message starts with `unknown request "<type>"`.
//!
//! Any request may instead be answered by `error{code,message}` where `code` is
//! one of [`proto::ErrorCode`]; the client maps it into [`DaemonError`].
//! `session` arguments accept a session id or a session name.
//!
//! A client must not half-close its side of the socket: end of stream on the
//! daemon's read side means the client is gone (a running exec is then killed,
//! an attach is detached).
//!
//! An attached client that does not keep up with the session output is
//! disconnected with an `error` of code `lagged` (it may re-attach; the replay
//! then catches it up), so a slow client never blocks a session or other clients.

pub mod access;
pub mod chanfs;
pub mod client;
pub mod conn_limit;
pub mod proto;
pub mod server;
mod sys;

pub use client::*;
pub use proto::{
    DaemonInfo, ExecOutput, ExecRequest, SessionCreate, SessionInfo, SessionState, TaskDecide,
    TaskInfo, TaskStart, Worktree,
};
pub use server::{spawn_gateway_relay, DriverFactory};

/// The version of the wire protocol; bumped when the wire changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

/// Where the daemon listens inside the workspace container: in the one agent-writable
/// directory of the channel ([`DAEMON_DIR`]), mounted over the read-only `/run/berth`.
pub const DEFAULT_SOCKET: &str = "/run/berth/daemon/daemon.sock";

/// The agent-writable subdirectory of the channel directory, holding only `daemon.sock`
/// (see [`chanfs`]).
pub const DAEMON_DIR: &str = "daemon";

/// The loopback port inside the workspace where the daemon relays to the LLM
/// gateway (`http://127.0.0.1:7788/...`).
pub const GATEWAY_PORT: u16 = 7788;

/// The Unix socket (inside the workspace) on which the server's gateway
/// listens; the daemon's gateway relay connects to it.
pub const DEFAULT_GATEWAY_SOCKET: &str = "/run/berth/gateway.sock";

/// Port of the egress-proxy relay inside a workspace (`HTTP(S)_PROXY=http://127.0.0.1:3128`).
pub const EGRESS_PORT: u16 = 3128;

/// The server's egress-proxy socket as a workspace sees it.
pub const DEFAULT_EGRESS_SOCKET: &str = "/run/berth/egress.sock";

fn incompatible_message(daemon: u32, client: u32) -> String {
    let hint = if daemon < client {
        "this workspace runs an older daemon; restart the workspace to upgrade it"
    } else {
        "this workspace runs a newer daemon than the server; upgrade the server"
    };
    format!("daemon speaks protocol {daemon}, client speaks protocol {client}: {hint}")
}

/// Errors returned by [`DaemonClient`].
#[derive(thiserror::Error, Debug)]
pub enum DaemonError {
    /// The socket is missing or refuses connections: the daemon is not running.
    #[error("workspace daemon unreachable: {0}")]
    Unreachable(String),
    /// The handshake found a protocol mismatch.
    #[error("incompatible workspace daemon: {}", incompatible_message(*daemon, *client))]
    Incompatible { daemon: u32, client: u32 },
    /// No session with that id or name.
    #[error("not found: {0}")]
    NotFound(String),
    /// E.g. the session name is taken, or removing a running session.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A bad request (empty argv, cols = 0, bad name, missing cwd...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The command could not be started (command not found, permission denied...).
    #[error("spawn failed: {0}")]
    SpawnFailed(String),
    /// The daemon said something unexpected, or dropped a client that lagged.
    #[error("daemon protocol error: {0}")]
    Protocol(String),
    /// An I/O error on the connection, or an internal error in the daemon.
    #[error("daemon i/o error: {0}")]
    Io(#[from] std::io::Error),
}
