//! The lifecycle as people ask for it: create, start, stop and remove on behalf of an actor,
//! each recorded in the audit log (with the workspace's `tenant/name` once known) and followed by
//! what the operation implies for the workspace's egress proxy and gateway. The HTTP handlers
//! call these; the reconciler and start-up recovery call the unaudited operations directly.

use std::sync::Arc;

use berth_api as api;
use berth_store::{AuditRecord, Workspace};

use super::{check_network_allowed, CreateSpec};
use crate::auth::{audit, Actor};
use crate::error::ApiResult;
use crate::state::AppState;

/// The audit target: `tenant/name` when known, else what the caller typed.
fn target_of<E>(result: &Result<Workspace, E>, raw: &str) -> String {
    match result {
        Ok(w) => w.qualified_name(),
        Err(_) => raw.to_owned(),
    }
}

/// The audit target of a create request, before anything is validated.
fn create_target(req: &ApiResult<api::CreateWorkspace>) -> String {
    match req {
        Ok(r) => format!("{}/{}", r.tenant.as_deref().unwrap_or("default"), r.name),
        Err(_) => "(invalid request)".to_owned(),
    }
}

/// A tenant's caller creates in its own tenant: a request without a tenant gets it, one naming
/// another tenant is refused as if that tenant did not exist (404).
fn scoped(actor: &Actor, mut req: api::CreateWorkspace) -> ApiResult<api::CreateWorkspace> {
    if let Some(own) = actor.scope() {
        let tenant = req.tenant.get_or_insert_with(|| own.to_owned()).clone();
        actor.check_tenant(&tenant, || format!("tenant {tenant}"))?;
    }
    Ok(req)
}

/// The resources a workspace holds against its tenant's quota.
pub(crate) fn quota_use(limits: &berth_domain::Limits) -> berth_domain::QuotaUse {
    berth_domain::QuotaUse {
        workspaces: 1,
        memory_bytes: limits.memory_bytes,
        nano_cpus: limits.nano_cpus,
        tasks: 0,
    }
}

/// Refuses starting a stopped or failed workspace its tenant's quota has no room for.
async fn check_start_quota(state: &AppState, ws: &str) -> ApiResult<crate::tenants::QuotaHold> {
    let w = super::resolve(state, ws).await?;
    if matches!(
        w.state,
        berth_domain::WorkspaceState::Running | berth_domain::WorkspaceState::Starting
    ) {
        return Ok(crate::tenants::QuotaHold::none());
    }
    let asked = berth_domain::QuotaUse {
        workspaces: 0,
        ..quota_use(&w.limits)
    };
    crate::tenants::check(state, &w.tenant, asked, Some(&w.id)).await
}

/// Creates a workspace (see [`super::create`]); `req` is `Err` when the request was malformed,
/// which is recorded too. Secrets delivered for real (env/file) are recorded as exposed.
pub async fn create_workspace(
    state: &Arc<AppState>,
    actor: &Actor,
    req: ApiResult<api::CreateWorkspace>,
) -> ApiResult<Workspace> {
    let req = req.and_then(|r| scoped(actor, r));
    let target = create_target(&req);
    let result = async {
        let mut req = req?;
        check_network_allowed(actor.role, req.network.as_deref())?;
        let pending = crate::provision::prepare(state, &mut req).await?;
        let mut spec = CreateSpec::from_request(state, &req)?;
        spec.provision = pending;
        let approval = crate::approvals::parse_policy(req.approval.as_deref())?;
        let _admitted =
            crate::tenants::check(state, &spec.tenant, quota_use(&spec.limits), None).await?;
        let w = super::create(state, spec).await?;
        if let Some(policy) = approval {
            state.store.set_workspace_approval(&w.id, policy).await?;
        }
        Ok(w)
    }
    .await;
    audit(&state.store, actor, "workspace.create", &target, &result).await;
    let w = result?;
    record_exposed_secrets(state, actor, &w).await?;
    super::serve_channel(state, &w.id).await;
    // A workspace made from a template is provisioned now, in the background (progress:
    // `GET /workspaces/{ws}/provision`).
    if state.store.provision(&w.id).await?.is_some() {
        crate::provision::spawn(state.clone(), w.id.clone(), actor.clone());
    }
    Ok(w)
}

/// One `secret.expose` audit record per secret the workspace gets as a real value.
async fn record_exposed_secrets(state: &AppState, actor: &Actor, w: &Workspace) -> ApiResult<()> {
    let uses = state.store.secret_uses(Some(&w.id)).await?;
    record_exposed(state, actor, w, &uses).await
}

/// One `secret.expose` audit record for each of `uses` that delivers the real value.
pub(super) async fn record_exposed(
    state: &AppState,
    actor: &Actor,
    w: &Workspace,
    uses: &[berth_store::SecretUse],
) -> ApiResult<()> {
    for u in uses.iter().filter(|u| u.delivery.exposes()) {
        let target = format!("{}/{}", w.tenant, u.name);
        let rec = AuditRecord {
            actor: actor.id.clone(),
            action: "secret.expose".into(),
            result: "ok".into(),
            detail: Some(format!(
                "delivered as {} into {}",
                u.delivery,
                w.qualified_name()
            )),
            ..crate::auth::actor_fields(actor, "secret.expose", &target)
        };
        let rec = AuditRecord { target, ..rec };
        state.store.append_audit(&rec).await?;
    }
    Ok(())
}

/// A successful `action` on `target` with a `detail` (what changed) in the audit log.
pub(super) async fn audit_with_detail(
    state: &AppState,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: String,
) {
    let rec = AuditRecord {
        actor: actor.id.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        result: "ok".into(),
        detail: Some(detail),
        ..crate::auth::actor_fields(actor, action, target)
    };
    if let Err(e) = state.store.append_audit(&rec).await {
        tracing::error!(error = %e, action, target, "could not write audit record");
    }
}

/// Starts a stopped workspace and its egress proxy and gateway.
pub async fn start_workspace(
    state: &Arc<AppState>,
    actor: &Actor,
    ws: &str,
) -> ApiResult<Workspace> {
    let result = match check_start_quota(state, ws).await {
        Ok(_admitted) => super::start(state, ws).await,
        Err(e) => Err(e),
    };
    audit(
        &state.store,
        actor,
        "workspace.start",
        &target_of(&result, ws),
        &result,
    )
    .await;
    let w = result?;
    super::serve_channel(state, &w.id).await;
    Ok(w)
}

/// Stops a workspace (its volume and sessions' scrollback stay).
pub async fn stop_workspace(state: &AppState, actor: &Actor, ws: &str) -> ApiResult<Workspace> {
    let result = super::stop(state, ws).await;
    audit(
        &state.store,
        actor,
        "workspace.stop",
        &target_of(&result, ws),
        &result,
    )
    .await;
    result
}

/// Removes a workspace (and its volume when `remove_volume`), closing its egress proxy.
pub async fn remove_workspace(
    state: &AppState,
    actor: &Actor,
    ws: &str,
    remove_volume: bool,
) -> ApiResult<Workspace> {
    let result = super::remove(state, ws, remove_volume).await;
    let action = if remove_volume {
        "workspace.remove_with_volume"
    } else {
        "workspace.remove"
    };
    audit(
        &state.store,
        actor,
        action,
        &target_of(&result, ws),
        &result,
    )
    .await;
    let w = result?;
    super::stop_channel(state, &w.id);
    Ok(w)
}
