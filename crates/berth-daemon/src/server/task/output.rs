//! Reading an agent's stdout and stderr as lines, with a cap on the length of a line: a
//! longer line is reported by its beginning, the rest of it is never buffered.

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::events::truncate_string;

/// stderr lines are cut at this many bytes.
pub(super) const MAX_LOG_LINE: usize = 4 * 1024;
/// stdout lines longer than this are dropped (with a Log event saying so).
pub(super) const MAX_STDOUT_LINE: usize = 16 * 1024 * 1024;

/// What the turn's output readers produce.
pub(super) enum Out {
    Stdout(String),
    Stderr(String),
    /// A line longer than the reader's limit: its beginning.
    Overlong {
        stderr: bool,
        prefix: String,
    },
}

/// Sends the lines of `r` (without `\n` or `\r\n`, lossily decoded) to `tx` until end of file
/// or `tx` closes; a line longer than `max` bytes is sent as its first `max` bytes in an
/// [`Out::Overlong`] and the rest of it is skipped.
pub(super) async fn read_lines<R: AsyncRead + Unpin>(
    mut r: R,
    stderr: bool,
    max: usize,
    tx: mpsc::Sender<Out>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut discarding = false;
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(stderr, error = %e, "agent pipe read failed");
                break;
            }
        };
        let mut data = &chunk[..n];
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            if discarding {
                discarding = false;
            } else {
                buf.extend_from_slice(&data[..pos]);
                let out = if buf.len() > max {
                    Out::Overlong {
                        stderr,
                        prefix: prefix(&buf, max),
                    }
                } else {
                    wrap(stderr, line(&buf))
                };
                if tx.send(out).await.is_err() {
                    return;
                }
            }
            buf.clear();
            data = &data[pos + 1..];
        }
        if !discarding {
            buf.extend_from_slice(&data[..data.len().min(max + 1)]);
            if buf.len() > max {
                let prefix = prefix(&buf, max);
                buf.clear();
                discarding = true;
                if tx.send(Out::Overlong { stderr, prefix }).await.is_err() {
                    return;
                }
            }
        }
    }
    if !buf.is_empty() && !discarding {
        let _ = tx.send(wrap(stderr, line(&buf))).await;
    }
}

/// A line's text: without a trailing `\r`, lossily decoded.
fn line(b: &[u8]) -> String {
    let b = b.strip_suffix(b"\r").unwrap_or(b);
    String::from_utf8_lossy(b).into_owned()
}

/// The first `max` bytes of an overlong line's text.
fn prefix(b: &[u8], max: usize) -> String {
    let mut s = line(b);
    truncate_string(&mut s, max);
    s
}

fn wrap(stderr: bool, s: String) -> Out {
    if stderr {
        Out::Stderr(s)
    } else {
        Out::Stdout(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn line_reader_splits_and_limits() {
        let data: &[u8] = b"a\r\nbb\n0123456789abcdef\nlast";
        let (tx, mut rx) = mpsc::channel(16);
        read_lines(data, true, 8, tx).await;
        let mut got = Vec::new();
        while let Some(o) = rx.recv().await {
            got.push(match o {
                Out::Stdout(s) => format!("out:{s}"),
                Out::Stderr(s) => format!("err:{s}"),
                Out::Overlong { prefix, .. } => format!("long:{prefix}"),
            });
        }
        assert_eq!(got, ["err:a", "err:bb", "long:01234567", "err:last"]);
    }
}
