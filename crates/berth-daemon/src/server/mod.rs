//! The daemon: listens on the Unix socket and serves the protocol; this module holds the
//! daemon's options, its accept loop and its shutdown.
//!
//! Each connection is served by `connection` against the shared `daemon::Daemon` state:
//! PTY sessions (`session`, `attach`, with the `journal` of earlier ones), one-shot
//! processes (`exec`) and agent tasks (`task`). `relay` forwards loopback ports to the
//! server's sockets.

mod attach;
mod connection;
mod daemon;
mod error;
mod exec;
mod journal;
mod relay;
mod session;
mod task;

pub use relay::spawn_gateway_relay;
pub use task::DriverFactory;

pub(crate) use error::ApiError;

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::{DEFAULT_GATEWAY_SOCKET, DEFAULT_SOCKET, PROTOCOL_VERSION};
use connection::handle_connection;
use daemon::Daemon;

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
    let relays = start_relays(&opts).await;
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

/// Starts the loopback ports inside the workspace relayed to the server's sockets in the
/// channel directory: the only ways out of a workspace with no network. A relay that cannot
/// bind is logged and left out.
async fn start_relays(opts: &DaemonOptions) -> Vec<JoinHandle<()>> {
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
    relays
}

/// Listens on `path` with permissions `mode`, removing a stale socket file first (but never
/// a directory, nor the socket of a daemon that still answers).
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
