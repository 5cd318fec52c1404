//! Users known from single sign-on: the login that creates or refreshes them (role and tenant
//! from the claims, every time), listing, and disabling/enabling by an admin (all users) or an
//! owner (their tenant's). Disabling ends the user's sessions at once.

use berth_domain::ErrorCode;
use berth_store::{User, UserLogin};

use super::mapping::{claim_values, resolve};
use super::oidc::Identity;
use super::random_hex;
use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Whose users a caller may see and change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserScope {
    All,
    Tenant(String),
}

/// Who calls, beyond the [`Actor`]: a session's tenant and user id (`None` for tokens).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub tenant: Option<&'a str>,
    pub user_id: Option<&'a str>,
}

/// The caller's scope: admins all users, owners their tenant's; anyone else 403.
pub fn scope_of(role: &str, tenant: Option<&str>) -> ApiResult<UserScope> {
    match (role, tenant) {
        ("admin", _) => Ok(UserScope::All),
        ("owner", Some(t)) => Ok(UserScope::Tenant(t.to_owned())),
        _ => Err(ApiError::new(
            ErrorCode::Forbidden,
            "only an admin, or an owner for their tenant, may list or change users",
        )),
    }
}

/// Turns a verified identity into a signed-in user: the claim mapping decides tenant and role
/// (refused with `login_refused` when nothing matches), the user row is created or refreshed,
/// and a disabled user is refused. Audited as `user.login` either way.
pub async fn complete_login(state: &AppState, identity: &Identity) -> ApiResult<User> {
    let Some(sso) = state.web.sso.as_deref() else {
        return Err(ApiError::not_found("single sign-on is not configured"));
    };
    let values = claim_values(identity.claim.as_ref());
    let grant = resolve(&sso.config.map, &values);
    // Who is signing in, as far as the claims say (a refused login is recorded as a viewer).
    let actor = Actor {
        id: format!("sso:{}", identity.subject),
        name: identity.name.clone(),
        role: grant
            .as_ref()
            .map_or(berth_domain::Role::Viewer, |g| g.role),
        // A tenant that is no valid name is refused by the login below.
        tenant: grant
            .as_ref()
            .and_then(|g| g.tenant.as_deref())
            .and_then(|t| berth_domain::Name::parse(t).ok()),
    };
    let result = login(state, identity, grant).await;
    audit(&state.store, &actor, "user.login", &identity.name, &result).await;
    result
}

async fn login(
    state: &AppState,
    identity: &Identity,
    grant: Option<super::mapping::Grant>,
) -> ApiResult<User> {
    let Some(grant) = grant else {
        // Someone who had access and lost it (no longer in a mapped group) keeps no session.
        let ended = state
            .store
            .end_sessions_of(&identity.issuer, &identity.subject)
            .await?;
        if ended > 0 {
            tracing::info!(
                ended,
                "single sign-on: sessions of a user who lost access ended"
            );
        }
        return Err(ApiError::new(
            ErrorCode::LoginRefused,
            "your account is not given access to berth: none of your groups is mapped to a \
             tenant and role (ask the berth admin to add an --oidc-map rule)",
        ));
    };
    if let Some(t) = &grant.tenant {
        let name = crate::error::tenant_name(t)?;
        state.store.ensure_tenant(&name).await?;
    }
    let user = state
        .store
        .record_login(
            &format!("usr_{}", random_hex(16)),
            &UserLogin {
                issuer: &identity.issuer,
                subject: &identity.subject,
                name: &identity.name,
                email: identity.email.as_deref(),
                tenant: grant.tenant.as_deref(),
                role: grant.role.as_str(),
            },
        )
        .await?;
    if user.disabled_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::LoginRefused,
            "your berth account is disabled; ask a berth admin or your tenant's owner",
        ));
    }
    Ok(user)
}

/// The users in the caller's scope.
pub async fn list(state: &AppState, scope: &UserScope) -> ApiResult<Vec<User>> {
    let tenant = match scope {
        UserScope::All => None,
        UserScope::Tenant(t) => Some(t.as_str()),
    };
    Ok(state.store.list_users(tenant).await?)
}

/// Disables (ending every session) or enables user `id`, within the caller's scope (a user of
/// another tenant is 404, as if unknown). Nobody disables themselves. Audited.
pub async fn set_disabled(
    state: &AppState,
    actor: &Actor,
    caller: &Caller<'_>,
    id: &str,
    disabled: bool,
) -> ApiResult<User> {
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    let result = async {
        let scope = scope_of(actor.role.as_str(), caller.tenant)?;
        let user = state
            .store
            .find_user(id)
            .await?
            .filter(|u| match scope {
                UserScope::All => true,
                UserScope::Tenant(t) => u.tenant.as_deref() == Some(t.as_str()),
            })
            .ok_or_else(|| ApiError::not_found(format!("user {id} not found")))?;
        if disabled && caller.user_id == Some(user.id.as_str()) {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "you cannot disable yourself",
            ));
        }
        Ok(state.store.set_user_disabled(&user.id, disabled).await?)
    }
    .await;
    audit(&state.store, actor, action, id, &result).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(scope_of("admin", None).unwrap(), UserScope::All);
        assert_eq!(
            scope_of("owner", Some("acme")).unwrap(),
            UserScope::Tenant("acme".into())
        );
        assert!(scope_of("owner", None).is_err());
        assert!(scope_of("member", Some("acme")).is_err());
        assert!(scope_of("viewer", Some("acme")).is_err());
    }
}
