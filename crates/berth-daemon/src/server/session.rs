//! One PTY session: the child process, its scrollback and its attached clients.

use berth_domain::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal;
use portable_pty::{CommandBuilder, MasterPty, PtySize};
use tokio::sync::{mpsc, watch};

use super::ApiError;
use crate::proto::{SessionInfo, SessionState};
use crate::sys::{lock, signal_session, wait_pid};

/// Per-client queue of output chunks. A client whose queue fills up is
/// dropped (it lags); one slot is kept for the final Exit event.
const SUBSCRIBER_QUEUE: usize = 512;
/// Bytes read from the PTY at once.
const READ_CHUNK: usize = 16 * 1024;
/// Input chunks queued for the PTY writer thread.
const INPUT_QUEUE: usize = 64;

static EXIT_SEQ: AtomicU64 = AtomicU64::new(1);

/// A bounded byte ring: keeps the latest `cap` bytes.
pub(crate) struct Scrollback {
    buf: VecDeque<u8>,
    cap: usize,
}

impl Scrollback {
    pub(crate) fn new(cap: usize) -> Self {
        Scrollback {
            buf: VecDeque::new(),
            cap,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.cap == 0 {
            return;
        }
        if data.len() >= self.cap {
            self.buf.clear();
            self.buf.extend(&data[data.len() - self.cap..]);
            return;
        }
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(data);
    }

    pub(crate) fn snapshot(&self) -> Bytes {
        let (a, b) = self.buf.as_slices();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        Bytes::from(v)
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
}

/// What an attached client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionEvent {
    Output(Bytes),
    Exit(i32),
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<SessionEvent>,
}

struct Inner {
    scrollback: Scrollback,
    subscribers: Vec<Subscriber>,
    next_subscriber: u64,
    exit_code: Option<i32>,
    /// Order in which sessions exited (for pruning the oldest).
    exit_seq: u64,
    cols: u16,
    rows: u16,
}

pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) argv: Vec<String>,
    pub(crate) pid: u32,
    pub(crate) created_at: Timestamp,
    inner: Mutex<Inner>,
    master: Mutex<Box<dyn MasterPty + Send>>,
    input: mpsc::Sender<Bytes>,
    exited: watch::Sender<Option<i32>>,
}

/// Everything needed to start a session's process.
pub(crate) struct SpawnSpec {
    pub(crate) id: String,
    pub(crate) name: String,
    /// As requested (shown in SessionInfo).
    pub(crate) argv: Vec<String>,
    /// The resolved executable.
    pub(crate) program: PathBuf,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: PathBuf,
    pub(crate) cols: u16,
    pub(crate) rows: u16,
    pub(crate) scrollback_bytes: usize,
}

/// An attached client's view: the replay and the live events after it.
pub(crate) struct Subscription {
    pub(crate) replay: Bytes,
    pub(crate) rx: mpsc::Receiver<SessionEvent>,
    id: u64,
    session: Arc<Session>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = lock(&self.session.inner);
        inner.subscribers.retain(|s| s.id != self.id);
    }
}

