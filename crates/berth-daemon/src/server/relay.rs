//! Loopback relays: a TCP port inside the workspace forwarded to a Unix
//! socket the server listens on (the workspace may have no network at all).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::JoinHandle;

/// Listens on `listen` (e.g. `127.0.0.1:7788`, or port 0 for any free port)
/// and relays every accepted connection to the Unix socket `socket`, moving
/// bytes both ways with `splice(2)` until both sides are done. If the socket is missing or
/// refuses the connection, the TCP connection is closed at once.
///
/// Returns the bound address and the accept loop's task (abort it to stop
/// accepting; relayed connections in flight continue).
pub async fn spawn_gateway_relay(
    listen: SocketAddr,
    socket: PathBuf,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    spawn_relay(listen, socket, None).await
}

/// Like [`spawn_gateway_relay`], but when `handoff` names a socket that accepts connections
/// (the egress proxy's, see [`berth_egress::handoff`]), each accepted connection is handed
/// over to the host whole instead of relayed; if the handoff fails, the bytes are relayed.
pub async fn spawn_relay(
    listen: SocketAddr,
    socket: PathBuf,
    handoff: Option<PathBuf>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let socket = Arc::new(socket);
    let handoff = handoff.map(Arc::new);
    tracing::info!(listen = %addr, socket = %socket.display(), handoff = handoff.is_some(), "relay listening");
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    let (socket, handoff) = (socket.clone(), handoff.clone());
                    tokio::spawn(async move {
                        if let Some(h) = handoff {
                            match hand_over(&tcp, &h).await {
                                Ok(()) => return,
                                Err(e) => {
                                    tracing::debug!(%peer, error = %e, "handoff failed; relaying")
                                }
                            }
                        }
                        relay_one(tcp, peer, socket).await
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gateway relay: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((addr, task))
}

async fn hand_over(tcp: &TcpStream, handoff: &std::path::Path) -> io::Result<()> {
    let unix = UnixStream::connect(handoff).await?;
    berth_egress::handoff::send(&unix, tcp).await
}

async fn relay_one(tcp: TcpStream, peer: SocketAddr, socket: Arc<PathBuf>) {
    let _ = tcp.set_nodelay(true);
    let unix = match UnixStream::connect(socket.as_path()).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%peer, socket = %socket.display(), error = %e, "gateway relay: cannot reach the gateway; closing");
            return;
        }
    };
    match berth_egress::splice::tunnel(&tcp, &unix).await {
        Ok((up, down)) => tracing::trace!(%peer, up, down, "gateway relay: connection done"),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "gateway relay: connection ended with an error")
        }
    }
}
