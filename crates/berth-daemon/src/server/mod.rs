//! The daemon: listens on the Unix socket and serves the protocol.

mod exec;
mod journal;
mod relay;
mod session;
mod task;

pub use relay::spawn_gateway_relay;
pub use task::DriverFactory;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

use crate::proto::{
    read_frame, write_control, write_data, DaemonInfo, ErrorBody, ErrorCode, FrameKind, Request,
    Response, SessionCreate, SessionInfo,
};
use crate::sys::{self, lock};
use crate::{DEFAULT_GATEWAY_SOCKET, DEFAULT_SOCKET, PROTOCOL_VERSION};
use session::{Session, SessionEvent, SpawnSpec};
use task::TaskManager;

/// How long a new connection may take to say hello, and then to send its request.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a session gets to exit after SIGHUP before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Configuration of the daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where to listen.
    pub socket: PathBuf,
    /// Scrollback kept per session, in bytes (default 1 MiB).
    pub scrollback_bytes: usize,
    /// Command of sessions created without argv (default `/bin/bash -l`;
    /// `/bin/sh` is used if the program does not exist).
    pub default_shell: Vec<String>,
    /// Working directory of children that ask for none (default `$HOME`, or `/`).
    pub default_cwd: PathBuf,
    /// Permissions of the socket file (default 0600).
    pub socket_mode: u32,
    /// Exited sessions kept listed (with their scrollback) before the oldest are forgotten (default 50).
    pub max_exited_sessions: usize,
    /// Where the gateway relay listens (the binary uses `127.0.0.1:`[`crate::GATEWAY_PORT`]);
    /// `None` (the default): no relay.
    pub gateway_listen: Option<SocketAddr>,
    /// The server's gateway socket the relay connects to (default [`DEFAULT_GATEWAY_SOCKET`]).
    pub gateway_socket: PathBuf,
    /// Where the egress-proxy relay listens (the binary uses `127.0.0.1:`[`crate::EGRESS_PORT`]);
    /// `None` (the default): no relay.
    pub egress_listen: Option<SocketAddr>,
    /// The server's egress-proxy socket (default [`crate::DEFAULT_EGRESS_SOCKET`]).
    pub egress_socket: PathBuf,
    /// Makes the agent driver of each turn (default [`berth_agents::driver`]).
    pub drivers: DriverFactory,
    /// Events buffered per task; beyond it the oldest are dropped (default 100 000).
    pub task_event_buffer: usize,
    /// Failed and cancelled tasks kept before the oldest are forgotten (default 200).
    pub max_finished_tasks: usize,
    /// Where the sessions are written down, so that a daemon started after a restart of the
    /// workspace lists the ones that died as `ended` (the binary uses
    /// `$HOME/.berth/sessions.json`); `None` (the default): nowhere.
    pub session_journal: Option<PathBuf>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(|| PathBuf::from("/"));
        DaemonOptions {
            socket: PathBuf::from(DEFAULT_SOCKET),
            scrollback_bytes: 1024 * 1024,
            default_shell: vec!["/bin/bash".into(), "-l".into()],
            default_cwd: home,
            socket_mode: 0o600,
            max_exited_sessions: 50,
            gateway_listen: None,
            gateway_socket: PathBuf::from(DEFAULT_GATEWAY_SOCKET),
            egress_listen: None,
            egress_socket: PathBuf::from(crate::DEFAULT_EGRESS_SOCKET),
            drivers: DriverFactory::default(),
            task_event_buffer: 100_000,
            max_finished_tasks: 200,
            session_journal: None,
        }
    }
}

/// Binds the socket (removing a stale file first), starts the gateway relay
/// (if configured; a relay that cannot bind is logged, not fatal), serves
/// until SIGTERM or SIGINT, then kills every session, exec and task process
/// group and removes the socket.
pub async fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    run_until(opts, async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
        }
    })
    .await
}

