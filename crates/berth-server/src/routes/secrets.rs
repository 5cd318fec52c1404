//! `/secrets`: the tenant-scoped vault. Values go in, never come out through the API.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use berth_api as api;
use berth_domain::Secret;

use super::{parse_body, Query};
use crate::auth::Actor;
use crate::error::ApiResult;
use crate::secrets;
use crate::state::AppState;

async fn info(state: &AppState, s: berth_store::SealedSecret) -> ApiResult<api::SecretInfo> {
    let mut used_by = Vec::new();
    for u in state.store.secret_uses(None).await? {
        if u.name != s.name {
            continue;
        }
        let Some(w) = state.store.find_workspace_by_id(&u.workspace_id).await? else {
            continue;
        };
        if w.tenant.as_str() != s.tenant {
            continue;
        }
        used_by.push(api::SecretUsage {
            workspace: w.qualified_name(),
            exposed: u.delivery.exposes(),
            headers: if !u.delivery.exposes() && u.headers.is_empty() {
                vec![berth_egress::DEFAULT_SECRET_HEADER.to_string()]
            } else {
                u.headers
            },
            delivery: u.delivery.to_string(),
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

/// Sets a secret's value (write-only: no route returns it).
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
    let value = parse_body::<api::SetSecret>(&body).map(|req| Secret::new(req.value));
    let sealed = secrets::set(&state, &actor, &tenant, &name, value).await?;
    Ok(axum::Json(info(&state, sealed).await?))
}

/// Secrets of the tenant: names, dates and bindings, never values.
#[utoipa::path(get, path = "/api/v1/secrets", operation_id = "list_secrets", tag = "secrets", params(api::SecretQuery),
    responses((status = 200, body = [api::SecretInfo])), security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<api::SecretQuery>,
) -> ApiResult<axum::Json<Vec<api::SecretInfo>>> {
    if let Some(t) = &q.tenant {
        crate::error::tenant_name(t)?;
    }
    // A tenant's caller lists its tenant's secrets (another tenant's filter: none).
    let tenant = match (actor.scope(), q.tenant.as_deref()) {
        (Some(own), Some(t)) if own != t => return Ok(axum::Json(Vec::new())),
        (Some(own), _) => Some(own),
        (None, t) => t,
    };
    let mut out = Vec::new();
    for s in state.store.list_secrets(tenant).await? {
        out.push(info(&state, s).await?);
    }
    Ok(axum::Json(out))
}

/// Removes a secret (workspaces binding it lose its value at once).
#[utoipa::path(delete, path = "/api/v1/secrets/{tenant}/{name}", operation_id = "remove_secret", tag = "secrets",
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody)), security(("bearer" = [])))]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path((tenant, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    secrets::remove(&state, &actor, &tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
