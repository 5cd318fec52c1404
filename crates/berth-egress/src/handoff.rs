//! Handing a client's TCP connection to the proxy instead of relaying its bytes.
//!
//! Tools in a workspace reach the proxy at `127.0.0.1:3128`, a listener of the workspace
//! daemon; the workspace has no network, so the daemon cannot forward a connection, only its
//! bytes (a second hop on a Unix socket, where `splice` still copies). With a handoff socket
//! (`egress-handoff.sock` next to the proxy's) the daemon instead passes the accepted TCP socket
//! itself to the host (`SCM_RIGHTS`) and closes its copy: the proxy then reads and writes the
//! client's socket directly, and a plain tunnel splices TCP to TCP with no copy at all.
//!
//! The host accepts only a connected TCP stream socket ([`receive`] checks the address family,
//! the type and that it is not listening); anything else is refused. Whatever socket a workspace
//! hands over, the proxy only speaks HTTP on it, exactly as it would on a relayed connection.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    recvmsg, sendmsg, sockopt, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketType,
};
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// The handoff socket's file name, next to the proxy's socket in a workspace's channel
/// directory.
pub const SOCKET_NAME: &str = "egress-handoff.sock";

/// Passes `socket` (the accepted TCP connection) over `unix`: one byte of payload plus the
/// descriptor.
pub async fn send(unix: &UnixStream, socket: impl AsFd) -> io::Result<()> {
    loop {
        unix.writable().await?;
        let sent = unix.try_io(Interest::WRITABLE, || {
            let fds = [socket.as_fd()];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err(io::Error::other("control buffer too small"));
            }
            sendmsg(
                unix,
                &[IoSlice::new(b"T")],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// How long the host waits for the descriptor after a connection to the handoff socket: the
/// daemon sends it right after connecting, and a connection that sends nothing must not hold a
/// task and a descriptor for ever.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Receives one handed-off connection from `unix`: a connected TCP stream socket, ready for
/// tokio. Anything else (no descriptor, another kind of socket, a listener) is an error, and so
/// is nothing at all within [`RECEIVE_TIMEOUT`] ([`io::ErrorKind::TimedOut`]).
pub async fn receive(unix: &UnixStream) -> io::Result<TcpStream> {
    receive_within(unix, RECEIVE_TIMEOUT).await
}

/// [`receive`] with another deadline.
pub async fn receive_within(unix: &UnixStream, limit: Duration) -> io::Result<TcpStream> {
    let fd = tokio::time::timeout(limit, receive_fd(unix))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection handed over within {limit:?}"),
            )
        })??;
    into_tcp(fd)
}

async fn receive_fd(unix: &UnixStream) -> io::Result<OwnedFd> {
    loop {
        unix.readable().await?;
        let got = unix.try_io(Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let msg = recvmsg(
                unix,
                &mut [IoSliceMut::new(&mut byte)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            let mut fds: Vec<OwnedFd> = Vec::new();
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = m {
                    fds.extend(received);
                }
            }
            if msg.bytes == 0 && fds.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before handing over a connection",
                ));
            }
            // Extra descriptors are closed when `fds` drops.
            if fds.len() != 1 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("expected one descriptor, got {}", fds.len()),
                ));
            }
            Ok(fds.remove(0))
        });
        match got {
            Ok(fd) => return Ok(fd),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The received descriptor as a tokio stream, if it is a connected TCP socket.
fn into_tcp(fd: OwnedFd) -> io::Result<TcpStream> {
    let family = sockopt::socket_domain(&fd).map_err(io::Error::from)?;
    let kind = sockopt::socket_type(&fd).map_err(io::Error::from)?;
    let listening = sockopt::socket_acceptconn(&fd).map_err(io::Error::from)?;
    if !matches!(family, AddressFamily::INET | AddressFamily::INET6)
        || kind != SocketType::STREAM
        || listening
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the handed-over descriptor is not a connected TCP socket",
        ));
    }
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true)?;
    let _ = std.set_nodelay(true);
    TcpStream::from_std(std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_connection_changes_hands() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = l.accept().await.unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        send(&a, &accepted).await.unwrap();
        drop(accepted);
        let mut received = receive(&b).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        received.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        received.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[tokio::test]
    async fn only_connected_tcp_sockets_are_accepted() {
        let (a, b) = UnixStream::pair().unwrap();
        // A listening TCP socket.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        send(&a, &listener).await.unwrap();
        let e = receive(&b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // A Unix socket.
        let (x, _y) = UnixStream::pair().unwrap();
        send(&a, &x).await.unwrap();
        let e = receive(&b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // A byte without a descriptor.
        let mut a = a;
        a.write_all(b"T").await.unwrap();
        let e = receive(&b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // Nothing at all: refused after the deadline instead of waiting for ever.
        let started = std::time::Instant::now();
        let e = receive_within(&b, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Closed.
        drop(a);
        let e = receive(&b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }
}
