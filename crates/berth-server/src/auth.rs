//! Bearer-token authentication and the audit trail of mutating calls.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_domain::{ErrorCode, Secret};
use berth_store::{AuditRecord, Store};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller, put into request extensions by [`require_token`].
#[derive(Debug, Clone)]
pub struct Actor {
    pub token_id: String,
    pub token_name: String,
    pub role: String,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn generate_token() -> Secret {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    Secret::new(format!("berth_{}", hex::encode(bytes)))
}

/// Middleware: every route under /api/v1 needs `Authorization: Bearer <token>`.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_owned);
    // Browsers cannot set headers on a WebSocket: they offer the token as a subprotocol,
    // `new WebSocket(url, ["berth.bearer", token])` (never in the URL, which gets logged).
    let token = header.or_else(|| websocket_token(req.headers()));
    let Some(token) = token.as_deref() else {
        return ApiError::new(
            ErrorCode::Unauthorized,
            "missing bearer token: send `Authorization: Bearer <token>` (berth login URL --token T)",
        )
        .into_response();
    };
    match state.store.find_token(&hash_token(token)).await {
        Ok(Some(t)) => {
            req.extensions_mut().insert(Actor {
                token_id: t.id.to_string(),
                token_name: t.name,
                role: t.role,
            });
            next.run(req).await
        }
        Ok(None) => {
            ApiError::new(ErrorCode::Unauthorized, "unknown or revoked token").into_response()
        }
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// The token of an `Authorization` field value, as RFC 9110 reads credentials: whitespace around
/// the value is not part of it (§5.5, so a trailing space or tab is ignored, as HTTP libraries
/// and proxies may add or drop it), the scheme `Bearer` is case-insensitive (§11.1), one or
/// more spaces separate it from the token, and the token is one run of visible characters.
/// Anything else (another scheme, no token, whitespace or control characters inside the token,
/// a second token) is no credential at all: 401.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    (!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())).then_some(token)
}

/// The subprotocol that carries a bearer token on WebSockets.
pub const WS_BEARER_PROTOCOL: &str = "berth.bearer";

fn websocket_token(headers: &axum::http::HeaderMap) -> Option<String> {
    let offered = headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?;
    let mut parts = offered.split(',').map(str::trim);
    parts.find(|p| *p == WS_BEARER_PROTOCOL)?;
    parts.next().filter(|t| !t.is_empty()).map(str::to_owned)
}

/// Records a mutating call. Failing to write the audit log is logged, never hidden.
pub async fn audit<T>(
    store: &Store,
    actor: &Actor,
    action: &str,
    target: &str,
    result: &Result<T, ApiError>,
) {
    let (res, detail) = match result {
        Ok(_) => ("ok".to_owned(), None),
        Err(e) => (e.code.as_str().to_owned(), Some(e.message.clone())),
    };
    let rec = AuditRecord {
        actor: actor.token_id.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        result: res,
        detail,
    };
    if let Err(e) = store.append_audit(&rec).await {
        tracing::error!(error = %e, action, target, "could not write audit record");
    }
}

/// On first start (no tokens yet) installs the bootstrap admin token: from
/// `BERTH_BOOTSTRAP_TOKEN`, from the token file, or freshly generated and written to
/// `DATA_DIR/admin-token` (mode 0600). Returns where the token came from, for the log.
pub async fn bootstrap(
    store: &Store,
    data_dir: &std::path::Path,
    env_token: Option<Secret>,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    if store.count_tokens().await? > 0 {
        return Ok(None);
    }
    let (token, source) = if let Some(t) = env_token {
        (t, "BERTH_BOOTSTRAP_TOKEN".to_owned())
    } else if let Some(f) = token_file {
        let raw = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("bootstrap token file {}: {e}", f.display()))?;
        (Secret::new(raw.trim()), f.display().to_string())
    } else {
        let t = generate_token();
        let path = data_dir.join("admin-token");
        write_private(&path, t.expose())?;
        (t, path.display().to_string())
    };
    if token.expose().len() < 16 {
        anyhow::bail!("the bootstrap token must be at least 16 characters long");
    }
    store
        .insert_token("bootstrap-admin", &hash_token(token.expose()), "admin")
        .await?;
    Ok(Some(source))
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{contents}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_reads_credentials_as_rfc_9110_does() {
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("Bearer abc ", Some("abc")),
            ("Bearer abc\t", Some("abc")),
            (" Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc", Some("abc")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearer a b", None),
            ("Bearer a\tb", None),
            ("Basic abc", None),
            ("Bearerabc", None),
            ("abc", None),
        ] {
            assert_eq!(bearer_token(value), token, "{value:?}");
        }
    }

    #[tokio::test]
    async fn bootstrap_only_once_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_memory().await.unwrap();
        let tok = Secret::new("a-very-long-bootstrap-token");
        let src = bootstrap(&store, dir.path(), Some(tok.clone()), None)
            .await
            .unwrap();
        assert_eq!(src.as_deref(), Some("BERTH_BOOTSTRAP_TOKEN"));
        assert!(store
            .find_token(&hash_token(tok.expose()))
            .await
            .unwrap()
            .is_some());
        // Second start: nothing changes, even with another token offered.
        let src = bootstrap(
            &store,
            dir.path(),
            Some(Secret::new("another-long-token-xx")),
            None,
        )
        .await
        .unwrap();
        assert!(src.is_none());
        assert_eq!(store.count_tokens().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn generated_token_is_written_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_memory().await.unwrap();
        bootstrap(&store, dir.path(), None, None).await.unwrap();
        let path = dir.path().join("admin-token");
        let token = std::fs::read_to_string(&path).unwrap();
        assert!(token.trim().starts_with("berth_"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(store
            .find_token(&hash_token(token.trim()))
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn short_tokens_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_memory().await.unwrap();
        assert!(
            bootstrap(&store, dir.path(), Some(Secret::new("short")), None)
                .await
                .is_err()
        );
        assert_eq!(store.count_tokens().await.unwrap(), 0);
    }
}
