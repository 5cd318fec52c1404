//! Streamed responses, piece by piece: a byte stream split into lines (image build) or into
//! Server-Sent Events (task events); and for the exec and attach WebSockets, control frames,
//! a lost connection as one error, and local stdin chunk by chunk.

use berth_api::WsControl;
use tokio::sync::mpsc::Receiver;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{root_cause, CliError, Result};

/// Splits a byte stream into lines (UTF-8, lossily).
#[derive(Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            out.push(String::from_utf8_lossy(&line[..i]).into_owned());
        }
        out
    }

    pub fn finish(&mut self) -> Vec<String> {
        if self.buf.is_empty() {
            return Vec::new();
        }
        let rest = std::mem::take(&mut self.buf);
        vec![String::from_utf8_lossy(&rest).into_owned()]
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Incremental `text/event-stream` parser: `field: value` lines, events end at a blank line,
/// `:` lines are comments (keepalives), `data` lines of one event are joined with `\n`.
#[derive(Default)]
pub(crate) struct SseParser {
    lines: LineSplitter,
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for line in self.lines.push(bytes) {
            self.line(line.strip_suffix('\r').unwrap_or(&line), &mut out);
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let event = self.event.take();
            let id = self.id.take();
            if !self.data.is_empty() {
                out.push(SseEvent {
                    id,
                    event,
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => self.data.push(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            _ => {}
        }
    }
}

/// A control message (exit, error, resize, end of input) as a WebSocket text frame.
pub(crate) fn control_text(c: &WsControl) -> Result<Message> {
    serde_json::to_string(c)
        .map(Message::Text)
        .map_err(|e| CliError::other(format!("cannot encode a control message: {e}")))
}

pub(crate) fn ws_error(e: &tokio_tungstenite::tungstenite::Error) -> CliError {
    CliError::other(format!("connection to the server lost: {}", root_cause(e)))
}

/// Next chunk of stdin; `None` at end of file; never resolves when stdin is not forwarded.
pub(crate) async fn next_chunk(rx: &mut Option<Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
