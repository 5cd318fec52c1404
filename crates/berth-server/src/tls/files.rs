//! `--tls-cert`/`--tls-key`: the operator's PEM files, loaded at start (a bad pair stops the
//! server with the reason) and checked on a timer afterwards. When their content changes the new
//! pair is served from the next handshake on; a pair that does not load is logged as an error
//! and the previous certificate stays in service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::certs::{self, Loaded};
use super::resolver::CertResolver;

/// Reads and parses the pair (the operator's paths: links are followed, as with certbot's
/// `live/` directory).
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Loaded> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
    };
    let (c, k) = (read(cert)?, read(key)?);
    certs::parse_pem(&c, &k)
        .map_err(|e| anyhow::anyhow!("{} / {}: {e}", cert.display(), key.display()))
}

/// A digest of both files' content (`None` when one cannot be read).
fn stamp(cert: &Path, key: &Path) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(std::fs::read(cert).ok()?);
    h.update([0]);
    h.update(std::fs::read(key).ok()?);
    Some(h.finalize().into())
}

/// Watches the pair every `every` and swaps the served certificate when it changes.
pub fn spawn_watch(
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
    resolver: Arc<CertResolver>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = stamp(&cert, &key);
        loop {
            tokio::time::sleep(every).await;
            let now = stamp(&cert, &key);
            if now == last {
                continue;
            }
            last = now;
            match load(&cert, &key) {
                Ok(l) => {
                    tracing::info!(serial = %l.info.serial, not_after = %l.info.not_after, fingerprint = %l.info.fingerprint, "reloaded the TLS certificate");
                    resolver.set(l.key, l.info);
                }
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "cannot reload the TLS certificate; still serving the previous one"
                ),
            }
        }
    })
}
