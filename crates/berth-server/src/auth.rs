//! Bearer-token authentication and the audit trail of mutating calls.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_domain::{ErrorCode, Name, Permission, Role, Secret, Timestamp};
use berth_store::{AuditRecord, Store, TokenRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The authenticated caller, put into request extensions by [`require_token`]. The one
/// identity type of the server: every source of callers (today bearer tokens) builds it in one
/// small constructor, and authorization reads only this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token id (what the audit log's `actor` column holds).
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The caller's tenant; `None` only for admins (server-wide).
    pub tenant: Option<Name>,
}

impl Actor {
    /// The caller a stored token stands for. A token whose role is unknown, an admin token
    /// bound to a tenant or a tenant role without one is refused (401): the store holds
    /// something this server did not write.
    pub fn from_token(t: &TokenRecord) -> ApiResult<Self> {
        Self::checked(t.id.to_string(), t.name.clone(), &t.role, t.tenant.clone())
    }

    fn checked(id: String, name: String, role: &str, tenant: Option<Name>) -> ApiResult<Self> {
        let parsed = Role::parse(role);
        match (parsed, &tenant) {
            (Some(Role::Admin), None) => {}
            (Some(r), Some(_)) if r != Role::Admin => {}
            _ => {
                tracing::error!(caller = %id, role, "caller with an inconsistent role and tenant");
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "this caller's role is not valid on this server: ask an admin for a new one",
                ));
            }
        }
        Ok(Self {
            id,
            name,
            role: parsed.unwrap_or(Role::Viewer),
            tenant,
        })
    }

    /// The person a single sign-on browser session stands for, with the same consistency rule
    /// as tokens (admins server-wide, every other role in one tenant).
    pub fn from_session(p: &crate::sso::SessionPrincipal) -> ApiResult<Self> {
        let tenant = match p.tenant.as_deref().map(Name::parse).transpose() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(caller = %p.user_id, error = %e, "session user with an invalid tenant");
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "this caller's tenant is not valid on this server: ask an admin",
                ));
            }
        };
        Self::checked(p.user_id.clone(), p.user_name.clone(), &p.role, tenant)
    }

    /// The caller as a decision or a comment records it: `name (role)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.role.as_str())
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The tenant the caller is limited to (`None`: an admin, who sees every tenant). Lists
    /// filter by it.
    pub fn scope(&self) -> Option<&str> {
        self.tenant_scope().map(Name::as_str)
    }

    /// [`Actor::scope`] as the tenant's name.
    pub fn tenant_scope(&self) -> Option<&Name> {
        if self.is_admin() {
            None
        } else {
            self.tenant.as_ref()
        }
    }

    /// Whether the caller may see objects of `tenant` at all.
    pub fn sees(&self, tenant: &str) -> bool {
        self.scope().is_none_or(|own| own == tenant)
    }

    /// Objects of other tenants do not exist for the caller: 404, worded as for a missing one.
    pub fn check_tenant(&self, tenant: &str, what: impl FnOnce() -> String) -> ApiResult<()> {
        if self.sees(tenant) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("{} not found", what())))
        }
    }

    /// 403 `forbidden` naming the role `p` needs, unless the caller holds it.
    pub fn require(&self, p: Permission) -> ApiResult<()> {
        if self.role.allows(p) {
            return Ok(());
        }
        Err(forbidden(&self.role, p.min_role()))
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(forbidden(&self.role, Role::Admin))
        }
    }
}

/// The refusal of a caller whose role is below `needed`.
pub fn forbidden(role: &Role, needed: Role) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!("this needs the {needed} role (or higher); this token's role is {role}"),
    )
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn generate_token() -> Secret {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    Secret::new(format!("berth_{}", hex::encode(bytes)))
}

/// How often a token's `last_used_at` is written at most.
pub const LAST_USED_INTERVAL: time::Duration = time::Duration::minutes(1);

/// Refuses a revoked token (`token_revoked`) or one whose expiry is at or before `now`
/// (`token_expired`), both 401.
pub fn check_token(t: &TokenRecord, now: &Timestamp) -> ApiResult<()> {
    if let Some(at) = &t.revoked_at {
        return Err(ApiError::new(
            ErrorCode::TokenRevoked,
            format!("this token was revoked at {at}: ask for a new one"),
        ));
    }
    if let Some(at) = t.expires_at.as_ref().filter(|at| *at <= now) {
        return Err(ApiError::new(
            ErrorCode::TokenExpired,
            format!("this token expired at {at}: ask for a new one"),
        ));
    }
    Ok(())
}

/// The token's caller, if the token is live; notes its use at most once a minute.
async fn authenticate(store: &Store, token: &str) -> ApiResult<Actor> {
    let Some(t) = store.lookup_token(&hash_token(token)).await? else {
        return Err(ApiError::new(ErrorCode::Unauthorized, "unknown token"));
    };
    let now = time::OffsetDateTime::now_utc();
    let at = Timestamp::from(now);
    check_token(&t, &at)?;
    let actor = Actor::from_token(&t)?;
    let before = Timestamp::from(now - LAST_USED_INTERVAL);
    let stale = t.last_used_at.as_ref().is_none_or(|last| *last < before);
    if stale {
        if let Err(e) = store.touch_token(&t.id, &at, &before).await {
            tracing::warn!(error = %e, "could not note the token's last use");
        }
    }
    Ok(actor)
}

