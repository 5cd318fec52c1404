//! The per-workspace listeners: one Unix socket per running workspace, bound in its channel
//! directory (`berth_daemon::chanfs::listen`), capped and deadlined per workspace
//! (`berth_daemon::conn_limit`), serving `/{provider}/{rest}`.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use berth_daemon::conn_limit::{ConnLimiter, ConnLimits, Guarded};
use berth_daemon::DaemonClient;
use berth_domain::WorkspaceId;
use tokio::net::{UnixListener, UnixStream};

use crate::Gateway;

/// What a workspace's listener serves with: the gateway, whose socket it is, and that
/// workspace's daemon (told to stop a task over budget).
pub(crate) struct Serving {
    pub gateway: Gateway,
    pub ws: WorkspaceId,
    pub daemon: DaemonClient,
}

/// The running listeners.
#[derive(Default)]
pub(crate) struct Listeners {
    running: Mutex<HashMap<WorkspaceId, tokio::task::JoinHandle<()>>>,
}

impl Listeners {
    /// Makes sure the workspace's gateway socket at `path` is served (idempotent; rebinds when
    /// the socket file went away, e.g. after the channel directory was recreated).
    pub(crate) fn ensure(
        &self,
        gateway: &Gateway,
        ws: &WorkspaceId,
        path: &Path,
        daemon: DaemonClient,
    ) {
        let mut running = berth_domain::sync::lock(&self.running);
        if let Some(h) = running.get(ws) {
            if !h.is_finished() && berth_daemon::chanfs::is_bound(path) {
                return;
            }
            h.abort();
        }
        let listener = match berth_daemon::chanfs::listen(path) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(workspace = %ws, path = %path.display(), error = %e, "cannot serve the gateway socket");
                return;
            }
        };
        let serving = Arc::new(Serving {
            gateway: gateway.clone(),
            ws: ws.clone(),
            daemon,
        });
        let app = axum::Router::new()
            .route(
                "/{provider}/{*rest}",
                axum::routing::any(crate::forward::forward),
            )
            .fallback(crate::forward::no_route)
            .with_state(serving);
        // Capped and deadlined per workspace (see `conn_limit`).
        let listener = LimitedListener {
            listener,
            limiter: ConnLimiter::new("gateway", ConnLimits::GATEWAY),
        };
        let ws_name = ws.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(workspace = %ws_name, error = %e, "gateway listener ended");
            }
        });
        running.insert(ws.clone(), handle);
    }

    pub(crate) fn stop(&self, ws: &WorkspaceId) {
        let mut running = berth_domain::sync::lock(&self.running);
        if let Some(h) = running.remove(ws) {
            h.abort();
        }
    }
}

/// A Unix listener for `axum::serve` with a [`ConnLimiter`] on it.
pub struct LimitedListener {
    pub listener: UnixListener,
    pub limiter: ConnLimiter,
}

impl axum::serve::Listener for LimitedListener {
    type Io = Guarded<UnixStream>;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, slot) = self.limiter.accept(&self.listener).await;
            // A connection that already went away has no address; it is simply dropped.
            if let Ok(addr) = stream.peer_addr() {
                return (self.limiter.guard(stream, slot), addr);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