impl Session {
    /// Starts the process on a new PTY (blocking: run it off the async runtime).
    /// `on_exit` runs after the session has been marked exited.
    pub(crate) fn spawn(
        spec: SpawnSpec,
        on_exit: Box<dyn FnOnce() + Send>,
    ) -> Result<Arc<Session>, ApiError> {
        let (master, pid) = spawn_on_pty(&spec)?;
        let reader = master
            .try_clone_reader()
            .map_err(|e| kill_on_error(pid, ApiError::internal(format!("pty reader: {e:#}"))))?;
        let writer = master
            .take_writer()
            .map_err(|e| kill_on_error(pid, ApiError::internal(format!("pty writer: {e:#}"))))?;

        let (input_tx, input_rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
        let (exited, _) = watch::channel(None);
        let session = Arc::new(Session {
            id: spec.id,
            name: spec.name,
            argv: spec.argv,
            pid,
            created_at: Timestamp::now(),
            inner: Mutex::new(Inner {
                scrollback: Scrollback::new(spec.scrollback_bytes),
                subscribers: Vec::new(),
                next_subscriber: 1,
                exit_code: None,
                exit_seq: 0,
                cols: spec.cols,
                rows: spec.rows,
            }),
            master: Mutex::new(master),
            input: input_tx,
            exited,
        });
        session
            .start_threads(reader, writer, input_rx, on_exit)
            .map_err(|e| kill_on_error(pid, ApiError::internal(format!("thread: {e}"))))?;
        Ok(session)
    }

    /// Starts the session's threads: the PTY reader, the PTY writer (fed by `input_rx`), and
    /// the waiter that marks the session exited once its process is gone and its output read.
    fn start_threads(
        self: &Arc<Self>,
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        input_rx: mpsc::Receiver<Bytes>,
        on_exit: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<()> {
        let (reader_done_tx, reader_done_rx) = std::sync::mpsc::channel::<()>();
        let s = self.clone();
        std::thread::Builder::new()
            .name(format!("pty-read-{}", self.id))
            .spawn(move || {
                read_loop(reader, &s);
                let _ = reader_done_tx.send(());
            })?;

        std::thread::Builder::new()
            .name(format!("pty-write-{}", self.id))
            .spawn(move || write_loop(writer, input_rx))?;

        let s = self.clone();
        let pid = self.pid;
        std::thread::Builder::new()
            .name(format!("pty-wait-{}", self.id))
            .spawn(move || {
                let code = wait_pid(pid);
                // Let the reader drain what the process wrote before it exited.
                if reader_done_rx.recv_timeout(Duration::from_secs(1)).is_err() {
                    // Something else of the session still holds the terminal:
                    // hang it up like the kernel does for a terminal's leader.
                    signal_session(pid, Signal::SIGHUP);
                    signal_session(pid, Signal::SIGCONT);
                    let _ = reader_done_rx.recv_timeout(Duration::from_millis(500));
                }
                tracing::info!(session = %s.id, name = %s.name, code, "session exited");
                s.finish(code);
                on_exit();
            })?;
        Ok(())
    }

    /// Appends output to the scrollback and fans it out.
    fn push_output(&self, data: Bytes) {
        let mut inner = lock(&self.inner);
        inner.scrollback.push(&data);
        let session = &self.id;
        inner.subscribers.retain(|sub| {
            // Keep one slot free for the Exit event.
            if sub.tx.capacity() <= 1 {
                tracing::warn!(session = %session, subscriber = sub.id, "dropping a client that does not keep up");
                return false;
            }
            sub.tx.try_send(SessionEvent::Output(data.clone())).is_ok()
        });
    }

    fn finish(&self, code: i32) {
        let mut inner = lock(&self.inner);
        inner.exit_code = Some(code);
        inner.exit_seq = EXIT_SEQ.fetch_add(1, Ordering::Relaxed);
        for sub in inner.subscribers.drain(..) {
            let _ = sub.tx.try_send(SessionEvent::Exit(code));
        }
        drop(inner);
        self.exited.send_replace(Some(code));
    }

    /// Subscribes to the output: the scrollback snapshot and the live output
    /// after it are taken under one lock, so nothing is lost or repeated.
    pub(crate) fn subscribe(self: &Arc<Self>) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let mut inner = lock(&self.inner);
        let replay = inner.scrollback.snapshot();
        let id = inner.next_subscriber;
        inner.next_subscriber += 1;
        match inner.exit_code {
            Some(code) => {
                let _ = tx.try_send(SessionEvent::Exit(code));
            }
            None => inner.subscribers.push(Subscriber { id, tx }),
        }
        drop(inner);
        Subscription {
            replay,
            rx,
            id,
            session: self.clone(),
        }
    }

    /// Sets the terminal size (TIOCSWINSZ; the foreground job gets SIGWINCH).
    pub(crate) fn resize(&self, cols: u16, rows: u16) -> Result<(), ApiError> {
        if self.exit_code().is_some() {
            return Ok(());
        }
        lock(&self.master)
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(|e| ApiError::internal(format!("resize: {e:#}")))?;
        let mut inner = lock(&self.inner);
        inner.cols = cols;
        inner.rows = rows;
        Ok(())
    }

    /// A sender for input to the terminal.
    pub(crate) fn input(&self) -> mpsc::Sender<Bytes> {
        self.input.clone()
    }

    pub(crate) fn capture(&self) -> Bytes {
        lock(&self.inner).scrollback.snapshot()
    }

    pub(crate) fn exit_code(&self) -> Option<i32> {
        lock(&self.inner).exit_code
    }

    /// Ordering key among exited sessions; None while running.
    pub(crate) fn exit_seq(&self) -> Option<u64> {
        let inner = lock(&self.inner);
        inner.exit_code.map(|_| inner.exit_seq)
    }

    /// Waits until the session has exited, at most `timeout`; true if it has.
    pub(crate) async fn wait_exit(&self, timeout: Duration) -> bool {
        let mut rx = self.exited.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(Option::is_some))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// SIGHUP (and SIGCONT) to all of the session's processes, then SIGKILL
    /// after `grace` if the session has not exited. Returns once it exited
    /// (or gave up after another few seconds).
    pub(crate) async fn kill(&self, grace: Duration) {
        if self.exit_code().is_some() {
            return;
        }
        signal_session(self.pid, Signal::SIGHUP);
        signal_session(self.pid, Signal::SIGCONT);
        if self.wait_exit(grace).await {
            return;
        }
        tracing::info!(session = %self.id, "session ignored SIGHUP; sending SIGKILL");
        signal_session(self.pid, Signal::SIGKILL);
        if !self.wait_exit(Duration::from_secs(5)).await {
            tracing::warn!(session = %self.id, "session did not exit after SIGKILL");
        }
    }

    pub(crate) fn info(&self) -> SessionInfo {
        let inner = lock(&self.inner);
        SessionInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            argv: self.argv.clone(),
            pid: self.pid,
            state: if inner.exit_code.is_some() {
                SessionState::Exited
            } else {
                SessionState::Running
            },
            exit_code: inner.exit_code,
            created_at: self.created_at.clone(),
            attached: u32::try_from(inner.subscribers.len()).unwrap_or(u32::MAX),
            cols: inner.cols,
            rows: inner.rows,
            scrollback_bytes: inner.scrollback.len() as u64,
        }
    }
}

