//! `berth request`: an agent asks for access from inside its workspace. One JSON line to the
//! server's `access.sock` in the channel directory ([`DEFAULT_ACCESS_SOCKET`]), one JSON line
//! back. The server takes the workspace from the socket the line arrived on, never from the
//! line; it treats every field as hostile (see the server's `access_requests` module).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The server's access-request socket as a workspace sees it.
pub const DEFAULT_ACCESS_SOCKET: &str = "/run/berth/access.sock";

/// The socket's file name in the channel directory.
pub const ACCESS_SOCKET_NAME: &str = "access.sock";

/// An explicit request (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AccessAsk {
    /// Egress to `host:port` (default port 443).
    Egress {
        host: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
    },
    /// The tenant's secret `name`, bound to `host` (as a placeholder the proxy swaps).
    Secret {
        name: String,
        host: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
    },
}

/// The answer (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct AccessAnswer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `created`, or `repeated` (an open or denied request for the same target counted it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Sends `ask` over the socket at `path` and reads the answer (10 s at most each way).
pub fn send(path: &Path, ask: &AccessAsk) -> std::io::Result<AccessAnswer> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(ask)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(std::io::Read::take(s, 64 * 1024)).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unreadable answer: {e}"),
        )
    })
}
