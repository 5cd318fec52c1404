//! `berth workspace backup` and `berth workspace restore`: stream an archive between the
//! server and a local file, with progress on a terminal. A backup is written to `FILE.partial`
//! and renamed only when complete, so a cut-off copy never looks like a backup.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_api::Workspace;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{decode, ws_path, CliError, Client, Result};
use crate::ctx::Ctx;

/// Size of the chunks read from the archive file.
const CHUNK: usize = 256 * 1024;
/// Time between progress updates.
const TICK: Duration = Duration::from_millis(500);

/// Progress on stderr, shown only when stderr is a terminal.
struct Progress {
    what: String,
    total: Option<u64>,
    shown: Option<Instant>,
    on: bool,
}

impl Progress {
    fn new(what: String, total: Option<u64>) -> Self {
        Self {
            what,
            total,
            shown: None,
            on: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64) {
        if !self.on || self.shown.is_some_and(|t| t.elapsed() < TICK) {
            return;
        }
        self.shown = Some(Instant::now());
        let line = match self.total {
            Some(t) if t > 0 => format!(
                "{}: {} of {} ({}%)",
                self.what,
                mib(done),
                mib(t),
                done.saturating_mul(100) / t
            ),
            _ => format!("{}: {}", self.what, mib(done)),
        };
        eprint!("\r\x1b[2K{line}");
    }

    fn clear(&self) {
        if self.on && self.shown.is_some() {
            eprint!("\r\x1b[2K");
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CliError {
    CliError::other(format!("{what} {}: {e}", path.display()))
}

/// The file name the server suggests (`tenant-name-stamp.tar.zst`), kept to a plain name.
fn suggested_name(resp: &reqwest::Response, ws: &str) -> PathBuf {
    let from_header = resp
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("filename=\"").nth(1))
        .and_then(|v| v.split('"').next())
        .filter(|n| !n.is_empty() && !n.starts_with('.') && !n.contains('/') && !n.contains('\\'))
        .map(str::to_owned);
    PathBuf::from(from_header.unwrap_or_else(|| format!("{}.tar.zst", ws.replace('/', "-"))))
}

pub(crate) async fn backup(
    client: &Client,
    ctx: &mut Ctx<'_>,
    ws: &str,
    output: Option<PathBuf>,
    pause: bool,
) -> Result<i32> {
    let query: &[(&str, &str)] = if pause { &[("pause", "true")] } else { &[] };
    let resp = client
        .get_download(&format!("{}/backup", ws_path(ws)), query)
        .await?;
    let path = output.unwrap_or_else(|| suggested_name(&resp, ws));
    if path.exists() {
        return Err(CliError::other(format!(
            "{} exists: choose another file with -o",
            path.display()
        )));
    }
    let mut partial = path.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = download(client, resp, &partial, ws).await;
    let written = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &path).map_err(|e| io_err("cannot rename to", &path, e))?;
    ctx.note(&format!("wrote {} ({})", path.display(), mib(written)));
    Ok(0)
}

async fn download(
    client: &Client,
    resp: reqwest::Response,
    partial: &Path,
    ws: &str,
) -> Result<u64> {
    let mut file = tokio::fs::File::create(partial)
        .await
        .map_err(|e| io_err("cannot create", partial, e))?;
    let mut progress = Progress::new(format!("backing up {ws}"), None);
    let mut body = resp.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            progress.clear();
            CliError::other(format!(
                "the backup was cut off ({}); nothing was kept: see the server log",
                client.stream_error(&e)
            ))
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|e| io_err("cannot write", partial, e))?;
        written += chunk.len() as u64;
        progress.update(written);
    }
    progress.clear();
    file.sync_all()
        .await
        .map_err(|e| io_err("cannot write", partial, e))?;
    Ok(written)
}

pub(crate) async fn restore(
    client: &Client,
    ctx: &mut Ctx<'_>,
    file: &Path,
    name: Option<String>,
    tenant: Option<String>,
    json: bool,
) -> Result<i32> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| io_err("cannot open", file, e))?;
    let total = f.metadata().await.map(|m| m.len()).ok();
    let progress = Progress::new(format!("restoring {}", file.display()), total);
    let shown = progress.on;
    let chunks = futures_util::stream::unfold(
        (f, progress, 0u64),
        |(mut f, mut progress, done)| async move {
            let mut buf = vec![0u8; CHUNK];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let done = done + n as u64;
                    progress.update(done);
                    Some((Ok::<_, std::io::Error>(buf), (f, progress, done)))
                }
                // The request fails with this error; the server then refuses the cut archive.
                Err(e) => Some((Err(e), (f, progress, done))),
            }
        },
    );
    let body = reqwest::Body::wrap_stream(chunks);
    let mut query = Vec::new();
    if let Some(n) = &name {
        query.push(("name", n.as_str()));
    }
    if let Some(t) = &tenant {
        query.push(("tenant", t.as_str()));
    }
    let result = client
        .post_upload("/backups/restore", &query, "application/zstd", body)
        .await;
    if shown {
        eprint!("\r\x1b[2K");
    }
    let v = result?;
    if json {
        ctx.print_json(&v)?;
    } else {
        let w: Workspace = decode(v)?;
        ctx.print(&format!(
            "restored {}/{} ({}) {}\n",
            w.tenant, w.name, w.id, w.state
        ))?;
    }
    Ok(0)
}
