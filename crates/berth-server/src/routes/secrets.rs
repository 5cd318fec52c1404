//! `/secrets`: the tenant-scoped vault. Values go in, never come out through the API.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use berth_api as api;
use berth_domain::{ErrorCode, Name, Secret};

use super::{parse_body, Query};
use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::vault::{valid_name, Vault};

fn vault(state: &AppState) -> ApiResult<&Vault> {
    state
        .vault
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the secrets vault is not available"))
}

fn check(tenant: &str, name: &str) -> ApiResult<Name> {
    let t = Name::parse(tenant).map_err(|e| ApiError::invalid(format!("tenant: {e}")))?;
    if !valid_name(name) {
        return Err(ApiError::invalid(format!(
            "secret name {name:?} must look like an environment variable: A-Z, 0-9 and _, starting with a letter or _"
        )));
    }
    Ok(t)
}

/// The real value of a tenant's secret (for the proxy or env/file delivery; never for the API).
pub async fn reveal(
    state: &AppState,
    vault: &Vault,
    tenant: &str,
    name: &str,
) -> anyhow::Result<Secret> {
    let s = state
        .store
        .secret(tenant, name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("secret {tenant}/{name} not found"))?;
    vault.open(tenant, name, &s.nonce, &s.ciphertext)
}

async fn info(state: &AppState, s: berth_store::SealedSecret) -> ApiResult<api::SecretInfo> {
    let mut used_by = Vec::new();
    for u in state.store.secret_uses(None).await? {
        if u.name != s.name {
            continue;
        }
        let Some(id) = berth_domain::WorkspaceId::parse(&u.workspace_id) else {
            continue;
        };
        let Some(w) = state.store.find_workspace_by_id(&id).await? else {
            continue;
        };
        if w.tenant.as_str() != s.tenant {
            continue;
        }
        used_by.push(api::SecretUsage {
            workspace: w.qualified_name(),
            exposed: u.delivery != "placeholder",
            headers: if u.delivery == "placeholder" && u.headers.is_empty() {
                vec![berth_egress::DEFAULT_SECRET_HEADER.to_string()]
            } else {
                u.headers
            },
            delivery: u.delivery,
            hosts: u.hosts,
        });
    }
    Ok(api::SecretInfo {
        tenant: s.tenant,
        name: s.name,
        created_at: s.created_at,
        updated_at: s.updated_at,
        used_by,
    })
}

#[utoipa::path(put, path = "/api/v1/secrets/{tenant}/{name}", operation_id = "set_secret", tag = "secrets", request_body = api::SetSecret,
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = api::SecretInfo), (status = 400, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((tenant, name)): Path<(String, String)>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::SecretInfo>> {
    let result = async {
        let t = check(&tenant, &name)?;
        let req: api::SetSecret = parse_body(&body)?;
        let value = Secret::new(req.value);
        if value.expose().is_empty() {
            return Err(ApiError::invalid("the secret value is empty"));
        }
        state.store.ensure_tenant(&t).await?;
        let (nonce, ct) = vault(&state)?
            .seal(t.as_str(), &name, &value)
            .map_err(ApiError::internal)?;
        let sealed = state
            .store
            .put_secret(t.as_str(), &name, &nonce, &ct)
            .await?;
        // Running workspaces pick the new value up for their placeholders at once.
        crate::egress::refresh_secret(&state, &name).await;
        info(&state, sealed).await
    }
    .await;
    audit(
        &state.store,
        &actor,
        "secret.set",
        &format!("{tenant}/{name}"),
        &result,
    )
    .await;
    Ok(axum::Json(result?))
}

#[utoipa::path(get, path = "/api/v1/secrets", operation_id = "list_secrets", tag = "secrets", params(api::SecretQuery),
    responses((status = 200, body = [api::SecretInfo])), security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Query(q): Query<api::SecretQuery>,
) -> ApiResult<axum::Json<Vec<api::SecretInfo>>> {
    if let Some(t) = &q.tenant {
        Name::parse(t).map_err(|e| ApiError::invalid(format!("tenant: {e}")))?;
    }
    let mut out = Vec::new();
    for s in state.store.list_secrets(q.tenant.as_deref()).await? {
        out.push(info(&state, s).await?);
    }
    Ok(axum::Json(out))
}

#[utoipa::path(delete, path = "/api/v1/secrets/{tenant}/{name}", operation_id = "remove_secret", tag = "secrets",
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((tenant, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let result = async {
        let t = check(&tenant, &name)?;
        if !state.store.delete_secret(t.as_str(), &name).await? {
            return Err(ApiError::not_found(format!(
                "secret {tenant}/{name} not found"
            )));
        }
        // Running proxies stop swapping it from the next request on.
        crate::egress::refresh_secret(&state, &name).await;
        Ok(())
    }
    .await;
    audit(
        &state.store,
        &actor,
        "secret.remove",
        &format!("{tenant}/{name}"),
        &result,
    )
    .await;
    result?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