/// Like [`run`], but stops when `shutdown` completes instead of on a signal.
pub async fn run_until<F>(opts: DaemonOptions, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()>,
{
    let listener = bind(&opts.socket, opts.socket_mode).await?;
    let socket = opts.socket.clone();
    // Loopback ports inside the workspace relayed to the server's sockets in the channel
    // directory: the only ways out of a workspace with no network.
    let mut relays = Vec::new();
    // The proxy takes connections over whole (no second hop) when it serves a handoff socket.
    let handoff = opts
        .egress_socket
        .with_file_name(berth_egress::handoff::SOCKET_NAME);
    for (listen, target, handoff, what) in [
        (
            opts.gateway_listen,
            &opts.gateway_socket,
            None,
            "LLM gateway",
        ),
        (
            opts.egress_listen,
            &opts.egress_socket,
            Some(handoff),
            "egress proxy",
        ),
    ] {
        let Some(addr) = listen else { continue };
        match relay::spawn_relay(addr, target.clone(), handoff).await {
            Ok((_, task)) => relays.push(task),
            Err(e) => {
                tracing::error!(listen = %addr, error = %e, "cannot start the {what} relay");
            }
        }
    }
    let daemon = Daemon::new(opts);
    tracing::info!(
        socket = %socket.display(),
        protocol = PROTOCOL_VERSION,
        version = env!("CARGO_PKG_VERSION"),
        "workspace daemon listening"
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let d = daemon.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle_connection(d, stream).await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    for relay in relays {
        relay.abort();
    }
    if let Err(e) = std::fs::remove_file(&socket) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(error = %e, "removing the socket");
        }
    }
    daemon.shutdown().await;
    tracing::info!("workspace daemon stopped");
    Ok(())
}

async fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if meta.is_dir() {
                anyhow::bail!("{} is a directory", path.display());
            }
            if meta.file_type().is_socket() && UnixStream::connect(path).await.is_ok() {
                anyhow::bail!("another daemon is already listening on {}", path.display());
            }
            tracing::info!(socket = %path.display(), "removing stale socket file");
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

/// An error answer to a request.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
    pub(crate) fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, m)
    }
    pub(crate) fn spawn_failed(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::SpawnFailed, m)
    }
    pub(crate) fn invalid(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, m)
    }
    pub(crate) fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, m)
    }
    pub(crate) fn conflict(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, m)
    }
    fn protocol(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Protocol, m)
    }
    fn into_response(self) -> Response {
        Response::Error(ErrorBody {
            code: self.code,
            message: self.message,
            daemon_protocol: None,
        })
    }
}

/// The daemon's state, shared by all connections.
pub(crate) struct Daemon {
    opts: DaemonOptions,
    started_at: String,
    /// In creation order.
    sessions: Mutex<Vec<Arc<Session>>>,
    /// Sessions of an earlier daemon (from the journal), listed as ended until removed.
    ended: Mutex<Vec<SessionInfo>>,
    /// Shutting down: the sessions killed now are written down as running (so the next daemon
    /// lists them as ended), not as exited.
    closing: std::sync::atomic::AtomicBool,
    /// Serializes session creation (name and id checks, then insertion).
    create_lock: tokio::sync::Mutex<()>,
    /// Process groups of running exec processes.
    execs: Mutex<HashSet<u32>>,
    tasks: TaskManager,
    me: Weak<Daemon>,
}

impl Daemon {
    fn new(opts: DaemonOptions) -> Arc<Daemon> {
        let tasks = TaskManager::new(
            opts.drivers.clone(),
            opts.task_event_buffer,
            opts.max_finished_tasks,
        );
        let ended = opts
            .session_journal
            .as_deref()
            .map(|p| journal::load(p, opts.max_exited_sessions))
            .unwrap_or_default()
            .into_iter()
            .map(journal::Record::into_info)
            .collect();
        Arc::new_cyclic(|me| Daemon {
            tasks,
            opts,
            started_at: sys::now_rfc3339(),
            sessions: Mutex::new(Vec::new()),
            ended: Mutex::new(ended),
            closing: std::sync::atomic::AtomicBool::new(false),
            create_lock: tokio::sync::Mutex::new(()),
            execs: Mutex::new(HashSet::new()),
            me: me.clone(),
        })
    }

    fn info(&self) -> DaemonInfo {
        DaemonInfo {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at: self.started_at.clone(),
            uid: nix::unistd::getuid().as_raw(),
            sessions: lock(&self.sessions).len(),
        }
    }

