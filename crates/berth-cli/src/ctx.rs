//! What a command reads from and writes to: stdout and stderr, the local stdin, Ctrl-C and the
//! terminal's size. [`crate::run`] gives commands the real process's; the tests give fixed
//! stdin, buffers and a manual "Ctrl-C".

use std::io::Write;
use std::path::PathBuf;

use crate::client::{self, CliError, Result};

/// Where a command's local stdin comes from.
pub(crate) enum StdinSource {
    /// The process's stdin.
    Real,
    /// Fixed bytes, then end of file (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Fixed(Vec<u8>),
}

impl StdinSource {
    pub fn is_tty(&self) -> bool {
        use std::io::IsTerminal;
        match self {
            Self::Real => std::io::stdin().is_terminal(),
            Self::Fixed(_) => false,
        }
    }

    /// Chunks of stdin on a channel; the channel closes at end of file. The real stdin is read
    /// on a plain thread so a pending read never holds up the end of the process.
    pub fn reader(&mut self) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        match self {
            Self::Fixed(bytes) => {
                let bytes = std::mem::take(bytes);
                if !bytes.is_empty() {
                    // Capacity 16 and one message: never full.
                    let _ = tx.try_send(bytes);
                }
            }
            Self::Real => {
                std::thread::Builder::new()
                    .name("berth-stdin".into())
                    .spawn(move || {
                        use std::io::Read;
                        let mut stdin = std::io::stdin();
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            match stdin.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                                        break;
                                    }
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                                Err(_) => break,
                            }
                        }
                    })
                    .map_err(|e| CliError::other(format!("cannot read stdin: {e}")))?;
            }
        }
        Ok(rx)
    }
}

/// Where "the user pressed Ctrl-C" comes from.
pub(crate) enum Interrupt {
    /// SIGINT.
    CtrlC,
    /// A notification (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Manual(std::sync::Arc<tokio::sync::Notify>),
}

impl Interrupt {
    /// Starts listening; Ctrl-C no longer ends the process while the listener lives.
    pub fn listen(&self) -> Result<InterruptListener> {
        match self {
            Self::CtrlC => {
                use tokio::signal::unix::{signal, SignalKind};
                signal(SignalKind::interrupt())
                    .map(InterruptListener::Signal)
                    .map_err(|e| {
                        CliError::other(format!("cannot handle Ctrl-C: {}", client::root_cause(&e)))
                    })
            }
            Self::Manual(n) => Ok(InterruptListener::Manual(n.clone())),
        }
    }
}

pub(crate) enum InterruptListener {
    Signal(tokio::signal::unix::Signal),
    Manual(std::sync::Arc<tokio::sync::Notify>),
}

impl InterruptListener {
    /// Resolves when the user interrupts.
    pub async fn recv(&mut self) {
        match self {
            Self::Signal(s) => {
                if s.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            Self::Manual(n) => n.notified().await,
        }
    }
}

/// What a command writes to and reads from; the real process's streams in [`crate::run`].
pub(crate) struct Ctx<'a> {
    pub out: &'a mut (dyn Write + Send),
    pub err: &'a mut (dyn Write + Send),
    pub stdin: StdinSource,
    pub config_path: Option<PathBuf>,
    /// Ctrl-C, for the commands that handle it (task streams).
    pub interrupt: Interrupt,
    /// Whether stdout is a terminal that takes colors (dims an agent's reasoning).
    pub color: bool,
}

impl Ctx<'_> {
    /// Writes text to stdout.
    pub fn print(&mut self, s: &str) -> Result<()> {
        write_all(self.out, s.as_bytes())
    }

    /// Writes a line to stderr (status messages; failures to write are ignored).
    pub fn note(&mut self, s: &str) {
        let _ = writeln!(self.err, "{s}");
        let _ = self.err.flush();
    }

    /// Pretty JSON on stdout.
    pub fn print_json(&mut self, v: &serde_json::Value) -> Result<()> {
        let s = serde_json::to_string_pretty(v)
            .map_err(|e| CliError::other(format!("cannot encode JSON: {e}")))?;
        self.print(&format!("{s}\n"))
    }
}

pub(crate) fn write_all(w: &mut (dyn Write + Send), bytes: &[u8]) -> Result<()> {
    w.write_all(bytes)
        .and_then(|()| w.flush())
        .map_err(|e| CliError::other(format!("cannot write output: {}", client::root_cause(&e))))
}

/// Size of the local terminal, else 80x24.
pub(crate) fn terminal_size() -> (u16, u16) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() || std::io::stdin().is_terminal() {
        if let Ok((c, r)) = crossterm::terminal::size() {
            if c > 0 && r > 0 {
                return (c, r);
            }
        }
    }
    (80, 24)
}
