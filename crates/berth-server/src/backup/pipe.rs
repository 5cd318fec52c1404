//! Bounded byte channels between async streams and the blocking archive code, so archives
//! stream through the server without being held in memory.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Chunks in flight per channel (each up to [`CHUNK`]).
const DEPTH: usize = 8;
/// Size of the chunks a [`ChanWriter`] sends.
const CHUNK: usize = 64 * 1024;

pub type Tx = mpsc::Sender<io::Result<Bytes>>;
pub type Rx = mpsc::Receiver<io::Result<Bytes>>;

pub fn channel() -> (Tx, Rx) {
    mpsc::channel(DEPTH)
}

/// Forwards an async byte stream into a channel until either side ends.
pub async fn feed<E: std::fmt::Display>(
    mut stream: impl Stream<Item = Result<Bytes, E>> + Unpin,
    tx: Tx,
) {
    while let Some(item) = stream.next().await {
        let item = item.map_err(|e| io::Error::other(e.to_string()));
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// The channel as a stream of chunks that ends with an error instead of a clean end when
/// `failed` is set by the time the channel closes (set it before the last sender drops).
pub fn stream_or_fail(
    rx: Rx,
    failed: Arc<AtomicBool>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(rx), move |rx| {
        let failed = failed.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(item) => Some((item, Some(rx))),
                None if failed.load(Ordering::SeqCst) => {
                    Some((Err(io::Error::other("the copy failed")), None))
                }
                None => None,
            }
        }
    })
}

/// The channel as a plain stream of chunks for the engine: an error just ends it (the archive
/// is then truncated, which the caller knows from the blocking side's result).
pub fn stream_ok(rx: Rx) -> impl Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Some(Ok(b)) => Some((b, rx)),
            _ => None,
        }
    })
}

/// Blocking reader over a channel; call only off the async runtime.
pub struct ChanReader {
    rx: Rx,
    cur: Bytes,
}

impl ChanReader {
    pub fn new(rx: Rx) -> Self {
        Self {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

/// How long a [`ChanWriter`] waits for the receiving side to take a chunk: a client that stops
/// reading a backup must not keep a paused workspace frozen (or a helper container) forever.
pub const STALL_LIMIT: Duration = Duration::from_secs(120);

/// Blocking writer into a channel; create and use it only on a blocking thread of the runtime
/// (`spawn_blocking`). `flush` sends what is buffered; a closed receiver is a broken pipe, one
/// that takes nothing for [`STALL_LIMIT`] a timeout.
pub struct ChanWriter {
    tx: Tx,
    buf: Vec<u8>,
    runtime: Option<tokio::runtime::Handle>,
    stall_limit: Duration,
}

impl ChanWriter {
    pub fn new(tx: Tx) -> Self {
        Self::with_stall_limit(tx, STALL_LIMIT)
    }

    fn with_stall_limit(tx: Tx, stall_limit: Duration) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
            runtime: tokio::runtime::Handle::try_current().ok(),
            stall_limit,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the receiving side went away");
        let Some(rt) = &self.runtime else {
            return self.tx.blocking_send(Ok(chunk)).map_err(|_| gone());
        };
        match rt.block_on(tokio::time::timeout(
            self.stall_limit,
            self.tx.send(Ok(chunk)),
        )) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the receiving side took nothing for {}s",
                    self.stall_limit.as_secs()
                ),
            )),
        }
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_cross_both_ways_in_order() {
        let (tx, rx) = channel();
        let (out_tx, out_rx) = channel();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let copy = tokio::task::spawn_blocking(move || {
            let mut r = ChanReader::new(rx);
            let mut w = ChanWriter::new(out_tx);
            std::io::copy(&mut r, &mut w).unwrap();
            w.flush().unwrap();
        });
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(7000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        tokio::spawn(feed(futures_util::stream::iter(chunks), tx));
        let got: Vec<Bytes> = stream_ok(out_rx).collect().await;
        copy.await.unwrap();
        assert_eq!(got.concat(), expect);
    }

    #[tokio::test]
    async fn a_failed_copy_ends_the_stream_with_an_error_after_the_data() {
        for fail in [false, true] {
            let (tx, rx) = channel();
            let failed = Arc::new(AtomicBool::new(false));
            let body = stream_or_fail(rx, failed.clone());
            tx.send(Ok(Bytes::from_static(b"part"))).await.unwrap();
            failed.store(fail, Ordering::SeqCst);
            drop(tx);
            let items: Vec<io::Result<Bytes>> = body.collect().await;
            assert_eq!(items.len(), 1 + usize::from(fail));
            assert_eq!(items[0].as_ref().unwrap().as_ref(), b"part");
            assert_eq!(items.last().unwrap().is_err(), fail);
        }
    }

    #[tokio::test]
    async fn a_receiver_that_stops_taking_times_the_writer_out() {
        let (tx, _rx) = channel();
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = ChanWriter::with_stall_limit(tx, Duration::from_millis(200));
            let chunk = vec![0u8; CHUNK];
            // Fills the channel, then waits for room that never comes.
            (0..=DEPTH).try_for_each(|_| w.write_all(&chunk))
        });
        let err = writer.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