    fn find(&self, id_or_name: &str) -> Result<Arc<Session>, ApiError> {
        let sessions = lock(&self.sessions);
        sessions
            .iter()
            .find(|s| s.id == id_or_name)
            .or_else(|| sessions.iter().find(|s| s.name == id_or_name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no session {id_or_name:?}")))
    }

    fn list(&self) -> Vec<SessionInfo> {
        let mut all = lock(&self.ended).clone();
        all.extend(lock(&self.sessions).iter().map(|s| s.info()));
        all
    }

    /// A session's info, live or ended.
    fn get(&self, id_or_name: &str) -> Result<SessionInfo, ApiError> {
        if let Ok(s) = self.find(id_or_name) {
            return Ok(s.info());
        }
        let ended = lock(&self.ended);
        ended
            .iter()
            .find(|s| s.id == id_or_name)
            .or_else(|| ended.iter().find(|s| s.name == id_or_name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no session {id_or_name:?}")))
    }

    /// Writes the sessions down (see [`DaemonOptions::session_journal`]).
    fn save_journal(&self) {
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Some(path) = &self.opts.session_journal {
            let records: Vec<journal::Record> =
                self.list().iter().map(journal::Record::of).collect();
            journal::save(path, &records);
        }
    }

    async fn create_session(&self, req: SessionCreate) -> Result<SessionInfo, ApiError> {
        if req.cols == 0 || req.rows == 0 {
            return Err(ApiError::invalid("cols and rows must be at least 1"));
        }
        sys::validate_env(&req.env).map_err(ApiError::invalid)?;
        let cwd = sys::resolve_cwd(req.cwd.as_deref(), &self.opts.default_cwd)
            .map_err(ApiError::invalid)?;
        let default_shell = req.argv.is_none();
        let mut argv = req
            .argv
            .clone()
            .unwrap_or_else(|| self.opts.default_shell.clone());
        sys::validate_argv(&argv).map_err(ApiError::invalid)?;
        if default_shell && !Path::new(&argv[0]).exists() {
            tracing::warn!(shell = %argv[0], "default shell missing; using /bin/sh");
            argv = vec!["/bin/sh".into()];
        }
        let shell = if default_shell {
            argv[0].clone()
        } else {
            self.opts
                .default_shell
                .first()
                .cloned()
                .unwrap_or_else(|| "/bin/sh".into())
        };
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.opts.default_cwd.clone());
        let env = sys::child_env(&home, &shell, true, &req.env);
        let program = sys::resolve_program(&argv[0], env.get("PATH").map(String::as_str), &cwd)
            .map_err(ApiError::spawn_failed)?;

        let _guard = self.create_lock.lock().await;
        let name = match &req.name {
            Some(n) => {
                if !valid_name(n) {
                    return Err(ApiError::invalid(format!(
                        "invalid session name {n:?}: use 1 to 63 of [a-zA-Z0-9_.-], starting with a letter or digit"
                    )));
                }
                if lock(&self.sessions).iter().any(|s| &s.name == n) {
                    return Err(ApiError::conflict(format!(
                        "a session named {n:?} already exists"
                    )));
                }
                n.clone()
            }
            None => self.default_name(),
        };
        let id = self.new_id();
        let spec = SpawnSpec {
            id,
            name,
            argv,
            program,
            env,
            cwd,
            cols: req.cols,
            rows: req.rows,
            scrollback_bytes: self.opts.scrollback_bytes,
        };
        let me = self.me.clone();
        let on_exit = Box::new(move || {
            if let Some(d) = me.upgrade() {
                d.prune_exited();
                d.save_journal();
            }
        });
        let session = tokio::task::spawn_blocking(move || Session::spawn(spec, on_exit))
            .await
            .map_err(|e| ApiError::internal(format!("spawn task: {e}")))??;
        tracing::info!(session = %session.id, name = %session.name, pid = session.pid, argv = ?session.argv, "session started");
        lock(&self.sessions).push(session.clone());
        // The name is taken again: an ended session of that name is gone for good.
        lock(&self.ended).retain(|s| s.name != session.name && s.id != session.id);
        self.prune_exited();
        self.save_journal();
        Ok(session.info())
    }

    fn default_name(&self) -> String {
        let sessions = lock(&self.sessions);
        let taken = |n: &str| sessions.iter().any(|s| s.name == n);
        if !taken("main") {
            return "main".into();
        }
        (2u64..)
            .map(|i| format!("shell-{i}"))
            .find(|n| !taken(n))
            .unwrap_or_else(|| "shell".into())
    }

    fn new_id(&self) -> String {
        let sessions = lock(&self.sessions);
        loop {
            let id: String = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
            if !sessions.iter().any(|s| s.id == id || s.name == id) {
                return id;
            }
        }
    }

    /// Forgets the oldest exited sessions beyond the limit.
    fn prune_exited(&self) {
        let mut sessions = lock(&self.sessions);
        let mut exited: Vec<(u64, String)> = sessions
            .iter()
            .filter_map(|s| s.exit_seq().map(|seq| (seq, s.id.clone())))
            .collect();
        if exited.len() <= self.opts.max_exited_sessions {
            return;
        }
        exited.sort();
        let drop_n = exited.len() - self.opts.max_exited_sessions;
        let doomed: HashSet<String> = exited.into_iter().take(drop_n).map(|(_, id)| id).collect();
        sessions.retain(|s| !doomed.contains(&s.id));
        tracing::debug!(count = drop_n, "forgot old exited sessions");
    }

    fn remove_session(&self, id_or_name: &str) -> Result<(), ApiError> {
        let s = match self.find(id_or_name) {
            Ok(s) => s,
            Err(e) => {
                let info = self.get(id_or_name).map_err(|_| e)?;
                lock(&self.ended).retain(|x| x.id != info.id);
                self.save_journal();
                return Ok(());
            }
        };
        if s.exit_code().is_none() {
            return Err(ApiError::conflict(format!(
                "session {:?} is running; kill it first",
                s.name
            )));
        }
        lock(&self.sessions).retain(|x| x.id != s.id);
        self.save_journal();
        Ok(())
    }

    fn track_exec(&self, pgid: u32) {
        lock(&self.execs).insert(pgid);
    }

    fn untrack_exec(&self, pgid: u32) {
        lock(&self.execs).remove(&pgid);
    }

    async fn shutdown(&self) {
        self.save_journal();
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.tasks.shutdown();
        let execs: Vec<u32> = lock(&self.execs).iter().copied().collect();
        for pgid in execs {
            sys::signal_group(pgid, Signal::SIGKILL);
        }
        let running: Vec<Arc<Session>> = lock(&self.sessions)
            .iter()
            .filter(|s| s.exit_code().is_none())
            .cloned()
            .collect();
        let kills = running.iter().map(|s| s.kill(KILL_GRACE));
        futures_util::future::join_all(kills).await;
    }
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

async fn reply(wr: &mut OwnedWriteHalf, r: Result<Response, ApiError>) -> std::io::Result<()> {
    let msg = r.unwrap_or_else(ApiError::into_response);
    write_control(wr, &msg).await
}

async fn handle_connection(d: Arc<Daemon>, stream: UnixStream) -> anyhow::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let first = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut rd)).await {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => {
            let _ = reply(&mut wr, Err(ApiError::protocol(format!("bad frame: {e}")))).await;
            return Err(e.into());
        }
        Err(_) => anyhow::bail!("no hello within {HELLO_TIMEOUT:?}"),
    };
    let protocol = match first.parse::<Request>() {
        Ok(Request::Hello { protocol, client }) => {
            tracing::trace!(protocol, client = %client, "hello");
            protocol
        }
        _ => {
            reply(
                &mut wr,
                Err(ApiError::protocol("the first message must be a hello")),
            )
            .await?;
            return Ok(());
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
        write_control(&mut wr, &Response::Error(body)).await?;
        return Ok(());
    }
    write_control(&mut wr, &Response::HelloOk(d.info())).await?;

    let frame = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut rd)).await {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return Ok(()), // handshake only
        Ok(Err(e)) => {
            let _ = reply(&mut wr, Err(ApiError::protocol(format!("bad frame: {e}")))).await;
            return Err(e.into());
        }
        Err(_) => anyhow::bail!("no request within {HELLO_TIMEOUT:?}"),
    };
    let request = match frame.parse::<Request>() {
        Ok(r) => r,
        Err(e) => {
            reply(&mut wr, Err(bad_request(&frame, &e))).await?;
            return Ok(());
        }
    };
    match request {
        Request::Exec(req) => exec::handle(d, req, rd, wr).await?,
        Request::SessionCreate(req) => {
            let r = d.create_session(req).await.map(Response::Session);
            reply(&mut wr, r).await?;
        }
        Request::SessionList => {
            reply(&mut wr, Ok(Response::Sessions { sessions: d.list() })).await?
        }
        Request::SessionGet { session } => {
            let r = d.get(&session).map(Response::Session);
            reply(&mut wr, r).await?;
        }
        Request::SessionCapture { session } => match d.find(&session) {
            Ok(s) => {
                let data = s.capture();
                write_control(
                    &mut wr,
                    &Response::Capture {
                        len: data.len() as u64,
                    },
                )
                .await?;
                write_data(&mut wr, FrameKind::Stdout, &data).await?;
            }
            Err(e) => reply(&mut wr, Err(e)).await?,
        },
        Request::SessionKill { session } => match d.find(&session) {
            Ok(s) => {
                tracing::info!(session = %s.id, name = %s.name, "killing session");
                s.kill(KILL_GRACE).await;
                reply(&mut wr, Ok(Response::Ok)).await?;
            }
            Err(e) => reply(&mut wr, Err(e)).await?,
        },
        Request::SessionRemove { session } => {
            let r = d.remove_session(&session).map(|()| Response::Ok);
            reply(&mut wr, r).await?;
        }
        Request::SessionAttach {
            session,
            cols,
            rows,
        } => attach(d, &session, cols, rows, rd, wr).await?,
        Request::TaskStart(req) => {
            let r = d.tasks.start(req).await.map(Response::Task);
            reply(&mut wr, r).await?;
        }
        Request::TaskSend { task, text } => {
            let r = d.tasks.send(&task, &text).await.map(Response::Task);
            reply(&mut wr, r).await?;
        }
        Request::TaskCancel { task, fail } => {
            let r = d.tasks.cancel(&task, fail).await.map(Response::Task);
            reply(&mut wr, r).await?;
        }
        Request::TaskGet { task } => {
            let r = d.tasks.find(&task).map(|t| Response::Task(t.info()));
            reply(&mut wr, r).await?;
        }
        Request::TaskList => {
            let tasks = d.tasks.list();
            reply(&mut wr, Ok(Response::Tasks { tasks })).await?;
        }
        Request::TaskEvents { task, after } => task_events(d, &task, after, rd, wr).await?,
        Request::Hello { .. } | Request::StdinEof | Request::Resize { .. } | Request::Detach => {
            reply(
                &mut wr,
                Err(ApiError::protocol("unexpected message as a request")),
            )
            .await?
        }
    }
    Ok(())
}

