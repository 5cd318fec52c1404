//! Caps and deadlines for the connections a workspace makes to the sockets the server serves
//! into it (the egress proxy socket, its handoff socket, the LLM gateway socket).
//!
//! Whatever runs in a workspace may open connections and hold them silently, or accept bytes
//! and never read them. Each accept loop therefore owns one [`ConnLimiter`] per workspace:
//! a connection over the cap is closed at once (before any task is spawned for it), and every
//! admitted one is wrapped in [`Guarded`], which ends it when its first byte does not arrive in
//! time or when it stays idle (no byte moved either way) too long. So one workspace can hold at
//! most `max_conns` descriptors per socket, however many connections it opens, and cannot
//! exhaust the server's descriptors or memory for the others.
//!
//! Server-side, like [`crate::chanfs`] that binds these sockets; here so that the server's egress
//! code and the `berth-gateway` crate (which wraps a limiter into an `axum::serve` listener)
//! share it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The limits of one socket of one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections held at once; more are closed as soon as they are accepted.
    pub max_conns: usize,
    /// Time from accepting a connection to its first byte from the workspace.
    pub first_byte: Duration,
    /// Time a connection may move no byte in either direction.
    pub idle: Duration,
}

impl ConnLimits {
    /// The egress proxy (relayed and handed-over connections together): package managers open
    /// tens of parallel connections; a tunnel may sit idle between a client's requests.
    pub const EGRESS: ConnLimits = ConnLimits {
        max_conns: 256,
        first_byte: Duration::from_secs(30),
        idle: Duration::from_secs(600),
    };

    /// Explicit access requests (`berth request`): one short line each way.
    pub const ACCESS: ConnLimits = ConnLimits {
        max_conns: 8,
        first_byte: Duration::from_secs(5),
        idle: Duration::from_secs(5),
    };

    /// The LLM gateway: a few agents with parallel calls; a non-streaming LLM answer may take
    /// many minutes during which no byte moves.
    pub const GATEWAY: ConnLimits = ConnLimits {
        max_conns: 128,
        first_byte: Duration::from_secs(30),
        idle: Duration::from_secs(900),
    };
}

/// Admits at most `max_conns` connections at once and puts deadlines on them. Cheap to clone;
/// clones share the cap.
#[derive(Debug, Clone)]
pub struct ConnLimiter {
    name: &'static str,
    limits: ConnLimits,
    slots: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
}