/// Middleware: every route under /api/v1 needs `Authorization: Bearer <token>`. The caller
/// ([`Actor`]) and the state go into the request's extensions for the route's access check
/// (`routes::access`).
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
        // No bearer token: a browser session cookie of single sign-on (CSRF-checked), if any.
        match crate::sso::session_actor(&state, req.headers(), req.method()).await {
            Ok(Some(p)) => {
                let actor = match Actor::from_session(&p) {
                    Ok(a) => a,
                    Err(e) => return e.into_response(),
                };
                req.extensions_mut().insert(actor);
                req.extensions_mut().insert(p);
                req.extensions_mut().insert(state);
                return next.run(req).await;
            }
            Ok(None) => {}
            Err(e) => return e.into_response(),
        }
        return ApiError::new(
            ErrorCode::Unauthorized,
            "missing bearer token: send `Authorization: Bearer <token>` (berth login URL --token T)",
        )
        .into_response();
    };
    match authenticate(&state.store, token).await {
        Ok(actor) => {
            req.extensions_mut().insert(actor);
            req.extensions_mut().insert(state);
            next.run(req).await
        }
        Err(e) => e.into_response(),
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
        actor: actor.id.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        result: res,
        detail,
        ..actor_fields(actor, action, target)
    };
    if let Err(e) = store.append_audit(&rec).await {
        tracing::error!(error = %e, action, target, "could not write audit record");
    }
}

/// The audit columns naming the actor (name, role, tenant) and the tenant of the target.
pub fn actor_fields(actor: &Actor, action: &str, target: &str) -> AuditRecord {
    AuditRecord {
        actor_name: Some(actor.name.clone()),
        actor_role: Some(actor.role.as_str().to_owned()),
        actor_tenant: actor.tenant.as_ref().map(Name::to_string),
        // A tenant's caller acts only in its tenant, whatever it typed.
        tenant: actor
            .scope()
            .map(str::to_owned)
            .or_else(|| target_tenant(action, target)),
        ..AuditRecord::default()
    }
}

/// The tenant an audited target belongs to: targets are `tenant/name[:more]` (workspaces,
/// sessions, secrets, templates, tokens) or a bare tenant (`tenant.*` and `budget.*` actions);
/// server-wide ones (`image.*`, `system.*`) have none.
pub fn target_tenant(action: &str, target: &str) -> Option<String> {
    if action.starts_with("image.") || action.starts_with("system.") {
        return None;
    }
    let first = match target.split_once('/') {
        Some((t, _)) => t,
        None if action.starts_with("tenant.") || action.starts_with("budget.") => target,
        None => return None,
    };
    berth_domain::Name::parse(first).ok().map(|n| n.to_string())
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

    #[test]
    fn audit_rows_belong_to_the_tenant_of_their_target_or_of_the_actor() {
        for (action, target, tenant) in [
            ("workspace.create", "acme/web", Some("acme")),
            ("session.create", "acme/web:main", Some("acme")),
            ("task.cancel", "acme/web:tsk_1", Some("acme")),
            ("budget.set", "acme", Some("acme")),
            ("tenant.quota", "acme", Some("acme")),
            ("workspace.exec", "web", None),
            ("image.build", "localhost/berth-workspace:1", None),
            ("system.disk_low", "/var/lib/berth", None),
            ("egress.log_dropped", "ws_0123", None),
        ] {
            assert_eq!(
                target_tenant(action, target).as_deref(),
                tenant,
                "{action} {target}"
            );
        }
        let member = Actor {
            id: "tok_1".into(),
            name: "alice".into(),
            role: Role::Member,
            tenant: Some(Name::parse("acme").unwrap()),
        };
        // Whatever it typed, a tenant's caller acts in its tenant.
        let rec = actor_fields(&member, "workspace.exec", "web");
        assert_eq!(rec.tenant.as_deref(), Some("acme"));
        assert_eq!(
            (rec.actor_name.as_deref(), rec.actor_role.as_deref()),
            (Some("alice"), Some("member"))
        );
        assert_eq!(rec.actor_tenant.as_deref(), Some("acme"));
    }

    #[test]
    fn expiry_and_revocation_are_told_apart() {
        let ts = |s: &str| Timestamp::parse(s).unwrap();
        let t = |expires: Option<&str>, revoked: Option<&str>| TokenRecord {
            id: berth_domain::TokenId::generate(),
            name: "t".into(),
            role: "viewer".into(),
            tenant: berth_domain::Name::parse("acme").ok(),
            created_at: ts("2026-01-01T00:00:00.000Z"),
            expires_at: expires.map(ts),
            last_used_at: None,
            revoked_at: revoked.map(ts),
            parent_id: None,
        };
        let now = &ts("2026-06-01T00:00:00.000Z");
        assert!(check_token(&t(None, None), now).is_ok());
        assert!(check_token(&t(Some("2026-06-01T00:00:00.001Z"), None), now).is_ok());
        let code = |r: ApiResult<()>| r.unwrap_err().code;
        assert_eq!(
            code(check_token(&t(Some(now.as_str()), None), now)),
            ErrorCode::TokenExpired
        );
        assert_eq!(
            code(check_token(&t(None, Some("2026-02-01T00:00:00.000Z")), now)),
            ErrorCode::TokenRevoked
        );
        // An admin role bound to a tenant, or a tenant role without one, is no caller.
        let mut bad = t(None, None);
        bad.role = "admin".into();
        assert_eq!(
            code(Actor::from_token(&bad).map(|_| ())),
            ErrorCode::Unauthorized
        );
        let mut bad = t(None, None);
        bad.tenant = None;
        assert_eq!(
            code(Actor::from_token(&bad).map(|_| ())),
            ErrorCode::Unauthorized
        );
        let a = Actor::from_token(&t(None, None)).unwrap();
        assert_eq!(
            (a.role, a.tenant.as_ref().map(Name::as_str)),
            (Role::Viewer, Some("acme"))
        );
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