/// The error for a request that does not parse; names unknown request types
/// clearly (a newer client talking to this daemon).
fn bad_request(frame: &crate::proto::Frame, e: &std::io::Error) -> ApiError {
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

async fn attach(
    d: Arc<Daemon>,
    id_or_name: &str,
    cols: u16,
    rows: u16,
    mut rd: OwnedReadHalf,
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

    let output = async {
        loop {
            match sub.rx.recv().await {
                Some(SessionEvent::Output(data)) => {
                    write_data(&mut wr, FrameKind::Stdout, &data).await?;
                }
                Some(SessionEvent::Exit(code)) => {
                    write_control(&mut wr, &Response::Exit { code }).await?;
                    return Ok::<(), std::io::Error>(());
                }
                None => {
                    let e = ApiError::new(
                        ErrorCode::Lagged,
                        "client did not keep up with the session output; re-attach to catch up",
                    );
                    write_control(&mut wr, &e.into_response()).await?;
                    return Ok(());
                }
            }
        }
    };
    let input_tx = s.input();
    let session = s.clone();
    let input = async move {
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
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("main"));
        assert!(valid_name("a"));
        assert!(valid_name("A1_b.c-d"));
        assert!(valid_name(&"x".repeat(63)));
        assert!(!valid_name(&"x".repeat(64)));
        assert!(!valid_name(""));
        assert!(!valid_name("-x"));
        assert!(!valid_name(".x"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a/b"));
    }
}