/// One admitted connection's slot; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl ConnLimiter {
    /// A limiter for the socket `name` (used in logs) of one workspace.
    pub fn new(name: &'static str, limits: ConnLimits) -> Self {
        ConnLimiter {
            name,
            limits,
            slots: Arc::new(Semaphore::new(limits.max_conns)),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A slot for one more connection, or `None` at the cap (the caller closes it at once).
    pub fn try_admit(&self) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(p) => Some(Slot { _permit: p }),
            Err(_) => {
                let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                // The first refusal and then every 1000th: a flood must not flood the log.
                if n % 1000 == 1 {
                    tracing::warn!(
                        socket = self.name,
                        max = self.limits.max_conns,
                        refused = n,
                        "a workspace holds too many connections; closing the excess"
                    );
                }
                None
            }
        }
    }

    /// Connections refused at the cap so far.
    #[cfg(test)]
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections held now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.limits
            .max_conns
            .saturating_sub(self.slots.available_permits())
    }

    /// Puts the deadlines on an admitted connection, which keeps its slot while it lives.
    pub fn guard<S>(&self, io: S, slot: Slot) -> Guarded<S> {
        Guarded::new(io, slot, self.limits)
    }

    /// Accepts the next connection the cap admits; the excess is closed right away. Accept
    /// errors (such as running out of descriptors) are logged and retried after a pause.
    pub async fn accept(&self, listener: &UnixListener) -> (UnixStream, Slot) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match self.try_admit() {
                    Some(slot) => return (stream, slot),
                    None => drop(stream),
                },
                Err(e) => {
                    tracing::warn!(socket = self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// A connection with a first-byte deadline and an idle deadline: once one passes, reads and
/// writes fail with [`io::ErrorKind::TimedOut`] (and the server drops the connection).
#[derive(Debug)]
pub struct Guarded<S> {
    io: S,
    _slot: Slot,
    limits: ConnLimits,
    accepted: Instant,
    last: Instant,
    got_first_byte: bool,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    fn new(io: S, slot: Slot, limits: ConnLimits) -> Self {
        let now = Instant::now();
        let first = now + limits.first_byte;
        Guarded {
            io,
            _slot: slot,
            limits,
            accepted: now,
            last: now,
            got_first_byte: false,
            read_timer: Box::pin(tokio::time::sleep_until(first)),
            write_timer: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    fn deadline(&self) -> Instant {
        if self.got_first_byte {
            self.last + self.limits.idle
        } else {
            (self.accepted + self.limits.first_byte).min(self.last + self.limits.idle)
        }
    }

    /// Whether the deadline passed (registering `cx` for it otherwise).
    fn expired(timer: &mut Pin<Box<Sleep>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    fn timed_out(&self) -> io::Error {
        let what = if self.got_first_byte {
            format!("idle for {:?}", self.limits.idle)
        } else {
            format!("no request within {:?}", self.limits.first_byte)
        };
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connection closed: {what}"),
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.got_first_byte = true;
                    this.last = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = this.deadline();
                if Self::expired(&mut this.read_timer, deadline, cx) {
                    Poll::Ready(Err(this.timed_out()))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.last = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = this.deadline();
                if Self::expired(&mut this.write_timer, deadline, cx) {
                    Poll::Ready(Err(this.timed_out()))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(max_conns: usize) -> ConnLimits {
        ConnLimits {
            max_conns,
            first_byte: Duration::from_millis(200),
            idle: Duration::from_millis(400),
        }
    }

    #[test]
    fn the_cap_admits_up_to_max_and_frees_on_drop() {
        let l = ConnLimiter::new("test", limits(2));
        let a = l.try_admit().unwrap();
        let _b = l.try_admit().unwrap();
        assert!(l.try_admit().is_none());
        assert_eq!((l.held(), l.refused()), (2, 1));
        drop(a);
        assert!(l.try_admit().is_some());
    }

    #[tokio::test]
    async fn excess_connections_are_closed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let limiter = ConnLimiter::new("test", limits(3));
        let server = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut held = Vec::new();
                loop {
                    let (s, slot) = limiter.accept(&listener).await;
                    held.push(limiter.guard(s, slot));
                }
            })
        };
        let mut clients = Vec::new();
        for _ in 0..10 {
            clients.push(UnixStream::connect(&path).await.unwrap());
        }
        // The first three are held open; the other seven see EOF right away.
        let mut closed = 0;
        for c in &mut clients {
            let mut b = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(100), c.read(&mut b)).await {
                Ok(Ok(0)) => closed += 1,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => {}
            }
        }
        assert_eq!(closed, 7);
        assert_eq!((limiter.held(), limiter.refused()), (3, 7));
        server.abort();
    }

    async fn pair(l: &ConnLimits) -> (Guarded<UnixStream>, UnixStream) {
        let limiter = ConnLimiter::new("test", *l);
        let (a, b) = UnixStream::pair().unwrap();
        (limiter.guard(a, limiter.try_admit().unwrap()), b)
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_times_out() {
        let (mut g, _peer) = pair(&limits(1)).await;
        let started = std::time::Instant::now();
        let mut b = [0u8; 8];
        let e = g.read(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(190) && took < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn activity_keeps_a_connection_alive_and_idleness_ends_it() {
        let (mut g, mut peer) = pair(&limits(1)).await;
        let mut b = [0u8; 8];
        // Bytes every 150 ms for 900 ms: past both deadlines in total, never idle that long.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            peer.write_all(b"x").await.unwrap();
            assert_eq!(g.read(&mut b).await.unwrap(), 1);
        }
        let started = std::time::Instant::now();
        let e = g.read(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(390));
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_cannot_stall_a_writer() {
        let (mut g, _peer) = pair(&limits(1)).await;
        let chunk = vec![0u8; 64 * 1024];
        let e = loop {
            if let Err(e) = g.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
