//! `/tenants`: the tenants the caller sees, and their quotas (set by admins).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Extension;
use berth_api as api;

use super::parse_body;
use crate::auth::Actor;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::tenants;

/// Tenants with their quotas and what they use.
#[utoipa::path(get, path = "/api/v1/tenants", operation_id = "list_tenants", tag = "tenants",
    responses((status = 200, body = [api::TenantInfo], description = "every tenant for an admin, the caller's own otherwise")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
) -> ApiResult<axum::Json<Vec<api::TenantInfo>>> {
    Ok(axum::Json(tenants::list(&state, &actor).await?))
}

/// A tenant's quota and what it uses.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/quota", operation_id = "show_tenant_quota", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = api::TenantQuotaReport), (status = 404, body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn quota(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
) -> ApiResult<axum::Json<api::TenantQuotaReport>> {
    let name = crate::error::tenant_name(&tenant)?;
    Ok(axum::Json(tenants::report(&state, &name).await?))
}

/// Sets a tenant's quota.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/quota", operation_id = "set_tenant_quota", tag = "tenants",
    request_body = api::TenantQuota,
    params(("tenant" = String, Path)),
    responses((status = 200, body = api::TenantQuotaReport), (status = 400, body = api::ErrorBody),
        (status = 403, description = "`forbidden`: admins only", body = api::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_quota(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    Path(tenant): Path<String>,
    body: super::JsonBody,
) -> ApiResult<axum::Json<api::TenantQuotaReport>> {
    let req = parse_body::<api::TenantQuota>(&body);
    Ok(axum::Json(
        tenants::set_quota(&state, &actor, &tenant, req).await?,
    ))
}
