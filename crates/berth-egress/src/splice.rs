//! Byte relays without user-space copies: `splice(2)` moves the bytes from one socket into a
//! pipe and from the pipe into the other socket, so the payload never leaves the kernel.
//!
//! Used by the workspace daemon's loopback relays (`127.0.0.1:7788` → the gateway's socket, and
//! `127.0.0.1:3128` → the proxy's socket when a connection cannot be handed over, see
//! [`crate::handoff`]). The proxy's own tunnels copy through large buffers instead, which
//! measured as fast or faster on loopback (see `relay` in `proxy.rs`).

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::sys::socket::{shutdown, Shutdown};
use tokio::io::{Interest, Ready};
use tokio::net::{TcpStream, UnixStream};

/// Bytes moved per `splice` call (and the pipe's size when the kernel lets us set it).
const CHUNK: usize = 256 << 10;

/// A non-blocking socket registered with tokio, whose readiness we can wait for.
pub trait SpliceSocket: AsFd + Sync {
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send;
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl SpliceSocket for TcpStream {
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send {
        TcpStream::ready(self, interest)
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        TcpStream::try_io(self, interest, f)
    }
}

impl SpliceSocket for UnixStream {
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send {
        UnixStream::ready(self, interest)
    }
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        UnixStream::try_io(self, interest, f)
    }
}

/// Relays both directions between `a` and `b` until both have ended (each end's EOF is passed
/// on as a write shutdown of the other) or either fails. Returns the bytes read from `a` and
/// from `b`, as far as they got.
pub async fn tunnel<A: SpliceSocket, B: SpliceSocket>(a: &A, b: &B) -> io::Result<(u64, u64)> {
    let (mut from_a, mut from_b) = (0u64, 0u64);
    let result = tokio::try_join!(pump(a, b, &mut from_a), pump(b, a, &mut from_b));
    result.map(|_| (from_a, from_b)).or_else(|e| {
        if from_a + from_b > 0 && is_disconnect(&e) {
            Ok((from_a, from_b))
        } else {
            Err(e)
        }
    })
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected
    )
}

/// One direction: `src` → pipe → `dst`, counting into `moved`.
async fn pump<S: SpliceSocket, D: SpliceSocket>(
    src: &S,
    dst: &D,
    moved: &mut u64,
) -> io::Result<()> {
    let (pipe_r, pipe_w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // A bigger pipe means fewer system calls; the default 64 KiB still works.
    let _ = fcntl(pipe_w.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // Fill: the pipe is empty here, so EAGAIN can only mean "src has nothing yet".
        let n = loop {
            src.ready(Interest::READABLE).await?;
            match src.try_io(Interest::READABLE, || {
                splice(src.as_fd(), None, &pipe_w, None, CHUNK, flags).map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // EOF from src: pass it on, keep the other direction going.
            match shutdown(dst.as_fd().as_raw_fd(), Shutdown::Write) {
                Ok(()) | Err(Errno::ENOTCONN) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        *moved += n as u64;
        drain(&pipe_r, dst, n, flags).await?;
    }
}

/// Moves exactly `len` bytes (all that is in it) from the pipe into `dst`.
async fn drain<D: SpliceSocket>(
    pipe_r: &OwnedFd,
    dst: &D,
    mut len: usize,
    flags: SpliceFFlags,
) -> io::Result<()> {
    while len > 0 {
        dst.ready(Interest::WRITABLE).await?;
        // The pipe holds `len` bytes, so EAGAIN can only mean "dst is full".
        match dst.try_io(Interest::WRITABLE, || {
            splice(pipe_r, None, dst.as_fd(), None, len, flags).map_err(io::Error::from)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => len -= m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    /// client ⇄ [a | tunnel | b] ⇄ origin, over TCP and a Unix socket pair, both directions,
    /// half-close passed on, counts exact.
    #[tokio::test]
    async fn relays_both_ways_with_half_close() {
        let (mut client, a) = pair().await;
        let (b, mut origin) = UnixStream::pair().unwrap();
        let relay = tokio::spawn(async move { tunnel(&a, &b).await });

        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let origin_side = tokio::spawn(async move {
            let mut got = Vec::new();
            origin.read_to_end(&mut got).await.unwrap();
            assert!(got == up2, "upload corrupted ({} bytes)", got.len());
            origin.write_all(&down2).await.unwrap();
            origin.shutdown().await.unwrap();
        });
        client.write_all(&up).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got == down, "download corrupted ({} bytes)", got.len());
        origin_side.await.unwrap();
        let (n_up, n_down) = relay.await.unwrap().unwrap();
        assert_eq!((n_up, n_down), (up.len() as u64, down.len() as u64));
    }

    #[tokio::test]
    async fn closing_both_ends_ends_the_tunnel() {
        let (client, a) = pair().await;
        let (b, origin) = pair().await;
        let relay = tokio::spawn(async move { tunnel(&a, &b).await });
        drop(origin);
        drop(client);
        tokio::time::timeout(std::time::Duration::from_secs(5), relay)
            .await
            .expect("the tunnel did not end")
            .unwrap()
            .unwrap();
    }
}
