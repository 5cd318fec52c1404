//! Tokens as a service: admins create any, a tenant's owners create and revoke those of their
//! tenant up to owner. A token is shown once, at creation; the store keeps its SHA-256 only.
//! Every change is audited (`token.create`, `token.revoke`).

use berth_api as api;
use berth_domain::{ErrorCode, Name, Role, Secret, TokenId};
use berth_store::{NewToken, TokenRecord};

use crate::auth::{audit, forbidden, generate_token, hash_token, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The longest token name.
pub const MAX_TOKEN_NAME: usize = 40;

/// A token name: a letter or digit, then letters, digits, `.`, `_`, `@` or `-`, at most
/// [`MAX_TOKEN_NAME`] long.
pub fn valid_name(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    s.len() <= MAX_TOKEN_NAME
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(ok)
}

/// The caller's token's expiry (`None`: never, or a caller that is no token).
pub async fn expiry(state: &AppState, actor: &Actor) -> ApiResult<Option<berth_domain::Timestamp>> {
    let Some(id) = TokenId::parse(&actor.id) else {
        return Ok(None);
    };
    Ok(state.store.token(&id).await?.and_then(|t| t.expires_at))
}

/// A lifetime as people type it: 1 to 999 days, hours or minutes (`30d`, `12h`, `90m`).
pub fn parse_lifetime(s: &str) -> ApiResult<time::Duration> {
    let bad = || {
        ApiError::invalid(format!(
            "expires_in {s:?}: use 1 to 999 days, hours or minutes, like 30d, 12h or 90m"
        ))
    };
    let split = s.char_indices().last().map_or(0, |(i, _)| i);
    let (num, unit) = s.split_at(split);
    let digits = num.len() <= 3 && num.bytes().all(|b| b.is_ascii_digit());
    if !digits || num.is_empty() || num.starts_with('0') {
        return Err(bad());
    }
    let n: i64 = num.parse().map_err(|_| bad())?;
    match unit {
        "d" => Ok(time::Duration::days(n)),
        "h" => Ok(time::Duration::hours(n)),
        "m" => Ok(time::Duration::minutes(n)),
        _ => Err(bad()),
    }
}

/// What a create request asks for, checked against the caller: role and tenant consistent, the
/// tenant the caller's own (404 otherwise), the role one the caller may grant (403).
fn check_request(actor: &Actor, req: &api::CreateToken) -> ApiResult<(Role, Option<Name>)> {
    if !valid_name(&req.name) {
        return Err(ApiError::invalid(format!(
            "name {:?}: a letter or digit, then letters, digits, '.', '_', '@' or '-', at most \
             {MAX_TOKEN_NAME} long",
            req.name
        )));
    }
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown role {:?}: use admin, owner, member or viewer",
            req.role
        ))
    })?;
    let tenant = match (role, &req.tenant) {
        (Role::Admin, None) => None,
        (Role::Admin, Some(_)) => {
            return Err(ApiError::invalid(
                "admin tokens are server-wide: leave out the tenant",
            ))
        }
        (_, None) => {
            return Err(ApiError::invalid(format!(
                "a {role} token belongs to a tenant: give one"
            )))
        }
        (_, Some(t)) => Some(crate::error::tenant_name(t)?),
    };
    if let Some(t) = &tenant {
        actor.check_tenant(t.as_str(), || format!("tenant {t}"))?;
    }
    if !actor.role.may_grant(role) {
        return Err(forbidden(&actor.role, Role::Admin));
    }
    Ok((role, tenant))
}

/// The audit target of a token: `tenant/name`, or the name of an admin token.
fn target(tenant: Option<&str>, name: &str) -> String {
    match tenant {
        Some(t) => format!("{t}/{name}"),
        None => name.to_owned(),
    }
}

/// Creates a token; `req` is `Err` when the request was malformed (recorded too).
pub async fn create(
    state: &AppState,
    actor: &Actor,
    req: ApiResult<api::CreateToken>,
) -> ApiResult<(Secret, TokenRecord)> {
    let shown = match &req {
        Ok(r) => target(r.tenant.as_deref(), &r.name),
        Err(_) => "(invalid request)".to_owned(),
    };
    let result = async {
        let req = req?;
        let (role, tenant) = check_request(actor, &req)?;
        let expires_at = match req.expires_in.as_deref() {
            Some(s) => Some(berth_domain::Timestamp::from(
                time::OffsetDateTime::now_utc() + parse_lifetime(s)?,
            )),
            None => None,
        };
        let token = generate_token();
        let rec = state
            .store
            .create_token(&NewToken {
                name: &req.name,
                hash: &hash_token(token.expose()),
                role: role.as_str(),
                tenant: tenant.as_ref(),
                expires_at: expires_at.as_ref(),
                parent: None,
            })
            .await?;
        Ok((token, rec))
    }
    .await;
    audit(&state.store, actor, "token.create", &shown, &result).await;
    result
}

/// How many devices one token may have remembered at once.
pub const MAX_DEVICES: usize = 20;

/// How long a remembered device stays signed in (at most; never past its origin's expiry).
pub const DEVICE_LIFETIME: time::Duration = time::Duration::days(30);

