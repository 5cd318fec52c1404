//! Live resource updates on Podman engines whose Docker-compatible service lacks
//! `POST /containers/{id}/update` (Podman 4.x answers it with a plain 404): the same change
//! through Podman's own `POST /libpod/containers/{id}/update`, which takes the OCI
//! `LinuxResources` shape and applies it to the running container's cgroups at once.
//!
//! Podman 4.3 does not persist such an update in the container's configuration: a restart of
//! the same container brings back the limits it was created with. Callers therefore recreate
//! the container at its next start when its stored limits changed (the server does, through a
//! label on the container).
//!
//! bollard speaks only the Docker API, so this is one small HTTP/1.1 request written by hand
//! over the engine's socket (or TCP address).

use berth_domain::Limits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::docker::Endpoint;
use crate::error::{from_status, RuntimeError};

/// The CFS period berth sets CPU quotas against (the engines' default), in microseconds.
const CPU_PERIOD_US: i64 = 100_000;
/// The largest answer read back (an error message at most).
const MAX_RESPONSE: u64 = 64 * 1024;

/// The OCI `LinuxResources` body for `limits` (swap equal to memory: no swap, as at create).
pub(crate) fn resources_body(limits: &Limits) -> serde_json::Value {
    let quota = limits.nano_cpus.saturating_mul(CPU_PERIOD_US) / 1_000_000_000;
    serde_json::json!({
        "memory": {"limit": limits.memory_bytes, "swap": limits.memory_bytes},
        "cpu": {"quota": quota, "period": CPU_PERIOD_US},
        "pids": {"limit": limits.pids},
    })
}

/// Sends the libpod update of `id` to `endpoint`.
pub(crate) async fn update(endpoint: &str, id: &str, limits: &Limits) -> Result<(), RuntimeError> {
    let ep = crate::docker::parse_endpoint(endpoint)?;
    let body = resources_body(limits).to_string();
    let path = format!("/v4.0.0/libpod/containers/{}/update", encode_segment(id));
    let unreachable = |e: std::io::Error| RuntimeError::unreachable(endpoint, e);
    let (status, text) = match ep {
        Endpoint::Unix(p) => {
            let s = tokio::net::UnixStream::connect(&p)
                .await
                .map_err(unreachable)?;
            post(s, "d", &path, &body).await?
        }
        Endpoint::Http(addr) => {
            let s = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(unreachable)?;
            post(s, &addr, &path, &body).await?
        }
    };
    if (200..300).contains(&status) {
        return Ok(());
    }
    Err(from_status(status, error_message(&text)))
}

/// A container id or name as one path segment (ids and names never need more than this).
fn encode_segment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .collect()
}

/// One `POST` with a JSON body; returns the status and the body as text.
async fn post<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), RuntimeError> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut limited = (&mut s).take(MAX_RESPONSE);
    let read = limited.read_to_end(&mut raw);
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .map_err(|_| RuntimeError::Other("the engine did not answer the update".into()))??;
    parse_response(&String::from_utf8_lossy(&raw))
}

/// The status code and body of an HTTP/1.1 answer (chunked bodies keep their chunk sizes,
/// which is fine for the error message they are read for).
pub(crate) fn parse_response(raw: &str) -> Result<(u16, String), RuntimeError> {
    let bad = || RuntimeError::Other(format!("unreadable answer from the engine: {raw:.200}"));
    let status = raw
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(bad)?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}

/// The `message` of a libpod error body, else the body itself.
fn error_message(body: &str) -> String {
    let start = body.find('{');
    let json = start.and_then(|i| {
        serde_json::from_str::<serde_json::Value>(body[i..].trim_end_matches(|c: char| c != '}'))
            .ok()
    });
    match json.as_ref().and_then(|v| v["message"].as_str()) {
        Some(m) => m.to_owned(),
        None => body.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let l = Limits {
            memory_bytes: 1 << 30,
            nano_cpus: 1_500_000_000,
            pids: 300,
        };
        let b = resources_body(&l);
        assert_eq!(b["memory"]["limit"], 1 << 30);
        assert_eq!(b["memory"]["swap"], 1 << 30);
        assert_eq!(b["cpu"]["quota"], 150_000);
        assert_eq!(b["cpu"]["period"], 100_000);
        assert_eq!(b["pids"]["limit"], 300);
    }

    #[test]
    fn responses() {
        let (st, body) = parse_response("HTTP/1.1 201 Created\r\nA: b\r\n\r\nabc").unwrap();
        assert_eq!((st, body.as_str()), (201, "abc"));
        let raw = "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5e\r\n{\"cause\":\"no such container\",\"message\":\"no container x\",\"response\":404}\r\n0\r\n\r\n";
        let (st, body) = parse_response(raw).unwrap();
        assert_eq!(st, 404);
        assert_eq!(error_message(&body), "no container x");
        assert!(parse_response("garbage").is_err());
        assert_eq!(encode_segment("abc/../x"), "abc..x");
    }
}
