//! Tenants and their quotas: admins set a tenant's quota; workspace create and start and task
//! create are checked against it ([`check`]), refusing with 409 `quota_exceeded`.

use berth_api as api;
use berth_domain::limits::{format_cpus, format_memory, parse_cpus, parse_memory};
use berth_domain::{ErrorCode, Name, Quota, QuotaUse, WorkspaceId};

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The tenants the caller sees (all for an admin, its own otherwise), with quota and use.
pub async fn list(state: &AppState, actor: &Actor) -> ApiResult<Vec<api::TenantInfo>> {
    let mut out = Vec::new();
    for t in state.store.list_tenants().await? {
        if !actor.sees(t.name.as_str()) {
            continue;
        }
        let r = report(state, &t.name).await?;
        out.push(api::TenantInfo {
            name: r.tenant,
            created_at: t.created_at,
            quota: r.quota,
            used: r.used,
        });
    }
    Ok(out)
}

/// A tenant's quota and what it holds; 404 for a tenant that does not exist.
pub async fn report(state: &AppState, tenant: &Name) -> ApiResult<api::TenantQuotaReport> {
    let t = state
        .store
        .find_tenant(tenant)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tenant {tenant} not found")))?;
    let quota = state.store.tenant_quota(&t.id).await?;
    let used = state.store.tenant_usage(&t.id, None).await?;
    Ok(api::TenantQuotaReport {
        tenant: t.name.to_string(),
        quota: quota_to_api(&quota),
        used: api::QuotaUsage {
            workspaces: used.workspaces,
            memory: format_memory(used.memory_bytes),
            cpus: format_cpus(used.nano_cpus),
            tasks: used.tasks,
        },
    })
}

pub fn quota_to_api(q: &Quota) -> api::TenantQuota {
    api::TenantQuota {
        max_workspaces: q.max_workspaces,
        memory: q.memory_bytes.map(format_memory),
        cpus: q.nano_cpus.map(format_cpus),
        max_tasks: q.max_tasks,
    }
}

/// The quota a request asks for; a field left out is no limit.
pub fn quota_from_api(q: &api::TenantQuota) -> ApiResult<Quota> {
    let memory = q
        .memory
        .as_deref()
        .map(parse_memory)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("memory: {e}")))?;
    let cpus = q
        .cpus
        .as_deref()
        .map(parse_cpus)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("cpus: {e}")))?;
    Ok(Quota {
        max_workspaces: q.max_workspaces,
        memory_bytes: memory,
        nano_cpus: cpus,
        max_tasks: q.max_tasks,
    })
}

/// Replaces a tenant's quota (the tenant is created if new, so quotas can be set up front).
pub async fn set_quota(
    state: &AppState,
    actor: &Actor,
    tenant: &str,
    req: ApiResult<api::TenantQuota>,
) -> ApiResult<api::TenantQuotaReport> {
    let result = async {
        let name = crate::error::tenant_name(tenant)?;
        let quota = quota_from_api(&req?)?;
        let t = state.store.ensure_tenant(&name).await?;
        state.store.set_tenant_quota(&t.id, &quota).await?;
        report(state, &name).await
    }
    .await;
    audit(&state.store, actor, "tenant.quota", tenant, &result).await;
    result
}

/// Refuses (409 `quota_exceeded`, with the numbers) what would take `tenant` over its quota;
/// `except` is a workspace whose own resources are being asked for again (a start).
pub async fn check(
    state: &AppState,
    tenant: &Name,
    requested: QuotaUse,
    except: Option<&WorkspaceId>,
) -> ApiResult<QuotaHold> {
    let Some(t) = state.store.find_tenant(tenant).await? else {
        return Ok(QuotaHold(None));
    };
    if state.store.tenant_quota(&t.id).await?.is_unlimited() {
        return Ok(QuotaHold(None));
    }
    let hold = state.tenant_lock(tenant.as_str()).lock_owned().await;
    // Read again under the lock: the quota may have changed while waiting.
    let quota = state.store.tenant_quota(&t.id).await?;
    let used = state.store.tenant_usage(&t.id, except).await?;
    quota
        .check(used, requested)
        .map_err(|e| ApiError::new(ErrorCode::QuotaExceeded, format!("tenant {tenant}: {e}")))?;
    Ok(QuotaHold(Some(hold)))
}

/// An admission under a tenant's quota: while the caller holds it, no other admission of that
/// tenant is judged, so keep it until what was admitted is in the store. (None: no quota.)
#[must_use = "hold it until the admitted workspace or task is stored"]
pub struct QuotaHold(#[allow(dead_code)] Option<tokio::sync::OwnedMutexGuard<()>>);

impl QuotaHold {
    /// Nothing admitted under a quota (nothing to hold).
    pub fn none() -> Self {
        Self(None)
    }
}