/// "Remember this device": a new token for the calling browser, derived from the caller's own
/// token (same role and tenant, [`DEVICE_LIFETIME`] or the origin's expiry if sooner), so the
/// browser keeps a token of its own in its storage, never the one that was pasted. Revoking the
/// origin revokes it; signing out of the device revokes it alone. Audited as `token.device`.
pub async fn remember_device(state: &AppState, actor: &Actor) -> ApiResult<(Secret, TokenRecord)> {
    let mut shown = actor.name.clone();
    let result = async {
        let not_token = || {
            ApiError::invalid(
                "only a token signs a device in: a browser session of single sign-on is remembered by its cookie",
            )
        };
        let origin_id = TokenId::parse(&actor.id).ok_or_else(not_token)?;
        let origin = state.store.token(&origin_id).await?.ok_or_else(not_token)?;
        if origin.parent_id.is_some() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this is already a device token: sign in with your own token to remember another device",
            ));
        }
        let now = time::OffsetDateTime::now_utc();
        let now_s = berth_domain::Timestamp::from(now);
        let live_devices = state
            .store
            .list_tokens(origin.tenant.as_ref())
            .await?
            .iter()
            .filter(|t| t.parent_id.as_ref() == Some(&origin.id))
            .filter(|t| crate::auth::check_token(t, &now_s).is_ok())
            .count();
        if live_devices >= MAX_DEVICES {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{MAX_DEVICES} devices are already remembered for this token: sign out on one (or revoke its token) first"
                ),
            ));
        }
        let mut expires = now + DEVICE_LIFETIME;
        if let Some(own) = origin.expires_at.as_ref().and_then(|t| t.instant()) {
            expires = expires.min(own);
        }
        let base: String = origin.name.chars().take(MAX_TOKEN_NAME - ".device".len()).collect();
        let name = format!("{base}.device");
        shown = target(origin.tenant.as_ref().map(Name::as_str), &name);
        let token = generate_token();
        let expires_at = berth_domain::Timestamp::from(expires);
        let rec = state
            .store
            .create_token(&NewToken {
                name: &name,
                hash: &hash_token(token.expose()),
                role: &origin.role,
                tenant: origin.tenant.as_ref(),
                expires_at: Some(&expires_at),
                parent: Some(&origin.id),
            })
            .await?;
        Ok((token, rec))
    }
    .await;
    audit(&state.store, actor, "token.device", &shown, &result).await;
    result
}

/// Signs a remembered device out: a device token revokes itself (audited `token.revoke`). Any
/// other caller has nothing to sign out here (`false`).
pub async fn sign_out_device(state: &AppState, actor: &Actor) -> ApiResult<bool> {
    let Some(id) = TokenId::parse(&actor.id) else {
        return Ok(false);
    };
    let Some(t) = state.store.token(&id).await? else {
        return Ok(false);
    };
    if t.parent_id.is_none() {
        return Ok(false);
    }
    let shown = target(t.tenant.as_ref().map(Name::as_str), &t.name);
    let result = state.store.revoke_token(&id).await.map_err(ApiError::from);
    audit(&state.store, actor, "token.revoke", &shown, &result).await;
    result.map(|_| true)
}

/// The tokens the caller may manage: all for an admin, its tenant's for an owner.
pub async fn list(state: &AppState, actor: &Actor) -> ApiResult<Vec<TokenRecord>> {
    let tenant = actor.scope().map(crate::error::tenant_name).transpose()?;
    Ok(state.store.list_tokens(tenant.as_ref()).await?)
}

/// Revokes a token (the route checked it is of the caller's tenant). An owner may not revoke
/// an admin's token, and the last live admin token is kept (409), so the server stays
/// manageable.
pub async fn revoke(state: &AppState, actor: &Actor, id: &str) -> ApiResult<TokenRecord> {
    let mut shown = id.to_owned();
    let result = async {
        let nf = || ApiError::not_found(format!("token {id} not found"));
        let tid = TokenId::parse(id).ok_or_else(nf)?;
        let t = state.store.token(&tid).await?.ok_or_else(nf)?;
        shown = target(t.tenant.as_ref().map(Name::as_str), &t.name);
        let role = Role::parse(&t.role).unwrap_or(Role::Admin);
        if !actor.role.may_grant(role) {
            return Err(forbidden(&actor.role, Role::Admin));
        }
        if role == Role::Admin && t.revoked_at.is_none() && live_admins(state).await? <= 1 {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this is the last admin token: create another admin token first",
            ));
        }
        state.store.revoke_token(&tid).await?;
        state.store.token(&tid).await?.ok_or_else(nf)
    }
    .await;
    audit(&state.store, actor, "token.revoke", &shown, &result).await;
    result
}

async fn live_admins(state: &AppState) -> ApiResult<usize> {
    let now = berth_domain::Timestamp::now();
    Ok(state
        .store
        .list_tokens(None)
        .await?
        .iter()
        .filter(|t| t.role == "admin" && crate::auth::check_token(t, &now).is_ok())
        .count())
}

/// The API view of a stored token.
pub fn to_api(t: TokenRecord) -> api::TokenInfo {
    api::TokenInfo {
        id: t.id.to_string(),
        name: t.name,
        role: t.role,
        tenant: t.tenant.map(|n| n.to_string()),
        created_at: t.created_at,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
        revoked_at: t.revoked_at,
        device_of: t.parent_id.map(|p| p.to_string()),
    }
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