/// Opens a PTY of the spec's size and starts the spec's process on it (as the leader of a
/// new session); returns the PTY's master side and the process's pid.
fn spawn_on_pty(spec: &SpawnSpec) -> Result<(Box<dyn MasterPty + Send>, u32), ApiError> {
    let pty = portable_pty::native_pty_system();
    let pair = pty
        .openpty(PtySize {
            rows: spec.rows,
            cols: spec.cols,
            pixel_width: 0,
            pixel_height: 0,
        })
        .map_err(|e| ApiError::internal(format!("openpty: {e:#}")))?;

    let mut args = vec![spec.program.clone().into_os_string()];
    args.extend(spec.argv.iter().skip(1).map(Into::into));
    let mut cmd = CommandBuilder::from_argv(args);
    cmd.env_clear();
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    cmd.cwd(spec.cwd.as_os_str());

    let argv0 = spec.argv.first().cloned().unwrap_or_default();
    let child = pair
        .slave
        .spawn_command(cmd)
        .map_err(|e| ApiError::spawn_failed(format!("cannot run {argv0}: {e:#}")))?;
    // The child has its own copies of the slave; ours must go so that the
    // reader sees EOF once the session's processes are gone.
    drop(pair.slave);
    let Some(pid) = child.process_id().filter(|p| *p > 1) else {
        return Err(ApiError::internal("spawned session has no pid"));
    };
    // Reaping is done by wait_pid (in the session's waiter), which also reports signals.
    drop(child);
    Ok((pair.master, pid))
}

/// Kills the session of `pid`, whose setup failed with `e`, and reaps it in the background;
/// returns `e`.
fn kill_on_error(pid: u32, e: ApiError) -> ApiError {
    signal_session(pid, Signal::SIGKILL);
    let _ = std::thread::Builder::new()
        .name("pty-reap".into())
        .spawn(move || wait_pid(pid));
    e
}

fn read_loop(mut reader: Box<dyn Read + Send>, session: &Session) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => session.push_output(Bytes::copy_from_slice(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(session = %session.id, error = %e, "pty read ended");
                break;
            }
        }
    }
}

fn write_loop(mut writer: Box<dyn Write + Send>, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(data) = rx.blocking_recv() {
        if let Err(e) = writer.write_all(&data).and_then(|()| writer.flush()) {
            tracing::debug!(error = %e, "pty write failed; input dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrollback_keeps_latest_bytes() {
        let mut s = Scrollback::new(10);
        s.push(b"hello");
        assert_eq!(&s.snapshot()[..], b"hello");
        s.push(b" world");
        assert_eq!(&s.snapshot()[..], b"ello world");
        assert_eq!(s.len(), 10);
        s.push(b"0123456789abc");
        assert_eq!(&s.snapshot()[..], b"3456789abc");
        s.push(b"XY");
        assert_eq!(&s.snapshot()[..], b"56789abcXY");
        let mut z = Scrollback::new(0);
        z.push(b"abc");
        assert_eq!(z.len(), 0);
    }
}
